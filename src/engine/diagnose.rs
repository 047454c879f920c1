//! Why the engine did not start, in one line, with what to do about it: a pure reading of its last log lines
//! (and its exit status when known) against the error lines vLLM really prints.
//!
//! Kinds are tried from the most specific cause to the most generic: a failed hub download is reported as such
//! even though vLLM then also says the repository id is invalid, and a KV-cache shortfall is not a plain CUDA OOM.

use std::fmt;

/// How the engine ended, as far as the supervisor knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineExit {
    /// It exited with this code.
    Code(i32),
    /// A signal killed it.
    Signal(i32),
    /// It was still starting when the start timeout passed.
    TimedOut,
}

impl EngineExit {
    /// Read the status out of the supervisor's reason text (`... (exit status: 2)`, `... (signal: 9 (SIGKILL))`,
    /// `... did not become healthy in time`).
    pub fn from_reason(reason: &str) -> Option<Self> {
        let number_after = |marker: &str| -> Option<i32> {
            let rest = &reason[reason.find(marker)? + marker.len()..];
            let digits: String = rest
                .trim_start()
                .chars()
                .take_while(|c| c.is_ascii_digit() || *c == '-')
                .collect();
            digits.parse().ok()
        };
        if let Some(code) = number_after("exit status:") {
            Some(Self::Code(code))
        } else if let Some(signal) = number_after("signal:") {
            Some(Self::Signal(signal))
        } else if reason.contains("did not become healthy in time") {
            Some(Self::TimedOut)
        } else {
            None
        }
    }
}

impl fmt::Display for EngineExit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Code(code) => write!(f, "exit status {code}"),
            Self::Signal(signal) => write!(f, "killed by signal {signal}"),
            Self::TimedOut => f.write_str("still starting at the start timeout"),
        }
    }
}

/// The cause of a failed start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiagnosisKind {
    /// CUDA out of memory while loading or profiling.
    OutOfMemory,
    /// The weights fit but the KV cache for one full-length request does not (or none at all).
    KvCacheTooSmall,
    /// Another process holds GPU memory vLLM was told it may take.
    GpuBusy,
    /// No usable GPU (no driver, no device visible).
    NoGpu,
    /// The model id is neither a hub repository nor a local directory.
    ModelNotFound,
    /// The model is gated or private and no (valid) token was given.
    ModelAccessDenied,
    /// The hub cannot be reached (offline, proxy, `HF_HUB_OFFLINE=1` without a cached copy).
    HubUnreachable,
    /// The engine's port is taken.
    PortInUse,
    /// `vllm serve` rejected its command line (argparse, exit status 2).
    BadFlag,
    /// The vLLM installation is broken (a missing or mismatched Python module).
    BrokenInstall,
    /// The engine executable could not be started at all.
    MissingBinary,
    /// It was still loading when `--engine-start-timeout` passed.
    StartTimeout,
    /// None of the above.
    Unknown,
}

/// One failed start, explained.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnosis {
    pub kind: DiagnosisKind,
    /// One line: what went wrong.
    pub reason: String,
    /// One line: what to do.
    pub hint: String,
    /// The exit code of `mqtt-llm up`: 2 for a command line vLLM rejects, 1 otherwise.
    pub exit_code: u8,
}

/// Longest quoted engine line in a reason.
const QUOTE_CHARS: usize = 200;

/// The message part of a vLLM log line: without the `(EngineCore pid=N) ERROR 04-07 02:44:26 [file.py:N] `
/// prefixes, shortened to [`QUOTE_CHARS`].
fn quote(line: &str) -> String {
    let mut text = line.trim();
    if text.starts_with('(')
        && let Some(end) = text.find(") ")
    {
        text = text[end + 2..].trim_start();
    }
    let level = text.split_whitespace().next().unwrap_or_default();
    if matches!(level, "INFO" | "WARNING" | "ERROR" | "DEBUG" | "CRITICAL")
        && let Some(end) = text.find("] ")
    {
        text = text[end + 2..].trim_start();
    }
    match text.char_indices().nth(QUOTE_CHARS) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.to_owned(),
    }
}

/// The last line containing any of `needles`.
fn find<'a>(tail: &'a [String], needles: &[&str]) -> Option<&'a str> {
    tail.iter()
        .rev()
        .find(|line| needles.iter().any(|n| line.contains(n)))
        .map(String::as_str)
}

