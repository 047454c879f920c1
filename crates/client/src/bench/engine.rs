//! The engine's own view of a phase (`--engine-metrics URL`): its Prometheus counters are scraped before and after
//! each measured phase, and the prefix-cache hit rate is the ratio of the deltas of `vllm:prefix_cache_hits_total`
//! and `vllm:prefix_cache_queries_total` (both counted in tokens). Fetching the text is the caller's job; this
//! module only parses it and does the arithmetic, so that a metric the engine does not expose reads "n/a", not 0%.

use std::fmt;
use std::future::Future;
use std::pin::Pin;

use serde::Serialize;

/// Where the engine's Prometheus text comes from (the service implements it with its HTTP client).
pub trait MetricsSource: fmt::Debug + Send + Sync {
    /// The whole text of one scrape, or why there is none.
    fn scrape(&self) -> Pin<Box<dyn Future<Output = Result<String, String>> + Send + '_>>;
}

/// The prefix-cache counters now, or None (with a warning) when the scrape failed.
pub async fn scrape_prefix_cache(source: &dyn MetricsSource) -> Option<PrefixCacheCounters> {
    match source.scrape().await {
        Ok(text) => Some(PrefixCacheCounters::parse(&text)),
        Err(e) => {
            tracing::warn!(error = %e, "cannot scrape the engine's metrics");
            None
        }
    }
}

/// vLLM's prefix-cache counters (tokens), as vLLM and vllm-sim name them; the names without `_total` (and, given
/// these, the names with it) are accepted too.
pub const PREFIX_CACHE_HITS: &str = "vllm:prefix_cache_hits_total";
pub const PREFIX_CACHE_QUERIES: &str = "vllm:prefix_cache_queries_total";

/// The sum, over all its label sets, of the samples of counter `name` in Prometheus text `text`; `name` matches
/// with or without the `_total` suffix (never `_created`, `_bucket`, ...). None when no sample of it is there.
pub fn counter(text: &str, name: &str) -> Option<f64> {
    let base = name.strip_suffix("_total").unwrap_or(name);
    let total = format!("{base}_total");
    let mut sum = None;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((metric, rest)) = split_sample(line) else {
            continue;
        };
        if metric != base && metric != total {
            continue;
        }
        let Some(value) = rest.split_whitespace().next().and_then(parse_value) else {
            continue;
        };
        *sum.get_or_insert(0.0) += value;
    }
    sum
}

/// `name{labels} value [timestamp]` → (`name`, `value [timestamp]`); label values may hold spaces, `}` and escaped
/// quotes.
fn split_sample(line: &str) -> Option<(&str, &str)> {
    let name_end = line.find(|c: char| c == '{' || c.is_whitespace())?;
    let (name, rest) = line.split_at(name_end);
    if !rest.starts_with('{') {
        return Some((name, rest));
    }
    let (mut quoted, mut escaped) = (false, false);
    for (i, c) in rest.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '}' if !quoted => return Some((name, &rest[i + 1..])),
            _ => {}
        }
    }
    None
}

fn parse_value(s: &str) -> Option<f64> {
    match s {
        "+Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        _ => s.parse().ok(),
    }
}

/// The prefix-cache counters at one moment; a counter the engine does not expose is None.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PrefixCacheCounters {
    pub hits: Option<f64>,
    pub queries: Option<f64>,
}

impl PrefixCacheCounters {
    pub fn parse(text: &str) -> Self {
        Self {
            hits: counter(text, PREFIX_CACHE_HITS),
            queries: counter(text, PREFIX_CACHE_QUERIES),
        }
    }
}

/// What the engine's prefix cache did during a phase (all its rounds): tokens looked up, tokens found, their ratio.
/// None where a counter was missing (or a scrape failed), or, for the rate, where nothing was looked up.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct PrefixCache {
    pub hits: Option<u64>,
    pub queries: Option<u64>,
    pub hit_rate: Option<f64>,
}

impl PrefixCache {
    /// The change between two scrapes (None stands for a failed scrape).
    pub fn between(before: Option<PrefixCacheCounters>, after: Option<PrefixCacheCounters>) -> Self {
        let delta = |b: Option<f64>, a: Option<f64>| match (b, a) {
            // A counter that went down means the engine restarted in between: the delta is unknown.
            (Some(b), Some(a)) if a >= b => Some((a - b).round() as u64),
            _ => None,
        };
        let (before, after) = (before.unwrap_or_default(), after.unwrap_or_default());
        Self::of(delta(before.hits, after.hits), delta(before.queries, after.queries))
    }

    fn of(hits: Option<u64>, queries: Option<u64>) -> Self {
        let hit_rate = match (hits, queries) {
            (Some(h), Some(q)) if q > 0 => Some(h as f64 / q as f64),
            _ => None,
        };
        Self {
            hits,
            queries,
            hit_rate,
        }
    }

