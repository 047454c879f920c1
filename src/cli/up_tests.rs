//! `up`'s command line through to the typed configuration: clap parsing, the mapping to raw settings, and
//! `Config::from_raw`'s validation as a user meets it.

use std::time::Duration;

use clap::Parser;
use mqtt_llm::config::{Config, ConfigError, SamplingDefaults, parse_gpus};
use mqtt_llm::engine::command::build_command;
use mqtt_llm::engine::{EngineMode, LaunchSettings, LaunchedServer};
use mqtt_llm::mqtt::MqttVersion;

use super::{Cli, Command, UpArgs};

fn args(args: &[&str]) -> UpArgs {
    let argv = ["mqtt-llm", "up"].iter().chain(args);
    match Cli::try_parse_from(argv).unwrap().command {
        Command::Up(a) => *a,
        _ => panic!("not up"),
    }
}

fn up(argv: &[&str]) -> Result<Config, ConfigError> {
    Config::from_raw(args(argv).raw_settings())
}

fn launch(c: &Config) -> &LaunchSettings {
    match &c.engine.mode {
        EngineMode::Launch(l) => l,
        EngineMode::Attach { .. } => panic!("attach mode"),
    }
}

#[test]
fn everything_after_a_double_dash_is_for_vllm() {
    let a = args(&[
        "--model",
        "m",
        "--engine-arg=--enforce-eager",
        "--engine-arg",
        "--max-num-batched-tokens=8k",
        "--",
        "--model",
        "other",
        "-tp",
        "2",
        "--",
    ]);
    assert_eq!(a.model.as_deref(), Some("m"));
    assert_eq!(a.engine_args, ["--enforce-eager", "--max-num-batched-tokens=8k"]);
    assert_eq!(a.vllm_args, ["--model", "other", "-tp", "2", "--"]);
    assert!(args(&["--model", "m"]).vllm_args.is_empty());
}

#[test]
fn enable_and_disable_flags_override_each_other() {
    let a = args(&["--model", "m", "--disable-prefix-caching", "--enable-prefix-caching"]);
    assert!(!a.disable_prefix_caching);
    let a = args(&["--model", "m", "--enable-prefix-caching", "--disable-prefix-caching"]);
    assert!(a.disable_prefix_caching);
}

#[test]
fn engine_flags_parse() {
    let a = args(&[
        "--model",
        "qwen3-vl-4b",
        "--gpus",
        "0,1",
        "--tensor-parallel-size",
        "2",
        "--quantization",
        "fp8",
        "--kv-cache-dtype",
        "fp8",
        "--no-bootstrap",
        "--dry-run",
        "--venv",
        "/tmp/v",
        "--python",
        "/usr/bin/python3.12",
    ]);
    assert_eq!(a.gpus.as_deref(), Some("0,1"));
    assert_eq!(a.tensor_parallel_size, Some(2));
    assert!(a.no_bootstrap && a.dry_run);
    assert_eq!(a.install.venv.as_deref(), Some(std::path::Path::new("/tmp/v")));
    assert_eq!(a.gpu_memory_utilization, None);
    assert_eq!(launch(&up(&["--model", "m"]).unwrap()).gpu.memory_utilization, 0.85);
    assert!(Cli::try_parse_from(["mqtt-llm", "up", "--model", "m", "--tensor-parallel-size", "0"]).is_err());
}

