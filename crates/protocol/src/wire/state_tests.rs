//! State messages: parsing, the user turn in L's form, reply wrapping.

use serde_json::{Value, json};

use super::state::{GameState, Position, error_payload, hint_payload};
use super::*;
use crate::topics::TopicFallback;

fn maze() -> ProjectName {
    ProjectName::try_new("maze").unwrap()
}

fn parse(payload: &Value) -> Result<ChatRequest, Rejection> {
    parse_raw(payload.to_string().as_bytes())
}

fn parse_raw(payload: &[u8]) -> Result<ChatRequest, Rejection> {
    parse_state(
        &maze(),
        payload,
        &V5Props::default(),
        &WireLimits::default(),
        &ReplyPolicy::default(),
    )
}

fn state_of(payload: &Value) -> Result<GameState, RequestError> {
    GameState::from_fields(payload.as_object().unwrap())
}

#[test]
fn both_position_forms_give_the_same_user_turn_in_the_successors_exact_form() {
    let as_objects = json!({
        "sessionId": "s1",
        "player_pos": {"x": 1, "y": 2},
        "exit_pos": {"x": 5.0, "y": 6},
        "visible_map": [[1, 0], [0, 1]],
        "germs": [{"x": 3, "y": 3}],
        "oxygenPellets": [{"x": 4, "y": 1}, {"x": 2, "y": 2}],
        "oxygenCollected": 2,
    });
    let as_arrays = json!({
        "sessionId": "s1",
        "player_pos": [1, 2],
        "exit_pos": [5, 6],
        "visible_map": [[1, 0], [0, 1]],
        "germs": [[3, 3]],
        "oxygenPellets": [[4, 1], [2, 2]],
        "oxygenCollected": 2,
    });
    // Python's json.dumps of L's dict: keys in this order, ", " and ": " separators.
    let expected = r#"{"player_pos": [1, 2], "exit_pos": [5, 6], "visible_map": [[1, 0], [0, 1]], "germs": [[3, 3]], "oxygen": [[4, 1], [2, 2]], "oxygen_collected": 2}"#;
    for payload in [as_objects, as_arrays] {
        let request = parse(&payload).unwrap();
        assert_eq!(request.message, expected);
        assert_eq!(request.kind, RequestKind::State);
        assert_eq!(request.reply.topic, "maze/hint/s1");
        assert_eq!(request.session.as_str(), "s1");
        assert!(request.stream.is_none());
    }
}

#[test]
fn extra_keys_are_ignored_and_the_input_oxygen_level_is_not_the_pellets() {
    let request = parse(&json!({
        "sessionId": "s2",
        "player_pos": [0, 0],
        "exit_pos": [9, 9],
        "tick": 17, "health": 3, "oxygen": 80, "test_number": 4, "timestamp": "2025-10-24T00:00:00Z",
        "breaks_remaining": 2, "message": "ignored too",
    }))
    .unwrap();
    assert_eq!(
        request.message,
        r#"{"player_pos": [0, 0], "exit_pos": [9, 9], "visible_map": [], "germs": [], "oxygen": [], "oxygen_collected": 0}"#
    );
}