/// The text between the first pair of single quotes after `marker` in `line`.
fn quoted_after(line: &str, marker: &str) -> Option<String> {
    let rest = &line[line.find(marker)? + marker.len()..];
    let start = rest.find('\'')? + 1;
    let len = rest[start..].find('\'')?;
    Some(rest[start..start + len].to_owned())
}

/// The number right after `marker` (digits and thousands commas).
fn number_after(line: &str, marker: &str) -> Option<u64> {
    let rest = &line[line.find(marker)? + marker.len()..];
    let digits: String = rest
        .trim_start()
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == ',')
        .filter(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

fn diagnosis(kind: DiagnosisKind, reason: impl Into<String>, hint: impl Into<String>) -> Diagnosis {
    Diagnosis {
        kind,
        reason: reason.into(),
        hint: hint.into(),
        exit_code: if kind == DiagnosisKind::BadFlag { 2 } else { 1 },
    }
}

/// A cause the engine's last lines show by any of `markers`; the reason quotes the line that showed it.
struct QuotedRule {
    kind: DiagnosisKind,
    markers: &'static [&'static str],
    reason: &'static str,
    hint: &'static str,
}

/// Tried in this order, after the command line, the port and the KV cache rules.
const QUOTED_RULES: &[QuotedRule] = &[
    QuotedRule {
        kind: DiagnosisKind::GpuBusy,
        markers: &["is less than desired GPU memory utilization"],
        reason: "another process holds GPU memory vLLM was to use",
        hint: "free the GPU (see nvidia-smi), pick another with --gpus, or lower --gpu-memory-utilization to what is \
               free",
    },
    QuotedRule {
        kind: DiagnosisKind::OutOfMemory,
        markers: &["CUDA out of memory", "OutOfMemoryError", "CUDA error: out of memory"],
        reason: "the GPU ran out of memory while the engine started",
        hint: "lower --gpu-memory-utilization (if other processes share the GPU) or --max-model-len / \
               --max-num-seqs, or serve a smaller or quantized model",
    },
    QuotedRule {
        kind: DiagnosisKind::NoGpu,
        markers: &[
            "No CUDA GPUs are available",
            "Failed to infer device type",
            "Found no NVIDIA driver",
            "NVIDIA driver on your system is too old",
            "CUDA driver initialization failed",
            "no CUDA-capable device is detected",
        ],
        reason: "the engine found no usable GPU",
        hint: "check that nvidia-smi lists the GPU and that --gpus (CUDA_VISIBLE_DEVICES) names ones it lists",
    },
    QuotedRule {
        kind: DiagnosisKind::ModelAccessDenied,
        markers: &[
            "GatedRepoError",
            "Cannot access gated repo",
            "is restricted. You must have access",
        ],
        reason: "the model is gated or private",
        hint: "accept its license on huggingface.co and export HF_TOKEN=<your token> before `mqtt-llm up`",
    },
    QuotedRule {
        kind: DiagnosisKind::HubUnreachable,
        markers: &[
            "We couldn't connect to 'https://huggingface.co'",
            "LocalEntryNotFoundError",
            "outgoing traffic has been disabled",
            "Max retries exceeded with url",
            "Temporary failure in name resolution",
            "ConnectTimeout",
        ],
        reason: "the model is not cached and the hub cannot be reached",
        hint: "check the network or proxy (HTTPS_PROXY), or download it where there is network \
               (`huggingface-cli download MODEL`) and serve the cached copy, with HF_HUB_OFFLINE=1 or as a local \
               directory",
    },
];

