//! Configuration, parsed rather than merely validated: the CLI (and `MQTT_LLM_*` variables, and the TOML file for
//! per-project settings) become one typed [`Config`]; errors name the field that is wrong.

mod projects;

use std::net::SocketAddr;
use std::num::{NonZeroU32, NonZeroUsize};
use std::path::PathBuf;
use std::time::Duration;

use url::Url;

use crate::cli::{InstallArgs, MqttVersionArg, UpArgs};
use crate::engine::alias::{self, Hub};
use crate::engine::command::DEFAULT_VISION_LIMIT_MM;
use crate::engine::{locate, logs};
use mqtt_llm_protocol::topics::{ProjectName, parse_project_list};
use mqtt_llm_protocol::wire::WireLimits;

pub use projects::{GENERAL, ProjectCatalog};

/// A configuration error; `field` is the flag or file key at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid {field}: {message}")]
    Invalid { field: String, message: String },
    #[error("config file {}: {message}", path.display())]
    File { path: PathBuf, message: String },
}

fn invalid(field: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field: field.to_owned(),
        message: message.into(),
    }
}

/// Everything `mqtt-llm up` runs with.
#[derive(Debug, Clone)]
pub struct Config {
    pub engine: EngineConfig,
    /// Where vLLM is found or installed (launch mode).
    pub install: InstallConfig,
    pub mqtt: MqttConfig,
    pub bridge: BridgeConfig,
    pub projects: ProjectCatalog,
    /// Address of /livez, /readyz, /metrics.
    pub http_addr: SocketAddr,
    /// How long in-flight and queued requests may run after a shutdown signal.
    pub drain_timeout: Duration,
    pub gpu: GpuMonitoring,
}

/// GPU pre-flight and sampling (launch mode).
#[derive(Debug, Clone, PartialEq)]
pub struct GpuMonitoring {
    pub skip_check: bool,
    pub sample_interval: Duration,
    /// Warn when a GPU's free memory falls below this.
    pub low_free_bytes: u64,
}

#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub mode: EngineMode,
    /// The model name requests carry; `None` in attach mode means "ask the server".
    pub served_model_name: Option<String>,
    pub start_timeout: Duration,
    /// SIGTERM → SIGKILL grace for the engine's process group.
    pub grace: Duration,
    pub connect_timeout: Duration,
    /// How often a ready engine's `/health` is probed.
    pub probe_interval: Duration,
    /// Requests running with no token for this long (and no engine progress) mean a hung engine.
    pub stall_timeout: Duration,
    /// When to restart a failed engine and when to give up.
    pub restart: crate::engine::RestartPolicy,
}

#[derive(Debug, Clone)]
pub enum EngineMode {
    /// mqtt-llm launches and supervises `vllm serve`.
    Launch(LaunchConfig),
    /// An OpenAI-compatible server somebody else runs.
    Attach { url: Url },
}

/// What goes on the `vllm serve` command line (see [`crate::engine::command::build_command`]).
#[derive(Debug, Clone, PartialEq)]
pub struct LaunchConfig {
    /// The executable: `--vllm-bin` as given, else `vllm` until `up` has located (or installed) the engine.
    pub vllm_bin: PathBuf,
    /// The resolved model id (an alias already replaced), or a local directory.
    pub model: String,
    /// Hub the engine downloads from; ModelScope sets `VLLM_USE_MODELSCOPE`.
    pub hub: Hub,
    /// A known model whose checkpoint needs its own code (`--trust-remote-code`).
    pub trust_remote_code: bool,
    /// `None`: pick a free port on 127.0.0.1 at launch.
    pub port: Option<u16>,
    pub gpu: GpuPlacement,
    pub max_model_len: Option<u32>,
    pub max_num_seqs: Option<u32>,
    pub quantization: Option<String>,
    pub kv_cache_dtype: Option<String>,
    pub prefix_caching: bool,
    pub prompt_tokens_details: bool,
    /// Some project has a priority: vLLM must schedule by it (`--scheduling-policy priority`).
    pub priority_scheduling: bool,
    /// vLLM's own drain on SIGTERM (`--shutdown-timeout`), equal to our `--drain-timeout`.
    pub shutdown_timeout: Duration,
    /// `--limit-mm-per-prompt` JSON: given, or the default for a vision model.
    pub limit_mm_per_prompt: Option<String>,
    /// Where the engine's output is kept (rotated); `None`: nowhere but our log.
    pub engine_log: Option<PathBuf>,
    /// `--engine-arg`s then the arguments after `--`, passed through verbatim after our own flags.
    pub extra_args: Vec<String>,
}

