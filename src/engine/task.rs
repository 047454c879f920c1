//! The engine actor.
//!
//! # Theory of operation
//! [`spawn_engine`] starts one task that owns everything about the engine: the child process (launched under
//! the [guard](super::guard) in its own process group, so that vLLM's `EngineCore` children are signalled with
//! it and die with mqtt-llm), the readers of its output, the health probe and the restart history. Others hold an
//! [`EngineHandle`]: they watch [`EngineState`], report their requests' progress through [`Activity`], and send
//! [`Control`] messages.
//!
//! One launch is an *incarnation*. While it starts, `/health` is polled every [`START_POLL`] (connection refused
//! means "still loading", as with vLLM) until 200, the child exits, or the start timeout passes. Once ready it is
//! probed every `probe_interval`. An incarnation ends when:
//! - the child exits (a crash),
//! - it hangs: `/health` fails [`HEALTH_FAILURES_TO_RESTART`] probes in a row, or requests have been running
//!   with no token for `stall_timeout` while the engine's `vllm:generation_tokens_total` does not move,
//! - or a shutdown is requested.
//!
//! A failure of an engine that was never ready is a failed start: terminal, with the log tail for diagnosis.
//! Otherwise the engine is restarted after the [`RestartTracker`]'s back-off, until too many failures in its window
//! make it terminal too (then `up` exits non-zero so systemd or compose can take over). Every stop of an
//! incarnation is SIGTERM to the group, `grace`, SIGKILL to the group. Attach mode only probes.

use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::task::TaskTracker;
use url::Url;

use super::activity::Activity;
use super::command::{EngineCommand, build_command};
use super::guard;
use super::logs::{LogTail, forward_lines};
use super::restart::{RestartDecision, RestartTracker};
use super::state::{EngineEvent, EngineState, transition};
use crate::config::{EngineConfig, EngineMode};
use crate::llm::LlmClient;
use crate::metrics;

/// Health poll period while the engine starts.
pub const START_POLL: Duration = Duration::from_millis(250);
/// Consecutive failed probes of a ready engine that count as a hang.
pub const HEALTH_FAILURES_TO_RESTART: u32 = 3;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("cannot find a free port for the engine: {0}")]
    NoFreePort(#[source] std::io::Error),
    #[error("cannot start {program}: {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("engine client: {0}")]
    Client(#[source] Box<crate::llm::LlmError>),
    #[error("engine client: {0}")]
    Url(#[from] url::ParseError),
    /// The engine did not become ready; `tail` holds its last output lines.
    #[error("{reason}")]
    StartFailed { reason: String, tail: Vec<String> },
}

/// Messages to the actor.
#[derive(Debug)]
pub enum Control {
    /// Stop the engine (group SIGTERM, grace, group SIGKILL); answered once it is gone.
    Shutdown { done: oneshot::Sender<()> },
}

/// A cloneable handle on the engine actor.
#[derive(Debug, Clone)]
pub struct EngineHandle {
    state: watch::Receiver<EngineState>,
    control: mpsc::Sender<Control>,
    base_url: Url,
    tail: LogTail,
    command: Option<EngineCommand>,
    activity: Arc<Activity>,
    incarnation: Arc<AtomicU64>,
    pgid: watch::Receiver<Option<i32>>,
}

impl EngineHandle {
    pub fn state(&self) -> EngineState {
        self.state.borrow().clone()
    }

    pub fn subscribe(&self) -> watch::Receiver<EngineState> {
        self.state.clone()
    }

    /// Where the engine's OpenAI-compatible API listens.
    pub fn base_url(&self) -> &Url {
        &self.base_url
    }

    /// The launched command (None in attach mode).
    pub fn command(&self) -> Option<&EngineCommand> {
        self.command.as_ref()
    }

    /// The engine's last output lines.
    pub fn log_tail(&self) -> Vec<String> {
        self.tail.snapshot()
    }

    /// Where requests report their progress (for hang detection).
    pub fn activity(&self) -> &Arc<Activity> {
        &self.activity
    }

    /// How many times the engine was launched; changes when it restarts.
    pub fn incarnation(&self) -> u64 {
        self.incarnation.load(Ordering::SeqCst)
    }

    /// The start-up phase of the current incarnation (None until its first recognised log line).
    pub fn startup_progress(&self) -> watch::Receiver<Option<super::progress::StartupProgress>> {
        self.tail.progress()
    }

    /// The process group of the running engine (None in attach mode or between incarnations).
    pub fn process_group(&self) -> watch::Receiver<Option<i32>> {
        self.pgid.clone()
    }

    /// Wait until the engine is ready, or report why it never will be.
    pub async fn wait_ready(&self) -> Result<(), EngineError> {
        let mut rx = self.state.clone();
        let outcome = rx
            .wait_for(|s| s.is_ready() || s.is_terminal() || *s == EngineState::Stopping)
            .await;
        let state = match outcome {
            Ok(s) => s.clone(),
            Err(_) => EngineState::Failed {
                reason: "engine task ended".into(),
            },
        };
        match state {
            EngineState::Ready => Ok(()),
            EngineState::Failed { reason } => Err(EngineError::StartFailed {
                reason,
                tail: self.tail.snapshot(),
            }),
            other => Err(EngineError::StartFailed {
                reason: format!("engine is {} before it became ready", other.name()),
                tail: self.tail.snapshot(),
            }),
        }
    }

    /// Wait up to `timeout` for a ready engine (e.g. while it restarts). False on timeout or when it will never
    /// be ready again.
    pub async fn wait_until_ready(&self, timeout: Duration) -> bool {
        let mut rx = self.state.clone();
        let waited = tokio::time::timeout(timeout, rx.wait_for(|s| s.is_ready() || s.is_terminal())).await;
        matches!(waited, Ok(Ok(s)) if s.is_ready())
    }

    /// Stop the engine and wait until its process group is gone.
    pub async fn shutdown(&self) {
        let (done, rx) = oneshot::channel();
        if self.control.send(Control::Shutdown { done }).await.is_ok() {
            let _ = rx.await;
        }
    }
}

/// Pick a free TCP port on 127.0.0.1 (bind port 0, read it back, release it).
fn free_port() -> Result<u16, EngineError> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).map_err(EngineError::NoFreePort)?;
    Ok(listener.local_addr().map_err(EngineError::NoFreePort)?.port())
}

