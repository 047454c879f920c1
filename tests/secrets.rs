//! Secrets stay where they belong: the MQTT password (from `MQTT_LLM_MQTT_PASSWORD`, `--mqtt-password` or
//! `--mqtt-password-file`) reaches the broker but neither the engine guard nor the engine (their `/proc`
//! command lines and environments are read), nor any log line; an engine `--api-key` is masked in every line
//! mqtt-llm prints, vLLM's own included; `--dry-run` shows secrets as `***`.
#![allow(clippy::unwrap_used)]

mod support;

use nix::sys::signal::Signal;
use support::{Mosquitto, MqttLlm, descendants_of, mqtt_llm_bin, proc_stats, sim_up_args_with};
use tokio::process::Command;

const USER: &str = "llm";
const PASSWORD: &str = "pw-5f1e0c9a-not-for-children";

/// `/proc/PID/FILE` as text (NUL separators as newlines); empty once the process is gone.
fn proc_file(pid: i32, file: &str) -> String {
    let bytes = std::fs::read(format!("/proc/{pid}/{file}")).unwrap_or_default();
    String::from_utf8_lossy(&bytes).replace('\0', "\n")
}

/// Assert that no process below mqtt-llm (the guard, the engine, its EngineCore) has `secret` in its command
/// line or environment, nor any `MQTT_LLM_*` variable; and that there are such processes to look at.
fn assert_children_clean(server: &MqttLlm, secret: &str) {
    // A zombie has neither command line nor environment left to read.
    let zombies: Vec<i32> = proc_stats()
        .into_iter()
        .filter(|s| s.state == 'Z')
        .map(|s| s.pid)
        .collect();
    let children: Vec<i32> = descendants_of(server.pid())
        .into_iter()
        .filter(|pid| !zombies.contains(pid))
        .collect();
    let cmdlines: Vec<String> = children.iter().map(|&pid| proc_file(pid, "cmdline")).collect();
    assert!(
        cmdlines.iter().any(|c| c.contains("__engine-guard")) && cmdlines.iter().any(|c| c.contains("vllm-sim")),
        "the guard and the engine should be running below mqtt-llm: {cmdlines:?}"
    );
    for (pid, cmdline) in children.iter().zip(&cmdlines) {
        let environ = proc_file(*pid, "environ");
        assert!(
            !environ.is_empty(),
            "pid {pid} ({cmdline:?}) has no readable environment"
        );
        assert!(
            !cmdline.contains(secret),
            "the secret is on the command line of {cmdline:?}"
        );
        assert!(
            !environ.contains(secret),
            "the secret is in the environment of {cmdline:?}"
        );
        let own: Vec<&str> = environ.lines().filter(|v| v.starts_with("MQTT_LLM_")).collect();
        assert!(own.is_empty(), "{cmdline:?} inherited {own:?}");
    }
}

/// Stop `server` (SIGTERM) and return every line it printed, stdout and stderr.
async fn stop_and_read_all(mut server: MqttLlm) -> Vec<String> {
    server.signal(Signal::SIGTERM);
    server.wait_exit().await;
    // The pipes are closed now: these read what is left, up to the end.
    server.stdout.find(|_| false).await;
    server.stderr.find(|_| false).await;
    let mut lines = server.stdout.seen;
    lines.extend(server.stderr.seen);
    lines
}