#[test]
fn missing_optional_fields_default_as_in_the_successor_and_non_ascii_stays_unescaped() {
    let state = state_of(&json!({"player_pos": [1, 1], "exit_pos": [2, 2], "visible_map": [["é"]]})).unwrap();
    assert_eq!(state.germs, Vec::<Position>::new());
    assert_eq!(state.oxygen_collected, json!(0));
    assert!(state.user_turn().contains(r#""visible_map": [["é"]]"#));
}

#[test]
fn missing_or_malformed_state_fields_are_refused_with_their_name() {
    for (payload, text) in [
        (json!({"exit_pos": [1, 1]}), "missing 'player_pos'"),
        (json!({"player_pos": [1, 1], "exit_pos": null}), "missing 'exit_pos'"),
        (json!({"player_pos": [1], "exit_pos": [1, 1]}), "invalid 'player_pos'"),
        (
            json!({"player_pos": {"x": 1}, "exit_pos": [1, 1]}),
            "invalid 'player_pos'",
        ),
        (
            json!({"player_pos": [1.5, 1], "exit_pos": [1, 1]}),
            "invalid 'player_pos'",
        ),
        (json!({"player_pos": "1,1", "exit_pos": [1, 1]}), "invalid 'player_pos'"),
        (
            json!({"player_pos": [1, 1], "exit_pos": [1, 1], "visible_map": "x"}),
            "invalid 'visible_map'",
        ),
        (
            json!({"player_pos": [1, 1], "exit_pos": [1, 1], "germs": [[1, 2, 3]]}),
            "invalid 'germs'",
        ),
        (
            json!({"player_pos": [1, 1], "exit_pos": [1, 1], "oxygenPellets": 3}),
            "invalid 'oxygenPellets'",
        ),
        (
            json!({"player_pos": [1, 1], "exit_pos": [1, 1], "oxygenCollected": "2"}),
            "invalid 'oxygenCollected'",
        ),
    ] {
        let err = state_of(&payload).unwrap_err();
        assert!(err.to_string().starts_with(text), "{payload}: {err}");
    }
    assert_eq!(
        RequestError::MissingField { field: "player_pos" }.code(),
        "missing_field"
    );
}

#[test]
fn a_refused_state_is_answered_on_the_hint_topic_of_its_session() {
    let rejection = parse(&json!({"sessionId": "s3", "player_pos": "nowhere", "exit_pos": [1, 1]})).unwrap_err();
    assert_eq!(rejection.reply.unwrap().topic, "maze/hint/s3");
    let rejection = parse_raw(br#"{"sessionId":"s4","player_pos":[1,"#).unwrap_err();
    assert_eq!(rejection.error.code(), "invalid_json");
    assert_eq!(rejection.reply.unwrap().topic, "maze/hint/s4");
    // Not an object, and plain text: no session to answer (a state is never a chat message).
    for payload in [&b"hello"[..], b"[1, 2]", b"42"] {
        let rejection = parse_raw(payload).unwrap_err();
        assert_eq!(rejection.error, RequestError::NotObject);
        assert!(rejection.reply.is_none());
    }
}

#[test]
fn reply_topic_is_validated_against_the_hint_base() {
    let base = json!({"sessionId": "s5", "player_pos": [1, 1], "exit_pos": [2, 2]});
    let with = |topic: Value| {
        let mut payload = base.clone();
        payload["replyTopic"] = topic;
        parse(&payload).unwrap()
    };
    let ok = with(json!(" maze/hint/s5/client/req1/ "));
    assert_eq!(ok.reply.topic, "maze/hint/s5/client/req1");
    assert_eq!(ok.reply_topic_fallback, None);
    for (topic, reason) in [
        (json!("maze/assistant_response/s5"), TopicFallback::WrongPrefix),
        (json!("home/door/set"), TopicFallback::WrongPrefix),
        (json!("maze/hint/#"), TopicFallback::Wildcard),
        (json!("maze/hint/"), TopicFallback::EmptySuffix),
        (json!(7), TopicFallback::NotString),
    ] {
        let request = with(topic.clone());
        assert_eq!(request.reply.topic, "maze/hint/s5", "{topic}");
        assert_eq!(request.reply_topic_fallback, Some(reason), "{topic}");
    }
}

#[test]
fn mqtt5_response_topic_must_be_under_the_hint_base() {
    let payload = json!({"sessionId": "s6", "player_pos": [1, 1], "exit_pos": [2, 2]}).to_string();
    let parse_with = |topic: &str| {
        let props = V5Props {
            response_topic: Some(topic.to_owned()),
            ..V5Props::default()
        };
        let policy = ReplyPolicy::default();
        parse_state(&maze(), payload.as_bytes(), &props, &WireLimits::default(), &policy).unwrap()
    };
    assert_eq!(parse_with("maze/hint/s6/x").reply.topic, "maze/hint/s6/x");
    let refused = parse_with("maze/assistant_response/s6");
    assert_eq!(refused.reply.topic, "maze/hint/s6");
    assert_eq!(refused.reply_topic_fallback, Some(TopicFallback::NotAllowed));
}

#[test]
fn prompt_template_content_is_the_system_prompt_unless_system_prompt_is_given() {
    let base = json!({"sessionId": "s7", "player_pos": [1, 1], "exit_pos": [2, 2]});
    let with = |extra: Value| {
        let mut payload = base.clone();
        for (k, v) in extra.as_object().unwrap() {
            payload[k] = v.clone();
        }
        parse(&payload)
    };
    let template =
        json!({"prompt_template": {"title": "t", "content": "  Be a maze guide.  ", "version": 3, "user_id": 9}});
    assert_eq!(
        with(template).unwrap().system_prompt.as_deref(),
        Some("Be a maze guide.")
    );
    let both = json!({"systemPrompt": "Mine.", "prompt_template": {"content": "Theirs."}});
    assert_eq!(with(both).unwrap().system_prompt.as_deref(), Some("Mine."));
    assert_eq!(with(json!({"prompt_template": null})).unwrap().system_prompt, None);
    assert_eq!(
        with(json!({"prompt_template": {"title": "no content"}}))
            .unwrap()
            .system_prompt,
        None
    );
    for bad in [
        json!({"prompt_template": "text"}),
        json!({"prompt_template": {"content": 5}}),
    ] {
        let err = with(bad).unwrap_err().error;
        assert!(err.to_string().starts_with("invalid 'prompt_template'"), "{err}");
    }
}

#[test]
fn session_id_and_sampling_follow_the_chat_rules() {
    let request = parse(&json!({"player_pos": [1, 1], "exit_pos": [2, 2], "temperature": 0, "maxTokens": 64})).unwrap();
    assert!(request.session.as_str().starts_with("default-"));
    assert_eq!(request.sampling.temperature, Some(0.0));
    assert_eq!(request.sampling.max_tokens, Some(64));
    let rejection = parse(&json!({"sessionId": "a/b", "player_pos": [1, 1], "exit_pos": [2, 2]})).unwrap_err();
    assert_eq!(rejection.error, RequestError::InvalidSessionId);
    assert!(rejection.reply.is_none());
}

#[test]
fn json_object_replies_pass_through_and_everything_else_is_wrapped() {
    let object = r#"{"hint": "go left", "path": [[1, 1], [1, 2]], "break_wall": [2, 2]}"#;
    assert_eq!(hint_payload(&format!("  {object}\n")), object);
    assert_eq!(hint_payload(&format!("```json\n{object}\n```")), object);
    for text in [
        "Go left, then down.",
        "[1, 2]",
        "\"quoted\"",
        "42",
        "{broken",
        "```\nnot json\n```",
    ] {
        let wrapped: Value = serde_json::from_str(&hint_payload(text)).unwrap();
        assert_eq!(wrapped, json!({ "hint": text }), "{text}");
    }
    let error: Value = serde_json::from_str(&error_payload("missing 'player_pos'")).unwrap();
    assert_eq!(error, json!({"error": "missing 'player_pos'"}));
}
