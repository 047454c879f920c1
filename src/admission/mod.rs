//! Admission: the one place that decides whether a request is refused, waits, or runs.
//!
//! [`Admission::admit`] is the entry point for a parsed request: it refuses while draining, when global capacity
//! (`--max-queued`) is spent, or when the session's lane is full; otherwise it hands back a [`Ticket`] to run now
//! or queues the ticket behind the session's running request. When its turn comes, a ticket waits at
//! [`Admission::engine_slot`] for a ready engine (up to `--engine-wait`) and an in-flight slot (`--max-inflight`),
//! all within `--max-queue-wait` of its acceptance: a request that waited that long gets the overload reply
//! instead of running late. Every refusal is a typed [`Refusal`], whose metric label and reply text come from one
//! table; [`Admission::retry_after`] tells refused clients when to come back, from the current drain rate.
//!
//! State messages ([`Admission::admit_latest`]) are latest-wins: a newer state of a session replaces the states
//! still waiting in its lane (the replaced tickets are handed back, to be counted and dropped unanswered).
//!
//! - `lanes`: per-session FIFO lanes with bounded queues;
//! - `capacity`: the semaphores behind the RAII permits; capacity comes back when a ticket or slot is dropped;
//! - `drain`: how fast accepted requests leave, for the retry hint;
//! - [`refusal`]: the refusal table.

mod capacity;
mod drain;
mod lanes;
pub mod refusal;

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::engine::EngineHandle;
use crate::session::SessionKey;
use capacity::{Capacity, InflightPermit, QueuedPermit};
use lanes::{Lanes, Submit};
use mqtt_llm_protocol::wire::{ChatRequest, ReplyTarget, RequestKind};

pub use refusal::{OVERLOADED_TEXT, Refusal};

/// What admission may let through.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdmissionSettings {
    /// Engine requests in flight at once.
    pub max_inflight: NonZeroUsize,
    /// Requests that may wait behind a session's running one.
    pub session_queue: NonZeroUsize,
    /// Accepted but unanswered requests across all sessions.
    pub max_queued: NonZeroUsize,
    /// How long a request waits for a (re)starting engine before it is refused.
    pub engine_wait: Duration,
    /// How long an accepted request may wait, from acceptance, before the engine starts on it; then it is refused
    /// ([`Refusal::QueueTimeout`]).
    pub max_queue_wait: Duration,
}

/// An accepted request. Holds its share of global capacity until dropped (answered, failed or cancelled).
#[derive(Debug)]
pub struct Ticket {
    key: SessionKey,
    request: ChatRequest,
    accepted_at: Instant,
    _permit: QueuedPermit,
}

impl Ticket {
    pub fn key(&self) -> &SessionKey {
        &self.key
    }

    pub fn request(&self) -> &ChatRequest {
        &self.request
    }

    /// When admission accepted it (the start of every timing metric).
    pub fn accepted_at(&self) -> Instant {
        self.accepted_at
    }
}

/// Held while the engine works on a request; the in-flight slot comes back on drop.
#[derive(Debug)]
pub struct EngineSlot {
    _inflight: InflightPermit,
}

/// An accepted request: run it now (the session's lane was idle), or it waits in the lane.
#[derive(Debug)]
pub enum Admitted {
    /// The caller owns the session's lane: run the ticket, then every [`Admission::next`] ticket.
    Run(Box<Ticket>),
    Queued,
}

/// How full admission is, for the capacity topic, `/status` and the stats line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Load {
    /// Accepted requests not yet answered (waiting or running).
    pub queued: usize,
    /// `--max-queued`.
    pub max_queued: usize,
    /// Requests the engine works on.
    pub inflight: usize,
    /// `--max-inflight`.
    pub max_inflight: usize,
    /// Shutdown has started: every new request is refused.
    pub draining: bool,
}

impl Load {
    /// The share of `--max-queued` in use, 0 to 1.
    pub fn fill(&self) -> f64 {
        if self.max_queued == 0 {
            return 1.0;
        }
        self.queued as f64 / self.max_queued as f64
    }

    /// Whether a new request would be accepted now, as far as capacity and shutdown go.
    pub fn has_room(&self) -> bool {
        !self.draining && self.queued < self.max_queued
    }
}

/// A refused request and where to say so.
#[derive(Debug)]
pub struct Refused {
    pub refusal: Refusal,
    pub reply: ReplyTarget,
}

