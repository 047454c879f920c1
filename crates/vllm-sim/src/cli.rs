//! The `vllm-sim` command line: `vllm serve`'s flags (the ones a simulator can honour, plus a set it
//! merely accepts so that real `vllm serve` command lines start it) and the `--sim-*` timing knobs.
//!
//! clap definitions only; argv normalisation, argparse-style errors and the `non-default args` dump
//! live in `argv`.

use clap::{Args, Parser, Subcommand, ValueEnum};

/// The vLLM release whose contract this simulator reproduces.
pub const VLLM_VERSION: &str = "0.33.0";
/// The model `vllm serve` loads when none is given.
pub const DEFAULT_MODEL: &str = "Qwen/Qwen3-0.6B";

#[derive(Debug, Parser)]
#[command(
    name = "vllm",
    bin_name = "vllm",
    disable_version_flag = true,
    about = "vLLM CLI (simulated)"
)]
pub(crate) struct Cli {
    /// Show the version and exit.
    #[arg(short = 'v', long)]
    pub version: bool,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Launch a local OpenAI-compatible API server (simulated engine).
    Serve(Box<SimArgs>),
}

/// `vllm-sim serve MODEL [options]`. Field names follow vLLM's argparse destinations.
#[derive(Debug, Clone, Args)]
pub struct SimArgs {
    /// The model tag to serve (positional, like `vllm serve MODEL`).
    #[arg(value_name = "model_tag")]
    pub model_tag: Option<String>,
    /// Deprecated spelling of the positional model tag.
    #[arg(long = "model", hide = true)]
    pub model: Option<String>,
    /// Host name to bind; unset binds all IPv4 interfaces and logs `0.0.0.0`.
    #[arg(long)]
    pub host: Option<String>,
    /// Port to listen on; 0 picks a free port (logged in `Starting vLLM server on ...`).
    #[arg(long, default_value_t = 8000)]
    pub port: u16,
    /// Names the model is served under; the first one is reported in responses and metrics.
    #[arg(long, num_args = 1..)]
    pub served_model_name: Vec<String>,
    /// Context length: N, `1k` (=1000), `1K` (=1024), or `-1`/`auto` (what the KV cache holds).
    #[arg(long, allow_hyphen_values = true)]
    pub max_model_len: Option<String>,
    /// Most sequences running in one batch; the rest wait.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_num_seqs: u32,
    /// Token budget of one engine step (prefill chunks + one token per decoding sequence).
    #[arg(long)]
    pub max_num_batched_tokens: Option<String>,
    #[arg(long, alias = "device-memory-utilization", default_value_t = 0.92)]
    pub gpu_memory_utilization: f64,
    #[arg(long, overrides_with = "disable_prefix_caching")]
    pub enable_prefix_caching: bool,
    #[arg(long, alias = "no-enable-prefix-caching", overrides_with = "enable_prefix_caching")]
    pub disable_prefix_caching: bool,
    #[arg(short = 'q', long)]
    pub quantization: Option<String>,
    #[arg(long, default_value = "auto")]
    pub kv_cache_dtype: String,
    /// `-tp` is rewritten to this flag before parsing.
    #[arg(long, default_value_t = 1)]
    pub tensor_parallel_size: u32,
    /// Report `prompt_tokens_details.cached_tokens` in the final usage.
    #[arg(long, overrides_with = "disable_prompt_tokens_details")]
    pub enable_prompt_tokens_details: bool,
    #[arg(
        long,
        alias = "no-enable-prompt-tokens-details",
        overrides_with = "enable_prompt_tokens_details"
    )]
    pub disable_prompt_tokens_details: bool,
    #[arg(long, overrides_with = "no_trust_remote_code")]
    pub trust_remote_code: bool,
    #[arg(long, overrides_with = "trust_remote_code")]
    pub no_trust_remote_code: bool,
    #[arg(long, overrides_with = "no_enforce_eager")]
    pub enforce_eager: bool,
    #[arg(long, overrides_with = "enforce_eager")]
    pub no_enforce_eager: bool,
    #[arg(long, value_enum, default_value_t = SchedulingPolicy::Fcfs)]
    pub scheduling_policy: SchedulingPolicy,
    /// Seconds to drain in-flight requests on SIGTERM; 0 aborts them.
    #[arg(long, default_value_t = 0)]
    pub shutdown_timeout: u64,
    /// JSON such as `{"image":4,"video":0}`; enforced for image parts.
    #[arg(long)]
    pub limit_mm_per_prompt: Option<String>,
    #[arg(long, default_value = "auto")]
    pub dtype: String,
    #[arg(long, default_value = "auto")]
    pub generation_config: String,
    #[arg(long, value_enum, default_value_t = LogLevel::Info)]
    pub uvicorn_log_level: LogLevel,
    /// No `vllm:*` metrics and no periodic stats line.
    #[arg(long)]
    pub disable_log_stats: bool,
    #[arg(long, overrides_with = "disable_log_requests")]
    pub enable_log_requests: bool,
    #[arg(long, alias = "no-enable-log-requests", overrides_with = "enable_log_requests")]
    pub disable_log_requests: bool,
    /// Bearer keys required on `/v1/*` (falls back to `VLLM_API_KEY`).
    #[arg(long, num_args = 1.., env = "VLLM_API_KEY")]
    pub api_key: Vec<String>,
    #[arg(long)]
    pub seed: Option<u64>,
    #[command(flatten)]
    pub compat: CompatArgs,
    #[command(flatten)]
    pub sim: SimTuning,
}

