//! Control topics end to end: `{p}/template[/sid]`, `{p}/clear_history[/sid]`, `{p}/delete_session[/sid]` against a
//! real mosquitto and the real `mqtt-llm` binary launching `vllm-sim` in echo mode, whose reply shows the system
//! prompt and the number of messages the engine saw (so a cleared history and a changed prompt are visible).
//!
//! The test client listens on every reply, stream and notice topic: each wait for an expected message also checks
//! that nothing else arrived before it, in particular nothing under `{p}/assistant_response/` but replies.

mod support;

use serde_json::{Value, json};
use support::Received;

const GENERAL: &str = "You are a helpful AI assistant.";

type Harness = support::Stack;

impl Harness {
    async fn start(extra: &[&str]) -> Self {
        let filters = [
            "+/assistant_response/#",
            "+/assistant_stream/#",
            "+/control_notice/#",
            "maze/hint/#",
        ];
        Self::launch(extra, &filters).await
    }

    /// The next message, which must be on `topic`.
    async fn next_on(&mut self, topic: &str) -> Received {
        let mut others = Vec::new();
        let m = self.client.recv_on(topic, &mut others).await;
        assert!(others.is_empty(), "unexpected messages before {topic}: {others:?}");
        m
    }

    /// Ask `message` in `session` of `project`: the echo reply's text.
    async fn say(&mut self, project: &str, session: &str, body: Value) -> String {
        let mut body = body;
        body["sessionId"] = json!(session);
        self.client.publish_json(&format!("{project}/user_input"), body).await;
        let reply = self.next_on(&format!("{project}/assistant_response/{session}")).await;
        reply.text()
    }

    async fn turn(&mut self, project: &str, session: &str, message: &str) -> String {
        self.say(project, session, json!({ "message": message })).await
    }

    /// Publish a control message and return the notice, which must arrive on `notice_topic`.
    async fn control(&mut self, topic: &str, payload: &[u8], notice_topic: &str) -> Value {
        self.client.publish(topic, payload.to_vec()).await;
        let notice = self.next_on(notice_topic).await;
        assert!(!notice.retain, "notices are not retained");
        notice.json()
    }

    async fn control_json(&mut self, topic: &str, payload: Value, notice_topic: &str) -> Value {
        self.control(topic, payload.to_string().as_bytes(), notice_topic).await
    }

    async fn count(&self, project: &str, action: &str, outcome: &str) -> f64 {
        self.server
            .metric(&format!(
                "mqtt_llm_control_messages_total{{project=\"{project}\",action=\"{action}\",outcome=\"{outcome}\"}}"
            ))
            .await
    }
}

fn echo(messages: usize, roles: &str, system: &str, user: &str) -> String {
    let system: Vec<&str> = system.split_whitespace().take(6).collect();
    format!(
        "messages={messages} roles={roles} system={} user={user}",
        system.join(" ")
    )
}

const TEMPLATE_UPDATED: &str = r#"{"hint":"Template updated"}"#;
const HISTORY_CLEARED: &str = r#"{"hint":"History cleared"}"#;
const SESSION_DELETED: &str = r#"{"hint":"Session deleted"}"#;