/// Cloneable handle on the admission state.
#[derive(Debug, Clone)]
pub struct Admission {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    engine_wait: Duration,
    max_queue_wait: Duration,
    draining: AtomicBool,
    capacity: Capacity,
    lanes: Lanes<SessionKey, Ticket>,
    engine: EngineHandle,
}

impl Admission {
    pub fn new(settings: AdmissionSettings, engine: EngineHandle) -> Self {
        Self {
            inner: Arc::new(Inner {
                engine_wait: settings.engine_wait,
                max_queue_wait: settings.max_queue_wait,
                draining: AtomicBool::new(false),
                capacity: Capacity::new(settings.max_queued.get(), settings.max_inflight.get()),
                lanes: Lanes::new(settings.session_queue.get()),
                engine,
            }),
        }
    }

    /// The entry point: refuse the request, or accept it into its session's lane.
    pub fn admit(&self, request: ChatRequest) -> Result<Admitted, Refused> {
        let inner = &self.inner;
        let refused = |refusal, request: ChatRequest| Refused {
            refusal,
            reply: request.reply,
        };
        if inner.draining.load(Ordering::SeqCst) {
            return Err(refused(Refusal::ShuttingDown, request));
        }
        let Some(permit) = inner.capacity.try_accept() else {
            return Err(refused(Refusal::Overloaded, request));
        };
        let key = SessionKey {
            project: request.project.clone(),
            session: request.session.clone(),
        };
        let ticket = Ticket {
            key: key.clone(),
            request,
            accepted_at: Instant::now(),
            _permit: permit,
        };
        match inner.lanes.submit(&key, ticket) {
            Submit::Run(ticket) => Ok(Admitted::Run(Box::new(ticket))),
            Submit::Queued => Ok(Admitted::Queued),
            Submit::Full(ticket) => Err(refused(Refusal::SessionQueueFull, ticket.request)),
        }
    }

    /// [`Self::admit`] for a state message, latest wins: the state messages still waiting in the session's lane (not
    /// the running one, never a chat request) are dropped unanswered first (their capacity comes back at once), and
    /// their number is returned with the outcome for the caller to count. Clients keep only the latest hint, so
    /// answering a state the game has moved past is wasted engine time (seed-protocol, known defect 17).
    pub fn admit_latest(&self, request: ChatRequest) -> (Result<Admitted, Refused>, usize) {
        let mut superseded = 0;
        if !self.inner.draining.load(Ordering::SeqCst) {
            let key = SessionKey {
                project: request.project.clone(),
                session: request.session.clone(),
            };
            let dropped = self
                .inner
                .lanes
                .take_waiting_in(&key, |t| t.request.kind == RequestKind::State);
            superseded = dropped.len();
        }
        (self.admit(request), superseded)
    }

    /// The next ticket of a lane the caller owns, or `None` (and the lane becomes idle).
    pub fn next(&self, key: &SessionKey) -> Option<Ticket> {
        self.inner.lanes.next(key)
    }

    /// A ticket's turn has come: wait for a ready engine (up to `--engine-wait`), then for an in-flight slot; all
    /// of it ends `--max-queue-wait` after the ticket was accepted.
    pub async fn engine_slot(&self, ticket: &Ticket) -> Result<EngineSlot, Refusal> {
        let inner = &self.inner;
        let deadline = ticket.accepted_at + inner.max_queue_wait;
        if Instant::now() >= deadline {
            return Err(Refusal::QueueTimeout);
        }
        if !inner.engine.state().is_ready() {
            let wait = inner
                .engine_wait
                .min(deadline.saturating_duration_since(Instant::now()));
            if !inner.engine.wait_until_ready(wait).await {
                return Err(if wait < inner.engine_wait {
                    Refusal::QueueTimeout
                } else {
                    Refusal::EngineNotReady
                });
            }
        }
        match tokio::time::timeout_at(deadline, inner.capacity.acquire_inflight()).await {
            Ok(inflight) => Ok(EngineSlot { _inflight: inflight }),
            Err(_) => Err(Refusal::QueueTimeout),
        }
    }

    /// When a refused client should retry: the time the accepted requests need to drain at the current rate
    /// (1 s to 60 s; 5 s when nothing has drained lately).
    pub fn retry_after(&self) -> Duration {
        self.inner.capacity.retry_after()
    }

