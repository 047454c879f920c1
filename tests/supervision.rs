//! Engine supervision end to end: crash and hang recovery, requests during a restart, giving up, and the
//! engine's process group dying with mqtt-llm.

mod support;

use nix::sys::signal::Signal;
use serde_json::json;
use support::{Mosquitto, MqttLlm, Received, TestClient, children_of, eventually, group_members, sim_up_args_with};

async fn harness(extra: &[&str]) -> (Mosquitto, MqttLlm, TestClient) {
    let broker = Mosquitto::start().await;
    let args = sim_up_args_with(
        &broker.url(),
        &[&["--engine-probe-interval", "200ms"][..], extra].concat(),
    );
    let server = MqttLlm::start(&args).await;
    let mut client = TestClient::connect(broker.port).await;
    client.subscribe("general/assistant_response/#").await;
    client.subscribe("general/assistant_stream/#").await;
    (broker, server, client)
}

async fn ask(client: &mut TestClient, session: &str, message: &str, stream: bool) -> (Received, Vec<Received>) {
    client
        .publish_json(
            "general/user_input",
            json!({"sessionId": session, "message": message, "stream": stream, "maxTokens": 40}),
        )
        .await;
    let mut frames = Vec::new();
    let reply = client
        .recv_on(&format!("general/assistant_response/{session}"), &mut frames)
        .await;
    (reply, frames)
}

/// The process group of the engine: mqtt-llm's only child leading its own group.
fn engine_group(server: &MqttLlm) -> i32 {
    children_of(server.pid())
        .into_iter()
        .find(|&p| group_members(p).contains(&p))
        .expect("the engine runs in its own process group, led by a child of mqtt-llm")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_mid_stream_errors_in_flight_requests_then_the_engine_comes_back() {
    let (_broker, server, mut client) = harness(&[
        "--engine-arg=--sim-crash-after-requests=2",
        "--engine-arg=--sim-itl-ms=20",
    ])
    .await;
    let first_group = engine_group(&server);
    let (ok, _) = ask(&mut client, "c", "before the crash", false).await;
    assert!(ok.text().ends_with("user=before the crash"), "{}", ok.text());

    // The second request crashes the engine after its first token.
    let (reply, frames) = ask(&mut client, "c", "this one crashes", true).await;
    assert_eq!(reply.text(), "Error: engine restarted, please retry");
    let last = frames.last().expect("stream frames").json();
    assert_eq!(last["error"]["code"], "engine_restarting", "{last}");
    // The error came at once, not after the restart: the engine is still coming back.
    let (status, body) = server.get("/readyz").await;
    assert_eq!(status, 503, "{body}");

    // The engine comes back (a new process group) and serves again, with the history intact.
    server
        .wait_metric("mqtt_llm_engine_restarts_total{reason=\"crash\"}", 1.0)
        .await;
    let (ok, _) = ask(&mut client, "c", "after the restart", false).await;
    assert!(ok.text().starts_with("messages=4 "), "{}", ok.text());
    assert!(ok.text().ends_with("user=after the restart"), "{}", ok.text());
    eventually("the crashed engine's group is gone", || {
        group_members(first_group).is_empty()
    })
    .await;
    assert_ne!(engine_group(&server), first_group);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_engine_is_detected_and_restarted() {
    let (_broker, server, mut client) = harness(&[
        "--engine-arg=--sim-hang-after-requests=2",
        "--engine-stall-timeout",
        "1s",
    ])
    .await;
    let (ok, _) = ask(&mut client, "h", "fine", false).await;
    assert!(ok.text().ends_with("user=fine"), "{}", ok.text());
    // The engine stops producing tokens after the first of this request, while /health stays 200.
    let (reply, _) = ask(&mut client, "h", "never answered", false).await;
    assert_eq!(reply.text(), "Error: engine restarted, please retry");
    assert_eq!(
        server.metric("mqtt_llm_engine_restarts_total{reason=\"hang\"}").await,
        1.0
    );
    let (ok, _) = ask(&mut client, "h", "after the restart", false).await;
    assert!(ok.text().ends_with("user=after the restart"), "{}", ok.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_failures_make_up_exit_non_zero() {
    let (_broker, mut server, mut client) =
        harness(&["--engine-arg=--sim-crash-after-requests=1", "--max-restarts", "1"]).await;
    let (reply, _) = ask(&mut client, "x", "crash one", false).await;
    assert_eq!(reply.text(), "Error: engine restarted, please retry");
    // Sent while the engine restarts: it waits for the new engine, which crashes on it too.
    let (reply, _) = ask(&mut client, "x", "crash two", false).await;
    assert!(reply.text().starts_with("Error: "), "{}", reply.text());
    assert_eq!(server.wait_exit().await, Some(1));
    let line = server
        .stderr
        .wait_for("the error line", |l| l.starts_with("error: "))
        .await;
    assert!(line.contains("2 times within 10m"), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_engine_dies_with_a_sigkilled_mqtt_llm() {
    let (_broker, mut server, _client) = harness(&[]).await;
    let group = engine_group(&server);
    let members = group_members(group);
    assert!(
        members.len() >= 3,
        "the guard, the engine and its EngineCore: {members:?}"
    );
    server.signal(Signal::SIGKILL);
    server.wait_exit().await;
    eventually("the engine's process group is gone", || group_members(group).is_empty()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_wait_for_a_restarting_engine_only_up_to_engine_wait() {
    // The first restart waits 1 s; a request sent meanwhile may wait only 200 ms.
    let (_broker, server, mut client) =
        harness(&["--engine-arg=--sim-crash-after-requests=1", "--engine-wait", "200ms"]).await;
    let (reply, _) = ask(&mut client, "w", "crash", false).await;
    assert_eq!(reply.text(), "Error: engine restarted, please retry");
    let (reply, _) = ask(&mut client, "w", "too early", false).await;
    assert_eq!(
        reply.text(),
        "Error: Server is overloaded. Please try again in a moment."
    );
    let metric = "mqtt_llm_request_errors_total{project=\"general\",code=\"engine_not_ready\"}";
    assert_eq!(server.metric(metric).await, 1.0);
}
