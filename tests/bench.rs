//! `mqtt-llm bench` against mosquitto + `mqtt-llm up` with vllm-sim (both loop modes, --compare, --direct, flood
//! mode, --projects, --system-prompt-tokens), and against a fake responder that breaks the protocol.
#![allow(clippy::unwrap_used)]

mod support;

use std::ffi::OsStr;
use std::path::Path;
use std::time::Duration;

use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::Packet;
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use serde_json::Value;
use support::sim::SimProcess;
use support::{Mosquitto, MqttLlm, WAIT, mqtt_llm_bin, sim_up_args_with};
use tokio::task::JoinSet;

const FAST: [&str; 3] = ["--engine-arg=--sim-itl-ms=1", "--stream-interval-ms", "0"];

/// A broker and `up` with the echo sim and `extra` arguments (each sim flag at most once: the sim refuses
/// repeats), and a directory for the reports.
struct Stack {
    broker: Mosquitto,
    server: MqttLlm,
    dir: tempfile::TempDir,
}

impl Stack {
    async fn start(extra: &[&str]) -> Self {
        let broker = Mosquitto::start().await;
        let server = MqttLlm::start(&sim_up_args_with(&broker.url(), extra)).await;
        Self {
            broker,
            server,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// [`closed`] against this broker.
    fn closed(&self, sessions: u32, turns: u32, more: &[&str]) -> Vec<String> {
        closed(&self.broker.url(), sessions, turns, more)
    }

    /// [`bench_ok`] writing its report here.
    async fn bench_ok(&self, args: &[impl AsRef<OsStr>]) -> (String, Value) {
        bench_ok(self.dir.path(), args).await
    }
}

/// `--broker URL --sessions S --turns T` and then `more`: the arguments of a closed-loop run.
fn closed(url: &str, sessions: u32, turns: u32, more: &[&str]) -> Vec<String> {
    let (sessions, turns) = (sessions.to_string(), turns.to_string());
    let args = ["--broker", url, "--sessions", &sessions, "--turns", &turns];
    args.iter().chain(more).map(|a| a.to_string()).collect()
}

/// Run `bench ARGS --json DIR/out.json`: (exit code, stdout, stderr, report).
async fn bench(dir: &Path, args: &[impl AsRef<OsStr>]) -> (i32, String, String, Value) {
    let json = dir.join("out.json");
    let out = tokio::time::timeout(
        WAIT,
        tokio::process::Command::new(mqtt_llm_bin())
            .arg("bench")
            .args(args)
            .arg("--json")
            .arg(&json)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("bench did not finish")
    .unwrap();
    let report = std::fs::read_to_string(&json)
        .map(|t| serde_json::from_str(&t).unwrap())
        .unwrap_or(Value::Null);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        report,
    )
}

/// [`bench`] that must exit 0: (stdout, report).
async fn bench_ok(dir: &Path, args: &[impl AsRef<OsStr>]) -> (String, Value) {
    let (code, out, err, report) = bench(dir, args).await;
    assert_eq!(code, 0, "{out}\n{err}");
    (out, report)
}

/// Counts add up, percentiles are ordered, nothing broke the protocol.
fn check_phase(phase: &Value, requests: u64) {
    assert_eq!(phase["requests"], requests, "{phase}");
    let errors: u64 = phase["errors"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(phase["completed"].as_u64().unwrap() + errors, requests, "{phase}");
    assert_eq!(errors, 0, "{phase}");
    assert_eq!(phase["violations"], 0, "{phase}");
    for key in ["ttft_ms", "e2e_ms", "itl_ms"] {
        let p = &phase[key];
        let f = |k: &str| p[k].as_f64().unwrap();
        assert!(
            f("p50") <= f("p90") && f("p90") <= f("p99") && f("p99") <= f("max"),
            "{key}: {p}"
        );
    }
    assert!(phase["ttft_ms"]["p50"].as_f64().unwrap() > 0.0, "{phase}");
    assert!(phase["ttft_ms"]["p50"].as_f64().unwrap() <= phase["e2e_ms"]["p50"].as_f64().unwrap());
    assert!(phase["tokens_per_s"].as_f64().unwrap() > 0.0, "{phase}");
    assert!(phase["replies_per_s"].as_f64().unwrap() > 0.0, "{phase}");
}

#[tokio::test]
async fn closed_and_open_loops_report_consistent_figures() {
    let stack = Stack::start(&FAST).await;
    let svg = stack.dir.path().join("plot.svg");
    let closed = stack.closed(
        3,
        3,
        &["--max-tokens", "16", "--per-turn", "--plot", svg.to_str().unwrap()],
    );
    let (out, report) = stack.bench_ok(&closed).await;
    check_phase(&report["mqtt"], 9);
    assert_eq!(report["config"]["workload"]["mode"], "closed");
    assert!(report.get("direct").is_none());
    let turns = report["per_turn"].as_array().unwrap();
    assert_eq!(turns.len(), 3, "{report}");
    assert_eq!(turns[2]["turn"], 2);
    assert!(out.contains("ttft") && out.contains("tokens/s"), "{out}");
    assert!(std::fs::read_to_string(&svg).unwrap().starts_with("<svg"));

    let url = stack.broker.url();
    let open = [
        "--broker",
        &url,
        "--rate",
        "20",
        "--duration",
        "1s",
        "--max-tokens",
        "8",
    ];
    let (_, report) = stack.bench_ok(&open).await;
    assert_eq!(report["config"]["workload"]["mode"], "open");
    let requests = report["mqtt"]["requests"].as_u64().unwrap();
    assert!((15..=20).contains(&requests), "{requests}");
    check_phase(&report["mqtt"], requests);
}

#[tokio::test]
async fn compare_runs_both_phases_and_reports_the_overhead() {
    let sim = SimProcess::start("sim-model", &["--sim-itl-ms=1"]).await;
    let engine = format!("http://127.0.0.1:{}", sim.port.unwrap());
    let broker = Mosquitto::start().await;
    let args: Vec<String> = [
        "up",
        "--engine-url",
        &engine,
        "--broker",
        &broker.url(),
        "--http",
        "127.0.0.1:0",
        "--no-engine-log",
        "--stream-interval-ms",
        "0",
    ]
    .map(String::from)
    .to_vec();
    let _server = MqttLlm::start(&args).await;
    let dir = tempfile::tempdir().unwrap();
    let args = closed(&broker.url(), 2, 2, &["--max-tokens", "8", "--compare", &engine]);
    let (out, report) = bench_ok(dir.path(), &args).await;
    // Two rounds (A B A B) of 2x2 requests each.
    check_phase(&report["mqtt"], 8);
    check_phase(&report["direct"], 8);
    let overhead = &report["overhead"];
    for key in [
        "ttft_p50_ms",
        "ttft_p99_ms",
        "e2e_p50_ms",
        "e2e_p99_ms",
        "throughput_ratio",
    ] {
        assert!(overhead[key].is_number(), "{key}: {report}");
    }
    assert!(overhead["throughput_ratio"].as_f64().unwrap() > 0.0);
    assert!(out.contains("overhead:"), "{out}");
}

#[derive(Clone, Copy)]
enum Misbehaviour {
    AnswerTwice,
    ForeignRequestId,
}

/// A fake server: answers every request on `+/user_input` the wrong way.
async fn fake_server(port: u16, how: Misbehaviour, tasks: &mut JoinSet<()>) {
    let mut opts = MqttOptions::new(format!("fake-{:08x}", rand::random::<u32>()), "127.0.0.1", port);
    opts.set_keep_alive(Duration::from_secs(30));
    let (client, mut eventloop) = AsyncClient::new(opts, 64);
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let mut ready_tx = Some(ready_tx);
    client.subscribe("+/user_input", QoS::AtLeastOnce).await.unwrap();
    tasks.spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    if let Some(tx) = ready_tx.take() {
                        let _ = tx.send(());
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let req: Value = serde_json::from_slice(&p.payload).unwrap();
                    let reply = req["replyTopic"].as_str().unwrap().to_owned();
                    let first = match how {
                        Misbehaviour::AnswerTwice => reply.clone(),
                        Misbehaviour::ForeignRequestId => format!("{}-other", reply),
                    };
                    // try_publish: the event-loop task never awaits a publish.
                    client.try_publish(first, QoS::AtLeastOnce, false, "one").unwrap();
                    client.try_publish(reply, QoS::AtLeastOnce, false, "two").unwrap();
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    });
    tokio::time::timeout(WAIT, ready_rx).await.unwrap().unwrap();
}

#[tokio::test]
async fn protocol_violations_are_reported_and_fail_the_run() {
    for how in [Misbehaviour::AnswerTwice, Misbehaviour::ForeignRequestId] {
        let broker = Mosquitto::start().await;
        let mut tasks = JoinSet::new();
        fake_server(broker.port, how, &mut tasks).await;
        let dir = tempfile::tempdir().unwrap();
        let args = closed(&broker.url(), 1, 2, &["--no-stream", "--timeout", "5s"]);
        let (code, out, err, report) = bench(dir.path(), &args).await;
        assert_eq!(code, 1, "{out}\n{err}");
        assert!(report["mqtt"]["violations"].as_u64().unwrap() >= 1, "{report}");
        assert!(err.contains("protocol violation"), "{err}");
    }
}

#[tokio::test]
async fn direct_alone_runs_no_mqtt_phase() {
    let sim = SimProcess::start("sim-model", &["--sim-itl-ms=1"]).await;
    let engine = format!("http://127.0.0.1:{}", sim.port.unwrap());
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens on this broker (port 1 is privileged): a bench that tried MQTT would fail.
    let args = closed("mqtt://127.0.0.1:1", 2, 2, &["--direct", &engine, "--max-tokens", "8"]);
    let (out, report) = bench_ok(dir.path(), &args).await;
    check_phase(&report["direct"], 4);
    assert!(report["direct"]["prompt_tokens"].as_u64().unwrap() > 0, "{report}");
    assert_eq!(report["config"]["direct"], engine.as_str());
    for absent in ["mqtt", "overhead", "isolation"] {
        assert!(report.get(absent).is_none(), "{absent}: {report}");
    }
    assert!(out.contains("direct:") && !out.contains("mqtt:"), "{out}");
}

#[tokio::test]
async fn projects_spread_conversations_over_every_project() {
    let stack = Stack::start(&[&FAST[..], &["--projects", "a,b"]].concat()).await;
    let (_, report) = stack
        .bench_ok(&stack.closed(4, 2, &["--projects", "a,b", "--max-tokens", "8"]))
        .await;
    check_phase(&report["mqtt"], 8);
    assert_eq!(report["config"]["projects"], serde_json::json!(["a", "b"]));
    // Conversations alternate between the projects: two of four conversations, four requests, on each.
    for project in ["a", "b"] {
        let received = stack
            .server
            .metric(&format!("mqtt_llm_requests_received_total{{project=\"{project}\"}}"))
            .await;
        assert_eq!(received, 4.0, "project {project}");
    }
}

#[tokio::test]
async fn system_prompt_tokens_reach_the_engine() {
    const SYSTEM: u64 = 300;
    let stack = Stack::start(&FAST).await;
    let (_, plain) = stack.bench_ok(&stack.closed(2, 1, &["--max-tokens", "8"])).await;
    check_phase(&plain["mqtt"], 2);
    let system = SYSTEM.to_string();
    let args = stack.closed(2, 1, &["--max-tokens", "8", "--system-prompt-tokens", &system]);
    let (_, with_system) = stack.bench_ok(&args).await;
    check_phase(&with_system["mqtt"], 2);
    assert_eq!(with_system["config"]["system_prompt_tokens"], SYSTEM);
    // Same prompts but for the system prompt, which replaces the project's short default: the engine counts
    // about SYSTEM more prompt tokens per request.
    let tokens = |r: &Value| r["mqtt"]["prompt_tokens"].as_u64().unwrap() / 2;
    let (without, with) = (tokens(&plain), tokens(&with_system));
    assert!(
        with >= without + SYSTEM - 40 && with <= without + SYSTEM,
        "prompt tokens per request: {without} without, {with} with a {SYSTEM}-word system prompt"
    );
}

#[tokio::test]
async fn flood_mode_measures_idle_and_flooded_phases() {
    // Some decode time and a short session queue, so the flooded session's lane fills at once.
    let slow = [
        "--engine-arg=--sim-itl-ms=5",
        "--stream-interval-ms",
        "0",
        "--session-queue",
        "2",
    ];
    let stack = Stack::start(&slow).await;
    let svg = stack.dir.path().join("plot.svg");
    let flood = [
        "--max-tokens",
        "16",
        "--flood-rate",
        "200",
        "--flood-max-tokens",
        "4",
        "--rounds",
        "2",
    ];
    let args = stack.closed(3, 2, &[&flood[..], &["--plot", svg.to_str().unwrap()]].concat());
    let (out, report) = stack.bench_ok(&args).await;
    assert!(report.get("mqtt").is_none(), "{report}");
    let isolation = &report["isolation"];
    // Two rounds (idle flooded idle flooded) of 3x2 requests each; no measured request failed.
    check_phase(&isolation["idle"], 12);
    check_phase(&isolation["flooded"], 12);
    assert_eq!(isolation["flood_rate"], 200.0);
    let flood = &isolation["flood"];
    let sent = flood["sent"].as_u64().unwrap();
    let outcomes = flood["outcomes"].as_object().unwrap();
    assert!(sent > 0, "{flood}");
    assert_eq!(
        outcomes.values().map(|v| v.as_u64().unwrap()).sum::<u64>(),
        sent,
        "{flood}"
    );
    assert!(outcomes["session_queue_full"].as_u64().unwrap() > 0, "{flood}");
    assert!(outcomes["ok"].as_u64().unwrap() > 0, "{flood}");
    assert_eq!(flood["violations"], 0, "{flood}");
    for key in ["ttft_p50_ms", "ttft_p99_ms", "e2e_p50_ms", "e2e_p99_ms"] {
        assert!(isolation["added"][key].is_number(), "{key}: {isolation}");
    }
    assert!(out.contains("flooded:") && out.contains("session_queue_full="), "{out}");
    let plot = std::fs::read_to_string(&svg).unwrap();
    assert!(plot.contains("idle TTFT") && plot.contains("flooded TTFT"), "{plot}");

    // Flood mode measures MQTT only, at a real rate.
    for wrong in [
        vec!["--flood-rate", "0"],
        vec!["--flood-rate", "50", "--direct", "http://127.0.0.1:1"],
        vec!["--flood-rate", "50", "--compare", "http://127.0.0.1:1"],
        vec!["--flood-max-tokens", "4"],
    ] {
        let (code, _, err, _) = bench(stack.dir.path(), &wrong).await;
        assert_eq!(code, 2, "{wrong:?} was accepted: {err}");
    }
}
