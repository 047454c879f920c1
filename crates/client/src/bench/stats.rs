//! Pure statistics over request records: percentiles, a phase's summary, the MQTT-vs-direct overhead, the
//! per-turn TTFT and, in flood mode, what a flooding neighbour adds. These types are the `--json` report (a stable interface, documented in the README).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use super::engine::PrefixCache;

/// How one request ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordOutcome {
    Ok,
    /// A stable error code (`docs/protocol.md`), or the direct client's `LlmError::code`.
    Error(String),
    Timeout,
}

impl RecordOutcome {
    /// `ok`, the error code, or `timeout`: the key outcomes are counted under.
    pub fn key(&self) -> &str {
        match self {
            Self::Ok => "ok",
            Self::Error(code) => code,
            Self::Timeout => "timeout",
        }
    }
}

/// What the bench measured for one request.
#[derive(Debug, Clone)]
pub struct Record {
    /// Index of the turn in its conversation (0 = first).
    pub turn: u32,
    pub outcome: RecordOutcome,
    pub ttft: Option<Duration>,
    pub e2e: Option<Duration>,
    /// Gaps between consecutive delta frames (MQTT) or SSE content chunks (direct).
    pub itl: Vec<Duration>,
    pub completion_tokens: u32,
    /// The prompt as the engine counted it (system prompt, history and message); 0 where no usage came.
    pub prompt_tokens: u32,
    pub cached_tokens: Option<u32>,
    /// Bytes of the user message sent, and of the final reply text (0 without one): the text a conversation adds
    /// to the server's history.
    pub message_bytes: u32,
    pub reply_bytes: u32,
    /// Protocol breaches within this request (frames out of order).
    pub violations: usize,
}

impl Record {
    /// A request of turn `turn` that ended as `outcome` before anything was measured.
    pub fn failed(turn: u32, outcome: RecordOutcome) -> Self {
        Self {
            turn,
            outcome,
            ttft: None,
            e2e: None,
            itl: Vec::new(),
            completion_tokens: 0,
            prompt_tokens: 0,
            cached_tokens: None,
            message_bytes: 0,
            reply_bytes: 0,
            violations: 0,
        }
    }
}

/// p50/p90/p99/max in milliseconds (nearest rank); all 0 when there is no sample.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct Percentiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
    /// How many samples the figures are over.
    pub n: usize,
}

