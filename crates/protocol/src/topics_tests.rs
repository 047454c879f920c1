//! Tests of [`super`] and of the ids it re-exports: the name and session id tables, the topic formats, the
//! reply-topic rules.

use super::*;
use serde_json::{Value, json};

fn project(s: &str) -> ProjectName {
    ProjectName::try_new(s).unwrap()
}

/// Each input parses to the id spelled as given, or fails with the given error.
fn check_ids<T: PartialEq + std::fmt::Debug>(
    cases: Vec<(&str, Result<&str, TopicError>)>,
    parse: impl Fn(&str) -> Result<T, TopicError>,
    as_str: impl Fn(&T) -> &str,
) {
    for (input, want) in cases {
        let got = parse(input);
        match want {
            Ok(id) => assert_eq!(as_str(&got.unwrap()), id, "input {input:?}"),
            Err(e) => assert_eq!(got, Err(e), "input {input:?}"),
        }
    }
}

#[test]
fn project_name_table() {
    let long = "p".repeat(MAX_PROJECT_NAME_BYTES);
    let too_long = "p".repeat(MAX_PROJECT_NAME_BYTES + 1);
    let forbidden = |name: &str, ch| {
        Err(TopicError::ProjectNameForbiddenChar {
            name: name.to_owned(),
            ch,
        })
    };
    let cases: Vec<(&str, Result<&str, TopicError>)> = vec![
        ("general", Ok("general")),
        ("prompt_portal", Ok("prompt_portal")),
        ("maze-2.v1", Ok("maze-2.v1")),
        ("проект", Ok("проект")),
        (&long, Ok(&long)),
        ("", Err(TopicError::EmptyProjectName)),
        (
            &too_long,
            Err(TopicError::ProjectNameTooLong {
                len: MAX_PROJECT_NAME_BYTES + 1,
                max: MAX_PROJECT_NAME_BYTES,
            }),
        ),
        ("a/b", forbidden("a/b", '/')),
        ("a+", forbidden("a+", '+')),
        ("#", forbidden("#", '#')),
        ("a\0", forbidden("a\0", '\0')),
        ("a\u{7f}", forbidden("a\u{7f}", '\u{7f}')),
        ("a\nb", forbidden("a\nb", '\n')),
        ("a b", forbidden("a b", ' ')),
        (" a", forbidden(" a", ' ')),
        // Broker-reserved: found by the topic_rules fuzzer (a project `$` accepted `$/assistant_response/...`).
        ("$", Err(TopicError::ProjectNameReserved { name: "$".to_owned() })),
        (
            "$SYS",
            Err(TopicError::ProjectNameReserved {
                name: "$SYS".to_owned(),
            }),
        ),
        ("a$", Ok("a$")),
    ];
    check_ids(cases, ProjectName::try_new, ProjectName::as_str);
}

#[test]
fn project_list_table() {
    let cases: Vec<(&str, Result<Vec<&str>, TopicError>)> = vec![
        ("general", Ok(vec!["general"])),
        ("a,b c", Ok(vec!["a", "b", "c"])),
        ("a, b ,c", Ok(vec!["a", "b", "c"])),
        ("  maze\tdriving\n", Ok(vec!["maze", "driving"])),
        ("a,,b", Ok(vec!["a", "b"])),
        ("b,a,b,a", Ok(vec!["b", "a"])),
        ("", Err(TopicError::EmptyProjectList)),
        (" , ,, ", Err(TopicError::EmptyProjectList)),
        (
            "a,b/c",
            Err(TopicError::ProjectNameForbiddenChar {
                name: "b/c".to_owned(),
                ch: '/',
            }),
        ),
    ];
    for (input, want) in cases {
        let got = parse_project_list(input);
        let got = got.map(|v| v.iter().map(|p| p.as_str().to_owned()).collect::<Vec<_>>());
        let want = want.map(|v| v.into_iter().map(str::to_owned).collect::<Vec<_>>());
        assert_eq!(got, want, "input {input:?}");
    }
}

