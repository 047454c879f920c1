//! The arguments of the protocol-client subcommands, `chat` and `bench`.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::BrokerArgs;

#[derive(Debug, Clone, Args)]
pub struct ChatArgs {
    #[command(flatten)]
    pub broker: BrokerArgs,
    /// The project whose `{project}/user_input` requests go to.
    #[arg(long, default_value = "general")]
    pub project: String,
    /// Session id to start with [default: chat-<8 hex>].
    #[arg(long)]
    pub session: Option<String>,
    /// System prompt sent with every request (replaces the project's).
    #[arg(long)]
    pub system: Option<String>,
    /// Ask for stream frames and print deltas as they arrive (the default).
    #[arg(long, overrides_with = "no_stream")]
    pub stream: bool,
    /// Wait for the single final reply instead.
    #[arg(long, overrides_with = "stream")]
    pub no_stream: bool,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// How long to wait for a reply before giving up (exit status 1).
    #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// Exit with status 1 at the first `Error:` reply.
    #[arg(long)]
    pub fail_on_error: bool,
}

#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    #[command(flatten)]
    pub broker: BrokerArgs,
    /// Projects the conversations are spread over (comma separated).
    #[arg(long, default_value = "general", value_delimiter = ',')]
    pub projects: Vec<String>,
    /// Closed loop: conversations in all (each with its own session id); all run at once unless --concurrency.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..))]
    pub sessions: u32,
    /// Closed loop: at most this many conversations at once; a new one starts as one ends (e.g. `--sessions
    /// 100000 --turns 1 --concurrency 256`) [default: all of --sessions].
    #[arg(long, conflicts_with = "rate", value_parser = clap::value_parser!(u32).range(1..))]
    pub concurrency: Option<u32>,
    /// Closed loop: turns per conversation (each waits for the previous reply).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..))]
    pub turns: u32,
    /// Closed loop: pause between a reply and the next turn, in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub think_ms: u64,
    /// Open loop: start this many single-turn requests per second, whether or not earlier ones finished.
    #[arg(long, requires = "duration")]
    pub rate: Option<f64>,
    /// Open loop: how long to keep starting requests.
    #[arg(long, value_parser = humantime::parse_duration, requires = "rate")]
    pub duration: Option<Duration>,
    /// Size of each user message, in words (about one token each).
    #[arg(long, default_value_t = 32)]
    pub prompt_tokens: u32,
    /// Size of a system prompt sent with every request (0: the server's project prompt).
    #[arg(long, default_value_t = 0)]
    pub system_prompt_tokens: u32,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// Ask for stream frames (TTFT and inter-token gaps need them; the default).
    #[arg(long, overrides_with = "no_stream")]
    pub stream: bool,
    /// Plain replies only: TTFT is then the time to the reply, and tokens are not counted.
    #[arg(long, overrides_with = "stream")]
    pub no_stream: bool,
    /// Per-request limit; a request without a reply by then counts as `timeout`.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// Run the workload straight against this OpenAI-compatible endpoint (http://host:port) instead of MQTT.
    #[arg(long, conflicts_with = "compare")]
    pub direct: Option<String>,
    /// Run MQTT and direct phases against this endpoint, interleaved (A B A B ...), and report the overhead.
    #[arg(long)]
    pub compare: Option<String>,
    /// Flood mode: run the workload idle, then while a second client floods one session of its own (in the first
    /// project) with this many requests per second, open loop (idle flooded idle flooded ...); report what the
    /// flood adds.
    #[arg(long, conflicts_with_all = ["direct", "compare"], value_parser = positive_rate)]
    pub flood_rate: Option<f64>,
    /// maxTokens of each flood request [default: --max-tokens].
    #[arg(long, requires = "flood_rate")]
    pub flood_max_tokens: Option<u32>,
    /// Phase pairs: MQTT/direct with --compare, idle/flooded with --flood-rate.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..))]
    pub rounds: u32,
    /// Model name for direct requests [default: the first model the endpoint lists].
    #[arg(long)]
    pub model: Option<String>,
    /// Report TTFT (and prefix-cache hits) by turn index.
    #[arg(long)]
    pub per_turn: bool,
    /// The engine's Prometheus endpoint (e.g. http://127.0.0.1:8000/metrics): scraped before and after each
    /// measured phase to report the engine's prefix-cache hit rate (vllm:prefix_cache_hits_total over
    /// vllm:prefix_cache_queries_total).
    #[arg(long, value_name = "URL")]
    pub engine_metrics: Option<String>,
    /// Write every figure and the full configuration as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Draw the latency CDF (and, with --per-turn, TTFT by turn) into this SVG file.
    #[arg(long)]
    pub plot: Option<PathBuf>,
}

/// The sampling overrides a request may carry; each left out means the server's setting.
#[derive(Debug, Clone, Args)]
pub struct SamplingArgs {
    /// Sampling temperature (0-2) [default: the server's].
    #[arg(long)]
    pub temperature: Option<f32>,
    /// Largest number of tokens in a reply (a request's maxTokens) [default: the server's].
    #[arg(long)]
    pub max_tokens: Option<u32>,
}

/// A request rate: a finite number above 0.
fn positive_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 => Ok(r),
        _ => Err(format!("{s:?} is no rate above 0 (requests per second)")),
    }
}