/// The nearest-rank percentile `q` (0-100) of sorted samples.
fn rank(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((q / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[idx.clamp(1, sorted.len()) - 1]
}

pub fn percentiles(samples: impl IntoIterator<Item = Duration>) -> Percentiles {
    let mut ms: Vec<f64> = samples.into_iter().map(|d| d.as_secs_f64() * 1000.0).collect();
    ms.sort_by(f64::total_cmp);
    Percentiles {
        p50: rank(&ms, 50.0),
        p90: rank(&ms, 90.0),
        p99: rank(&ms, 99.0),
        max: ms.last().copied().unwrap_or(0.0),
        n: ms.len(),
    }
}

/// One phase (all MQTT rounds, or all direct rounds) summarised.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PhaseStats {
    pub requests: usize,
    pub completed: usize,
    /// Failed requests by code; `timeout` for requests with no reply in time.
    pub errors: BTreeMap<String, usize>,
    pub violations: usize,
    pub ttft_ms: Percentiles,
    pub e2e_ms: Percentiles,
    pub itl_ms: Percentiles,
    /// Completion tokens of completed requests per second of wall time.
    pub tokens_per_s: f64,
    pub replies_per_s: f64,
    pub completion_tokens: u64,
    /// Prompt tokens of completed requests, as the engine counted them.
    pub prompt_tokens: u64,
    /// Of those, the tokens the engine's prefix cache served (the usage's `cached_tokens`).
    pub cached_tokens: u64,
    /// `cached_tokens / prompt_tokens` over the completed requests whose usage carried cached tokens; None when
    /// none did (no usage without stream frames, or an engine without prompt-token details).
    pub cached_share: Option<f64>,
    /// Bytes of the user messages and of the replies of completed requests (the text the server's histories
    /// hold, before trimming).
    pub message_bytes: u64,
    pub reply_bytes: u64,
    pub wall_s: f64,
    /// The engine's prefix-cache counters over the phase (`--engine-metrics`); absent without the flag.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefix_cache: Option<PrefixCache>,
}

impl PhaseStats {
    pub fn from_records(records: &[Record], wall: Duration, violations: usize) -> Self {
        let ok: Vec<&Record> = records.iter().filter(|r| r.outcome == RecordOutcome::Ok).collect();
        let mut errors = BTreeMap::new();
        for r in records.iter().filter(|r| r.outcome != RecordOutcome::Ok) {
            *errors.entry(r.outcome.key().to_owned()).or_insert(0) += 1;
        }
        let tokens: u64 = ok.iter().map(|r| u64::from(r.completion_tokens)).sum();
        let secs = wall.as_secs_f64();
        let per_s = |n: f64| if secs > 0.0 { n / secs } else { 0.0 };
        Self {
            requests: records.len(),
            completed: ok.len(),
            errors,
            violations: violations + records.iter().map(|r| r.violations).sum::<usize>(),
            ttft_ms: percentiles(ok.iter().filter_map(|r| r.ttft)),
            e2e_ms: percentiles(ok.iter().filter_map(|r| r.e2e)),
            itl_ms: percentiles(ok.iter().flat_map(|r| r.itl.iter().copied())),
            tokens_per_s: per_s(tokens as f64),
            replies_per_s: per_s(ok.len() as f64),
            completion_tokens: tokens,
            prompt_tokens: ok.iter().map(|r| u64::from(r.prompt_tokens)).sum(),
            cached_tokens: ok.iter().filter_map(|r| r.cached_tokens).map(u64::from).sum(),
            cached_share: cached_share(&ok),
            message_bytes: ok.iter().map(|r| u64::from(r.message_bytes)).sum(),
            reply_bytes: ok.iter().map(|r| u64::from(r.reply_bytes)).sum(),
            wall_s: secs,
            prefix_cache: None,
        }
    }
}

/// Cached over prompt tokens, summed over the records whose usage told both.
fn cached_share(records: &[&Record]) -> Option<f64> {
    let (mut cached, mut prompt) = (0u64, 0u64);
    for r in records {
        if let Some(c) = r.cached_tokens.filter(|_| r.prompt_tokens > 0) {
            cached += u64::from(c);
            prompt += u64::from(r.prompt_tokens);
        }
    }
    (prompt > 0).then(|| cached as f64 / prompt as f64)
}

/// What going through MQTT adds to talking to the engine directly.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Overhead {
    /// MQTT's latency minus direct latency (flattened: the report keeps one flat object).
    #[serde(flatten)]
    pub latency: Added,
    /// MQTT tokens/s over direct tokens/s (1.0 = no loss).
    pub throughput_ratio: f64,
}

impl Overhead {
    pub fn between(mqtt: &PhaseStats, direct: &PhaseStats) -> Self {
        Self {
            latency: Added::between(mqtt, direct),
            throughput_ratio: if direct.tokens_per_s > 0.0 {
                mqtt.tokens_per_s / direct.tokens_per_s
            } else {
                0.0
            },
        }
    }
}

/// What one phase adds to another's latency: flooding a neighbouring session (flooded minus idle), or going
/// through MQTT (the [`Overhead`]).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Added {
    pub ttft_p50_ms: f64,
    pub ttft_p99_ms: f64,
    pub e2e_p50_ms: f64,
    pub e2e_p99_ms: f64,
}

impl Added {
    /// The four differences as the text table prints them.
    pub fn describe(&self) -> String {
        format!(
            "ttft p50 {:+.1} ms, p99 {:+.1} ms; e2e p50 {:+.1} ms, p99 {:+.1} ms",
            self.ttft_p50_ms, self.ttft_p99_ms, self.e2e_p50_ms, self.e2e_p99_ms
        )
    }

