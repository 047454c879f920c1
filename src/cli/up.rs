//! `mqtt-llm up`'s arguments, and their mapping to [`RawSettings`] (validation is the library's).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};
use mqtt_llm::config::*;
use mqtt_llm::secret::Secret;

use super::{BrokerArgs, InstallArgs};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum MqttVersionArg {
    #[value(name = "3")]
    V3,
    #[value(name = "5")]
    V5,
}

impl MqttVersionArg {
    const DEFAULT: Self = match DEFAULT_MQTT_VERSION {
        3 => Self::V3,
        _ => Self::V5,
    };

    fn number(self) -> u8 {
        match self {
            Self::V3 => 3,
            Self::V5 => 5,
        }
    }
}

/// `--session-owner`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SessionOwnerArg {
    /// Any request may use any session (the original server's behaviour).
    None,
    /// A session belongs to the client id that created it.
    Client,
    /// A session belongs to the authenticated MQTT username (needs the embedded broker; refused for now).
    User,
}

impl SessionOwnerArg {
    fn raw(self) -> RawSessionOwner {
        match self {
            Self::None => RawSessionOwner::None,
            Self::Client => RawSessionOwner::Client,
            Self::User => RawSessionOwner::User,
        }
    }
}

/// `--trim-policy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TrimPolicyArg {
    /// Drop whole oldest turns down to the low-water mark in one step (prefix-cache friendly).
    Stable,
    /// Drop whole oldest turns until the prompt just fits (a full prefill on every turn once the window is full).
    Sliding,
}

impl TrimPolicyArg {
    fn raw(self) -> mqtt_llm::session::TrimPolicy {
        match self {
            Self::Stable => mqtt_llm::session::TrimPolicy::Stable,
            Self::Sliding => mqtt_llm::session::TrimPolicy::Sliding,
        }
    }
}

/// `--engine`: the server `up` launches (`auto` comes in a later version).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EngineArg {
    /// `vllm serve` on NVIDIA GPUs.
    Vllm,
    /// llama.cpp's server on CPU (through the `xllamacpp` Python wheel).
    Llamacpp,
}

impl EngineArg {
    fn raw(self) -> RawEngineKind {
        match self {
            Self::Vllm => RawEngineKind::Vllm,
            Self::Llamacpp => RawEngineKind::LlamaCpp,
        }
    }
}

