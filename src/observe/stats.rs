//! The original server's operator log: every `--stats-interval` (60 s) one line with its fields, and a warning when
//! the queue passes 70% of `--max-queued`.
//!
//! `stats processed=120 errors=2 rejected=5 queue=3 avg_latency=1.234s` (the average is over the replies of the
//! interval; `-` when there were none). The queue is also looked at every second: crossing 70% logs
//! `queue is 712/1000 (71% full): the server may be overloaded` once, and falling back under 50% logs that it
//! recovered, so a burst is seen when it happens, not up to a minute later.

use std::time::Duration;

use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::Board;
use crate::metrics::{self, TotalsSnapshot};

/// The queue warning's threshold and its reset, as shares of `--max-queued`.
pub const WARN_FILL: f64 = 0.7;
pub const CLEAR_FILL: f64 = 0.5;
const QUEUE_CHECK: Duration = Duration::from_secs(1);

/// The stats line for the interval from `earlier` to `now`.
pub fn stats_line(now: &TotalsSnapshot, earlier: &TotalsSnapshot, queue: usize) -> String {
    let avg = now
        .average_latency_since(earlier)
        .map_or_else(|| "-".to_owned(), |d| format!("{:.3}s", d.as_secs_f64()));
    format!(
        "stats processed={} errors={} rejected={} queue={queue} avg_latency={avg}",
        now.processed, now.errors, now.rejected
    )
}

/// Log the stats line every `interval` and watch the queue, until `cancel`.
pub fn spawn_stats(board: Board, interval: Duration, tracker: &TaskTracker, cancel: CancellationToken) {
    tracker.spawn(async move {
        let mut line = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        line.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut check = tokio::time::interval(QUEUE_CHECK);
        check.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut earlier = metrics::totals();
        let mut warned = false;
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = line.tick() => {
                    let now = metrics::totals();
                    let queue = board.load().map_or(0, |l| l.queued);
                    tracing::info!(target: "mqtt_llm::stats", "{}", stats_line(&now, &earlier, queue));
                    earlier = now;
                }
                _ = check.tick() => {
                    let Some(load) = board.load() else { continue };
                    let fill = load.fill();
                    if !warned && fill > WARN_FILL {
                        warned = true;
                        tracing::warn!(
                            queued = load.queued,
                            max = load.max_queued,
                            "queue is {}/{} ({:.0}% full): the server may be overloaded",
                            load.queued,
                            load.max_queued,
                            fill * 100.0
                        );
                    } else if warned && fill < CLEAR_FILL {
                        warned = false;
                        tracing::info!(queued = load.queued, max = load.max_queued, "queue back under 50%");
                    }
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_has_the_originals_fields_and_the_intervals_average() {
        let earlier = TotalsSnapshot {
            processed: 10,
            errors: 1,
            rejected: 2,
            latency_micros: 5_000_000,
            timed: 11,
        };
        let now = TotalsSnapshot {
            processed: 12,
            errors: 2,
            rejected: 2,
            latency_micros: 5_000_000 + 3_000_000,
            timed: 14,
        };
        assert_eq!(
            stats_line(&now, &earlier, 4),
            "stats processed=12 errors=2 rejected=2 queue=4 avg_latency=1.000s"
        );
        assert_eq!(
            stats_line(&now, &now, 0),
            "stats processed=12 errors=2 rejected=2 queue=0 avg_latency=-"
        );
    }
}
