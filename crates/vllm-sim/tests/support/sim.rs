//! Spawn the real `vllm-sim` binary for black-box tests: port 0, the real port read from the
//! `Starting vLLM server on http://HOST:PORT` line, readiness from uvicorn's
//! `Application startup complete.` line, never a sleep.
//!
//! The simulator leads its own process group, like under a supervisor; dropping a
//! [`SimProcess`] SIGKILLs the whole group, so its EngineCore child (which, like vLLM's, outlives a
//! killed API server) never outlives the test.
//!
//! Use from another test crate with `#[path = "support/sim.rs"] mod sim_support;`.
#![allow(dead_code)]

use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

/// The `vllm-sim` binary: Cargo's own path inside this crate's tests; elsewhere in the workspace
/// (`VLLM_SIM_BIN`, else) the `vllm-sim` beside the test's `target/<profile>/deps/` directory, which
/// `cargo test --workspace` (the README's test command) builds before any test runs.
pub fn bin() -> std::path::PathBuf {
    if let Some(path) = option_env!("CARGO_BIN_EXE_vllm-sim") {
        return path.into();
    }
    if let Some(path) = std::env::var_os("VLLM_SIM_BIN") {
        return path.into();
    }
    let exe = std::env::current_exe().expect("the test's own path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps/TEST");
    let path = profile_dir.join("vllm-sim");
    assert!(
        path.is_file(),
        "{} is missing: build the simulator first (`cargo build -p vllm-sim`), or run `cargo test --workspace`",
        path.display()
    );
    path
}

/// How long any single wait in these helpers may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(30);

/// Which output a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    Stdout,
    Stderr,
}

/// One line of the simulator's output.
#[derive(Debug, Clone)]
pub struct Line {
    pub output: Output,
    pub text: String,
    /// When the test read it.
    pub at: Instant,
}

/// A running `vllm-sim` child process.
#[derive(Debug)]
pub struct SimProcess {
    pub child: Child,
    /// The port from the `Starting vLLM server on` line, once seen.
    pub port: Option<u16>,
    /// Every line read so far, in arrival order.
    pub seen: Vec<Line>,
    /// The process group the simulator leads (its pid).
    pub pgid: i32,
    lines: mpsc::UnboundedReceiver<Line>,
    _readers: JoinSet<()>,
}

impl Drop for SimProcess {
    fn drop(&mut self) {
        // The API server and whatever it left behind (the EngineCore).
        let _ = killpg(Pid::from_raw(self.pgid), Signal::SIGKILL);
    }
}

impl SimProcess {
    /// Spawn `vllm-sim ARGS...` without waiting for anything.
    pub fn spawn(args: &[&str]) -> Self {
        Self::spawn_with_env(args, &[])
    }

    /// [`Self::spawn`] with extra environment variables.
    pub fn spawn_with_env(args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut child = Command::new(bin())
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .expect("spawn vllm-sim");
        let pgid = child.id().and_then(|id| i32::try_from(id).ok()).expect("pid");
        let (tx, lines) = mpsc::unbounded_channel();
        let mut readers = JoinSet::new();
        if let Some(stdout) = child.stdout.take() {
            readers.spawn(forward(BufReader::new(stdout), Output::Stdout, tx.clone()));
        }
        if let Some(stderr) = child.stderr.take() {
            readers.spawn(forward(BufReader::new(stderr), Output::Stderr, tx));
        }
        Self {
            child,
            port: None,
            seen: Vec::new(),
            pgid,
            lines,
            _readers: readers,
        }
    }

    /// `vllm-sim serve MODEL --port 0 EXTRA...`, ready to serve.
    pub async fn start(model: &str, extra: &[&str]) -> Self {
        let mut args = vec!["serve", model, "--port", "0"];
        args.extend_from_slice(extra);
        let mut sim = Self::spawn(&args);
        sim.wait_ready().await;
        sim
    }

    /// Wait for the port line and for uvicorn's start-up line.
    pub async fn wait_ready(&mut self) {
        let line = self
            .wait_line(|l| l.text.contains("Starting vLLM server on http://"))
            .await;
        let port = line
            .text
            .rsplit(':')
            .next()
            .and_then(|p| p.trim().parse().ok())
            .expect("port in the Starting line");
        self.port = Some(port);
        // stdout and stderr are separate pipes: the stderr line may have been read before the stdout one.
        let started = |l: &Line| l.output == Output::Stderr && l.text.contains("Application startup complete.");
        if !self.seen.iter().any(started) {
            self.wait_line(started).await;
        }
    }

