//! Admission: the one place that decides whether a request is refused, waits, or runs.
//!
//! [`Admission::admit`] is the entry point for a parsed request: it refuses while draining, when global capacity
//! (`--max-queued`) is spent, or when the session's lane is full; otherwise it hands back a [`Ticket`] to run now
//! or queues the ticket behind the session's running request. When its turn comes, a ticket waits at
//! [`Admission::engine_slot`] for a ready engine (up to `--engine-wait`) and an in-flight slot (`--max-inflight`).
//! Every refusal is a typed [`Refusal`], whose metric label and reply text come from one table.
//!
//! - `lanes`: per-session FIFO lanes with bounded queues;
//! - `capacity`: the semaphores behind the RAII permits; capacity comes back when a ticket or slot is dropped;
//! - [`refusal`]: the refusal table.

mod capacity;
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
use mqtt_llm_protocol::wire::{ChatRequest, ReplyTarget};

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

    /// The next ticket of a lane the caller owns, or `None` (and the lane becomes idle).
    pub fn next(&self, key: &SessionKey) -> Option<Ticket> {
        self.inner.lanes.next(key)
    }

    /// A ticket's turn has come: wait for a ready engine (up to `--engine-wait`), then for an in-flight slot.
    pub async fn engine_slot(&self, _ticket: &Ticket) -> Result<EngineSlot, Refusal> {
        let inner = &self.inner;
        if !inner.engine.state().is_ready() && !inner.engine.wait_until_ready(inner.engine_wait).await {
            return Err(Refusal::EngineNotReady);
        }
        Ok(EngineSlot {
            _inflight: inner.capacity.acquire_inflight().await,
        })
    }

    /// Shutdown has started: refuse every new request from now on.
    pub fn stop_admitting(&self) {
        self.inner.draining.store(true, Ordering::SeqCst);
    }

    /// Sessions with a running request.
    pub fn active_lanes(&self) -> usize {
        self.inner.lanes.active()
    }
}