fn assert_not_printed(lines: &[String], secret: &str) {
    assert!(!lines.is_empty());
    let leaks: Vec<&String> = lines.iter().filter(|l| l.contains(secret)).collect();
    assert!(leaks.is_empty(), "printed: {leaks:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_password_of_the_environment_reaches_the_broker_but_no_child() {
    let broker = Mosquitto::start_with_password(USER, PASSWORD).await;
    let args = sim_up_args_with(&broker.url(), &["--mqtt-username", USER]);
    let mut server = MqttLlm::spawn_with_env(&args, &[("MQTT_LLM_MQTT_PASSWORD", PASSWORD)]).await;
    // Ready means subscribed: the broker took the password.
    server.wait_ready().await;
    assert_children_clean(&server, PASSWORD);
    let lines = stop_and_read_all(server).await;
    assert_not_printed(&lines, PASSWORD);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_file_connects_and_a_password_flag_is_warned_about() {
    let broker = Mosquitto::start_with_password(USER, PASSWORD).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("mqtt-password");
    std::fs::write(&file, format!("{PASSWORD}\n")).unwrap();
    let file = file.display().to_string();
    let warning = "visible to every local user";

    let mut server = MqttLlm::spawn(&sim_up_args_with(
        &broker.url(),
        &["--mqtt-username", USER, "--mqtt-password-file", &file],
    ))
    .await;
    server.wait_ready().await;
    assert_children_clean(&server, PASSWORD);
    let lines = stop_and_read_all(server).await;
    assert_not_printed(&lines, PASSWORD);
    assert!(
        !lines.iter().any(|l| l.contains(warning)),
        "a file is no reason to warn"
    );

    let mut server = MqttLlm::spawn(&sim_up_args_with(
        &broker.url(),
        &["--mqtt-username", USER, "--mqtt-password", PASSWORD],
    ))
    .await;
    server.wait_ready().await;
    assert_children_clean(&server, PASSWORD);
    let lines = stop_and_read_all(server).await;
    assert!(
        lines
            .iter()
            .any(|l| l.contains("WARN") && l.contains(warning) && l.contains("--mqtt-password-file")),
        "no warning about the password flag: {lines:#?}"
    );
}

#[tokio::test]
async fn a_password_file_that_gives_nothing_stops_up_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty");
    std::fs::write(&empty, "\n").unwrap();
    let missing = dir.path().join("missing");
    for (file, says) in [(&empty, "is empty"), (&missing, "cannot read")] {
        let file = file.display().to_string();
        let args = sim_up_args_with(
            "mqtt://127.0.0.1:1",
            &["--mqtt-username", USER, "--mqtt-password-file", &file],
        );
        let mut server = MqttLlm::spawn_raw(&args).await;
        assert_eq!(server.wait_exit().await, Some(2), "{file}");
        let line = server.stderr.wait_for("the error", |l| l.starts_with("error: ")).await;
        assert!(
            line.contains("--mqtt-password-file") && line.contains(&file) && line.contains(says),
            "{line}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_api_key_is_masked_in_every_line_vllm_logs_included() {
    const KEY: &str = "sk-engine-2b7d41";
    let broker = Mosquitto::start().await;
    let args = sim_up_args_with(
        &broker.url(),
        // A served name, so that mqtt-llm need not ask the key-protected /v1/models for one.
        &[
            "--served-model-name",
            "sim-model",
            &format!("--engine-arg=--api-key={KEY}"),
        ],
    );
    let mut server = MqttLlm::start(&args).await;
    // vLLM (and the simulator) log their arguments, the key among them.
    let logged = server
        .stderr
        .wait_for("the engine's non-default args", |l| l.contains("non-default args"))
        .await;
    assert!(logged.contains("'api_key': ['***']"), "{logged}");
    let lines = stop_and_read_all(server).await;
    assert_not_printed(&lines, KEY);
    let launched = lines.iter().find(|l| l.starts_with("engine launched: ")).unwrap();
    assert!(launched.ends_with("'--api-key=***'"), "{launched}");
}

#[tokio::test]
async fn dry_run_shows_secrets_as_stars() {
    let out = Command::new(mqtt_llm_bin())
        .args([
            "up",
            "--model",
            "m",
            "--vllm-bin",
            "/opt/vllm/bin/vllm",
            "--dry-run",
            "--broker",
            "mqtt://127.0.0.1:1883",
            "--engine-arg=--api-key",
            "--engine-arg=sk-dry-9c1e",
        ])
        .env("HF_TOKEN", "hf_dry_5e0a")
        .env("MQTT_LLM_MQTT_USERNAME", USER)
        .env("MQTT_LLM_MQTT_PASSWORD", PASSWORD)
        .env("CUDA_VISIBLE_DEVICES", "3")
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    for secret in ["sk-dry-9c1e", "hf_dry_5e0a", PASSWORD] {
        assert!(!stdout.contains(secret), "{secret} in:\n{stdout}");
    }
    for shown in [
        "env (inherited): HF_TOKEN=***",
        "env (inherited): CUDA_VISIBLE_DEVICES=3",
        "--api-key '***'",
    ] {
        assert!(stdout.contains(shown), "{shown:?} missing from:\n{stdout}");
    }
    let withheld = stdout.lines().find(|l| l.starts_with("env (not passed on): ")).unwrap();
    assert!(withheld.split(' ').any(|w| w == "MQTT_LLM_MQTT_PASSWORD"), "{withheld}");
}
