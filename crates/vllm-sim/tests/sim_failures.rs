//! How the `vllm-sim` binary fails, against `vllm-contract.md` §7: its process tree (API server +
//! EngineCore child in one process group), engine death at runtime, a hung engine, start-up
//! failures with vLLM's error lines, the start-up phases, and signals. Every wait is on output,
//! on an HTTP answer or on `/proc` state; the only timed waits are bounded observation windows
//! for things that must *not* happen (a token from a hung engine, an orphan dying).

#[path = "support/sim.rs"]
mod sim_support;

use std::os::unix::process::ExitStatusExt as _;
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use serde_json::{Value, json};
use sim_support::{Output, SimProcess, WAIT, alive, client, proc_stat, sample, wait_dead};

const MODEL: &str = "Qwen/Qwen3-0.6B";
/// How long a hung engine is watched for a token that must not come.
const SILENCE: Duration = Duration::from_millis(500);
/// vLLM's in-stream error for a dead engine.
const ENGINE_DEAD_EVENT: &str = r#"{"error":{"message":"The server had an error while processing your request.","type":"InternalServerError","param":null,"code":500}}"#;

fn chat(stream: bool, max_tokens: u32) -> Value {
    json!({
        "model": "qwen3",
        "messages": [{"role": "user", "content": "Tell me a long story"}],
        "stream": stream,
        "max_tokens": max_tokens,
    })
}

/// A ready simulator serving `qwen3` with 1000-token replies, a token every `itl_ms`, and `extra`.
async fn start_long_replies(itl_ms: &str, extra: &[&str]) -> SimProcess {
    let mut args = vec![
        "--served-model-name",
        "qwen3",
        "--sim-itl-ms",
        itl_ms,
        "--sim-reply-tokens",
        "1000",
    ];
    args.extend_from_slice(extra);
    SimProcess::start(MODEL, &args).await
}

async fn post(sim: &SimProcess, body: &Value) -> reqwest::Response {
    sim.post("/v1/chat/completions", body).await
}

/// The `data:` payloads of a (possibly partial) SSE text.
fn events(text: &str) -> Vec<&str> {
    text.split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| e.strip_prefix("data: ").unwrap_or(e))
        .collect()
}

/// Reads an SSE body chunk by chunk.
struct Sse {
    body: futures_util::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    text: String,
}

impl Sse {
    fn new(resp: reqwest::Response) -> Self {
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["content-type"], "text/event-stream; charset=utf-8");
        Self {
            body: resp.bytes_stream().boxed(),
            text: String::new(),
        }
    }

    /// Read until at least `n` events arrived.
    async fn until_events(&mut self, n: usize) {
        while events(&self.text).len() < n || !self.text.ends_with("\n\n") {
            let chunk = tokio::time::timeout(WAIT, self.body.next())
                .await
                .expect("an SSE chunk in time")
                .expect("the stream goes on")
                .expect("bytes");
            self.text.push_str(&String::from_utf8_lossy(&chunk));
        }
    }

    /// Whether anything arrives within `window`.
    async fn quiet_for(&mut self, window: Duration) -> bool {
        tokio::time::timeout(window, self.body.next()).await.is_err()
    }

    /// Read to the end (the connection's end counts, a transport error too).
    async fn rest(&mut self) -> &str {
        let end = tokio::time::timeout(WAIT, async {
            while let Some(Ok(chunk)) = self.body.next().await {
                self.text.push_str(&String::from_utf8_lossy(&chunk));
            }
        })
        .await;
        assert!(end.is_ok(), "the stream ends in time: {}", self.text);
        &self.text
    }
}

/// `/health` of an engine that died: 503 until the server stops listening, then refused.
async fn assert_health_dead(sim: &SimProcess) {
    match client().get(sim.url("/health")).send().await {
        Ok(resp) => assert_eq!(resp.status(), 503),
        Err(err) => assert!(err.is_connect() || err.is_request(), "{err:?}"),
    }
}

fn stderr_text(sim: &SimProcess) -> String {
    sim.seen
        .iter()
        .filter(|l| l.output == Output::Stderr)
        .map(|l| format!("{}\n", l.text))
        .collect()
}