#[derive(Debug, Args)]
pub struct UpArgs {
    // ---- engine ----
    /// The engine to launch: `vllm` (GPUs) or `llamacpp` (CPU: llama.cpp's server through the xllamacpp wheel,
    /// installed by `mqtt-llm setup --engine llamacpp`).
    #[arg(long, value_enum, env = "MQTT_LLM_ENGINE", default_value_t = EngineArg::Vllm)]
    pub engine: EngineArg,
    /// Model to serve: a Hugging Face id, a local directory, or an alias of the original server
    /// (`qwen3-vl-4b`, `qwq-32b`, ...; see the README). Passed to `vllm serve`; required unless --engine-url.
    /// Under `--engine llamacpp`: a path to a .gguf file [default: the built-in SmolLM2-135M-Instruct of
    /// --llamacpp-venv].
    #[arg(long, env = "MQTT_LLM_MODEL")]
    pub model: Option<String>,
    /// Attach to an already running OpenAI-compatible server instead of launching one.
    #[arg(long, env = "MQTT_LLM_ENGINE_URL", conflicts_with = "vllm_bin")]
    pub engine_url: Option<String>,
    /// The `vllm` executable to launch [default: VENV/bin/vllm, else `vllm` on PATH].
    #[arg(long, env = "MQTT_LLM_VLLM_BIN")]
    pub vllm_bin: Option<PathBuf>,
    #[command(flatten)]
    pub install: InstallArgs,
    /// Do not install the engine (vLLM, or llama.cpp's virtualenv) when none is found; fail instead.
    #[arg(long)]
    pub no_bootstrap: bool,
    /// Print the engine command (program, arguments, environment) and exit without launching anything.
    #[arg(long)]
    pub dry_run: bool,
    /// Model name the engine serves (and requests name). Default: the alias given to --model, else the model;
    /// in attach mode the first model the server lists.
    #[arg(long)]
    pub served_model_name: Option<String>,
    /// Port for the launched engine (default: a free port on 127.0.0.1).
    #[arg(long)]
    pub engine_port: Option<u16>,
    /// GPUs the engine may use, as `nvidia-smi` numbers them (or GPU-/MIG- UUIDs): sets CUDA_VISIBLE_DEVICES
    /// and, by default, `--tensor-parallel-size` to their count.
    #[arg(long, env = "MQTT_LLM_GPUS")]
    pub gpus: Option<String>,
    /// Passed to vLLM as `--tensor-parallel-size` [default: the number of --gpus].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub tensor_parallel_size: Option<u32>,
    /// Passed to vLLM as `--gpu-memory-utilization`: the share of each GPU's memory vLLM may take [default: 0.85].
    #[arg(long, value_name = "GPU_MEMORY_UTILIZATION")]
    pub gpu_memory_utilization: Option<f32>,
    /// Passed to vLLM as `--quantization`, e.g. `fp8` (an FP8 checkpoint needs none).
    #[arg(long)]
    pub quantization: Option<String>,
    /// Passed to vLLM as `--kv-cache-dtype`, e.g. `fp8`.
    #[arg(long)]
    pub kv_cache_dtype: Option<String>,
    /// Passed to vLLM as `--max-model-len`. Under llama.cpp: one slot's context [default: 2048]; llama.cpp's
    /// `--ctx` is this times --max-num-seqs.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_model_len: Option<u32>,
    /// Passed to vLLM as `--max-num-seqs`. Under llama.cpp: the concurrent slots, `--parallel` [default: 2].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_num_seqs: Option<u32>,
    /// `--engine llamacpp`: the Python that has the xllamacpp wheel [default: --llamacpp-venv's, installed first
    /// when it is not, unless --no-bootstrap].
    #[arg(long, env = "MQTT_LLM_LLAMACPP_PYTHON", value_name = "PATH")]
    pub llamacpp_python: Option<PathBuf>,
    /// `--engine llamacpp`: the virtualenv `mqtt-llm setup --engine llamacpp` installs xllamacpp and the built-in
    /// model into [default: $XDG_DATA_HOME/mqtt-llm/llamacpp-venv, else ~/.local/share/mqtt-llm/llamacpp-venv].
    #[arg(long, env = "MQTT_LLM_LLAMACPP_VENV", value_name = "DIR")]
    pub llamacpp_venv: Option<PathBuf>,
    /// `--engine llamacpp`: llama.cpp's CPU threads [default: 1; more makes decoding collapse on a small, busy
    /// machine].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub threads: Option<u32>,
    /// Passed to vLLM (the default): conversations reuse their cached prefix.
    #[arg(long, overrides_with = "disable_prefix_caching")]
    pub enable_prefix_caching: bool,
    /// Passed to vLLM as `--no-enable-prefix-caching`.
    #[arg(long, overrides_with = "enable_prefix_caching")]
    pub disable_prefix_caching: bool,
    /// Passed to vLLM (the default): usage reports cached prompt tokens.
    #[arg(long, overrides_with = "disable_prompt_tokens_details")]
    pub enable_prompt_tokens_details: bool,
    /// Do not pass `--enable-prompt-tokens-details`.
    #[arg(long, overrides_with = "enable_prompt_tokens_details")]
    pub disable_prompt_tokens_details: bool,
    /// Passed to vLLM as `--limit-mm-per-prompt` (JSON) [default for vision models: {"image":4,"video":0}].
    #[arg(long)]
    pub limit_mm_per_prompt: Option<String>,
    /// Extra argument for `vllm serve` (repeatable), e.g. `--engine-arg=--enforce-eager`.
    #[arg(long = "engine-arg", allow_hyphen_values = true)]
    pub engine_args: Vec<String>,
    /// File that keeps the engine's whole output, rotated at 50 MiB (3 kept)
    /// [default: $XDG_STATE_HOME/mqtt-llm/engine.log, else ~/.local/state/mqtt-llm/engine.log].
    #[arg(long, env = "MQTT_LLM_ENGINE_LOG")]
    pub engine_log: Option<PathBuf>,
    /// Keep no engine log file, whatever --engine-log says (the output still goes to mqtt-llm's log).
    #[arg(long)]
    pub no_engine_log: bool,
    /// How long the engine may take to become healthy.
    #[arg(long, default_value = DEFAULT_ENGINE_START_TIMEOUT.text, value_parser = humantime::parse_duration)]
    pub engine_start_timeout: Duration,
    /// After SIGTERM to the engine's process group, how long to wait before SIGKILL.
    #[arg(long, default_value = DEFAULT_ENGINE_GRACE.text, value_parser = humantime::parse_duration)]
    pub engine_grace: Duration,
    /// How often a ready engine's /health is probed (and hangs are checked).
    #[arg(long, default_value = DEFAULT_ENGINE_PROBE_INTERVAL.text, value_parser = humantime::parse_duration)]
    pub engine_probe_interval: Duration,
    /// Requests running with no token for this long, while the engine's metrics show no progress, mean the
    /// engine hangs: it is restarted.
    #[arg(long, default_value = DEFAULT_ENGINE_STALL_TIMEOUT.text, value_parser = humantime::parse_duration)]
    pub engine_stall_timeout: Duration,
    /// How long accepted requests wait for a (re)starting engine before they get the overload reply.
    #[arg(long, default_value = DEFAULT_ENGINE_WAIT.text, value_parser = humantime::parse_duration)]
    pub engine_wait: Duration,
    /// How long an accepted request may wait before the engine starts on it; then it gets the overload reply
    /// instead of running late.
    #[arg(long, default_value = DEFAULT_MAX_QUEUE_WAIT.text, value_parser = humantime::parse_duration)]
    pub max_queue_wait: Duration,
    /// Engine restarts allowed within --restart-window; one more failure and `up` exits non-zero.
    #[arg(long, default_value_t = DEFAULT_MAX_RESTARTS)]
    pub max_restarts: u32,
    /// The sliding window of --max-restarts.
    #[arg(long, default_value = DEFAULT_RESTART_WINDOW.text, value_parser = humantime::parse_duration)]
    pub restart_window: Duration,