#[test]
fn defaults() {
    let c = up(&["--model", "m"]).unwrap();
    // No --broker: the embedded broker on 0.0.0.0:1883 and 0.0.0.0:9001, anonymous, plain; the bridge's port is
    // its loopback listener's, known once it listens.
    let broker = c.embedded_broker.as_ref().expect("the embedded broker by default");
    assert_eq!(broker.tcp, Some("0.0.0.0:1883".parse().unwrap()));
    assert_eq!(broker.ws, Some("0.0.0.0:9001".parse().unwrap()));
    assert!(broker.auth.is_none() && broker.tls.is_none());
    assert_eq!(c.mqtt.host, "127.0.0.1");
    assert_eq!(c.mqtt.port, 0);
    let external = up(&["--model", "m", "--broker", "mqtt://10.0.0.2"]).unwrap();
    assert!(external.embedded_broker.is_none());
    assert_eq!((external.mqtt.host.as_str(), external.mqtt.port), ("10.0.0.2", 1883));
    assert_eq!(c.mqtt.version, MqttVersion::V5);
    assert_eq!(c.mqtt.max_packet_size, 1024 * 1024);
    assert_eq!(c.mqtt.projects.len(), 1);
    assert_eq!(c.bridge.admission.max_inflight.get(), 64);
    assert_eq!(c.bridge.admission.session_queue.get(), 8);
    assert_eq!(
        c.bridge.defaults,
        SamplingDefaults {
            temperature: 0.6,
            top_p: 0.9,
            max_tokens: 512
        }
    );
    assert!(c.bridge.skip_thinking);
    assert_eq!(c.bridge.sessions.max_history_tokens.get(), 3000);
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

#[test]
fn password_file_and_client_certificate_flags() {
    let a = args(&[
        "--model",
        "m",
        "--mqtt-password-file",
        "/run/secrets/mqtt",
        "--mqtt-client-cert",
        "/etc/c.pem",
        "--mqtt-client-key",
        "/etc/c.key",
    ]);
    let raw = a.raw_settings();
    assert_eq!(
        raw.mqtt.mqtt_password_file.as_deref(),
        Some(std::path::Path::new("/run/secrets/mqtt"))
    );
    assert_eq!(
        raw.mqtt.mqtt_client_cert.as_deref(),
        Some(std::path::Path::new("/etc/c.pem"))
    );
    assert_eq!(
        raw.mqtt.mqtt_client_key.as_deref(),
        Some(std::path::Path::new("/etc/c.key"))
    );
    let a = args(&["--model", "m", "--mqtt-password", "hunter2"]);
    assert_eq!(a.mqtt_password.as_ref().map(|p| p.expose()), Some("hunter2"));
    assert!(
        !format!("{a:?}").contains("hunter2"),
        "Debug of the arguments shows the password"
    );

    let refused = |argv: &[&str]| {
        let full = ["mqtt-llm", "up", "--model", "m"].iter().chain(argv);
        Cli::try_parse_from(full).expect_err("accepted").kind()
    };
    use clap::error::ErrorKind;
    assert_eq!(
        refused(&["--mqtt-password", "p", "--mqtt-password-file", "f"]),
        ErrorKind::ArgumentConflict
    );
    assert_eq!(
        refused(&["--mqtt-client-cert", "c"]),
        ErrorKind::MissingRequiredArgument
    );
    assert_eq!(refused(&["--mqtt-client-key", "k"]), ErrorKind::MissingRequiredArgument);
}

#[test]
fn session_owner_flag() {
    use mqtt_llm::session::OwnerMode;
    let c = up(&["--model", "m"]).unwrap();
    assert_eq!(c.projects.session_owner("general"), OwnerMode::None);
    let c = up(&["--model", "m", "--session-owner", "client"]).unwrap();
    assert_eq!(c.projects.session_owner("general"), OwnerMode::Client);
    let err = up(&["--model", "m", "--session-owner", "user"])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("--session-owner") && err.contains("embedded broker"),
        "{err}"
    );
}

#[test]
fn embedded_broker_flags_are_checked_against_broker() {
    let err = |argv: &[&str]| up(argv).unwrap_err().to_string();
    let e = err(&["--model", "m", "--broker", "mqtt://h", "--mqtt-listen", "0.0.0.0:1884"]);
    assert!(
        e.contains("--mqtt-listen") && e.contains("does not run with --broker"),
        "{e}"
    );
    let e = err(&["--model", "m", "--mqtt-username", "u"]);
    assert!(e.contains("--mqtt-username") && e.contains("--broker-auth"), "{e}");
    let e = err(&["--model", "m", "--mqtt-listen", "localhost"]);
    assert!(e.contains("--mqtt-listen") && e.contains("`off`"), "{e}");
    let e = err(&[
        "--model",
        "m",
        "--mqtt-listen",
        "off",
        "--mqtt-tls-cert",
        "c",
        "--mqtt-tls-key",
        "k",
    ]);
    assert!(e.contains("which is off"), "{e}");
    let e = err(&[
        "--model",
        "m",
        "--mqtt-listen",
        "0.0.0.0:1883",
        "--mqtt-ws-listen",
        "127.0.0.1:1883",
    ]);
    assert!(e.contains("--mqtt-ws-listen"), "{e}");
    let e = err(&["--model", "m", "--broker-auth", "/nonexistent/passwd"]);
    assert!(e.contains("--broker-auth") && e.contains("/nonexistent/passwd"), "{e}");

    let off = up(&[
        "--model",
        "m",
        "--mqtt-listen",
        "off",
        "--mqtt-ws-listen",
        "127.0.0.1:0",
    ])
    .unwrap();
    let broker = off.embedded_broker.unwrap();
    assert_eq!(broker.tcp, None);
    assert_eq!(broker.ws, Some("127.0.0.1:0".parse().unwrap()));
}

