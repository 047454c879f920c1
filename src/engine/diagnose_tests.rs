//! Diagnosis of failed starts from the lines vLLM really prints (0.8 through 0.33; the contract §7).

use super::*;
use DiagnosisKind as K;

fn lines(text: &str) -> Vec<String> {
    text.lines().map(str::to_owned).collect()
}

fn kind(text: &str, exit: Option<EngineExit>) -> Diagnosis {
    diagnose(&lines(text), exit)
}

const STARTED: &str = "\
INFO 11-22 10:00:00 [api_server.py:1] vLLM server version 0.26.0, serving model Qwen/Qwen3-14B
INFO 11-22 10:00:00 [utils.py:253] non-default args: {'model_tag': 'Qwen/Qwen3-14B', 'port': 41234}";

#[test]
fn unrecognized_argument_is_a_bad_flag_with_exit_code_2() {
    let d = kind(
        "usage: vllm serve [model_tag] [options]\nvllm serve: error: unrecognized arguments: --no-such-flag",
        Some(EngineExit::Code(2)),
    );
    assert_eq!(d.kind, K::BadFlag);
    assert_eq!(d.exit_code, 2);
    assert_eq!(
        d.reason,
        "vllm serve rejected its command line: unrecognized arguments: --no-such-flag"
    );
    assert!(d.hint.contains("--dry-run"), "{}", d.hint);
}

#[test]
fn invalid_value_is_a_bad_flag_even_without_a_status() {
    let d = kind(
        "usage: vllm serve [model_tag] [options]\n\
         vllm serve: error: argument --kv-cache-dtype: invalid choice: 'fp9' (choose from auto, bfloat16, fp8)",
        None,
    );
    assert_eq!((d.kind, d.exit_code), (K::BadFlag, 2));
    assert!(
        d.reason
            .ends_with("argument --kv-cache-dtype: invalid choice: 'fp9' (choose from auto, bfloat16, fp8)")
    );
    let d = kind("usage: vllm serve [model_tag] [options]\n", Some(EngineExit::Code(2)));
    assert_eq!((d.kind, d.exit_code), (K::BadFlag, 2));
}

#[test]
fn port_in_use() {
    for line in [
        "(APIServer pid=1) OSError: [Errno 98] Address already in use",
        "ERROR:    [Errno 98] error while attempting to bind on address ('127.0.0.1', 8000): address already in use",
        "ERROR 11-22 10:00:00 [launcher.py:99] OSError: [Errno 98] error while attempting to bind on address 127.0.0.1:8000: address already in use",
    ] {
        let d = kind(&format!("{STARTED}\n{line}"), Some(EngineExit::Code(1)));
        assert_eq!((d.kind, d.exit_code), (K::PortInUse, 1), "{line}");
        assert!(d.hint.contains("--engine-port"));
    }
}

/// The diagnosis of an engine that exited 1 after printing `tail`, which must be `kind` with a hint naming `hint`.
fn diagnosed(tail: &str, kind_: K, hint: &str) -> Diagnosis {
    let d = kind(tail, Some(EngineExit::Code(1)));
    assert_eq!(d.kind, kind_, "{tail}");
    assert!(d.hint.contains(hint), "{}", d.hint);
    d
}

#[test]
fn kv_cache_too_small_suggests_the_length_that_fits() {
    let tail = format!(
        "{STARTED}\n\
        (EngineCore pid=77) ERROR 11-22 10:01:00 [core.py:708] ValueError: To serve at least one request with the model's max seq len (131072), (4.00 GiB KV cache is needed, which is larger than the available KV cache memory (0.65 GiB). Based on the available memory, the estimated maximum model length is 21,440. Try increasing `gpu_memory_utilization` or decreasing `max_model_len` when initializing the engine.\n\
        (EngineCore pid=77) ERROR 11-22 10:01:00 [core.py:708] EngineCore failed to start.\n\
        RuntimeError: Engine core initialization failed. See root cause above. Failed core proc(s): {{'EngineCore': 1}}"
    );
    let d = kind(&tail, Some(EngineExit::Code(1)));
    assert_eq!((d.kind, d.exit_code), (K::KvCacheTooSmall, 1));
    assert!(d.hint.contains("--max-model-len to 21440"), "{}", d.hint);
    diagnosed(
        "ValueError: No available memory for the cache blocks. Try increasing `gpu_memory_utilization` when initializing the engine.",
        K::KvCacheTooSmall,
        "--gpu-memory-utilization",
    );
}

