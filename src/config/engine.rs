//! The engine's settings from the raw ones: launch (an alias resolved, the GPUs, the `vllm serve` inputs) or
//! attach, the supervision timings and the restart policy.

use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;

use url::Url;

use super::defaults::DEFAULT_GPU_MEMORY_UTILIZATION;
use super::error::{ConfigError, Problem, invalid};
use super::raw::{RawEngine, RawEngineKind, RawInstall};
use crate::engine::alias::{self, Hub, ResolvedModel};
use crate::engine::command::DEFAULT_VISION_LIMIT_MM;
use crate::engine::settings::{DEFAULT_CONNECT_TIMEOUT, default_engine_log, default_llamacpp_launcher, hub_from_env};
use crate::engine::{
    EngineMode, EngineSettings, GpuPlacement, InstallSettings, LaunchSettings, LaunchedServer, LlamaCppSettings,
    RestartPolicy,
};
use crate::engine::{llamacpp, llamacpp_pins};

/// The engine's settings; `shutdown_timeout` is `--drain-timeout` (the engine's `--shutdown-timeout` too),
/// `priority_scheduling` when some project has a priority.
pub(super) fn engine_settings(
    raw: &RawEngine,
    shutdown_timeout: Duration,
    priority_scheduling: bool,
) -> Result<EngineSettings, ConfigError> {
    let (mode, served_model_name) = match (&raw.engine_url, &raw.model) {
        (Some(url), _) => {
            let parsed = Url::parse(url).map_err(|source| {
                invalid(
                    "--engine-url",
                    Problem::Url {
                        given: url.clone(),
                        source,
                    },
                )
            })?;
            if !matches!(parsed.scheme(), "http" | "https") {
                return Err(invalid("--engine-url", "must be an http:// or https:// URL"));
            }
            (EngineMode::Attach { url: parsed }, raw.served_model_name.clone())
        }
        (None, model) if raw.engine == RawEngineKind::LlamaCpp => {
            let model = model.as_deref().map(str::trim).filter(|m| !m.is_empty());
            let (launch, served) = llamacpp_launch(raw, model, shutdown_timeout)?;
            (EngineMode::Launch(launch), Some(served))
        }
        (None, Some(model)) if !model.trim().is_empty() => {
            if raw.threads.is_some() {
                return Err(invalid(
                    "--threads",
                    "is llama.cpp's (--engine llamacpp); vLLM has no such setting",
                ));
            }
            let resolved = alias::resolve(model, hub_from_env());
            let launch = launch_settings(raw, &resolved, shutdown_timeout, priority_scheduling)?;
            let served = raw
                .served_model_name
                .clone()
                .or_else(|| resolved.alias.clone())
                .unwrap_or_else(|| resolved.id.clone());
            (EngineMode::Launch(launch), Some(served))
        }
        _ => return Err(invalid("--model", "give a model to launch, or --engine-url to attach")),
    };
    Ok(EngineSettings {
        mode,
        served_model_name,
        start_timeout: raw.engine_start_timeout,
        grace: raw.engine_grace,
        connect_timeout: DEFAULT_CONNECT_TIMEOUT,
        probe_interval: raw.engine_probe_interval,
        stall_timeout: raw.engine_stall_timeout,
        restart: RestartPolicy {
            max_restarts: raw.max_restarts,
            window: raw.restart_window,
            ..Default::default()
        },
    })
}

/// Where vLLM is found or installed; `vllm_bin` is the engine's `--vllm-bin`.
pub(super) fn install_settings(raw: &RawInstall, vllm_bin: Option<PathBuf>) -> InstallSettings {
    InstallSettings::new(raw.venv.clone(), raw.python.clone(), raw.requirements.clone(), vllm_bin)
}

