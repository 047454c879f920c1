//! Property tests of the topic rules: no request, however adversarial its `replyTopic`, `streamTopic`, MQTT 5
//! Response Topic or payload shape, makes mqtt-llm publish outside the project's allowed prefixes, or on a topic
//! with a wildcard, a NUL or a leading `$`.
//!
//! Topics are drawn from an alphabet of the pieces that make topic rules go wrong: separators, wildcards, `$`, NUL,
//! `..`, whitespace, the project's own prefixes, other projects' prefixes and the policy's extra prefixes. The seed
//! is fixed so that every run checks the same cases (the fuzz targets in `fuzz/` explore further).
#![allow(clippy::unwrap_used)]

use mqtt_llm_protocol::topics::{
    MAX_TOPIC_BYTES, ProjectName, ReplyPolicy, reply_base, stream_base, validate_client_topic, validate_response_topic,
};
use mqtt_llm_protocol::wire::{ChatRequest, Rejection, V5Props, WireLimits, parse_request};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};
use serde_json::{Map, Value, json};

const PROJECT: &str = "general";
const REPLY_PREFIX: &str = "general/assistant_response/";
const STREAM_PREFIX: &str = "general/assistant_stream/";
/// Extra reply prefixes a policy may be configured with (the last one is another project's reply base).
const EXTRA_PREFIXES: [&str; 3] = ["devices/", "general/extra", "other/assistant_response/"];

const TOKENS: &[&str] = &[
    "/",
    "//",
    "+",
    "#",
    "$",
    "\0",
    "..",
    " ",
    "\t",
    "\n",
    "é",
    "s1",
    "x",
    "general",
    "general/",
    "generalx/",
    "other",
    "other/",
    "assistant_response",
    "/assistant_response/",
    "general/assistant_response",
    "general/assistant_response/",
    "general/assistant_stream",
    "general/assistant_stream/",
    "general/user_input",
    "other/assistant_response/",
    "other/assistant_stream/",
    "devices",
    "devices/",
    "devices-x/",
    "general/extra",
    "general/extra/",
    "$SYS/",
    "$share/g/",
];

fn config() -> Config {
    Config {
        cases: 2048,
        rng_seed: RngSeed::Fixed(0x6d71_7474_6c6c_6d00),
        failure_persistence: None,
        ..Config::default()
    }
}

fn project() -> ProjectName {
    ProjectName::try_new(PROJECT).unwrap()
}

/// A topic-like string: 0 to 7 tokens of the adversarial alphabet.
fn topic() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(TOKENS), 0..8).prop_map(|tokens| tokens.concat())
}

/// A JSON value where a topic is expected: mostly strings, sometimes another type.
fn topic_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        6 => topic().prop_map(Value::String),
        1 => Just(Value::Null),
        1 => any::<i32>().prop_map(Value::from),
        1 => any::<bool>().prop_map(Value::from),
        1 => topic().prop_map(|t| json!([t])),
        1 => topic().prop_map(|t| json!({"topic": t})),
    ]
}

fn session_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => prop::sample::select(vec!["s1", "n1", "user 1", "", "  "]).prop_map(Value::from),
        2 => topic().prop_map(Value::String),
        1 => any::<u16>().prop_map(Value::from),
        1 => Just(Value::Null),
        1 => Just(json!(["s1"])),
    ]
}

fn policy() -> impl Strategy<Value = ReplyPolicy> {
    prop::sample::subsequence(EXTRA_PREFIXES.to_vec(), 0..=EXTRA_PREFIXES.len())
        .prop_map(|prefixes| ReplyPolicy::new(prefixes).unwrap())
}

/// A request object with any subset of the fields that pick topics.
fn request() -> impl Strategy<Value = Map<String, Value>> {
    (
        prop::option::of(session_value()),
        prop::option::of(prop_oneof![4 => Just(json!("hi")), 1 => Just(json!("")), 1 => Just(json!(1))]),
        prop::option::of(topic_value()),
        prop::option::of(topic_value()),
        prop::option::of(prop_oneof![4 => Just(json!(true)), 1 => Just(json!(false)), 1 => Just(json!("yes"))]),
        prop::option::of(prop_oneof![Just(json!("r1")), Just(json!(7))]),
    )
        .prop_map(|(session, message, reply_topic, stream_topic, stream, request_id)| {
            let mut fields = Map::new();
            let named = [
                ("sessionId", session),
                ("message", message),
                ("replyTopic", reply_topic),
                ("streamTopic", stream_topic),
                ("stream", stream),
                ("requestId", request_id),
            ];
            for (name, value) in named {
                if let Some(value) = value {
                    fields.insert(name.to_owned(), value);
                }
            }
            fields
        })
}

/// How the serialised request reaches the parser: whole, cut short, nested too deep, or over the size limit.
#[derive(Debug, Clone)]
enum Shape {
    Whole,
    /// Cut after this fraction (in thousandths) of its bytes.
    Truncated(u16),
    /// With a member nested this deep first.
    Deep(u16),
    /// With a size limit this many bytes below its size.
    Oversize(u8),
}

fn shape() -> impl Strategy<Value = Shape> {
    prop_oneof![
        3 => Just(Shape::Whole),
        2 => (0u16..1000).prop_map(Shape::Truncated),
        1 => (1u16..300).prop_map(Shape::Deep),
        1 => (1u8..=255).prop_map(Shape::Oversize),
    ]
}

