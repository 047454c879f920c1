//! Everything the commands print. Logs go to stderr through tracing; these lines go to stdout and are stable
//! enough for scripts and tests to wait on (`http listening on ADDR`, `ready`). Progress of a setup and every
//! failure go to stderr.

use std::io::Write;
use std::path::Path;

use mqtt_llm::app::AppEvent;
use mqtt_llm::engine::command::EngineCommand;
use mqtt_llm::engine::diagnose::Diagnosis;
use mqtt_llm::engine::locate::EngineSource;

fn stdout_line(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn stderr_lines(lines: &[&str]) {
    let mut err = std::io::stderr().lock();
    for line in lines {
        let _ = writeln!(err, "{line}");
    }
    let _ = err.flush();
}

/// Print one milestone of `up`.
pub fn app_event(event: &AppEvent) {
    let line = match event {
        AppEvent::HttpListening(addr) => format!("http listening on {addr}"),
        AppEvent::BrokerListening { tcp, ws, tls } => {
            let mut on = Vec::new();
            if let Some(a) = tcp {
                on.push(format!("{}://{a}", if *tls { "mqtts" } else { "mqtt" }));
            }
            if let Some(a) = ws {
                on.push(format!("ws://{a}/mqtt"));
            }
            if on.is_empty() {
                on.push("nothing (both listeners off; only mqtt-llm itself is connected)".to_owned());
            }
            format!("broker listening on {}", on.join(" "))
        }
        AppEvent::EngineLaunched { command } => format!("engine launched: {command}"),
        AppEvent::EnginePhase { phase, elapsed } => format!("engine: {phase} ({:.1}s)", elapsed.as_secs_f64()),
        AppEvent::EngineReady { url, model } => format!("engine ready at {url} serving {model}"),
        AppEvent::MqttReady => "ready".to_owned(),
        AppEvent::Draining => "draining".to_owned(),
        AppEvent::Stopped => "stopped".to_owned(),
    };
    stdout_line(&line);
}

/// The engine's last lines, framed, before a failure.
fn engine_tail(err: &mut impl Write, engine_tail: &[String], log_file: Option<&Path>) {
    if engine_tail.is_empty() {
        return;
    }
    let _ = writeln!(err, "--- last {} lines of the engine's output ---", engine_tail.len());
    for line in engine_tail {
        let _ = writeln!(err, "{line}");
    }
    match log_file {
        Some(path) => {
            let _ = writeln!(err, "--- the whole output is in {} ---", path.display());
        }
        None => {
            let _ = writeln!(err, "---");
        }
    }
}

/// A failure of a command: the engine's last lines when there are any, then one line of reason.
pub fn failure(reason: &str, tail: &[String]) {
    let mut err = std::io::stderr().lock();
    engine_tail(&mut err, tail, None);
    let _ = writeln!(err, "error: {reason}");
    let _ = err.flush();
}

/// A failed engine start: its last lines, then `error: REASON` and `hint: WHAT TO DO`.
pub fn diagnosis(d: &Diagnosis, tail: &[String], log_file: Option<&Path>) {
    let mut err = std::io::stderr().lock();
    engine_tail(&mut err, tail, log_file);
    let _ = writeln!(err, "error: {}", d.reason);
    let _ = writeln!(err, "hint: {}", d.hint);
    let _ = err.flush();
}

/// `error: REASON` and `hint: WHAT TO DO`.
pub fn error_with_hint(reason: &str, hint: &str) {
    stderr_lines(&[&format!("error: {reason}"), &format!("hint: {hint}")]);
}

/// One step of installing vLLM (`setup`, or `up` on first run).
pub fn setup_step(line: &str) {
    stderr_lines(&[&format!("setup: {line}")]);
}

/// `setup` succeeded: the engine's path, for scripts (`VLLM=$(mqtt-llm setup)`).
pub fn setup_done(vllm: &Path) {
    stdout_line(&vllm.display().to_string());
}

/// `setup --engine llamacpp` succeeded: the Python with xllamacpp and the built-in model, for scripts.
pub fn llamacpp_setup_done(python: &Path, model: &Path) {
    stdout_line(&format!("python: {}", python.display()));
    stdout_line(&format!("model: {}", model.display()));
}

/// Where the engine was found, or that it will be installed first.
pub enum DryRunEngine<'a> {
    Found(EngineSource),
    WouldInstall {
        venv: &'a Path,
    },
    /// Not installed, and no virtualenv to install it into.
    NotFound,
    /// llama.cpp: `--llamacpp-python` runs the launcher built into mqtt-llm, written to `launcher` at launch.
    LlamaCpp {
        launcher: &'a Path,
    },
}

/// `up --dry-run` in launch mode: the command, what it runs with (the environment it sets, what it inherits that
/// matters to vLLM, what it does not get), and where its output would go. Secrets show as `***`.
pub fn dry_run(command: &EngineCommand, engine: &DryRunEngine<'_>, model_note: Option<&str>) {
    let program = match engine {
        DryRunEngine::Found(source) => format!("program: {} (from {source})", command.program.display()),
        DryRunEngine::WouldInstall { venv } => format!(
            "program: {} (not installed yet: `up` would first install vLLM into {}; see `mqtt-llm setup`)",
            command.program.display(),
            venv.display()
        ),
        DryRunEngine::NotFound => format!(
            "program: {} (not installed, and no virtualenv to install it into: pass --venv or --vllm-bin)",
            command.program.display()
        ),
        DryRunEngine::LlamaCpp { launcher } => format!(
            "program: {} (--llamacpp-python, or llama.cpp's virtualenv; it runs llama.cpp's launcher, which `up` \
             writes to {} first)",
            command.program.display(),
            launcher.display()
        ),
    };
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{program}");
    if let Some(note) = model_note {
        let _ = writeln!(out, "model: {note}");
    }
    let _ = writeln!(
        out,
        "args: {}",
        command
            .shown_args()
            .iter()
            .map(|a| mqtt_llm::engine::command::shell_quote(a))
            .collect::<Vec<_>>()
            .join(" ")
    );
    for (key, value) in command.shown_env() {
        let _ = writeln!(out, "env: {key}={value}");
    }
    for (key, value) in mqtt_llm::engine::command::inherited_env_shown(command, std::env::vars_os()) {
        let _ = writeln!(out, "env (inherited): {key}={value}");
    }
    let withheld = mqtt_llm::engine::command::withheld_from_child(std::env::vars_os());
    if !withheld.is_empty() {
        let names: Vec<_> = withheld.iter().map(|n| n.to_string_lossy()).collect();
        let _ = writeln!(out, "env (not passed on): {}", names.join(" "));
    }
    if let Some(log) = &command.log_file {
        let _ = writeln!(out, "engine log: {}", log.display());
    }
    let _ = writeln!(out, "command: {}", command.display_with_env());
    let _ = out.flush();
}

/// `up --dry-run` in attach mode: nothing to launch.
pub fn dry_run_attach(url: &url::Url) {
    stdout_line(&format!("attach to {url}: nothing to launch"));
}
