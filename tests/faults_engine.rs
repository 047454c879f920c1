//! The fault suite, engine and process half: a real SIGKILL and a real SIGSTOP of the engine process while
//! streams are in flight, SIGTERM of mqtt-llm under streaming load, and a 20× overload for 30 s. Each test checks
//! that every request gets exactly one final reply, and prints what it measured on one `FAULT-FIGURES:` line
//! (run with `--nocapture` to see them).

mod support;

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use rumqttc::v5::mqttbytes::QoS;
use serde_json::json;
use support::proc::{
    Delivery, EngineTree, Recorder, RssSampler, long_message, open_loop, rss_summary_mib, start_streams,
    wait_readyz_200,
};
use support::{Mosquitto, MqttLlm, TestClient, WAIT, eventually, sim_up_args_with};

const RESTARTED: &str = "Error: engine restarted, please retry";
const OVERLOADED: &str = "Error: Server is overloaded. Please try again in a moment.";

/// A broker, `up` with the echo sim and `extra`, a publishing client and a recorder of replies and frames.
async fn stack(extra: &[&str]) -> (Mosquitto, MqttLlm, TestClient, Recorder) {
    let broker = Mosquitto::start().await;
    let server = MqttLlm::start(&sim_up_args_with(&broker.url(), extra)).await;
    let client = TestClient::connect(broker.port).await;
    let mut recorder = Recorder::connect(broker.port).await;
    recorder.subscribe("general/assistant_response/#").await;
    recorder.subscribe("general/assistant_stream/#").await;
    (broker, server, client, recorder)
}

fn sessions(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i}")).collect()
}

fn send_signal(pid: i32, signal: Signal) {
    kill(Pid::from_raw(pid), signal).unwrap();
}

/// Deliveries by topic, in arrival order.
type ByTopic = HashMap<String, Vec<Delivery>>;

/// Record deliveries into `seen` until every one of `sessions` has a final reply.
async fn until_replied(recorder: &mut Recorder, seen: &mut ByTopic, sessions: &[String]) {
    let replied = |seen: &ByTopic| {
        sessions
            .iter()
            .all(|s| seen.contains_key(&format!("general/assistant_response/{s}")))
    };
    while !replied(seen) {
        let d = recorder.recv().await;
        seen.entry(d.topic.clone()).or_default().push(d);
    }
}

/// After an engine failure under `sessions`' streams: each got exactly one final reply, the restart error, and
/// its stream ended with an `engine_restarting` error frame sent before that reply.
fn assert_each_stream_errored_once(seen: &ByTopic, sessions: &[String]) {
    for s in sessions {
        let replies: Vec<String> = seen[&format!("general/assistant_response/{s}")]
            .iter()
            .map(Delivery::text)
            .collect();
        assert_eq!(replies, [RESTARTED], "final replies of {s}");
        let reply_at = seen[&format!("general/assistant_response/{s}")][0].at;
        let frames = &seen[&format!("general/assistant_stream/{s}")];
        let last = frames.last().unwrap().json();
        assert_eq!(last["error"]["code"], "engine_restarting", "{s}'s last frame: {last}");
        let errors = frames.iter().filter(|f| f.json().get("error").is_some()).count();
        assert_eq!(errors, 1, "{s} got {errors} error frames");
        assert!(frames.iter().all(|f| f.at <= reply_at), "{s}: a frame after the final reply");
    }
}

/// Everything that arrives in a short window once all was observed: a duplicate would be among it.
async fn late_arrivals(recorder: &mut Recorder, seen: &mut ByTopic) {
    for d in recorder.drain_for(Duration::from_millis(300)).await {
        seen.entry(d.topic.clone()).or_default().push(d);
    }
}

