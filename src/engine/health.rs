//! The engine's health: `/health` probes, hang detection from the requests' progress and the engine's token
//! counter, and attach mode (which only probes).

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use tokio::time::{Instant, MissedTickBehavior};

use super::actor::Actor;
use super::state::{EngineEvent, EngineState};
use crate::llm::PROBE_TIMEOUT;

/// Health poll period while the engine starts.
pub const START_POLL: Duration = Duration::from_millis(250);
/// Consecutive failed probes of a ready engine that count as a hang.
pub const HEALTH_FAILURES_TO_RESTART: u32 = 3;

/// Why one `/health` probe failed; its text becomes the reason in [`EngineState`].
#[derive(Debug, thiserror::Error)]
pub(super) enum ProbeError {
    #[error("{}", .0.user_message())]
    Engine(#[source] crate::llm::LlmError),
    #[error("no answer within {}s", .0.as_secs())]
    Timeout(Duration),
}

/// A `/health` probe in flight, owning what it uses, so that the actor can go on watching while it runs.
pub(super) type HealthProbe = Pin<Box<dyn Future<Output = Result<(), ProbeError>> + Send>>;

/// The answer of the probe in flight; never ready while none is.
pub(super) async fn answer(probe: &mut Option<HealthProbe>) -> Result<(), ProbeError> {
    match probe {
        Some(p) => p.await,
        None => std::future::pending().await,
    }
}

impl Actor {
    /// One `/health` probe, bounded by [`PROBE_TIMEOUT`].
    pub(super) fn probe_health(&self) -> impl Future<Output = Result<(), ProbeError>> + Send + 'static {
        let client = self.probe.clone();
        async move {
            match tokio::time::timeout(PROBE_TIMEOUT, client.health()).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(ProbeError::Engine(e)),
                Err(_) => Err(ProbeError::Timeout(PROBE_TIMEOUT)),
            }
        }
    }

    /// A hang: requests running with no token for `stall_timeout`, and the engine's generated-token counter did
    /// not move since the last check (or cannot be read). The counter gets no longer than `stall_timeout` (nor
    /// [`PROBE_TIMEOUT`]) to answer: a frozen engine answers nothing, and the stall alone already took that long.
    pub(super) async fn check_stall(&self, last_generated: &mut Option<f64>) -> Option<String> {
        let stalled = self.activity.stalled_for()?;
        let bound = self.cfg.stall_timeout.min(PROBE_TIMEOUT);
        let generated = tokio::time::timeout(bound, self.probe.generation_tokens_total())
            .await
            .ok()
            .and_then(Result::ok);
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

    /// Attach mode: probe only; the server is somebody else's to restart.
    pub(super) async fn run_attached(&mut self) {
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
                        Err(e) => self.apply(EngineEvent::HealthFailed { reason: e.to_string() }),
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