fn hint(v: &Value) -> String {
    v.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_template_changes_that_session_only_and_reset_clears_its_history() {
    let mut h = Harness::start(&[]).await;
    h.turn("general", "s1", "one").await;
    h.turn("general", "s2", "one").await;
    let n = h
        .control_json(
            "general/template/s1",
            json!({"template": "Talk like a pirate now."}),
            "general/control_notice/s1",
        )
        .await;
    assert_eq!(hint(&n), TEMPLATE_UPDATED);
    let pirate = "Talk like a pirate now.";
    assert_eq!(
        h.turn("general", "s1", "two").await,
        echo(2, "s,u", pirate, "two"),
        "reset by default"
    );
    assert_eq!(
        h.turn("general", "s2", "two").await,
        echo(4, "s,u,a,u", GENERAL, "two"),
        "the other session keeps the project's prompt and its history"
    );
    // `reset: false` keeps the history; `prompt_template` as an object; the session named in the payload.
    let n = h
        .control_json(
            "general/template",
            json!({"sessionId": "s1", "prompt_template": {"content": "Now a robot."}, "reset": false}),
            "general/control_notice/s1",
        )
        .await;
    assert_eq!(hint(&n), TEMPLATE_UPDATED);
    assert_eq!(
        h.turn("general", "s1", "three").await,
        echo(4, "s,u,a,u", "Now a robot.", "three")
    );
    assert_eq!(h.count("general", "template", "ok").await, 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clear_history_and_delete_session_act_on_that_session_only() {
    let mut h = Harness::start(&["--projects", "general maze"]).await;
    let pirate = "Talk like a pirate now.";
    h.control_json(
        "general/template/s1",
        json!({"template": pirate}),
        "general/control_notice/s1",
    )
    .await;
    h.turn("general", "s1", "one").await;
    h.turn("general", "s2", "one").await;
    let n = h
        .control_json("general/clear_history/s1", json!({}), "general/control_notice/s1")
        .await;
    assert_eq!(hint(&n), HISTORY_CLEARED);
    assert_eq!(
        h.turn("general", "s1", "two").await,
        echo(2, "s,u", pirate, "two"),
        "history cleared, template kept"
    );
    assert_eq!(h.turn("general", "s2", "two").await, echo(4, "s,u,a,u", GENERAL, "two"));
    let n = h
        .control_json(
            "general/delete_session/s1",
            json!({"sessionId": "s1"}),
            "general/control_notice/s1",
        )
        .await;
    assert_eq!(hint(&n), SESSION_DELETED);
    assert_eq!(
        h.turn("general", "s1", "three").await,
        echo(2, "s,u", GENERAL, "three"),
        "forgotten: history and template"
    );
    assert_eq!(
        h.turn("general", "s2", "three").await,
        echo(6, "s,u,a,u,a,u", GENERAL, "three")
    );
    // The maze game's notices go where the successor sent them, `maze/hint/{sid}`.
    h.turn("maze", "m1", "one").await;
    let n = h
        .control_json("maze/clear_history", json!({"session_id": "m1"}), "maze/hint/m1")
        .await;
    assert_eq!(hint(&n), HISTORY_CLEARED);
    assert!(h.turn("maze", "m1", "two").await.starts_with("messages=2 "));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_payload_or_no_target_wipes_nothing_and_gets_an_error_notice() {
    let mut h = Harness::start(&[]).await;
    h.turn("general", "s1", "one").await;
    let all = "general/control_notice/all";
    for (topic, payload, outcome) in [
        ("general/clear_history", &b""[..], "empty"),
        ("general/delete_session", &b"{}"[..], "no_target"),
        (
            "general/template",
            &br#"{"template": "Wipe them all."}"#[..],
            "no_target",
        ),
        ("general/clear_history", &b"not json"[..], "not_object"),
    ] {
        let n = h.control(topic, payload, all).await;
        let error = n["error"].as_str().unwrap_or_else(|| panic!("{topic}: {n}"));
        assert!(!error.is_empty(), "{topic}");
        let action = topic.rsplit('/').next().unwrap();
        assert_eq!(h.count("general", action, outcome).await, 1.0, "{topic} {outcome}");
    }
    // Errors about a session go to its notice topic; type errors are named.
    let n = h
        .control_json(
            "general/template/s1",
            json!({"template": 5}),
            "general/control_notice/s1",
        )
        .await;
    assert_eq!(n, json!({"error": "template must be a string"}));
    let n = h
        .control_json(
            "general/clear_history/s1",
            json!({"sessionId": "s2"}),
            "general/control_notice/s1",
        )
        .await;
    assert!(n["error"].as_str().unwrap().contains("conflicting"), "{n}");
    assert_eq!(
        h.turn("general", "s1", "two").await,
        echo(4, "s,u,a,u", GENERAL, "two"),
        "nothing wiped"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn target_all_applies_to_the_whole_project_only() {
    let mut h = Harness::start(&["--projects", "general,prompt_portal"]).await;
    for s in ["s1", "s2"] {
        h.turn("general", s, "one").await;
    }
    h.turn("prompt_portal", "s1", "one").await;
    let n = h
        .control_json(
            "general/clear_history",
            json!({"target": "all"}),
            "general/control_notice/all",
        )
        .await;
    assert_eq!(hint(&n), HISTORY_CLEARED);
    for s in ["s1", "s2"] {
        assert_eq!(h.turn("general", s, "two").await, echo(2, "s,u", GENERAL, "two"));
    }
    let everyone = "Everyone talks like a pirate.";
    let n = h
        .control_json(
            "general/template/all",
            json!({"template": everyone, "reset": false}),
            "general/control_notice/all",
        )
        .await;
    assert_eq!(hint(&n), TEMPLATE_UPDATED);
    for s in ["s1", "s2"] {
        assert_eq!(
            h.turn("general", s, "three").await,
            echo(4, "s,u,a,u", everyone, "three")
        );
    }
    assert_eq!(
        h.turn("general", "new", "hi").await,
        echo(2, "s,u", everyone, "hi"),
        "a new session gets the project-wide template"
    );
    assert_eq!(
        h.turn("prompt_portal", "s1", "two").await,
        echo(
            4,
            "s,u,a,u",
            mqtt_llm::config::ProjectCatalog::builtin().system_prompt("prompt_portal"),
            "two"
        ),
        "another project is untouched"
    );
    let n = h
        .control_json(
            "general/delete_session",
            json!({"target": "all"}),
            "general/control_notice/all",
        )
        .await;
    assert_eq!(hint(&n), SESSION_DELETED);
    assert_eq!(h.turn("general", "s1", "four").await, echo(2, "s,u", everyone, "four"));
}

/// OwOGPT changes a user's persona by publishing `prompt_portal/template` with the new template for its session,
/// then `prompt_portal/delete_session/{sid}` (OWO/mqtt_client.py:183-220); the original server subscribed to
/// neither, so the old persona's history leaked into the new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owogpt_persona_change_leaves_the_next_reply_without_the_old_history() {
    let mut h = Harness::start(&["--projects", "general,prompt_portal"]).await;
    let (old, new) = ("You are Captain Old Persona.", "You are Professor New Persona.");
    for m in ["one", "two"] {
        h.say("prompt_portal", "user7-abc", json!({"message": m, "systemPrompt": old}))
            .await;
    }
    let n = h
        .control_json(
            "prompt_portal/template",
            json!({"sessionId": "user7-abc", "systemPrompt": new, "template": {"content": new}, "reset": true}),
            "prompt_portal/control_notice/user7-abc",
        )
        .await;
    assert_eq!(hint(&n), TEMPLATE_UPDATED);
    let n = h
        .control_json(
            "prompt_portal/delete_session/user7-abc",
            json!({"sessionId": "user7-abc", "target": "user7-abc"}),
            "prompt_portal/control_notice/user7-abc",
        )
        .await;
    assert_eq!(hint(&n), SESSION_DELETED);
    let reply = h
        .say(
            "prompt_portal",
            "user7-abc",
            json!({"message": "hello", "systemPrompt": new}),
        )
        .await;
    assert_eq!(reply, echo(2, "s,u", new, "hello"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_restrictions_and_session_owners_are_enforced() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("projects.toml");
    std::fs::write(
        &config,
        "[projects.general]\ncontrol_topics = [\"clear_history\"]\n[projects.maze]\ncontrol_topics = false\n",
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let mut h = Harness::start(&[
        "--projects",
        "general maze",
        "--config",
        config,
        "--session-owner",
        "client",
    ])
    .await;
    h.say("general", "s1", json!({"message": "one", "clientId": "devA"}))
        .await;
    // Not allowed by the config: ignored, counted, no notice (the next message proves none came).
    h.client
        .publish_json("general/template/s1", json!({"template": "x", "clientId": "devA"}))
        .await;
    h.server
        .wait_metric(
            "mqtt_llm_control_messages_total{project=\"general\",action=\"template\",outcome=\"disabled\"}",
            1.0,
        )
        .await;
    h.client.publish_json("maze/clear_history/m1", json!({})).await;
    h.server
        .wait_metric(
            "mqtt_llm_control_messages_total{project=\"maze\",action=\"clear_history\",outcome=\"disabled\"}",
            1.0,
        )
        .await;
    // Another client's session: refused, nothing changed.
    let n = h
        .control_json(
            "general/clear_history/s1",
            json!({"clientId": "devB"}),
            "general/control_notice/s1",
        )
        .await;
    assert_eq!(n, json!({"error": "session belongs to another client"}));
    // Project-wide under client ownership would touch every client's sessions.
    let n = h
        .control_json(
            "general/clear_history",
            json!({"target": "all"}),
            "general/control_notice/all",
        )
        .await;
    assert!(n["error"].as_str().unwrap().contains("project-wide"), "{n}");
    assert_eq!(
        h.say("general", "s1", json!({"message": "two", "clientId": "devA"}))
            .await,
        echo(4, "s,u,a,u", GENERAL, "two")
    );
    // The owner may.
    let n = h
        .control_json(
            "general/clear_history/s1",
            json!({"clientId": "devA"}),
            "general/control_notice/s1",
        )
        .await;
    assert_eq!(hint(&n), HISTORY_CLEARED);
    assert_eq!(
        h.say("general", "s1", json!({"message": "three", "clientId": "devA"}))
            .await,
        echo(2, "s,u", GENERAL, "three")
    );
    assert_eq!(h.count("general", "clear_history", "session_owner").await, 1.0);
    assert_eq!(h.count("general", "clear_history", "project_wide_owned").await, 1.0);
}

/// A clear while a turn of the session runs: the running request is answered (from the old history), but its turn
/// belongs to the cleared conversation and is not stored. The engine streams slowly (100 ms per token) so that the
/// clear, sent once the first stream frame shows the request running, is handled long before the reply's last token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clear_during_a_running_turn_drops_that_turn() {
    let mut h = Harness::start(&["--engine-arg=--sim-itl-ms=100"]).await;
    h.turn("general", "s1", "one").await;
    h.client
        .publish_json(
            "general/user_input",
            json!({"sessionId": "s1", "message": "running", "stream": true}),
        )
        .await;
    let first = h.client.recv().await;
    assert_eq!(first.topic, "general/assistant_stream/s1", "{first:?}");
    h.client.publish_json("general/clear_history/s1", json!({})).await;
    let mut frames = Vec::new();
    let notice = h.client.recv_on("general/control_notice/s1", &mut frames).await;
    assert_eq!(hint(&notice.json()), HISTORY_CLEARED);
    let reply = h.client.recv_on("general/assistant_response/s1", &mut frames).await;
    assert!(
        frames.iter().all(|m| m.topic == "general/assistant_stream/s1"),
        "{frames:?}"
    );
    assert_eq!(
        reply.text(),
        echo(4, "s,u,a,u", GENERAL, "running"),
        "answered from the old history"
    );
    assert_eq!(
        h.turn("general", "s1", "after").await,
        echo(2, "s,u", GENERAL, "after"),
        "the running turn was not stored after the clear"
    );
}
