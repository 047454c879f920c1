//! The stream frames of one request: deltas coalesced every `--stream-interval-ms`, then a done or error frame.
//! Frames carry `seq` 0, 1, 2, ... in publish order; they leave through the [`Publisher`].

use serde::Serialize;
use tokio::time::{Duration, Instant};

use crate::metrics;
use crate::mqtt::publisher::Publisher;
use mqtt_llm_protocol::wire::{DeltaFrame, DoneFrame, ErrorFrame, FrameError, FrameUsage, ReplyTarget};

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
    last_flush: Option<Instant>,
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
            last_flush: None,
        }
    }

    /// Add visible text; publishes at once when the interval has passed since the last frame (the first delta
    /// goes out immediately, so streaming never delays the first token).
    pub async fn push(&mut self, text: &str) {
        if text.is_empty() {
            return;
        }
        self.pending.push_str(text);
        let due = match self.last_flush {
            None => true,
            Some(t) => self.interval.is_zero() || t.elapsed() >= self.interval,
        };
        if due {
            self.flush().await;
        }
    }

    /// When pending text must go out even if no further delta arrives.
    pub fn deadline(&self) -> Option<Instant> {
        if self.pending.is_empty() {
            None
        } else {
            self.last_flush.map(|t| t + self.interval)
        }
    }

    /// Publish pending text as one delta frame.
    pub async fn flush(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let frame = DeltaFrame {
            request_id: self.request_id.clone(),
            seq: self.next_seq(),
            delta: std::mem::take(&mut self.pending),
        };
        self.last_flush = Some(Instant::now());
        self.send(&frame).await;
    }

    pub async fn done(&mut self, finish_reason: String, usage: FrameUsage, ttft: Duration, total: Duration) {
        self.flush().await;
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

    pub async fn error(&mut self, code: &str, message: String) {
        self.flush().await;
        let frame = ErrorFrame {
            request_id: self.request_id.clone(),
            seq: self.next_seq(),
            error: FrameError {
                code: code.to_owned(),
                message,
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