/// The mqtt-llm binary, when this process is it (the guard is this binary in another role). Tests that embed the
/// library run without the guard.
fn guard_exe() -> Option<std::path::PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let name = exe.file_name()?.to_str()?;
    (name == "mqtt-llm").then_some(exe)
}

/// Fail early, with the OS error, when `program` cannot be run: a path must be an executable file, a bare name
/// must be one in a `PATH` directory. (Under the guard, a spawn failure would otherwise only show as an exit.)
pub fn check_executable(program: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let runnable =
        |p: &std::path::Path| std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
    let found = if program.components().count() > 1 {
        runnable(program)
    } else {
        std::env::var_os("PATH")
            .is_some_and(|path| std::env::split_paths(&path).any(|dir| runnable(&dir.join(program))))
    };
    if found {
        Ok(())
    } else if program.components().count() > 1 && program.exists() {
        Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            "not an executable file",
        ))
    } else if program.components().count() > 1 {
        Err(std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"))
    } else {
        Err(std::io::Error::new(std::io::ErrorKind::NotFound, "not found on PATH"))
    }
}

/// Launch (or attach to) the engine and return a handle; the actor runs on `tracker`.
pub fn spawn_engine(cfg: &EngineConfig, tracker: &TaskTracker) -> Result<EngineHandle, EngineError> {
    let (state_tx, state_rx) = watch::channel(EngineState::Starting);
    let (control_tx, control_rx) = mpsc::channel(4);
    let (pgid_tx, pgid_rx) = watch::channel(None);
    let tail = LogTail::default();
    let (base_url, launch, shown) = match &cfg.mode {
        EngineMode::Attach { url } => (url.clone(), None, None),
        EngineMode::Launch(launch) => {
            let port = match launch.port {
                Some(p) => p,
                None => free_port()?,
            };
            let served = cfg.served_model_name.clone().unwrap_or_else(|| launch.model.clone());
            let command = build_command(launch, port, &served);
            check_executable(&command.program).map_err(|source| EngineError::Spawn {
                program: command.program.display().to_string(),
                source,
            })?;
            let run = match guard_exe() {
                Some(exe) => guard::guarded(&command, exe, cfg.grace),
                None => command.clone(),
            };
            let url = Url::parse(&format!("http://127.0.0.1:{port}/"))?;
            (url, Some(run), Some(command))
        }
    };
    let probe = LlmClient::new(base_url.clone(), String::new(), cfg.connect_timeout)
        .map_err(|e| EngineError::Client(Box::new(e)))?;
    let activity = Arc::new(Activity::default());
    let incarnation = Arc::new(AtomicU64::new(0));
    let mut actor = Actor {
        cfg: cfg.clone(),
        state: state_tx,
        control: control_rx,
        probe,
        activity: Arc::clone(&activity),
        incarnation: Arc::clone(&incarnation),
        pgid: pgid_tx,
        tail: tail.clone(),
        tracker: tracker.clone(),
    };
    // The first launch happens here, so that a missing binary is reported at once.
    let first = match &launch {
        Some(command) => Some(actor.launch(command)?),
        None => None,
    };
    tracker.spawn(actor.run(launch, first));
    Ok(EngineHandle {
        state: state_rx,
        control: control_tx,
        base_url,
        tail,
        command: shown,
        activity,
        incarnation,
        pgid: pgid_rx,
    })
}

