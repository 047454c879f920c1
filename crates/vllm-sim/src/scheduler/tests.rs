//! Engine-core timing on a paused clock: every instant below is exact.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::*;
use crate::cache::block_hashes;
use crate::metrics::EngineStats;
use crate::reply::FinishReason;

const MS: Duration = Duration::from_millis(1);

struct Harness {
    handle: EngineHandle,
    stats: Arc<Mutex<EngineStats>>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
}

impl Harness {
    fn new(config: EngineConfig) -> Self {
        let stats = Arc::new(Mutex::new(EngineStats::new(4096)));
        let shutdown = CancellationToken::new();
        let tracker = TaskTracker::new();
        let handle = spawn_engine(config, stats.clone(), shutdown.clone(), &tracker);
        Self {
            handle,
            stats,
            shutdown,
            tracker,
        }
    }

    async fn submit(&self, prompt: &[u32], gen_len: u32, priority: i64) -> RequestStream {
        let req = EngineRequest {
            prompt_len: prompt.len() as u32,
            block_hashes: block_hashes(prompt, None),
            gen_len,
            finish: FinishReason::Stop,
            priority,
        };
        self.handle.submit(req).await.unwrap()
    }

    /// Submit at priority 0 and wait for the first output.
    async fn started(&self, prompt: &[u32], gen_len: u32) -> RequestStream {
        let mut stream = self.submit(prompt, gen_len, 0).await;
        assert!(stream.recv().await.is_some(), "the first output");
        stream
    }

    fn stats(&self) -> EngineStats {
        self.stats.lock().unwrap().clone()
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }
}

fn config() -> EngineConfig {
    EngineConfig {
        max_num_seqs: 256,
        max_num_batched_tokens: 8192,
        prefill_per_token: Duration::ZERO,
        itl: Duration::ZERO,
        kv_blocks: 4096,
        prefix_caching: true,
        priority_scheduling: false,
        shutdown_timeout: Duration::ZERO,
        max_num_queued_reqs: None,
        faults: Faults::default(),
    }
}

/// [`config`] with decode steps of 10 ms.
fn stepped() -> EngineConfig {
    EngineConfig {
        itl: 10 * MS,
        ..config()
    }
}

/// [`stepped`] with one batch slot.
fn one_slot() -> EngineConfig {
    EngineConfig {
        max_num_seqs: 1,
        ..stepped()
    }
}

/// A request of `prompt_len` uncached tokens and one generated token.
fn bare_request(prompt_len: u32) -> EngineRequest {
    EngineRequest {
        prompt_len,
        block_hashes: Vec::new(),
        gen_len: 1,
        finish: FinishReason::Stop,
        priority: 0,
    }
}

fn prompt(n: u32, salt: u32) -> Vec<u32> {
    (0..n).map(|i| i * 7 + salt).collect()
}

/// Receive every output; returns the instant of each.
async fn drain(stream: &mut RequestStream) -> Vec<Instant> {
    let mut times = Vec::new();
    while stream.recv().await.is_some() {
        times.push(Instant::now());
    }
    times
}