#[test]
fn session_id_table() {
    let max = "s".repeat(MAX_SESSION_ID_BYTES);
    let over = "s".repeat(MAX_SESSION_ID_BYTES + 1);
    let padded_max = format!("  {max}\t");
    // 64 two-byte characters = 128 bytes; one more is 130.
    let wide = "é".repeat(64);
    let wide_over = "é".repeat(65);
    let forbidden = |ch| Err(TopicError::SessionIdForbiddenChar { ch });
    let cases: Vec<(&str, Result<&str, TopicError>)> = vec![
        ("abc", Ok("abc")),
        ("  abc \n", Ok("abc")),
        ("user1-0123456789", Ok("user1-0123456789")),
        ("user 1", Ok("user 1")),
        ("42", Ok("42")),
        (&max, Ok(&max)),
        (&padded_max, Ok(&max)),
        (&wide, Ok(&wide)),
        ("", Err(TopicError::EmptySessionId)),
        ("   \t", Err(TopicError::EmptySessionId)),
        (
            &over,
            Err(TopicError::SessionIdTooLong {
                len: 129,
                max: MAX_SESSION_ID_BYTES,
            }),
        ),
        (
            &wide_over,
            Err(TopicError::SessionIdTooLong {
                len: 130,
                max: MAX_SESSION_ID_BYTES,
            }),
        ),
        ("a+b", forbidden('+')),
        ("a#", forbidden('#')),
        ("s/c", forbidden('/')),
        ("a\0b", forbidden('\0')),
        ("a\nb", forbidden('\n')),
        ("a\u{1b}[31m", forbidden('\u{1b}')),
        ("a\u{85}b", forbidden('\u{85}')),
    ];
    check_ids(cases, SessionId::try_new, SessionId::as_str);
}

#[test]
fn generated_default_session_is_default_dash_8_lowercase_hex() {
    let a = SessionId::generate_default();
    let b = SessionId::generate_default();
    for s in [&a, &b] {
        let hex = s.as_str().strip_prefix("default-").unwrap();
        assert_eq!(hex.len(), 8, "{s}");
        assert!(
            hex.chars().all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)),
            "{s}"
        );
        assert_eq!(SessionId::try_new(s.as_str()).as_ref(), Ok(s));
    }
    // 2^-32 chance of a false failure.
    assert_ne!(a, b);
}

#[test]
fn topic_formats() {
    let p = project("general");
    let s = SessionId::try_new("s1").unwrap();
    assert_eq!(request_topic(&p), "general/user_input");
    assert_eq!(reply_base(&p), "general/assistant_response");
    assert_eq!(stream_base(&p), "general/assistant_stream");
    assert_eq!(default_reply_topic(&p, &s), "general/assistant_response/s1");
    assert_eq!(default_stream_topic(&p, &s), "general/assistant_stream/s1");
}

#[test]
fn request_filter_matches_exact_request_topics_only() {
    let projects = vec![project("general"), project("maze"), project("gen")];
    let cases: Vec<(&str, Option<&str>)> = vec![
        ("general/user_input", Some("general")),
        ("maze/user_input", Some("maze")),
        ("gen/user_input", Some("gen")),
        ("other/user_input", None),
        ("general/user_input/", None),
        ("general/user_input/s1", None),
        ("general/user_inputs", None),
        ("generaluser_input", None),
        ("/general/user_input", None),
        ("general//user_input", None),
        ("user_input", None),
        ("/user_input", None),
        ("maze/state", None),
        ("general/assistant_response/s1", None),
        ("", None),
    ];
    for (topic, want) in cases {
        let got = request_filter_project(topic, &projects).map(ProjectName::as_str);
        assert_eq!(got, want, "topic {topic:?}");
    }
    assert_eq!(request_filter_project("general/user_input", &[]), None);
}

