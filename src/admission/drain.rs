//! [`DrainRate`]: how fast accepted requests leave the queue (answered, failed or refused at their turn), over a
//! sliding window of one-second buckets. It turns "the queue is full" into "retry in about N ms": the time the
//! requests ahead of a new one need to drain at the current rate.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

/// Seconds of history the rate is computed over.
const WINDOW_SECS: usize = 30;
/// The hint when nothing has drained within the window (just started, or the engine is down).
pub const RETRY_WITHOUT_SAMPLES: Duration = Duration::from_secs(5);
/// Hints are never shorter than this (a client retrying at once would only be refused again)...
pub const MIN_RETRY: Duration = Duration::from_secs(1);
/// ... nor longer than this.
pub const MAX_RETRY: Duration = Duration::from_secs(60);

/// Completions per second over the last [`WINDOW_SECS`] seconds.
#[derive(Debug)]
pub struct DrainRate {
    started: Instant,
    state: Mutex<Buckets>,
}

#[derive(Debug)]
struct Buckets {
    /// `counts[s % WINDOW_SECS]` holds the completions of second `s` (since `started`) for the last window.
    counts: [u32; WINDOW_SECS],
    /// The latest second written or cleared.
    head: u64,
}

impl Buckets {
    /// Clear the buckets of the seconds after `head` up to `now_sec`, which are about to be reused.
    fn advance(&mut self, now_sec: u64) {
        if now_sec <= self.head {
            return;
        }
        let stale = (now_sec - self.head).min(WINDOW_SECS as u64);
        for s in (now_sec + 1 - stale)..=now_sec {
            self.counts[(s % WINDOW_SECS as u64) as usize] = 0;
        }
        self.head = now_sec;
    }
}

impl Default for DrainRate {
    fn default() -> Self {
        Self::new()
    }
}

impl DrainRate {
    pub fn new() -> Self {
        Self {
            started: Instant::now(),
            state: Mutex::new(Buckets {
                counts: [0; WINDOW_SECS],
                head: 0,
            }),
        }
    }

    fn second(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.started).as_secs()
    }

    /// One accepted request left the queue at `at`.
    pub fn record(&self, at: Instant) {
        let sec = self.second(at);
        let mut b = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        b.advance(sec);
        if sec + (WINDOW_SECS as u64) > b.head {
            b.counts[(sec % WINDOW_SECS as u64) as usize] += 1;
        }
    }

    /// Completions per second at `at`, over the last window (or the time since start, if shorter; at least 1 s).
    pub fn per_second(&self, at: Instant) -> f64 {
        let sec = self.second(at);
        let mut b = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        b.advance(sec);
        let total: u32 = b.counts.iter().sum();
        let span = at
            .saturating_duration_since(self.started)
            .as_secs_f64()
            .clamp(1.0, WINDOW_SECS as f64);
        f64::from(total) / span
    }

    /// How long a client should wait before retrying when `ahead` requests are queued: their drain time at the
    /// current rate, within [`MIN_RETRY`]..=[`MAX_RETRY`]; [`RETRY_WITHOUT_SAMPLES`] when nothing drained lately.
    pub fn retry_after(&self, ahead: usize, at: Instant) -> Duration {
        let rate = self.per_second(at);
        if rate <= 0.0 {
            return RETRY_WITHOUT_SAMPLES;
        }
        Duration::from_secs_f64(ahead as f64 / rate).clamp(MIN_RETRY, MAX_RETRY)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_hint_is_the_time_the_queue_needs_at_the_current_rate() {
        let rate = DrainRate::new();
        assert_eq!(rate.retry_after(100, Instant::now()), RETRY_WITHOUT_SAMPLES);
        // 10 completions a second for 10 seconds.
        for _ in 0..10 {
            tokio::time::advance(Duration::from_millis(1000)).await;
            for _ in 0..10 {
                rate.record(Instant::now());
            }
        }
        let now = Instant::now();
        assert!((rate.per_second(now) - 10.0).abs() < 0.01, "{}", rate.per_second(now));
        // 50 ahead at 10/s: 5 s.
        assert_eq!(rate.retry_after(50, now), Duration::from_secs(5));
        // Clamped both ways.
        assert_eq!(rate.retry_after(1, now), MIN_RETRY);
        assert_eq!(rate.retry_after(100_000, now), MAX_RETRY);
    }

    #[tokio::test(start_paused = true)]
    async fn old_completions_leave_the_window() {
        let rate = DrainRate::new();
        tokio::time::advance(Duration::from_secs(40)).await;
        for _ in 0..30 {
            rate.record(Instant::now());
        }
        assert!((rate.per_second(Instant::now()) - 1.0).abs() < 0.01);
        // 29 s later the burst is still inside the window; 31 s later it is gone.
        tokio::time::advance(Duration::from_secs(29)).await;
        assert!((rate.per_second(Instant::now()) - 1.0).abs() < 0.01);
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(rate.per_second(Instant::now()), 0.0);
        assert_eq!(rate.retry_after(10, Instant::now()), RETRY_WITHOUT_SAMPLES);
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_drain_gives_a_long_hint() {
        let rate = DrainRate::new();
        // One completion every 2 s for 30 s: 0.5/s.
        for _ in 0..15 {
            tokio::time::advance(Duration::from_secs(2)).await;
            rate.record(Instant::now());
        }
        assert_eq!(rate.retry_after(10, Instant::now()), Duration::from_secs(20));
    }
}
