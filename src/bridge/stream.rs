//! The stream frames of one request: deltas coalesced every `--stream-interval-ms`, then a done or error frame.
//! Frames carry `seq` 0, 1, 2, ... in publish order; they leave through the [`Publisher`].
//!
//! A delta frame never makes the request wait: while the broker is behind or away ([`Publisher::try_frame`]
//! refuses), its text stays pending and goes out with a later frame, tried again no sooner than
//! [`BACKLOG_RETRY`]. So the engine's answer is read at the engine's pace whatever the broker does, no text and
//! no `seq` is skipped, and only the cadence of the frames suffers. The last text, the done and the error frame
//! are queued like the final reply that follows them (waiting while the client's queue is full).

use serde::Serialize;
use tokio::time::{Duration, Instant};

use crate::metrics;
use crate::mqtt::publisher::Publisher;
use mqtt_llm_protocol::wire::{DeltaFrame, DoneFrame, ErrorFrame, FrameError, FrameUsage, ReplyTarget};

/// How long a delta frame that the publisher deferred waits at least before it is tried again.
const BACKLOG_RETRY: Duration = Duration::from_millis(50);

/// Publishes one request's stream frames.
#[derive(Debug)]
pub struct StreamSink {
    publisher: Publisher,
    target: ReplyTarget,
    request_id: String,
    project: String,
    seq: u64,
    pending: String,
    interval: Duration,
    /// When pending text may go out next: `None` until the first frame (at once), then the interval after the
    /// last frame, or [`BACKLOG_RETRY`] after a deferral.
    next_at: Option<Instant>,
}

impl StreamSink {
    pub fn new(
        publisher: Publisher,
        target: ReplyTarget,
        request_id: String,
        project: String,
        interval: Duration,
    ) -> Self {
        Self {
            publisher,
            target,
            request_id,
            project,
            seq: 0,
            pending: String::new(),
            interval,
            next_at: None,
        }
    }

    /// Add visible text; publishes at once when the interval has passed since the last frame (the first delta
    /// goes out immediately, so streaming never delays the first token). Never waits on the broker.
    pub async fn push(&mut self, text: &str) {
        if text.is_empty() {
            return;
        }
        self.pending.push_str(text);
        if self.next_at.is_none_or(|t| Instant::now() >= t) {
            self.try_flush();
        }
    }

    /// When pending text must go out even if no further delta arrives.
    pub fn deadline(&self) -> Option<Instant> {
        if self.pending.is_empty() { None } else { self.next_at }
    }

    /// Publish pending text as one delta frame, unless the broker is behind (then it waits for a later frame).
    /// Never waits on the broker.
    pub async fn flush(&mut self) {
        self.try_flush();
    }

    fn try_flush(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let now = Instant::now();
        if self.publisher.backlogged() {
            self.next_at = Some(now + self.interval.max(BACKLOG_RETRY));
            return;
        }
        let frame = DeltaFrame {
            request_id: self.request_id.clone(),
            seq: self.seq,
            delta: std::mem::take(&mut self.pending),
        };
        if self.publisher.try_frame(&self.target, &frame) {
            self.seq += 1;
            self.next_at = Some(now + self.interval);
            metrics::stream_frame(&self.project);
        } else {
            self.pending = frame.delta;
            self.next_at = Some(now + self.interval.max(BACKLOG_RETRY));
        }
    }

    /// Publish the pending text as one delta frame, waiting while the client's queue is full: the text before a
    /// done or error frame.
    async fn flush_all(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let frame = DeltaFrame {
            request_id: self.request_id.clone(),
            seq: self.next_seq(),
            delta: std::mem::take(&mut self.pending),
        };
        self.send(&frame).await;
    }

    pub async fn done(&mut self, finish_reason: String, usage: FrameUsage, ttft: Duration, total: Duration) {
        self.flush_all().await;
        let frame = DoneFrame {
            request_id: self.request_id.clone(),
            seq: self.next_seq(),
            done: true,
            finish_reason,
            usage,
            ttft_ms: millis(ttft),
            total_ms: millis(total),
        };
        self.send(&frame).await;
    }

    pub async fn error(&mut self, code: &str, message: String, retry_after: Option<Duration>) {
        self.flush_all().await;
        let frame = ErrorFrame {
            request_id: self.request_id.clone(),
            seq: self.next_seq(),
            error: FrameError {
                code: code.to_owned(),
                message,
                retry_after_ms: retry_after.map(millis),
            },
        };
        self.send(&frame).await;
    }

    fn next_seq(&mut self) -> u64 {
        let seq = self.seq;
        self.seq += 1;
        seq
    }

    async fn send(&self, frame: &impl Serialize) {
        if self.publisher.frame(&self.target, frame).await {
            metrics::stream_frame(&self.project);
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
