//! The records of the engine core: a queued request and a running sequence.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::handle::{Output, Submission};
use crate::cache::BlockHash;
use crate::config::BLOCK_SIZE;
use crate::metrics::EngineStats;
use crate::reply::FinishReason;

/// A request in the waiting queue; the heap pops the lowest `(priority, order)` first.
#[derive(Debug)]
pub(super) struct Queued {
    pub(super) priority: i64,
    pub(super) order: u64,
    pub(super) sub: Submission,
}

impl PartialEq for Queued {
    fn eq(&self, other: &Self) -> bool {
        (self.priority, self.order) == (other.priority, other.order)
    }
}
impl Eq for Queued {}
impl PartialOrd for Queued {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Queued {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (other.priority, other.order).cmp(&(self.priority, self.order))
    }
}

/// A request in the running batch.
#[derive(Debug)]
pub(super) struct Seq {
    pub(super) id: u64,
    pub(super) tx: mpsc::UnboundedSender<Output>,
    pub(super) prompt_len: u32,
    pub(super) hashes: Vec<BlockHash>,
    pub(super) gen_len: u32,
    pub(super) finish: FinishReason,
    pub(super) cached: u32,
    /// Prompt tokens still to compute; 0 once the first token is out.
    pub(super) prefill_left: u32,
    /// Prefill tokens scheduled in the current step.
    pub(super) chunk: u32,
    pub(super) generated: u32,
    pub(super) arrival: Instant,
    pub(super) scheduled: Instant,
    pub(super) first_token: Instant,
    /// Tokens generated but not yet sent (zero-length steps are reported in bursts).
    pub(super) unsent: u32,
    /// Whether the unsent tokens include the first one.
    pub(super) unsent_first: bool,
}

impl Seq {
    /// Send the unsent tokens; false if the request's receiver is gone (an abort).
    pub(super) fn flush(&mut self) -> bool {
        if self.unsent == 0 {
            return true;
        }
        let output = if self.unsent_first {
            Output::first(self.cached, self.unsent)
        } else {
            Output::next(self.unsent)
        };
        self.unsent = 0;
        self.unsent_first = false;
        self.tx.send(output).is_ok()
    }

    pub(super) fn blocks(&self) -> u64 {
        u64::from((self.prompt_len + self.generated).div_ceil(BLOCK_SIZE))
    }
}

pub(super) fn record_finished(stats: &mut EngineStats, seq: &Seq, end: Instant) {
    stats.count_finished(seq.finish);
    stats.e2e.observe(secs(end - seq.arrival));
    stats.queue_time.observe(secs(seq.scheduled - seq.arrival));
    stats.inference_time.observe(secs(end - seq.scheduled));
    stats.prefill_time.observe(secs(seq.first_token - seq.scheduled));
    stats.decode_time.observe(secs(end - seq.first_token));
    stats.request_prompt_tokens.observe(f64::from(seq.prompt_len));
    stats.request_generation_tokens.observe(f64::from(seq.generated));
}

pub(super) fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}