    // ---- MQTT ----
    #[command(flatten)]
    pub broker: BrokerArgs,
    /// Without --broker: the embedded broker's MQTT listener (MQTT 3.1.1 and 5), or `off` [default: 0.0.0.0:1883].
    #[arg(long, env = "MQTT_LLM_MQTT_LISTEN", value_name = "ADDR|off")]
    pub mqtt_listen: Option<String>,
    /// Without --broker: the embedded broker's WebSocket listener (path /mqtt, for browsers), or `off` [default:
    /// 0.0.0.0:9001].
    #[arg(long, env = "MQTT_LLM_MQTT_WS_LISTEN", value_name = "ADDR|off")]
    pub mqtt_ws_listen: Option<String>,
    /// Without --broker: only the users of this file may connect to the embedded broker (one `user:hash` per line,
    /// as `mosquitto_passwd` writes them) [default: anyone].
    #[arg(long, env = "MQTT_LLM_BROKER_AUTH_FILE", value_name = "FILE")]
    pub broker_auth: Option<PathBuf>,
    /// The --broker-auth lines themselves, from the environment only (`MQTT_LLM_BROKER_AUTH`).
    #[arg(
        long = "broker-auth-lines",
        env = "MQTT_LLM_BROKER_AUTH",
        hide = true,
        hide_env_values = true,
        conflicts_with = "broker_auth"
    )]
    pub broker_auth_lines: Option<Secret>,
    /// Without --broker: TLS on the embedded broker's MQTT listener with this PEM certificate chain (needs
    /// --mqtt-tls-key).
    #[arg(long, env = "MQTT_LLM_MQTT_TLS_CERT", value_name = "FILE", requires = "mqtt_tls_key")]
    pub mqtt_tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --mqtt-tls-cert.
    #[arg(long, env = "MQTT_LLM_MQTT_TLS_KEY", value_name = "FILE", requires = "mqtt_tls_cert")]
    pub mqtt_tls_key: Option<PathBuf>,
    /// MQTT username.
    #[arg(long, env = "MQTT_LLM_MQTT_USERNAME")]
    pub mqtt_username: Option<String>,
    /// MQTT password. Visible to every local user (in /proc) when given as a flag: prefer --mqtt-password-file.
    #[arg(long, env = "MQTT_LLM_MQTT_PASSWORD", hide_env_values = true)]
    pub mqtt_password: Option<Secret>,
    /// File holding the MQTT password (its content less the final line ending).
    #[arg(
        long,
        env = "MQTT_LLM_MQTT_PASSWORD_FILE",
        value_name = "FILE",
        conflicts_with = "mqtt_password"
    )]
    pub mqtt_password_file: Option<PathBuf>,
    /// MQTT protocol version.
    #[arg(long, value_enum, default_value_t = MqttVersionArg::DEFAULT)]
    pub mqtt_version: MqttVersionArg,
    /// MQTT client id (default: mqtt-llm-<8 hex>).
    #[arg(long, env = "MQTT_LLM_MQTT_CLIENT_ID")]
    pub mqtt_client_id: Option<String>,
    /// Maximum MQTT packet size in bytes, both directions.
    #[arg(long, default_value_t = DEFAULT_MAX_PACKET_SIZE)]
    pub max_packet_size: u32,
    /// MQTT keep-alive: a link that goes silent without closing is noticed within about twice this.
    #[arg(long, default_value = DEFAULT_MQTT_KEEP_ALIVE.text, value_parser = humantime::parse_duration)]
    pub mqtt_keep_alive: Duration,
    /// The retained online/offline status goes to `{PREFIX}/status` (with a Last Will for a lost connection).
    #[arg(long, env = "MQTT_LLM_STATUS_PREFIX", default_value = DEFAULT_STATUS_PREFIX)]
    pub status_prefix: String,
    /// Publish the successor server's liveness on `{first project}/status` (`{"service","status":"online","ts"}`
    /// while connected, `offline` on shutdown), beside mqtt-llm's own status.
    #[arg(long, env = "MQTT_LLM_LEGACY_STATUS", default_value_t = DEFAULT_LEGACY_STATUS, action = clap::ArgAction::Set)]
    pub legacy_status: bool,
    /// Between two legacy `online` messages.
    #[arg(long, default_value = DEFAULT_LEGACY_STATUS_INTERVAL.text, value_parser = humantime::parse_duration)]
    pub legacy_status_interval: Duration,
    /// `{--status-prefix}/capacity` (retained: queue depth, in-flight, engine state, whether requests are
    /// accepted) is published on change and at least this often.
    #[arg(long, default_value = DEFAULT_CAPACITY_INTERVAL.text, value_parser = humantime::parse_duration)]
    pub capacity_interval: Duration,
    /// Projects to serve: `{project}/user_input` is subscribed for each (comma or space separated).
    #[arg(long, env = "MQTT_LLM_PROJECTS", default_value = DEFAULT_PROJECTS)]
    pub projects: String,
    /// TOML file with per-project settings (system prompts); see deploy/mqtt-llm.toml.
    #[arg(long, env = "MQTT_LLM_CONFIG")]
    pub config: Option<PathBuf>,

    // ---- requests ----
    /// Engine requests in flight at once, across all sessions.
    #[arg(long, default_value_t = DEFAULT_MAX_INFLIGHT)]
    pub max_inflight: usize,
    /// Requests a single session may have waiting behind its running one.
    #[arg(long, default_value_t = DEFAULT_SESSION_QUEUE)]
    pub session_queue: usize,
    /// Accepted requests (running or waiting) across all sessions before new ones are refused as overloaded.
    #[arg(long, default_value_t = DEFAULT_MAX_QUEUED)]
    pub max_queued: usize,
    /// Coalescing interval of streamed deltas, in milliseconds (0 = one frame per engine chunk).
    #[arg(long, default_value_t = DEFAULT_STREAM_INTERVAL_MS)]
    pub stream_interval_ms: u64,
    /// Default sampling temperature when a request gives none.
    #[arg(long, default_value_t = DEFAULT_TEMPERATURE)]
    pub temperature: f32,
    /// Default top_p when a request gives none.
    #[arg(long, default_value_t = DEFAULT_TOP_P)]
    pub top_p: f32,
    /// Default max_tokens when a request gives none.
    #[arg(long, default_value_t = DEFAULT_MAX_TOKENS)]
    pub max_tokens: u32,
    /// Largest maxTokens a request may ask for.
    #[arg(long, default_value_t = DEFAULT_MAX_TOKENS_LIMIT)]
    pub max_tokens_limit: u32,
    /// Ask the chat template not to think and remove any <think>...</think> block from replies.
    #[arg(long, default_value_t = DEFAULT_SKIP_THINKING, action = clap::ArgAction::Set)]
    pub skip_thinking: bool,
    /// Token budget of a request's prompt (system prompt + kept turns + the new message); lowered to the
    /// model's context minus the request's max tokens when that is smaller. Whole oldest turns are dropped beyond it.
    #[arg(long, default_value_t = DEFAULT_MAX_HISTORY_TOKENS)]
    pub max_history_tokens: u32,
    /// How a history over its budget is trimmed: `stable` drops whole oldest turns down to --trim-low-water in one
    /// step (the following turns share a prefix and hit the engine's prefix cache); `sliding` drops just enough.
    #[arg(long, value_enum, default_value_t = TrimPolicyArg::Stable)]
    pub trim_policy: TrimPolicyArg,
    /// `stable`: after a trim the prompt holds at most this share of the budget (and of --max-history-turns).
    #[arg(long, default_value_t = DEFAULT_TRIM_LOW_WATER)]
    pub trim_low_water: f32,
    /// Most turns a history keeps (0: no limit but the tokens).
    #[arg(long, default_value_t = DEFAULT_MAX_HISTORY_TURNS)]
    pub max_history_turns: u32,
    /// History bytes held in memory, all sessions together; beyond it the least recently used are forgotten.
    #[arg(long, default_value_t = DEFAULT_MAX_HISTORY_BYTES)]
    pub max_history_bytes: usize,
    /// Where conversations are persisted (`sessions.redb`); default `$XDG_STATE_HOME/mqtt-llm`, else
    /// `~/.local/state/mqtt-llm`.
    #[arg(long, env = "MQTT_LLM_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// A completed turn is on disk within this long (writes are batched; one fsync per batch).
    #[arg(long, default_value = DEFAULT_PERSIST_INTERVAL.text, value_parser = humantime::parse_duration)]
    pub persist_interval: Duration,
    /// Keep conversations in memory only (nothing survives a restart).
    #[arg(long)]
    pub no_persist: bool,
    /// Forget a conversation after this long without requests.
    #[arg(long, default_value = DEFAULT_SESSION_IDLE_TIMEOUT.text, value_parser = humantime::parse_duration)]
    pub session_idle_timeout: Duration,
    /// Conversations kept in memory; beyond it the least recently used are forgotten (checked every minute).
    #[arg(long, default_value_t = DEFAULT_MAX_SESSIONS)]
    pub max_sessions: usize,
    /// Upper bound on one engine request, from sending it to the last token.
    #[arg(long, default_value = DEFAULT_REQUEST_TIMEOUT.text, value_parser = humantime::parse_duration)]
    pub request_timeout: Duration,
    /// Largest request payload accepted, in bytes.
    #[arg(long, default_value_t = DEFAULT_MAX_PAYLOAD_BYTES)]
    pub max_payload_bytes: usize,
    /// Most images in one request (`images` and `image_url` content parts together); keep it at most the engine's
    /// `--limit-mm-per-prompt` image count.
    #[arg(long, default_value_t = DEFAULT_MAX_IMAGES)]
    pub max_images: usize,
    /// Largest image of a request as a data URL, in decoded bytes (a payload also has to fit
    /// --max-payload-bytes).
    #[arg(long, default_value_t = DEFAULT_MAX_IMAGE_BYTES)]
    pub max_image_bytes: usize,
    /// Who may use a session: anyone (`none`), or only the client id that created it (`client`); a project's
    /// `session_owner` in --config overrides it.
    #[arg(long, value_enum, default_value_t = SessionOwnerArg::None)]
    pub session_owner: SessionOwnerArg,

    // ---- operations ----
    /// Address of the HTTP server for /livez, /readyz and /metrics (port 0 picks a free port).
    #[arg(long, env = "MQTT_LLM_HTTP", default_value_t = DEFAULT_HTTP)]
    pub http: SocketAddr,
    /// On shutdown, how long in-flight and queued requests may take to finish (also the engine's
    /// `--shutdown-timeout`).
    #[arg(long, default_value = DEFAULT_DRAIN_TIMEOUT.text, value_parser = humantime::parse_duration)]
    pub drain_timeout: Duration,
    /// Log a stats line (processed, errors, rejected, queue, average latency) this often (0s: never).
    #[arg(long, default_value = DEFAULT_STATS_INTERVAL.text, value_parser = humantime::parse_duration)]
    pub stats_interval: Duration,

    // ---- GPUs ----
    /// Launch even if the chosen GPUs lack the free memory `--gpu-memory-utilization` asks for (or NVML is
    /// unavailable).
    #[arg(long, env = "MQTT_LLM_SKIP_GPU_CHECK")]
    pub skip_gpu_check: bool,
    /// How often GPU memory and utilization are sampled into the metrics.
    #[arg(long, default_value = DEFAULT_GPU_SAMPLE_INTERVAL.text, value_parser = humantime::parse_duration)]
    pub gpu_sample_interval: Duration,
    /// Warn when a GPU's free memory falls below this many MiB (0 = never).
    #[arg(long, default_value_t = DEFAULT_GPU_LOW_FREE_MIB)]
    pub gpu_low_free_mib: u64,

    /// Arguments after a literal `--` go to `vllm serve` verbatim, after everything else.
    #[arg(last = true, value_name = "VLLM_ARGS")]
    pub vllm_args: Vec<String>,
}