    /// `with` minus `without`.
    pub fn between(with: &PhaseStats, without: &PhaseStats) -> Self {
        Self {
            ttft_p50_ms: with.ttft_ms.p50 - without.ttft_ms.p50,
            ttft_p99_ms: with.ttft_ms.p99 - without.ttft_ms.p99,
            e2e_p50_ms: with.e2e_ms.p50 - without.e2e_ms.p50,
            e2e_p99_ms: with.e2e_ms.p99 - without.e2e_ms.p99,
        }
    }
}

/// What the flooding client sent, and how each of its requests ended.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct FloodStats {
    pub sent: usize,
    /// Requests by outcome: `ok`, an error code (`session_queue_full`, `overloaded`, ...) or `timeout`; they add
    /// up to `sent`.
    pub outcomes: BTreeMap<String, usize>,
    /// Protocol breaches the flooding client saw (they fail the run like the measured client's).
    pub violations: usize,
}

impl FloodStats {
    pub fn from_records(records: &[Record], violations: usize) -> Self {
        let mut outcomes = BTreeMap::new();
        for r in records {
            *outcomes.entry(r.outcome.key().to_owned()).or_insert(0) += 1;
        }
        Self {
            sent: records.len(),
            outcomes,
            violations: violations + records.iter().map(|r| r.violations).sum::<usize>(),
        }
    }
}

/// Flood mode (`--flood-rate`): the measured workload with no other load, and while another client floods one
/// session of its own.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Isolation {
    /// Flood requests per second.
    pub flood_rate: f64,
    pub flood: FloodStats,
    pub idle: PhaseStats,
    pub flooded: PhaseStats,
    pub added: Added,
}

impl Isolation {
    pub fn violations(&self) -> usize {
        self.idle.violations + self.flooded.violations + self.flood.violations
    }
}

/// TTFT and prompt size of the completed requests of one turn index (0 = first turn).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TurnStats {
    pub turn: u32,
    /// Completed requests of this turn index.
    pub completed: usize,
    pub ttft_p50_ms: f64,
    pub ttft_p90_ms: f64,
    pub ttft_p99_ms: f64,
    /// Mean prompt as the engine counted it (0 where no usage came).
    pub prompt_tokens_mean: f64,
    /// Mean prefix-cache hit (0 where the server reports none).
    pub cached_tokens_mean: f64,
    /// Cached over prompt tokens of this turn index (None without usage).
    pub cached_share: Option<f64>,
}

