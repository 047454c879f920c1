//! Tests of the byte scanners on their own; `tests.rs` covers what they change in `parse_request`.
use serde_json::{Value, json};

use super::scan::{looks_like_json_container, nests_deeper_than, routing_fields};

/// The deepest level `payload` reaches, found through the public predicate.
fn depth(payload: &str) -> usize {
    (0..).find(|&max| !nests_deeper_than(payload.as_bytes(), max)).unwrap()
}

#[test]
fn json_container_is_decided_by_the_first_non_whitespace_byte() {
    for payload in ["{", "[", " \t\r\n{\"a\":1}", "\n[1,2", "{not json", "[]"] {
        assert!(looks_like_json_container(payload.as_bytes()), "{payload:?}");
    }
    for payload in [
        "",
        "   ",
        "hello {",
        "x[1]",
        "\"{\"",
        "42",
        "\u{a0}{",
        "\u{feff}{\"a\":1}",
        "\x0c{",
    ] {
        assert!(!looks_like_json_container(payload.as_bytes()), "{payload:?}");
    }
}

#[test]
fn depth_counts_containers_only() {
    let cases = [
        ("", 0),
        ("42", 0),
        ("{}", 1),
        ("[]", 1),
        (r#"{"a":[{"b":[]}]}"#, 4),
        ("[[],[],[[]]]", 3),
        ("[1,[2,[3]],[4]]", 3),
        // Truncated: the open levels count.
        ("[[[[", 4),
        // Stray closers never go below zero.
        ("]]]][[", 2),
        ("}{", 1),
    ];
    for (payload, want) in cases {
        assert_eq!(depth(payload), want, "{payload:?}");
    }
}

#[test]
fn brackets_inside_strings_are_not_depth() {
    let deep_text = "[".repeat(5000);
    let cases = [
        (format!(r#"{{"message":"{deep_text}"}}"#), 1),
        (r#"{"a":"{[{["}"#.to_owned(), 1),
        // An escaped quote does not end the string.
        (r#"{"a":"x\"[[[[","b":[]}"#.to_owned(), 2),
        // An escaped backslash does: the `[` after it is structure.
        (r#"{"a":"x\\","b":[[]]}"#.to_owned(), 3),
        (r#"["\\\"[[", ["\\"]]"#.to_owned(), 2),
        // Keys are strings too.
        (r#"{"[[[[":1}"#.to_owned(), 1),
        // Unicode escapes of quotes and brackets are text.
        (r#"{"a":"\u0022[[\u005b"}"#.to_owned(), 1),
        // An unterminated string swallows the rest.
        (r#"{"a":"[[[[[[[["#.to_owned(), 1),
    ];
    for (payload, want) in cases {
        assert_eq!(depth(&payload), want, "{payload:?}");
    }
}

#[test]
fn depth_scan_stops_at_the_limit() {
    let payload = format!("{}{}", "[".repeat(100), "]".repeat(100));
    assert!(nests_deeper_than(payload.as_bytes(), 99));
    assert!(!nests_deeper_than(payload.as_bytes(), 100));
}

fn fields(payload: &[u8]) -> Value {
    Value::Object(routing_fields(payload))
}

#[test]
fn routing_fields_of_whole_and_broken_objects() {
    let deep = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
    let cases: Vec<(String, Value)> = vec![
        // Only the routing fields are kept, whatever their order.
        (
            r#"{"message":"hi","sessionId":"s1","replyTopic":"t/x","requestId":"r1","stream":true}"#.into(),
            json!({"sessionId": "s1", "replyTopic": "t/x", "requestId": "r1"}),
        ),
        // Whitespace everywhere JSON allows it.
        (
            " {\n \"sessionId\" \t: \"s1\" ,\r\n\"requestId\":7 } ".into(),
            json!({"sessionId": "s1", "requestId": 7}),
        ),
        // Scalars keep their JSON type.
        (
            r#"{"sessionId":12,"requestId":1.5,"replyTopic":null}"#.into(),
            json!({"sessionId": 12, "requestId": 1.5, "replyTopic": null}),
        ),
        (r#"{"sessionId":true}"#.into(), json!({"sessionId": true})),
        // Nested values are skipped (without recursion) and kept as an empty array.
        (
            format!(r#"{{"x":{deep},"sessionId":"n1","requestId":{deep}}}"#),
            json!({"sessionId": "n1", "requestId": []}),
        ),
        (
            r#"{"sessionId":{"a":["}",{"b":"]"}]},"requestId":"r"}"#.into(),
            json!({"sessionId": [], "requestId": "r"}),
        ),
        // Truncated: what was read before the cut is kept.
        (r#"{"sessionId":"s1","message":"hi"#.into(), json!({"sessionId": "s1"})),
        (r#"{"sessionId":"s1""#.into(), json!({"sessionId": "s1"})),
        (r#"{"sessionId":"s1"#.into(), json!({})),
        (r#"{"sessionId":"s1","requestId":12"#.into(), json!({"sessionId": "s1"})),
        (r#"{"sessionId":"s1","x":[[[1,2"#.into(), json!({"sessionId": "s1"})),
        // A syntax error stops the scan.
        (r#"{"sessionId":"s1",}"#.into(), json!({"sessionId": "s1"})),
        (r#"{"message":hi,"sessionId":"s1"}"#.into(), json!({})),
        (r#"{"sessionId" "s1"}"#.into(), json!({})),
        (r#"{sessionId:"s1"}"#.into(), json!({})),
        (
            r#"{"sessionId":"s1" "requestId":"r1"}"#.into(),
            json!({"sessionId": "s1"}),
        ),
        // Escapes: escaped quotes in other values, escaped keys, escaped values.
        (
            r#"{"message":"say \"hi\", \\","sessionId":"s1"}"#.into(),
            json!({"sessionId": "s1"}),
        ),
        (r#"{"session\u0049d":"s\u00e9"}"#.into(), json!({"sessionId": "sé"})),
        // A later duplicate wins, as in a full parse.
        (
            r#"{"sessionId":"a","sessionId":"b","message":"#.into(),
            json!({"sessionId": "b"}),
        ),
        // Not an object: nothing.
        (r#"[{"sessionId":"s1"}]"#.into(), json!({})),
        (r#""sessionId""#.into(), json!({})),
        ("".into(), json!({})),
        ("{".into(), json!({})),
        ("{}".into(), json!({})),
    ];
    for (payload, want) in cases {
        assert_eq!(fields(payload.as_bytes()), want, "{payload}");
    }
}

#[test]
fn routing_fields_skip_invalid_utf8_outside_them() {
    let payload = b"{\"sessionId\":\"s1\",\"message\":\"\xc3\x28\",\"requestId\":\"r1\"}";
    assert_eq!(fields(payload), json!({"sessionId": "s1", "requestId": "r1"}));
    // Inside a routing field the scan stops there.
    let payload = b"{\"requestId\":\"r1\",\"sessionId\":\"\xff\",\"replyTopic\":\"t\"}";
    assert_eq!(fields(payload), json!({"requestId": "r1"}));
}
