//! Tests of request parsing and frames.
use super::*;
use serde_json::json;

const REPLY_BASE: &str = "general/assistant_response";

fn general() -> ProjectName {
    ProjectName::try_new("general").unwrap()
}

fn parse_with(payload: &[u8], props: &V5Props) -> Result<ChatRequest, Rejection> {
    parse_request(&general(), payload, props, &WireLimits::default(), &ReplyPolicy::none())
}

fn parse(payload: &str) -> Result<ChatRequest, Rejection> {
    parse_with(payload.as_bytes(), &V5Props::default())
}

fn parse_json(payload: Value) -> Result<ChatRequest, Rejection> {
    parse(&payload.to_string())
}

fn v5(topic: &str) -> V5Props {
    V5Props {
        response_topic: Some(topic.to_owned()),
        correlation_data: Some(Bytes::from_static(b"corr-1")),
        ..V5Props::default()
    }
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.chars().all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
}

/// `{base}/default-` + 8 lowercase hex.
fn is_default_session_topic(topic: &str, base: &str) -> bool {
    topic
        .strip_prefix(base)
        .and_then(|rest| rest.strip_prefix("/default-"))
        .is_some_and(|hex| is_hex(hex, 8))
}

/// Where a rejection's reply must go.
#[derive(Debug, Clone, Copy)]
enum To {
    Nowhere,
    Topic(&'static str),
    /// `general/assistant_response/default-{8hex}`: a freshly generated session.
    FreshSession,
}

fn check_reply(reply: Option<&ReplyTarget>, want: &To, case: &str) {
    match (want, reply) {
        (To::Nowhere, None) => {}
        (To::Topic(t), Some(r)) => assert_eq!(r.topic, *t, "{case}"),
        (To::FreshSession, Some(r)) => {
            assert!(is_default_session_topic(&r.topic, REPLY_BASE), "{case}: {}", r.topic)
        }
        (want, got) => panic!("{case}: want {want:?}, got {got:?}"),
    }
}

fn long_session() -> String {
    "s".repeat(129)
}

/// The full bad-input table: exact reply text, exact reply topic (or none), and the metrics code.
#[test]
fn bad_input_table() {
    let top_p = "Error: invalid 'topP': must be a number between 0 and 1";
    let s1 = To::Topic("general/assistant_response/s1");
    let cases: Vec<(&str, Vec<u8>, &str, &str, To)> = vec![
        // Not JSON: the payload is the message; empty → error to the fresh session's topic.
        (
            "empty payload",
            b"".to_vec(),
            "Error: 'message' is empty",
            "empty_message",
            To::FreshSession,
        ),
        (
            "blank payload",
            b" \n\t ".to_vec(),
            "Error: 'message' is empty",
            "empty_message",
            To::FreshSession,
        ),
        // Not UTF-8.
        (
            "not utf-8",
            b"\xff\xfehello".to_vec(),
            "Error: payload is not valid UTF-8",
            "not_utf8",
            To::Nowhere,
        ),
        // JSON that is not UTF-8: the shallow scan still finds the session.
        (
            "not utf-8 json-like",
            b"{\"sessionId\":\"s1\",\"message\":\"\xc3\x28\"}".to_vec(),
            "Error: payload is not valid UTF-8",
            "not_utf8",
            s1,
        ),
        (
            "not utf-8 json-like, no session",
            b"{\"message\":\"\xc3\x28\"}".to_vec(),
            "Error: payload is not valid UTF-8",
            "not_utf8",
            To::Nowhere,
        ),
        // Valid JSON, not an object.
        (
            "json string",
            b"\"hi\"".to_vec(),
            "Error: request must be a JSON object",
            "not_object",
            To::Nowhere,
        ),
        (
            "json number",
            b"42".to_vec(),
            "Error: request must be a JSON object",
            "not_object",
            To::Nowhere,
        ),
        (
            "json array",
            b"[]".to_vec(),
            "Error: request must be a JSON object",
            "not_object",
            To::Nowhere,
        ),
        (
            "json array of request",
            br#"[{"sessionId":"s1","message":"hi"}]"#.to_vec(),
            "Error: request must be a JSON object",
            "not_object",
            To::Nowhere,
        ),
        (
            "json null",
            b"null".to_vec(),
            "Error: request must be a JSON object",
            "not_object",
            To::Nowhere,
        ),
        (
            "json bool",
            b" true ".to_vec(),
            "Error: request must be a JSON object",
            "not_object",
            To::Nowhere,
        ),
        // Message.
        (
            "empty object",
            b"{}".to_vec(),
            "Error: missing 'message'",
            "missing_message",
            To::FreshSession,
        ),
        (
            "missing message",
            br#"{"sessionId":"s1"}"#.to_vec(),
            "Error: missing 'message'",
            "missing_message",
            s1,
        ),
        (
            "null message",
            br#"{"sessionId":"s1","message":null}"#.to_vec(),
            "Error: 'message' must be a string",
            "message_not_string",
            s1,
        ),
        (
            "number message",
            br#"{"sessionId":"s1","message":42}"#.to_vec(),
            "Error: 'message' must be a string",
            "message_not_string",
            s1,
        ),
        (
            "object message",
            br#"{"sessionId":"s1","message":{"text":"hi"}}"#.to_vec(),
            "Error: 'message' must be a string",
            "message_not_string",
            s1,
        ),
        (
            "array message",
            br#"{"sessionId":"s1","message":["hi"]}"#.to_vec(),
            "Error: invalid 'message': content parts must be objects",
            "invalid_param",
            s1,
        ),
        (
            "bool message",
            br#"{"sessionId":"s1","message":true}"#.to_vec(),
            "Error: 'message' must be a string",
            "message_not_string",
            s1,
        ),
        (
            "empty message",
            br#"{"sessionId":"s1","message":""}"#.to_vec(),
            "Error: 'message' is empty",
            "empty_message",
            s1,
        ),
        (
            "blank message",
            br#"{"sessionId":"s1","message":" \n\t "}"#.to_vec(),
            "Error: 'message' is empty",
            "empty_message",
            s1,
        ),
        (
            "empty message no session",
            br#"{"message":""}"#.to_vec(),
            "Error: 'message' is empty",
            "empty_message",
            To::FreshSession,
        ),
        (
            "empty message with replyTopic",
            br#"{"sessionId":"s1","message":"","replyTopic":"general/assistant_response/s1/c/r"}"#.to_vec(),
            "Error: 'message' is empty",
            "empty_message",
            To::Topic("general/assistant_response/s1/c/r"),
        ),
        // Bad session ids: no default topic exists, only a valid replyTopic can carry the error.
        (
            "session with slash",
            br#"{"sessionId":"a/b","message":"hi"}"#.to_vec(),
            "Error: invalid sessionId",
            "invalid_session_id",
            To::Nowhere,
        ),
        (
            "session with plus",
            br#"{"sessionId":"a+b","message":"hi"}"#.to_vec(),
            "Error: invalid sessionId",
            "invalid_session_id",
            To::Nowhere,
        ),
        (
            "session with hash",
            br##"{"sessionId":"#","message":"hi"}"##.to_vec(),
            "Error: invalid sessionId",
            "invalid_session_id",
            To::Nowhere,
        ),
        (
            "session with NUL",
            br#"{"sessionId":"a\u0000b","message":"hi"}"#.to_vec(),
            "Error: invalid sessionId",
            "invalid_session_id",
            To::Nowhere,
        ),
        (
            "session with newline",
            br#"{"sessionId":"a\nb","message":"hi"}"#.to_vec(),
            "Error: invalid sessionId",
            "invalid_session_id",
            To::Nowhere,
        ),
        (
            "session object",
            br#"{"sessionId":{"id":1},"message":"hi"}"#.to_vec(),
            "Error: invalid sessionId",
            "invalid_session_id",
            To::Nowhere,
        ),
        (
            "session array",
            br#"{"sessionId":["s1"],"message":"hi"}"#.to_vec(),
            "Error: invalid sessionId",
            "invalid_session_id",
            To::Nowhere,
        ),
        (
            "session too long",
            json!({"sessionId": long_session(), "message": "hi"})
                .to_string()
                .into_bytes(),
            "Error: invalid sessionId",
            "invalid_session_id",
            To::Nowhere,
        ),
        (
            "bad session with replyTopic",
            br#"{"sessionId":"a/b","message":"hi","replyTopic":"general/assistant_response/x/c/r"}"#.to_vec(),
            "Error: invalid sessionId",
            "invalid_session_id",
            To::Topic("general/assistant_response/x/c/r"),
        ),
        (
            "bad session with invalid replyTopic",
            br#"{"sessionId":"a/b","message":"hi","replyTopic":"maze/assistant_response/x"}"#.to_vec(),
            "Error: invalid sessionId",
            "invalid_session_id",
            To::Nowhere,
        ),
        (
            "bad session before bad message",
            br##"{"sessionId":"a#","message":42,"replyTopic":"general/assistant_response/x"}"##.to_vec(),
            "Error: invalid sessionId",
            "invalid_session_id",
            To::Topic("general/assistant_response/x"),
        ),
        // Message errors come before parameter errors.
        (
            "bad message and bad temperature",
            br#"{"sessionId":"s1","message":"","temperature":9}"#.to_vec(),
            "Error: 'message' is empty",
            "empty_message",
            s1,
        ),
        // Parameter errors still honour a valid replyTopic.
        (
            "bad param with replyTopic",
            br#"{"sessionId":"s1","message":"hi","topP":1.5,"replyTopic":"general/assistant_response/s1/c1/r1"}"#
                .to_vec(),
            top_p,
            "invalid_param",
            To::Topic("general/assistant_response/s1/c1/r1"),
        ),
    ];
    for (case, payload, text, code, to) in cases {
        let rejection = parse_with(&payload, &V5Props::default()).expect_err(case);
        assert_eq!(rejection.error.reply_text(), text, "{case}");
        assert_eq!(rejection.error.code(), code, "{case}");
        check_reply(rejection.reply.as_ref(), &to, case);
    }
}

/// Every out-of-range or mistyped parameter of a valid request: `invalid_param`, answered on the session's topic.
#[test]
fn bad_parameters_are_invalid_param() {
    let cases: [(&str, &[&str], &str); 5] = [
        // temperature: 0..=2, numbers only.
        (
            "temperature",
            &["-0.1", "2.01", "1e308", r#""0.5""#, "true", "[0.5]"],
            "Error: invalid 'temperature': must be a number between 0 and 2",
        ),
        // topP: 0..=1 (0 is greedy decoding).
        (
            "topP",
            &["-0.5", "-1e-9", "1.01", r#""0.9""#, "true"],
            "Error: invalid 'topP': must be a number between 0 and 1",
        ),
        // maxTokens: integer in 1..=limit.
        (
            "maxTokens",
            &["0", "-5", "1.5", "32769", "1e10", "18446744073709551615", r#""512""#],
            "Error: invalid 'maxTokens': must be an integer between 1 and 32768",
        ),
        (
            "systemPrompt",
            &["42", r#"{"content":"x"}"#],
            "Error: invalid 'systemPrompt': must be a string",
        ),
        (
            "stream",
            &[r#""yes""#, "1"],
            "Error: invalid 'stream': must be a boolean",
        ),
    ];
    let s1 = To::Topic("general/assistant_response/s1");
    for (param, values, text) in cases {
        for value in values {
            let payload = format!(r#"{{"sessionId":"s1","message":"hi","{param}":{value}}}"#);
            let case = format!("{param} {value}");
            let rejection = parse(&payload).expect_err(&case);
            assert_eq!(rejection.error.reply_text(), text, "{case}");
            assert_eq!(rejection.error.code(), "invalid_param", "{case}");
            check_reply(rejection.reply.as_ref(), &s1, &case);
        }
    }
}

#[test]
fn oversize_payloads_are_refused_but_answered_where_possible() {
    let limits = WireLimits {
        max_payload_bytes: 100,
        ..WireLimits::default()
    };
    let padding = "x".repeat(200);
    let with_reply = json!({
        "sessionId": "s1",
        "message": padding,
        "replyTopic": "general/assistant_response/s1/c/r",
        "requestId": "r-big",
    })
    .to_string();
    let session_only = json!({"sessionId": "s1", "message": padding}).to_string();
    let bad_session = json!({"sessionId": "a/b", "message": padding}).to_string();
    let not_object = json!([padding]).to_string();
    // Never parsed whole: these are read by the shallow scan of the top level only.
    let truncated = format!(r#"{{"sessionId":"s1","message":"{padding}"#);
    let deep = format!(r#"{{"x":{}{},"sessionId":"s1"}}"#, "[".repeat(5000), "]".repeat(5000));
    let no_session = json!({"message": padding}).to_string();
    let mut not_utf8 = padding.clone().into_bytes();
    not_utf8.push(0xff);
    let cases: Vec<(&str, Vec<u8>, V5Props, To)> = vec![
        (
            "replyTopic",
            with_reply.clone().into_bytes(),
            V5Props::default(),
            To::Topic("general/assistant_response/s1/c/r"),
        ),
        (
            "sessionId only",
            session_only.into_bytes(),
            V5Props::default(),
            To::Topic("general/assistant_response/s1"),
        ),
        (
            "bad sessionId",
            bad_session.into_bytes(),
            V5Props::default(),
            To::Nowhere,
        ),
        (
            "plain text",
            padding.clone().into_bytes(),
            V5Props::default(),
            To::FreshSession,
        ),
        (
            "truncated object",
            truncated.into_bytes(),
            V5Props::default(),
            To::Topic("general/assistant_response/s1"),
        ),
        (
            "deeply nested object",
            deep.into_bytes(),
            V5Props::default(),
            To::Topic("general/assistant_response/s1"),
        ),
        // An error to a fresh default session would reach nobody waiting for it.
        (
            "object without sessionId",
            no_session.into_bytes(),
            V5Props::default(),
            To::Nowhere,
        ),
        (
            "not an object",
            not_object.into_bytes(),
            V5Props::default(),
            To::Nowhere,
        ),
        ("not utf-8", not_utf8.clone(), V5Props::default(), To::Nowhere),
        (
            "not utf-8, v5",
            not_utf8,
            v5("general/assistant_response/big"),
            To::Topic("general/assistant_response/big"),
        ),
        (
            "replyTopic, v5",
            with_reply.into_bytes(),
            v5("general/assistant_response/big"),
            To::Topic("general/assistant_response/big"),
        ),
    ];
    for (case, payload, props, to) in cases {
        let size = payload.len();
        let rejection = parse_request(&general(), &payload, &props, &limits, &ReplyPolicy::none()).expect_err(case);
        assert_eq!(rejection.error, RequestError::TooLarge { size, limit: 100 }, "{case}");
        assert_eq!(
            rejection.error.reply_text(),
            format!("Error: request too large ({size} bytes, limit 100)"),
            "{case}"
        );
        assert_eq!(rejection.error.code(), "too_large");
        check_reply(rejection.reply.as_ref(), &to, case);
    }
    // The client's request id is kept when the oversize payload was readable.
    let payload = json!({"sessionId": "s1", "message": padding, "requestId": "r-big"}).to_string();
    let rejection = parse_request(
        &general(),
        payload.as_bytes(),
        &V5Props::default(),
        &limits,
        &ReplyPolicy::none(),
    )
    .unwrap_err();
    assert_eq!(rejection.request_id.as_deref(), Some("r-big"));
    // Exactly at the limit is accepted.
    let payload = "y".repeat(100);
    let request = parse_request(
        &general(),
        payload.as_bytes(),
        &V5Props::default(),
        &limits,
        &ReplyPolicy::none(),
    )
    .unwrap();
    assert_eq!(request.message, payload);
}

#[test]
fn v5_response_topic_carries_non_routable_errors() {
    let props = v5("general/assistant_response/c42/replies");
    for payload in [&b"\xff"[..], b"\"hi\"", b"[]", b"null", b"42"] {
        let rejection = parse_with(payload, &props).unwrap_err();
        let reply = rejection.reply.unwrap();
        assert_eq!(reply.topic, "general/assistant_response/c42/replies");
        assert_eq!(reply.correlation_data, Some(Bytes::from_static(b"corr-1")));
    }
    let rejection = parse_with(br#"{"sessionId":"a+b","message":"hi"}"#, &props).unwrap_err();
    assert_eq!(rejection.error, RequestError::InvalidSessionId);
    assert_eq!(rejection.reply.unwrap().topic, "general/assistant_response/c42/replies");
    let rejection = parse_with(b"   ", &props).unwrap_err();
    assert_eq!(rejection.error, RequestError::EmptyMessage);
    assert_eq!(rejection.reply.unwrap().topic, "general/assistant_response/c42/replies");
}

#[test]
fn reply_target_precedence() {
    let reply_topic = "general/assistant_response/s1/c/r";
    let payload = json!({"sessionId": "s1", "message": "hi", "replyTopic": reply_topic}).to_string();
    let payload_bad_reply =
        json!({"sessionId": "s1", "message": "hi", "replyTopic": "maze/assistant_response/s1"}).to_string();
    let plain = json!({"sessionId": "s1", "message": "hi"}).to_string();
    let null_reply = json!({"sessionId": "s1", "message": "hi", "replyTopic": null}).to_string();
    let cases: Vec<(&str, &str, V5Props, &str, Option<TopicFallback>)> = vec![
        (
            "v5 wins over replyTopic",
            &payload,
            v5("general/assistant_response/v5/reply"),
            "general/assistant_response/v5/reply",
            None,
        ),
        (
            "v5 wins over default",
            &plain,
            v5("general/assistant_response/v5/reply"),
            "general/assistant_response/v5/reply",
            None,
        ),
        (
            "v5 used verbatim",
            &plain,
            v5("general/assistant_response/v5/reply/"),
            "general/assistant_response/v5/reply/",
            None,
        ),
        (
            "v5 outside the project's reply prefixes, valid replyTopic",
            &payload,
            v5("home/door/set"),
            reply_topic,
            Some(TopicFallback::NotAllowed),
        ),
        (
            "v5 outside the project's reply prefixes, default",
            &plain,
            v5("home/door/set"),
            "general/assistant_response/s1",
            Some(TopicFallback::NotAllowed),
        ),
        (
            "invalid v5, valid replyTopic",
            &payload,
            v5("v5/#"),
            reply_topic,
            Some(TopicFallback::Wildcard),
        ),
        (
            "invalid v5, default",
            &plain,
            v5(""),
            "general/assistant_response/s1",
            Some(TopicFallback::Empty),
        ),
        (
            "invalid v5 reason wins over invalid replyTopic",
            &payload_bad_reply,
            v5("a/+"),
            "general/assistant_response/s1",
            Some(TopicFallback::Wildcard),
        ),
        ("replyTopic", &payload, V5Props::default(), reply_topic, None),
        (
            "invalid replyTopic",
            &payload_bad_reply,
            V5Props::default(),
            "general/assistant_response/s1",
            Some(TopicFallback::WrongPrefix),
        ),
        (
            "null replyTopic is not given",
            &null_reply,
            V5Props::default(),
            "general/assistant_response/s1",
            None,
        ),
        (
            "default",
            &plain,
            V5Props::default(),
            "general/assistant_response/s1",
            None,
        ),
    ];
    for (case, payload, props, topic, fallback) in cases {
        let request = parse_with(payload.as_bytes(), &props).expect(case);
        assert_eq!(request.reply.topic, topic, "{case}");
        assert_eq!(request.reply_topic_fallback, fallback, "{case}");
        assert_eq!(request.reply.correlation_data, props.correlation_data, "{case}");
    }
}

/// A Response Topic outside the allowed prefixes is never used: the reply goes to the default topic (or, for a
/// non-routable payload, nowhere), always with the Correlation Data; a configured prefix is honoured.
#[test]
fn response_topic_is_confined_to_the_reply_policy() {
    let plain = br#"{"sessionId":"s1","message":"hi"}"#;
    for topic in [
        "home/door/set",
        "$SYS/x",
        "maze/assistant_response/s1",
        "general/assistant_stream/s1",
    ] {
        let request = parse_with(plain, &v5(topic)).unwrap();
        assert_eq!(request.reply.topic, "general/assistant_response/s1", "{topic}");
        assert_eq!(request.reply.correlation_data, Some(Bytes::from_static(b"corr-1")));
        assert_eq!(request.reply_topic_fallback, Some(TopicFallback::NotAllowed), "{topic}");
        let rejection = parse_with(b"[]", &v5(topic)).unwrap_err();
        assert_eq!(rejection.reply, None, "{topic}");
    }
    let policy = ReplyPolicy::new(["devices"]).unwrap();
    let parse = |topic: &str| parse_request(&general(), plain, &v5(topic), &WireLimits::default(), &policy).unwrap();
    let request = parse("devices/42/inbox");
    assert_eq!(request.reply.topic, "devices/42/inbox");
    assert_eq!(request.reply_topic_fallback, None);
    let request = parse("home/door/set");
    assert_eq!(request.reply.topic, "general/assistant_response/s1");
    assert_eq!(request.reply_topic_fallback, Some(TopicFallback::NotAllowed));
}

#[test]
fn correlation_data_is_carried_without_response_topic() {
    let props = V5Props {
        response_topic: None,
        correlation_data: Some(Bytes::from_static(b"\x00\x01")),
        ..V5Props::default()
    };
    let request = parse_with(br#"{"sessionId":"s1","message":"hi"}"#, &props).unwrap();
    assert_eq!(request.reply.topic, "general/assistant_response/s1");
    assert_eq!(request.reply.correlation_data, props.correlation_data);
    let rejection = parse_with(br#"{"sessionId":"s1"}"#, &props).unwrap_err();
    assert_eq!(rejection.reply.unwrap().correlation_data, props.correlation_data);
    let request = parse_with(b"plain text", &props).unwrap();
    assert_eq!(request.reply.correlation_data, props.correlation_data);
}

/// replyTopic rules of seed-protocol §1.4 as seen through parse_request.
#[test]
fn reply_topic_rules_through_parse_request() {
    let cases: Vec<(Value, &str, Option<TopicFallback>)> = vec![
        (
            json!("general/assistant_response/s1/c/r"),
            "general/assistant_response/s1/c/r",
            None,
        ),
        (
            json!("general/assistant_response/other/c"),
            "general/assistant_response/other/c",
            None,
        ),
        (
            json!(" general/assistant_response/s1/c/ "),
            "general/assistant_response/s1/c",
            None,
        ),
        (
            json!("general/assistant_response/"),
            "general/assistant_response/s1",
            Some(TopicFallback::EmptySuffix),
        ),
        (
            json!("general/assistant_response///"),
            "general/assistant_response/s1",
            Some(TopicFallback::EmptySuffix),
        ),
        (
            json!("maze/assistant_response/s1"),
            "general/assistant_response/s1",
            Some(TopicFallback::WrongPrefix),
        ),
        (
            json!("general/assistant_response/#"),
            "general/assistant_response/s1",
            Some(TopicFallback::Wildcard),
        ),
        (
            json!("general/assistant_response/+/x"),
            "general/assistant_response/s1",
            Some(TopicFallback::Wildcard),
        ),
        (json!(""), "general/assistant_response/s1", Some(TopicFallback::Empty)),
        (
            json!(7),
            "general/assistant_response/s1",
            Some(TopicFallback::NotString),
        ),
        (
            json!({"t": 1}),
            "general/assistant_response/s1",
            Some(TopicFallback::NotString),
        ),
    ];
    for (reply_topic, topic, fallback) in cases {
        let request = parse_json(json!({"sessionId": "s1", "message": "hi", "replyTopic": reply_topic})).unwrap();
        assert_eq!(request.reply.topic, topic, "replyTopic {reply_topic}");
        assert_eq!(request.reply_topic_fallback, fallback, "replyTopic {reply_topic}");
    }
}

#[test]
fn full_request_is_parsed() {
    let request = parse_json(json!({
        "sessionId": "  user7-abc  ",
        "message": "  Hello there \n",
        "temperature": 0.25,
        "topP": 0.5,
        "maxTokens": 256,
        "systemPrompt": "  Be brief.  ",
        "replyTopic": "general/assistant_response/user7-abc/client1/req1",
        "clientId": "client1",
        "requestId": "req1",
        "images": ["data:image/png;base64,AAAA"],
        "project": "ignored",
    }))
    .unwrap();
    assert_eq!(
        request,
        ChatRequest {
            project: general(),
            session: SessionId::try_new("user7-abc").unwrap(),
            message: "Hello there".to_owned(),
            images: vec![ImageUrl::try_new("data:image/png;base64,AAAA", 1, 3).unwrap()],
            sampling: SamplingOverrides {
                temperature: Some(0.25),
                top_p: Some(0.5),
                max_tokens: Some(256),
            },
            system_prompt: Some("Be brief.".to_owned()),
            reply: ReplyTarget {
                topic: "general/assistant_response/user7-abc/client1/req1".to_owned(),
                correlation_data: None,
            },
            stream: None,
            request_id: "req1".to_owned(),
            client_id: Some("client1".to_owned()),
            reply_topic_fallback: None,
            raw_json: true,
            kind: RequestKind::Chat,
        }
    );
}

#[test]
fn plain_text_payload_is_the_message_in_a_fresh_session() {
    for (payload, message) in [
        ("hello", "hello"),
        ("  hello world \n", "hello world"),
        ("NaN", "NaN"),
        // JSON-looking text further in is still text: only the first non-whitespace byte decides.
        ("hello {\"message\": \"x\"}", "hello {\"message\": \"x\"}"),
        ("x[1,2", "x[1,2"),
        ("\u{a0}{\"sessionId\":\"s1\"}", "{\"sessionId\":\"s1\"}"),
    ] {
        let request = parse(payload).unwrap();
        assert_eq!(request.message, message);
        assert!(!request.raw_json);
        assert!(request.session.as_str().starts_with("default-"));
        assert_eq!(
            request.reply.topic,
            format!("general/assistant_response/{}", request.session)
        );
        assert_eq!(request.sampling, SamplingOverrides::default());
        assert_eq!(request.system_prompt, None);
        assert_eq!(request.stream, None);
        assert_eq!(request.client_id, None);
        assert!(is_hex(&request.request_id, 16), "{}", request.request_id);
    }
    let a = parse("hi").unwrap();
    let b = parse("hi").unwrap();
    assert_ne!(a.session, b.session, "every plain-text message is a new session");
}

/// What a payload that is rejected by the input-hygiene rules must produce.
fn check_rejection(case: &str, payload: &[u8], props: &V5Props, code: &str, to: To) -> Rejection {
    let rejection = parse_with(payload, props).expect_err(case);
    assert_eq!(rejection.error.code(), code, "{case}: {rejection:?}");
    check_reply(rejection.reply.as_ref(), &to, case);
    rejection
}

fn nested(levels: usize) -> String {
    format!("{}{}", "[".repeat(levels), "]".repeat(levels))
}

/// The tester's defect: a valid request nested 5,000 deep overflowed serde_json's recursion limit, was then taken
/// as plain text and answered, as a chat turn, on a random `default-…` session instead of `n1`.
#[test]
fn regression_deeply_nested_request_is_refused_on_its_own_session() {
    let payload = format!(r#"{{"sessionId":"n1","message":"hi","x":{}}}"#, nested(5000));
    let rejection = check_rejection(
        "5000 deep",
        payload.as_bytes(),
        &V5Props::default(),
        "too_deep",
        To::Topic("general/assistant_response/n1"),
    );
    assert_eq!(rejection.error, RequestError::TooDeep { limit: 32 });
    assert_eq!(rejection.error.reply_text(), "Error: JSON nested deeper than 32 levels");
    // The routing fields are found wherever they are, before or after the deep member.
    let payload = format!(
        r#"{{"x":{},"message":"hi","requestId":"r9","sessionId":"n1","replyTopic":"general/assistant_response/n1/c"}}"#,
        nested(5000)
    );
    let rejection = check_rejection(
        "fields after the deep member",
        payload.as_bytes(),
        &V5Props::default(),
        "too_deep",
        To::Topic("general/assistant_response/n1/c"),
    );
    assert_eq!(rejection.request_id.as_deref(), Some("r9"));
    // The MQTT 5 Response Topic still wins, with its correlation data.
    let props = v5("general/assistant_response/v5");
    let rejection = check_rejection(
        "v5",
        payload.as_bytes(),
        &props,
        "too_deep",
        To::Topic("general/assistant_response/v5"),
    );
    assert_eq!(rejection.reply.unwrap().correlation_data, props.correlation_data);
}

#[test]
fn nesting_limit_is_ours_and_configurable() {
    // The request object is level 1: 31 levels inside it are allowed by default, 32 are not.
    let at_limit = format!(r#"{{"sessionId":"s1","message":"hi","x":{}}}"#, nested(31));
    assert_eq!(parse(&at_limit).unwrap().session.as_str(), "s1");
    let over = format!(r#"{{"sessionId":"s1","message":"hi","x":{}}}"#, nested(32));
    check_rejection(
        "33 levels",
        over.as_bytes(),
        &V5Props::default(),
        "too_deep",
        To::Topic("general/assistant_response/s1"),
    );
    // Below serde_json's own limit (128) the bound is still ours.
    let limits = WireLimits {
        max_json_depth: 4,
        ..WireLimits::default()
    };
    let parse_limited = |payload: &str| {
        parse_request(
            &general(),
            payload.as_bytes(),
            &V5Props::default(),
            &limits,
            &ReplyPolicy::none(),
        )
    };
    let ok = r#"{"sessionId":"s1","message":"hi","x":[[[]]]}"#;
    assert!(parse_limited(ok).is_ok());
    let deep = r#"{"sessionId":"s1","message":"hi","x":[[[[]]]]}"#;
    let rejection = parse_limited(deep).unwrap_err();
    assert_eq!(rejection.error.reply_text(), "Error: JSON nested deeper than 4 levels");
    // A deep array, not an object: no session to answer.
    check_rejection(
        "deep array",
        nested(40).as_bytes(),
        &V5Props::default(),
        "too_deep",
        To::Nowhere,
    );
}

#[test]
fn brackets_and_escaped_quotes_inside_strings_are_text() {
    let deep_text = "[{".repeat(5000);
    let request = parse_json(json!({"sessionId": "s1", "message": deep_text})).unwrap();
    assert_eq!(request.message, deep_text);
    let payload = r#"{"sessionId":"s1","message":"say \"[[[[{{\" and \\ then ]]]}","x":[["\"]]"]]}"#;
    let request = parse(payload).unwrap();
    assert_eq!(request.message, r#"say "[[[[{{" and \ then ]]]}"#);
    // Truncated after an escaped quote: the scan does not take `\"` for the end of the string.
    let payload = r#"{"message":"a \"quoted\" word","sessionId":"s1","stream":"#;
    check_rejection(
        "escaped quotes before the cut",
        payload.as_bytes(),
        &V5Props::default(),
        "invalid_json",
        To::Topic("general/assistant_response/s1"),
    );
}

#[test]
fn invalid_json_is_never_plain_text() {
    let s1 = To::Topic("general/assistant_response/s1");
    let cases: Vec<(&str, &str, To)> = vec![
        ("truncated object", r#"{"sessionId":"s1","message":"hi"#, s1),
        ("truncated after a member", r#"{"sessionId":"s1","message":"hi""#, s1),
        (
            "leading whitespace",
            " \r\n\t{\"sessionId\":\"s1\",\"message\":\"hi\",}",
            s1,
        ),
        ("trailing garbage", r#"{"sessionId":"s1","message":"hi"} x"#, s1),
        ("bad literal", r#"{"sessionId":"s1","message":"hi","stream":yes}"#, s1),
        (
            "numeric session",
            r#"{"sessionId":7,"message":"hi""#,
            To::Topic("general/assistant_response/7"),
        ),
        (
            "replyTopic wins",
            r#"{"sessionId":"s1","replyTopic":"general/assistant_response/s1/c/r","message":"#,
            To::Topic("general/assistant_response/s1/c/r"),
        ),
        (
            "invalid replyTopic falls back",
            r#"{"sessionId":"s1","replyTopic":"home/door/set","message":"#,
            s1,
        ),
        // No session named: nobody to tell.
        ("no session", r#"{"message":"hi""#, To::Nowhere),
        ("null session", r#"{"sessionId":null,"message":"hi""#, To::Nowhere),
        ("blank session", r#"{"sessionId":"  ","message":"hi""#, To::Nowhere),
        ("invalid session", r#"{"sessionId":"a/b","message":"hi""#, To::Nowhere),
        ("array session", r#"{"sessionId":["s1"],"message":"hi""#, To::Nowhere),
        (
            "session after the error",
            r#"{"message":hi,"sessionId":"s1"}"#,
            To::Nowhere,
        ),
        ("array", "[1,2", To::Nowhere),
        ("not a member", "{not json", To::Nowhere),
        ("lone brace", "{", To::Nowhere),
        (
            "invalid session, valid replyTopic",
            r#"{"sessionId":"a/b","replyTopic":"general/assistant_response/x","message":"#,
            To::Topic("general/assistant_response/x"),
        ),
    ];
    for (case, payload, to) in cases {
        let rejection = check_rejection(case, payload.as_bytes(), &V5Props::default(), "invalid_json", to);
        assert!(
            rejection.error.reply_text().starts_with("Error: invalid JSON: "),
            "{case}: {}",
            rejection.error.reply_text()
        );
    }
    // The exact text names serde_json's finding and where.
    let rejection = parse(r#"{"sessionId":"s1","message":"hi"#).unwrap_err();
    assert_eq!(
        rejection.error.reply_text(),
        "Error: invalid JSON: EOF while parsing a string at line 1 column 31"
    );
    let rejection = parse(r#"{"sessionId":"s1","message":"hi"} x"#).unwrap_err();
    assert_eq!(
        rejection.error.reply_text(),
        "Error: invalid JSON: trailing characters at line 1 column 35"
    );
    // `[1,2`: only an MQTT 5 Response Topic can carry the error.
    check_rejection(
        "array, v5",
        b"[1,2",
        &v5("general/assistant_response/r"),
        "invalid_json",
        To::Topic("general/assistant_response/r"),
    );
    // The client's request id is echoed when it was read.
    let rejection = parse(r#"{"requestId":"r1","sessionId":"s1","message":"#).unwrap_err();
    assert_eq!(rejection.request_id.as_deref(), Some("r1"));
}

#[test]
fn json_scalars_and_text_keep_the_original_rules() {
    // Valid JSON that is not an object: refused as before, whatever it starts with.
    check_rejection("string", b"\"{\"", &V5Props::default(), "not_object", To::Nowhere);
    check_rejection("array", b" [1,2] ", &V5Props::default(), "not_object", To::Nowhere);
    // Text that merely contains JSON is a chat message, as in the original.
    let request = parse(r#"please parse {"sessionId":"n1"}"#).unwrap();
    assert!(!request.raw_json);
    assert!(request.session.as_str().starts_with("default-"));
}

#[test]
fn session_id_table() {
    let max = "s".repeat(128);
    let cases: Vec<(Value, Option<&str>)> = vec![
        (json!("abc"), Some("abc")),
        (json!("  abc\t"), Some("abc")),
        (json!("user 1"), Some("user 1")),
        (json!(max), Some(&max)),
        (json!(42), Some("42")),
        (json!(-7), Some("-7")),
        (json!(1.5), Some("1.5")),
        (json!(1e5), Some("100000.0")),
        (json!(true), Some("true")),
        (json!(false), Some("false")),
    ];
    for (value, want) in cases {
        let request = parse_json(json!({"sessionId": value, "message": "hi"})).unwrap();
        assert_eq!(Some(request.session.as_str()), want, "sessionId {value}");
        assert_eq!(
            request.reply.topic,
            format!("general/assistant_response/{}", request.session)
        );
    }
    // Absent, null and blank: a fresh default session each time.
    for payload in [
        json!({"message": "hi"}),
        json!({"sessionId": null, "message": "hi"}),
        json!({"sessionId": "", "message": "hi"}),
        json!({"sessionId": "   ", "message": "hi"}),
    ] {
        let request = parse_json(payload.clone()).unwrap();
        assert!(
            is_default_session_topic(&request.reply.topic, REPLY_BASE),
            "{payload}: {}",
            request.reply.topic
        );
        assert!(request.raw_json);
    }
}

fn overrides_temperature(t: f32) -> SamplingOverrides {
    SamplingOverrides {
        temperature: Some(t),
        ..Default::default()
    }
}

fn overrides_top_p(p: f32) -> SamplingOverrides {
    SamplingOverrides {
        top_p: Some(p),
        ..Default::default()
    }
}

fn overrides_max_tokens(n: u32) -> SamplingOverrides {
    SamplingOverrides {
        max_tokens: Some(n),
        ..Default::default()
    }
}

#[test]
fn sampling_boundaries_are_accepted() {
    let cases: Vec<(Value, SamplingOverrides)> = vec![
        // temperature 0 is honoured (the original's `x or 0.6` made it impossible).
        (json!({"temperature": 0}), overrides_temperature(0.0)),
        (json!({"temperature": 0.0}), overrides_temperature(0.0)),
        (json!({"temperature": 2}), overrides_temperature(2.0)),
        (json!({"temperature": null}), SamplingOverrides::default()),
        (json!({"topP": 1}), overrides_top_p(1.0)),
        (json!({"topP": 0.01}), overrides_top_p(0.01)),
        (json!({"topP": null}), SamplingOverrides::default()),
        // topP 0 keeps only the top token: greedy, sent as temperature 0 (vLLM refuses top_p 0).
        (json!({"topP": 0}), overrides_temperature(0.0)),
        (json!({"topP": 0.0}), overrides_temperature(0.0)),
        (json!({"topP": 0, "temperature": 0.7}), overrides_temperature(0.0)),
        (json!({"maxTokens": 1}), overrides_max_tokens(1)),
        (json!({"maxTokens": 32768}), overrides_max_tokens(32768)),
        (json!({"maxTokens": 512.0}), overrides_max_tokens(512)),
        (json!({"maxTokens": null}), SamplingOverrides::default()),
    ];
    for (params, want) in cases {
        let mut payload = json!({"sessionId": "s1", "message": "hi"});
        if let (Value::Object(p), Value::Object(extra)) = (&mut payload, &params) {
            p.extend(extra.clone());
        }
        let request = parse_json(payload).unwrap();
        assert_eq!(request.sampling, want, "params {params}");
    }
}

/// The web chat's slider reaches `topP: 0`; the original sent it as `x or 0.9`, mqtt-llm as greedy decoding. Its
/// request must reach the engine exactly as a `temperature: 0` request does, whatever else it carries.
#[test]
fn top_p_zero_is_the_same_request_as_temperature_zero() {
    for extra in [
        json!({}),
        json!({"maxTokens": 64}),
        json!({"temperature": 1.5, "maxTokens": 64}),
    ] {
        let with = |params: Value| {
            let mut payload = json!({"sessionId": "s1", "message": "hi"});
            if let (Value::Object(p), Value::Object(e), Value::Object(q)) = (&mut payload, &extra, &params) {
                p.extend(e.clone());
                p.extend(q.clone());
            }
            parse_json(payload).unwrap().sampling
        };
        let greedy = with(json!({"topP": 0}));
        assert_eq!(greedy, with(json!({"temperature": 0, "topP": null})), "extra {extra}");
        assert_eq!(greedy.temperature, Some(0.0), "extra {extra}");
        assert_eq!(greedy.top_p, None, "extra {extra}");
    }
}

#[test]
fn max_tokens_limit_comes_from_config() {
    let limits = WireLimits {
        max_tokens_limit: 1024,
        ..WireLimits::default()
    };
    let payload = br#"{"sessionId":"s1","message":"hi","maxTokens":1025}"#;
    let rejection = parse_request(&general(), payload, &V5Props::default(), &limits, &ReplyPolicy::none()).unwrap_err();
    assert_eq!(
        rejection.error.reply_text(),
        "Error: invalid 'maxTokens': must be an integer between 1 and 1024"
    );
    let payload = br#"{"sessionId":"s1","message":"hi","maxTokens":1024}"#;
    let request = parse_request(&general(), payload, &V5Props::default(), &limits, &ReplyPolicy::none()).unwrap();
    assert_eq!(request.sampling.max_tokens, Some(1024));
}

#[test]
fn system_prompt_table() {
    let cases: Vec<(Value, Option<&str>)> = vec![
        (Value::Null, None),
        (json!(""), None),
        (json!("  \n"), None),
        (json!("You are Cap."), Some("You are Cap.")),
        (json!("  Line 1\n  Line 2  "), Some("Line 1\n  Line 2")),
    ];
    for (value, want) in cases {
        let request = parse_json(json!({"sessionId": "s1", "message": "hi", "systemPrompt": value})).unwrap();
        assert_eq!(request.system_prompt.as_deref(), want, "systemPrompt {value}");
    }
    let request = parse_json(json!({"sessionId": "s1", "message": "hi"})).unwrap();
    assert_eq!(request.system_prompt, None);
}

#[test]
fn request_id_is_echoed_or_generated() {
    let long = "r".repeat(129);
    let max = "r".repeat(128);
    let cases: Vec<(Option<Value>, Option<&str>)> = vec![
        (Some(json!("req-1")), Some("req-1")),
        (Some(json!("  req-1 ")), Some("req-1")),
        (Some(json!(max)), Some(&max)),
        (Some(json!("a/b+#")), Some("a/b+#")),
        (Some(json!(17)), Some("17")),
        (Some(json!(2.5)), Some("2.5")),
        (None, None),
        (Some(Value::Null), None),
        (Some(json!("")), None),
        (Some(json!("   ")), None),
        (Some(json!(long)), None),
        (Some(json!("a\nb")), None),
        (Some(json!(true)), None),
        (Some(json!({"id": 1})), None),
    ];
    for (value, want) in cases {
        let mut payload = json!({"sessionId": "s1", "message": "hi"});
        let mut bad = json!({"sessionId": "s1"});
        if let Some(v) = &value {
            payload["requestId"] = v.clone();
            bad["requestId"] = v.clone();
        }
        let request = parse_json(payload).unwrap();
        match want {
            Some(id) => assert_eq!(request.request_id, id, "requestId {value:?}"),
            None => assert!(
                is_hex(&request.request_id, 16),
                "requestId {value:?}: {}",
                request.request_id
            ),
        }
        // Rejections carry only a client-supplied id.
        let rejection = parse_json(bad).unwrap_err();
        assert_eq!(rejection.request_id.as_deref(), want, "requestId {value:?}");
    }
    let a = parse_json(json!({"sessionId": "s1", "message": "hi"})).unwrap();
    let b = parse_json(json!({"sessionId": "s1", "message": "hi"})).unwrap();
    assert_ne!(a.request_id, b.request_id);
}

#[test]
fn client_id_table() {
    let cases: Vec<(Value, Option<&str>)> = vec![
        (json!("client-1"), Some("client-1")),
        (json!(" client-1 "), Some("client-1")),
        (json!(""), None),
        (json!(42), None),
        (Value::Null, None),
        (json!("a\u{0}b"), None),
    ];
    for (value, want) in cases {
        let request = parse_json(json!({"sessionId": "s1", "message": "hi", "clientId": value})).unwrap();
        assert_eq!(request.client_id.as_deref(), want, "clientId {value}");
    }
}

#[test]
fn stream_topic_rules() {
    // A stream topic that is refused: the default stream topic is used.
    let falls_back = |t: &str| (json!(true), Some(json!(t)), Some("general/assistant_stream/s1"));
    let cases: Vec<(Value, Option<Value>, Option<&str>)> = vec![
        (Value::Null, None, None),
        (json!(false), None, None),
        (json!(false), Some(json!("general/assistant_stream/s1/c")), None),
        (json!(true), None, Some("general/assistant_stream/s1")),
        (
            json!(true),
            Some(json!("general/assistant_stream/s1/c1/r1/")),
            Some("general/assistant_stream/s1/c1/r1"),
        ),
        (
            json!(true),
            Some(json!(" general/assistant_stream/other ")),
            Some("general/assistant_stream/other"),
        ),
        // Invalid stream topics fall back to the default stream topic.
        falls_back("general/assistant_response/s1"),
        falls_back("maze/assistant_stream/s1"),
        falls_back("general/assistant_stream/#"),
        falls_back("general/assistant_stream/"),
        (json!(true), Some(json!(5)), Some("general/assistant_stream/s1")),
        (json!(true), Some(Value::Null), Some("general/assistant_stream/s1")),
    ];
    for (stream, stream_topic, want) in cases {
        let mut payload = json!({"sessionId": "s1", "message": "hi", "stream": stream});
        if let Some(t) = &stream_topic {
            payload["streamTopic"] = t.clone();
        }
        let request = parse_json(payload).unwrap();
        assert_eq!(
            request.stream.as_deref(),
            want,
            "stream {stream} streamTopic {stream_topic:?}"
        );
        // Streaming never moves the reply.
        assert_eq!(request.reply.topic, "general/assistant_response/s1");
    }
    // The stream topic of a default session uses that session.
    let request = parse_json(json!({"message": "hi", "stream": true})).unwrap();
    assert_eq!(
        request.stream,
        Some(format!("general/assistant_stream/{}", request.session))
    );
}

#[test]
fn error_codes_and_texts() {
    let cases: Vec<(RequestError, &str, &str)> = vec![
        (
            RequestError::TooLarge {
                size: 70000,
                limit: 65536,
            },
            "too_large",
            "Error: request too large (70000 bytes, limit 65536)",
        ),
        (RequestError::NotUtf8, "not_utf8", "Error: payload is not valid UTF-8"),
        (
            RequestError::TooDeep { limit: 32 },
            "too_deep",
            "Error: JSON nested deeper than 32 levels",
        ),
        (
            RequestError::InvalidJson {
                detail: "EOF while parsing a string at line 1 column 31".into(),
            },
            "invalid_json",
            "Error: invalid JSON: EOF while parsing a string at line 1 column 31",
        ),
        (
            RequestError::NotObject,
            "not_object",
            "Error: request must be a JSON object",
        ),
        (
            RequestError::MissingMessage,
            "missing_message",
            "Error: missing 'message'",
        ),
        (
            RequestError::MessageNotString,
            "message_not_string",
            "Error: 'message' must be a string",
        ),
        (RequestError::EmptyMessage, "empty_message", "Error: 'message' is empty"),
        (
            RequestError::InvalidSessionId,
            "invalid_session_id",
            "Error: invalid sessionId",
        ),
        (
            RequestError::InvalidParam {
                field: "topP",
                reason: "must be a number between 0 and 1".into(),
            },
            "invalid_param",
            "Error: invalid 'topP': must be a number between 0 and 1",
        ),
    ];
    for (error, code, text) in cases {
        assert_eq!(error.code(), code);
        assert_eq!(error.reply_text(), text);
    }
}

#[test]
fn limits_defaults() {
    let limits = WireLimits::default();
    assert_eq!(limits.max_payload_bytes, 65536);
    assert_eq!(limits.max_json_depth, 32);
    assert_eq!(limits.max_tokens_limit, 32768);
}

#[test]
fn delta_frame_json() {
    let frame = DeltaFrame {
        request_id: "r1".into(),
        seq: 3,
        delta: "hi".into(),
    };
    let text = serde_json::to_string(&frame).unwrap();
    assert_eq!(text, r#"{"requestId":"r1","seq":3,"delta":"hi"}"#);
    let back: StreamFrame = serde_json::from_str(&text).unwrap();
    assert_eq!(back, StreamFrame::Delta(frame));
    assert_eq!(back.request_id(), "r1");
    assert_eq!(back.seq(), 3);
    assert!(!back.is_last());
}

#[test]
fn done_frame_json() {
    let frame = DoneFrame {
        request_id: "r1".into(),
        seq: 9,
        done: true,
        finish_reason: "stop".into(),
        usage: FrameUsage {
            prompt_tokens: 120,
            completion_tokens: 42,
            cached_tokens: 100,
        },
        ttft_ms: 85,
        total_ms: 1200,
    };
    let value = serde_json::to_value(&frame).unwrap();
    assert_eq!(
        value,
        json!({
            "requestId": "r1",
            "seq": 9,
            "done": true,
            "finishReason": "stop",
            "usage": {"promptTokens": 120, "completionTokens": 42, "cachedTokens": 100},
            "ttftMs": 85,
            "totalMs": 1200,
        })
    );
    let back: StreamFrame = serde_json::from_value(value).unwrap();
    assert_eq!(back, StreamFrame::Done(frame));
    assert!(back.is_last());
    assert_eq!(back.seq(), 9);
}

#[test]
fn error_frame_json() {
    let frame = ErrorFrame {
        request_id: "r1".into(),
        seq: 4,
        error: FrameError {
            code: "engine_unavailable".into(),
            message: "Error: engine unavailable".into(),
            retry_after_ms: None,
        },
    };
    let text = serde_json::to_string(&frame).unwrap();
    assert_eq!(
        text,
        r#"{"requestId":"r1","seq":4,"error":{"code":"engine_unavailable","message":"Error: engine unavailable"}}"#
    );
    let back: StreamFrame = serde_json::from_str(&text).unwrap();
    assert_eq!(back, StreamFrame::Error(frame));
    assert!(back.is_last());
    assert_eq!(back.request_id(), "r1");
}

#[test]
fn stream_frames_serialize_untagged_and_reject_junk() {
    let frame = StreamFrame::Delta(DeltaFrame {
        request_id: "r".into(),
        seq: 0,
        delta: "".into(),
    });
    assert_eq!(
        serde_json::to_string(&frame).unwrap(),
        r#"{"requestId":"r","seq":0,"delta":""}"#
    );
    for junk in [
        r#"{"requestId":"r","seq":0}"#,
        r#"{"request_id":"r","seq":0,"delta":"x"}"#,
        r#"{"requestId":"r","seq":-1,"delta":"x"}"#,
        r#"{"requestId":"r","seq":0,"done":true}"#,
        r#""hi""#,
    ] {
        assert!(serde_json::from_str::<StreamFrame>(junk).is_err(), "{junk}");
    }
}