fn last_stderr_line(sim: &SimProcess) -> &str {
    sim.seen
        .iter()
        .rev()
        .find(|l| l.output == Output::Stderr)
        .map_or("", |l| l.text.as_str())
}

#[tokio::test]
async fn the_engine_core_is_a_child_in_the_same_process_group_and_dies_with_sigterm() {
    let mut sim = SimProcess::start(MODEL, &[]).await;
    let core = sim.engine_core().await;
    let children = sim.children();
    assert_eq!(children.len(), 1, "exactly one child, the EngineCore: {children:?}");
    let me = proc_stat(sim.pid()).expect("the simulator");
    assert_eq!(core.pgrp, me.pgrp, "no setsid/setpgid: the EngineCore shares the group");
    assert_eq!(core.pgrp, sim.pgid);
    assert!(
        sim.saw(&format!("(EngineCore pid={}) INFO", core.pid)),
        "engine-core lines carry the child's pid: {:#?}",
        sim.seen
    );
    assert!(!sim.saw(&format!("(EngineCore pid={})", sim.pid())));

    let status = sim.terminate().await;
    assert_eq!(status.code(), Some(0));
    assert!(sim.saw(&format!(
        "[shutdown] Process manager: force killing remaining process EngineCore pid {}",
        core.pid
    )));
    assert!(!alive(core.pid), "the EngineCore is gone with its API server");
    assert!(!alive(sim.pid()));
}

#[tokio::test]
async fn a_group_wide_sigterm_is_a_clean_shutdown() {
    // What a supervisor that owns the group does: SIGTERM reaches the EngineCore at the same time.
    let mut sim = SimProcess::start(MODEL, &[]).await;
    let core = sim.engine_core().await;
    killpg(Pid::from_raw(sim.pgid), Signal::SIGTERM).expect("SIGTERM the group");
    assert_eq!(sim.wait_exit().await.code(), Some(0));
    assert!(!sim.saw("died unexpectedly"), "{:#?}", sim.seen);
    assert!(!alive(core.pid));

    let mut starting = SimProcess::spawn(&["serve", MODEL, "--port", "0", "--sim-startup-ms", "60000"]);
    starting.wait_line(|l| l.text.contains("Starting to load model")).await;
    starting.engine_core().await;
    killpg(Pid::from_raw(starting.pgid), Signal::SIGTERM).expect("SIGTERM the group");
    assert_eq!(starting.wait_exit().await.code(), Some(130), "{:#?}", starting.seen);
}

#[tokio::test]
async fn a_sigkilled_api_server_leaves_its_engine_core_behind() {
    let mut sim = SimProcess::start(MODEL, &[]).await;
    let core = sim.engine_core().await;
    sim.signal(Signal::SIGKILL);
    let status = sim.wait_status().await;
    assert_eq!(status.signal(), Some(9));
    // No parent-death watchdog: the orphan lives on, still in the group, until the group is killed.
    let watched = Instant::now();
    while watched.elapsed() < SILENCE {
        let orphan = proc_stat(core.pid).expect("the EngineCore still exists");
        assert!(alive(core.pid), "the orphaned EngineCore must not exit: {orphan:?}");
        assert_ne!(orphan.ppid, sim.pid(), "reparented");
        assert_eq!(orphan.pgrp, sim.pgid, "still in the simulator's process group");
        tokio::time::sleep(sim_support::POLL).await;
    }
    killpg(Pid::from_raw(sim.pgid), Signal::SIGKILL).expect("kill the group");
    wait_dead(core.pid).await;
}

#[tokio::test]
async fn an_orphaned_engine_core_exits_after_its_max_lifetime() {
    let mut sim = SimProcess::start(MODEL, &["--sim-engine-core-max-lifetime-s", "1"]).await;
    let core = sim.engine_core().await;
    assert!(sim.saw("'sim_engine_core_max_lifetime_s': 1"));
    sim.signal(Signal::SIGKILL);
    sim.wait_status().await;
    assert!(alive(core.pid));
    wait_dead(core.pid).await;
    let line = sim
        .wait_line(|l| l.text.contains("exiting after --sim-engine-core-max-lifetime-s=1"))
        .await;
    assert!(line.text.starts_with(&format!("(EngineCore pid={}) WARNING", core.pid)));
}

