//! Launching the engine, black box: `up --dry-run`, `setup` with a fake Python, finding (or failing to find) vLLM,
//! the diagnosis of a failed start, start-up progress and the engine log file. No test installs vLLM or needs a
//! network: a shell script plays Python (and pip), and the `vllm` it "installs" runs vllm-sim.
//!
//! These tests run mqtt-llm with a controlled `PATH` and `HOME`, so a vLLM installed on the test machine never
//! changes what they see.
// Test fixtures may unwrap: a failure there is a failed test.
#![allow(clippy::unwrap_used)]

mod support;

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};

use support::{Lines, Mosquitto, WAIT, mqtt_llm_bin, sim_bin};
use tokio::process::{Child, Command};

/// A temporary world: an empty `HOME`, a `bin` directory that is the only user entry on `PATH`.
struct World {
    dir: tempfile::TempDir,
}

impl World {
    fn new() -> Self {
        let w = Self {
            dir: tempfile::tempdir().unwrap(),
        };
        std::fs::create_dir_all(w.path("home")).unwrap();
        std::fs::create_dir_all(w.path("bin")).unwrap();
        w
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn arg(&self, rel: &str) -> String {
        self.path(rel).to_str().unwrap().to_owned()
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(mqtt_llm_bin());
        cmd.args(args)
            .env_clear()
            .env("PATH", format!("{}:/usr/bin:/bin", self.arg("bin")))
            .env("HOME", self.path("home"))
            .env("MQTT_LLM_LOG", "warn")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        cmd
    }

    /// Run mqtt-llm to completion.
    async fn run(&self, args: &[&str]) -> Output {
        let out = tokio::time::timeout(WAIT, self.command(args).output())
            .await
            .expect("mqtt-llm did not finish")
            .unwrap();
        eprintln!(
            "--- mqtt-llm {args:?} exited {:?}\n--- stdout\n{}--- stderr\n{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// Run `mqtt-llm up --model m --http 127.0.0.1:0 --broker mqtt://127.0.0.1:1 ARGS` to completion: a broker
    /// nobody serves, for runs that end before they need one.
    async fn up_offline(&self, args: &[&str]) -> Output {
        let offline = [
            "up",
            "--model",
            "m",
            "--http",
            "127.0.0.1:0",
            "--broker",
            "mqtt://127.0.0.1:1",
        ];
        self.run(&[&offline[..], args].concat()).await
    }

    /// A stand-in for `python3`: `-m venv [--clear] DIR` copies itself to `DIR/bin/python`; `-m pip install -r F`
    /// prints pip-like lines and writes `VENV/bin/vllm`, which answers `--version` with 0.26.0 and otherwise runs
    /// vllm-sim. Every call is appended to `calls.log`. With `pip_fails`, pip exits 1.
    fn fake_python(&self, pip_fails: bool) -> String {
        let path = self.path("fake-python");
        let pip = if pip_fails {
            "echo 'ERROR: Could not find a version that satisfies the requirement vllm==0.26.0'; exit 1".to_owned()
        } else {
            format!(
                "echo \"Collecting vllm==0.26.0 (from -r $5 (line 7))\"\n\
                 echo 'Successfully installed vllm-0.26.0'\n\
                 printf '#!/bin/sh\\nif [ \"$1\" = --version ]; then echo 0.26.0; exit 0; fi\\nexec {sim} \"$@\"\\n' \
                   > \"$venv/bin/vllm\"\n\
                 chmod +x \"$venv/bin/vllm\"",
                sim = sim_bin().display()
            )
        };
        let script = format!(
            "#!/bin/sh\n\
             echo \"$0 $*\" >> {log}\n\
             venv=$(cd \"$(dirname \"$0\")/..\" && pwd)\n\
             case \"$1 $2\" in\n\
             '-m venv') shift 2; [ \"$1\" = --clear ] && shift; mkdir -p \"$1/bin\" && cp \"$0\" \"$1/bin/python\"; exit $? ;;\n\
             '-m pip') {pip}; exit 0 ;;\n\
             esac\n\
             exit 3\n",
            log = self.path("calls.log").display(),
        );
        std::fs::write(&path, script).unwrap();
        make_executable(&path);
        path.to_str().unwrap().to_owned()
    }

    /// Start `mqtt-llm up ARGS --broker BROKER --http 127.0.0.1:0`, reading its stdout.
    fn up(&self, broker: &Mosquitto, args: &[&str]) -> (Child, Lines) {
        let url = broker.url();
        let http = ["--broker", &url, "--http", "127.0.0.1:0"];
        let mut child = self
            .command(&[&["up"][..], args, &http].concat())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = Lines::read(child.stdout.take().unwrap());
        (child, stdout)
    }

    fn calls(&self) -> Vec<String> {
        std::fs::read_to_string(self.path("calls.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

fn make_executable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Assert that `output` contains every one of `parts`.
fn assert_contains_all(output: &str, parts: &[&str]) {
    for part in parts {
        assert!(output.contains(part), "{part:?} missing from:\n{output}");
    }
}

#[tokio::test]
async fn dry_run_prints_the_resolved_command_and_launches_nothing() {
    let w = World::new();
    let out = w
        .run(&[
            "up",
            "--model",
            "QWEN3-VL-4B",
            "--vllm-bin",
            "/opt/vllm/bin/vllm",
            "--gpus",
            "0,1",
            "--engine-port",
            "8123",
            "--drain-timeout",
            "10s",
            "--engine-arg=--enforce-eager",
            "--dry-run",
            "--",
            "--max-num-batched-tokens",
            "8k",
        ])
        .await;
    assert_eq!(out.status.code(), Some(0));
    let stdout = text(&out.stdout);
    let want = "command: VLLM_NO_USAGE_STATS=1 DO_NOT_TRACK=1 VLLM_DISABLE_LOG_LOGO=1 PYTHONUNBUFFERED=1 \
                CUDA_DEVICE_ORDER=PCI_BUS_ID CUDA_VISIBLE_DEVICES=0,1 /opt/vllm/bin/vllm serve Qwen/Qwen3-VL-4B-Instruct-FP8 --host 127.0.0.1 \
                --port 8123 --served-model-name qwen3-vl-4b --gpu-memory-utilization 0.85 --tensor-parallel-size 2 \
                --enable-prefix-caching --enable-prompt-tokens-details --shutdown-timeout 10 \
                --limit-mm-per-prompt '{\"image\":4,\"video\":0}' --enforce-eager --max-num-batched-tokens 8k";
    assert!(stdout.lines().any(|l| l == want), "{stdout}");
    let log = w.path("home/.local/state/mqtt-llm/engine.log");
    assert_contains_all(
        &stdout,
        &[
            "program: /opt/vllm/bin/vllm (from --vllm-bin)",
            "model: QWEN3-VL-4B resolves to Qwen/Qwen3-VL-4B-Instruct-FP8",
            "env: CUDA_VISIBLE_DEVICES=0,1",
            &format!("engine log: {}", log.display()),
        ],
    );
    assert!(!log.exists(), "a dry run writes nothing");
    assert!(
        !stdout.contains("http listening"),
        "a dry run starts no server: {stdout}"
    );
}

#[tokio::test]
async fn dry_run_without_an_engine_says_it_would_install_one() {
    let w = World::new();
    let out = w.run(&["up", "--model", "m", "--dry-run"]).await;
    assert_eq!(out.status.code(), Some(0));
    let stdout = text(&out.stdout);
    let venv = w.path("home/.local/share/mqtt-llm/venv");
    assert!(
        stdout.contains(&format!("program: {}/bin/vllm (not installed yet", venv.display())),
        "{stdout}"
    );
    assert!(!venv.exists(), "a dry run installs nothing");
}

#[tokio::test]
async fn missing_engine_without_bootstrap_is_one_sentence_and_exit_code_2() {
    let w = World::new();
    let out = w
        .run(&["up", "--model", "m", "--no-bootstrap", "--venv", &w.arg("venv")])
        .await;
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    let errors: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(errors[0].starts_with("error: vLLM is not installed"), "{stderr}");
    assert!(
        errors[0].contains("mqtt-llm setup") && errors[0].contains("--vllm-bin") && errors[0].contains("--engine-url"),
        "{stderr}"
    );
}

#[tokio::test]
async fn engine_on_path_is_found_after_the_venv() {
    let w = World::new();
    // Put a do-nothing `vllm` at `rel`; the program a dry run picks must be it, found as `how`.
    let engine_found = |rel: &str, how: &str| {
        let engine = w.path(rel);
        std::fs::create_dir_all(engine.parent().unwrap()).unwrap();
        std::fs::write(&engine, "#!/bin/sh\nexit 0\n").unwrap();
        make_executable(&engine);
        let w = &w;
        let expected = format!("program: {} ({how})", engine.display());
        async move {
            let out = w.run(&["up", "--model", "m", "--no-bootstrap", "--dry-run"]).await;
            assert_contains_all(&text(&out.stdout), &[&expected]);
        }
    };
    engine_found("bin/vllm", "from PATH").await;
    engine_found("home/.local/share/mqtt-llm/venv/bin/vllm", "from the virtualenv").await;
}

#[tokio::test]
async fn setup_creates_the_venv_installs_the_pins_and_checks_the_version() {
    let w = World::new();
    let python = w.fake_python(false);
    let venv = w.arg("data/venv");
    let out = w.run(&["setup", "--venv", &venv, "--python", &python]).await;
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        text(&out.stdout).trim(),
        format!("{venv}/bin/vllm"),
        "stdout is the engine's path"
    );
    let stderr = text(&out.stderr);
    for expected in [
        format!("setup: creating the virtualenv {venv} with {python}"),
        "setup: installing vllm==0.26.0".to_owned(),
        "Collecting vllm==0.26.0".to_owned(),
        "setup: vLLM 0.26.0 installed".to_owned(),
    ] {
        assert!(stderr.contains(&expected), "{expected:?} missing from:\n{stderr}");
    }
    let calls = w.calls();
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert!(calls[0].ends_with(&format!("-m venv {venv}")), "{calls:?}");
    assert!(
        calls[1].starts_with(&format!(
            "{venv}/bin/python -m pip install -r {venv}/mqtt-llm-requirements.txt"
        )),
        "{calls:?}"
    );
    let pins = std::fs::read_to_string(w.path("data/venv/mqtt-llm-requirements.txt")).unwrap();
    assert!(pins.lines().any(|l| l == "vllm==0.26.0"), "{pins}");

    // Again: already there, nothing reinstalled.
    let out = w.run(&["setup", "--venv", &venv, "--python", &python]).await;
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stderr).contains("setup: vLLM 0.26.0 is already installed"));
    assert_eq!(w.calls().len(), 2);

    // --force rebuilds it.
    let out = w.run(&["setup", "--venv", &venv, "--python", &python, "--force"]).await;
    assert_eq!(out.status.code(), Some(0));
    assert!(
        w.calls()[2].ends_with(&format!("-m venv --clear {venv}")),
        "{:?}",
        w.calls()
    );
}

#[tokio::test]
async fn setup_honours_xdg_data_home_and_reports_a_failed_pip() {
    let w = World::new();
    let python = w.fake_python(true);
    let mut cmd = w.command(&["setup", "--python", &python]);
    cmd.env("XDG_DATA_HOME", w.path("xdg"));
    let out = tokio::time::timeout(WAIT, cmd.output()).await.unwrap().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    let venv = w.path("xdg/mqtt-llm/venv");
    assert_contains_all(
        &stderr,
        &[
            &format!("creating the virtualenv {}", venv.display()),
            // pip's output streams through.
            "ERROR: Could not find a version",
            "error: pip install failed (exit status: 1)",
            "hint: pip's output above says why",
        ],
    );
}

#[tokio::test]
async fn setup_without_python_says_what_to_install() {
    let w = World::new();
    let out = w
        .run(&["setup", "--venv", &w.arg("venv"), "--python", &w.arg("no-such-python")])
        .await;
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("error: cannot run"), "{stderr}");
    assert!(stderr.contains("hint: install Python 3"), "{stderr}");
}

#[tokio::test]
async fn bad_engine_flag_is_diagnosed_with_exit_code_2() {
    let w = World::new();
    let sim = sim_bin();
    let (sim, log) = (sim.to_str().unwrap(), w.arg("engine.log"));
    let out = w
        .up_offline(&["--vllm-bin", sim, "--engine-log", &log, "--engine-arg=--no-such-flag"])
        .await;
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    let error = lines
        .iter()
        .position(|l| l.starts_with("error: "))
        .expect("an error line");
    assert_eq!(
        lines[error],
        "error: vllm serve rejected its command line: unrecognized arguments: --no-such-flag"
    );
    assert!(lines[error + 1].starts_with("hint: check --engine-arg"), "{stderr}");
    assert!(
        lines[..error].iter().any(|l| l.contains("usage: vllm serve")),
        "the engine's last lines come first: {stderr}"
    );
    assert!(stderr.contains(&format!("the whole output is in {}", w.path("engine.log").display())));
    let log = std::fs::read_to_string(w.path("engine.log")).unwrap();
    assert!(
        log.contains("mqtt-llm launches: ") && log.contains("unrecognized arguments: --no-such-flag"),
        "{log}"
    );
}

#[tokio::test]
async fn missing_engine_binary_is_diagnosed() {
    let w = World::new();
    let out = w
        .up_offline(&["--skip-gpu-check", "--vllm-bin", &w.arg("nowhere/vllm")])
        .await;
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&format!("error: cannot run the engine {}", w.arg("nowhere/vllm"))),
        "{stderr}"
    );
    assert!(stderr.contains("hint: run `mqtt-llm setup`"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_up_bootstraps_the_engine_then_serves() {
    let broker = Mosquitto::start().await;
    let w = World::new();
    let python = w.fake_python(false);
    let venv = w.arg("venv");
    let log = w.arg("logs/engine.log");
    // The installed `vllm` is a stand-in on a machine without GPUs.
    let model = ["--skip-gpu-check", "--model", "m", "--venv", &venv, "--python", &python];
    let (child, mut stdout) = w.up(
        &broker,
        &[&model[..], &["--engine-log", &log, "--engine-grace", "5s"]].concat(),
    );
    let launched = stdout
        .wait_for("the launch line", |l| l.starts_with("engine launched: "))
        .await;
    assert!(
        launched.starts_with(&format!("engine launched: {venv}/bin/vllm serve m ")),
        "{launched}"
    );
    stdout.wait_for("ready", |l| l == "ready").await;
    let log = std::fs::read_to_string(w.path("logs/engine.log")).unwrap();
    assert!(log.contains("Starting vLLM server on http://127.0.0.1:"), "{log}");
    assert_eq!(w.calls().len(), 2, "venv + pip, once");
    drop(child);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_up_progress_is_printed() {
    let broker = Mosquitto::start().await;
    let w = World::new();
    let sim = sim_bin();
    let args = [
        "--vllm-bin",
        sim.to_str().unwrap(),
        "--model",
        "m",
        "--no-engine-log",
        "--engine-arg=--sim-startup-ms=600",
    ];
    let (child, mut stdout) = w.up(&broker, &args);
    stdout
        .wait_for("the engine's ready line", |l| l.starts_with("engine ready at "))
        .await;
    let seen = &stdout.seen;
    let phases: Vec<&String> = seen.iter().filter(|l| l.starts_with("engine: ")).collect();
    assert!(!phases.is_empty(), "no progress lines: {seen:?}");
    let mut last = 0.0;
    for line in &phases {
        let (_, elapsed) = line.rsplit_once(" (").unwrap();
        let secs: f64 = elapsed.strip_suffix("s)").unwrap().parse().unwrap();
        assert!(secs >= last, "phases in start-up order: {phases:?}");
        last = secs;
    }
    // The app reports the latest phase it sees (a watch): phases passed within the same few milliseconds may be
    // merged on a busy machine, so only require several of the sim's 600 ms of phases to show.
    assert!(phases.len() >= 2, "several phases: {seen:?}");
    drop(child);
}