/// Explain a failed start from the engine's last lines and, when known, how it ended.
pub fn diagnose(tail: &[String], exit: Option<EngineExit>) -> Diagnosis {
    use DiagnosisKind as K;
    let usage = find(tail, &["usage: vllm", "usage: api_server.py"]);
    let argparse_error = find(
        tail,
        &[
            ": error: unrecognized arguments",
            ": error: argument ",
            ": error: the following arguments are required",
            ": error: invalid choice",
        ],
    )
    .or_else(|| usage.and(find(tail, &[": error: "])));
    if argparse_error.is_some() || (exit == Some(EngineExit::Code(2)) && usage.is_some()) {
        let what = argparse_error
            .map(|l| quote(l.split_once(": error: ").map_or(l, |(_, e)| e)))
            .unwrap_or_else(|| "see its usage message above".to_owned());
        return diagnosis(
            K::BadFlag,
            format!("vllm serve rejected its command line: {what}"),
            "check --engine-arg and the arguments after `--` against `vllm serve --help` of the installed vLLM; \
             `mqtt-llm up --dry-run` prints the whole command",
        );
    }
    if let Some(line) = find(tail, &["ddress already in use", "[Errno 98]"]) {
        return diagnosis(
            K::PortInUse,
            format!("the engine's port is already in use ({})", quote(line)),
            "another process listens there: choose another --engine-port, or leave it out to get a free one",
        );
    }
    if let Some(line) = find(
        tail,
        &["KV cache is needed, which is larger than the available KV cache memory"],
    ) {
        let fits = number_after(line, "estimated maximum model length is");
        let hint = match fits {
            Some(n) => {
                format!("lower --max-model-len to {n} or less, or raise --gpu-memory-utilization if the GPU has room")
            }
            None => "lower --max-model-len, or raise --gpu-memory-utilization if the GPU has room".to_owned(),
        };
        return diagnosis(
            K::KvCacheTooSmall,
            "the KV cache left after loading the weights cannot hold one request of the full context length",
            hint,
        );
    }
    if find(tail, &["No available memory for the cache blocks"]).is_some() {
        return diagnosis(
            K::KvCacheTooSmall,
            "the weights leave no GPU memory for the KV cache",
            "raise --gpu-memory-utilization if the GPU has room, or serve a smaller or quantized model \
             (--quantization fp8)",
        );
    }
    for rule in QUOTED_RULES {
        if let Some(line) = find(tail, rule.markers) {
            return diagnosis(rule.kind, format!("{} ({})", rule.reason, quote(line)), rule.hint);
        }
    }
    if let Some(line) = find(
        tail,
        &[
            "Invalid repository ID or local directory",
            "RepositoryNotFoundError",
            "Repository Not Found for url",
            "is not a local folder and is not a valid model identifier",
        ],
    ) {
        let reason = match quoted_after(line, "local directory specified:") {
            Some(model) => format!("model '{model}' is neither a repository on the hub nor a local directory"),
            None => format!("the model does not exist on the hub ({})", quote(line)),
        };
        return diagnosis(
            K::ModelNotFound,
            reason,
            "check the --model spelling (a Hugging Face id like Qwen/Qwen3-14B, a directory with config.json, or an \
             alias such as qwen3-vl-4b); a private model needs HF_TOKEN, and under HF_HUB_OFFLINE=1 only cached models \
             load",
        );
    }
    // Only a raised exception: vLLM also *warns* about optional modules it could not import.
    let raised = tail.iter().rev().find(|line| {
        let message = quote(line);
        ["ModuleNotFoundError:", "ImportError:"]
            .iter()
            .any(|e| message.starts_with(e))
            || message.contains("undefined symbol")
    });
    if let Some(line) = raised {
        return diagnosis(
            K::BrokenInstall,
            format!("the vLLM installation is broken ({})", quote(line)),
            "reinstall it with `mqtt-llm setup --force` (or point --vllm-bin at a working vllm)",
        );
    }
    match exit {
        Some(EngineExit::TimedOut) => diagnosis(
            K::StartTimeout,
            "the engine was still starting when --engine-start-timeout passed",
            "raise --engine-start-timeout (a first start downloads the weights and compiles); the log above shows \
             how far it got",
        ),
        Some(status) => diagnosis(
            K::Unknown,
            format!("the engine exited during start-up ({status})"),
            "read the engine's last lines above (the whole output is in the engine log)",
        ),
        None => diagnosis(
            K::Unknown,
            "the engine did not start",
            "read the engine's last lines above (the whole output is in the engine log)",
        ),
    }
}

/// The engine executable could not be run at all.
pub fn diagnose_spawn(program: &str, error: &std::io::Error) -> Diagnosis {
    diagnosis(
        DiagnosisKind::MissingBinary,
        format!("cannot run the engine {program}: {error}"),
        "run `mqtt-llm setup` to install vLLM, or pass --vllm-bin with the path of a working vllm (or --engine-url \
         to attach to a running server)",
    )
}

#[cfg(test)]
#[path = "diagnose_tests.rs"]
mod tests;
