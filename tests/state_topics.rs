//! State topics end to end: a real mosquitto, the real `mqtt-llm` binary launching `vllm-sim` in echo mode (its
//! reply, plain text, says what the engine saw, so every hint arrives wrapped as `{"hint": ...}`), and an MQTT 5
//! test client playing the maze game: `maze/state` in, one JSON object out on `maze/hint/{sessionId}`.

mod support;

use serde_json::{Value, json};
use support::{Mosquitto, MqttLlm, Received, TestClient, sim_up_args_with};

/// The user turn the successor built from [`state`]`(x, 2)`: Python's `json.dumps` of its dict.
fn user_turn(x: i64) -> String {
    format!(
        r#"{{"player_pos": [{x}, 2], "exit_pos": [4, 4], "visible_map": [[1, 1, 0], [0, 1, 1]], "germs": [[2, 0]], "oxygen": [[1, 0]], "oxygen_collected": 1}}"#
    )
}

/// A web-game state (positions as objects, extras the server ignores) with the player at `(x, 2)`.
fn state(session: &str, x: i64) -> Value {
    json!({
        "sessionId": session,
        "player_pos": {"x": x, "y": 2},
        "exit_pos": [4, 4],
        "visible_map": [[1, 1, 0], [0, 1, 1]],
        "germs": [{"x": 2, "y": 0}],
        "oxygenPellets": [[1, 0]],
        "oxygenCollected": 1,
        "oxygen": 75, "health": 3, "tick": 40, "timestamp": 1_700_000_000_000_u64,
    })
}

type Harness = support::Stack;

impl Harness {
    async fn start(extra: &[&str]) -> Self {
        let mut args = vec!["--projects", "general maze"];
        args.extend_from_slice(extra);
        Self::launch(&args, &["maze/hint/#", "maze/assistant_response/#"]).await
    }

    async fn send_state(&self, body: Value) {
        self.client.publish_json("maze/state", body).await;
    }