#[test]
fn state_topics_and_hint_topics() {
    let p = project("maze");
    let s = SessionId::try_new("s1").unwrap();
    assert_eq!(state_topic(&p), "maze/state");
    assert_eq!(hint_base(&p), "maze/hint");
    assert_eq!(default_hint_topic(&p, &s), "maze/hint/s1");
    let state_projects = vec![project("maze")];
    for (topic, want) in [
        ("maze/state", Some("maze")),
        ("general/state", None),
        ("maze/state/s1", None),
        ("maze/states", None),
        ("maze/user_input", None),
        ("/maze/state", None),
        ("state", None),
    ] {
        let got = state_filter_project(topic, &state_projects).map(ProjectName::as_str);
        assert_eq!(got, want, "topic {topic:?}");
    }
    let policy = ReplyPolicy::none();
    assert_eq!(
        validate_hint_response_topic(&p, &policy, "maze/hint/s1/c"),
        Ok("maze/hint/s1/c".to_owned())
    );
    for other in [
        "maze/assistant_response/s1",
        "general/hint/s1",
        "$SYS/x",
        "maze/hintx/s1",
    ] {
        assert_eq!(
            validate_hint_response_topic(&p, &policy, other),
            Err(TopicFallback::NotAllowed),
            "{other}"
        );
    }
    assert_eq!(
        validate_hint_response_topic(&p, &policy, "maze/hint//"),
        Err(TopicFallback::EmptySuffix)
    );
    assert_eq!(
        validate_response_topic(&p, &policy, "maze/hint/s1"),
        Err(TopicFallback::NotAllowed),
        "a chat reply never goes to a hint topic"
    );
}

/// seed-protocol §1.4 accept/reject table, base `general/assistant_response`, session `s1`.
#[test]
fn reply_topic_table() {
    let base = "general/assistant_response";
    let long_suffix = "x".repeat(MAX_TOPIC_BYTES);
    let too_long = json!(format!("{base}/{long_suffix}"));
    let cases: Vec<(Value, Result<&str, TopicFallback>)> = vec![
        // Accepted.
        (
            json!("general/assistant_response/s1"),
            Ok("general/assistant_response/s1"),
        ),
        (
            json!("general/assistant_response/s1/client7/req9"),
            Ok("general/assistant_response/s1/client7/req9"),
        ),
        (
            json!("general/assistant_response/s/c/r"),
            Ok("general/assistant_response/s/c/r"),
        ),
        // The first segment need not be the session id.
        (
            json!("general/assistant_response/other"),
            Ok("general/assistant_response/other"),
        ),
        // Trailing slashes stripped, surrounding whitespace trimmed.
        (
            json!("general/assistant_response/s1/"),
            Ok("general/assistant_response/s1"),
        ),
        (
            json!("general/assistant_response/s1///"),
            Ok("general/assistant_response/s1"),
        ),
        (
            json!("  general/assistant_response/s1 \n"),
            Ok("general/assistant_response/s1"),
        ),
        (
            json!(" general/assistant_response/s1/ "),
            Ok("general/assistant_response/s1"),
        ),
        // Inner empty levels are kept as given (the original did not touch them).
        (
            json!("general/assistant_response//s1"),
            Ok("general/assistant_response//s1"),
        ),
        (
            json!("general/assistant_response/s 1"),
            Ok("general/assistant_response/s 1"),
        ),
        // Not a string.
        (Value::Null, Err(TopicFallback::NotString)),
        (json!(42), Err(TopicFallback::NotString)),
        (json!(true), Err(TopicFallback::NotString)),
        (
            json!({"topic": "general/assistant_response/s1"}),
            Err(TopicFallback::NotString),
        ),
        (json!(["general/assistant_response/s1"]), Err(TopicFallback::NotString)),
        // Empty.
        (json!(""), Err(TopicFallback::Empty)),
        (json!("  \t "), Err(TopicFallback::Empty)),
        // Wildcards anywhere.
        (json!("general/assistant_response/+"), Err(TopicFallback::Wildcard)),
        (json!("general/assistant_response/#"), Err(TopicFallback::Wildcard)),
        (json!("general/assistant_response/s1/#"), Err(TopicFallback::Wildcard)),
        (json!("general/assistant_response/a+b"), Err(TopicFallback::Wildcard)),
        (json!("other/assistant_response/#"), Err(TopicFallback::Wildcard)),
        // Wrong prefix: other project, the base alone, a look-alike level, other topic families.
        (json!("maze/assistant_response/s1"), Err(TopicFallback::WrongPrefix)),
        (json!("general/assistant_response"), Err(TopicFallback::WrongPrefix)),
        (json!("general/assistant_responses/s1"), Err(TopicFallback::WrongPrefix)),
        (json!("general/assistant_stream/s1"), Err(TopicFallback::WrongPrefix)),
        (json!("general/user_input"), Err(TopicFallback::WrongPrefix)),
        (json!("/general/assistant_response/s1"), Err(TopicFallback::WrongPrefix)),
        (json!("General/assistant_response/s1"), Err(TopicFallback::WrongPrefix)),
        // Empty suffix.
        (json!("general/assistant_response/"), Err(TopicFallback::EmptySuffix)),
        (json!("general/assistant_response///"), Err(TopicFallback::EmptySuffix)),
        (json!(" general/assistant_response/ "), Err(TopicFallback::EmptySuffix)),
        // Unpublishable.
        (json!("general/assistant_response/s\u{0}1"), Err(TopicFallback::NulChar)),
        (too_long, Err(TopicFallback::TooLong)),
    ];
    for (candidate, want) in cases {
        let got = validate_client_topic(base, &candidate);
        assert_eq!(got.as_deref().map_err(|e| *e), want, "candidate {candidate}");
    }
}

