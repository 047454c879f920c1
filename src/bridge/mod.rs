//! The request pipeline: one accepted MQTT request → one engine call → exactly one reply.
//!
//! A request's walk: the MQTT event loop hands it to the [`intake`], which parses it and asks
//! [`Admission`] to admit it; an admitted ticket runs on its session's lane
//! [`worker`], which waits for an engine slot, streams the answer from the [`LlmClient`] and publishes the stream
//! frames ([`stream`]) and the final reply through the one [`Publisher`].
//!
//! - [`intake`]: the task that parses and admits, and the event loop's overflow refusal;
//! - [`state`]: the intake of game states on a state project's `{p}/state`, and their JSON replies;
//! - [`control`]: the control topics (template, clear_history, delete_session) the intake hands over;
//! - [`worker`]: the task that runs a session's lane: prompt from history, engine call, final reply, turn commit;
//! - [`stream`]: the coalescing stream-frame sink of one request;
//! - [`failure`]: why an accepted request failed, as wire codes and texts.
//!
//! [`Bridge::new`] builds these parts, each with only what it needs; the [`Bridge`] keeps the shutdown drain.

pub mod budget;
pub mod control;
pub mod failure;
pub mod intake;
pub mod state;
pub mod stream;
pub mod worker;

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admission::Admission;
use crate::config::{BridgeConfig, ProjectCatalog};
use crate::engine::EngineHandle;
use crate::llm::LlmClient;
use crate::mqtt::publisher::Publisher;
use crate::session::persist::Persister;
use crate::session::{SessionSettings, SessionStore, SweepLimits};
use crate::store::{Recovered, Store};
use budget::ContextWindow;
pub use intake::{Intake, overflow_handler};
use mqtt_llm_protocol::topics::ProjectName;
use worker::{Worker, WorkerSettings};

/// How often idle conversations are swept.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(60);
/// How often requests waiting behind their session are checked against `--max-queue-wait`.
pub const EXPIRY_INTERVAL: Duration = Duration::from_secs(1);

/// What the bridge is built from, besides its settings.
#[derive(Debug)]
pub struct BridgeParts {
    pub admission: Admission,
    /// The projects served.
    pub projects: Vec<ProjectName>,
    pub catalog: ProjectCatalog,
    pub llm: LlmClient,
    pub engine: EngineHandle,
    pub publisher: Publisher,
    /// The opened session store and what it held (`None` with `--no-persist`).
    pub store: Option<(Store, Recovered)>,
}

/// The bridge's handle: the session sweeper and the shutdown drain (the [`Intake`] runs the rest).
#[derive(Debug)]
pub struct Bridge {
    admission: Admission,
    /// Writes the conversations to the session store (`None` with `--no-persist`).
    persister: Option<Persister>,
    sessions: SessionStore,
    /// When idle conversations are forgotten, and how many are kept.
    session_settings: SessionSettings,
    /// Lane workers; drained on shutdown.
    workers: TaskTracker,
    /// Answers the requests that waited too long behind their session.
    worker: Arc<Worker>,
    /// Cancelled when the drain timeout passes: running and queued requests are answered with an error.
    abort: CancellationToken,
}

impl Bridge {
    pub fn new(cfg: &BridgeConfig, parts: BridgeParts) -> (Self, Intake) {
        let BridgeParts {
            admission,
            projects,
            catalog,
            llm,
            engine,
            publisher,
            store,
        } = parts;
        let sessions = SessionStore::new(
            cfg.sessions.max_history_tokens.get(),
            cfg.sessions.trim,
            store.is_some(),
        );
        let persister = store.map(|(store, recovered)| {
            let restored = sessions.restore(recovered, cfg.sessions.idle_timeout);
            tracing::info!(restored, path = %store.path().display(), "conversations restored");
            crate::metrics::store_restored(restored);
            crate::metrics::sessions(sessions.len());
            crate::metrics::session_bytes(sessions.bytes());
            Persister::new(store, sessions.clone())
        });
        let workers = TaskTracker::new();
        let abort = CancellationToken::new();
        let worker = Worker {
            admission: admission.clone(),
            engine,
            llm,
            sessions: sessions.clone(),
            window: ContextWindow::default(),
            catalog: catalog.clone(),
            publisher: publisher.clone(),
            settings: WorkerSettings {
                stream_interval: cfg.stream_interval,
                defaults: cfg.defaults,
                skip_thinking: cfg.skip_thinking,
                request_timeout: cfg.request_timeout,
            },
            abort: abort.clone(),
        };
        let worker = Arc::new(worker);
        let intake = Intake {
            state_projects: catalog.state_projects(&projects),
            projects,
            limits: cfg.limits.clone(),
            sessions: sessions.clone(),
            catalog,
            admission: admission.clone(),
            publisher,
            workers: workers.clone(),
            worker: Arc::clone(&worker),
        };
        let bridge = Self {
            admission,
            persister,
            sessions,
            session_settings: cfg.sessions.clone(),
            workers,
            worker,
            abort,
        };
        (bridge, intake)
    }

