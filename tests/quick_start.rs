//! The README's quick start, as written: `mqtt-llm up` with the simulator and no broker (the embedded one), a
//! `mosquitto_sub` for the replies and a `mosquitto_pub` request. The lines are read from the README itself; the
//! only changes are the binaries' paths (this build's) and the ports (free ones, since a test machine may run a
//! broker on 1883).
#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

mod support;

use std::process::Stdio;
use std::time::Duration;

use support::{Lines, MqttLlm, mqtt_llm_bin, sim_bin};
use tokio::process::Command;

/// The shell lines of the README's "Try it without a GPU" block.
fn quick_start_lines() -> Vec<String> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let block: Vec<String> = readme
        .lines()
        .skip_while(|l| !l.starts_with("Try it without a GPU"))
        .skip_while(|l| *l != "```sh")
        .skip(1)
        .take_while(|l| *l != "```")
        .map(str::to_owned)
        .collect();
    assert_eq!(block.len(), 4, "{block:?}");
    block
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_quick_start_answers_a_mosquitto_pub_request() {
    let lines = quick_start_lines();
    assert_eq!(lines[0], "cargo build --release");
    let up = lines[1]
        .strip_suffix(" &")
        .expect("up runs in the background")
        .replace("target/release/mqtt-llm", mqtt_llm_bin().to_str().unwrap())
        .replace("target/release/vllm-sim", sim_bin().to_str().unwrap());
    assert!(!up.contains("--broker"), "the quick start needs no broker: {up}");
    // Free ports instead of 1883/9001/9090; a state directory of the test's own.
    let state = tempfile::tempdir().unwrap();
    let up = format!(
        "exec {up} --mqtt-listen 127.0.0.1:0 --mqtt-ws-listen 127.0.0.1:0 --http 127.0.0.1:0 --state-dir {}",
        state.path().display()
    );
    let mut child = Command::new("bash")
        .args(["-c", &up])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdout = Lines::read(child.stdout.take().unwrap());
    let _stderr = Lines::read(child.stderr.take().unwrap());
    stdout.wait_for("ready", |l| l == "ready").await;
    let server = MqttLlm {
        child,
        http: ([127, 0, 0, 1], 0).into(),
        stdout,
        stderr: _stderr,
        state_home: None,
    };
    let port = server.mqtt_port().to_string();

    let sub = lines[2]
        .strip_suffix(" &")
        .expect("the subscriber runs in the background");
    let mut sub = Command::new("bash")
        .args(["-c", &format!("exec {sub} -p {port}")])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut sub_out = Lines::read(sub.stdout.take().unwrap());
    // The subscriber says nothing when it has subscribed: publish until a reply shows (one request usually).
    let mut reply = None;
    for _ in 0..60 {
        let status = Command::new("bash")
            .args(["-c", &format!("{} -p {port}", lines[3])])
            .status()
            .await
            .unwrap();
        assert!(status.success(), "{}", lines[3]);
        if let Ok(Some(line)) = tokio::time::timeout(
            Duration::from_millis(500),
            sub_out.find(|l| l.starts_with("general/assistant_response/s1 ")),
        )
        .await
        {
            reply = Some(line);
            break;
        }
    }
    let reply = reply.expect("no reply on the mosquitto_sub of the quick start");
    assert!(reply.len() > "general/assistant_response/s1 ".len() + 10, "{reply}");
    let _ = tokio::time::timeout(Duration::from_secs(1), sub.kill()).await;
}