#[test]
fn client_topic_uses_the_given_base() {
    let base = "maze/assistant_stream";
    assert_eq!(
        validate_client_topic(base, &json!("maze/assistant_stream/s1/c/")).as_deref(),
        Ok("maze/assistant_stream/s1/c")
    );
    assert_eq!(
        validate_client_topic(base, &json!("maze/assistant_response/s1")),
        Err(TopicFallback::WrongPrefix)
    );
}

#[test]
fn response_topic_table() {
    let general = ProjectName::try_new("general").unwrap();
    let policy = ReplyPolicy::new(["devices/", "acme/replies"]).unwrap();
    let too_long = format!("devices/{}", "t".repeat(MAX_TOPIC_BYTES));
    let max = format!("devices/{}", "t".repeat(MAX_TOPIC_BYTES - "devices/".len()));
    let cases: Vec<(&str, Result<&str, TopicFallback>)> = vec![
        ("general/assistant_response/s1", Ok("general/assistant_response/s1")),
        (
            "general/assistant_response/s1/c/",
            Ok("general/assistant_response/s1/c/"),
        ),
        ("general/assistant_response/ x ", Ok("general/assistant_response/ x ")),
        ("devices/42/inbox", Ok("devices/42/inbox")),
        ("acme/replies/7", Ok("acme/replies/7")),
        (&max, Ok(&max)),
        ("home/door/set", Err(TopicFallback::NotAllowed)),
        ("$SYS/x", Err(TopicFallback::NotAllowed)),
        ("$share/g/general/assistant_response/s1", Err(TopicFallback::NotAllowed)),
        ("maze/assistant_response/s1", Err(TopicFallback::NotAllowed)),
        ("general/assistant_stream/s1", Err(TopicFallback::NotAllowed)),
        ("general/assistant_response", Err(TopicFallback::NotAllowed)),
        ("general/assistant_responses/s1", Err(TopicFallback::NotAllowed)),
        ("general/user_input", Err(TopicFallback::NotAllowed)),
        (" general/assistant_response/s1", Err(TopicFallback::NotAllowed)),
        ("devices", Err(TopicFallback::NotAllowed)),
        ("devicesX/1", Err(TopicFallback::NotAllowed)),
        ("acme/replies-other/1", Err(TopicFallback::NotAllowed)),
        ("general/assistant_response/", Err(TopicFallback::EmptySuffix)),
        ("general/assistant_response///", Err(TopicFallback::EmptySuffix)),
        ("devices/", Err(TopicFallback::EmptySuffix)),
        ("", Err(TopicFallback::Empty)),
        ("general/assistant_response/+", Err(TopicFallback::Wildcard)),
        ("devices/#", Err(TopicFallback::Wildcard)),
        ("general/assistant_response/a\0b", Err(TopicFallback::NulChar)),
        (&too_long, Err(TopicFallback::TooLong)),
    ];
    for (t, want) in cases {
        let got = validate_response_topic(&general, &policy, t);
        assert_eq!(got.as_deref().map_err(|e| *e), want, "topic {t:?}");
    }
    // Without extra prefixes only the project's own reply base is allowed.
    let none = ReplyPolicy::none();
    assert_eq!(
        validate_response_topic(&general, &none, "devices/42/inbox"),
        Err(TopicFallback::NotAllowed)
    );
    assert!(validate_response_topic(&general, &none, "general/assistant_response/s1").is_ok());
}

