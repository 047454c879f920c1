//! The engine actor: one task owns the child process, its incarnations, the restart history and the state
//! everyone else watches (see [`super::handle`] for the whole theory of operation). One incarnation is watched
//! by [`Actor::watch_incarnation`] until it exits, hangs, fails to start in time, or a shutdown is asked for.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::task::TaskTracker;

use super::activity::Activity;
use super::command::EngineCommand;
use super::guard;
use super::handle::Control;
use super::health::{HEALTH_FAILURES_TO_RESTART, HealthProbe, START_POLL, answer};
use super::launch::{Incarnation, OUTPUT_DRAIN, signal_group, status_text};
use super::logs::LogTail;
use super::restart::{RestartDecision, RestartTracker};
use super::settings::EngineSettings;
use super::state::{EngineEvent, EngineState, transition};
use crate::llm::LlmClient;
use crate::metrics;

/// How an incarnation ended.
pub(super) enum Ending {
    Shutdown(Option<oneshot::Sender<()>>),
    Failed {
        kind: &'static str,
        reason: String,
        ready_for: Option<Duration>,
        /// Found hung, and not stopped yet: everyone is told first (in-flight requests are answered at once,
        /// new ones wait for the next incarnation), then the group is stopped, which may take the whole grace.
        hung: bool,
    },
}

pub(super) struct Actor {
    pub(super) cfg: EngineSettings,
    pub(super) state: watch::Sender<EngineState>,
    pub(super) control: mpsc::Receiver<Control>,
    pub(super) probe: LlmClient,
    pub(super) activity: Arc<Activity>,
    pub(super) incarnation: Arc<AtomicU64>,
    pub(super) pgid: watch::Sender<Option<i32>>,
    pub(super) tail: LogTail,
    pub(super) tracker: TaskTracker,
}

impl Actor {
    pub(super) fn apply(&self, event: EngineEvent) {
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

    pub(super) fn current(&self) -> EngineState {
        self.state.borrow().clone()
    }

    pub(super) async fn run(mut self, launch: Option<EngineCommand>, first: Option<Incarnation>) {
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
            let mut incarnation = match next.take() {
                Some(i) => i,
                None => match self.launch(command) {
                    Ok(i) => i,
                    Err(e) => {
                        self.apply(EngineEvent::GaveUp { reason: e.to_string() });
                        return;
                    }
                },
            };
            let ending = self.watch_incarnation(&mut incarnation).await;
            let (kind, reason, ready_for, hung) = match ending {
                Ending::Shutdown(done) => {
                    self.pgid.send_replace(None);
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
                    hung,
                } => (kind, reason, ready_for, hung),
            };
            ever_ready |= ready_for.is_some();
            if !ever_ready {
                // Never came up: a failed start, not something a restart fixes.
                self.apply(EngineEvent::GaveUp { reason });
                self.end_incarnation(&mut incarnation, hung).await;
                return;
            }
            metrics::engine_restart(kind);
            match restarts.on_failure(Instant::now(), ready_for) {
                RestartDecision::GiveUp { reason: why } => {
                    self.apply(EngineEvent::GaveUp {
                        reason: format!("{reason}; {why}"),
                    });
                    self.end_incarnation(&mut incarnation, hung).await;
                    return;
                }
                RestartDecision::Restart { attempt, delay } => {
                    self.apply(EngineEvent::WillRestart {
                        attempt,
                        reason: reason.clone(),
                    });
                    self.end_incarnation(&mut incarnation, hung).await;
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

    /// After a failure has been announced: stop the incarnation's group if it is still running (it hung).
    async fn end_incarnation(&mut self, inc: &mut Incarnation, hung: bool) {
        if hung {
            self.stop_group(inc).await;
        }
        self.pgid.send_replace(None);
    }

    /// Probe and watch one incarnation until it ends. Its process group is gone when this returns, unless it
    /// hung: then the caller stops it (see [`Ending::Failed`]).
    ///
    /// The `/health` probe runs alongside the loop rather than in it: a frozen engine answers nothing, so a
    /// probe takes its whole timeout, and while it does the loop must still see the child exit and check for a
    /// stall on its own cadence.
    async fn watch_incarnation(&mut self, inc: &mut Incarnation) -> Ending {
        let start_deadline = Instant::now() + self.cfg.start_timeout;
        let mut probe = tokio::time::interval(START_POLL);
        probe.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut health: Option<HealthProbe> = None;
        let mut stall_check = tokio::time::interval(self.cfg.probe_interval);
        stall_check.set_missed_tick_behavior(MissedTickBehavior::Delay);
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
                    return Ending::Failed { kind: "crash", reason, ready_for: ready_for(ready_since), hung: false };
                }
                _ = tokio::time::sleep_until(start_deadline), if ready_since.is_none() => {
                    self.stop_group(inc).await;
                    let reason = format!(
                        "engine did not become healthy within {}",
                        humantime::format_duration(self.cfg.start_timeout)
                    );
                    return Ending::Failed { kind: "start_timeout", reason, ready_for: None, hung: false };
                }
                msg = self.control.recv() => {
                    self.apply(EngineEvent::ShutdownRequested);
                    self.stop_group(inc).await;
                    return Ending::Shutdown(msg.map(|Control::Shutdown { done }| done));
                }
                _ = probe.tick(), if health.is_none() => health = Some(Box::pin(self.probe_health())),
                result = answer(&mut health) => {
                    health = None;
                    match result {
                        Ok(()) => {
                            health_failures = 0;
                            self.apply(EngineEvent::HealthOk);
                            if ready_since.is_none() {
                                ready_since = Some(Instant::now());
                                let every = self.cfg.probe_interval;
                                probe = tokio::time::interval_at(Instant::now() + every, every);
                                probe.set_missed_tick_behavior(MissedTickBehavior::Delay);
                                stall_check.reset();
                            }
                        }
                        Err(reason) if ready_since.is_some() => {
                            health_failures += 1;
                            self.apply(EngineEvent::HealthFailed { reason: reason.to_string() });
                            if health_failures >= HEALTH_FAILURES_TO_RESTART {
                                let reason = format!("engine hung: {health_failures} health probes failed ({reason})");
                                return Ending::Failed { kind: "hang", reason, ready_for: ready_for(ready_since), hung: true };
                            }
                        }
                        Err(_) => {}
                    }
                }
                _ = stall_check.tick(), if ready_since.is_some() => {
                    if let Some(reason) = self.check_stall(&mut last_generated).await {
                        return Ending::Failed { kind: "hang", reason, ready_for: ready_for(ready_since), hung: true };
                    }
                }
            }
        }
    }

    /// A shutdown request (or the last handle gone) while no engine process runs: nothing to stop.
    pub(super) fn stopped_without_engine(&self, msg: Option<Control>) {
        self.apply(EngineEvent::ShutdownRequested);
        self.apply(EngineEvent::ShutDown);
        if let Some(Control::Shutdown { done }) = msg {
            let _ = done.send(());
        }
    }
}
