//! What the service tells devices and operators about itself, end to end (a real mosquitto, the real binary with
//! `vllm-sim`): the retained capacity topic, `GET /status`, the stats log line.
#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

mod support;

use serde_json::{Value, json};
use support::{Received, Stack};

/// The next message on `topic`, skipping others.
async fn next_on(stack: &mut Stack, topic: &str) -> Received {
    let mut others = Vec::new();
    stack.client.recv_on(topic, &mut others).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capacity_is_retained_follows_the_load_and_says_closing_at_shutdown() {
    // Slow tokens, one request at a time: a second request waits, and the capacity shows it.
    let mut stack = Stack::launch(
        &[
            "--engine-arg=--sim-itl-ms=100",
            "--max-inflight",
            "1",
            "--capacity-interval",
            "1s",
        ],
        &["general/assistant_response/#"],
    )
    .await;
    // Subscribed after start-up: the retained message says ready and accepting.
    stack.client.subscribe("mqtt-llm/capacity").await;
    let first = next_on(&mut stack, "mqtt-llm/capacity").await;
    assert_eq!(
        first.json(),
        json!({"queueDepth": 0, "maxQueue": 1000, "inflight": 0, "maxInflight": 1, "engineState": "ready", "acceptingRequests": true})
    );

    for s in ["a", "b"] {
        let ask = json!({"sessionId": s, "message": "tell me a long story about many things"});
        stack.client.publish_json("general/user_input", ask).await;
    }
    // Within a second or two of the change: both accepted, one running.
    let mut busy = None;
    for _ in 0..10 {
        let c = next_on(&mut stack, "mqtt-llm/capacity").await.json();
        if c["queueDepth"] == 2 {
            busy = Some(c);
            break;
        }
    }
    let busy = busy.expect("no capacity message showed the two requests");
    assert_eq!(busy["inflight"], 1, "{busy}");
    assert_eq!(busy["acceptingRequests"], true, "{busy}");

    // Both answered: back to idle.
    let mut replies = 0;
    let mut idle = false;
    while replies < 2 || !idle {
        let m = stack.client.recv().await;
        if m.topic.starts_with("general/assistant_response/") {
            replies += 1;
        } else if m.topic == "mqtt-llm/capacity" {
            idle = replies == 2 && m.json()["queueDepth"] == 0;
        }
    }

    // A clean shutdown leaves a retained capacity that accepts nothing.
    stack.server.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(stack.server.wait_exit().await, Some(0));
    let mut late = support::TestClient::connect(stack.broker.port).await;
    late.subscribe("mqtt-llm/capacity").await;
    let last = late.recv().await;
    assert!(last.retain);
    let last = last.json();
    assert_eq!(last["acceptingRequests"], false, "{last}");
    assert_eq!(last["engineState"], "stopping", "{last}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_endpoint_reports_model_engine_queue_broker_and_totals() {
    let mut stack = Stack::launch(&["--projects", "general maze"], &["general/assistant_response/#"]).await;
    let (code, body) = stack.server.get("/status").await;
    assert_eq!(code, 200, "{body}");
    let before: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(before["model"], "sim-model");
    assert_eq!(before["projects"], json!(["general", "maze"]));
    assert_eq!(before["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(before["acceptingRequests"], true);
    assert_eq!(before["engine"]["state"], "ready");
    assert_eq!(before["engine"]["restarts"], 0);
    assert_eq!(before["queue"]["max"], 1000);
    assert_eq!(before["queue"]["depth"], 0);
    assert_eq!(before["mqtt"]["ready"], true);
    assert_eq!(before["mqtt"]["broker"]["mode"], "external");
    assert_eq!(before["mqtt"]["broker"]["url"], stack.broker.url());
    assert!(before["since"].as_str().unwrap().ends_with('Z'), "{before}");
    assert!(before["gpus"].is_array());

    stack
        .client
        .publish_json("general/user_input", json!({"sessionId": "s", "message": "hi"}))
        .await;
    stack.client.recv().await;
    stack.client.publish("general/user_input", "[1,2").await;
    stack.server.wait_metric("mqtt_llm_requests_rejected_total", 1.0).await;
    let (_, body) = stack.server.get("/status").await;
    let after: Value = serde_json::from_str(&body).unwrap();
    let totals = |v: &Value, k: &str| v["totals"][k].as_u64().unwrap();
    assert_eq!(totals(&after, "processed"), totals(&before, "processed") + 1, "{after}");
    assert_eq!(totals(&after, "rejected"), totals(&before, "rejected") + 1, "{after}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stats_line_has_the_originals_fields() {
    let mut stack = Stack::launch(&["--stats-interval", "1s"], &["general/assistant_response/#"]).await;
    stack
        .client
        .publish_json("general/user_input", json!({"sessionId": "s", "message": "hi"}))
        .await;
    stack.client.recv().await;
    let line = stack
        .server
        .stderr
        .wait_for("a stats line after the reply", |l| l.contains("stats processed=1 "))
        .await;
    for field in ["errors=0", "rejected=0", "queue=0", "avg_latency="] {
        assert!(line.contains(field), "{line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_over_70_percent_is_warned_about_once() {
    let mut stack = Stack::launch(
        &["--engine-arg=--sim-itl-ms=100", "--max-queued", "2"],
        &["general/assistant_response/#"],
    )
    .await;
    for s in ["a", "b"] {
        let ask = json!({"sessionId": s, "message": "a long story about many things"});
        stack.client.publish_json("general/user_input", ask).await;
    }
    let line = stack
        .server
        .stderr
        .wait_for("the queue warning", |l| l.contains("queue is 2/2 (100% full)"))
        .await;
    assert!(line.contains("overloaded") && line.contains("WARN"), "{line}");
    // Both still answered.
    stack.client.recv().await;
    stack.client.recv().await;
}
