//! The engine core: one task that owns the waiting queue, the running batch, the prefix cache and
//! the clock of the simulation.
//!
//! # Theory of operation
//! Requests arrive over a bounded `mpsc` ([`EngineHandle::submit`]) and wait in a queue ordered by
//! arrival (`fcfs`) or by `(priority, arrival)` (`priority`). The core runs in *steps*, like
//! vLLM's v1 scheduler:
//! 1. every running sequence that has finished prefill takes one token of the step's budget
//!    (`--max-num-batched-tokens`); sequences still prefilling get the next chunk of their
//!    uncached prompt; waiting requests are admitted while fewer than `--max-num-seqs` run, budget
//!    is left and the KV cache has room for their prompt. Admission looks the prompt up in the
//!    prefix cache: cached tokens are not prefilled.
//! 2. the step takes `prefill tokens x --sim-prefill-us-per-token`, plus `--sim-itl-ms` if any
//!    sequence decodes. With both knobs at 0 steps take no time: the core never sleeps, runs up
//!    to `MAX_BURST_STEPS` (64) of them back to back and then yields to the runtime.
//! 3. at the end of the step a sequence whose prefill completed has its first token (and its
//!    full blocks enter the prefix cache); a decoding sequence has one more; one that reached
//!    its `gen_len` finishes and leaves the batch. A timed step sends each sequence its token at
//!    once; tokens of zero-length steps are sent together ([`Output`]) at the end of the burst,
//!    when a timed step starts, or when the sequence finishes, since no simulated time passed.
//!
//! # Faults
//! [`Faults`] reproduce a dying or hung engine core. With `crash_after = N` the core, once the
//! N-th request (in submission order) has had its first token sent, stops stepping and cancels
//! [`Faults::fatal`]; the API server then has the EngineCore process die and cancels
//! [`Faults::dead`]. With `hang_after = N` the core stops stepping after the step that admitted
//! the N-th request: it sends what that step produced and then nothing, reads no submissions and
//! no aborts, and publishes no statistics. Either way a stopped core still ends on shutdown (after
//! `--shutdown-timeout`, since it cannot drain) and ends at once, dropping every request, when
//! [`Faults::dead`] is cancelled.
//!
//! A request is aborted when its [`RequestStream`] is dropped (a message on the abort channel) or
//! when sending it an output fails. On shutdown the core stops taking requests, keeps stepping
//! until the batch is empty or `--shutdown-timeout` passes, then drops everything (the
//! streams see the end of their channel).

mod engine;
mod handle;
mod seq;
#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use engine::Engine;
pub use handle::{EngineError, EngineHandle, EngineRequest, Output, RequestStream};

use super::config::SimConfig;
use super::metrics::EngineStats;

/// Requests that may sit in the submission channel before `submit` waits.
const SUBMISSION_QUEUE: usize = 4096;
/// Zero-length steps run back to back, reporting their tokens together, before the core yields.
const MAX_BURST_STEPS: u32 = 64;
/// A step that starts this late after the previous one starts from "now" instead of catching up.
const MAX_TIMER_SLACK: Duration = Duration::from_millis(5);

/// The engine knobs, taken from [`SimConfig`].
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub max_num_seqs: u32,
    pub max_num_batched_tokens: u32,
    pub prefill_per_token: Duration,
    pub itl: Duration,
    pub kv_blocks: u32,
    pub prefix_caching: bool,
    pub priority_scheduling: bool,
    pub shutdown_timeout: Duration,
    pub max_num_queued_reqs: Option<u32>,
    pub faults: Faults,
}

/// Fault injection; see the module documentation.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Stop and cancel `fatal` once this request (1-based submission order) has its first token.
    pub crash_after: Option<u64>,
    /// Stop stepping after the step that admitted this request.
    pub hang_after: Option<u64>,
    /// Cancelled by the core when it reaches `crash_after`.
    pub fatal: CancellationToken,
    /// Cancelled by the API server when the engine core is dead: drop every request now.
    pub dead: CancellationToken,
}

impl EngineConfig {
    pub fn from_sim(cfg: &SimConfig) -> Self {
        let SimConfig {
            engine, timing, faults, ..
        } = cfg;
        Self {
            max_num_seqs: engine.max_num_seqs,
            max_num_batched_tokens: engine.max_num_batched_tokens,
            prefill_per_token: timing.prefill_per_token,
            itl: timing.itl,
            kv_blocks: engine.kv_blocks,
            prefix_caching: engine.prefix_caching,
            priority_scheduling: engine.scheduling == super::cli::SchedulingPolicy::Priority,
            shutdown_timeout: cfg.server.shutdown_timeout,
            max_num_queued_reqs: engine.max_num_queued_reqs,
            faults: Faults {
                crash_after: faults.crash_after,
                hang_after: faults.hang_after,
                ..Faults::default()
            },
        }
    }
}

/// Start the engine core on `tracker`. It runs until `shutdown` (then drains) or until every
/// handle is dropped.
pub fn spawn_engine(
    config: EngineConfig,
    stats: Arc<Mutex<EngineStats>>,
    shutdown: CancellationToken,
    tracker: &TaskTracker,
) -> EngineHandle {
    let (submit_tx, submit_rx) = mpsc::channel(SUBMISSION_QUEUE);
    let (abort_tx, abort_rx) = mpsc::unbounded_channel();
    let waiting = Arc::new(AtomicUsize::new(0));
    let handle = EngineHandle {
        submissions: submit_tx,
        aborts: abort_tx,
        next_id: Arc::new(AtomicU64::new(1)),
        waiting: waiting.clone(),
        max_queued: config.max_num_queued_reqs.map(|n| n as usize),
    };
    let engine = Engine::new(config, submit_rx, abort_rx, shutdown, waiting, stats);
    tracker.spawn(engine.run());
    handle
}