    /// Every [`SWEEP_INTERVAL`], forget idle conversations and those beyond `--max-sessions` and
    /// `--max-history-bytes`.
    pub fn spawn_session_sweeper(&self, tracker: &TaskTracker, cancel: CancellationToken) {
        let sessions = self.sessions.clone();
        let limits = SweepLimits {
            idle: self.session_settings.idle_timeout,
            max_sessions: self.session_settings.max_sessions.get(),
            max_bytes: self.session_settings.max_bytes.get(),
        };
        tracker.spawn(async move {
            let mut tick = tokio::time::interval(SWEEP_INTERVAL);
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = cancel.cancelled() => break,
                }
                let gone = sessions.sweep_with(tokio::time::Instant::now(), &limits);
                if gone.total() > 0 {
                    tracing::debug!(
                        idle = gone.idle,
                        lru = gone.lru,
                        bytes = gone.bytes,
                        "conversations forgotten"
                    );
                }
                crate::metrics::session_evictions("idle", gone.idle);
                crate::metrics::session_evictions("lru", gone.lru);
                crate::metrics::session_evictions("bytes", gone.bytes);
                crate::metrics::sessions(sessions.len());
                crate::metrics::session_bytes(sessions.bytes());
            }
        });
    }

    /// Every `--persist-interval`, write what changed to the session store (nothing with `--no-persist`).
    pub fn spawn_persister(&self, tracker: &TaskTracker, cancel: CancellationToken) {
        if let (Some(persister), Some(persist)) = (&self.persister, &self.session_settings.persist) {
            persister.spawn(persist.interval, tracker, cancel);
        }
    }

    /// Write the last changes to the session store (after the drain: every turn that completed is in it).
    pub async fn persist_final(&self) {
        if let Some(persister) = &self.persister {
            if persister.flush().await {
                tracing::info!(path = %persister.path().display(), "conversations saved");
            } else {
                tracing::error!(path = %persister.path().display(), "the last conversation changes could not be saved");
            }
        }
    }

    /// Every [`EXPIRY_INTERVAL`], answer the requests that have waited `--max-queue-wait` behind their session's
    /// running request with the overload reply, instead of letting them wait for their turn (the engine-slot wait
    /// of a request whose turn has come is bounded by admission itself).
    pub fn spawn_queue_expiry(&self, tracker: &TaskTracker, cancel: CancellationToken) {
        let (admission, worker, workers) = (self.admission.clone(), Arc::clone(&self.worker), self.workers.clone());
        tracker.spawn(async move {
            let mut tick = tokio::time::interval(EXPIRY_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = cancel.cancelled() => break,
                }
                for ticket in admission.take_expired(tokio::time::Instant::now()) {
                    workers.spawn(worker::answer_expired(Arc::clone(&worker), ticket));
                }
            }
        });
    }

    /// Stop taking requests; let accepted ones finish for up to `timeout`; then answer what is left with an
    /// error and wait for the workers to end.
    pub async fn drain(&self, timeout: Duration) {
        self.admission.stop_admitting();
        self.workers.close();
        let lanes = self.admission.active_lanes();
        tracing::info!(timeout = ?timeout, lanes, "draining requests");
        if tokio::time::timeout(timeout, self.workers.wait()).await.is_err() {
            tracing::warn!(
                lanes = self.admission.active_lanes(),
                "drain timeout: answering what is left with an error"
            );
            self.abort.cancel();
            self.workers.wait().await;
        }
        tracing::info!("drained");
    }
}
