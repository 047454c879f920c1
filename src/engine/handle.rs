//! The engine actor's handle: [`spawn_engine`], [`EngineHandle`] and [`EngineError`]. The actor itself is in
//! [`super::actor`], its launches in [`super::launch`], its health probes in [`super::health`].
//!
//! # Theory of operation
//! [`spawn_engine`] starts one task that owns everything about the engine: the child process (launched under
//! the [guard](super::guard) in its own process group, so that vLLM's `EngineCore` children are signalled with
//! it and die with mqtt-llm), the readers of its output, the health probe and the restart history. Others hold an
//! [`EngineHandle`]: they watch [`EngineState`], report their requests' progress through [`Activity`], and send
//! [`Control`] messages.
//!
//! One launch is an *incarnation*. While it starts, `/health` is polled every [`START_POLL`](super::health::START_POLL) (connection refused
//! means "still loading", as with vLLM) until 200, the child exits, or the start timeout passes. Once ready it is
//! probed every `probe_interval`. An incarnation ends when:
//! - the child exits (a crash),
//! - it hangs: `/health` fails [`HEALTH_FAILURES_TO_RESTART`](super::health::HEALTH_FAILURES_TO_RESTART) probes in a row, or requests have been running
//!   with no token for `stall_timeout` while the engine's `vllm:generation_tokens_total` does not move,
//! - or a shutdown is requested.
//!
//! A failure of an engine that was never ready is a failed start: terminal, with the log tail for diagnosis.
//! Otherwise the engine is restarted after the [`RestartTracker`](super::restart::RestartTracker)'s back-off, until too many failures in its window
//! make it terminal too (then `up` exits non-zero so systemd or compose can take over). Every stop of an
//! incarnation is SIGTERM to the group, `grace`, SIGKILL to the group; a hung one is declared `Restarting`
//! before that stop, so that its requests are answered at once ([`EngineHandle::restarting`]) and new ones wait
//! for the next incarnation instead of going to the hung one. Attach mode only probes.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::task::TaskTracker;
use url::Url;

use super::activity::Activity;
use super::actor::Actor;
use super::command::{EngineCommand, build_command};
use super::guard;
use super::launch::{check_executable, free_port, guard_exe};
use super::logs::LogTail;
use super::settings::{EngineMode, EngineSettings, LaunchedServer};
use super::state::EngineState;
use crate::llm::LlmClient;

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
    Client(#[from] crate::llm::LlmError),
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

    /// Resolves once the engine is being restarted (it crashed, or hung and is being stopped): nothing running
    /// on it now will finish. Never resolves if the actor is gone.
    pub async fn restarting(&self) {
        let mut rx = self.state.clone();
        if rx
            .wait_for(|s| matches!(s, EngineState::Restarting { .. }))
            .await
            .is_err()
        {
            std::future::pending::<()>().await;
        }
    }

    /// Stop the engine and wait until its process group is gone.
    pub async fn shutdown(&self) {
        let (done, rx) = oneshot::channel();
        if self.control.send(Control::Shutdown { done }).await.is_ok() {
            let _ = rx.await;
        }
    }
}

#[cfg(test)]
impl EngineHandle {
    /// A handle whose state the test drives through the returned sender; there is no actor behind it.
    pub(crate) fn scripted(initial: EngineState) -> (Self, watch::Sender<EngineState>) {
        let (state_tx, state) = watch::channel(initial);
        let (control, _) = mpsc::channel(1);
        let (_, pgid) = watch::channel(None);
        let handle = Self {
            state,
            control,
            base_url: Url::parse("http://127.0.0.1:9/").expect("static URL"),
            tail: LogTail::default(),
            command: None,
            activity: Arc::default(),
            incarnation: Arc::default(),
            pgid,
        };
        (handle, state_tx)
    }
}

/// Launch (or attach to) the engine and return a handle; the actor runs on `tracker`.
pub fn spawn_engine(cfg: &EngineSettings, tracker: &TaskTracker) -> Result<EngineHandle, EngineError> {
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
            if let LaunchedServer::LlamaCpp(llama) = &launch.server {
                // The launcher the command names is the one built into this binary.
                super::llamacpp::install_launcher(&llama.launcher).map_err(|source| EngineError::Spawn {
                    program: llama.launcher.display().to_string(),
                    source,
                })?;
            }
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
    let probe = LlmClient::new(base_url.clone(), String::new(), cfg.connect_timeout)?;
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
