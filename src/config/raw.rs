//! The raw settings layer: every setting of `mqtt-llm up` as given, before validation. The command line (and
//! its `MQTT_LLM_*` variables) fills one; tests and embedders start from [`RawSettings::default`] and assign
//! fields. [`super::Config::from_raw`] turns it into typed settings or says which flag is wrong.
//!
//! [`RawSettings`] is grouped into one section per subsystem, mirroring the typed settings each builder makes:
//! [`RawEngine`] (→ `EngineSettings`), [`RawInstall`] (→ `InstallSettings`), [`RawMqtt`] (→ `MqttSettings`),
//! [`RawRequests`] (→ the request path's `BridgeConfig`: admission, sessions, sampling, limits), [`RawOps`] (the
//! HTTP address, the drain timeout, the projects file) and [`RawGpu`] (→ `GpuSettings`). Within a section a field
//! is named as its flag (minus the dashes). In serde terms the sections are nested tables, so a settings file
//! would read `[engine]`, `[install]`, `[mqtt]`, `[requests]`, `[ops]`, `[gpu]`, each with the flags' names as
//! keys; every section, like the whole, takes its defaults from [`super::defaults`] and refuses unknown keys.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::defaults::*;
use crate::secret::Secret;

/// `mqtt-llm up`'s settings as given, one section per subsystem.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawSettings {
    pub engine: RawEngine,
    pub install: RawInstall,
    pub mqtt: RawMqtt,
    pub requests: RawRequests,
    pub ops: RawOps,
    pub gpu: RawGpu,
}

/// The engine (`[engine]`): launch or attach, the `vllm serve` inputs, the supervision timings and the restart
/// policy.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawEngine {
    /// `--engine`: which server a launch runs.
    pub engine: RawEngineKind,
    pub model: Option<String>,
    pub engine_url: Option<String>,
    pub vllm_bin: Option<PathBuf>,
    pub served_model_name: Option<String>,
    pub engine_port: Option<u16>,
    pub gpus: Option<String>,
    pub tensor_parallel_size: Option<u32>,
    /// `None`: not given (vLLM gets the default; llama.cpp refuses only an explicit value).
    pub gpu_memory_utilization: Option<f32>,
    pub quantization: Option<String>,
    pub kv_cache_dtype: Option<String>,
    pub max_model_len: Option<u32>,
    pub max_num_seqs: Option<u32>,
    pub prefix_caching: bool,
    pub prompt_tokens_details: bool,
    pub limit_mm_per_prompt: Option<String>,
    /// `--llamacpp-python`: the Python that has `xllamacpp` (llama.cpp only).
    pub llamacpp_python: Option<PathBuf>,
    /// `--llamacpp-venv`: the virtualenv `mqtt-llm setup --engine llamacpp` installs into (llama.cpp only).
    pub llamacpp_venv: Option<PathBuf>,
    /// `--threads`: llama.cpp's CPU threads (llama.cpp only).
    pub threads: Option<u32>,
    /// `--engine-arg`s, then the arguments after `--`.
    pub engine_args: Vec<String>,
    pub engine_log: Option<PathBuf>,
    pub no_engine_log: bool,
    #[serde(with = "text_duration")]
    pub engine_start_timeout: Duration,
    #[serde(with = "text_duration")]
    pub engine_grace: Duration,
    #[serde(with = "text_duration")]
    pub engine_probe_interval: Duration,
    #[serde(with = "text_duration")]
    pub engine_stall_timeout: Duration,
    pub max_restarts: u32,
    #[serde(with = "text_duration")]
    pub restart_window: Duration,
}

impl Default for RawEngine {
    fn default() -> Self {
        Self {
            engine: RawEngineKind::default(),
            model: None,
            engine_url: None,
            vllm_bin: None,
            served_model_name: None,
            engine_port: None,
            gpus: None,
            tensor_parallel_size: None,
            gpu_memory_utilization: None,
            quantization: None,
            kv_cache_dtype: None,
            max_model_len: None,
            max_num_seqs: None,
            prefix_caching: true,
            prompt_tokens_details: true,
            limit_mm_per_prompt: None,
            llamacpp_python: None,
            llamacpp_venv: None,
            threads: None,
            engine_args: Vec::new(),
            engine_log: None,
            no_engine_log: false,
            engine_start_timeout: DEFAULT_ENGINE_START_TIMEOUT.value,
            engine_grace: DEFAULT_ENGINE_GRACE.value,
            engine_probe_interval: DEFAULT_ENGINE_PROBE_INTERVAL.value,
            engine_stall_timeout: DEFAULT_ENGINE_STALL_TIMEOUT.value,
            max_restarts: DEFAULT_MAX_RESTARTS,
            restart_window: DEFAULT_RESTART_WINDOW.value,
        }
    }
}