#[tokio::test]
async fn crash_after_n_requests_kills_the_stream_health_and_process() {
    let mut sim = start_long_replies("20", &["--sim-crash-after-requests", "2"]).await;
    let core = sim.engine_core().await;
    let first: Value = post(&sim, &chat(false, 3)).await.json().await.expect("json");
    assert_eq!(first["usage"]["completion_tokens"], 3, "request 1 is served normally");

    let mut second = Sse::new(post(&sim, &chat(true, 500)).await);
    second.until_events(2).await;
    let text = second.rest().await.to_owned();
    let died = Instant::now();
    let ev = events(&text);
    assert!(ev[0].contains(r#""delta":{"role":"assistant","content":""}"#), "{text}");
    assert!(ev[1].contains(r#""delta":{"content":"#), "the first token came: {text}");
    assert_eq!(ev[ev.len() - 2..], [ENGINE_DEAD_EVENT, "[DONE]"], "{text}");
    assert_eq!(ev.len(), 4, "role, one token, the error, [DONE]: {text}");

    assert_health_dead(&sim).await;
    let status = sim.wait_exit().await;
    let took = died.elapsed();
    assert_eq!(status.code(), Some(1));
    assert!(took < Duration::from_secs(3), "exits shortly after the death: {took:?}");
    assert!(!alive(core.pid), "the EngineCore is gone");
    let fatal = format!("(EngineCore pid={}) ERROR", core.pid);
    assert!(
        sim.seen
            .iter()
            .any(|l| l.text.starts_with(&fatal) && l.text.ends_with("EngineCore encountered a fatal error."))
    );
    assert!(sim.saw("AsyncLLM output_handler failed."));
    assert!(sim.saw(
        "vllm.v1.engine.exceptions.EngineDeadError: EngineCore encountered an issue. See stack trace (above) for the root cause."
    ));
    assert!(sim.saw("Error in chat completion stream generator."));
    assert!(
        !sim.saw("died unexpectedly"),
        "a logged fatal error, not a silent death"
    );
    assert!(sim.saw("INFO:     Shutting down"));
}

#[tokio::test]
async fn an_engine_core_killed_at_runtime_is_an_engine_death() {
    let mut sim = start_long_replies("20", &[]).await;
    let core = sim.engine_core().await;
    let mut stream = Sse::new(post(&sim, &chat(true, 500)).await);
    stream.until_events(2).await;
    kill(Pid::from_raw(core.pid), Signal::SIGKILL).expect("kill the EngineCore");
    let text = stream.rest().await.to_owned();
    assert!(
        text.ends_with(&format!("data: {ENGINE_DEAD_EVENT}\n\ndata: [DONE]\n\n")),
        "{text}"
    );
    // New requests are refused with vLLM's engine-dead error (or the server is already gone).
    if let Ok(resp) = client()
        .post(sim.url("/v1/chat/completions"))
        .json(&chat(false, 3))
        .send()
        .await
    {
        assert_eq!(resp.status(), 500);
        let body = resp.text().await.expect("body");
        assert_eq!(body, ENGINE_DEAD_EVENT);
    }
    assert_health_dead(&sim).await;
    assert_eq!(sim.wait_exit().await.code(), Some(1));
    assert!(sim.saw("Engine core proc EngineCore died unexpectedly, shutting down client."));
    assert!(sim.saw("AsyncLLM output_handler failed."));
}

#[tokio::test]
async fn hang_after_n_requests_stops_tokens_but_not_health() {
    let mut sim = start_long_replies("10", &["--sim-hang-after-requests", "1"]).await;
    let core = sim.engine_core().await;
    let mut first = Sse::new(post(&sim, &chat(true, 500)).await);
    first.until_events(2).await;
    assert!(first.quiet_for(SILENCE).await, "request 1 gets no token after the hang");
    let mut second = Sse::new(post(&sim, &chat(true, 5)).await);
    assert!(
        second.quiet_for(SILENCE).await,
        "request 2 gets its headers and no token"
    );

    assert_eq!(sim.get("/health").await.status(), 200);
    let before = sim.metrics().await;
    let after = sim.metrics().await;
    let tokens = r#"vllm:generation_tokens_total{engine="0",model_name="qwen3"}"#;
    assert_eq!(sample(&before, tokens), 1.0, "the first token, then nothing");
    assert_eq!(sample(&after, tokens), sample(&before, tokens), "no progress");
    let running = r#"vllm:num_requests_running{engine="0",model_name="qwen3"}"#;
    assert!(sample(&after, running) >= 1.0, "still running: {after}");

    let status = sim.terminate().await;
    assert_eq!(status.code(), Some(0), "SIGTERM still stops a hung server");
    assert!(!alive(core.pid));
    assert!(!first.rest().await.contains("[DONE]"), "cut off, not finished");
}

#[tokio::test]
async fn fail_start_oom_reports_the_engine_core_failure() {
    let mut sim = SimProcess::spawn(&["serve", MODEL, "--port", "0", "--sim-fail-start", "oom"]);
    let status = sim.wait_exit().await;
    assert_eq!(status.code(), Some(1));
    let failed = sim
        .seen
        .iter()
        .find(|l| l.text.ends_with("EngineCore failed to start."))
        .unwrap_or_else(|| panic!("{:#?}", sim.seen));
    assert_eq!(failed.output, Output::Stdout);
    let pid: i32 = failed
        .text
        .strip_prefix("(EngineCore pid=")
        .and_then(|r| r.split(')').next())
        .and_then(|p| p.parse().ok())
        .expect("an EngineCore prefix");
    assert_ne!(pid, sim.pid(), "logged by the EngineCore child");
    assert!(!alive(pid));
    assert!(sim.saw("Model loading took"), "it failed after the weights loaded");
    assert!(!sim.saw("GPU KV cache size"), "and before the KV cache was sized");
    assert!(sim.saw("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.32 GiB."));
    let stderr = stderr_text(&sim);
    assert!(stderr.contains("\nTraceback (most recent call last):\n"), "{stderr}");
    assert_eq!(
        last_stderr_line(&sim),
        "RuntimeError: Engine core initialization failed. See root cause above. Failed core proc(s): {'EngineCore': 1}"
    );
    assert!(!sim.saw("Starting vLLM server on"));
}

#[tokio::test]
async fn fail_start_model_not_found_reports_the_value_error() {
    let not_found = [
        "serve",
        "no-such/model",
        "--port",
        "0",
        "--sim-fail-start",
        "model-not-found",
    ];
    let mut sim = SimProcess::spawn(&not_found);
    assert_eq!(sim.wait_exit().await.code(), Some(1));
    let stderr = stderr_text(&sim);
    assert!(stderr.starts_with("Traceback (most recent call last):\n"), "{stderr}");
    assert!(stderr.contains("huggingface_hub.errors.RepositoryNotFoundError: 401 Client Error."));
    assert!(stderr.contains("\nValueError: Invalid repository ID or local directory specified: 'no-such/model'.\n"));
    assert!(stderr.contains("\nThe above exception was the direct cause of the following exception:\n"));
    assert!(sim.saw("non-default args:"), "the banner comes first");
    assert!(
        !sim.saw("(EngineCore pid="),
        "the config fails before any EngineCore exists"
    );

    let mut offline = SimProcess::spawn_with_env(&not_found, &[("HF_HUB_OFFLINE", "1")]);
    assert_eq!(offline.wait_exit().await.code(), Some(1));
    assert!(offline.saw("OSError: We couldn't connect to 'https://huggingface.co' to load the files"));
    assert!(offline.saw("ValueError: Invalid repository ID or local directory specified: 'no-such/model'."));
}

#[tokio::test]
async fn a_taken_port_fails_like_fail_start_port_in_use() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port().to_string();
    let mut real = SimProcess::spawn(&["serve", MODEL, "--host", "127.0.0.1", "--port", &port]);
    assert_eq!(real.wait_exit().await.code(), Some(1));
    assert_eq!(last_stderr_line(&real), "OSError: [Errno 98] Address already in use");
    assert!(stderr_text(&real).starts_with("Traceback (most recent call last):\n"));
    assert!(real.saw("    sock.bind(addr)"));
    assert!(!real.saw("(EngineCore pid="), "fails at bind, before the engine");

    let mut simulated = SimProcess::spawn(&["serve", MODEL, "--port", "0", "--sim-fail-start", "port-in-use"]);
    assert_eq!(simulated.wait_exit().await.code(), Some(1));
    assert_eq!(stderr_text(&simulated), stderr_text(&real), "the same lines");
    drop(taken);
}

#[tokio::test]
async fn start_up_phases_are_logged_in_order() {
    let mut sim = SimProcess::spawn(&["serve", MODEL, "--port", "0", "--sim-startup-ms", "400"]);
    sim.wait_ready().await;
    let phases = [
        "vLLM server version 0.33.0, serving model Qwen/Qwen3-0.6B",
        "non-default args: {",
        "Initializing a V1 LLM engine (v0.33.0)",
        "Starting to load model Qwen/Qwen3-0.6B...",
        "Loading weights took ",
        "Model loading took 1.1164 GiB memory and ",
        "Dynamo bytecode transform time: ",
        "torch.compile takes ",
        "Available KV cache memory: 7.00 GiB",
        "GPU KV cache size: 65,536 tokens",
        "Maximum concurrency for 4,096 tokens per request: 16.00x",
        "Graph capturing finished in ",
        "init engine (profile, create kv cache, warmup model) took ",
        "Supported tasks: ['generate']",
        "Starting vLLM server on http://0.0.0.0:",
        "Available routes are:",
        "Route: /v1/chat/completions, Methods: POST",
    ];
    let stdout: Vec<&str> = sim
        .seen
        .iter()
        .filter(|l| l.output == Output::Stdout)
        .map(|l| l.text.as_str())
        .collect();
    let mut last = 0;
    for phase in phases {
        let at = stdout
            .iter()
            .position(|l| l.contains(phase))
            .unwrap_or_else(|| panic!("no {phase:?} in {stdout:#?}"));
        assert!(at >= last, "{phase:?} out of order in {stdout:#?}");
        last = at;
    }
    assert!(sim.saw("INFO:     Application startup complete."));
    // --sim-startup-ms is spread over the phases.
    let seconds = |needle: &str| -> f64 {
        let line = stdout.iter().find(|l| l.contains(needle)).expect("phase line");
        line.split(needle)
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no number in {line}"))
    };
    let weights = seconds("Loading weights took ");
    let init = seconds("init engine (profile, create kv cache, warmup model) took ");
    assert!((0.1..0.4).contains(&weights), "weights {weights}");
    assert!(init >= 0.4 && init > weights, "init {init}");
    // Every engine line comes from the EngineCore child.
    let core = sim.engine_core().await;
    for line in stdout.iter().filter(|l| l.starts_with("(EngineCore")) {
        assert!(
            line.starts_with(&format!("(EngineCore pid={}) INFO ", core.pid)),
            "{line}"
        );
    }
    assert_eq!(sim.terminate().await.code(), Some(0));

    let mut eager = SimProcess::start(MODEL, &["--enforce-eager"]).await;
    assert!(eager.saw("GPU KV cache size"));
    assert!(!eager.saw("torch.compile takes") && !eager.saw("Graph capturing finished"));
    assert_eq!(eager.terminate().await.code(), Some(0));
}

#[tokio::test]
async fn sigterm_during_start_up_stops_promptly_with_the_engine_core() {
    let mut sim = SimProcess::spawn(&["serve", MODEL, "--port", "0", "--sim-startup-ms", "60000"]);
    sim.wait_line(|l| l.text.contains("Starting to load model")).await;
    let core = sim.engine_core().await;
    let signalled = Instant::now();
    sim.signal(Signal::SIGTERM);
    let status = sim.wait_exit().await;
    let took = signalled.elapsed();
    assert!(took < Duration::from_secs(3), "prompt: {took:?}");
    assert_eq!(status.code(), Some(130), "KeyboardInterrupt, shell status 130");
    assert!(!alive(core.pid), "the EngineCore went with it");
    assert_eq!(last_stderr_line(&sim), "KeyboardInterrupt: terminated");
    assert!(!sim.saw("Starting vLLM server on"));
}
