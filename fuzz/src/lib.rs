//! What the fuzz targets share: the invariants every published topic must keep, and the decoding of a fuzz input
//! into the parser's arguments. Each invariant panics when broken, which libFuzzer reports as a crash.

use mqtt_llm_protocol::topics::{MAX_TOPIC_BYTES, ProjectName, ReplyPolicy, reply_base, stream_base};

/// Extra reply prefixes a fuzzed policy may hold (the last one is another project's reply base: an operator may
/// allow it, and then it must still be the only extra place a reply goes).
pub const EXTRA_PREFIXES: [&str; 3] = ["devices/", "general/extra", "other/assistant_response/"];

/// The policy whose extra prefixes are the members of [`EXTRA_PREFIXES`] picked by the low 3 bits of `bits`.
pub fn policy(bits: u8) -> ReplyPolicy {
    let picked = EXTRA_PREFIXES
        .iter()
        .enumerate()
        .filter(|(i, _)| bits & (1 << i) != 0)
        .map(|(_, p)| *p);
    ReplyPolicy::new(picked).expect("the fixed prefixes are valid")
}

/// mqtt-llm can publish on `topic`, and it is neither a wildcard filter nor a broker-reserved `$` topic.
pub fn assert_publishable(topic: &str) {
    assert!(!topic.is_empty(), "empty topic");
    assert!(topic.len() <= MAX_TOPIC_BYTES, "topic of {} bytes", topic.len());
    assert!(!topic.contains(['+', '#', '\0']), "wildcard or NUL in {topic:?}");
    assert!(!topic.starts_with('$'), "reserved topic {topic:?}");
}

/// `topic` is `prefix` followed by something other than slashes.
pub fn is_under(prefix: &str, topic: &str) -> bool {
    topic
        .strip_prefix(prefix)
        .is_some_and(|rest| !rest.trim_matches('/').is_empty())
}

/// A reply topic of project `p`: under `{p}/assistant_response/`, or else the request's own Response Topic under
/// one of the policy's extra prefixes.
pub fn assert_reply_topic(p: &ProjectName, policy: &ReplyPolicy, response_topic: Option<&str>, topic: &str) {
    assert_publishable(topic);
    let base = format!("{}/", reply_base(p));
    let via_extra = response_topic == Some(topic) && policy.extra_prefixes().iter().any(|x| is_under(x, topic));
    assert!(
        is_under(&base, topic) || via_extra,
        "reply on {topic:?} (Response Topic {response_topic:?}, extra prefixes {:?})",
        policy.extra_prefixes()
    );
}

/// A stream topic of project `p`: under `{p}/assistant_stream/`.
pub fn assert_stream_topic(p: &ProjectName, topic: &str) {
    assert_publishable(topic);
    let base = format!("{}/", stream_base(p));
    assert!(is_under(&base, topic), "stream on {topic:?}");
}

/// True when the payload's first non-whitespace byte (JSON whitespace) is `{` or `[`.
pub fn looks_like_json(payload: &[u8]) -> bool {
    payload
        .iter()
        .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
        .is_some_and(|b| matches!(b, b'{' | b'['))
}
