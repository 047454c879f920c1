//! [`SimArgs`] (raw clap values) parsed into the typed [`SimConfig`] every other module reads.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use super::cli::{DEFAULT_MODEL, FailStart, LogLevel, ReplyMode, SchedulingPolicy, SimArgs, VLLM_VERSION};
use super::tokenizer::fnv1a;

/// KV-cache block size in tokens (vLLM's default for CUDA attention backends).
pub const BLOCK_SIZE: u32 = 16;
/// `--max-model-len` when none is given (the simulated model's config value).
pub const DEFAULT_MAX_MODEL_LEN: u32 = 4096;
/// `--max-num-batched-tokens` when none is given (vLLM's value on an H100).
pub const DEFAULT_MAX_NUM_BATCHED_TOKENS: u32 = 8192;

/// Why a command line cannot start a server (vLLM raises these before or while building the engine).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("ValueError: --served-model-name requires a model to be specified")]
    ServedNameWithoutModel,
    #[error("ValueError: invalid value for --{flag}: {value:?}")]
    InvalidValue { flag: &'static str, value: String },
    #[error(
        "ValueError: To serve at least one request with the model's max seq len ({max_model_len}), \
         {needed} tokens of KV cache are needed, which is larger than the available KV cache \
         ({available} tokens). Try increasing `--sim-kv-blocks` or decreasing `max_model_len` when \
         initializing the engine."
    )]
    KvCacheTooSmall {
        max_model_len: u32,
        needed: u64,
        available: u64,
    },
}

/// Everything the simulator needs, typed, grouped by the part of it that reads each setting.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// The model tag (`root` in `/v1/models`).
    pub model: String,
    /// Served names, never empty; the first is the `model` of responses and the metrics label.
    pub served_names: Vec<String>,
    pub server: ServerSettings,
    pub logging: LogSettings,
    pub engine: EngineShape,
    pub timing: TimingModel,
    pub replies: ReplySettings,
    pub faults: FaultInjection,
    /// The program to run as the EngineCore child (`PROGRAM __engine-core ...`); `None` keeps the
    /// engine core in this process (library use). The `vllm-sim` binary sets its own path.
    pub engine_core_exe: Option<PathBuf>,
}

/// The HTTP server: where it listens, who may call it, and how long it drains on shutdown.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub host: Option<String>,
    pub port: u16,
    /// `--api-key`s (empty ones dropped); none means `/v1/*` is open.
    pub api_keys: Vec<String>,
    /// `--enable-request-id-headers`: responses carry `x-request-id`.
    pub request_id_headers: bool,
    /// `--shutdown-timeout`: how long in-flight requests may finish after a shutdown signal.
    pub shutdown_timeout: Duration,
}

/// What the server logs besides its start-up and shutdown lines.
#[derive(Debug, Clone)]
pub struct LogSettings {
    /// uvicorn's INFO lines (startup and access log) are printed.
    pub uvicorn_info: bool,
    /// uvicorn's access log: one line per HTTP request.
    pub access_log: bool,
    /// `--enable-log-requests`: a `Received request` line per chat completion (its prompt and max tokens, and the
    /// `temperature` and `top_p` it was sent).
    pub log_requests: bool,
    /// Not `--disable-log-stats`: the periodic throughput line, and a non-empty `/metrics`.
    pub log_stats: bool,
}

/// The simulated engine's size and the scheduler's limits.
#[derive(Debug, Clone)]
pub struct EngineShape {
    pub max_model_len: u32,
    pub max_num_seqs: u32,
    pub max_num_batched_tokens: u32,
    /// `--sim-kv-blocks`: KV-cache blocks of [`BLOCK_SIZE`] tokens.
    pub kv_blocks: u32,
    pub prefix_caching: bool,
    pub scheduling: SchedulingPolicy,
    pub max_num_queued_reqs: Option<u32>,
    /// Most image parts per prompt (`--limit-mm-per-prompt '{"image":N}'`).
    pub image_limit: Option<u32>,
    /// `--sim-multimodal`, resolved for the model: whether image parts are accepted at all.
    pub multimodal: bool,
    pub tensor_parallel_size: u32,
    /// `--enforce-eager`: no torch.compile and no CUDA graphs at start-up.
    pub enforce_eager: bool,
}

/// How long the simulated work takes.
#[derive(Debug, Clone)]
pub struct TimingModel {
    /// `--sim-startup-ms`: the whole engine start-up.
    pub startup: Duration,
    /// `--sim-prefill-us-per-token`.
    pub prefill_per_token: Duration,
    /// `--sim-itl-ms`: one decode step.
    pub itl: Duration,
}

