//! The API-server side of the engine core: [`EngineHandle::submit`] enqueues a request and returns
//! its [`RequestStream`]; dropping the stream before the last token aborts the request.

use std::future::poll_fn;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};

use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::cache::BlockHash;
use crate::reply::FinishReason;

/// One request as the engine sees it: sizes and cache keys, not text.
#[derive(Debug, Clone)]
pub struct EngineRequest {
    pub prompt_len: u32,
    /// Hashes of the prompt's full blocks (see [`crate::cache::block_hashes`]).
    pub block_hashes: Vec<BlockHash>,
    /// Tokens to generate (at least 1): the engine finishes the request after this many.
    pub gen_len: u32,
    /// Reported to the metrics when the request completes.
    pub finish: FinishReason,
    /// Lower runs first under `--scheduling-policy priority`.
    pub priority: i64,
}

/// What the engine reports to a request: the tokens generated since the previous report. A
/// timed step reports at once; consecutive zero-length steps (no simulated time passes) are
/// reported together, so a fast engine costs one wake-up per burst instead of one per token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Output {
    /// `Some(cached prompt tokens)` on a request's first output: prefill is done.
    pub cached_tokens: Option<u32>,
    /// Tokens generated since the previous output (at least 1).
    pub tokens: u32,
}

impl Output {
    /// The first output of a request, carrying its first `tokens` tokens.
    pub fn first(cached_tokens: u32, tokens: u32) -> Self {
        Self {
            cached_tokens: Some(cached_tokens),
            tokens,
        }
    }

    /// A later output.
    pub fn next(tokens: u32) -> Self {
        Self {
            cached_tokens: None,
            tokens,
        }
    }
}

/// Why a request could not be submitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    #[error("the engine is shut down")]
    Dead,
    #[error("the waiting queue is full")]
    QueueFull,
}

/// A submitted request in flight to the engine.
#[derive(Debug)]
pub(super) struct Submission {
    pub id: u64,
    pub req: EngineRequest,
    pub tx: mpsc::UnboundedSender<Output>,
    pub arrival: Instant,
}

/// Cheap to clone; every clone submits to the same engine core.
#[derive(Debug, Clone)]
pub struct EngineHandle {
    pub(super) submissions: mpsc::Sender<Submission>,
    pub(super) aborts: mpsc::UnboundedSender<u64>,
    pub(super) next_id: Arc<AtomicU64>,
    /// Requests submitted but not yet running (the `num_requests_waiting` gauge).
    pub(super) waiting: Arc<AtomicUsize>,
    pub(super) max_queued: Option<usize>,
}

impl EngineHandle {
    /// Enqueue a request. Waits only while the submission queue is full (backpressure).
    pub async fn submit(&self, req: EngineRequest) -> Result<RequestStream, EngineError> {
        if let Some(limit) = self.max_queued
            && self.waiting.load(Ordering::Relaxed) >= limit
        {
            return Err(EngineError::QueueFull);
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::unbounded_channel();
        let remaining = req.gen_len;
        let counted = WaitingGuard::count(&self.waiting);
        let submission = Submission {
            id,
            req,
            tx,
            arrival: Instant::now(),
        };
        self.submissions.send(submission).await.map_err(|_| EngineError::Dead)?;
        // From here on the engine owns the waiting count of this request.
        counted.disarm();
        Ok(RequestStream {
            id,
            rx,
            aborts: self.aborts.clone(),
            remaining,
        })
    }

    /// Requests submitted and not yet admitted to the running batch.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }
}

/// Undoes the waiting count if the submission never reaches the engine (send failed or the
/// submitting future was dropped while the queue was full).
struct WaitingGuard<'a> {
    waiting: &'a AtomicUsize,
    armed: bool,
}

impl<'a> WaitingGuard<'a> {
    fn count(waiting: &'a AtomicUsize) -> Self {
        waiting.fetch_add(1, Ordering::Relaxed);
        Self { waiting, armed: true }
    }

    fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for WaitingGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.waiting.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// The outputs of one request (their `tokens` add up to `gen_len`). Dropping it before the last output aborts the request and frees
/// its batch slot.
#[derive(Debug)]
pub struct RequestStream {
    id: u64,
    rx: mpsc::UnboundedReceiver<Output>,
    aborts: mpsc::UnboundedSender<u64>,
    /// Outputs still to come; 0 once the request finished normally.
    remaining: u32,
}

impl RequestStream {
    /// The next output; `None` once the request finished, or early if the engine went away.
    pub async fn recv(&mut self) -> Option<Output> {
        poll_fn(|cx| self.poll_recv(cx)).await
    }

    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Output>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        let polled = self.rx.poll_recv(cx);
        if let Poll::Ready(Some(output)) = polled {
            self.remaining = self.remaining.saturating_sub(output.tokens);
        }
        polled
    }

    /// Outputs still expected.
    pub fn remaining(&self) -> u32 {
        self.remaining
    }
}

impl Drop for RequestStream {
    fn drop(&mut self) {
        if self.remaining > 0 {
            // The engine may already be gone; then there is nothing to abort.
            let _ = self.aborts.send(self.id);
        }
    }
}