    /// The next line (after those already seen) that matches; panics after [`WAIT`].
    pub async fn wait_line(&mut self, mut pred: impl FnMut(&Line) -> bool) -> Line {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let line = tokio::time::timeout_at(deadline, self.lines.recv())
                .await
                .unwrap_or_else(|_| panic!("no matching line within {WAIT:?}; seen: {:#?}", self.seen))
                .unwrap_or_else(|| panic!("vllm-sim closed its output; seen: {:#?}", self.seen));
            self.seen.push(line.clone());
            if pred(&line) {
                return line;
            }
        }
    }

    /// Whether any line seen so far contains `needle`.
    pub fn saw(&self, needle: &str) -> bool {
        self.seen.iter().any(|l| l.text.contains(needle))
    }

    /// `http://127.0.0.1:PORT/PATH`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port.expect("server started"))
    }

    /// `GET PATH`.
    pub async fn get(&self, path: &str) -> reqwest::Response {
        client().get(self.url(path)).send().await.expect("GET")
    }

    /// `POST PATH` with a JSON body.
    pub async fn post(&self, path: &str, body: &serde_json::Value) -> reqwest::Response {
        client().post(self.url(path)).json(body).send().await.expect("POST")
    }

    /// The body of `GET /metrics` (the Prometheus exposition).
    pub async fn metrics(&self) -> String {
        self.get("/metrics").await.text().await.expect("metrics body")
    }

    /// Poll `/metrics` (each poll an HTTP answer) until the sample of `series` satisfies `pred`;
    /// the exposition where it did. Panics after [`WAIT`].
    pub async fn wait_for_metric(&self, series: &str, pred: impl Fn(f64) -> bool) -> String {
        let reached = tokio::time::timeout(WAIT, async {
            loop {
                let text = self.metrics().await;
                if pred(sample(&text, series)) {
                    return text;
                }
            }
        })
        .await;
        reached.unwrap_or_else(|_| panic!("{series} did not reach the expected value within {WAIT:?}"))
    }

    /// The simulator's pid (also its process group).
    pub fn pid(&self) -> i32 {
        self.pgid
    }

    /// Send SIGTERM and wait for the exit, reading the remaining output.
    pub async fn terminate(&mut self) -> ExitStatus {
        self.signal(Signal::SIGTERM);
        self.wait_exit().await
    }

    /// Send `signal` to the simulator (the API server process only).
    pub fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.pgid), signal).expect("signal vllm-sim");
    }

    /// Wait for the process to exit without reading the rest of its output (which stays open
    /// while an orphaned EngineCore holds the pipes).
    pub async fn wait_status(&mut self) -> ExitStatus {
        tokio::time::timeout(WAIT, self.child.wait())
            .await
            .expect("vllm-sim exits in time")
            .expect("wait")
    }

    /// The simulator's child processes (its EngineCore), from `/proc`.
    pub fn children(&self) -> Vec<ProcStat> {
        proc_stats().into_iter().filter(|p| p.ppid == self.pgid).collect()
    }

    /// The EngineCore child, waiting for it to appear (it is spawned right after the bind).
    pub async fn engine_core(&self) -> ProcStat {
        let found = tokio::time::timeout(WAIT, async {
            loop {
                if let Some(core) = self.children().into_iter().next() {
                    return core;
                }
                tokio::time::sleep(POLL).await;
            }
        })
        .await;
        found.unwrap_or_else(|_| panic!("no EngineCore child of {} within {WAIT:?}", self.pgid))
    }

    /// Wait for the process to exit (after [`WAIT`] the test fails), collecting its output.
    pub async fn wait_exit(&mut self) -> ExitStatus {
        let status = tokio::time::timeout(WAIT, self.child.wait())
            .await
            .expect("vllm-sim exits in time")
            .expect("wait");
        let drained = tokio::time::timeout(WAIT, async {
            while let Some(line) = self.lines.recv().await {
                self.seen.push(line);
            }
        })
        .await;
        assert!(
            drained.is_ok(),
            "vllm-sim exited ({status}) but its output stayed open (an orphaned EngineCore?)"
        );
        status
    }
}

async fn forward<R>(reader: BufReader<R>, output: Output, tx: mpsc::UnboundedSender<Line>)
where
    R: tokio::io::AsyncRead + Unpin,
{
    let mut lines = reader.lines();
    while let Ok(Some(text)) = lines.next_line().await {
        let at = Instant::now();
        if tx.send(Line { output, text, at }).is_err() {
            return;
        }
    }
}

/// How often `/proc` is polled while waiting for a process state.
pub const POLL: Duration = Duration::from_millis(10);

/// One line of `/proc/PID/stat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    pub pid: i32,
    pub ppid: i32,
    pub pgrp: i32,
    /// `R`, `S`, `Z` (zombie), ...
    pub state: char,
}

/// `/proc/PID/stat` of one process, if it exists.
pub fn proc_stat(pid: i32) -> Option<ProcStat> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) state ppid pgrp ...`; comm may contain spaces and parentheses.
    let rest = stat.rsplit_once(')')?.1;
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some(ProcStat { pid, ppid, pgrp, state })
}

/// Every process in `/proc`.
pub fn proc_stats() -> Vec<ProcStat> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(proc_stat)
        .collect()
}

/// Whether `pid` is a live process (a zombie is dead, just not reaped yet).
pub fn alive(pid: i32) -> bool {
    proc_stat(pid).is_some_and(|p| p.state != 'Z' && p.state != 'X')
}

/// Wait (polling `/proc`) until `pid` is dead or reaped; panics after [`WAIT`].
pub async fn wait_dead(pid: i32) {
    let dead = tokio::time::timeout(WAIT, async {
        while alive(pid) {
            tokio::time::sleep(POLL).await;
        }
    })
    .await;
    assert!(dead.is_ok(), "process {pid} still alive after {WAIT:?}");
}

/// The value of the sample line `SERIES VALUE` in a Prometheus exposition; panics if absent.
pub fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no sample {series} in\n{text}"))
}

/// Install ring as rustls's process-wide provider (reqwest is built without one), once.
pub fn ensure_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // An error means another provider was installed first, which is fine here.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// A plain HTTP client (the rustls provider installed first).
pub fn client() -> reqwest::Client {
    ensure_crypto_provider();
    reqwest::Client::builder()
        .timeout(WAIT)
        .build()
        .expect("reqwest client")
}
