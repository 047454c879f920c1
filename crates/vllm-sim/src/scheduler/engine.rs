//! The engine-core actor itself: queue, batch, steps (see the parent module's theory of
//! operation).

use std::collections::{BinaryHeap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::handle::Submission;
use super::seq::{Queued, Seq, record_finished, secs};
use super::{EngineConfig, MAX_BURST_STEPS, MAX_TIMER_SLACK};
use crate::cache::PrefixCache;
use crate::config::BLOCK_SIZE;
use crate::metrics::EngineStats;
use crate::reply::FinishReason;

pub(super) struct Engine {
    config: EngineConfig,
    submissions: mpsc::Receiver<Submission>,
    aborts: mpsc::UnboundedReceiver<u64>,
    shutdown: CancellationToken,
    waiting: BinaryHeap<Queued>,
    /// Ids really waiting; an aborted request stays in the heap until popped, but leaves this set.
    waiting_ids: HashSet<u64>,
    /// Shared with the handles: submitted but not admitted (includes the channel).
    waiting_count: Arc<AtomicUsize>,
    running: Vec<Seq>,
    cache: PrefixCache,
    stats: Arc<Mutex<EngineStats>>,
    /// Arrival counter (the FCFS tie-breaker).
    arrivals: u64,
    /// `(scheduled end, actual end)` of the previous step, `None` after the core went idle.
    last_step: Option<(Instant, Instant)>,
    /// Zero-length steps since the last flush and yield.
    burst: u32,
    draining: bool,
    /// Set during a step that reached a fault: the core stops after it.
    stop_after_step: Option<Stop>,
    /// The core no longer steps (hung, or crashed and waiting to be declared dead).
    stopped: bool,
}

/// Why the core stops stepping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    Hang,
    Crash,
}

enum IdleEvent {
    Shutdown,
    Submitted(Option<Submission>),
    Aborted(u64),
}

impl Engine {
    pub(super) fn new(
        config: EngineConfig,
        submissions: mpsc::Receiver<Submission>,
        aborts: mpsc::UnboundedReceiver<u64>,
        shutdown: CancellationToken,
        waiting_count: Arc<AtomicUsize>,
        stats: Arc<Mutex<EngineStats>>,
    ) -> Self {
        let cache = if config.prefix_caching {
            PrefixCache::new(config.kv_blocks)
        } else {
            PrefixCache::disabled()
        };
        Self {
            config,
            submissions,
            aborts,
            shutdown,
            waiting: BinaryHeap::new(),
            waiting_ids: HashSet::new(),
            waiting_count,
            running: Vec::new(),
            cache,
            stats,
            arrivals: 0,
            last_step: None,
            burst: 0,
            draining: false,
            stop_after_step: None,
            stopped: false,
        }
    }

    pub(super) async fn run(mut self) {
        let mut drain_deadline = None;
        let dead = self.config.faults.dead.clone();
        loop {
            if dead.is_cancelled() {
                break;
            }
            if !self.draining && self.shutdown.is_cancelled() {
                drain_deadline = Some(Instant::now() + self.config.shutdown_timeout);
                self.begin_drain();
            }
            let idle = self.running.is_empty() && self.waiting_ids.is_empty();
            if let Some(deadline) = drain_deadline
                && (idle || Instant::now() >= deadline)
            {
                break;
            }
            if self.stopped {
                // A stopped core reads nothing and steps nothing; it only ends.
                let deadline = drain_deadline.unwrap_or_else(Instant::now);
                tokio::select! {
                    () = dead.cancelled() => {}
                    () = self.shutdown.cancelled(), if !self.draining => {}
                    () = tokio::time::sleep_until(deadline), if drain_deadline.is_some() => {}
                }
                continue;
            }
            if idle {
                self.last_step = None;
                let event = tokio::select! {
                    biased;
                    () = dead.cancelled() => IdleEvent::Shutdown,
                    () = self.shutdown.cancelled(), if !self.draining => IdleEvent::Shutdown,
                    Some(id) = self.aborts.recv() => IdleEvent::Aborted(id),
                    sub = self.submissions.recv() => IdleEvent::Submitted(sub),
                };
                match event {
                    IdleEvent::Shutdown => {}
                    IdleEvent::Aborted(id) => self.abort(id),
                    IdleEvent::Submitted(Some(sub)) => self.enqueue(sub),
                    IdleEvent::Submitted(None) => break,
                }
                continue;
            }
            while let Ok(id) = self.aborts.try_recv() {
                self.abort(id);
            }
            while let Ok(sub) = self.submissions.try_recv() {
                self.enqueue(sub);
            }
            self.step().await;
            if let Some(stop) = self.stop_after_step.take() {
                // What the step produced goes out; then nothing more.
                self.flush_all();
                self.stopped = true;
                if stop == Stop::Crash {
                    self.config.faults.fatal.cancel();
                }
            }
        }
        self.abort_all();
    }

