//! The engine's own settings: launch or attach, what goes on the `vllm serve` command line, which GPUs it gets,
//! the supervision timings, and where vLLM is found or installed. `config` builds (and validates) them; the
//! engine only reads them.

use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;

use url::Url;

use super::alias::Hub;
use super::locate;
use super::restart::RestartPolicy;

/// How long a connection to the engine's HTTP API may take to open.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Everything the engine actor runs with.
#[derive(Debug, Clone)]
pub struct EngineSettings {
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
    pub restart: RestartPolicy,
}

#[derive(Debug, Clone)]
pub enum EngineMode {
    /// mqtt-llm launches and supervises `vllm serve`.
    Launch(LaunchSettings),
    /// An OpenAI-compatible server somebody else runs.
    Attach { url: Url },
}

/// What goes on the engine's command line (see [`super::command::build_command`]): `vllm serve`'s, or llama.cpp's
/// launcher's when [`LaunchSettings::server`] says so. Under llama.cpp the vLLM-only fields keep their defaults
/// (`config` refuses them) and are not used.
#[derive(Debug, Clone, PartialEq)]
pub struct LaunchSettings {
    /// Which server is launched: vLLM (the fields below) or llama.cpp (its own settings, plus `model`, `port`,
    /// `max_model_len`, `engine_log` and `extra_args` from below).
    pub server: LaunchedServer,
    /// The executable: `--vllm-bin` as given, else `vllm` until `up` has located (or installed) the engine.
    pub vllm_bin: PathBuf,
    /// The resolved model id (an alias already replaced), or a local directory; under llama.cpp a `.gguf` file.
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

/// The server `up` launches and supervises.
#[derive(Debug, Clone, PartialEq)]
pub enum LaunchedServer {
    /// `vllm serve` (GPUs).
    Vllm,
    /// llama.cpp's server through the `xllamacpp` wheel, run by the launcher mqtt-llm embeds (CPU).
    LlamaCpp(Box<LlamaCppSettings>),
}

/// llama.cpp's own settings: `PYTHON LAUNCHER MODEL.gguf ... --threads N --ctx N --parallel N`.
#[derive(Debug, Clone, PartialEq)]
pub struct LlamaCppSettings {
    /// `--llamacpp-python`: a Python that can `import xllamacpp`.
    pub python: PathBuf,
    /// Where the embedded launcher (`launcher/serve_llamacpp.py`) is written before each launch.
    pub launcher: PathBuf,
    /// `--threads`: llama.cpp's CPU threads (generation and prompt processing).
    pub threads: u32,
    /// Concurrent slots (`--parallel`), from `--max-num-seqs`.
    pub parallel: u32,
    /// Context of one slot (tokens), from `--max-model-len`; llama.cpp's `--ctx` is the total, this × `parallel`.
    pub slot_context: u32,
    /// The managed virtualenv (`mqtt-llm setup --engine llamacpp`) when `--llamacpp-python` or `--model` was left
    /// to its default there: `up` installs it first when it is not (unless `--no-bootstrap`).
    pub venv: Option<PathBuf>,
    /// The built-in model's pinned sha256 when `--model` was left out: checked before each launch.
    pub model_sha256: Option<String>,
}

impl LlamaCppSettings {
    /// llama.cpp's `--ctx`: the total context, split evenly across the slots.
    pub fn total_context(&self) -> u64 {
        u64::from(self.slot_context) * u64::from(self.parallel)
    }
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
pub struct InstallSettings {
    /// `--vllm-bin`: wins over everything.
    pub vllm_bin: Option<PathBuf>,
    /// The virtualenv; `None` when neither `--venv`, `$XDG_DATA_HOME` nor `$HOME` gives one.
    pub venv: Option<PathBuf>,
    /// The Python that creates the virtualenv.
    pub python: PathBuf,
    /// `--requirements`; `None`: the pins built into the binary.
    pub requirements: Option<PathBuf>,
}

impl InstallSettings {
    /// The given virtualenv, else the default one under `$XDG_DATA_HOME` (or `$HOME`) of this process.
    pub fn new(
        venv: Option<PathBuf>,
        python: PathBuf,
        requirements: Option<PathBuf>,
        vllm_bin: Option<PathBuf>,
    ) -> Self {
        let env = |name: &str| std::env::var_os(name);
        Self {
            vllm_bin,
            venv: venv.or_else(|| locate::default_venv(env("XDG_DATA_HOME").as_deref(), env("HOME").as_deref())),
            python,
            requirements,
        }
    }
}

/// Where the embedded llama.cpp launcher is written for this process: under `$XDG_DATA_HOME` (or `$HOME`).
pub fn default_llamacpp_launcher() -> Option<PathBuf> {
    let env = |name: &str| std::env::var_os(name);
    super::llamacpp::default_launcher(env("XDG_DATA_HOME").as_deref(), env("HOME").as_deref())
}

/// The default engine log of this process: under `$XDG_STATE_HOME` (or `$HOME`).
pub fn default_engine_log() -> Option<PathBuf> {
    let env = |name: &str| std::env::var_os(name);
    super::logs::default_engine_log(env("XDG_STATE_HOME").as_deref(), env("HOME").as_deref())
}

/// The hub named by `VLLM_USE_MODELSCOPE` in this process's environment.
pub fn hub_from_env() -> Hub {
    super::alias::modelscope_from_env(std::env::var("VLLM_USE_MODELSCOPE").ok().as_deref())
}

#[cfg(test)]
impl LaunchSettings {
    /// Launch settings with every option at its default: `server` running `model` (`vllm_bin` is vLLM's program).
    pub(crate) fn for_tests(server: LaunchedServer, vllm_bin: &str, model: &str) -> Self {
        Self {
            server,
            vllm_bin: vllm_bin.into(),
            model: model.into(),
            hub: Hub::HuggingFace,
            trust_remote_code: false,
            port: None,
            gpu: GpuPlacement {
                devices: None,
                tensor_parallel_size: None,
                memory_utilization: 0.85,
            },
            max_model_len: None,
            max_num_seqs: None,
            quantization: None,
            kv_cache_dtype: None,
            prefix_caching: true,
            prompt_tokens_details: true,
            priority_scheduling: false,
            shutdown_timeout: Duration::from_secs(30),
            limit_mm_per_prompt: None,
            engine_log: None,
            extra_args: vec![],
        }
    }
}
