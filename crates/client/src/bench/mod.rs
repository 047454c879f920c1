//! The load generator behind `mqtt-llm bench`: workloads (closed and open loop) run against a [`target::Target`],
//! the records they produce, their statistics ([`stats`]), flood mode ([`flood`]), the JSON report and the SVG
//! plot ([`plot`]). Nothing here prints; `cmd::bench` does.

pub mod engine;
pub mod flood;
pub mod plot;
pub mod stats;
pub mod table;
pub mod target;

use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::task::JoinSet;

use engine::{MetricsSource, PrefixCache};
use stats::{Isolation, Overhead, PhaseStats, Record, TurnStats};
use target::{Target, TurnParams};

/// How requests are started.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum Workload {
    /// `sessions` conversations, `turns` turns each, a turn waiting for the previous reply; at most `concurrency`
    /// conversations run at once (a new one starts as one ends), all of them when None.
    Closed {
        sessions: u32,
        turns: u32,
        think_ms: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        concurrency: Option<u32>,
    },
    /// Single-turn conversations started at `rate` per second for `duration_ms`, whatever is still running.
    Open { rate: f64, duration_ms: u64 },
}

impl Workload {
    pub fn expected_requests(&self) -> u64 {
        match self {
            Self::Closed { sessions, turns, .. } => u64::from(*sessions) * u64::from(*turns),
            Self::Open { rate, duration_ms } => (rate * *duration_ms as f64 / 1000.0).ceil() as u64,
        }
    }
}

/// The whole configuration of a run, as it appears in the JSON report.
#[derive(Debug, Clone, Serialize)]
pub struct BenchConfig {
    pub broker: String,
    pub projects: Vec<String>,
    pub workload: Workload,
    pub prompt_tokens: u32,
    pub system_prompt_tokens: u32,
    pub max_tokens: Option<u32>,
    pub temperature: Option<f32>,
    pub stream: bool,
    pub timeout_ms: u64,
    pub direct: Option<String>,
    pub compare: Option<String>,
    /// Flood mode: requests per second another client sends to one session of its own.
    pub flood_rate: Option<f64>,
    /// maxTokens of each flood request (None: `max_tokens`).
    pub flood_max_tokens: Option<u32>,
    /// MQTT/direct phase pairs with --compare, idle/flooded pairs with --flood-rate; 1 otherwise.
    pub rounds: u32,
    pub per_turn: bool,
    /// The engine's Prometheus endpoint scraped before and after each phase (`--engine-metrics`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub engine_metrics: Option<String>,
}

impl BenchConfig {
    pub fn turn_params(&self) -> TurnParams {
        TurnParams {
            stream: self.stream,
            max_tokens: self.max_tokens,
            temperature: self.temperature,
            system_prompt: (self.system_prompt_tokens > 0).then(|| words(0, self.system_prompt_tokens)),
            timeout: Duration::from_millis(self.timeout_ms),
        }
    }

    /// What each flood request asks: the measured requests' knobs, with the flood's own maxTokens.
    pub fn flood_params(&self) -> TurnParams {
        TurnParams {
            max_tokens: self.flood_max_tokens.or(self.max_tokens),
            ..self.turn_params()
        }
    }
}

/// The JSON report (`--json`).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub config: BenchConfig,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mqtt: Option<PhaseStats>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub direct: Option<PhaseStats>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub overhead: Option<Overhead>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub per_turn: Option<Vec<TurnStats>>,
    /// Flood mode only; `mqtt` is then absent (its requests are `isolation.idle` and `isolation.flooded`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub isolation: Option<Isolation>,
}

/// Extra time after an MQTT phase for stray messages (a second reply, late frames) to show up as violations.
pub const SETTLE: Duration = Duration::from_millis(300);

const WORDS: &[&str] = &[
    "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet", "kilo", "lima",
    "mike", "november", "oscar", "papa", "quebec", "romeo", "sierra", "tango", "uniform", "victor", "whiskey",
];

/// `n` words (about one token each), varied by `seed`.
pub fn words(seed: u64, n: u32) -> String {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(1);
    let mut out = Vec::with_capacity(n as usize);
    for _ in 0..n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.push(WORDS[(x % WORDS.len() as u64) as usize]);
    }
    out.join(" ")
}

/// The user message of turn `turn` of conversation `conv`.
pub fn prompt(conv: u64, turn: u32, tokens: u32) -> String {
    let body = words(conv * 1000 + u64::from(turn) + 1, tokens.saturating_sub(1).max(1));
    format!("q{conv}.{turn} {body}")
}

/// The records of one phase, its wall time and, with `--engine-metrics`, what the engine's prefix cache did.
#[derive(Debug, Default)]
pub struct PhaseRun {
    pub records: Vec<Record>,
    pub wall: Duration,
    pub prefix_cache: Option<PrefixCache>,
}

