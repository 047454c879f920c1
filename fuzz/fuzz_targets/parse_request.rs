//! `parse_request` on arbitrary payload bytes, with or without an MQTT 5 Response Topic, under a fuzzed reply
//! policy and, sometimes, small limits. Never panics; every reply or stream topic it yields stays under the allowed
//! prefixes; a payload that starts like JSON is never taken as plain text.
//!
//! Input: one flags byte, then, when bit 0 is set, one length byte `n` and `n` bytes of Response Topic (lossy
//! UTF-8); everything after that is the payload. Flags bits 1-3 pick the policy's extra prefixes; bit 4 selects
//! small limits (64-byte payloads, 4 levels of nesting). A seed is therefore `\x00` followed by a request.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mqtt_llm_fuzz::{assert_reply_topic, assert_stream_topic, looks_like_json, policy};
use mqtt_llm_protocol::topics::ProjectName;
use mqtt_llm_protocol::wire::{V5Props, WireLimits, parse_request};

fuzz_target!(|data: &[u8]| {
    let Some((&flags, mut rest)) = data.split_first() else {
        return;
    };
    let mut response_topic = None;
    if flags & 1 != 0 {
        let Some((&len, after)) = rest.split_first() else {
            return;
        };
        let len = usize::from(len).min(after.len());
        response_topic = Some(String::from_utf8_lossy(&after[..len]).into_owned());
        rest = &after[len..];
    }
    let payload = rest;
    let policy = policy(flags >> 1);
    let limits = if flags & 0x10 != 0 {
        WireLimits {
            max_payload_bytes: 64,
            max_json_depth: 4,
            ..WireLimits::default()
        }
    } else {
        WireLimits::default()
    };
    let project = ProjectName::try_new("general").expect("valid project");
    let props = V5Props {
        response_topic: response_topic.clone(),
        ..V5Props::default()
    };
    let rt = response_topic.as_deref();
    match parse_request(&project, payload, &props, &limits, &policy) {
        Ok(request) => {
            assert_reply_topic(&project, &policy, rt, &request.reply.topic);
            if let Some(stream) = &request.stream {
                assert_stream_topic(&project, stream);
            }
            assert!(
                request.raw_json || !looks_like_json(payload),
                "JSON-looking payload taken as plain text"
            );
            assert!(!request.message.is_empty() || !request.images.is_empty());
        }
        Err(rejection) => {
            if let Some(reply) = &rejection.reply {
                assert_reply_topic(&project, &policy, rt, &reply.topic);
            }
            assert!(rejection.error.reply_text().starts_with("Error: "));
        }
    }
});
