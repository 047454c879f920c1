//! The topic validators on their own: whatever the project, the candidate and the configured prefixes, an accepted
//! topic stays under its base (or the policy's prefixes) and is publishable, and an accepted prefix is safe.
//!
//! Input: fields separated by `0xff` bytes (lossy UTF-8): the project name (`general` when not a valid one), the
//! candidate topic, then up to three reply prefixes for the policy. The candidate is also tried as JSON text, so
//! non-string `replyTopic` values are covered.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mqtt_llm_fuzz::{assert_publishable, assert_reply_topic, assert_stream_topic, is_under};
use mqtt_llm_protocol::topics::{
    ProjectName, ReplyPolicy, reply_base, stream_base, validate_client_topic, validate_response_topic,
};
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let mut fields = data.split(|&b| b == 0xff).map(String::from_utf8_lossy);
    let project = fields
        .next()
        .and_then(|name| ProjectName::try_new(&name).ok())
        .unwrap_or_else(|| ProjectName::try_new("general").expect("valid project"));
    let candidate = fields.next().unwrap_or_default().into_owned();
    let prefixes: Vec<String> = fields.take(3).map(|p| p.into_owned()).collect();

    let policy = match ReplyPolicy::new(&prefixes) {
        Ok(policy) => {
            for prefix in policy.extra_prefixes() {
                assert_publishable(prefix);
                assert!(prefix.ends_with('/'), "prefix {prefix:?}");
            }
            policy
        }
        Err(_) => ReplyPolicy::none(),
    };

    let mut values = vec![Value::String(candidate.clone())];
    if let Ok(value) = serde_json::from_str::<Value>(&candidate) {
        values.push(value);
    }
    for value in &values {
        if let Ok(topic) = validate_client_topic(&reply_base(&project), value) {
            assert_reply_topic(&project, &ReplyPolicy::none(), None, &topic);
        }
        if let Ok(topic) = validate_client_topic(&stream_base(&project), value) {
            assert_stream_topic(&project, &topic);
        }
    }
    if let Ok(topic) = validate_response_topic(&project, &policy, &candidate) {
        assert_eq!(topic, candidate, "a Response Topic is used verbatim");
        assert_reply_topic(&project, &policy, Some(&candidate), &topic);
        // The stream base is never a reply target, unless the operator named it as an extra prefix.
        let stream = format!("{}/", stream_base(&project));
        let operator_allowed = policy.extra_prefixes().iter().any(|x| is_under(x, &topic));
        assert!(
            operator_allowed || !is_under(&stream, &topic),
            "reply allowed on the stream topic {topic:?}"
        );
    }
});