fn payload(fields: &Map<String, Value>, shape: &Shape) -> (Vec<u8>, WireLimits) {
    let text = Value::Object(fields.clone()).to_string();
    let limits = WireLimits::default();
    match *shape {
        Shape::Whole => (text.into_bytes(), limits),
        Shape::Truncated(per_mille) => {
            let cut = text.len() * usize::from(per_mille) / 1000;
            (text.as_bytes()[..cut].to_vec(), limits)
        }
        Shape::Deep(levels) => {
            let levels = usize::from(levels);
            let deep = format!("{}{}", "[".repeat(levels), "]".repeat(levels));
            let body = text.strip_prefix('{').unwrap();
            let sep = if body == "}" { "" } else { "," };
            (format!(r#"{{"x":{deep}{sep}{body}"#).into_bytes(), limits)
        }
        Shape::Oversize(below) => {
            let max_payload_bytes = text.len().saturating_sub(usize::from(below));
            (
                text.into_bytes(),
                WireLimits {
                    max_payload_bytes,
                    ..limits
                },
            )
        }
    }
}

/// Every topic mqtt-llm publishes on can be published, and subscribers' wildcards and `$` topics stay untouched.
fn check_publishable(topic: &str) -> Result<(), TestCaseError> {
    prop_assert!(!topic.is_empty() && topic.len() <= MAX_TOPIC_BYTES, "{topic:?}");
    prop_assert!(!topic.contains(['+', '#', '\0']), "{topic:?}");
    prop_assert!(!topic.starts_with('$'), "{topic:?}");
    Ok(())
}

/// `topic` is `prefix` and something other than slashes.
fn under(prefix: &str, topic: &str) -> bool {
    topic
        .strip_prefix(prefix)
        .is_some_and(|rest| !rest.trim_matches('/').is_empty())
}

/// A reply topic is under `{p}/assistant_response/`, or it is the Response Topic itself under an extra prefix.
fn check_reply(topic: &str, response_topic: Option<&str>, policy: &ReplyPolicy) -> Result<(), TestCaseError> {
    check_publishable(topic)?;
    let via_extra = response_topic == Some(topic) && policy.extra_prefixes().iter().any(|p| under(p, topic));
    prop_assert!(under(REPLY_PREFIX, topic) || via_extra, "reply on {topic:?}");
    Ok(())
}

fn check_stream(topic: &str) -> Result<(), TestCaseError> {
    check_publishable(topic)?;
    prop_assert!(under(STREAM_PREFIX, topic), "stream on {topic:?}");
    Ok(())
}

fn check_outcome(
    outcome: &Result<ChatRequest, Rejection>,
    payload: &[u8],
    response_topic: Option<&str>,
    policy: &ReplyPolicy,
) -> Result<(), TestCaseError> {
    match outcome {
        Ok(request) => {
            check_reply(&request.reply.topic, response_topic, policy)?;
            if let Some(stream) = &request.stream {
                check_stream(stream)?;
            }
            // Input hygiene: a payload that starts like JSON is never taken as plain text.
            let json_like = payload
                .iter()
                .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
                .is_some_and(|b| matches!(b, b'{' | b'['));
            prop_assert!(request.raw_json || !json_like);
        }
        Err(rejection) => {
            if let Some(reply) = &rejection.reply {
                check_reply(&reply.topic, response_topic, policy)?;
            }
            prop_assert!(rejection.error.reply_text().starts_with("Error: "));
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn requests_never_reply_or_stream_outside_the_allowed_prefixes(
        fields in request(),
        shape in shape(),
        response_topic in prop::option::of(topic()),
        policy in policy(),
    ) {
        let (payload, limits) = payload(&fields, &shape);
        let props = V5Props { response_topic: response_topic.clone(), ..V5Props::default() };
        let outcome = parse_request(&project(), &payload, &props, &limits, &policy);
        check_outcome(&outcome, &payload, response_topic.as_deref(), &policy)?;
    }

    #[test]
    fn arbitrary_payload_bytes_never_reply_outside_the_allowed_prefixes(
        payload in prop::collection::vec(any::<u8>(), 0..200),
        response_topic in prop::option::of(topic()),
        policy in policy(),
    ) {
        let props = V5Props { response_topic: response_topic.clone(), ..V5Props::default() };
        let outcome = parse_request(&project(), &payload, &props, &WireLimits::default(), &policy);
        check_outcome(&outcome, &payload, response_topic.as_deref(), &policy)?;
    }

    #[test]
    fn client_topics_stay_under_their_base(candidate in topic_value()) {
        let p = project();
        if let Ok(topic) = validate_client_topic(&reply_base(&p), &candidate) {
            check_reply(&topic, None, &ReplyPolicy::none())?;
        }
        if let Ok(topic) = validate_client_topic(&stream_base(&p), &candidate) {
            check_stream(&topic)?;
        }
    }

    #[test]
    fn response_topics_stay_under_the_policy(candidate in topic(), policy in policy()) {
        if let Ok(topic) = validate_response_topic(&project(), &policy, &candidate) {
            prop_assert_eq!(&topic, &candidate, "a Response Topic is used verbatim");
            check_reply(&topic, Some(&candidate), &policy)?;
            prop_assert!(!under(STREAM_PREFIX, &topic));
        }
    }

    #[test]
    fn configured_prefixes_are_safe(prefixes in prop::collection::vec(topic(), 0..4)) {
        if let Ok(policy) = ReplyPolicy::new(&prefixes) {
            for prefix in policy.extra_prefixes() {
                check_publishable(prefix)?;
                prop_assert!(prefix.ends_with('/'));
            }
        }
    }
}