/// What replies look like: their text, their length and the fields around it.
#[derive(Debug, Clone)]
pub struct ReplySettings {
    pub reply_mode: ReplyMode,
    pub reply_tokens: u32,
    /// `--seed`: seeds replies of requests that bring no `seed` of their own.
    pub seed: Option<u64>,
    pub response_role: String,
    pub force_include_usage: bool,
    /// `--enable-prompt-tokens-details`: usage reports `prompt_tokens_details.cached_tokens`.
    pub prompt_tokens_details: bool,
    /// `system_fingerprint`, `vllm-<ver>[-tpN]-<hash8>`.
    pub fingerprint: String,
}

/// The failures the `--sim-*` flags ask for (the scheduler's [`Faults`](super::scheduler::Faults)
/// carries the two it acts on, with its cancellation tokens).
#[derive(Debug, Clone)]
pub struct FaultInjection {
    /// `--sim-crash-after-requests`.
    pub crash_after: Option<u64>,
    /// `--sim-hang-after-requests`.
    pub hang_after: Option<u64>,
    /// `--sim-fail-start`.
    pub fail_start: Option<FailStart>,
    /// `--sim-engine-core-max-lifetime-s`.
    pub engine_core_max_lifetime: Duration,
}

/// `parse(value)`, or the flag's [`ConfigError::InvalidValue`].
fn parsed<T>(flag: &'static str, value: &str, parse: impl FnOnce(&str) -> Option<T>) -> Result<T, ConfigError> {
    parse(value).ok_or_else(|| ConfigError::InvalidValue {
        flag,
        value: value.to_owned(),
    })
}

impl SimConfig {
    pub fn from_args(args: &SimArgs) -> Result<Self, ConfigError> {
        let model = match (&args.model_tag, &args.model) {
            (Some(m), _) | (None, Some(m)) => m.clone(),
            (None, None) if !args.served_model_name.is_empty() => {
                return Err(ConfigError::ServedNameWithoutModel);
            }
            (None, None) => DEFAULT_MODEL.to_owned(),
        };
        let served_names = if args.served_model_name.is_empty() {
            vec![model.clone()]
        } else {
            args.served_model_name.clone()
        };
        let kv_tokens = u64::from(args.sim.sim_kv_blocks) * u64::from(BLOCK_SIZE);
        let max_model_len = match args.max_model_len.as_deref() {
            None => DEFAULT_MAX_MODEL_LEN,
            Some("auto" | "-1") => u32::try_from(kv_tokens).unwrap_or(u32::MAX),
            Some(v) => parsed("max-model-len", v, parse_token_count)?,
        };
        let needed = u64::from(max_model_len.div_ceil(BLOCK_SIZE)) * u64::from(BLOCK_SIZE);
        if needed > kv_tokens {
            return Err(ConfigError::KvCacheTooSmall {
                max_model_len,
                needed,
                available: kv_tokens,
            });
        }
        let max_num_batched_tokens = match args.max_num_batched_tokens.as_deref() {
            None => DEFAULT_MAX_NUM_BATCHED_TOKENS,
            Some(v) => parsed("max-num-batched-tokens", v, parse_token_count)?,
        };
        let image_limit = match args.limit_mm_per_prompt.as_deref() {
            None => None,
            Some(json) => parsed("limit-mm-per-prompt", json, parse_image_limit)?,
        };
        let itl_ms = args.sim.sim_itl_ms;
        if !itl_ms.is_finite() || itl_ms < 0.0 {
            return Err(ConfigError::InvalidValue {
                flag: "sim-itl-ms",
                value: itl_ms.to_string(),
            });
        }
        let tp = args.tensor_parallel_size.max(1);
        let fingerprint = fingerprint(&model, max_model_len, tp, args.sim.sim_kv_blocks);
        let multimodal = args.sim.sim_multimodal.reads_images(&model);
        let uvicorn_info = args.uvicorn_log_level <= LogLevel::Info;
        Ok(Self {
            model,
            served_names,
            server: ServerSettings {
                host: args.host.clone(),
                port: args.port,
                api_keys: args.api_key.iter().filter(|k| !k.is_empty()).cloned().collect(),
                request_id_headers: args.compat.enable_request_id_headers,
                shutdown_timeout: Duration::from_secs(args.shutdown_timeout),
            },
            logging: LogSettings {
                uvicorn_info,
                access_log: uvicorn_info && !args.compat.disable_uvicorn_access_log,
                log_requests: args.enable_log_requests,
                log_stats: !args.disable_log_stats,
            },
            engine: EngineShape {
                max_model_len,
                max_num_seqs: args.max_num_seqs,
                max_num_batched_tokens: max_num_batched_tokens.max(1),
                kv_blocks: args.sim.sim_kv_blocks,
                prefix_caching: !args.disable_prefix_caching,
                scheduling: args.scheduling_policy,
                max_num_queued_reqs: args.compat.max_num_queued_reqs,
                image_limit,
                multimodal,
                tensor_parallel_size: tp,
                enforce_eager: args.enforce_eager,
            },
            timing: TimingModel {
                startup: Duration::from_millis(args.sim.sim_startup_ms),
                prefill_per_token: Duration::from_micros(args.sim.sim_prefill_us_per_token),
                itl: Duration::from_secs_f64(itl_ms / 1000.0),
            },
            replies: ReplySettings {
                reply_mode: args.sim.sim_reply,
                reply_tokens: args.sim.sim_reply_tokens,
                seed: args.seed,
                response_role: args.compat.response_role.clone(),
                force_include_usage: args.compat.enable_force_include_usage,
                prompt_tokens_details: args.enable_prompt_tokens_details,
                fingerprint,
            },
            faults: FaultInjection {
                crash_after: args.sim.sim_crash_after_requests,
                hang_after: args.sim.sim_hang_after_requests,
                fail_start: args.sim.sim_fail_start,
                engine_core_max_lifetime: Duration::from_secs(args.sim.sim_engine_core_max_lifetime_s),
            },
            engine_core_exe: None,
        })
    }