/// `--engine`: the server `up` launches. `auto` (vLLM on a usable GPU, else llama.cpp) is to come as a third
/// variant; until then the default is vLLM.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RawEngineKind {
    /// `vllm serve` on GPUs.
    #[default]
    Vllm,
    /// llama.cpp's server on CPU, through the `xllamacpp` wheel.
    LlamaCpp,
}

/// Where vLLM is found or installed (`[install]`; `--vllm-bin` is the engine's, which launches it).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawInstall {
    pub venv: Option<PathBuf>,
    pub python: PathBuf,
    pub requirements: Option<PathBuf>,
}

impl Default for RawInstall {
    fn default() -> Self {
        Self {
            venv: None,
            python: PathBuf::from(DEFAULT_PYTHON),
            requirements: None,
        }
    }
}

/// The MQTT connection (`[mqtt]`): the broker, the client's identity and limits, the projects subscribed to.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawMqtt {
    /// An external broker's URL; `None`: run the embedded broker and connect to it.
    pub broker: Option<String>,
    /// The embedded broker's MQTT (TCP) listener: an address, or `off`; `None`: the default.
    pub mqtt_listen: Option<String>,
    /// The embedded broker's WebSocket listener (path `/mqtt`): an address, or `off`; `None`: the default.
    pub mqtt_ws_listen: Option<String>,
    /// The embedded broker's users: a file of `user:password-hash` lines.
    pub broker_auth: Option<PathBuf>,
    /// The same lines given directly (`MQTT_LLM_BROKER_AUTH`); excludes `broker_auth`.
    pub broker_auth_lines: Option<Secret>,
    /// TLS on the embedded broker's MQTT listener: PEM certificate chain and key.
    pub mqtt_tls_cert: Option<PathBuf>,
    pub mqtt_tls_key: Option<PathBuf>,
    pub mqtt_username: Option<String>,
    /// Never printed (its `Debug` is `***`).
    pub mqtt_password: Option<Secret>,
    /// A file whose content (less its final line ending) is the password; excludes `mqtt_password`.
    pub mqtt_password_file: Option<PathBuf>,
    pub mqtt_ca: Option<PathBuf>,
    /// PEM client certificate (chain) for mutual TLS; needs `mqtt_client_key`.
    pub mqtt_client_cert: Option<PathBuf>,
    /// PEM private key of `mqtt_client_cert`.
    pub mqtt_client_key: Option<PathBuf>,
    /// 3 (3.1.1) or 5.
    pub mqtt_version: u8,
    pub mqtt_client_id: Option<String>,
    pub max_packet_size: u32,
    pub projects: String,
    /// The status topic is `{status_prefix}/status`.
    pub status_prefix: String,
    /// MQTT keep-alive: how soon a silently dead link is noticed (within about twice this).
    #[serde(with = "text_duration")]
    pub mqtt_keep_alive: Duration,
    /// The successor server's heartbeat on `{first project}/status`.
    pub legacy_status: bool,
    /// Between two legacy `online` messages.
    #[serde(with = "text_duration")]
    pub legacy_status_interval: Duration,
    /// `{status_prefix}/capacity` is published at least this often (and on change).
    #[serde(with = "text_duration")]
    pub capacity_interval: Duration,
}

impl Default for RawMqtt {
    fn default() -> Self {
        Self {
            broker: None,
            mqtt_listen: None,
            mqtt_ws_listen: None,
            broker_auth: None,
            broker_auth_lines: None,
            mqtt_tls_cert: None,
            mqtt_tls_key: None,
            mqtt_username: None,
            mqtt_password: None,
            mqtt_password_file: None,
            mqtt_ca: None,
            mqtt_client_cert: None,
            mqtt_client_key: None,
            mqtt_version: DEFAULT_MQTT_VERSION,
            mqtt_client_id: None,
            max_packet_size: DEFAULT_MAX_PACKET_SIZE,
            projects: DEFAULT_PROJECTS.to_owned(),
            status_prefix: DEFAULT_STATUS_PREFIX.to_owned(),
            mqtt_keep_alive: DEFAULT_MQTT_KEEP_ALIVE.value,
            legacy_status: DEFAULT_LEGACY_STATUS,
            legacy_status_interval: DEFAULT_LEGACY_STATUS_INTERVAL.value,
            capacity_interval: DEFAULT_CAPACITY_INTERVAL.value,
        }
    }
}