/// vLLM flags the simulator accepts; the ones with an effect say so.
#[derive(Debug, Clone, Args)]
pub struct CompatArgs {
    #[arg(long)]
    pub uds: Option<String>,
    /// `-dp` is rewritten to this flag before parsing.
    #[arg(long, default_value_t = 1)]
    pub data_parallel_size: u32,
    /// Admission control: more waiting requests than this get HTTP 503.
    #[arg(long)]
    pub max_num_queued_reqs: Option<u32>,
    #[arg(long)]
    pub max_num_queued_tokens: Option<u64>,
    /// Usage (and continuous usage) on every stream.
    #[arg(long, overrides_with = "disable_force_include_usage")]
    pub enable_force_include_usage: bool,
    #[arg(long, overrides_with = "enable_force_include_usage")]
    pub disable_force_include_usage: bool,
    /// Send the `X-Request-Id` response header.
    #[arg(long, overrides_with = "disable_request_id_headers")]
    pub enable_request_id_headers: bool,
    #[arg(long, overrides_with = "enable_request_id_headers")]
    pub disable_request_id_headers: bool,
    #[arg(long, default_value_t = 0.0)]
    pub sse_keep_alive_interval: f64,
    #[arg(long)]
    pub default_chat_template_kwargs: Option<String>,
    #[arg(long)]
    pub reasoning_parser: Option<String>,
    #[arg(long)]
    pub chat_template: Option<String>,
    /// Role of the first stream delta and of the message.
    #[arg(long, default_value = "assistant")]
    pub response_role: String,
    #[arg(long)]
    pub tokenizer: Option<String>,
    #[arg(long)]
    pub revision: Option<String>,
    #[arg(long)]
    pub download_dir: Option<String>,
    #[arg(long)]
    pub load_format: Option<String>,
    #[arg(long)]
    pub block_size: Option<u32>,
    #[arg(long)]
    pub swap_space: Option<f64>,
    #[arg(long)]
    pub max_logprobs: Option<i64>,
    #[arg(long)]
    pub tool_call_parser: Option<String>,
    #[arg(long)]
    pub enable_auto_tool_choice: bool,
    /// No uvicorn access-log lines on stdout.
    #[arg(long)]
    pub disable_uvicorn_access_log: bool,
    #[arg(long)]
    pub disable_access_log_for_endpoints: Option<String>,
    #[arg(long)]
    pub device_ids: Option<String>,
    #[arg(long, overrides_with = "no_enable_chunked_prefill")]
    pub enable_chunked_prefill: bool,
    #[arg(long, alias = "disable-chunked-prefill", overrides_with = "enable_chunked_prefill")]
    pub no_enable_chunked_prefill: bool,
    #[arg(long)]
    pub enable_server_load_tracking: bool,
    #[arg(long)]
    pub disable_fastapi_docs: bool,
    #[arg(long)]
    pub allowed_origins: Option<String>,
}