/// A `.gguf` file that exists, for `--engine llamacpp` (the model must be a file).
fn gguf(dir: &tempfile::TempDir) -> String {
    let path = dir.path().join("SmolLM2-135M-Instruct.Q4_1.gguf");
    std::fs::write(&path, b"GGUF").unwrap();
    path.to_str().unwrap().to_owned()
}

#[test]
fn engine_llamacpp_dry_run_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let model = gguf(&dir);
    let argv = [
        "--engine",
        "llamacpp",
        "--llamacpp-python",
        "/venv/bin/python",
        "--model",
        &model,
        "--threads",
        "2",
        "--max-model-len",
        "1024",
        "--max-num-seqs",
        "4",
    ];
    let c = up(&argv).unwrap();
    let l = launch(&c);
    let LaunchedServer::LlamaCpp(llama) = &l.server else {
        panic!("not llama.cpp: {:?}", l.server)
    };
    assert_eq!(
        c.engine.served_model_name.as_deref(),
        Some("SmolLM2-135M-Instruct.Q4_1")
    );
    // What `up --dry-run` prints: the launcher (written under XDG_DATA_HOME or HOME) run by the given Python;
    // --ctx is the slot context times the slots.
    let line = build_command(l, 8000, "SmolLM2-135M-Instruct.Q4_1").display();
    assert_eq!(
        line,
        format!(
            "/venv/bin/python {} {model} --host 127.0.0.1 --port 8000 --threads 2 --ctx 4096 --parallel 4 \
             --alias SmolLM2-135M-Instruct.Q4_1",
            llama.launcher.display()
        )
    );
    assert!(
        llama.launcher.ends_with("mqtt-llm/serve_llamacpp.py"),
        "{:?}",
        llama.launcher
    );

    // Defaults: one thread, two slots of 2048; --served-model-name wins over the file stem.
    let c = up(&[
        "--engine",
        "llamacpp",
        "--llamacpp-python",
        "py",
        "--model",
        &model,
        "--served-model-name",
        "smollm2",
    ])
    .unwrap();
    let shown = build_command(launch(&c), 1, "smollm2").display();
    assert!(
        shown.ends_with(" --threads 1 --ctx 4096 --parallel 2 --alias smollm2"),
        "{shown}"
    );
    assert_eq!(c.engine.served_model_name.as_deref(), Some("smollm2"));
    // The default engine is still vLLM.
    assert_eq!(launch(&up(&["--model", "m"]).unwrap()).server, LaunchedServer::Vllm);
}