/// A running incarnation.
struct Incarnation {
    child: Child,
    pgid: Option<Pid>,
    /// The tasks forwarding its stdout and stderr into the log tail; they end at end of output.
    output: Vec<tokio::task::JoinHandle<()>>,
}

/// How long, after the engine's group is gone, its last output lines may take to reach the log tail.
const OUTPUT_DRAIN: Duration = Duration::from_secs(2);

/// How an incarnation ended.
enum Ending {
    Shutdown(Option<oneshot::Sender<()>>),
    Failed {
        kind: &'static str,
        reason: String,
        ready_for: Option<Duration>,
    },
}

struct Actor {
    cfg: EngineConfig,
    state: watch::Sender<EngineState>,
    control: mpsc::Receiver<Control>,
    probe: LlmClient,
    activity: Arc<Activity>,
    incarnation: Arc<AtomicU64>,
    pgid: watch::Sender<Option<i32>>,
    tail: LogTail,
    tracker: TaskTracker,
}

impl Actor {
    fn apply(&self, event: EngineEvent) {
        let next = transition(&self.state.borrow(), event);
        self.state.send_if_modified(|s| {
            if *s == next {
                return false;
            }
            match &next {
                EngineState::Failed { reason } => tracing::error!(reason, "engine failed"),
                EngineState::Unhealthy { reason } => tracing::warn!(reason, "engine unhealthy"),
                EngineState::Restarting { attempt, reason } => {
                    tracing::warn!(attempt, reason, "engine will be restarted")
                }
                other => tracing::info!(state = other.name(), "engine state"),
            }
            *s = next.clone();
            true
        });
    }

    fn current(&self) -> EngineState {
        self.state.borrow().clone()
    }

    fn launch(&mut self, command: &EngineCommand) -> Result<Incarnation, EngineError> {
        tracing::info!(command = %command.display(), "launching engine");
        // New phases and a header in the engine log file for this incarnation.
        self.tail.start_run(command);
        let mut child = Command::new(&command.program)
            .args(&command.args)
            .envs(command.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group: signals reach vLLM's EngineCore and workers too, and a Ctrl-C in our
            // terminal does not hit the engine before we drain.
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| EngineError::Spawn {
                program: command.program.display().to_string(),
                source,
            })?;
        let mut output = Vec::with_capacity(2);
        if let Some(out) = child.stdout.take() {
            output.push(self.tracker.spawn(forward_lines(out, "stdout", self.tail.clone())));
        }
        if let Some(err) = child.stderr.take() {
            output.push(self.tracker.spawn(forward_lines(err, "stderr", self.tail.clone())));
        }
        let pgid = child.id().and_then(|id| i32::try_from(id).ok()).map(Pid::from_raw);
        self.incarnation.fetch_add(1, Ordering::SeqCst);
        self.pgid.send_replace(pgid.map(Pid::as_raw));
        Ok(Incarnation { child, pgid, output })
    }

    async fn run(mut self, launch: Option<EngineCommand>, first: Option<Incarnation>) {
        match (launch, first) {
            (Some(command), Some(first)) => self.run_launched(&command, first).await,
            _ => self.run_attached().await,
        }
        // Terminal: answer shutdowns until every handle is gone.
        while let Some(Control::Shutdown { done }) = self.control.recv().await {
            let _ = done.send(());
        }
    }