#[test]
fn gpu_held_by_another_process() {
    let d = diagnosed(
        "(EngineCore pid=9) ValueError: Free memory on device cuda:0 (7.34/15.49 GiB) on startup is less than desired GPU memory utilization (0.8, 12.39 GiB). Decrease GPU memory utilization or reduce GPU memory used by other processes.",
        K::GpuBusy,
        "lower --gpu-memory-utilization",
    );
    assert!(
        d.reason
            .starts_with("another process holds GPU memory vLLM was to use (ValueError: Free memory")
    );
}

#[test]
fn cuda_out_of_memory() {
    for line in [
        "(EngineCore pid=5) torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 79.19 GiB of which 1.23 GiB is free. Including non-PyTorch memory, this process has 77.94 GiB memory in use.",
        "torch.cuda.OutOfMemoryError: CUDA out of memory. Tried to allocate 896.00 MiB",
        "RuntimeError: CUDA error: out of memory",
    ] {
        let d = kind(
            &format!("{STARTED}\nCapturing CUDA graphs (PIECEWISE): 0/51\n{line}"),
            Some(EngineExit::Code(1)),
        );
        assert_eq!(d.kind, K::OutOfMemory, "{line}");
        assert!(d.hint.contains("--gpu-memory-utilization") && d.hint.contains("--max-model-len"));
        assert!(d.reason.len() < 300, "one short line: {}", d.reason);
    }
}

#[test]
fn no_gpu() {
    for line in [
        "RuntimeError: No CUDA GPUs are available",
        "RuntimeError: Failed to infer device type",
        "RuntimeError: Found no NVIDIA driver on your system. Please check that you have an NVIDIA GPU and installed a driver",
    ] {
        assert_eq!(kind(line, Some(EngineExit::Code(1))).kind, K::NoGpu, "{line}");
    }
}

#[test]
fn model_not_found() {
    let tail = "\
(APIServer pid=3) ERROR 11-22 10:00:02 [config.py:910] huggingface_hub.errors.RepositoryNotFoundError: 401 Client Error. (Request ID: Root=1-abc)
Repository Not Found for url: https://huggingface.co/api/models/nope/nope/tree/main?recursive=True&expand=False.
Please make sure you specified the correct `repo_id` and `repo_type`.
If you are trying to access a private or gated repo, make sure you are authenticated.
ValueError: Invalid repository ID or local directory specified: 'nope/nope'.
Please verify the following requirements:
1. Provide a valid Hugging Face repository ID.
2. Specify a local directory that contains a recognized configuration file.";
    let d = kind(tail, Some(EngineExit::Code(1)));
    assert_eq!((d.kind, d.exit_code), (K::ModelNotFound, 1));
    assert_eq!(
        d.reason,
        "model 'nope/nope' is neither a repository on the hub nor a local directory"
    );
    assert!(d.hint.contains("--model"));
    let d = kind(
        "huggingface_hub.errors.RepositoryNotFoundError: 404 Client Error.",
        None,
    );
    assert_eq!(d.kind, K::ModelNotFound);
}