fn launch_settings(
    raw: &RawEngine,
    model: &ResolvedModel,
    shutdown_timeout: Duration,
    priority_scheduling: bool,
) -> Result<LaunchSettings, ConfigError> {
    let u = raw.gpu_memory_utilization.unwrap_or(DEFAULT_GPU_MEMORY_UTILIZATION);
    if !(u > 0.0 && u <= 1.0) {
        return Err(invalid("--gpu-memory-utilization", "must be in (0, 1]"));
    }
    let devices = raw.gpus.as_deref().map(parse_gpus).transpose()?;
    let tensor_parallel_size = optional_non_zero("--tensor-parallel-size", raw.tensor_parallel_size)?;
    if let (Some(shards), Some(devices)) = (tensor_parallel_size, &devices)
        && shards.get() as usize > devices.len()
    {
        let gpus = devices.len();
        return Err(invalid("--tensor-parallel-size", Problem::TooFewGpus { shards, gpus }));
    }
    let limit_mm_per_prompt = match &raw.limit_mm_per_prompt {
        Some(s) => Some(parse_limit_mm(s)?),
        None => alias::is_vision_model(&model.id).then(|| DEFAULT_VISION_LIMIT_MM.to_owned()),
    };
    let engine_log = match &raw.engine_log {
        _ if raw.no_engine_log => None,
        Some(p) => Some(p.clone()),
        None => default_engine_log(),
    };
    Ok(LaunchSettings {
        server: LaunchedServer::Vllm,
        vllm_bin: raw.vllm_bin.clone().unwrap_or_else(|| PathBuf::from("vllm")),
        model: model.id.clone(),
        hub: model.hub,
        trust_remote_code: model.trust_remote_code,
        port: raw.engine_port,
        gpu: GpuPlacement {
            devices,
            tensor_parallel_size,
            memory_utilization: u,
        },
        max_model_len: optional_non_zero("--max-model-len", raw.max_model_len)?.map(NonZeroU32::get),
        max_num_seqs: optional_non_zero("--max-num-seqs", raw.max_num_seqs)?.map(NonZeroU32::get),
        quantization: non_empty("--quantization", &raw.quantization)?,
        kv_cache_dtype: non_empty("--kv-cache-dtype", &raw.kv_cache_dtype)?,
        prefix_caching: raw.prefix_caching,
        prompt_tokens_details: raw.prompt_tokens_details,
        priority_scheduling,
        shutdown_timeout,
        limit_mm_per_prompt,
        engine_log,
        extra_args: raw.engine_args.clone(),
    })
}

/// The vLLM-only flags, as given: llama.cpp refuses each (`--gpu-memory-utilization` only when given explicitly).
fn vllm_only_flags(raw: &RawEngine) -> [(&'static str, bool); 7] {
    [
        ("--gpu-memory-utilization", raw.gpu_memory_utilization.is_some()),
        ("--quantization", raw.quantization.is_some()),
        ("--kv-cache-dtype", raw.kv_cache_dtype.is_some()),
        ("--tensor-parallel-size", raw.tensor_parallel_size.is_some()),
        ("--gpus", raw.gpus.is_some()),
        ("--limit-mm-per-prompt", raw.limit_mm_per_prompt.is_some()),
        ("--vllm-bin", raw.vllm_bin.is_some()),
    ]
}

/// `--engine llamacpp`: the model is a `.gguf` file that exists, the Python with `xllamacpp` is given, no vLLM-only
/// flag is; `--max-model-len` is one slot's context and `--max-num-seqs` the slots. Also the served model name:
/// `--served-model-name`, else the file's stem.
///
/// Left out, `--model` is the built-in model and `--llamacpp-python` the Python of the managed virtualenv
/// (`--llamacpp-venv`, else [`llamacpp_pins::default_venv`]); `up` installs that first when it is not.
fn llamacpp_launch(
    raw: &RawEngine,
    model: Option<&str>,
    shutdown_timeout: Duration,
) -> Result<(LaunchSettings, String), ConfigError> {
    if let Some((flag, _)) = vllm_only_flags(raw).into_iter().find(|(_, given)| *given) {
        return Err(invalid(
            flag,
            "is vLLM's; llama.cpp (--engine llamacpp) has no such setting: leave it out, or use --engine vllm",
        ));
    }
    let venv = if model.is_none() || raw.llamacpp_python.is_none() {
        Some(managed_venv(raw)?)
    } else {
        None
    };
    let (model, model_sha256) = match (model, &venv) {
        (Some(model), _) => (model.to_owned(), None),
        (None, venv) => {
            let venv = venv.clone().map_or_else(|| managed_venv(raw), Ok)?;
            let pins =
                llamacpp_pins::Pins::built_in().map_err(|e| invalid("--model", Problem::Detail(e.to_string())))?;
            let path = llamacpp_pins::venv_model(&venv, &pins);
            (path.to_string_lossy().into_owned(), Some(pins.model_sha256))
        }
    };
    let model = model.as_str();
    let path = std::path::Path::new(model);
    let is_gguf = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("gguf"));
    if !is_gguf {
        return Err(invalid(
            "--model",
            Problem::Detail(format!(
                "{model:?} is not a .gguf file: llama.cpp (--engine llamacpp) needs a path to a GGUF model file; \
                 vLLM models (Hugging Face ids, aliases, checkpoint directories) need --engine vllm on a GPU"
            )),
        ));
    }
    if model_sha256.is_none() && !path.is_file() {
        return Err(invalid(
            "--model",
            Problem::Detail(format!("no such GGUF file: {model}")),
        ));
    }
    let python = match (&raw.llamacpp_python, &venv) {
        (Some(python), _) => python.clone(),
        (None, Some(venv)) => llamacpp_pins::venv_python(venv),
        (None, None) => llamacpp_pins::venv_python(&managed_venv(raw)?),
    };
    if python.as_os_str().is_empty() {
        return Err(invalid("--llamacpp-python", Problem::Empty));
    }
    let Some(launcher) = default_llamacpp_launcher() else {
        return Err(invalid(
            "--engine",
            "llamacpp writes its launcher under $XDG_DATA_HOME or $HOME, and neither is set",
        ));
    };
    let llama = LlamaCppSettings {
        python,
        launcher,
        threads: optional_non_zero("--threads", raw.threads)?.map_or(llamacpp::DEFAULT_THREADS, NonZeroU32::get),
        parallel: optional_non_zero("--max-num-seqs", raw.max_num_seqs)?
            .map_or(llamacpp::DEFAULT_PARALLEL, NonZeroU32::get),
        slot_context: optional_non_zero("--max-model-len", raw.max_model_len)?
            .map_or(llamacpp::DEFAULT_SLOT_CONTEXT, NonZeroU32::get),
        venv,
        model_sha256,
    };
    let served = match &raw.served_model_name {
        Some(name) => name.clone(),
        None => path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| model.to_owned()),
    };
    let engine_log = match &raw.engine_log {
        _ if raw.no_engine_log => None,
        Some(p) => Some(p.clone()),
        None => default_engine_log(),
    };
    let launch = LaunchSettings {
        max_model_len: Some(llama.slot_context),
        max_num_seqs: Some(llama.parallel),
        server: LaunchedServer::LlamaCpp(Box::new(llama)),
        vllm_bin: PathBuf::from("vllm"),
        model: model.to_owned(),
        hub: Hub::HuggingFace,
        trust_remote_code: false,
        port: raw.engine_port,
        gpu: GpuPlacement {
            devices: None,
            tensor_parallel_size: None,
            memory_utilization: DEFAULT_GPU_MEMORY_UTILIZATION,
        },
        quantization: None,
        kv_cache_dtype: None,
        prefix_caching: raw.prefix_caching,
        prompt_tokens_details: raw.prompt_tokens_details,
        priority_scheduling: false,
        shutdown_timeout,
        limit_mm_per_prompt: None,
        engine_log,
        extra_args: raw.engine_args.clone(),
    };
    Ok((launch, served))
}

