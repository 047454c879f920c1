//! The request pipeline: one accepted MQTT request → one engine call → exactly one reply.
//!
//! - [`intake`]: the task that takes messages from the event loop, parses them, refuses what it must (always with
//!   an `Error: ...` reply when a reply topic is known, always counted), and admits the rest into session lanes;
//! - [`worker`]: the task that runs a session's lane: builds the prompt from history, streams the engine's answer,
//!   publishes stream frames and the final reply, commits the turn;
//! - [`stream`]: the coalescing publisher of stream frames;
//! - [`failure`]: why an accepted request failed, as wire codes and texts.

pub mod failure;
pub mod intake;
pub mod stream;
pub mod worker;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admission::{Admission, Lanes, QueuedPermit};
use crate::config::{BridgeConfig, ProjectCatalog};
use crate::engine::EngineHandle;
use crate::llm::LlmClient;
use crate::mqtt::client::{MqttClient, Outgoing};
use crate::session::{SessionKey, SessionStore};
use mqtt_llm_protocol::topics::ProjectName;
use mqtt_llm_protocol::wire::{ChatRequest, ReplyTarget};

/// How long a request that lost its engine connection waits for the supervisor to notice a crash.
pub const RESTART_NOTICE: Duration = Duration::from_secs(1);

/// How often idle conversations are swept.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(60);

/// An accepted request waiting for (or holding) its session's lane.
#[derive(Debug)]
pub struct Job {
    pub request: ChatRequest,
    pub accepted_at: Instant,
    /// Global capacity held until the request is answered.
    pub _permit: QueuedPermit,
}

/// What the intake and the workers share.
pub struct Shared {
    pub cfg: BridgeConfig,
    pub projects: Vec<ProjectName>,
    pub catalog: ProjectCatalog,
    pub llm: LlmClient,
    /// The engine's state (requests wait while it restarts) and where requests report progress.
    pub engine: EngineHandle,
    pub sessions: SessionStore,
    pub lanes: Lanes<SessionKey, Job>,
    pub admission: Admission,
    pub publisher: MqttClient,
    /// Lane workers; drained on shutdown.
    pub workers: TaskTracker,
    /// Set when shutdown starts: new requests are refused.
    pub draining: AtomicBool,
    /// Cancelled when the drain timeout passes: running and queued requests are answered with an error.
    pub abort: CancellationToken,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("projects", &self.projects)
            .finish_non_exhaustive()
    }
}

/// Cloneable handle on the bridge.
#[derive(Debug, Clone)]
pub struct Bridge {
    pub shared: Arc<Shared>,
}

impl Bridge {
    pub fn new(
        cfg: BridgeConfig,
        projects: Vec<ProjectName>,
        catalog: ProjectCatalog,
        llm: LlmClient,
        engine: EngineHandle,
        publisher: MqttClient,
    ) -> Self {
        let shared = Shared {
            sessions: SessionStore::new(cfg.max_history_tokens),
            lanes: Lanes::new(cfg.session_queue.get()),
            admission: Admission::new(cfg.max_queued.get(), cfg.max_inflight.get()),
            cfg,
            projects,
            catalog,
            llm,
            engine,
            publisher,
            workers: TaskTracker::new(),
            draining: AtomicBool::new(false),
            abort: CancellationToken::new(),
        };
        Self {
            shared: Arc::new(shared),
        }
    }

    /// Every [`SWEEP_INTERVAL`], forget idle conversations and those beyond `--max-sessions`.
    pub fn spawn_session_sweeper(&self, tracker: &TaskTracker, cancel: CancellationToken) {
        let shared = Arc::clone(&self.shared);
        tracker.spawn(async move {
            let mut tick = tokio::time::interval(SWEEP_INTERVAL);
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = cancel.cancelled() => break,
                }
                let removed = shared.sessions.sweep(
                    std::time::Instant::now(),
                    shared.cfg.session_idle_timeout,
                    shared.cfg.max_sessions.get(),
                );
                if removed > 0 {
                    tracing::debug!(removed, "conversations forgotten");
                }
                crate::metrics::sessions(shared.sessions.len());
            }
        });
    }

    /// Stop taking requests; let accepted ones finish for up to `timeout`; then answer what is left with an
    /// error and wait for the workers to end.
    pub async fn drain(&self, timeout: Duration) {
        let shared = &self.shared;
        shared.draining.store(true, Ordering::SeqCst);
        shared.workers.close();
        tracing::info!(timeout = ?timeout, lanes = shared.lanes.active(), "draining requests");
        if tokio::time::timeout(timeout, shared.workers.wait()).await.is_err() {
            tracing::warn!(
                lanes = shared.lanes.active(),
                "drain timeout: answering what is left with an error"
            );
            shared.abort.cancel();
            shared.workers.wait().await;
        }
        tracing::info!("drained");
    }
}

impl Shared {
    /// Whether the engine went down (or was replaced) since incarnation `since`; waits up to [`RESTART_NOTICE`]
    /// for the supervisor to notice a crash that the request saw first.
    pub async fn engine_restarted_since(&self, since: u64) -> bool {
        let mut state = self.engine.subscribe();
        let noticed = tokio::time::timeout(RESTART_NOTICE, state.wait_for(|s| !s.is_ready()))
            .await
            .is_ok();
        // A terminal engine will not come back: "restarted, please retry" would be a lie.
        (noticed || self.engine.incarnation() != since) && !self.engine.state().is_terminal()
    }

    /// Publish a final reply (or error) text to a reply target; a failure is logged and counted.
    pub async fn publish_text(&self, target: &ReplyTarget, text: String) -> bool {
        self.publish(target, Bytes::from(text), "text/plain").await
    }

    pub async fn publish(&self, target: &ReplyTarget, payload: Bytes, content_type: &'static str) -> bool {
        let msg = Outgoing {
            topic: target.topic.clone(),
            payload,
            correlation_data: target.correlation_data.clone(),
            content_type,
        };
        match self.publisher.publish(msg).await {
            Ok(()) => true,
            Err(e) => {
                crate::metrics::mqtt_publish_error();
                tracing::error!(error = %e, "publish failed");
                false
            }
        }
    }
}