    /// The name responses and metrics report.
    pub fn model_name(&self) -> &str {
        self.served_names.first().map_or(self.model.as_str(), String::as_str)
    }
}

/// vLLM's human token counts: `4096`, `1k` (=1000), `1K` (=1024), `1m`, `1M`.
pub fn parse_token_count(v: &str) -> Option<u32> {
    let (digits, mult) = match v.chars().last()? {
        'k' => (&v[..v.len() - 1], 1_000u64),
        'K' => (&v[..v.len() - 1], 1_024),
        'm' => (&v[..v.len() - 1], 1_000_000),
        'M' => (&v[..v.len() - 1], 1_048_576),
        _ => (v, 1),
    };
    let n: u64 = digits.parse().ok()?;
    u32::try_from(n.checked_mul(mult)?).ok().filter(|&n| n > 0)
}

/// `{"image":4}` or `{"image":{"count":2,...}}` → `Some(Some(4))`; other modalities are ignored.
fn parse_image_limit(json: &str) -> Option<Option<u32>> {
    let map: HashMap<String, serde_json::Value> = serde_json::from_str(json).ok()?;
    let Some(image) = map.get("image") else {
        return Some(None);
    };
    let count = match image {
        serde_json::Value::Number(n) => n.as_u64()?,
        serde_json::Value::Object(o) => o.get("count")?.as_u64()?,
        _ => return None,
    };
    Some(Some(u32::try_from(count).ok()?))
}

fn fingerprint(model: &str, max_model_len: u32, tp: u32, kv_blocks: u32) -> String {
    let material = format!("{model}|{max_model_len}|{tp}|{kv_blocks}");
    let hash8 = fnv1a(material.as_bytes()) as u32;
    if tp > 1 {
        format!("vllm-{VLLM_VERSION}-tp{tp}-{hash8:08x}")
    } else {
        format!("vllm-{VLLM_VERSION}-{hash8:08x}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_counts_follow_vllm_suffixes() {
        assert_eq!(parse_token_count("4096"), Some(4096));
        assert_eq!(parse_token_count("1k"), Some(1000));
        assert_eq!(parse_token_count("1K"), Some(1024));
        assert_eq!(parse_token_count("x"), None);
        assert_eq!(parse_token_count("0"), None);
    }

    #[test]
    fn image_limit_forms() {
        assert_eq!(parse_image_limit(r#"{"image":4,"video":0}"#), Some(Some(4)));
        assert_eq!(parse_image_limit(r#"{"image":{"count":2}}"#), Some(Some(2)));
        assert_eq!(parse_image_limit(r#"{"video":1}"#), Some(None));
        assert_eq!(parse_image_limit("nope"), None);
    }
}