    fn lock_stats(&self) -> MutexGuard<'_, EngineStats> {
        self.stats.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn begin_drain(&mut self) {
        self.draining = true;
        self.submissions.close();
    }

    fn enqueue(&mut self, sub: Submission) {
        if self.draining {
            // Rejected: dropping the sender ends the request's stream without output.
            self.waiting_count.fetch_sub(1, Ordering::Relaxed);
            return;
        }
        self.arrivals += 1;
        let priority = if self.config.priority_scheduling {
            sub.req.priority
        } else {
            0
        };
        self.waiting_ids.insert(sub.id);
        self.waiting.push(Queued {
            priority,
            order: self.arrivals,
            sub,
        });
    }

    fn abort(&mut self, id: u64) {
        if let Some(pos) = self.running.iter().position(|s| s.id == id) {
            self.running.remove(pos);
        } else if self.waiting_ids.remove(&id) {
            self.waiting_count.fetch_sub(1, Ordering::Relaxed);
        } else {
            return;
        }
        let mut stats = self.lock_stats();
        stats.count_finished(FinishReason::Abort);
        stats.running = self.running.len();
        stats.waiting = self.waiting_count.load(Ordering::Relaxed);
    }

    fn abort_all(&mut self) {
        let dropped = self.running.len() + self.waiting_ids.len();
        self.running.clear();
        self.waiting.clear();
        self.waiting_ids.clear();
        let mut stats = self.lock_stats();
        for _ in 0..dropped {
            stats.count_finished(FinishReason::Abort);
        }
        stats.running = 0;
        stats.waiting = 0;
        stats.kv_cache_usage = 0.0;
    }

    /// One engine step: schedule, "compute", emit.
    async fn step(&mut self) {
        let now = Instant::now();
        let start = match self.last_step {
            Some((scheduled_end, _)) if now.saturating_duration_since(scheduled_end) < MAX_TIMER_SLACK => scheduled_end,
            _ => now,
        };
        let mut budget = self.config.max_num_batched_tokens;
        let mut held_blocks = 0u64;
        let mut decoding = 0u32;
        for seq in &self.running {
            held_blocks += seq.blocks();
            if seq.prefill_left == 0 {
                decoding += 1;
            }
        }
        budget = budget.saturating_sub(decoding);
        let mut prefill_tokens = 0u32;
        for seq in self.running.iter_mut().filter(|s| s.prefill_left > 0) {
            seq.chunk = seq.prefill_left.min(budget);
            budget -= seq.chunk;
            prefill_tokens += seq.chunk;
        }
        let (queries, hits) = self.admit(now, &mut budget, &mut held_blocks, &mut prefill_tokens);

        let mut duration = self.config.prefill_per_token * prefill_tokens;
        if decoding > 0 {
            duration += self.config.itl;
        }
        let deadline = start + duration;
        let timed = !duration.is_zero();
        if timed {
            self.flush_all();
            self.burst = 0;
            let dead = self.config.faults.dead.clone();
            tokio::select! {
                () = tokio::time::sleep_until(deadline) => {}
                // The step never completes: the core is gone.
                () = dead.cancelled() => return,
            }
        } else {
            self.burst += 1;
            if self.burst >= MAX_BURST_STEPS {
                self.flush_all();
                self.burst = 0;
                tokio::task::yield_now().await;
            }
        }
        let end = Instant::now();
        self.complete(end, queries, hits, prefill_tokens, timed);
        self.last_step = Some((deadline, end));
    }

    /// Send every sequence its unsent tokens; a sequence whose receiver is gone is aborted.
    fn flush_all(&mut self) {
        let before = self.running.len();
        self.running.retain_mut(Seq::flush);
        let aborted = before - self.running.len();
        if aborted > 0 {
            let mut stats = self.lock_stats();
            for _ in 0..aborted {
                stats.count_finished(FinishReason::Abort);
            }
        }
    }