/// The request path (`[requests]`): admission (including the wait for a starting engine), the sessions, the
/// sampling defaults and the wire limits.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawRequests {
    pub max_inflight: usize,
    pub session_queue: usize,
    pub max_queued: usize,
    #[serde(with = "text_duration")]
    pub engine_wait: Duration,
    #[serde(with = "text_duration")]
    pub max_queue_wait: Duration,
    pub stream_interval_ms: u64,
    pub temperature: f32,
    pub top_p: f32,
    pub max_tokens: u32,
    pub max_tokens_limit: u32,
    pub skip_thinking: bool,
    pub max_history_tokens: u32,
    #[serde(with = "text_duration")]
    pub session_idle_timeout: Duration,
    pub max_sessions: usize,
    /// `--trim-policy`.
    pub trim_policy: crate::session::TrimPolicy,
    pub trim_low_water: f32,
    pub max_history_turns: u32,
    pub max_history_bytes: usize,
    /// `--state-dir`; `None`: `$XDG_STATE_HOME/mqtt-llm`, else `~/.local/state/mqtt-llm`.
    pub state_dir: Option<PathBuf>,
    #[serde(with = "text_duration")]
    pub persist_interval: Duration,
    pub no_persist: bool,
    #[serde(with = "text_duration")]
    pub request_timeout: Duration,
    pub max_payload_bytes: usize,
    pub max_images: usize,
    pub max_image_bytes: usize,
    /// `--session-owner`: the default of every project without its own `session_owner`.
    pub session_owner: RawSessionOwner,
}

/// `--session-owner` and a project's `session_owner`, as given; `user` is refused when the settings are built.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RawSessionOwner {
    #[default]
    None,
    Client,
    User,
}

impl Default for RawRequests {
    fn default() -> Self {
        Self {
            max_inflight: DEFAULT_MAX_INFLIGHT,
            session_queue: DEFAULT_SESSION_QUEUE,
            max_queued: DEFAULT_MAX_QUEUED,
            engine_wait: DEFAULT_ENGINE_WAIT.value,
            max_queue_wait: DEFAULT_MAX_QUEUE_WAIT.value,
            stream_interval_ms: DEFAULT_STREAM_INTERVAL_MS,
            temperature: DEFAULT_TEMPERATURE,
            top_p: DEFAULT_TOP_P,
            max_tokens: DEFAULT_MAX_TOKENS,
            max_tokens_limit: DEFAULT_MAX_TOKENS_LIMIT,
            skip_thinking: DEFAULT_SKIP_THINKING,
            max_history_tokens: DEFAULT_MAX_HISTORY_TOKENS,
            session_idle_timeout: DEFAULT_SESSION_IDLE_TIMEOUT.value,
            max_sessions: DEFAULT_MAX_SESSIONS,
            trim_policy: crate::session::TrimPolicy::Stable,
            trim_low_water: DEFAULT_TRIM_LOW_WATER,
            max_history_turns: DEFAULT_MAX_HISTORY_TURNS,
            max_history_bytes: DEFAULT_MAX_HISTORY_BYTES,
            state_dir: None,
            persist_interval: DEFAULT_PERSIST_INTERVAL.value,
            no_persist: false,
            request_timeout: DEFAULT_REQUEST_TIMEOUT.value,
            max_payload_bytes: DEFAULT_MAX_PAYLOAD_BYTES,
            max_images: DEFAULT_MAX_IMAGES,
            max_image_bytes: DEFAULT_MAX_IMAGE_BYTES,
            session_owner: RawSessionOwner::None,
        }
    }
}

/// Operations (`[ops]`): the HTTP endpoints, the drain on shutdown, the per-project settings file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawOps {
    pub http: SocketAddr,
    #[serde(with = "text_duration")]
    pub drain_timeout: Duration,
    /// The TOML file with per-project settings.
    pub config: Option<PathBuf>,
    /// Between two stats log lines (zero: none).
    #[serde(with = "text_duration")]
    pub stats_interval: Duration,
}

impl Default for RawOps {
    fn default() -> Self {
        Self {
            http: DEFAULT_HTTP,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT.value,
            config: None,
            stats_interval: DEFAULT_STATS_INTERVAL.value,
        }
    }
}

/// GPU monitoring (`[gpu]`): the launch-time memory check and the sampling into the metrics.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawGpu {
    pub skip_gpu_check: bool,
    #[serde(with = "text_duration")]
    pub gpu_sample_interval: Duration,
    pub gpu_low_free_mib: u64,
}

impl Default for RawGpu {
    fn default() -> Self {
        Self {
            skip_gpu_check: false,
            gpu_sample_interval: DEFAULT_GPU_SAMPLE_INTERVAL.value,
            gpu_low_free_mib: DEFAULT_GPU_LOW_FREE_MIB,
        }
    }
}

/// Durations as humantime text (`30s`, `5m`, `1h 30m`) in serialized settings.
mod text_duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(serde::de::Error::custom)
    }
}