/// Which GPUs the engine uses and how much of them.
#[derive(Debug, Clone, PartialEq)]
pub struct GpuPlacement {
    /// `--gpus`: the `CUDA_VISIBLE_DEVICES` entries; `None` leaves the variable alone.
    pub devices: Option<Vec<String>>,
    /// `--tensor-parallel-size` as given.
    pub tensor_parallel_size: Option<NonZeroU32>,
    pub memory_utilization: f32,
}

impl GpuPlacement {
    /// The tensor-parallel size to pass: the explicit one, else one shard per selected GPU, else vLLM's default.
    pub fn tensor_parallel_size(&self) -> Option<u32> {
        match (self.tensor_parallel_size, &self.devices) {
            (Some(n), _) => Some(n.get()),
            (None, Some(devices)) => u32::try_from(devices.len()).ok(),
            (None, None) => None,
        }
    }
}

/// Where vLLM is looked for and, on first run, installed.
#[derive(Debug, Clone, PartialEq)]
pub struct InstallConfig {
    /// `--vllm-bin`: wins over everything.
    pub vllm_bin: Option<PathBuf>,
    /// The virtualenv; `None` when neither `--venv`, `$XDG_DATA_HOME` nor `$HOME` gives one.
    pub venv: Option<PathBuf>,
    /// The Python that creates the virtualenv.
    pub python: PathBuf,
    /// `--requirements`; `None`: the pins built into the binary.
    pub requirements: Option<PathBuf>,
}

impl InstallConfig {
    pub fn from_args(args: &InstallArgs, vllm_bin: Option<PathBuf>) -> Self {
        Self {
            vllm_bin,
            venv: args.venv.clone().or_else(|| {
                locate::default_venv(
                    std::env::var_os("XDG_DATA_HOME").as_deref(),
                    std::env::var_os("HOME").as_deref(),
                )
            }),
            python: args.python.clone(),
            requirements: args.requirements.clone(),
        }
    }
}

/// `--gpus 0,1` (or GPU-/MIG- UUIDs): the `CUDA_VISIBLE_DEVICES` entries, each once.
pub fn parse_gpus(s: &str) -> Result<Vec<String>, ConfigError> {
    let mut devices: Vec<String> = Vec::new();
    for entry in s.split(',').map(str::trim) {
        let valid = (!entry.is_empty() && entry.chars().all(|c| c.is_ascii_digit()))
            || ((entry.starts_with("GPU-") || entry.starts_with("MIG-")) && entry.len() > 4);
        if !valid {
            return Err(invalid(
                "--gpus",
                format!("{entry:?} is not a GPU number or GPU-/MIG- UUID (e.g. --gpus 0,1)"),
            ));
        }
        if devices.iter().any(|d| d == entry) {
            return Err(invalid("--gpus", format!("GPU {entry} is listed twice")));
        }
        devices.push(entry.to_owned());
    }
    Ok(devices)
}

/// `--limit-mm-per-prompt`: a JSON object such as `{"image":4,"video":0}`, passed on as given.
fn parse_limit_mm(s: &str) -> Result<String, ConfigError> {
    match serde_json::from_str::<serde_json::Value>(s) {
        Ok(serde_json::Value::Object(_)) => Ok(s.trim().to_owned()),
        _ => Err(invalid(
            "--limit-mm-per-prompt",
            r#"must be a JSON object, e.g. '{"image":4,"video":0}'"#,
        )),
    }
}

fn non_empty(field: &str, value: &Option<String>) -> Result<Option<String>, ConfigError> {
    match value.as_deref().map(str::trim) {
        Some("") => Err(invalid(field, "must not be empty")),
        other => Ok(other.map(str::to_owned)),
    }
}