#[test]
fn reply_prefixes_are_validated_and_normalised() {
    let policy = ReplyPolicy::new(["devices", "acme/replies/", "devices/"]).unwrap();
    assert_eq!(policy.extra_prefixes(), ["devices/", "acme/replies/"]);
    assert_eq!(ReplyPolicy::new(Vec::<String>::new()).unwrap(), ReplyPolicy::none());
    assert_eq!(ReplyPolicy::new([""]), Err(ReplyPrefixError::Empty));
    assert_eq!(
        ReplyPolicy::new(["a/+/"]),
        Err(ReplyPrefixError::Wildcard("a/+/".into()))
    );
    assert_eq!(ReplyPolicy::new(["a/#"]), Err(ReplyPrefixError::Wildcard("a/#".into())));
    assert_eq!(
        ReplyPolicy::new(["$SYS/"]),
        Err(ReplyPrefixError::Dollar("$SYS/".into()))
    );
    assert_eq!(ReplyPolicy::new(["a\0"]), Err(ReplyPrefixError::NulChar("a\0".into())));
    assert_eq!(
        ReplyPolicy::new(["t".repeat(MAX_TOPIC_BYTES)]),
        Err(ReplyPrefixError::TooLong)
    );
}

#[test]
fn fallback_labels_are_snake_case_and_distinct() {
    let all = [
        TopicFallback::NotString,
        TopicFallback::Empty,
        TopicFallback::Wildcard,
        TopicFallback::WrongPrefix,
        TopicFallback::EmptySuffix,
        TopicFallback::NulChar,
        TopicFallback::TooLong,
        TopicFallback::NotAllowed,
    ];
    let labels: Vec<&str> = all.iter().map(|f| f.as_str()).collect();
    assert_eq!(
        labels,
        [
            "not_string",
            "empty",
            "wildcard",
            "wrong_prefix",
            "empty_suffix",
            "nul_char",
            "too_long",
            "not_allowed"
        ]
    );
    assert_eq!(TopicFallback::WrongPrefix.to_string(), "wrong_prefix");
}

#[test]
fn topic_error_messages_name_the_rule() {
    assert_eq!(
        TopicError::SessionIdTooLong { len: 129, max: 128 }.to_string(),
        "session id is 129 bytes, the limit is 128"
    );
    assert_eq!(
        TopicError::SessionIdForbiddenChar { ch: '#' }.to_string(),
        "session id contains the forbidden character '#'"
    );
    assert_eq!(
        TopicError::ProjectNameForbiddenChar {
            name: "a/b".into(),
            ch: '/'
        }
        .to_string(),
        "project name \"a/b\" contains the forbidden character '/'"
    );
    assert_eq!(TopicError::EmptyProjectList.to_string(), "project list is empty");
}

#[test]
fn control_topics_and_their_suffix() {
    let projects = [project("general"), project("prompt_portal")];
    let ct = |t: &str| {
        control_topic(t, &projects).map(|c| (c.project.as_str().to_owned(), c.action, c.suffix.map(str::to_owned)))
    };
    assert_eq!(
        ct("prompt_portal/template"),
        Some(("prompt_portal".into(), ControlAction::Template, None))
    );
    assert_eq!(
        ct("prompt_portal/delete_session/s1"),
        Some(("prompt_portal".into(), ControlAction::DeleteSession, Some("s1".into())))
    );
    assert_eq!(
        ct("general/clear_history/all"),
        Some(("general".into(), ControlAction::ClearHistory, Some("all".into())))
    );
    assert_eq!(ct("general/clear_history/s1/x"), None, "one level only");
    assert_eq!(ct("general/user_input"), None);
    assert_eq!(ct("general/templates"), None);
    assert_eq!(ct("maze/template"), None, "not served");
    assert_eq!(ct("generalx/template"), None);
    assert_eq!(
        control_filters(&project("maze")),
        [
            "maze/template",
            "maze/template/+",
            "maze/clear_history",
            "maze/clear_history/+",
            "maze/delete_session",
            "maze/delete_session/+"
        ]
    );
    assert_eq!(
        control_notice_topic(&project("general"), "s1"),
        "general/control_notice/s1"
    );
    assert_eq!(hint_notice_topic(&project("maze"), "all"), "maze/hint/all");
    assert!(!control_notice_topic(&project("general"), "s1").starts_with(&reply_base(&project("general"))));
}