pub fn per_turn(records: &[Record]) -> Vec<TurnStats> {
    let mut by_turn: BTreeMap<u32, Vec<&Record>> = BTreeMap::new();
    for r in records.iter().filter(|r| r.outcome == RecordOutcome::Ok) {
        by_turn.entry(r.turn).or_default().push(r);
    }
    by_turn
        .into_iter()
        .map(|(turn, rs)| {
            let p = percentiles(rs.iter().filter_map(|r| r.ttft));
            let cached: f64 = rs.iter().map(|r| f64::from(r.cached_tokens.unwrap_or(0))).sum();
            let prompt: f64 = rs.iter().map(|r| f64::from(r.prompt_tokens)).sum();
            TurnStats {
                turn,
                completed: rs.len(),
                ttft_p50_ms: p.p50,
                ttft_p90_ms: p.p90,
                ttft_p99_ms: p.p99,
                prompt_tokens_mean: prompt / rs.len() as f64,
                cached_tokens_mean: cached / rs.len() as f64,
                cached_share: cached_share(&rs),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(turn: u32, outcome: RecordOutcome, ms: u64) -> Record {
        Record {
            turn,
            outcome,
            ttft: Some(Duration::from_millis(ms)),
            e2e: Some(Duration::from_millis(ms * 2)),
            itl: vec![Duration::from_millis(1)],
            completion_tokens: 10,
            prompt_tokens: 30,
            cached_tokens: Some(16),
            message_bytes: 5,
            reply_bytes: 7,
            violations: 0,
        }
    }

    #[test]
    fn nearest_rank_percentiles() {
        let p = percentiles((1..=100).map(Duration::from_millis));
        assert_eq!((p.p50, p.p90, p.p99, p.max, p.n), (50.0, 90.0, 99.0, 100.0, 100));
        assert_eq!(percentiles([]), Percentiles::default());
        assert_eq!(percentiles([Duration::from_millis(7)]).p99, 7.0);
    }

    #[test]
    fn phase_counts_add_up() {
        let records = [
            rec(0, RecordOutcome::Ok, 10),
            rec(1, RecordOutcome::Ok, 20),
            rec(1, RecordOutcome::Error("overloaded".into()), 1),
            rec(0, RecordOutcome::Timeout, 1),
        ];
        let s = PhaseStats::from_records(&records, Duration::from_secs(2), 0);
        assert_eq!((s.requests, s.completed), (4, 2));
        assert_eq!(s.errors.get("overloaded"), Some(&1));
        assert_eq!(s.errors.get("timeout"), Some(&1));
        assert_eq!(s.tokens_per_s, 10.0);
        assert_eq!(s.prompt_tokens, 60);
        assert_eq!(s.replies_per_s, 1.0);
        assert_eq!(s.ttft_ms.max, 20.0);
        let turns = per_turn(&records);
        assert_eq!(turns.len(), 2);
        assert_eq!(turns[1].ttft_p50_ms, 20.0);
        assert_eq!(turns[0].cached_tokens_mean, 16.0);
        assert_eq!((turns[0].prompt_tokens_mean, turns[0].completed), (30.0, 1));
        assert_eq!(turns[1].ttft_p90_ms, 20.0);
        assert_eq!(s.cached_tokens, 32);
        assert_eq!((s.message_bytes, s.reply_bytes), (10, 14));
        assert_eq!(s.cached_share, Some(32.0 / 60.0));
        let mut no_usage = rec(0, RecordOutcome::Ok, 10);
        (no_usage.prompt_tokens, no_usage.cached_tokens) = (0, None);
        let s2 = PhaseStats::from_records(&[no_usage], Duration::from_secs(1), 0);
        assert_eq!(s2.cached_share, None);
        let o = Overhead::between(&s, &PhaseStats::from_records(&records[..1], Duration::from_secs(1), 0));
        assert_eq!(o.latency.ttft_p50_ms, 0.0);
        assert_eq!(o.throughput_ratio, 1.0);
    }

    #[test]
    fn flood_outcomes_add_up_and_added_is_flooded_minus_idle() {
        let records = [
            rec(0, RecordOutcome::Ok, 10),
            rec(0, RecordOutcome::Error("session_queue_full".into()), 1),
            rec(0, RecordOutcome::Error("session_queue_full".into()), 1),
            rec(0, RecordOutcome::Timeout, 1),
        ];
        let flood = FloodStats::from_records(&records, 2);
        assert_eq!(flood.sent, 4);
        assert_eq!(flood.outcomes.values().sum::<usize>(), 4);
        assert_eq!(flood.outcomes.get("session_queue_full"), Some(&2));
        assert_eq!(
            (flood.outcomes.get("ok"), flood.outcomes.get("timeout")),
            (Some(&1), Some(&1))
        );
        assert_eq!(flood.violations, 2);
        let idle = PhaseStats::from_records(&[rec(0, RecordOutcome::Ok, 10)], Duration::from_secs(1), 0);
        let flooded = PhaseStats::from_records(&[rec(0, RecordOutcome::Ok, 25)], Duration::from_secs(1), 1);
        let added = Added::between(&flooded, &idle);
        assert_eq!((added.ttft_p50_ms, added.ttft_p99_ms), (15.0, 15.0));
        assert_eq!((added.e2e_p50_ms, added.e2e_p99_ms), (30.0, 30.0));
        let isolation = Isolation {
            flood_rate: 100.0,
            flood,
            idle,
            flooded,
            added,
        };
        assert_eq!(isolation.violations(), 3);
    }
}
