//! The text exposition of [`EngineStats`], as prometheus_client writes it.

use std::fmt::Write as _;

use super::{EngineStats, Histogram, py_float};
use crate::reply::FinishReason;

/// Static facts shown in the exposition.
#[derive(Debug, Clone)]
pub struct Exposition {
    pub model_name: String,
    /// Unix time the metrics were created (the `_created` samples).
    pub created: f64,
    /// `vllm:cache_config_info` labels, sorted by name.
    pub cache_config: Vec<(&'static str, String)>,
}

const SLEEP_STATE_HELP: &str = "Engine sleep state; awake = 0 means engine is sleeping; awake = 1 means engine is awake; weights_offloaded = 1 means sleep level 1; discard_all = 1 means sleep level 2.";

impl Exposition {
    /// The full `vllm:*` exposition.
    pub fn render(&self, s: &EngineStats) -> String {
        let mut out = String::with_capacity(16 * 1024);
        let gauge = |out: &mut String, name: &str, help: &str, v: f64| self.family(out, name, help, "gauge", &[], v);
        gauge(
            &mut out,
            "vllm:num_requests_running",
            "Number of requests in model execution batches.",
            s.running as f64,
        );
        gauge(
            &mut out,
            "vllm:num_requests_waiting",
            "Number of requests waiting to be processed.",
            s.waiting as f64,
        );
        self.header(&mut out, "vllm:engine_sleep_state", SLEEP_STATE_HELP, "gauge");
        for (state, v) in [("awake", 1.0), ("weights_offloaded", 0.0), ("discard_all", 0.0)] {
            self.sample(&mut out, "vllm:engine_sleep_state", &[("sleep_state", state)], v);
        }
        gauge(
            &mut out,
            "vllm:kv_cache_usage_perc",
            "KV-cache usage. 1 means 100 percent usage.",
            s.kv_cache_usage,
        );
        let counters: [(&str, &str, u64); 6] = [
            (
                "vllm:prefix_cache_queries",
                "Prefix cache queries, in terms of number of queried tokens.",
                s.prefix_cache_queries,
            ),
            (
                "vllm:prefix_cache_hits",
                "Prefix cache hits, in terms of number of cached tokens.",
                s.prefix_cache_hits,
            ),
            (
                "vllm:num_preemptions",
                "Cumulative number of preemption from the engine.",
                s.preemptions,
            ),
            (
                "vllm:prompt_tokens",
                "Number of prefill tokens processed.",
                s.prompt_tokens,
            ),
            (
                "vllm:prompt_tokens_cached",
                "Number of cached prompt tokens (local + external).",
                s.prompt_tokens_cached,
            ),
            (
                "vllm:generation_tokens",
                "Number of generation tokens processed.",
                s.generation_tokens,
            ),
        ];
        for (name, help, v) in counters {
            self.counter(&mut out, name, help, &[(None, v as f64)]);
        }
        let finished: Vec<(Option<&str>, f64)> = FinishReason::ALL
            .iter()
            .map(|r| (Some(r.as_str()), s.finished(*r) as f64))
            .collect();
        self.counter(
            &mut out,
            "vllm:request_success",
            "Count of successfully processed requests.",
            &finished,
        );
        let histograms: [(&str, &str, &Histogram); 10] = [
            (
                "vllm:request_prompt_tokens",
                "Number of prefill tokens processed.",
                &s.request_prompt_tokens,
            ),
            (
                "vllm:request_generation_tokens",
                "Number of generation tokens processed.",
                &s.request_generation_tokens,
            ),
            (
                "vllm:iteration_tokens_total",
                "Histogram of number of tokens per engine_step.",
                &s.iteration_tokens,
            ),
            (
                "vllm:time_to_first_token_seconds",
                "Histogram of time to first token in seconds.",
                &s.ttft,
            ),
            (
                "vllm:inter_token_latency_seconds",
                "Histogram of inter-token latency in seconds.",
                &s.itl,
            ),
            (
                "vllm:e2e_request_latency_seconds",
                "Histogram of e2e request latency in seconds.",
                &s.e2e,
            ),
            (
                "vllm:request_queue_time_seconds",
                "Histogram of time spent in WAITING phase for request.",
                &s.queue_time,
            ),
            (
                "vllm:request_inference_time_seconds",
                "Histogram of time spent in RUNNING phase for request.",
                &s.inference_time,
            ),
            (
                "vllm:request_prefill_time_seconds",
                "Histogram of time spent in PREFILL phase for request.",
                &s.prefill_time,
            ),
            (
                "vllm:request_decode_time_seconds",
                "Histogram of time spent in DECODE phase for request.",
                &s.decode_time,
            ),
        ];
        for (name, help, h) in histograms {
            self.histogram(&mut out, name, help, h);
        }
        self.header(
            &mut out,
            "vllm:cache_config_info",
            "Information of the LLMEngine CacheConfig",
            "gauge",
        );
        let mut labels: Vec<(&str, &str)> = self.cache_config.iter().map(|(k, v)| (*k, v.as_str())).collect();
        labels.push(("engine", "0"));
        labels.sort_unstable();
        let _ = writeln!(out, "vllm:cache_config_info{} 1.0", label_set(&labels));
        out
    }

