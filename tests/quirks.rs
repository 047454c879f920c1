//! The original's quirks that clients rely on, end to end: a real mosquitto, the real `mqtt-llm` binary launching
//! `vllm-sim` (echo mode: the reply says what the engine saw; `--enable-log-requests`: a log line per request with
//! the sampling parameters it was sent), and an MQTT 5 test client.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

mod support;

use nix::sys::signal::Signal;
use serde_json::json;
use support::Received;

type Harness = support::Stack;

impl Harness {
    async fn start(extra: &[&str]) -> Self {
        Self::launch(extra, &[]).await
    }

    /// Send `body` to `{project}/user_input`; the reply on the session's default topic.
    async fn ask(&mut self, project: &str, body: serde_json::Value) -> String {
        let topic = format!("{project}/assistant_response/{}", body["sessionId"].as_str().unwrap());
        self.client.subscribe(&topic).await;
        self.client.publish_json(&format!("{project}/user_input"), body).await;
        let mut others = Vec::new();
        let reply = self.client.recv_on(&topic, &mut others).await.text();
        assert!(others.is_empty(), "unexpected messages before the reply: {others:?}");
        reply
    }

    /// The sampling part of the engine's next `Received request` line: `prompt_tokens=.., max_tokens=..,
    /// temperature=.., top_p=..`.
    async fn engine_received(&mut self) -> String {
        let line = self
            .server
            .stderr
            .wait_for("the engine's request log line", |l| l.contains("Received request "))
            .await;
        let (_, params) = line.split_once("Received request ").unwrap();
        let params = params.split_once(": ").unwrap().1;
        // mqtt-llm's log adds the line's fields after it (` stream="stdout"`).
        params.split(" stream=").next().unwrap().trim_end().to_owned()
    }
}

/// The web chat's slider reaches `topP: 0`. vLLM refuses `top_p` 0 and the original sent `0 or 0.9`; mqtt-llm
/// answers it as greedy decoding: the engine gets `temperature` 0, exactly what a `temperature: 0` request sends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn top_p_zero_is_answered_and_the_engine_gets_temperature_zero() {
    let mut h = Harness::start(&["--engine-arg=--enable-log-requests"]).await;

    let greedy = h
        .ask("general", json!({"sessionId": "g1", "message": "pick one", "topP": 0}))
        .await;
    assert!(!greedy.starts_with("Error"), "{greedy}");
    assert!(greedy.ends_with("user=pick one"), "{greedy}");
    let sent = h.engine_received().await;
    assert!(sent.ends_with("temperature=0.0, top_p=0.9"), "{sent}");

    let cold = h
        .ask(
            "general",
            json!({"sessionId": "g2", "message": "pick one", "temperature": 0}),
        )
        .await;
    assert_eq!(greedy, cold, "the same reply");
    assert_eq!(sent, h.engine_received().await, "the same engine parameters");

    // A temperature given with `topP: 0` does not matter: only the top token can be chosen.
    let hot = h
        .ask(
            "general",
            json!({"sessionId": "g3", "message": "pick one", "topP": 0, "temperature": 1.5}),
        )
        .await;
    assert_eq!(greedy, hot);
    assert_eq!(sent, h.engine_received().await);
}

/// `prompt_portal` (the prompt-portal and OwOGPT backends) has its own built-in prompt, servable without a
/// `--config` file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prompt_portal_requests_get_the_built_in_prompt() {
    let mut h = Harness::start(&["--projects", "general,prompt_portal"]).await;
    let portal = h
        .ask(
            "prompt_portal",
            json!({"sessionId": "user1-0a1b2c3d4e", "message": "hi"}),
        )
        .await;
    // The echo shows the first six words of the system prompt.
    assert!(
        portal.contains("system=You are an assistant for testing user=hi"),
        "{portal}"
    );
    let general = h.ask("general", json!({"sessionId": "s1", "message": "hi"})).await;
    assert!(general.contains("system=You are a helpful AI assistant."), "{general}");
}

fn legacy_status(m: &Received) -> (String, f64) {
    assert_eq!(m.topic, "general/status");
    assert!(!m.retain, "the legacy status is not retained");
    let body = m.json();
    assert!(body["service"].as_str().unwrap().starts_with("mqtt-llm-"), "{body}");
    assert_eq!(body.as_object().unwrap().len(), 3, "{body}");
    (
        body["status"].as_str().unwrap().to_owned(),
        body["ts"].as_f64().unwrap(),
    )
}

/// The successor's liveness: `online` on `{first project}/status` every interval while connected (here 200 ms, 30 s
/// by default), and `offline` when mqtt-llm stops on SIGTERM; never on another project's status topic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_status_beats_on_the_first_project_and_says_offline_on_sigterm() {
    let mut h = Harness::start(&["--projects", "general,maze", "--legacy-status-interval", "200ms"]).await;
    h.client.subscribe("+/status").await;
    let mut others = Vec::new();

    let first = h.client.recv_on("general/status", &mut others).await;
    let (status, ts1) = legacy_status(&first);
    assert_eq!(status, "online");
    let next = h.client.recv_on("general/status", &mut others).await;
    let (status, ts2) = legacy_status(&next);
    assert_eq!(status, "online", "again after the interval");
    assert!(ts2 > ts1, "{ts1} then {ts2}");

    h.server.signal(Signal::SIGTERM);
    let offline = loop {
        let m = h.client.recv_on("general/status", &mut others).await;
        let (status, ts) = legacy_status(&m);
        assert!(ts >= ts2);
        if status == "offline" {
            break m;
        }
        assert_eq!(status, "online");
    };
    assert_eq!(offline.json()["service"], first.json()["service"]);
    assert_eq!(h.server.wait_exit().await, Some(0));
    assert!(
        others.iter().all(|m| m.topic == "mqtt-llm/status"),
        "only mqtt-llm's own status besides: {others:?}"
    );
}