#[test]
fn engine_llamacpp_refuses_what_it_cannot_run() {
    let dir = tempfile::tempdir().unwrap();
    let model = gguf(&dir);
    let err = |extra: &[&str]| -> String {
        let mut argv = vec!["--engine", "llamacpp", "--llamacpp-python", "py", "--model", &model];
        argv.extend_from_slice(extra);
        up(&argv).unwrap_err().to_string()
    };
    for (flag, value) in [
        ("--gpu-memory-utilization", "0.85"),
        ("--quantization", "fp8"),
        ("--kv-cache-dtype", "fp8"),
        ("--tensor-parallel-size", "1"),
        ("--gpus", "0"),
        ("--limit-mm-per-prompt", "{}"),
        ("--vllm-bin", "/usr/bin/vllm"),
    ] {
        let e = err(&[flag, value]);
        assert_eq!(
            e,
            format!(
                "invalid {flag}: is vLLM's; llama.cpp (--engine llamacpp) has no such setting: leave it out, or use \
                 --engine vllm"
            )
        );
    }
    // The model: a .gguf file that exists; anything else says what llama.cpp needs and where vLLM models go.
    let e = up(&[
        "--engine",
        "llamacpp",
        "--llamacpp-python",
        "py",
        "--model",
        "qwen3-vl-4b",
    ])
    .unwrap_err()
    .to_string();
    assert!(
        e.starts_with("invalid --model: \"qwen3-vl-4b\" is not a .gguf file"),
        "{e}"
    );
    assert!(
        e.contains("needs a path to a GGUF model file") && e.contains("need --engine vllm on a GPU"),
        "{e}"
    );
    let missing = dir.path().join("absent.gguf");
    let e = up(&[
        "--engine",
        "llamacpp",
        "--llamacpp-python",
        "py",
        "--model",
        missing.to_str().unwrap(),
    ])
    .unwrap_err()
    .to_string();
    assert_eq!(e, format!("invalid --model: no such GGUF file: {}", missing.display()));
    // An empty --llamacpp-venv is refused when a default needs it.
    let a = args(&["--engine", "llamacpp", "--model", &model]);
    let mut raw = a.raw_settings();
    raw.engine.llamacpp_python = None; // whatever MQTT_LLM_LLAMACPP_PYTHON the test runs with
    raw.engine.llamacpp_venv = Some("".into());
    let e = Config::from_raw(raw).unwrap_err().to_string();
    assert!(e.starts_with("invalid --llamacpp-venv"), "{e}");
    // llama.cpp's --threads is refused under vLLM.
    let e = up(&["--model", "m", "--threads", "2"]).unwrap_err().to_string();
    assert_eq!(
        e,
        "invalid --threads: is llama.cpp's (--engine llamacpp); vLLM has no such setting"
    );
    assert!(Cli::try_parse_from(["mqtt-llm", "up", "--model", "m", "--engine", "auto"]).is_err());
}

#[test]
fn engine_llamacpp_defaults_to_its_managed_venv_and_built_in_model() {
    let dir = tempfile::tempdir().unwrap();
    let model = gguf(&dir);
    let llama_of = |c: &Config| -> (String, mqtt_llm::engine::LlamaCppSettings) {
        let l = launch(c);
        let LaunchedServer::LlamaCpp(llama) = &l.server else {
            panic!("not llama.cpp: {:?}", l.server)
        };
        (l.model.clone(), (**llama).clone())
    };
    let raw = |argv: &[&str]| {
        let mut raw = args(argv).raw_settings();
        // whatever MQTT_LLM_LLAMACPP_* the test runs with
        raw.engine.llamacpp_python = None;
        raw.engine.llamacpp_venv = Some("/lv".into());
        raw.engine.model = None;
        raw
    };
    // Neither --model nor --llamacpp-python: both from the venv (which need not exist yet: `up` installs it);
    // the built-in model's checksum travels along.
    let c = Config::from_raw(raw(&["--engine", "llamacpp"])).unwrap();
    let (m, llama) = llama_of(&c);
    assert_eq!(m, "/lv/models/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert_eq!(llama.python, std::path::Path::new("/lv/bin/python"));
    assert_eq!(llama.venv.as_deref(), Some(std::path::Path::new("/lv")));
    assert_eq!(
        llama.model_sha256.as_deref(),
        Some("b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53")
    );
    assert_eq!(
        c.engine.served_model_name.as_deref(),
        Some("SmolLM2-135M-Instruct.Q4_1")
    );
    // A given model: no checksum; the Python still from the venv.
    let mut r = raw(&["--engine", "llamacpp"]);
    r.engine.model = Some(model.clone());
    let (m, llama) = llama_of(&Config::from_raw(r).unwrap());
    assert_eq!(m, model);
    assert_eq!(llama.model_sha256, None);
    assert_eq!(llama.venv.as_deref(), Some(std::path::Path::new("/lv")));
    // Both given: the managed venv plays no part.
    let mut r = raw(&["--engine", "llamacpp"]);
    r.engine.model = Some(model.clone());
    r.engine.llamacpp_python = Some("/py".into());
    let (_, llama) = llama_of(&Config::from_raw(r).unwrap());
    assert_eq!(llama.python, std::path::Path::new("/py"));
    assert_eq!((llama.venv, llama.model_sha256), (None, None));
    // Under vLLM the model stays required.
    let mut r = raw(&[]);
    r.engine.llamacpp_venv = None;
    let e = Config::from_raw(r).unwrap_err().to_string();
    assert_eq!(e, "invalid --model: give a model to launch, or --engine-url to attach");
}