impl UpArgs {
    /// Under `--engine vllm` (the default) `--model` is required unless `--engine-url` attaches; llama.cpp has a
    /// built-in model.
    pub fn model_missing(&self) -> bool {
        self.engine == EngineArg::Vllm && self.model.is_none() && self.engine_url.is_none()
    }

    /// The settings as given, for [`mqtt_llm::config::Config::from_raw`] to validate.
    pub fn raw_settings(&self) -> RawSettings {
        RawSettings {
            engine: RawEngine {
                engine: self.engine.raw(),
                model: self.model.clone(),
                engine_url: self.engine_url.clone(),
                vllm_bin: self.vllm_bin.clone(),
                served_model_name: self.served_model_name.clone(),
                engine_port: self.engine_port,
                gpus: self.gpus.clone(),
                tensor_parallel_size: self.tensor_parallel_size,
                gpu_memory_utilization: self.gpu_memory_utilization,
                quantization: self.quantization.clone(),
                kv_cache_dtype: self.kv_cache_dtype.clone(),
                max_model_len: self.max_model_len,
                max_num_seqs: self.max_num_seqs,
                prefix_caching: !self.disable_prefix_caching,
                prompt_tokens_details: !self.disable_prompt_tokens_details,
                limit_mm_per_prompt: self.limit_mm_per_prompt.clone(),
                llamacpp_python: self.llamacpp_python.clone(),
                llamacpp_venv: self.llamacpp_venv.clone(),
                threads: self.threads,
                engine_args: self.engine_args.iter().chain(&self.vllm_args).cloned().collect(),
                engine_log: self.engine_log.clone(),
                no_engine_log: self.no_engine_log,
                engine_start_timeout: self.engine_start_timeout,
                engine_grace: self.engine_grace,
                engine_probe_interval: self.engine_probe_interval,
                engine_stall_timeout: self.engine_stall_timeout,
                max_restarts: self.max_restarts,
                restart_window: self.restart_window,
            },
            install: RawInstall {
                venv: self.install.venv.clone(),
                python: self.install.python.clone(),
                requirements: self.install.requirements.clone(),
            },
            mqtt: RawMqtt {
                broker: self.broker.url.clone(),
                mqtt_listen: self.mqtt_listen.clone(),
                mqtt_ws_listen: self.mqtt_ws_listen.clone(),
                broker_auth: self.broker_auth.clone(),
                broker_auth_lines: self.broker_auth_lines.clone(),
                mqtt_tls_cert: self.mqtt_tls_cert.clone(),
                mqtt_tls_key: self.mqtt_tls_key.clone(),
                mqtt_username: self.mqtt_username.clone(),
                mqtt_password: self.mqtt_password.clone(),
                mqtt_password_file: self.mqtt_password_file.clone(),
                mqtt_ca: self.broker.ca.clone(),
                mqtt_client_cert: self.broker.client_cert.clone(),
                mqtt_client_key: self.broker.client_key.clone(),
                mqtt_version: self.mqtt_version.number(),
                mqtt_client_id: self.mqtt_client_id.clone(),
                max_packet_size: self.max_packet_size,
                status_prefix: self.status_prefix.clone(),
                mqtt_keep_alive: self.mqtt_keep_alive,
                legacy_status: self.legacy_status,
                legacy_status_interval: self.legacy_status_interval,
                capacity_interval: self.capacity_interval,
                projects: self.projects.clone(),
            },
            requests: RawRequests {
                max_inflight: self.max_inflight,
                session_queue: self.session_queue,
                max_queued: self.max_queued,
                engine_wait: self.engine_wait,
                max_queue_wait: self.max_queue_wait,
                stream_interval_ms: self.stream_interval_ms,
                temperature: self.temperature,
                top_p: self.top_p,
                max_tokens: self.max_tokens,
                max_tokens_limit: self.max_tokens_limit,
                skip_thinking: self.skip_thinking,
                max_history_tokens: self.max_history_tokens,
                session_idle_timeout: self.session_idle_timeout,
                max_sessions: self.max_sessions,
                trim_policy: self.trim_policy.raw(),
                trim_low_water: self.trim_low_water,
                max_history_turns: self.max_history_turns,
                max_history_bytes: self.max_history_bytes,
                state_dir: self.state_dir.clone(),
                persist_interval: self.persist_interval,
                no_persist: self.no_persist,
                request_timeout: self.request_timeout,
                max_payload_bytes: self.max_payload_bytes,
                max_images: self.max_images,
                max_image_bytes: self.max_image_bytes,
                session_owner: self.session_owner.raw(),
            },
            ops: RawOps {
                http: self.http,
                drain_timeout: self.drain_timeout,
                config: self.config.clone(),
                stats_interval: self.stats_interval,
            },
            gpu: RawGpu {
                skip_gpu_check: self.skip_gpu_check,
                gpu_sample_interval: self.gpu_sample_interval,
                gpu_low_free_mib: self.gpu_low_free_mib,
            },
        }
    }
}