    /// Pool another round of the same phase: sums, unknown if either is.
    pub fn merge(self, other: Self) -> Self {
        let add = |a: Option<u64>, b: Option<u64>| Some(a? + b?);
        Self::of(add(self.hits, other.hits), add(self.queries, other.queries))
    }

    /// `87.5% (700 of 800 tokens)`, or `n/a` when a counter is missing.
    pub fn describe(&self) -> String {
        match (self.hit_rate, self.hits, self.queries) {
            (Some(r), Some(h), Some(q)) => format!("{:.1}% ({h} of {q} tokens)", r * 100.0),
            (None, Some(_), Some(0)) => "n/a (no lookups)".to_owned(),
            _ => "n/a (counters not exposed)".to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VLLM: &str = r#"# HELP vllm:prefix_cache_queries_total Prefix cache queries, in terms of number of queried tokens.
# TYPE vllm:prefix_cache_queries_total counter
vllm:prefix_cache_queries_total{engine="0",model_name="qwen3"} 5120.0
vllm:prefix_cache_queries_total{engine="1",model_name="qwen3"} 880.0
# HELP vllm:prefix_cache_queries_created Prefix cache queries, in terms of number of queried tokens.
# TYPE vllm:prefix_cache_queries_created gauge
vllm:prefix_cache_queries_created{engine="0",model_name="qwen3"} 1.7e+09
# HELP vllm:prefix_cache_hits_total Prefix cache hits, in terms of number of cached tokens.
# TYPE vllm:prefix_cache_hits_total counter
vllm:prefix_cache_hits_total{engine="0",model_name="qwen3"} 3072.0
vllm:external_prefix_cache_hits_total{engine="0",model_name="qwen3"} 99.0
"#;

    #[test]
    fn counters_sum_over_label_sets_and_skip_created() {
        assert_eq!(counter(VLLM, PREFIX_CACHE_QUERIES), Some(6000.0));
        assert_eq!(counter(VLLM, PREFIX_CACHE_HITS), Some(3072.0));
        // Asked without the suffix, the `_total` samples are found, and the reverse.
        assert_eq!(counter(VLLM, "vllm:prefix_cache_hits"), Some(3072.0));
        let bare = "vllm:prefix_cache_hits{engine=\"0\"} 12\nvllm:prefix_cache_hits 3 1700000000000\n";
        assert_eq!(counter(bare, PREFIX_CACHE_HITS), Some(15.0));
    }

    #[test]
    fn labels_with_braces_spaces_and_quotes() {
        let text = "m_total{a=\"x } y\",b=\"q\\\"}\"} 4\nm_total 1\nm_totally 100\nother_m_total 100\n";
        assert_eq!(counter(text, "m_total"), Some(5.0));
        assert_eq!(counter("m_total{a=\"unterminated} 4\n", "m_total"), None);
        assert_eq!(counter("m_total NaNish\n", "m_total"), None);
    }

    #[test]
    fn missing_metric_is_none_and_reads_na() {
        let sim_without = "# TYPE vllm:num_requests_running gauge\nvllm:num_requests_running 0\n";
        let c = PrefixCacheCounters::parse(sim_without);
        assert_eq!(c, PrefixCacheCounters::default());
        let p = PrefixCache::between(Some(c), Some(c));
        assert_eq!((p.hits, p.queries, p.hit_rate), (None, None, None));
        assert!(p.describe().starts_with("n/a"), "{}", p.describe());
        // A failed scrape is as unknown as a missing counter.
        let full = PrefixCacheCounters::parse(VLLM);
        assert_eq!(PrefixCache::between(None, Some(full)).hit_rate, None);
        // Nothing looked up: no rate, and not 0%.
        let idle = PrefixCache::between(Some(full), Some(full));
        assert_eq!((idle.hits, idle.queries, idle.hit_rate), (Some(0), Some(0), None));
        assert!(idle.describe().starts_with("n/a"));
    }

    #[test]
    fn delta_rate_and_merge() {
        let before = PrefixCacheCounters {
            hits: Some(100.0),
            queries: Some(200.0),
        };
        let after = PrefixCacheCounters::parse(VLLM);
        let p = PrefixCache::between(Some(before), Some(after));
        assert_eq!((p.hits, p.queries), (Some(2972), Some(5800)));
        assert!((p.hit_rate.unwrap() - 2972.0 / 5800.0).abs() < 1e-12);
        assert_eq!(p.describe(), "51.2% (2972 of 5800 tokens)");
        let m = p.merge(PrefixCache::of(Some(28), Some(200)));
        assert_eq!((m.hits, m.queries, m.hit_rate), (Some(3000), Some(6000), Some(0.5)));
        assert_eq!(m.merge(PrefixCache::default()).hit_rate, None);
        // A restarted engine (counters went down) gives no delta.
        assert_eq!(PrefixCache::between(Some(after), Some(before)).hits, None);
        let json = serde_json::to_value(PrefixCache::default()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"hits": null, "queries": null, "hit_rate": null})
        );
    }
}