    async fn run_launched(&mut self, command: &EngineCommand, first: Incarnation) {
        let mut restarts = RestartTracker::new(self.cfg.restart);
        let mut ever_ready = false;
        let mut next = Some(first);
        loop {
            let incarnation = match next.take() {
                Some(i) => i,
                None => match self.launch(command) {
                    Ok(i) => i,
                    Err(e) => {
                        self.apply(EngineEvent::GaveUp { reason: e.to_string() });
                        return;
                    }
                },
            };
            let ending = self.watch_incarnation(incarnation).await;
            self.pgid.send_replace(None);
            let (kind, reason, ready_for) = match ending {
                Ending::Shutdown(done) => {
                    self.apply(EngineEvent::ShutDown);
                    if let Some(done) = done {
                        let _ = done.send(());
                    }
                    return;
                }
                Ending::Failed {
                    kind,
                    reason,
                    ready_for,
                } => (kind, reason, ready_for),
            };
            ever_ready |= ready_for.is_some();
            if !ever_ready {
                // Never came up: a failed start, not something a restart fixes.
                self.apply(EngineEvent::GaveUp { reason });
                return;
            }
            metrics::engine_restart(kind);
            match restarts.on_failure(Instant::now(), ready_for) {
                RestartDecision::GiveUp { reason: why } => {
                    self.apply(EngineEvent::GaveUp {
                        reason: format!("{reason}; {why}"),
                    });
                    return;
                }
                RestartDecision::Restart { attempt, delay } => {
                    self.apply(EngineEvent::WillRestart {
                        attempt,
                        reason: reason.clone(),
                    });
                    tracing::warn!(attempt, delay = ?delay, reason, "restarting the engine");
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        msg = self.control.recv() => {
                            self.stopped_without_engine(msg);
                            return;
                        }
                    }
                    self.apply(EngineEvent::Relaunched);
                }
            }
        }
    }

    /// Probe and watch one incarnation until it ends; its process group is gone when this returns.
    async fn watch_incarnation(&mut self, mut inc: Incarnation) -> Ending {
        let start_deadline = Instant::now() + self.cfg.start_timeout;
        let mut probe = tokio::time::interval(START_POLL);
        probe.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut ready_since: Option<Instant> = None;
        let mut health_failures = 0;
        let mut last_generated: Option<f64> = None;
        let ready_for = |since: Option<Instant>| since.map(|t| t.elapsed());
        loop {
            tokio::select! {
                status = inc.child.wait() => {
                    let status = status_text(status);
                    // The leader is gone; whatever it left in its group goes too.
                    if let Some(pgid) = inc.pgid {
                        signal_group(pgid, Signal::SIGKILL);
                    }
                    // The exit can be seen before the last lines (vLLM's usage message, a traceback) are read:
                    // wait for end of output, so the diagnosis sees them.
                    let drained = futures_util::future::join_all(inc.output.iter_mut());
                    if tokio::time::timeout(OUTPUT_DRAIN, drained).await.is_err() {
                        tracing::debug!("engine output still open after its exit");
                    }
                    let guard_said = self.tail.snapshot().into_iter().rev().find_map(|l| {
                        l.split_once(guard::LOG_PREFIX).map(|(_, said)| said.to_owned())
                    });
                    let reason = match (guard_said, ready_since) {
                        // The guard could not even start the engine (e.g. no such file).
                        (Some(said), None) => said,
                        (_, Some(_)) => format!("engine exited ({status})"),
                        (_, None) => format!("engine exited during start-up ({status})"),
                    };
                    return Ending::Failed { kind: "crash", reason, ready_for: ready_for(ready_since) };
                }
                _ = tokio::time::sleep_until(start_deadline), if ready_since.is_none() => {
                    self.stop_group(&mut inc).await;
                    let reason = format!(
                        "engine did not become healthy within {}",
                        humantime::format_duration(self.cfg.start_timeout)
                    );
                    return Ending::Failed { kind: "start_timeout", reason, ready_for: None };
                }
                msg = self.control.recv() => {
                    self.apply(EngineEvent::ShutdownRequested);
                    self.stop_group(&mut inc).await;
                    return Ending::Shutdown(msg.map(|Control::Shutdown { done }| done));
                }
                _ = probe.tick() => {
                    match self.probe_health().await {
                        Ok(()) => {
                            health_failures = 0;
                            self.apply(EngineEvent::HealthOk);
                            if ready_since.is_none() {
                                ready_since = Some(Instant::now());
                                let every = self.cfg.probe_interval;
                                probe = tokio::time::interval_at(Instant::now() + every, every);
                                probe.set_missed_tick_behavior(MissedTickBehavior::Delay);
                            }
                        }
                        Err(reason) if ready_since.is_some() => {
                            health_failures += 1;
                            self.apply(EngineEvent::HealthFailed { reason: reason.clone() });
                            if health_failures >= HEALTH_FAILURES_TO_RESTART {
                                self.stop_group(&mut inc).await;
                                let reason = format!("engine hung: {health_failures} health probes failed ({reason})");
                                return Ending::Failed { kind: "hang", reason, ready_for: ready_for(ready_since) };
                            }
                        }
                        Err(_) => {}
                    }
                    if ready_since.is_some() {
                        if let Some(reason) = self.check_stall(&mut last_generated).await {
                            self.stop_group(&mut inc).await;
                            return Ending::Failed { kind: "hang", reason, ready_for: ready_for(ready_since) };
                        }
                    }
                }
            }
        }
    }

    /// A shutdown request (or the last handle gone) while no engine process runs: nothing to stop.
    fn stopped_without_engine(&self, msg: Option<Control>) {
        self.apply(EngineEvent::ShutdownRequested);
        self.apply(EngineEvent::ShutDown);
        if let Some(Control::Shutdown { done }) = msg {
            let _ = done.send(());
        }
    }

    async fn probe_health(&self) -> Result<(), String> {
        match tokio::time::timeout(crate::llm::PROBE_TIMEOUT, self.probe.health()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.user_message()),
            Err(_) => Err(format!("no answer within {}s", crate::llm::PROBE_TIMEOUT.as_secs())),
        }
    }

    /// A hang: requests running with no token for `stall_timeout`, and the engine's generated-token counter did
    /// not move since the last check (or cannot be read).
    async fn check_stall(&self, last_generated: &mut Option<f64>) -> Option<String> {
        let stalled = self.activity.stalled_for()?;
        let generated = self.probe.generation_tokens_total().await.ok();
        let previous = std::mem::replace(last_generated, generated);
        if stalled < self.cfg.stall_timeout {
            return None;
        }
        if generated.is_some() && generated != previous {
            return None;
        }
        Some(format!(
            "engine hung: {} requests without a token for {}s",
            self.activity.inflight(),
            stalled.as_secs()
        ))
    }

    /// SIGTERM the group, wait `grace` for the leader, SIGKILL the group, reap the leader.
    async fn stop_group(&self, inc: &mut Incarnation) {
        if let Some(pgid) = inc.pgid {
            tracing::info!(pgid = pgid.as_raw(), "stopping engine: SIGTERM to its process group");
            signal_group(pgid, Signal::SIGTERM);
            match tokio::time::timeout(self.cfg.grace, inc.child.wait()).await {
                Ok(status) => tracing::info!(status = %status_text(status), "engine exited"),
                Err(_) => tracing::warn!(grace = ?self.cfg.grace, "engine still running after grace; SIGKILL"),
            }
            // Whatever is left of the group (EngineCore, workers) goes now.
            signal_group(pgid, Signal::SIGKILL);
        }
        let _ = inc.child.start_kill();
        let _ = inc.child.wait().await;
    }

    /// Attach mode: probe only; the server is somebody else's to restart.
    async fn run_attached(&mut self) {
        let start_deadline = Instant::now() + self.cfg.start_timeout;
        let mut probe = tokio::time::interval(START_POLL);
        probe.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut ready_cadence = false;
        loop {
            let starting = self.current() == EngineState::Starting;
            tokio::select! {
                _ = tokio::time::sleep_until(start_deadline), if starting => {
                    self.apply(EngineEvent::StartTimedOut);
                    return;
                }
                msg = self.control.recv() => {
                    self.stopped_without_engine(msg);
                    return;
                }
                _ = probe.tick() => {
                    match self.probe_health().await {
                        Ok(()) => self.apply(EngineEvent::HealthOk),
                        Err(reason) => self.apply(EngineEvent::HealthFailed { reason }),
                    }
                    if !ready_cadence && self.current().is_ready() {
                        ready_cadence = true;
                        let every = self.cfg.probe_interval;
                        probe = tokio::time::interval_at(Instant::now() + every, every);
                        probe.set_missed_tick_behavior(MissedTickBehavior::Delay);
                    }
                }
            }
        }
    }
}

fn signal_group(pgid: Pid, signal: Signal) {
    match killpg(pgid, signal) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
        Err(e) => tracing::warn!(pgid = pgid.as_raw(), %signal, error = %e, "cannot signal the engine's group"),
    }
}

fn status_text(status: std::io::Result<std::process::ExitStatus>) -> String {
    match status {
        Ok(s) => s.to_string(),
        Err(e) => format!("unknown status: {e}"),
    }
}
