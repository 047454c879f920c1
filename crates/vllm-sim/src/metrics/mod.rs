//! vLLM's Prometheus metrics: [`EngineStats`] (written by the engine core once per step, read by
//! `GET /metrics`) and its rendering in prometheus_client's text format: `# HELP`/`# TYPE`
//! lines with vLLM's help strings, counters exposed as `_total` plus a `_created` gauge family,
//! labels sorted (`engine`, then any extra label, then `model_name`) and floats printed the way
//! Python prints them (`3.0`, `1.763840000123e+09`).

use super::reply::FinishReason;

/// `vllm:time_to_first_token_seconds` buckets (`v1/metrics/buckets.py`).
pub const TTFT_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0,
    160.0, 640.0, 2560.0,
];
/// `vllm:inter_token_latency_seconds` buckets.
pub const ITL_BUCKETS: &[f64] = &[
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0,
];
/// Request phase latency buckets (e2e, queue, inference, prefill, decode).
pub const REQUEST_LATENCY_BUCKETS: &[f64] = &[
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0, 480.0, 960.0,
    1920.0, 7680.0,
];
/// `vllm:iteration_tokens_total` buckets.
pub const ITERATION_TOKENS_BUCKETS: &[f64] = &[
    1.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0, 8192.0, 16384.0,
];

/// A cumulative-on-render histogram.
#[derive(Debug, Clone)]
pub struct Histogram {
    bounds: Vec<f64>,
    /// Per bucket (not cumulative), plus the `+Inf` overflow bucket at the end.
    counts: Vec<u64>,
    sum: f64,
}

impl Histogram {
    pub fn new(bounds: &[f64]) -> Self {
        Self {
            bounds: bounds.to_vec(),
            counts: vec![0; bounds.len() + 1],
            sum: 0.0,
        }
    }

    pub fn observe(&mut self, value: f64) {
        self.observe_n(value, 1);
    }

    /// `n` observations of the same value (one decode step yields one ITL per running sequence).
    pub fn observe_n(&mut self, value: f64, n: u64) {
        if n == 0 {
            return;
        }
        let bucket = self.bounds.partition_point(|&b| b < value);
        self.counts[bucket] += n;
        self.sum += value * n as f64;
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    pub fn sum(&self) -> f64 {
        self.sum
    }
}

/// vLLM's `build_1_2_5_buckets(max)`: 1, 2, 5, 10, 20, 50, ... up to `max`.
pub fn buckets_1_2_5(max: u32) -> Vec<f64> {
    let mut out = Vec::new();
    let mut scale = 1u64;
    loop {
        for m in [1u64, 2, 5] {
            let v = m * scale;
            if v > u64::from(max) {
                return out;
            }
            out.push(v as f64);
        }
        scale *= 10;
    }
}

/// Engine-side statistics behind every `vllm:*` metric.
#[derive(Debug, Clone)]
pub struct EngineStats {
    pub running: usize,
    pub waiting: usize,
    /// Blocks held by running sequences / KV capacity, 0..=1.
    pub kv_cache_usage: f64,
    pub prefix_cache_queries: u64,
    pub prefix_cache_hits: u64,
    pub prompt_tokens: u64,
    pub prompt_tokens_cached: u64,
    pub generation_tokens: u64,
    pub preemptions: u64,
    /// Indexed like [`FinishReason::ALL`].
    pub finished: [u64; 5],
    pub ttft: Histogram,
    pub itl: Histogram,
    pub e2e: Histogram,
    pub queue_time: Histogram,
    pub inference_time: Histogram,
    pub prefill_time: Histogram,
    pub decode_time: Histogram,
    pub request_prompt_tokens: Histogram,
    pub request_generation_tokens: Histogram,
    pub iteration_tokens: Histogram,
}

impl EngineStats {
    pub fn new(max_model_len: u32) -> Self {
        let tokens = buckets_1_2_5(max_model_len);
        Self {
            running: 0,
            waiting: 0,
            kv_cache_usage: 0.0,
            prefix_cache_queries: 0,
            prefix_cache_hits: 0,
            prompt_tokens: 0,
            prompt_tokens_cached: 0,
            generation_tokens: 0,
            preemptions: 0,
            finished: [0; 5],
            ttft: Histogram::new(TTFT_BUCKETS),
            itl: Histogram::new(ITL_BUCKETS),
            e2e: Histogram::new(REQUEST_LATENCY_BUCKETS),
            queue_time: Histogram::new(REQUEST_LATENCY_BUCKETS),
            inference_time: Histogram::new(REQUEST_LATENCY_BUCKETS),
            prefill_time: Histogram::new(REQUEST_LATENCY_BUCKETS),
            decode_time: Histogram::new(REQUEST_LATENCY_BUCKETS),
            request_prompt_tokens: Histogram::new(&tokens),
            request_generation_tokens: Histogram::new(&tokens),
            iteration_tokens: Histogram::new(ITERATION_TOKENS_BUCKETS),
        }
    }

    pub fn finished(&self, reason: FinishReason) -> u64 {
        self.finished[reason as usize]
    }

    pub fn count_finished(&mut self, reason: FinishReason) {
        self.finished[reason as usize] += 1;
    }
}

mod exposition;

/// Re-exported from [`crate::pyfmt`], where it lives with Python's other formats.
pub use crate::pyfmt::py_float;
pub use exposition::Exposition;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_two_five_buckets() {
        assert_eq!(buckets_1_2_5(100), vec![1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0]);
    }

    #[test]
    fn histogram_buckets_are_cumulative_with_le_bounds_inclusive() {
        let mut h = Histogram::new(&[0.1, 1.0]);
        h.observe(0.1);
        h.observe_n(0.5, 2);
        h.observe(7.0);
        assert_eq!(h.counts, vec![1, 2, 1]);
        assert_eq!(h.count(), 4);
        assert!((h.sum() - 8.1).abs() < 1e-9);
    }
}