impl PhaseRun {
    /// Pool another round of the same phase into this one.
    pub fn merge(&mut self, run: PhaseRun) {
        self.records.extend(run.records);
        self.wall += run.wall;
        self.prefix_cache = match (self.prefix_cache, run.prefix_cache) {
            (Some(a), Some(b)) => Some(a.merge(b)),
            (a, b) => a.or(b),
        };
    }

    /// The phase's statistics, with the engine's prefix-cache figures when they were scraped.
    pub fn stats(&self, violations: usize) -> PhaseStats {
        PhaseStats {
            prefix_cache: self.prefix_cache,
            ..PhaseStats::from_records(&self.records, self.wall, violations)
        }
    }
}

/// [`run_phase`], with the engine's prefix-cache counters scraped from `metrics` (when given) right before and
/// right after it.
pub async fn run_measured_phase(
    config: &BenchConfig,
    target: &Target,
    phase: u32,
    on_record: impl Fn(&Record) + Clone + Send + Sync + 'static,
    metrics: Option<&dyn MetricsSource>,
) -> PhaseRun {
    let Some(metrics) = metrics else {
        return run_phase(config, target, phase, on_record).await;
    };
    let before = engine::scrape_prefix_cache(metrics).await;
    let mut run = run_phase(config, target, phase, on_record).await;
    let after = engine::scrape_prefix_cache(metrics).await;
    run.prefix_cache = Some(PrefixCache::between(before, after));
    run
}

/// Run the workload once against `target`; `on_record` is called as each request ends (progress).
pub async fn run_phase(
    config: &BenchConfig,
    target: &Target,
    phase: u32,
    on_record: impl Fn(&Record) + Clone + Send + Sync + 'static,
) -> PhaseRun {
    let params = config.turn_params();
    let start = Instant::now();
    let mut tasks: JoinSet<Vec<Record>> = JoinSet::new();
    let run_tag = format!("b{:06x}p{phase}", rand::random::<u32>() & 0xff_ffff);
    let conversation = |conv: u64, turns: u32, think: Duration| {
        let (target, params, on_record) = (target.clone(), params.clone(), on_record.clone());
        let project = config.projects[(conv % config.projects.len() as u64) as usize].clone();
        let session = format!("{run_tag}-s{conv}");
        let prompt_tokens = config.prompt_tokens;
        async move {
            let mut records = Vec::new();
            let mut conversation = match target.open(&project, &session, &params).await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot open a conversation");
                    for turn in 0..turns {
                        let r = Record::failed(turn, stats::RecordOutcome::Error("client".into()));
                        on_record(&r);
                        records.push(r);
                    }
                    return records;
                }
            };
            for turn in 0..turns {
                if turn > 0 && !think.is_zero() {
                    tokio::time::sleep(think).await;
                }
                let r = conversation
                    .turn(turn, &prompt(conv, turn, prompt_tokens), &params)
                    .await;
                on_record(&r);
                records.push(r);
            }
            conversation.close();
            records
        }
    };
    let mut records = Vec::new();
    let collect = |records: &mut Vec<Record>, done: Result<Vec<Record>, tokio::task::JoinError>| match done {
        Ok(rs) => records.extend(rs),
        Err(e) => tracing::warn!(error = %e, "a conversation task failed"),
    };
    match &config.workload {
        Workload::Closed {
            sessions,
            turns,
            think_ms,
            concurrency,
        } => {
            let limit = concurrency.map_or(usize::MAX, |c| c.max(1) as usize);
            for conv in 0..u64::from(*sessions) {
                // Bounded: the next conversation starts when one ends (only `limit` tasks exist at a time).
                if tasks.len() >= limit {
                    if let Some(done) = tasks.join_next().await {
                        collect(&mut records, done);
                    }
                }
                tasks.spawn(conversation(conv, *turns, Duration::from_millis(*think_ms)));
            }
        }
        Workload::Open { rate, duration_ms } => {
            let period = Duration::from_secs_f64(1.0 / rate.max(0.001));
            let mut ticks = tokio::time::interval(period);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            for conv in 0..config.workload.expected_requests() {
                ticks.tick().await;
                if start.elapsed() >= Duration::from_millis(*duration_ms) {
                    break;
                }
                tasks.spawn(conversation(conv, 1, Duration::ZERO));
            }
        }
    }
    while let Some(done) = tasks.join_next().await {
        collect(&mut records, done);
    }
    PhaseRun {
        records,
        wall: start.elapsed(),
        prefix_cache: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompts_have_the_asked_size_and_differ() {
        assert_eq!(prompt(1, 0, 10).split(' ').count(), 10);
        assert_ne!(prompt(1, 0, 10), prompt(2, 0, 10));
        assert_ne!(prompt(1, 0, 10), prompt(1, 1, 10));
        assert_eq!(words(0, 5), words(0, 5));
    }

    #[test]
    fn open_loop_expects_rate_times_duration() {
        let w = Workload::Open {
            rate: 2.5,
            duration_ms: 2000,
        };
        assert_eq!(w.expected_requests(), 5);
    }
}
