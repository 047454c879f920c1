//! The engine's command line, built by a pure function from the configuration: `vllm serve ...`, or llama.cpp's
//! launcher (see [`super::llamacpp`]).
//!
//! Every flag mqtt-llm passes is spelled the way `vllm serve --help` of the pinned vLLM spells it, so that
//! `mqtt-llm up --dry-run` shows a command an operator can paste into a shell and run (after putting back any
//! secret it shows as `***`, see [`redact`]).
//!
//! The engine's environment is mqtt-llm's, less every `MQTT_LLM_*` variable ([`passes_to_child`]), plus the
//! command's own.

pub mod redact;

use std::ffi::{OsStr, OsString};
use std::path::PathBuf;

use super::alias::Hub;
use super::settings::{LaunchSettings, LaunchedServer};

/// A program, its arguments and extra environment: everything needed to spawn the engine.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineCommand {
    pub program: PathBuf,
    pub args: Vec<String>,
    /// Added to (or overriding) mqtt-llm's own environment.
    pub env: Vec<(OsString, OsString)>,
    /// Where the engine's output is also kept (rotated); `None`: only in mqtt-llm's log.
    pub log_file: Option<PathBuf>,
}

impl EngineCommand {
    /// The program and its arguments as one shell line (quoted where needed), for logs and `--dry-run`; the
    /// values of secret flags (`--api-key KEY`) show as `***`.
    pub fn display(&self) -> String {
        std::iter::once(self.program.display().to_string())
            .chain(self.shown_args())
            .map(|word| shell_quote(&word))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// `KEY=VALUE ... program args`: the whole command as a shell would run it, secrets shown as `***`.
    pub fn display_with_env(&self) -> String {
        self.shown_env()
            .map(|(k, v)| shell_quote(&format!("{k}={v}")))
            .chain(std::iter::once(self.display()))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The arguments as shown: the values of secret flags as `***`.
    pub fn shown_args(&self) -> Vec<String> {
        redact::redact_args(&self.args).0
    }

    /// The command's own environment as shown: the values of secret-looking variables as `***`.
    pub fn shown_env(&self) -> impl Iterator<Item = (String, String)> + '_ {
        self.env.iter().map(|(k, v)| {
            let (k, v) = (k.to_string_lossy(), v.to_string_lossy());
            let shown = redact::env_value_shown(&k, &v).to_owned();
            (k.into_owned(), shown)
        })
    }

    /// The secret values the command carries (of secret flags and secret-looking variables), which the engine's
    /// output must not show either.
    pub fn secrets(&self) -> Vec<String> {
        let mut secrets = redact::redact_args(&self.args).1;
        secrets.extend(
            self.env
                .iter()
                .filter(|(k, _)| redact::is_secret_name(&k.to_string_lossy()))
                .map(|(_, v)| v.to_string_lossy().into_owned()),
        );
        secrets
    }
}

/// The prefix of mqtt-llm's own environment variables. None of them reaches the guard or the engine: some hold
/// secrets (`MQTT_LLM_MQTT_PASSWORD`), and neither child reads any (the guard takes everything as arguments).
pub const OWN_ENV_PREFIX: &str = "MQTT_LLM_";

/// Whether a variable of mqtt-llm's environment is passed on to the guard and the engine: every one but
/// mqtt-llm's own (`MQTT_LLM_*`). `HF_TOKEN`, `CUDA_VISIBLE_DEVICES`, `VLLM_*` and the rest pass.
pub fn passes_to_child(name: &OsStr) -> bool {
    !name.as_encoded_bytes().starts_with(OWN_ENV_PREFIX.as_bytes())
}

/// The names among `parent`'s variables that are removed from a child's environment.
pub fn withheld_from_child(parent: impl IntoIterator<Item = (OsString, OsString)>) -> Vec<OsString> {
    let mut names: Vec<OsString> = parent
        .into_iter()
        .map(|(name, _)| name)
        .filter(|name| !passes_to_child(name))
        .collect();
    names.sort();
    names
}

/// Prefixes of the inherited variables `--dry-run` lists: those vLLM, the Hugging Face hub, PyTorch, CUDA and
/// NCCL read, which decide what the engine loads and where.
const ENGINE_ENV_PREFIXES: [&str; 8] = [
    "VLLM_",
    "HF_",
    "HUGGING_FACE_",
    "TRANSFORMERS_",
    "CUDA_",
    "NCCL_",
    "TORCH",
    "PYTORCH_",
];

/// The variables of `parent` that the engine inherits and `--dry-run` lists (see [`ENGINE_ENV_PREFIXES`], plus
/// any secret-looking one), sorted, secret values shown as `***`; those the command sets itself are left out.
pub fn inherited_env_shown(
    command: &EngineCommand,
    parent: impl IntoIterator<Item = (OsString, OsString)>,
) -> Vec<(String, String)> {
    let mut shown: Vec<(String, String)> = parent
        .into_iter()
        .filter(|(name, _)| passes_to_child(name) && !command.env.iter().any(|(own, _)| own == name))
        .map(|(name, value)| {
            (
                name.to_string_lossy().into_owned(),
                value.to_string_lossy().into_owned(),
            )
        })
        .filter(|(name, _)| ENGINE_ENV_PREFIXES.iter().any(|p| name.starts_with(p)) || redact::is_secret_name(name))
        .map(|(name, value)| {
            let value = redact::env_value_shown(&name, &value).to_owned();
            (name, value)
        })
        .collect();
    shown.sort();
    shown
}

/// Quote a word for a POSIX shell when it holds anything but safe characters.
pub fn shell_quote(word: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "-_./:=,+@%".contains(c);
    if !word.is_empty() && word.chars().all(safe) {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// The `--limit-mm-per-prompt` a vision model gets unless told otherwise: a few images, no video (vLLM's default
/// of 999 per modality reserves encoder memory for inputs no client sends).
pub const DEFAULT_VISION_LIMIT_MM: &str = r#"{"image":4,"video":0}"#;

/// The command that launches the engine `cfg` names: [`build_vllm_command`], or llama.cpp's
/// ([`super::llamacpp::build_command`]).
pub fn build_command(cfg: &LaunchSettings, port: u16, served_model_name: &str) -> EngineCommand {
    match &cfg.server {
        LaunchedServer::Vllm => build_vllm_command(cfg, port, served_model_name),
        LaunchedServer::LlamaCpp(llama) => super::llamacpp::build_command(cfg, llama, port, served_model_name),
    }
}

/// `vllm serve MODEL --host 127.0.0.1 --port PORT --served-model-name NAME --gpu-memory-utilization U
/// [--tensor-parallel-size N] [--max-model-len N] [--max-num-seqs N] [--quantization Q] [--kv-cache-dtype D]
/// --enable-prefix-caching|--no-enable-prefix-caching [--enable-prompt-tokens-details]
/// [--scheduling-policy priority] --shutdown-timeout S [--limit-mm-per-prompt JSON] [--trust-remote-code]
/// [pass-through args]`, and the environment (`CUDA_VISIBLE_DEVICES` for `--gpus`).
///
/// The pass-through arguments come last: vLLM's argparse lets a later flag override an earlier one, so an
/// operator's `--engine-arg` or `-- ARGS` always wins.
pub fn build_vllm_command(cfg: &LaunchSettings, port: u16, served_model_name: &str) -> EngineCommand {
    let mut args: Vec<String> = vec![
        "serve".into(),
        cfg.model.clone(),
        "--host".into(),
        "127.0.0.1".into(),
        "--port".into(),
        port.to_string(),
        "--served-model-name".into(),
        served_model_name.to_owned(),
        // Always ours, never vLLM's version-dependent default (0.9, 0.92 in 0.33).
        "--gpu-memory-utilization".into(),
        cfg.gpu.memory_utilization.to_string(),
    ];
    let mut flag = |name: &str, value: Option<String>| {
        if let Some(value) = value {
            args.extend([name.to_owned(), value]);
        }
    };
    flag(
        "--tensor-parallel-size",
        cfg.gpu.tensor_parallel_size().map(|n| n.to_string()),
    );
    flag("--max-model-len", cfg.max_model_len.map(|n| n.to_string()));
    flag("--max-num-seqs", cfg.max_num_seqs.map(|n| n.to_string()));
    flag("--quantization", cfg.quantization.clone());
    flag("--kv-cache-dtype", cfg.kv_cache_dtype.clone());
    // Explicit either way, so a model family whose default differs still reuses the conversation prefix.
    args.push(
        if cfg.prefix_caching {
            "--enable-prefix-caching"
        } else {
            "--no-enable-prefix-caching"
        }
        .into(),
    );
    if cfg.prompt_tokens_details {
        // So usage reports cached tokens (per-request prefix-cache hits).
        args.push("--enable-prompt-tokens-details".into());
    }
    if cfg.priority_scheduling {
        args.extend(["--scheduling-policy".into(), "priority".into()]);
    }
    // vLLM drains in-flight requests on SIGTERM for this long (0 aborts them); never shorter than our drain.
    let drain = cfg.shutdown_timeout;
    let drain_secs = drain.as_secs() + u64::from(drain.subsec_nanos() > 0);
    args.extend(["--shutdown-timeout".into(), drain_secs.to_string()]);
    if let Some(limit) = &cfg.limit_mm_per_prompt {
        args.extend(["--limit-mm-per-prompt".into(), limit.clone()]);
    }
    if cfg.trust_remote_code {
        args.push("--trust-remote-code".into());
    }
    args.extend(cfg.extra_args.iter().cloned());

    let mut env: Vec<(OsString, OsString)> = vec![
        // vLLM phones home with usage statistics unless told not to.
        ("VLLM_NO_USAGE_STATS".into(), "1".into()),
        ("DO_NOT_TRACK".into(), "1".into()),
        // One plain banner line instead of the ASCII logo in our logs.
        ("VLLM_DISABLE_LOG_LOGO".into(), "1".into()),
        ("PYTHONUNBUFFERED".into(), "1".into()),
    ];
    if let Some(devices) = &cfg.gpu.devices {
        // CUDA numbers GPUs fastest-first unless told otherwise; NVML (our pre-flight, `mqtt-llm gpus`) and
        // nvidia-smi number them by PCI bus. The same numbers everywhere, so --gpus means what the user saw.
        env.push(("CUDA_DEVICE_ORDER".into(), "PCI_BUS_ID".into()));
        env.push(("CUDA_VISIBLE_DEVICES".into(), devices.join(",").into()));
    }
    if cfg.hub == Hub::ModelScope {
        env.push(("VLLM_USE_MODELSCOPE".into(), "True".into()));
    }
    EngineCommand {
        program: cfg.vllm_bin.clone(),
        args,
        env,
        log_file: cfg.engine_log.clone(),
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;
    use std::time::Duration;

    use super::*;

    fn cfg() -> LaunchSettings {
        LaunchSettings::for_tests(LaunchedServer::Vllm, "/opt/vllm/bin/vllm", "Qwen/Qwen3-14B")
    }

    const BASE: &str = "/opt/vllm/bin/vllm serve Qwen/Qwen3-14B --host 127.0.0.1 --port 8000 --served-model-name m";

    /// Each case: what changes in the configuration → the flags between the base and the tail.
    #[test]
    fn golden_argv() {
        type Edit = fn(&mut LaunchSettings);
        let cases: &[(&str, Edit, &str)] = &[
            (
                "defaults",
                |_| {},
                " --gpu-memory-utilization 0.85 --enable-prefix-caching --enable-prompt-tokens-details --shutdown-timeout 30",
            ),
            (
                "--gpu-memory-utilization",
                |c| c.gpu.memory_utilization = 0.5,
                " --gpu-memory-utilization 0.5 --enable-prefix-caching --enable-prompt-tokens-details --shutdown-timeout 30",
            ),
            (
                "--gpus 0,1",
                |c| c.gpu.devices = Some(vec!["0".into(), "1".into()]),
                " --gpu-memory-utilization 0.85 --tensor-parallel-size 2 --enable-prefix-caching --enable-prompt-tokens-details --shutdown-timeout 30",
            ),
            (
                "--gpus 3 --tensor-parallel-size 1",
                |c| {
                    c.gpu.devices = Some(vec!["3".into()]);
                    c.gpu.tensor_parallel_size = NonZeroU32::new(1);
                },
                " --gpu-memory-utilization 0.85 --tensor-parallel-size 1 --enable-prefix-caching --enable-prompt-tokens-details --shutdown-timeout 30",
            ),
            (
                "--tensor-parallel-size 4 without --gpus",
                |c| c.gpu.tensor_parallel_size = NonZeroU32::new(4),
                " --gpu-memory-utilization 0.85 --tensor-parallel-size 4 --enable-prefix-caching --enable-prompt-tokens-details --shutdown-timeout 30",
            ),
            (
                "--max-model-len --max-num-seqs",
                |c| {
                    c.max_model_len = Some(4096);
                    c.max_num_seqs = Some(32);
                },
                " --gpu-memory-utilization 0.85 --max-model-len 4096 --max-num-seqs 32 --enable-prefix-caching --enable-prompt-tokens-details \
                 --shutdown-timeout 30",
            ),
            (
                "--quantization fp8 --kv-cache-dtype fp8",
                |c| {
                    c.quantization = Some("fp8".into());
                    c.kv_cache_dtype = Some("fp8".into());
                },
                " --gpu-memory-utilization 0.85 --quantization fp8 --kv-cache-dtype fp8 --enable-prefix-caching --enable-prompt-tokens-details \
                 --shutdown-timeout 30",
            ),
            (
                "--disable-prefix-caching --disable-prompt-tokens-details",
                |c| {
                    c.prefix_caching = false;
                    c.prompt_tokens_details = false;
                },
                " --gpu-memory-utilization 0.85 --no-enable-prefix-caching --shutdown-timeout 30",
            ),
            (
                "a project with a priority",
                |c| c.priority_scheduling = true,
                " --gpu-memory-utilization 0.85 --enable-prefix-caching --enable-prompt-tokens-details --scheduling-policy priority \
                 --shutdown-timeout 30",
            ),
            (
                "--drain-timeout 1500ms rounds up",
                |c| c.shutdown_timeout = Duration::from_millis(1500),
                " --gpu-memory-utilization 0.85 --enable-prefix-caching --enable-prompt-tokens-details --shutdown-timeout 2",
            ),
            (
                "--drain-timeout 0",
                |c| c.shutdown_timeout = Duration::ZERO,
                " --gpu-memory-utilization 0.85 --enable-prefix-caching --enable-prompt-tokens-details --shutdown-timeout 0",
            ),
            (
                "vision model",
                |c| c.limit_mm_per_prompt = Some(DEFAULT_VISION_LIMIT_MM.into()),
                " --gpu-memory-utilization 0.85 --enable-prefix-caching --enable-prompt-tokens-details --shutdown-timeout 30 \
                 --limit-mm-per-prompt '{\"image\":4,\"video\":0}'",
            ),
            (
                "alias with remote code",
                |c| c.trust_remote_code = true,
                " --gpu-memory-utilization 0.85 --enable-prefix-caching --enable-prompt-tokens-details --shutdown-timeout 30 --trust-remote-code",
            ),
            (
                "pass-through last",
                |c| {
                    c.extra_args = vec![
                        "--enforce-eager".into(),
                        "--gpu-memory-utilization".into(),
                        "0.6".into(),
                    ]
                },
                " --gpu-memory-utilization 0.85 --enable-prefix-caching --enable-prompt-tokens-details --shutdown-timeout 30 --enforce-eager \
                 --gpu-memory-utilization 0.6",
            ),
        ];
        for (name, edit, flags) in cases {
            let mut c = cfg();
            edit(&mut c);
            let got = build_command(&c, 8000, "m").display();
            assert_eq!(got, format!("{BASE}{flags}"), "{name}");
        }
    }

    #[test]
    fn golden_env() {
        let env_of = |c: &LaunchSettings| -> Vec<String> {
            build_command(c, 1, "m")
                .env
                .iter()
                .map(|(k, v)| format!("{}={}", k.to_string_lossy(), v.to_string_lossy()))
                .collect()
        };
        let base = [
            "VLLM_NO_USAGE_STATS=1",
            "DO_NOT_TRACK=1",
            "VLLM_DISABLE_LOG_LOGO=1",
            "PYTHONUNBUFFERED=1",
        ];
        assert_eq!(env_of(&cfg()), base);
        let mut c = cfg();
        c.gpu.devices = Some(vec!["0".into(), "1".into()]);
        c.hub = Hub::ModelScope;
        let mut want: Vec<&str> = base.to_vec();
        want.extend([
            "CUDA_DEVICE_ORDER=PCI_BUS_ID",
            "CUDA_VISIBLE_DEVICES=0,1",
            "VLLM_USE_MODELSCOPE=True",
        ]);
        assert_eq!(env_of(&c), want);
    }

    #[test]
    fn display_with_env_is_a_shell_line() {
        let mut c = cfg();
        c.gpu.devices = Some(vec!["GPU-1a2b".into()]);
        c.engine_log = Some("/var/log/engine.log".into());
        let cmd = build_command(&c, 8000, "my model");
        assert_eq!(
            cmd.log_file.as_deref(),
            Some(std::path::Path::new("/var/log/engine.log"))
        );
        let line = cmd.display_with_env();
        assert!(line.starts_with("VLLM_NO_USAGE_STATS=1 DO_NOT_TRACK=1 "), "{line}");
        assert!(
            line.contains("CUDA_VISIBLE_DEVICES=GPU-1a2b /opt/vllm/bin/vllm serve"),
            "{line}"
        );
        assert!(line.contains("--served-model-name 'my model'"), "{line}");
    }

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("plain-1.0_a/b:c=d,e"), "plain-1.0_a/b:c=d,e");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(r#"{"a":1}"#), r#"'{"a":1}'"#);
    }

    #[test]
    fn shown_command_hides_secret_flags_and_variables() {
        let mut c = cfg();
        c.extra_args = vec!["--api-key".into(), "sk-live-1".into(), "--hf-token=hf_abc".into()];
        let mut cmd = build_command(&c, 8000, "m");
        cmd.env.push(("HF_TOKEN".into(), "hf_env".into()));
        let line = cmd.display_with_env();
        for secret in ["sk-live-1", "hf_abc", "hf_env"] {
            assert!(!line.contains(secret), "{secret} in {line}");
        }
        // `*` is a shell glob character, so the shown words are quoted.
        assert!(line.contains(" 'HF_TOKEN=***' "), "{line}");
        assert!(line.ends_with(" --api-key '***' '--hf-token=***'"), "{line}");
        assert!(cmd.display().ends_with(" --api-key '***' '--hf-token=***'"));
        assert_eq!(cmd.secrets(), ["sk-live-1", "hf_abc", "hf_env"]);
        // What is spawned still has them.
        assert!(cmd.args.contains(&"sk-live-1".to_owned()));
    }

    #[test]
    fn children_get_no_mqtt_llm_variable() {
        let parent = |pairs: &[(&str, &str)]| -> Vec<(OsString, OsString)> {
            pairs
                .iter()
                .map(|(k, v)| (OsString::from(k), OsString::from(v)))
                .collect()
        };
        let env = parent(&[
            ("PATH", "/bin"),
            ("MQTT_LLM_MQTT_PASSWORD", "pw"),
            ("HF_TOKEN", "hf_abc"),
            ("MQTT_LLM_LOG", "debug"),
            ("CUDA_VISIBLE_DEVICES", "1"),
            ("VLLM_API_KEY", "sk-1"),
            ("HOME", "/root"),
            ("VLLM_NO_USAGE_STATS", "0"),
        ]);
        assert_eq!(
            withheld_from_child(env.clone()),
            ["MQTT_LLM_LOG", "MQTT_LLM_MQTT_PASSWORD"]
        );
        assert!(passes_to_child(OsStr::new("HF_TOKEN")));
        assert!(!passes_to_child(OsStr::new("MQTT_LLM_MQTT_PASSWORD_FILE")));
        let cmd = build_command(&cfg(), 1, "m");
        let shown: Vec<String> = inherited_env_shown(&cmd, env)
            .into_iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        // VLLM_NO_USAGE_STATS is the command's own; PATH and HOME are not the engine's business.
        assert_eq!(shown, ["CUDA_VISIBLE_DEVICES=1", "HF_TOKEN=***", "VLLM_API_KEY=***"]);
    }
}
