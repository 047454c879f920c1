//! The service's lifecycle: start-up and readiness, failed starts, attach mode, and shutdown with drain.

mod support;

use nix::sys::signal::Signal;
use serde_json::json;
use support::sim::SimProcess;
use support::{Mosquitto, MqttLlm, TestClient, children_of, eventually, group_members, sim_up_args, sim_up_args_with};

/// `up` against a fresh broker with `--vllm-bin BIN` instead of the sim, started without waiting (it fails).
async fn up_with_vllm_bin(bin: &str) -> (Mosquitto, MqttLlm) {
    let broker = Mosquitto::start().await;
    let mut args = sim_up_args(&broker.url());
    let at = args
        .iter()
        .position(|a| a == "--vllm-bin")
        .expect("sim_up_args names a --vllm-bin")
        + 1;
    args[at] = bin.to_owned();
    let server = MqttLlm::spawn_raw(&args).await;
    (broker, server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_names_the_engine_while_it_starts() {
    let broker = Mosquitto::start().await;
    let mut server = MqttLlm::spawn(&sim_up_args_with(
        &broker.url(),
        &["--engine-arg=--sim-startup-ms=1500"],
    ))
    .await;
    let (status, body) = server.get("/livez").await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = server.get("/readyz").await;
    assert_eq!(status, 503, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["engine"]["state"], "starting", "{body}");
    assert_eq!(v["engine"]["ready"], false);
    server.wait_ready().await;
    let (_, body) = server.get("/metrics").await;
    assert!(body.contains("mqtt_llm_engine_ready 1"), "{body}");
    assert!(body.contains("mqtt_llm_mqtt_connected 1"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_engine_binary_fails_with_a_reason() {
    let (_broker, mut server) = up_with_vllm_bin("/nonexistent/vllm").await;
    assert_eq!(server.wait_exit().await, Some(1));
    let line = server.stderr.wait_for("error line", |l| l.starts_with("error: ")).await;
    assert!(line.contains("/nonexistent/vllm"), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_that_exits_during_start_is_diagnosed_with_its_log() {
    let broker = Mosquitto::start().await;
    let mut server = MqttLlm::spawn(&sim_up_args_with(&broker.url(), &["--engine-arg=--no-such-flag"])).await;
    assert_eq!(server.wait_exit().await, Some(2), "a command line vLLM rejects exits 2");
    let line = server.stderr.wait_for("error line", |l| l.starts_with("error: ")).await;
    assert!(
        line.contains("vllm serve rejected its command line") && line.contains("--no-such-flag"),
        "{line}"
    );
    assert!(
        server.stderr.seen.iter().any(|l| l.contains("--no-such-flag")),
        "{:?}",
        server.stderr.seen
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attach_mode_uses_a_running_server() {
    let sim = SimProcess::start(
        "sim-direct",
        &[
            "--host",
            "127.0.0.1",
            "--served-model-name",
            "attached",
            "--sim-reply",
            "echo",
        ],
    )
    .await;
    let broker = Mosquitto::start().await;
    let args: Vec<String> = [
        "up",
        "--engine-url",
        sim.url("").trim_end_matches('/'),
        "--broker",
        &broker.url(),
        "--http",
        "127.0.0.1:0",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    let server = MqttLlm::start(&args).await;
    assert!(
        server.stdout.seen.iter().any(|l| l.contains("serving attached")),
        "{:?}",
        server.stdout.seen
    );
    let mut client = TestClient::connect(broker.port).await;
    client.subscribe("general/assistant_response/#").await;
    client
        .publish_json("general/user_input", json!({"sessionId": "a", "message": "hi"}))
        .await;
    let reply = client.recv().await;
    assert_eq!(reply.topic, "general/assistant_response/a");
    assert!(reply.text().ends_with("user=hi"), "{}", reply.text());
    drop(server);
    // Attach mode launches nothing, so stopping mqtt-llm leaves the server running.
    let still = tokio::net::TcpStream::connect(("127.0.0.1", sim.port.unwrap())).await;
    assert!(still.is_ok(), "the attached server stopped: {still:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests_then_stops_the_engine_group() {
    let broker = Mosquitto::start().await;
    let slow = ["--engine-arg=--sim-itl-ms=30", "--stream-interval-ms", "0"];
    let mut server = MqttLlm::start(&sim_up_args_with(&broker.url(), &slow)).await;
    let engine_pid = children_of(server.pid())
        .into_iter()
        .find(|&p| group_members(p).contains(&p))
        .expect("the engine is a child of mqtt-llm leading its own process group");
    assert_ne!(engine_pid, server.pid());

    let mut client = TestClient::connect(broker.port).await;
    client.subscribe("general/assistant_response/#").await;
    client.subscribe("general/assistant_stream/#").await;
    client
        .publish_json(
            "general/user_input",
            json!({"sessionId": "d", "message": "a long answer please", "stream": true, "maxTokens": 40}),
        )
        .await;
    // The request is in flight once its first frame arrives.
    let first = client.recv().await;
    assert_eq!(first.topic, "general/assistant_stream/d");
    server.signal(Signal::SIGTERM);
    server.stdout.wait_for("draining", |l| l == "draining").await;
    // New requests during the drain are refused, not lost.
    client
        .publish_json(
            "general/user_input",
            json!({"sessionId": "late", "message": "too late"}),
        )
        .await;
    let mut others = Vec::new();
    let reply = client.recv_on("general/assistant_response/d", &mut others).await;
    assert!(
        !reply.text().starts_with("Error"),
        "in-flight request was cut: {}",
        reply.text()
    );
    // The refusal was immediate, so it came while "d" was still streaming.
    let late: Vec<String> = others
        .iter()
        .filter(|m| m.topic == "general/assistant_response/late")
        .map(|m| m.text())
        .collect();
    assert_eq!(late, ["Error: server is shutting down, please retry"]);
    assert_eq!(server.wait_exit().await, Some(0));
    eventually("the engine's process group is gone", || {
        group_members(engine_pid).is_empty()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_vllm_without_a_gpu_driver_is_refused_with_an_explanation() {
    // A `vllm` (here the simulator under that name) on a machine without an NVIDIA driver: the GPU pre-flight
    // cannot pass, and says why and what else to do.
    let dir = tempfile::tempdir().unwrap();
    let vllm = dir.path().join("vllm");
    std::os::unix::fs::symlink(support::sim_bin(), &vllm).unwrap();
    let (_broker, mut server) = up_with_vllm_bin(&vllm.display().to_string()).await;
    assert_eq!(server.wait_exit().await, Some(1));
    let line = server.stderr.wait_for("error line", |l| l.starts_with("error: ")).await;
    assert!(
        line.contains("NVML unavailable") && line.contains("--engine-url"),
        "{line}"
    );
}

/// The next message on `mqtt-llm/status`, as JSON, with its retain flag.
async fn next_status(client: &mut TestClient) -> (serde_json::Value, bool) {
    let mut others = Vec::new();
    let r = client.recv_on("mqtt-llm/status", &mut others).await;
    (r.json(), r.retain)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_is_online_while_serving_offline_after_sigterm_and_the_will_after_a_kill() {
    let mut broker = Mosquitto::start().await;
    let mut server = MqttLlm::start(&sim_up_args_with(&broker.url(), &["--projects", "general,maze"])).await;

    // A device that subscribes after start-up finds the retained "online".
    let mut device = TestClient::connect(broker.port).await;
    device.subscribe("mqtt-llm/status").await;
    let (online, retained) = next_status(&mut device).await;
    assert!(retained, "the status is retained");
    assert_eq!(online["status"], "online", "{online}");
    assert_eq!(online["model"], "sim-model");
    assert_eq!(online["projects"], json!(["general", "maze"]));
    assert!(online["since"].is_string(), "{online}");

    // SIGTERM: "offline" (shutdown) arrives, and only then does mqtt-llm disconnect cleanly; the Will is not sent.
    server.signal(Signal::SIGTERM);
    let (offline, _) = next_status(&mut device).await;
    assert_eq!(offline["status"], "offline", "{offline}");
    assert_eq!(offline["reason"], "shutdown", "{offline}");
    assert_eq!(server.wait_exit().await, Some(0));
    broker
        .wait_log("mqtt-llm's clean DISCONNECT", |l| {
            l.contains("mqtt-llm-") && l.contains(" disconnected")
        })
        .await;
    let mut late = TestClient::connect(broker.port).await;
    late.subscribe("mqtt-llm/status").await;
    let (kept, retained) = next_status(&mut late).await;
    assert!(retained);
    assert_eq!(
        kept["reason"], "shutdown",
        "the retained status is the shutdown notice, not the Will: {kept}"
    );

    // A new instance turns it online again; SIGKILL leaves it to the broker's Will: "offline" (connection lost).
    let server = MqttLlm::start(&sim_up_args(&broker.url())).await;
    let (online, _) = next_status(&mut late).await;
    assert_eq!(online["status"], "online", "{online}");
    server.signal(Signal::SIGKILL);
    let (will, retained) = next_status(&mut late).await;
    assert_eq!(will["status"], "offline", "{will}");
    assert_eq!(will["reason"], "connection lost", "{will}");
    assert!(!retained, "delivered live, not from the store");
}