    /// Take the tickets waiting behind their session's running request whose `--max-queue-wait` has passed at
    /// `now`; run through a worker, each gets [`Refusal::QueueTimeout`] at once from [`Self::engine_slot`].
    pub fn take_expired(&self, now: Instant) -> Vec<Ticket> {
        let wait = self.inner.max_queue_wait;
        self.inner.lanes.take_waiting(|t| t.accepted_at + wait <= now)
    }

    /// Shutdown has started: refuse every new request from now on.
    pub fn stop_admitting(&self) {
        self.inner.draining.store(true, Ordering::SeqCst);
    }

    /// How full admission is now.
    pub fn load(&self) -> Load {
        let c = &self.inner.capacity;
        Load {
            queued: c.queued(),
            max_queued: c.max_queued(),
            inflight: c.inflight(),
            max_inflight: c.max_inflight(),
            draining: self.inner.draining.load(Ordering::SeqCst),
        }
    }

    /// Sessions with a running request.
    pub fn active_lanes(&self) -> usize {
        self.inner.lanes.active()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::EngineState;
    use mqtt_llm_protocol::topics::ProjectName;
    use mqtt_llm_protocol::wire::{V5Props, WireLimits, parse_request};

    fn settings(max_queue_wait: Duration) -> AdmissionSettings {
        AdmissionSettings {
            max_inflight: NonZeroUsize::new(1).unwrap(),
            session_queue: NonZeroUsize::new(4).unwrap(),
            max_queued: NonZeroUsize::new(10).unwrap(),
            engine_wait: Duration::from_secs(60),
            max_queue_wait,
        }
    }

    fn request(session: &str) -> ChatRequest {
        request_in("p", session)
    }

    fn request_in(project: &str, session: &str) -> ChatRequest {
        let project = ProjectName::try_new(project).unwrap();
        let payload = format!(r#"{{"sessionId":"{session}","message":"hi"}}"#);
        let policy = mqtt_llm_protocol::topics::ReplyPolicy::default();
        parse_request(
            &project,
            payload.as_bytes(),
            &V5Props::default(),
            &WireLimits::default(),
            &policy,
        )
        .unwrap()
    }

    fn run(admitted: Result<Admitted, Refused>) -> Ticket {
        match admitted {
            Ok(Admitted::Run(ticket)) => *ticket,
            other => panic!("expected a ticket to run, got {other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_that_waits_max_queue_wait_for_a_slot_is_refused_then() {
        let (engine, _state) = EngineHandle::scripted(EngineState::Ready);
        let admission = Admission::new(settings(Duration::from_secs(30)), engine);
        let first = run(admission.admit(request("a")));
        let _busy = admission.engine_slot(&first).await.expect("the one slot");
        let second = run(admission.admit(request("b")));
        let started = Instant::now();
        let refused = admission.engine_slot(&second).await.expect_err("no slot frees up");
        assert_eq!(refused, Refusal::QueueTimeout);
        assert_eq!(started.elapsed(), Duration::from_secs(30));
        // Time spent before its turn counts too: a ticket accepted 30 s ago is refused at once.
        let third = run(admission.admit(request("c")));
        tokio::time::advance(Duration::from_secs(30)).await;
        drop(_busy);
        assert_eq!(
            admission.engine_slot(&third).await.expect_err("too late"),
            Refusal::QueueTimeout
        );
    }

    #[tokio::test(start_paused = true)]
    async fn tickets_waiting_behind_their_session_expire_at_their_own_deadline() {
        let (engine, _state) = EngineHandle::scripted(EngineState::Ready);
        let admission = Admission::new(settings(Duration::from_secs(30)), engine);
        let _running = run(admission.admit(request("a")));
        assert!(matches!(admission.admit(request("a")), Ok(Admitted::Queued)));
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(matches!(admission.admit(request("a")), Ok(Admitted::Queued)));
        assert!(admission.take_expired(Instant::now()).is_empty());
        tokio::time::advance(Duration::from_secs(20)).await;
        let expired = admission.take_expired(Instant::now());
        assert_eq!(expired.len(), 1, "only the first waiting ticket is 30 s old");
        assert_eq!(
            admission.engine_slot(&expired[0]).await.expect_err("expired"),
            Refusal::QueueTimeout
        );
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(admission.take_expired(Instant::now()).len(), 1);
        assert!(admission.next(&expired[0].key).is_none(), "the lane has nothing left");
    }

    #[tokio::test(start_paused = true)]
    async fn the_engine_wait_ends_at_the_queue_deadline_and_keeps_its_own_reason_otherwise() {
        let (engine, state) = EngineHandle::scripted(EngineState::Starting);
        let admission = Admission::new(settings(Duration::from_secs(30)), engine.clone());
        let ticket = run(admission.admit(request("a")));
        let started = Instant::now();
        assert_eq!(
            admission.engine_slot(&ticket).await.expect_err("never ready"),
            Refusal::QueueTimeout
        );
        assert_eq!(started.elapsed(), Duration::from_secs(30));
        drop(ticket);

        // --engine-wait shorter than --max-queue-wait: the engine's own reason.
        let mut short = settings(Duration::from_secs(300));
        short.engine_wait = Duration::from_secs(10);
        let admission = Admission::new(short, engine);
        let ticket = run(admission.admit(request("b")));
        assert_eq!(
            admission.engine_slot(&ticket).await.expect_err("never ready"),
            Refusal::EngineNotReady
        );
        // And once the engine is ready the slot is granted.
        state.send_replace(EngineState::Ready);
        let ticket = run(admission.admit(request("c")));
        admission.engine_slot(&ticket).await.expect("ready engine, free slot");
    }

    fn state(session: &str, x: u32) -> ChatRequest {
        let project = ProjectName::try_new("maze").unwrap();
        let payload = format!(r#"{{"sessionId":"{session}","player_pos":[{x},0],"exit_pos":[9,9]}}"#);
        let policy = mqtt_llm_protocol::topics::ReplyPolicy::default();
        mqtt_llm_protocol::wire::parse_state(
            &project,
            payload.as_bytes(),
            &V5Props::default(),
            &WireLimits::default(),
            &policy,
        )
        .unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn a_newer_state_replaces_the_waiting_states_of_its_session_only() {
        let (engine, _state) = EngineHandle::scripted(EngineState::Ready);
        let mut tight = settings(Duration::from_secs(30));
        tight.max_queued = NonZeroUsize::new(4).unwrap();
        let admission = Admission::new(tight, engine);
        let (running, superseded) = admission.admit_latest(state("s", 0));
        let running = run(running);
        assert_eq!(superseded, 0);
        assert!(matches!(
            admission.admit_latest(state("s", 1)),
            (Ok(Admitted::Queued), 0)
        ));
        assert!(matches!(admission.admit(request_in("maze", "s")), Ok(Admitted::Queued)));
        assert!(matches!(
            admission.admit_latest(state("other", 1)),
            (Ok(Admitted::Run(_)), 0)
        ));
        // Capacity is full (4 accepted), but the replaced state gives its share back first.
        assert!(matches!(
            admission.admit_latest(state("s", 2)),
            (Ok(Admitted::Queued), 1)
        ));
        assert!(matches!(
            admission.admit_latest(state("s", 3)),
            (Ok(Admitted::Queued), 1)
        ));
        let key = running.key().clone();
        let chat = admission.next(&key).expect("the chat request keeps its place");
        assert_eq!(chat.request().kind, RequestKind::Chat);
        let latest = admission.next(&key).expect("the latest state");
        assert!(latest.request().message.starts_with(r#"{"player_pos": [3, 0]"#));
        assert!(admission.next(&key).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn the_retry_hint_follows_the_drain_rate() {
        let (engine, _state) = EngineHandle::scripted(EngineState::Ready);
        let admission = Admission::new(settings(Duration::from_secs(30)), engine);
        assert_eq!(admission.retry_after(), drain::RETRY_WITHOUT_SAMPLES);
        // Two answered requests a second for 10 s.
        for i in 0..20 {
            tokio::time::advance(Duration::from_millis(500)).await;
            drop(run(admission.admit(request(&format!("s{i}")))));
        }
        // 8 accepted and waiting, draining at 2/s: 4 s.
        let waiting: Vec<_> = (0..8).map(|i| admission.admit(request(&format!("w{i}")))).collect();
        assert_eq!(waiting.len(), 8);
        assert_eq!(admission.retry_after(), Duration::from_secs(4));
    }
}