/// The simulation knobs; `vllm serve` has none of these.
#[derive(Debug, Clone, Args)]
pub struct SimTuning {
    /// Model "loading" time: the port refuses connections until it is over.
    #[arg(long, default_value_t = 0)]
    pub sim_startup_ms: u64,
    /// Prefill cost per uncached prompt token, in microseconds.
    #[arg(long, default_value_t = 0)]
    pub sim_prefill_us_per_token: u64,
    /// Duration of one decode step (one token for every running sequence), in milliseconds.
    #[arg(long, default_value_t = 0.0)]
    pub sim_itl_ms: f64,
    /// Prefix-cache capacity in 16-token blocks (also the KV cache size).
    #[arg(long, default_value_t = 4096, value_parser = clap::value_parser!(u32).range(1..))]
    pub sim_kv_blocks: u32,
    /// What the model answers.
    #[arg(long, value_enum, default_value_t = ReplyMode::Lorem)]
    pub sim_reply: ReplyMode,
    /// Whether the model reads images: `auto` takes a model id with a `VL` part (`Qwen/Qwen3-VL-4B-Instruct`) as
    /// multimodal and any other as text-only, as vLLM decides by the model's architecture. A text-only model
    /// answers a request with image parts with vLLM's 400 "{model} is not a multimodal model".
    #[arg(long, value_enum, value_name = "WHEN", default_value_t = Multimodal::Auto)]
    pub sim_multimodal: Multimodal,
    /// Natural length of a reply in tokens (the final EOS token included) before max_tokens cuts it.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..))]
    pub sim_reply_tokens: u32,
    /// The EngineCore dies when the N-th chat request (in submission order) has its first token:
    /// running streams get vLLM's in-stream `EngineDeadError` event and `[DONE]`, `/health`
    /// answers 503, and the process exits with status 1 about 100 ms later.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub sim_crash_after_requests: Option<u64>,
    /// The engine core hangs after the step that admitted the N-th chat request: no more tokens
    /// for anyone, new requests get their headers and nothing else, `/health` stays 200 and the
    /// metrics freeze. SIGTERM still stops the server.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub sim_hang_after_requests: Option<u64>,
    /// Fail the start-up the way vLLM does, with its error lines, and exit 1.
    #[arg(long, value_enum, value_name = "KIND")]
    pub sim_fail_start: Option<FailStart>,
    /// The EngineCore child process exits by itself after this many seconds, so that one orphaned
    /// by a SIGKILLed API server (vLLM has no parent-death watchdog) does not live forever.
    #[arg(long, default_value_t = 3600, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
    pub sim_engine_core_max_lifetime_s: u64,
}

/// `--sim-fail-start`: which start-up failure to reproduce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FailStart {
    /// CUDA out of memory in the EngineCore's profiling run, after the weights loaded.
    Oom,
    /// The model id is neither a Hugging Face repository nor a local directory.
    ModelNotFound,
    /// The API server's port is taken (`OSError: [Errno 98] Address already in use`).
    PortInUse,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SchedulingPolicy {
    Fcfs,
    Priority,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
pub enum LogLevel {
    Trace,
    Debug,
    Info,
    Warning,
    Error,
    Critical,
}

/// `--sim-multimodal`: whether the simulated model reads images.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Multimodal {
    /// By the model id: multimodal when a part of it is `VL` (case-insensitive).
    Auto,
    On,
    Off,
}

impl Multimodal {
    /// Whether a model with id `model` reads images.
    pub fn reads_images(self, model: &str) -> bool {
        match self {
            Multimodal::On => true,
            Multimodal::Off => false,
            Multimodal::Auto => model
                .split(|c: char| !c.is_ascii_alphanumeric())
                .any(|part| part.eq_ignore_ascii_case("vl")),
        }
    }
}

/// What the simulated model says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReplyMode {
    /// Deterministic lorem-ipsum words seeded by the prompt.
    Lorem,
    /// One line describing what the engine saw (see [`super::reply`]).
    Echo,
}