fn launch_config(
    args: &UpArgs,
    model: &alias::ResolvedModel,
    priority_scheduling: bool,
) -> Result<LaunchConfig, ConfigError> {
    let u = args.gpu_memory_utilization;
    if !(u > 0.0 && u <= 1.0) {
        return Err(invalid("--gpu-memory-utilization", "must be in (0, 1]"));
    }
    let devices = args.gpus.as_deref().map(parse_gpus).transpose()?;
    let tensor_parallel_size = args.tensor_parallel_size.and_then(NonZeroU32::new);
    if let (Some(tp), Some(devices)) = (tensor_parallel_size, &devices)
        && tp.get() as usize > devices.len()
    {
        return Err(invalid(
            "--tensor-parallel-size",
            format!(
                "{tp} shards need at least {tp} GPUs, but --gpus lists {}",
                devices.len()
            ),
        ));
    }
    let limit_mm_per_prompt = match &args.limit_mm_per_prompt {
        Some(s) => Some(parse_limit_mm(s)?),
        None => alias::is_vision_model(&model.id).then(|| DEFAULT_VISION_LIMIT_MM.to_owned()),
    };
    let engine_log = match &args.engine_log {
        _ if args.no_engine_log => None,
        Some(p) => Some(p.clone()),
        None => logs::default_engine_log(
            std::env::var_os("XDG_STATE_HOME").as_deref(),
            std::env::var_os("HOME").as_deref(),
        ),
    };
    Ok(LaunchConfig {
        vllm_bin: args.vllm_bin.clone().unwrap_or_else(|| PathBuf::from("vllm")),
        model: model.id.clone(),
        hub: model.hub,
        trust_remote_code: model.trust_remote_code,
        port: args.engine_port,
        gpu: GpuPlacement {
            devices,
            tensor_parallel_size,
            memory_utilization: u,
        },
        max_model_len: args.max_model_len,
        max_num_seqs: args.max_num_seqs,
        quantization: non_empty("--quantization", &args.quantization)?,
        kv_cache_dtype: non_empty("--kv-cache-dtype", &args.kv_cache_dtype)?,
        prefix_caching: !args.disable_prefix_caching,
        prompt_tokens_details: !args.disable_prompt_tokens_details,
        priority_scheduling,
        shutdown_timeout: args.drain_timeout,
        limit_mm_per_prompt,
        engine_log,
        extra_args: args.engine_args.iter().chain(&args.vllm_args).cloned().collect(),
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MqttVersion {
    V311,
    V5,
}

#[derive(Debug, Clone)]
pub struct MqttConfig {
    pub host: String,
    pub port: u16,
    pub tls: bool,
    /// CA certificates (PEM) for TLS; `None`: the system's.
    pub ca_file: Option<PathBuf>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub version: MqttVersion,
    pub client_id: String,
    pub keep_alive: Duration,
    /// Largest packet we send or accept.
    pub max_packet_size: u32,
    pub projects: Vec<ProjectName>,
    /// Reconnect back-off bounds.
    pub reconnect_min: Duration,
    pub reconnect_max: Duration,
}

/// Sampling used when a request does not say.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplingDefaults {
    pub temperature: f32,
    pub top_p: f32,
    pub max_tokens: u32,
}

#[derive(Debug, Clone)]
pub struct BridgeConfig {
    pub max_inflight: NonZeroUsize,
    pub session_queue: NonZeroUsize,
    pub max_queued: NonZeroUsize,
    /// Zero: one frame per engine chunk.
    pub stream_interval: Duration,
    pub defaults: SamplingDefaults,
    pub skip_thinking: bool,
    pub max_history_tokens: u32,
    pub session_idle_timeout: Duration,
    pub max_sessions: NonZeroUsize,
    pub request_timeout: Duration,
    /// How long an accepted request waits for a (re)starting engine before the overload reply.
    pub engine_wait: Duration,
    pub limits: WireLimits,
}

pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
pub const DEFAULT_KEEP_ALIVE: Duration = Duration::from_secs(30);
pub const DEFAULT_RECONNECT_MIN: Duration = Duration::from_millis(200);
pub const DEFAULT_RECONNECT_MAX: Duration = Duration::from_secs(30);

fn non_zero(field: &str, v: usize) -> Result<NonZeroUsize, ConfigError> {
    NonZeroUsize::new(v).ok_or_else(|| invalid(field, "must be at least 1"))
}

impl Config {
    /// Build the typed configuration of `up` from its arguments (and the TOML file they name).
    pub fn from_up_args(args: &UpArgs) -> Result<Self, ConfigError> {
        let projects_catalog = match &args.config {
            Some(path) => ProjectCatalog::load(path)?,
            None => ProjectCatalog::builtin(),
        };
        let (mode, served_model_name) = match (&args.engine_url, &args.model) {
            (Some(url), _) => {
                let url = Url::parse(url).map_err(|e| invalid("--engine-url", format!("{url:?}: {e}")))?;
                if !matches!(url.scheme(), "http" | "https") {
                    return Err(invalid("--engine-url", "must be an http:// or https:// URL"));
                }
                (EngineMode::Attach { url }, args.served_model_name.clone())
            }
            (None, Some(model)) if !model.trim().is_empty() => {
                let hub = alias::modelscope_from_env(std::env::var("VLLM_USE_MODELSCOPE").ok().as_deref());
                let resolved = alias::resolve(model, hub);
                let launch = launch_config(args, &resolved, projects_catalog.uses_priorities())?;
                let served = args
                    .served_model_name
                    .clone()
                    .or_else(|| resolved.alias.clone())
                    .unwrap_or_else(|| resolved.id.clone());
                (EngineMode::Launch(launch), Some(served))
            }
            _ => return Err(invalid("--model", "give a model to launch, or --engine-url to attach")),
        };
        let mqtt_llm_protocol::broker::BrokerUrl { host, port, tls } =
            mqtt_llm_protocol::broker::BrokerUrl::parse(&args.broker)
                .map_err(|e| invalid("--broker", e.to_string()))?;
        if args.mqtt_ca.is_some() && !tls {
            return Err(invalid("--mqtt-ca", "only applies to an mqtts:// broker"));
        }
        let projects = parse_project_list(&args.projects).map_err(|e| invalid("--projects", e.to_string()))?;
        if !(0.0..=2.0).contains(&args.temperature) {
            return Err(invalid("--temperature", "must be between 0 and 2"));
        }
        if !(args.top_p > 0.0 && args.top_p <= 1.0) {
            return Err(invalid("--top-p", "must be greater than 0 and at most 1"));
        }
        if args.max_tokens == 0 || args.max_tokens > args.max_tokens_limit {
            return Err(invalid("--max-tokens", "must be between 1 and --max-tokens-limit"));
        }
        if args.max_packet_size < 1024 {
            return Err(invalid("--max-packet-size", "must be at least 1024 bytes"));
        }
        if args.max_payload_bytes as u64 > u64::from(args.max_packet_size) {
            return Err(invalid("--max-payload-bytes", "must not exceed --max-packet-size"));
        }
        let client_id = args
            .mqtt_client_id
            .clone()
            .unwrap_or_else(|| format!("mqtt-llm-{:08x}", rand::random::<u32>()));
        Ok(Self {
            install: InstallConfig::from_args(&args.install, args.vllm_bin.clone()),
            engine: EngineConfig {
                mode,
                served_model_name,
                start_timeout: args.engine_start_timeout,
                grace: args.engine_grace,
                connect_timeout: DEFAULT_CONNECT_TIMEOUT,
                probe_interval: args.engine_probe_interval,
                stall_timeout: args.engine_stall_timeout,
                restart: crate::engine::RestartPolicy {
                    max_restarts: args.max_restarts,
                    window: args.restart_window,
                    ..Default::default()
                },
            },
            mqtt: MqttConfig {
                host,
                port,
                tls,
                ca_file: args.mqtt_ca.clone(),
                username: args.mqtt_username.clone(),
                password: args.mqtt_password.clone(),
                version: match args.mqtt_version {
                    MqttVersionArg::V3 => MqttVersion::V311,
                    MqttVersionArg::V5 => MqttVersion::V5,
                },
                client_id,
                keep_alive: DEFAULT_KEEP_ALIVE,
                max_packet_size: args.max_packet_size,
                projects,
                reconnect_min: DEFAULT_RECONNECT_MIN,
                reconnect_max: DEFAULT_RECONNECT_MAX,
            },
            bridge: BridgeConfig {
                max_inflight: non_zero("--max-inflight", args.max_inflight)?,
                session_queue: non_zero("--session-queue", args.session_queue)?,
                max_queued: non_zero("--max-queued", args.max_queued)?,
                stream_interval: Duration::from_millis(args.stream_interval_ms),
                defaults: SamplingDefaults {
                    temperature: args.temperature,
                    top_p: args.top_p,
                    max_tokens: args.max_tokens,
                },
                skip_thinking: args.skip_thinking,
                max_history_tokens: args.max_history_tokens,
                session_idle_timeout: args.session_idle_timeout,
                max_sessions: non_zero("--max-sessions", args.max_sessions)?,
                request_timeout: args.request_timeout,
                engine_wait: args.engine_wait,
                limits: WireLimits {
                    max_payload_bytes: args.max_payload_bytes,
                    max_tokens_limit: args.max_tokens_limit,
                },
            },
            projects: projects_catalog,
            http_addr: args.http,
            drain_timeout: args.drain_timeout,
            gpu: GpuMonitoring {
                skip_check: args.skip_gpu_check,
                sample_interval: args.gpu_sample_interval,
                low_free_bytes: args.gpu_low_free_mib.saturating_mul(1024 * 1024),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command};

    fn up(args: &[&str]) -> Result<Config, ConfigError> {
        let mut argv = vec!["mqtt-llm", "up"];
        argv.extend_from_slice(args);
        let cli = Cli::try_parse_from(argv).unwrap();
        let Command::Up(a) = cli.command else { panic!("not up") };
        Config::from_up_args(&a)
    }

    fn launch(c: &Config) -> &LaunchConfig {
        match &c.engine.mode {
            EngineMode::Launch(l) => l,
            EngineMode::Attach { .. } => panic!("attach mode"),
        }
    }

    #[test]
    fn defaults() {
        let c = up(&["--model", "m"]).unwrap();
        assert_eq!(c.mqtt.host, "127.0.0.1");
        assert_eq!(c.mqtt.port, 1883);
        assert_eq!(c.mqtt.version, MqttVersion::V5);
        assert_eq!(c.mqtt.max_packet_size, 1024 * 1024);
        assert_eq!(c.mqtt.projects.len(), 1);
        assert_eq!(c.bridge.max_inflight.get(), 64);
        assert_eq!(c.bridge.session_queue.get(), 8);
        assert_eq!(
            c.bridge.defaults,
            SamplingDefaults {
                temperature: 0.6,
                top_p: 0.9,
                max_tokens: 512
            }
        );
        assert!(c.bridge.skip_thinking);
        assert_eq!(c.bridge.max_history_tokens, 3000);
        assert_eq!(c.engine.start_timeout, Duration::from_secs(1200));
        assert_eq!(c.engine.grace, Duration::from_secs(10));
        assert_eq!(c.drain_timeout, Duration::from_secs(30));
        assert_eq!(c.engine.served_model_name.as_deref(), Some("m"));
        let l = launch(&c);
        assert_eq!(l.vllm_bin, std::path::Path::new("vllm"));
        assert_eq!(l.gpu.memory_utilization, 0.85);
        assert_eq!(l.gpu.tensor_parallel_size(), None);
        assert!(l.prefix_caching && l.prompt_tokens_details && !l.priority_scheduling);
        assert_eq!(l.shutdown_timeout, Duration::from_secs(30));
        assert_eq!(l.limit_mm_per_prompt, None);
        assert_eq!(c.install.vllm_bin, None);
        assert_eq!(c.install.python, std::path::Path::new("python3"));
    }

    #[test]
    fn aliases_resolve_and_name_the_served_model() {
        let c = up(&["--model", "Qwen3-VL-4B"]).unwrap();
        let l = launch(&c);
        assert_eq!(l.model, "Qwen/Qwen3-VL-4B-Instruct-FP8");
        assert_eq!(l.quantization, None, "an FP8 checkpoint implies no --quantization");
        assert_eq!(c.engine.served_model_name.as_deref(), Some("qwen3-vl-4b"));
        assert_eq!(l.limit_mm_per_prompt.as_deref(), Some(r#"{"image":4,"video":0}"#));
        let c = up(&["--model", "qwen3-vl-4b", "--served-model-name", "vl"]).unwrap();
        assert_eq!(c.engine.served_model_name.as_deref(), Some("vl"));
        let c = up(&["--model", "/models/qwen3-tiny"]).unwrap();
        assert_eq!(launch(&c).model, "/models/qwen3-tiny");
        assert_eq!(c.engine.served_model_name.as_deref(), Some("/models/qwen3-tiny"));
    }

    #[test]
    fn engine_flags_reach_the_launch_config() {
        let c = up(&[
            "--model",
            "m",
            "--gpus",
            "0, 1",
            "--gpu-memory-utilization",
            "0.5",
            "--quantization",
            "fp8",
            "--kv-cache-dtype",
            "fp8_e4m3",
            "--max-model-len",
            "8192",
            "--max-num-seqs",
            "64",
            "--disable-prefix-caching",
            "--disable-prompt-tokens-details",
            "--limit-mm-per-prompt",
            r#"{"image":1}"#,
            "--no-engine-log",
            "--drain-timeout",
            "5s",
            "--engine-arg=--enforce-eager",
            "--",
            "--dtype",
            "half",
        ])
        .unwrap();
        let l = launch(&c);
        assert_eq!(l.gpu.devices, Some(vec!["0".to_owned(), "1".to_owned()]));
        assert_eq!(l.gpu.tensor_parallel_size(), Some(2));
        assert_eq!(l.gpu.memory_utilization, 0.5);
        assert_eq!(l.quantization.as_deref(), Some("fp8"));
        assert_eq!(l.kv_cache_dtype.as_deref(), Some("fp8_e4m3"));
        assert_eq!((l.max_model_len, l.max_num_seqs), (Some(8192), Some(64)));
        assert!(!l.prefix_caching && !l.prompt_tokens_details);
        assert_eq!(l.limit_mm_per_prompt.as_deref(), Some(r#"{"image":1}"#));
        assert_eq!(l.engine_log, None);
        assert_eq!(l.shutdown_timeout, Duration::from_secs(5));
        assert_eq!(l.extra_args, ["--enforce-eager", "--dtype", "half"]);
        let c = up(&["--model", "m", "--gpus", "2,3", "--tensor-parallel-size", "1"]).unwrap();
        assert_eq!(launch(&c).gpu.tensor_parallel_size(), Some(1));
        let c = up(&["--model", "m", "--engine-log", "/tmp/e.log"]).unwrap();
        assert_eq!(
            launch(&c).engine_log.as_deref(),
            Some(std::path::Path::new("/tmp/e.log"))
        );
    }

    #[test]
    fn a_project_priority_turns_on_priority_scheduling() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.toml");
        std::fs::write(&path, "[projects.maze]\npriority = -1\n").unwrap();
        let c = up(&["--model", "m", "--config", path.to_str().unwrap()]).unwrap();
        assert!(launch(&c).priority_scheduling);
        assert_eq!(c.projects.priority("maze"), Some(-1));
    }

    #[test]
    fn gpu_lists() {
        assert_eq!(parse_gpus("0").unwrap(), ["0"]);
        assert_eq!(parse_gpus("GPU-8a1b,MIG-x").unwrap(), ["GPU-8a1b", "MIG-x"]);
        for bad in ["", "0,", "a", "0,0", "-1", "GPU-"] {
            assert!(parse_gpus(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn attach_mode_and_broker_forms() {
        let c = up(&[
            "--engine-url",
            "http://127.0.0.1:8080",
            "--broker",
            "mqtts://b.example:9999",
        ])
        .unwrap();
        assert!(matches!(c.engine.mode, EngineMode::Attach { .. }));
        assert_eq!(c.engine.served_model_name, None);
        assert_eq!(
            (c.mqtt.host.as_str(), c.mqtt.port, c.mqtt.tls),
            ("b.example", 9999, true)
        );
    }

    #[test]
    fn errors_name_the_flag() {
        for (args, flag) in [
            (vec!["--model", "m", "--temperature", "3"], "--temperature"),
            (vec!["--model", "m", "--top-p", "0"], "--top-p"),
            (vec!["--model", "m", "--max-inflight", "0"], "--max-inflight"),
            (vec!["--model", "m", "--projects", " , "], "--projects"),
            (vec!["--model", "m", "--broker", "ftp://x"], "--broker"),
            (vec!["--engine-url", "nope"], "--engine-url"),
            (
                vec!["--model", "m", "--gpu-memory-utilization", "1.5"],
                "--gpu-memory-utilization",
            ),
            (vec!["--model", "m", "--gpus", "0,x"], "--gpus"),
            (
                vec!["--model", "m", "--gpus", "0", "--tensor-parallel-size", "2"],
                "--tensor-parallel-size",
            ),
            (
                vec!["--model", "m", "--limit-mm-per-prompt", "image=4"],
                "--limit-mm-per-prompt",
            ),
            (vec!["--model", "m", "--quantization", " "], "--quantization"),
        ] {
            let err = up(&args).unwrap_err().to_string();
            assert!(err.contains(flag), "{args:?}: {err}");
        }
    }

    #[test]
    fn temperature_zero_is_a_valid_default() {
        assert_eq!(
            up(&["--model", "m", "--temperature", "0"])
                .unwrap()
                .bridge
                .defaults
                .temperature,
            0.0
        );
    }
}
