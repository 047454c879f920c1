//! A real LLM engine on CPU: llama.cpp's OpenAI-compatible server (from the `xllamacpp` wheel) serving
//! SmolLM2-135M-Instruct, as prepared by `scripts/setup-cpu-engine.sh`.
//!
//! The engine directory is `$MQTT_LLM_CPU_ENGINE_DIR`, else `.cache/cpu-engine` in the repository. When it is not
//! prepared, tests skip with a message, unless `MQTT_LLM_REQUIRE_CPU_ENGINE=1` (the README's test command sets it),
//! where they fail.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStdin, Command};

use super::{Lines, Mosquitto, MqttLlm, free_port};

/// How long llama.cpp may take to answer `/health` with 200 (about 1 s on a quiet 2-core machine).
pub const ENGINE_START: Duration = Duration::from_secs(120);
/// The model name the engine serves (`--alias`).
pub const ALIAS: &str = "smollm2";
const MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
const LAUNCHER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/launcher/serve_llamacpp.py");

/// The prepared engine: the venv's python (with xllamacpp) and the model file.
#[derive(Debug, Clone)]
pub struct CpuEngine {
    pub python: PathBuf,
    pub model: PathBuf,
}

impl CpuEngine {
    pub fn dir() -> PathBuf {
        match std::env::var_os("MQTT_LLM_CPU_ENGINE_DIR") {
            Some(d) if !d.is_empty() => PathBuf::from(d),
            _ => Path::new(env!("CARGO_MANIFEST_DIR")).join(".cache/cpu-engine"),
        }
    }

    /// The prepared engine, or `None` after printing why the test is skipped. Panics instead when
    /// `MQTT_LLM_REQUIRE_CPU_ENGINE=1`.
    pub fn prepared_or_skip(test: &str) -> Option<Self> {
        let dir = Self::dir();
        let engine = Self {
            python: dir.join("venv/bin/python"),
            model: dir.join(MODEL_FILE),
        };
        let missing: Vec<String> = [dir.join("ready"), engine.python.clone(), engine.model.clone()]
            .into_iter()
            .filter(|p| !p.exists())
            .map(|p| p.display().to_string())
            .collect();
        if missing.is_empty() {
            return Some(engine);
        }
        let why = format!(
            "the CPU engine (llama.cpp + SmolLM2) is not prepared in {} (missing: {}); run scripts/setup-cpu-engine.sh",
            dir.display(),
            missing.join(", ")
        );
        if std::env::var("MQTT_LLM_REQUIRE_CPU_ENGINE").is_ok_and(|v| v == "1") {
            panic!("{why} (MQTT_LLM_REQUIRE_CPU_ENGINE=1 forbids skipping)");
        }
        eprintln!("SKIPPED {test}: {why} (with MQTT_LLM_REQUIRE_CPU_ENGINE=1 this fails instead)");
        None
    }
}

/// A running llama.cpp server on a free port of 127.0.0.1. Killed on drop; it also stops by itself when its
/// stdin closes, so a test process killed outright leaves no engine behind.
pub struct LlamaServer {
    pub port: u16,
    child: Child,
    _stdin: ChildStdin,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl LlamaServer {
    /// Start `serve_llamacpp.py MODEL --threads 1 --ctx 4096 --parallel 2 --alias smollm2` (two slots of 2048
    /// tokens each) and wait until `/health` answers 200.
    pub async fn start(engine: &CpuEngine) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let log = dir.path().join("llama-server.log");
        let out = std::fs::File::create(&log).expect("the engine log file");
        let port = free_port();
        let mut child = Command::new(&engine.python)
            .arg(LAUNCHER)
            .arg(&engine.model)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--threads", "1", "--ctx", "4096", "--parallel", "2"])
            .args(["--alias", ALIAS, "--exit-on-stdin-eof"])
            .stdin(Stdio::piped())
            .stdout(out.try_clone().expect("the engine log file"))
            .stderr(out)
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", engine.python.display()));
        let stdin = child.stdin.take().expect("piped stdin");
        let mut this = Self {
            port,
            child,
            _stdin: stdin,
            log,
            _dir: dir,
        };
        this.wait_healthy().await;
        this
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    async fn wait_healthy(&mut self) {
        let started = Instant::now();
        let mut last = String::from("no answer yet");
        while started.elapsed() < ENGINE_START {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "llama.cpp server exited ({status}) before it was healthy:\n{}",
                    self.log_tail(40)
                );
            }
            match try_get(self.port, "/health").await {
                Ok((200, _)) => return,
                Ok((status, body)) => last = format!("{status} {body}"),
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!(
            "llama.cpp server not healthy after {ENGINE_START:?} (last: {last}):\n{}",
            self.log_tail(40)
        );
    }

    /// The last `n` lines the server printed.
    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

/// GET over a plain socket, tolerating an engine that is not listening yet: (status, body).
async fn try_get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n").as_bytes())
        .await?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await??;
    let text = String::from_utf8_lossy(&buf);
    let status = text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.trim().to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// Everything a process printed so far (without waiting).
pub fn lines_so_far(lines: &mut Lines) -> &[String] {
    while let Ok(line) = lines.rx.try_recv() {
        lines.seen.push(line);
    }
    &lines.seen
}

/// llama.cpp, mosquitto and `mqtt-llm up` attached to the engine. When a test panics while holding it, it prints
/// what `mqtt-llm` and the engine said, so a failure shows why.
pub struct Stack {
    pub bridge: MqttLlm,
    pub broker: Mosquitto,
    pub engine: LlamaServer,
}

impl Stack {
    /// Start the engine, the broker and `mqtt-llm up --engine-url ... --served-model-name smollm2 EXTRA...`.
    pub async fn start(engine: &CpuEngine, extra: &[&str]) -> Self {
        let server = LlamaServer::start(engine).await;
        let broker = Mosquitto::start().await;
        let mut args: Vec<String> = vec![
            "up".into(),
            "--engine-url".into(),
            server.url(),
            "--served-model-name".into(),
            ALIAS.into(),
            "--broker".into(),
            broker.url(),
            "--http".into(),
            "127.0.0.1:0".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let bridge = MqttLlm::spawn(&args).await;
        let mut this = Self {
            bridge,
            broker,
            engine: server,
        };
        this.bridge.wait_ready().await;
        this
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let out = lines_so_far(&mut self.bridge.stdout).join("\n");
        let err = lines_so_far(&mut self.bridge.stderr).join("\n");
        eprintln!("--- mqtt-llm stdout ---\n{out}\n--- mqtt-llm stderr ---\n{err}");
        eprintln!(
            "--- llama.cpp server (last 30 lines) ---\n{}\n---",
            self.engine.log_tail(30)
        );
    }
}

/// `mqtt-llm up --engine llamacpp` on free ports with the embedded broker (no WebSocket listener), no engine log
/// file and no session store, then `extra` (the Python and model, or the virtualenv).
pub fn llamacpp_up_args(extra: &[&str]) -> Vec<String> {
    [
        "up",
        "--engine",
        "llamacpp",
        "--mqtt-listen",
        "127.0.0.1:0",
        "--mqtt-ws-listen",
        "off",
        "--http",
        "127.0.0.1:0",
        "--engine-grace",
        "5s",
        "--no-engine-log",
        "--no-persist",
    ]
    .iter()
    .chain(extra)
    .map(|a| a.to_string())
    .collect()
}
