//! llama.cpp as the managed engine, end to end: `mqtt-llm up --engine llamacpp --llamacpp-python VENV_PY --model
//! GGUF` with its embedded broker launches llama.cpp's server (SmolLM2-135M-Instruct on CPU) through the launcher
//! built into the binary, under the same supervision as vLLM: a chat over MQTT gets a real answer; a SIGKILL of the
//! engine gives error replies or a wait, a restart, and answers again; SIGTERM leaves no process behind.
//!
//! Needs `scripts/setup-cpu-engine.sh` to have run; skips otherwise unless `MQTT_LLM_REQUIRE_CPU_ENGINE=1`.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde_json::json;
use support::llamacpp::CpuEngine;
use support::proc::{cmdline, state};
use support::{MqttLlm, TestClient, children_of, eventually, group_members};

const LAUNCHER_IN_REPO: &str = include_str!("../launcher/serve_llamacpp.py");

/// Publish a request in `session` and return the plain-text reply, or `None` after `wait`.
async fn ask(client: &mut TestClient, session: &str, wait: Duration) -> Option<String> {
    client
        .publish_json(
            "general/user_input",
            json!({"sessionId": session, "message": "Say hello.", "maxTokens": 12, "temperature": 0}),
        )
        .await;
    let topic = format!("general/assistant_response/{session}");
    let deadline = Instant::now() + wait;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match client.recv_within(left).await {
            Some(m) if m.topic == topic => return Some(m.text()),
            Some(_) => {}
            None => break,
        }
    }
    None
}

/// The guard (a child of mqtt-llm leading its own process group) and the engine under it.
fn guard_and_engine(server: &MqttLlm) -> (i32, i32) {
    let guard = children_of(server.pid())
        .into_iter()
        .find(|&p| group_members(p).contains(&p))
        .expect("the guard: a child of mqtt-llm leading its own process group");
    let engines = children_of(guard);
    assert_eq!(engines.len(), 1, "one engine under the guard: {engines:?}");
    (guard, engines[0])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_engine_llamacpp_answers_survives_a_sigkill_and_stops_clean() {
    let Some(engine) = CpuEngine::prepared_or_skip("up_engine_llamacpp_answers_survives_a_sigkill_and_stops_clean")
    else {
        return;
    };
    let started = Instant::now();
    let data_home = tempfile::tempdir().unwrap();
    let args = support::llamacpp::llamacpp_up_args(&[
        "--llamacpp-python",
        engine.python.to_str().unwrap(),
        "--model",
        engine.model.to_str().unwrap(),
        "--served-model-name",
        "smollm2",
    ]);
    let mut server = MqttLlm::spawn_with_env(&args, &[("XDG_DATA_HOME", data_home.path().to_str().unwrap())]).await;
    server.wait_ready().await;

    // The engine is the embedded launcher, written under XDG_DATA_HOME, run by the given Python.
    let launcher = data_home.path().join("mqtt-llm/serve_llamacpp.py");
    assert_eq!(std::fs::read_to_string(&launcher).unwrap(), LAUNCHER_IN_REPO);
    let (guard, first) = guard_and_engine(&server);
    let argv = cmdline(first);
    assert_eq!(argv[0], engine.python.to_str().unwrap(), "{argv:?}");
    assert_eq!(argv[1], launcher.to_str().unwrap(), "{argv:?}");
    for flag in ["--threads", "--ctx", "--parallel", "--alias"] {
        assert!(argv.iter().any(|a| a == flag), "{flag} missing: {argv:?}");
    }

    let mut client = TestClient::connect(server.mqtt_port()).await;
    client.subscribe("general/assistant_response/#").await;
    let reply = ask(&mut client, "first", Duration::from_secs(30))
        .await
        .expect("a reply");
    assert!(!reply.trim().is_empty() && !reply.starts_with("Error"), "{reply:?}");

    // SIGKILL the engine: requests get an error reply (or wait for the restart); then a new engine answers.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(first), Signal::SIGKILL).unwrap();
    let mut errors = 0;
    let mut answered = None;
    for attempt in 0..60 {
        match ask(&mut client, &format!("after-kill-{attempt}"), Duration::from_secs(20)).await {
            Some(text) if text.starts_with("Error") => errors += 1,
            Some(text) => {
                answered = Some(text);
                break;
            }
            None => {}
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let answered = answered.expect("no answer after the engine was killed");
    assert!(!answered.trim().is_empty(), "{answered:?}");
    let (guard2, second) = guard_and_engine(&server);
    assert_ne!(second, first, "a new engine process");
    assert!(state(first).is_none(), "the killed engine was reaped");
    eprintln!("after SIGKILL: {errors} error replies, then an answer from engine {second} (guard {guard2})");

    // SIGTERM: mqtt-llm exits 0 and leaves nothing behind.
    server.signal(Signal::SIGTERM);
    assert_eq!(server.wait_exit().await, Some(0));
    eventually("no engine process left", || {
        [guard, guard2, second].into_iter().all(|p| state(p).is_none()) && group_members(guard2).is_empty()
    })
    .await;
    let took = started.elapsed();
    assert!(took < Duration::from_secs(60), "took {took:?}");
}