/// Ask once more, in a new session, and return the reply and how long it took.
async fn fresh_request(client: &TestClient, recorder: &mut Recorder, session: &str) -> (String, Duration) {
    let sent = Instant::now();
    client
        .publish_json(
            "general/user_input",
            json!({"sessionId": session, "message": "are you back"}),
        )
        .await;
    let topic = format!("general/assistant_response/{session}");
    loop {
        let d = recorder.recv().await;
        if d.topic == topic {
            return (d.text(), d.at - sent);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_sigkilled_mid_stream_answers_each_stream_once_and_comes_back() {
    const N: usize = 10;
    let (_broker, server, client, mut recorder) = stack(&[
        "--engine-probe-interval",
        "200ms",
        "--engine-arg=--sim-itl-ms=30",
        "--stream-interval-ms",
        "0",
    ])
    .await;
    let tree = EngineTree::of(&server);
    let streams = sessions("k", N);
    // ~300 tokens at 30 ms: the streams last ~9 s unless something cuts them.
    let mut seen = start_streams(&client, &mut recorder, &streams, &long_message(300)).await;
    assert!(
        !seen.keys().any(|t| t.starts_with("general/assistant_response/")),
        "answered before the kill: {:?}",
        seen.keys()
    );

    send_signal(tree.engine, Signal::SIGKILL);
    let killed = Instant::now();
    until_replied(&mut recorder, &mut seen, &streams).await;
    let all_errored = killed.elapsed();
    wait_readyz_200(&server).await;
    let ready_again = killed.elapsed();
    late_arrivals(&mut recorder, &mut seen).await;
    assert_each_stream_errored_once(&seen, &streams);

    // No process of the killed incarnation is left, not even a zombie; a new one serves.
    eventually("the killed engine's process group is gone", || tree.group().is_empty()).await;
    assert!(!tree.any_left());
    let next = EngineTree::of(&server);
    assert_ne!(next.guard, tree.guard);
    let (reply, took) = fresh_request(&client, &mut recorder, "after").await;
    assert!(reply.ends_with("user=are you back"), "{reply}");
    assert_eq!(
        server.metric("mqtt_llm_engine_restarts_total{reason=\"crash\"}").await,
        1.0
    );
    eprintln!(
        "FAULT-FIGURES: engine SIGKILL mid-stream: streams={N} replies_lost=0 duplicates=0 \
         all_errored_after_s={:.2} readyz_200_again_after_s={:.2} next_request_s={:.2} orphans=0",
        all_errored.as_secs_f64(),
        ready_again.as_secs_f64(),
        took.as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_sigstopped_mid_stream_is_detected_and_restarted() {
    const N: usize = 5;
    let (_broker, mut server, client, mut recorder) = stack(&[
        "--engine-probe-interval",
        "200ms",
        "--engine-stall-timeout",
        "1s",
        "--engine-arg=--sim-itl-ms=30",
        "--stream-interval-ms",
        "0",
    ])
    .await;
    let tree = EngineTree::of(&server);
    let streams = sessions("h", N);
    let mut seen = start_streams(&client, &mut recorder, &streams, &long_message(300)).await;

    // Frozen, not dead: its sockets stay open and its port still accepts connections, so only the absence of
    // tokens and of answers to `/health` can tell.
    send_signal(tree.engine, Signal::SIGSTOP);
    let stopped = Instant::now();
    eventually("the engine is stopped", || {
        support::proc::state(tree.engine) == Some('T')
    })
    .await;
    server
        .stderr
        .wait_for("the hang detected", |l| {
            l.contains("stopping engine: SIGTERM to its process group")
        })
        .await;
    let detected = stopped.elapsed();
    until_replied(&mut recorder, &mut seen, &streams).await;
    let all_errored = stopped.elapsed();
    wait_readyz_200(&server).await;
    let ready_again = stopped.elapsed();
    late_arrivals(&mut recorder, &mut seen).await;
    assert_each_stream_errored_once(&seen, &streams);

    eventually("the hung engine's process group is gone", || tree.group().is_empty()).await;
    assert!(!tree.any_left());
    let (reply, took) = fresh_request(&client, &mut recorder, "after").await;
    assert!(reply.ends_with("user=are you back"), "{reply}");
    assert_eq!(
        server.metric("mqtt_llm_engine_restarts_total{reason=\"hang\"}").await,
        1.0
    );
    eprintln!(
        "FAULT-FIGURES: engine SIGSTOP mid-stream (probe 200ms, stall timeout 1s, grace 5s): streams={N} \
         replies_lost=0 duplicates=0 detected_after_s={:.2} all_errored_after_s={:.2} \
         readyz_200_again_after_s={:.2} next_request_s={:.2} orphans=0",
        detected.as_secs_f64(),
        all_errored.as_secs_f64(),
        ready_again.as_secs_f64(),
        took.as_secs_f64()
    );
}