#[test]
fn hub_unreachable_wins_over_the_invalid_id_it_causes() {
    for line in [
        "OSError: We couldn't connect to 'https://huggingface.co' to load this file, couldn't find it in the cached files and it looks like Qwen/Qwen3-0.6B is not the path to a directory containing a file named config.json.",
        "huggingface_hub.errors.LocalEntryNotFoundError: Cannot find an appropriate cached snapshot folder for the specified revision on the local disk and outgoing traffic has been disabled. To enable repo look-ups and downloads online, pass 'local_files_only=False' as input.",
        "requests.exceptions.ConnectionError: (MaxRetryError(\"HTTPSConnectionPool(host='huggingface.co', port=443): Max retries exceeded with url: /api/models/Qwen/Qwen3-14B\"))",
    ] {
        let tail = format!("{line}\nValueError: Invalid repository ID or local directory specified: 'Qwen/Qwen3-14B'.");
        diagnosed(&tail, K::HubUnreachable, "HF_HUB_OFFLINE");
    }
}

#[test]
fn gated_model() {
    diagnosed(
        "huggingface_hub.errors.GatedRepoError: 401 Client Error. Cannot access gated repo for url https://huggingface.co/meta-llama/Llama-3.1-8B-Instruct/resolve/main/config.json.\nAccess to model meta-llama/Llama-3.1-8B-Instruct is restricted. You must have access to it and be authenticated to access it. Please log in.",
        K::ModelAccessDenied,
        "HF_TOKEN",
    );
}

#[test]
fn broken_install_but_not_for_a_warning() {
    diagnosed(
        "Traceback (most recent call last):\nModuleNotFoundError: No module named 'vllm'",
        K::BrokenInstall,
        "mqtt-llm setup --force",
    );
    let d = kind(
        "WARNING 11-22 10:00:00 [_custom_ops.py:21] Failed to import from vllm._C with ModuleNotFoundError(\"No module named 'vllm._C'\")\nSegmentation fault (core dumped)",
        Some(EngineExit::Signal(11)),
    );
    assert_eq!(d.kind, K::Unknown);
    assert_eq!(d.reason, "the engine exited during start-up (killed by signal 11)");
}

#[test]
fn unknown_and_timeout() {
    let d = kind(STARTED, Some(EngineExit::Code(1)));
    assert_eq!((d.kind, d.exit_code), (K::Unknown, 1));
    assert_eq!(d.reason, "the engine exited during start-up (exit status 1)");
    let d = kind(STARTED, Some(EngineExit::TimedOut));
    assert_eq!(d.kind, K::StartTimeout);
    assert!(d.hint.contains("--engine-start-timeout"));
    let d = diagnose(&[], None);
    assert_eq!((d.kind, d.exit_code), (K::Unknown, 1));
}

#[test]
fn exit_status_from_the_supervisors_reason() {
    for (reason, exit) in [
        (
            "engine exited during start-up (exit status: 2)",
            Some(EngineExit::Code(2)),
        ),
        ("engine exited (exit status: 1)", Some(EngineExit::Code(1))),
        (
            "engine exited during start-up (signal: 9 (SIGKILL))",
            Some(EngineExit::Signal(9)),
        ),
        ("engine did not become healthy in time", Some(EngineExit::TimedOut)),
        ("engine task ended", None),
    ] {
        assert_eq!(EngineExit::from_reason(reason), exit, "{reason}");
    }
}

#[test]
fn missing_binary() {
    let e = std::io::Error::from(std::io::ErrorKind::NotFound);
    let d = diagnose_spawn("/nonexistent/vllm", &e);
    assert_eq!((d.kind, d.exit_code), (K::MissingBinary, 1));
    assert!(
        d.reason.starts_with("cannot run the engine /nonexistent/vllm: "),
        "{}",
        d.reason
    );
    assert!(d.hint.contains("mqtt-llm setup") && d.hint.contains("--vllm-bin"));
}

#[test]
fn quotes_drop_log_prefixes_and_stay_short() {
    assert_eq!(
        quote("(EngineCore pid=77) ERROR 11-22 10:01:00 [core.py:708] EngineCore failed to start."),
        "EngineCore failed to start."
    );
    assert_eq!(quote("ERROR:    [Errno 98] x"), "ERROR:    [Errno 98] x");
    let long = "x".repeat(500);
    assert_eq!(quote(&long).chars().count(), QUOTE_CHARS + 3);
}