#[tokio::test(start_paused = true)]
async fn ttft_is_the_prefill_cost_and_decode_steps_follow() {
    let h = Harness::new(EngineConfig {
        prefill_per_token: Duration::from_micros(1000),
        ..stepped()
    });
    let t0 = Instant::now();
    let mut s = h.submit(&prompt(100, 0), 4, 0).await;
    assert_eq!(s.recv().await, Some(Output::first(0, 1)));
    assert_eq!(Instant::now() - t0, 100 * MS, "100 uncached tokens x 1 ms");
    let rest = drain(&mut s).await;
    let offsets: Vec<_> = rest.iter().map(|t| *t - t0).collect();
    assert_eq!(offsets, [110 * MS, 120 * MS, 130 * MS]);
    let stats = h.stats();
    assert_eq!(stats.ttft.count(), 1);
    assert!((stats.ttft.sum() - 0.1).abs() < 1e-9);
    assert_eq!(stats.itl.count(), 3);
    assert_eq!(stats.generation_tokens, 4);
    assert_eq!(stats.prompt_tokens, 100);
    assert_eq!(stats.finished(FinishReason::Stop), 1);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn decode_steps_are_shared_by_the_batch() {
    let h = Harness::new(stepped());
    let t0 = Instant::now();
    let mut a = h.submit(&prompt(20, 1), 5, 0).await;
    let mut b = h.submit(&prompt(20, 2), 5, 0).await;
    let (ta, tb) = tokio::join!(drain(&mut a), drain(&mut b));
    // Both prefills are free; 4 decode steps of 10 ms serve both sequences at once.
    assert_eq!(*ta.last().unwrap() - t0, 40 * MS);
    assert_eq!(*tb.last().unwrap() - t0, 40 * MS);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn max_num_seqs_makes_the_third_request_wait() {
    let h = Harness::new(EngineConfig {
        max_num_seqs: 2,
        ..stepped()
    });
    let t0 = Instant::now();
    let mut a = h.submit(&prompt(20, 1), 5, 0).await;
    let mut b = h.submit(&prompt(20, 2), 5, 0).await;
    let mut c = h.submit(&prompt(20, 3), 5, 0).await;
    assert!(a.recv().await.is_some());
    let stats = h.stats();
    assert_eq!((stats.running, stats.waiting), (2, 1));
    let (_, _, tc) = tokio::join!(drain(&mut a), drain(&mut b), async {
        let first = c.recv().await.map(|_| Instant::now());
        (first, drain(&mut c).await)
    });
    // a and b finish at 40 ms; c is admitted then and gets its first token at once.
    assert_eq!(tc.0.unwrap() - t0, 40 * MS);
    assert_eq!(*tc.1.last().unwrap() - t0, 80 * MS);
    let stats = h.stats();
    assert_eq!((stats.running, stats.waiting), (0, 0));
    assert_eq!(stats.queue_time.count(), 3);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn priority_policy_admits_lower_values_first() {
    let h = Harness::new(EngineConfig {
        max_num_seqs: 1,
        priority_scheduling: true,
        ..stepped()
    });
    let mut first = h.started(&prompt(20, 1), 2).await;
    let mut late = h.submit(&prompt(20, 2), 2, 5).await;
    let mut urgent = h.submit(&prompt(20, 3), 2, -1).await;
    let (_, tl, tu) = tokio::join!(drain(&mut first), drain(&mut late), drain(&mut urgent));
    assert!(tu.first().unwrap() < tl.first().unwrap(), "priority -1 runs before 5");
    assert!(
        tu.last().unwrap() <= tl.first().unwrap(),
        "one slot: late waits for urgent"
    );
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn repeated_prompt_hits_the_prefix_cache() {
    let h = Harness::new(EngineConfig {
        prefill_per_token: Duration::from_micros(1000),
        ..config()
    });
    let p = prompt(40, 9); // 2 full blocks + 8 tokens
    let mut a = h.submit(&p, 1, 0).await;
    assert_eq!(a.recv().await, Some(Output::first(0, 1)));
    let t1 = Instant::now();
    let mut b = h.submit(&p, 1, 0).await;
    assert_eq!(b.recv().await, Some(Output::first(32, 1)));
    assert_eq!(Instant::now() - t1, 8 * MS, "only the 8 uncached tokens are prefilled");
    let stats = h.stats();
    assert_eq!(stats.prefix_cache_queries, 80);
    assert_eq!(stats.prefix_cache_hits, 32);
    assert_eq!(stats.prompt_tokens_cached, 32);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn long_prompts_are_prefilled_in_chunks_of_the_token_budget() {
    let h = Harness::new(EngineConfig {
        max_num_batched_tokens: 64,
        prefill_per_token: Duration::from_micros(1000),
        ..config()
    });
    let t0 = Instant::now();
    let _a = h.started(&prompt(100, 4), 1).await;
    // Chunks of 64 and 36 tokens: the total prefill time is unchanged.
    assert_eq!(Instant::now() - t0, 100 * MS);
    assert_eq!(h.stats().iteration_tokens.count(), 2);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn dropping_the_stream_aborts_and_frees_the_slot() {
    let h = Harness::new(one_slot());
    let t0 = Instant::now();
    let a = h.started(&prompt(20, 1), 1000).await;
    let mut b = h.submit(&prompt(20, 2), 3, 0).await;
    tokio::time::sleep(25 * MS).await;
    drop(a);
    let tb = drain(&mut b).await;
    assert_eq!(tb.len(), 3);
    // a is aborted before the next step; b runs right after.
    assert!(*tb.last().unwrap() - t0 <= 60 * MS);
    let stats = h.stats();
    assert_eq!(stats.finished(FinishReason::Abort), 1);
    assert_eq!(stats.finished(FinishReason::Stop), 1);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn aborting_a_waiting_request_removes_it_from_the_queue() {
    let h = Harness::new(one_slot());
    let mut a = h.started(&prompt(20, 1), 5).await;
    let b = h.submit(&prompt(20, 2), 5, 0).await;
    assert_eq!(h.handle.waiting(), 1);
    drop(b);
    drain(&mut a).await;
    assert_eq!(h.handle.waiting(), 0);
    assert_eq!(h.stats().finished(FinishReason::Abort), 1);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn queue_limit_rejects_with_queue_full() {
    let h = Harness::new(EngineConfig {
        max_num_seqs: 1,
        max_num_queued_reqs: Some(1),
        ..stepped()
    });
    let _a = h.started(&prompt(20, 1), 5).await;
    let _b = h.submit(&prompt(20, 2), 5, 0).await;
    assert_eq!(
        h.handle.submit(bare_request(4)).await.unwrap_err(),
        EngineError::QueueFull
    );
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn shutdown_drains_within_the_timeout_then_cuts() {
    let h = Harness::new(EngineConfig {
        shutdown_timeout: Duration::from_millis(35),
        ..stepped()
    });
    let mut short = h.submit(&prompt(20, 1), 3, 0).await;
    let mut long = h.submit(&prompt(20, 2), 100, 0).await;
    assert!(short.recv().await.is_some());
    h.shutdown.cancel();
    let (ts, tl) = tokio::join!(drain(&mut short), drain(&mut long));
    assert_eq!(ts.len(), 2, "the short request completes during the drain");
    assert!(tl.len() < 99, "the long one is cut at the deadline");
    assert!(long.remaining() > 0);
    assert!(h.handle.submit(bare_request(1)).await.is_err());
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn zero_length_steps_are_reported_in_one_burst() {
    let h = Harness::new(config());
    let t0 = Instant::now();
    let mut s = h.submit(&prompt(20, 1), 32, 0).await;
    // No simulated time passes, so all 32 tokens arrive together: one wake-up, not 32.
    assert_eq!(s.recv().await, Some(Output::first(0, 32)));
    assert_eq!(s.recv().await, None);
    assert_eq!(Instant::now(), t0);
    let stats = h.stats();
    assert_eq!(stats.generation_tokens, 32);
    assert_eq!(stats.itl.count(), 31);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn kv_cache_usage_counts_blocks_of_running_sequences() {
    let h = Harness::new(EngineConfig {
        kv_blocks: 100,
        ..stepped()
    });
    let mut a = h.started(&prompt(160, 1), 5).await;
    // 160 prompt tokens + 1 generated token = 11 blocks of 16.
    assert!((h.stats().kv_cache_usage - 0.11).abs() < 1e-9);
    drain(&mut a).await;
    assert_eq!(h.stats().kv_cache_usage, 0.0);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_full_kv_cache_holds_requests_back() {
    let h = Harness::new(EngineConfig {
        kv_blocks: 20,
        ..stepped()
    });
    let mut a = h.submit(&prompt(160, 1), 3, 0).await;
    let mut b = h.submit(&prompt(160, 2), 3, 0).await;
    let mut c = h.submit(&prompt(160, 3), 3, 0).await;
    assert!(a.recv().await.is_some());
    let stats = h.stats();
    assert_eq!((stats.running, stats.waiting), (2, 1), "10 + 10 blocks fill the cache");
    assert_eq!(stats.kv_cache_usage, 1.0);
    let (_, _, tc) = tokio::join!(drain(&mut a), drain(&mut b), drain(&mut c));
    assert_eq!(tc.len(), 3);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn crash_after_n_stops_after_the_first_token_of_request_n() {
    let faults = Faults {
        crash_after: Some(2),
        ..Faults::default()
    };
    let (fatal, dead) = (faults.fatal.clone(), faults.dead.clone());
    let h = Harness::new(EngineConfig { faults, ..stepped() });
    let mut first = h.submit(&prompt(20, 1), 3, 0).await;
    assert_eq!(drain(&mut first).await.len(), 3);
    assert!(!fatal.is_cancelled());
    let mut second = h.submit(&prompt(20, 2), 50, 0).await;
    assert_eq!(second.recv().await, Some(Output::first(0, 1)));
    tokio::time::timeout(Duration::from_secs(1), fatal.cancelled())
        .await
        .expect("the core reports its fatal error");
    // Stopped: no second token, however long we wait.
    assert!(
        tokio::time::timeout(Duration::from_secs(60), second.recv())
            .await
            .is_err(),
        "a crashed core produces nothing"
    );
    let generated = h.stats().generation_tokens;
    dead.cancel();
    assert_eq!(second.recv().await, None, "declared dead: the request is dropped");
    assert!(second.remaining() > 0);
    assert_eq!(h.stats().generation_tokens, generated);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn hang_after_n_freezes_the_core_but_shutdown_still_ends_it() {
    let faults = Faults {
        hang_after: Some(1),
        ..Faults::default()
    };
    let h = Harness::new(EngineConfig { faults, ..stepped() });
    let mut a = h.submit(&prompt(20, 1), 50, 0).await;
    assert_eq!(
        a.recv().await,
        Some(Output::first(0, 1)),
        "the admitting step completes"
    );
    let mut b = h.submit(&prompt(20, 2), 5, 0).await;
    assert!(tokio::time::timeout(Duration::from_secs(60), a.recv()).await.is_err());
    assert!(tokio::time::timeout(Duration::from_secs(60), b.recv()).await.is_err());
    let stats = h.stats();
    assert_eq!((stats.running, stats.generation_tokens), (1, 1));
    h.shutdown.cancel();
    assert_eq!(a.recv().await, None);
    assert_eq!(b.recv().await, None);
    h.tracker.close();
    h.tracker.wait().await;
}