/// llama.cpp's managed virtualenv: `--llamacpp-venv`, else the default under `$XDG_DATA_HOME` or `$HOME`.
fn managed_venv(raw: &RawEngine) -> Result<PathBuf, ConfigError> {
    match raw.llamacpp_venv.clone().or_else(llamacpp_pins::default_venv_from_env) {
        Some(v) if !v.as_os_str().is_empty() => Ok(v),
        Some(_) => Err(invalid("--llamacpp-venv", Problem::Empty)),
        None => Err(invalid(
            "--llamacpp-venv",
            "no default for llama.cpp's virtualenv ($XDG_DATA_HOME and $HOME are unset): pass --llamacpp-venv DIR, \
             or --llamacpp-python PATH and --model FILE.gguf",
        )),
    }
}

/// `--gpus 0,1` (or GPU-/MIG- UUIDs): the `CUDA_VISIBLE_DEVICES` entries, each once.
pub fn parse_gpus(s: &str) -> Result<Vec<String>, ConfigError> {
    let mut devices: Vec<String> = Vec::new();
    for entry in s.split(',').map(str::trim) {
        let valid = (!entry.is_empty() && entry.chars().all(|c| c.is_ascii_digit()))
            || ((entry.starts_with("GPU-") || entry.starts_with("MIG-")) && entry.len() > 4);
        let entry = entry.to_owned();
        if !valid {
            return Err(invalid("--gpus", Problem::NotAGpu { entry }));
        }
        if devices.contains(&entry) {
            return Err(invalid("--gpus", Problem::GpuTwice { entry }));
        }
        devices.push(entry);
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

fn non_empty(flag: &'static str, value: &Option<String>) -> Result<Option<String>, ConfigError> {
    match value.as_deref().map(str::trim) {
        Some("") => Err(invalid(flag, Problem::Empty)),
        other => Ok(other.map(str::to_owned)),
    }
}

fn optional_non_zero(flag: &'static str, value: Option<u32>) -> Result<Option<NonZeroU32>, ConfigError> {
    value
        .map(|v| NonZeroU32::new(v).ok_or_else(|| invalid(flag, Problem::Zero)))
        .transpose()
}