    /// The next message, which must be on `topic` (any other message first is a failure).
    async fn next_on(&mut self, topic: &str) -> Received {
        let m = self.client.recv().await;
        assert_eq!(m.topic, topic, "unexpected message: {}", m.text());
        m
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_gets_exactly_one_json_hint_and_becomes_a_turn_of_the_history() {
    let mut h = Harness::start(&[]).await;
    h.send_state(state("g1", 0)).await;
    let hint = h.next_on("maze/hint/g1").await.json();
    // The echo line is plain text, so it arrives wrapped; the state reached the engine in the successor's form
    // under the built-in maze prompt.
    assert_eq!(
        hint,
        json!({"hint": format!("messages=2 roles=s,u system=You are the guide in a user={}", user_turn(0))})
    );
    // The next state of the session is answered after the first exchange, once: the very next message.
    h.send_state(state("g1", 1)).await;
    let hint = h.next_on("maze/hint/g1").await.json();
    assert_eq!(
        hint["hint"],
        format!(
            "messages=4 roles=s,u,a,u system=You are the guide in a user={}",
            user_turn(1)
        )
    );
    // A chat turn on maze/user_input shares the session's history and keeps its plain-text reply.
    h.client
        .publish_json("maze/user_input", json!({"sessionId": "g1", "message": "where now?"}))
        .await;
    let chat = h.next_on("maze/assistant_response/g1").await;
    assert_eq!(
        chat.text(),
        "messages=6 roles=s,u,a,u,a,u system=You are the guide in a user=where now?"
    );
    assert_eq!(
        h.server
            .metric("mqtt_llm_replies_total{project=\"maze\",outcome=\"ok\"}")
            .await,
        3.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prompt_template_content_reaches_the_engine_as_the_system_prompt() {
    let mut h = Harness::start(&[]).await;
    let mut body = state("p1", 0);
    body["prompt_template"] =
        json!({"title": "Pirate", "content": "Guide the player as a pirate.", "version": 2, "user_id": 7});
    h.send_state(body).await;
    let hint = h.next_on("maze/hint/p1").await.json();
    assert_eq!(
        hint["hint"],
        format!(
            "messages=2 roles=s,u system=Guide the player as a pirate. user={}",
            user_turn(0)
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_topic_outside_the_hint_base_falls_back_to_the_sessions_hint_topic() {
    let mut h = Harness::start(&[]).await;
    let mut body = state("r1", 0);
    body["replyTopic"] = json!("maze/hint/r1/client7/req1");
    h.send_state(body).await;
    h.next_on("maze/hint/r1/client7/req1").await.json();
    for (i, outside) in [
        "maze/assistant_response/r1",
        "general/assistant_response/r1",
        "home/door/set",
    ]
    .into_iter()
    .enumerate()
    {
        let mut body = state("r1", i as i64 + 1);
        body["replyTopic"] = json!(outside);
        h.send_state(body).await;
        let hint = h.next_on("maze/hint/r1").await.json();
        assert!(
            hint["hint"].as_str().unwrap().contains(&user_turn(i as i64 + 1)),
            "{hint}"
        );
    }
    assert_eq!(
        h.server
            .metric("mqtt_llm_reply_topic_fallbacks_total{project=\"maze\",reason=\"wrong_prefix\"}")
            .await,
        3.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_state_gets_a_json_error_on_its_hint_topic() {
    let mut h = Harness::start(&[]).await;
    h.send_state(json!({"sessionId": "e1", "exit_pos": [4, 4]})).await;
    assert_eq!(
        h.next_on("maze/hint/e1").await.json(),
        json!({"error": "missing 'player_pos'"})
    );
    let mut bad = state("e1", 0);
    bad["germs"] = json!("everywhere");
    h.send_state(bad).await;
    let error = h.next_on("maze/hint/e1").await.json();
    assert!(
        error["error"].as_str().unwrap().starts_with("invalid 'germs'"),
        "{error}"
    );
    h.client
        .publish("maze/state", &br#"{"sessionId":"e1","player_pos":[1,"#[..])
        .await;
    let error = h.next_on("maze/hint/e1").await.json();
    assert!(error["error"].as_str().unwrap().starts_with("invalid JSON"), "{error}");
    // The session is intact: a valid state is still answered as its first exchange.
    h.send_state(state("e1", 0)).await;
    let hint = h.next_on("maze/hint/e1").await.json();
    assert!(hint["hint"].as_str().unwrap().starts_with("messages=2 "), "{hint}");
    assert_eq!(
        h.server
            .metric("mqtt_llm_requests_rejected_total{project=\"maze\"")
            .await,
        3.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_latest_state_wins_while_a_hint_is_being_generated() {
    // 50 ms per token: the first hint takes seconds, while the next states arrive within milliseconds.
    let mut h = Harness::start(&["--engine-arg=--sim-itl-ms=50"]).await;
    h.send_state(state("l1", 0)).await;
    h.server.wait_metric("mqtt_llm_requests_inflight", 1.0).await;
    for x in 1..=3 {
        h.send_state(state("l1", x)).await;
    }
    h.server
        .wait_metric("mqtt_llm_state_superseded_total{project=\"maze\"}", 2.0)
        .await;
    let first = h.next_on("maze/hint/l1").await.json();
    assert!(first["hint"].as_str().unwrap().ends_with(&user_turn(0)), "{first}");
    // The replaced states (1 and 2) are never answered: the next hint is the newest state's, then a new state's.
    let latest = h.next_on("maze/hint/l1").await.json();
    assert!(latest["hint"].as_str().unwrap().ends_with(&user_turn(3)), "{latest}");
    assert!(latest["hint"].as_str().unwrap().starts_with("messages=4 "), "{latest}");
    h.send_state(state("l1", 4)).await;
    let barrier = h.next_on("maze/hint/l1").await.json();
    assert!(barrier["hint"].as_str().unwrap().ends_with(&user_turn(4)), "{barrier}");
    assert_eq!(
        h.server
            .metric("mqtt_llm_state_superseded_total{project=\"maze\"}")
            .await,
        2.0
    );
    assert_eq!(
        h.server
            .metric("mqtt_llm_replies_total{project=\"maze\",outcome=\"ok\"}")
            .await,
        3.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_topic_follows_the_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("projects.toml");
    std::fs::write(
        &config,
        "[projects.maze]\nstate_topic = false\n[projects.quiz]\nstate_topic = true\nsystem_prompt = \"Quiz the player.\"\n",
    )
    .unwrap();
    let broker = Mosquitto::start().await;
    let args = ["--projects", "maze quiz", "--config", config.to_str().unwrap()];
    let _server = MqttLlm::start(&sim_up_args_with(&broker.url(), &args)).await;
    let mut client = TestClient::connect(broker.port).await;
    client.subscribe("+/hint/#").await;
    client.subscribe("+/assistant_response/#").await;
    // maze's state topic is off: its state is not even subscribed, so the chat reply sent after it comes first.
    client.publish_json("maze/state", state("c1", 0)).await;
    client
        .publish_json("maze/user_input", json!({"sessionId": "c1", "message": "barrier"}))
        .await;
    let m = client.recv().await;
    assert_eq!(m.topic, "maze/assistant_response/c1", "{}", m.text());
    // quiz is a state project of its own, with its own prompt and hint topic.
    client.publish_json("quiz/state", state("c2", 0)).await;
    let m = client.recv().await;
    assert_eq!(m.topic, "quiz/hint/c2", "{}", m.text());
    assert_eq!(
        m.json(),
        json!({"hint": format!("messages=2 roles=s,u system=Quiz the player. user={}", user_turn(0))})
    );
}