    fn header(&self, out: &mut String, name: &str, help: &str, kind: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn family(&self, out: &mut String, name: &str, help: &str, kind: &str, extra: &[(&str, &str)], v: f64) {
        self.header(out, name, help, kind);
        self.sample(out, name, extra, v);
    }

    /// One sample with the standard `engine`/`model_name` labels plus `extra`.
    fn sample(&self, out: &mut String, name: &str, extra: &[(&str, &str)], v: f64) {
        let mut labels: Vec<(&str, &str)> = vec![("engine", "0"), ("model_name", &self.model_name)];
        labels.extend_from_slice(extra);
        labels.sort_unstable_by_key(|(k, _)| *k);
        let _ = writeln!(out, "{name}{} {}", label_set(&labels), py_float(v));
    }

    /// A counter family: `<name>_total` samples, then the `<name>_created` gauge family.
    fn counter(&self, out: &mut String, name: &str, help: &str, children: &[(Option<&str>, f64)]) {
        let total = format!("{name}_total");
        self.header(out, &total, help, "counter");
        for (reason, v) in children {
            let extra: Vec<(&str, &str)> = reason.iter().map(|r| ("finished_reason", *r)).collect();
            self.sample(out, &total, &extra, *v);
        }
        let created = format!("{name}_created");
        self.header(out, &created, help, "gauge");
        for (reason, _) in children {
            let extra: Vec<(&str, &str)> = reason.iter().map(|r| ("finished_reason", *r)).collect();
            self.sample(out, &created, &extra, self.created);
        }
    }

    fn histogram(&self, out: &mut String, name: &str, help: &str, h: &Histogram) {
        self.header(out, name, help, "histogram");
        let bucket = format!("{name}_bucket");
        let mut cumulative = 0u64;
        for (i, count) in h.counts.iter().enumerate() {
            cumulative += count;
            let le = h.bounds.get(i).map_or_else(|| "+Inf".to_owned(), |b| py_float(*b));
            self.sample(out, &bucket, &[("le", &le)], cumulative as f64);
        }
        self.sample(out, &format!("{name}_count"), &[], h.count() as f64);
        self.sample(out, &format!("{name}_sum"), &[], h.sum());
        let created = format!("{name}_created");
        self.header(out, &created, help, "gauge");
        self.sample(out, &created, &[], self.created);
    }
}

fn label_set(labels: &[(&str, &str)]) -> String {
    let mut out = String::from("{");
    for (i, (k, v)) in labels.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, "{k}=\"");
        for c in v.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
        }
        out.push('"');
    }
    out.push('}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_shapes() {
        let mut s = EngineStats::new(4096);
        s.running = 3;
        s.count_finished(FinishReason::Stop);
        s.ttft.observe(0.03);
        let e = Exposition {
            model_name: "qwen3".into(),
            created: 1_763_840_000.0,
            cache_config: vec![("block_size", "16".into())],
        };
        let text = e.render(&s);
        assert!(text.contains("# HELP vllm:num_requests_running Number of requests in model execution batches.\n# TYPE vllm:num_requests_running gauge\nvllm:num_requests_running{engine=\"0\",model_name=\"qwen3\"} 3.0\n"));
        assert!(text.contains("# TYPE vllm:request_success_total counter\n"));
        assert!(
            text.contains(
                "vllm:request_success_total{engine=\"0\",finished_reason=\"stop\",model_name=\"qwen3\"} 1.0\n"
            )
        );
        assert!(text.contains(
            "vllm:request_success_created{engine=\"0\",finished_reason=\"abort\",model_name=\"qwen3\"} 1.76384e+09\n"
        ));
        assert!(
            text.contains(
                "vllm:time_to_first_token_seconds_bucket{engine=\"0\",le=\"0.04\",model_name=\"qwen3\"} 1.0\n"
            )
        );
        assert!(
            text.contains(
                "vllm:time_to_first_token_seconds_bucket{engine=\"0\",le=\"+Inf\",model_name=\"qwen3\"} 1.0\n"
            )
        );
        assert!(text.contains("vllm:time_to_first_token_seconds_count{engine=\"0\",model_name=\"qwen3\"} 1.0\nvllm:time_to_first_token_seconds_sum{engine=\"0\",model_name=\"qwen3\"} 0.03\n"));
        assert!(text.contains("vllm:cache_config_info{block_size=\"16\",engine=\"0\"} 1.0\n"));
    }
}