    /// Admit waiting requests into the batch; returns the prefix-cache `(queries, hits)` in tokens.
    fn admit(&mut self, now: Instant, budget: &mut u32, held_blocks: &mut u64, prefill_tokens: &mut u32) -> (u64, u64) {
        let (mut queries, mut hits, mut rejected) = (0u64, 0u64, 0u64);
        while self.running.len() < self.config.max_num_seqs as usize && *budget > 0 {
            let Some(top) = self.waiting.peek() else {
                break;
            };
            if !self.waiting_ids.contains(&top.sub.id) {
                self.waiting.pop();
                continue;
            }
            let need = u64::from(top.sub.req.prompt_len.div_ceil(BLOCK_SIZE));
            if !self.running.is_empty() && *held_blocks + need > u64::from(self.config.kv_blocks) {
                break;
            }
            let Some(Queued { sub, .. }) = self.waiting.pop() else {
                break;
            };
            self.waiting_ids.remove(&sub.id);
            self.waiting_count.fetch_sub(1, Ordering::Relaxed);
            if sub.tx.is_closed() {
                rejected += 1;
                continue;
            }
            if self.config.faults.hang_after == Some(sub.id) {
                self.stop_after_step = Some(Stop::Hang);
            }
            let req = sub.req;
            let cached = if self.config.prefix_caching {
                queries += u64::from(req.prompt_len);
                self.cache.cached_tokens(&req.block_hashes, req.prompt_len)
            } else {
                0
            };
            hits += u64::from(cached);
            let prefill_left = req.prompt_len.saturating_sub(cached).max(1);
            let chunk = prefill_left.min(*budget);
            *budget -= chunk;
            *prefill_tokens += chunk;
            *held_blocks += need;
            self.running.push(Seq {
                id: sub.id,
                tx: sub.tx,
                prompt_len: req.prompt_len,
                hashes: req.block_hashes,
                gen_len: req.gen_len.max(1),
                finish: req.finish,
                cached,
                prefill_left,
                chunk,
                generated: 0,
                arrival: sub.arrival,
                scheduled: now,
                first_token: now,
                unsent: 0,
                unsent_first: false,
            });
        }
        if rejected > 0 {
            let mut stats = self.lock_stats();
            for _ in 0..rejected {
                stats.count_finished(FinishReason::Abort);
            }
        }
        (queries, hits)
    }

    /// The step is over: emit its tokens, finish what is complete, publish the statistics.
    /// `flush`: send the tokens now (a timed step) rather than with the rest of the burst.
    fn complete(&mut self, end: Instant, queries: u64, hits: u64, prefill_tokens: u32, flush: bool) {
        let Self {
            running,
            cache,
            stats,
            config,
            last_step,
            waiting_count,
            stop_after_step,
            ..
        } = self;
        let mut stats = stats.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        stats.prefix_cache_queries += queries;
        stats.prefix_cache_hits += hits;
        let mut decoded = 0u64;
        let mut held_blocks = 0u64;
        let mut i = 0;
        while i < running.len() {
            let seq = &mut running[i];
            let produced = if seq.chunk > 0 {
                seq.prefill_left -= seq.chunk;
                seq.chunk = 0;
                let first = seq.prefill_left == 0;
                if first {
                    if config.prefix_caching {
                        cache.insert(&seq.hashes);
                    }
                    seq.first_token = end;
                    seq.unsent_first = true;
                    if config.faults.crash_after == Some(seq.id) {
                        *stop_after_step = Some(Stop::Crash);
                    }
                    stats.ttft.observe(secs(end - seq.arrival));
                    stats.prompt_tokens += u64::from(seq.prompt_len);
                    stats.prompt_tokens_cached += u64::from(seq.cached);
                }
                first
            } else if seq.prefill_left == 0 {
                decoded += 1;
                true
            } else {
                false
            };
            if produced {
                seq.generated += 1;
                seq.unsent += 1;
                stats.generation_tokens += 1;
                let finished = seq.generated >= seq.gen_len;
                if (flush || finished) && !seq.flush() {
                    running.remove(i);
                    stats.count_finished(FinishReason::Abort);
                    continue;
                }
                if finished {
                    record_finished(&mut stats, seq, end);
                    running.remove(i);
                    continue;
                }
            }
            held_blocks += seq.blocks();
            i += 1;
        }
        if let Some((_, previous_end)) = *last_step {
            stats.itl.observe_n(secs(end - previous_end), decoded);
        }
        let step_tokens = u64::from(prefill_tokens) + decoded;
        if step_tokens > 0 {
            stats.iteration_tokens.observe(step_tokens as f64);
        }
        stats.running = running.len();
        stats.waiting = waiting_count.load(Ordering::Relaxed);
        stats.kv_cache_usage = (held_blocks as f64 / f64::from(config.kv_blocks)).min(1.0);
    }
}
