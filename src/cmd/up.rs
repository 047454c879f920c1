//! `mqtt-llm up`: configuration → find (or install) the engine → app → wait for SIGINT/SIGTERM → drain.
//! `--dry-run` stops after printing the engine command. A failed start ends with a diagnosis and its exit code.

use std::path::PathBuf;
use std::process::ExitCode;

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

use super::output::{self, DryRunEngine};
use super::setup;
use crate::cli::UpArgs;
use mqtt_llm::app::{self, AppError};
use mqtt_llm::config::Config;
use mqtt_llm::engine::command::build_command;
use mqtt_llm::engine::diagnose::{DiagnosisKind, EngineExit, diagnose, diagnose_spawn};
use mqtt_llm::engine::locate::{self, venv_vllm};
use mqtt_llm::engine::{EngineError, EngineMode, InstallSettings, LaunchSettings, LaunchedServer};

/// Resolves on the first SIGINT or SIGTERM.
async fn shutdown_signal() {
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        tracing::error!("cannot install signal handlers; stop with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
}

/// The one sentence `up --no-bootstrap` ends with when there is no engine.
pub fn not_installed_message(venv: Option<&std::path::Path>) -> String {
    let venv = venv.map_or_else(String::new, |v| format!(", no {}", venv_vllm(v).display()));
    format!(
        "vLLM is not installed (no --vllm-bin{venv}, no vllm on PATH): run `mqtt-llm setup` to install it, pass \
         --vllm-bin PATH, or attach to a running server with --engine-url URL"
    )
}

/// Point `launch.vllm_bin` at the engine: found, or installed now (unless `--no-bootstrap` or `--dry-run`).
/// `Err` is the exit code to end with.
async fn prepare_engine(
    launch: &mut LaunchSettings,
    install: &InstallSettings,
    args: &UpArgs,
) -> Result<DryRunEngineOwned, ExitCode> {
    let path_var = std::env::var_os("PATH");
    if let Some(found) = locate::locate(
        install.vllm_bin.as_deref(),
        install.venv.as_deref(),
        path_var.as_deref(),
    ) {
        tracing::info!(program = %found.program.display(), source = %found.source, "engine found");
        launch.vllm_bin = found.program;
        return Ok(DryRunEngineOwned::Found(found.source));
    }
    if args.dry_run {
        if let Some(venv) = &install.venv {
            launch.vllm_bin = venv_vllm(venv);
        }
        return Ok(DryRunEngineOwned::NotFound(install.venv.clone()));
    }
    let Some(venv) = install.venv.as_ref().filter(|_| !args.no_bootstrap) else {
        output::failure(&not_installed_message(install.venv.as_deref()), &[]);
        return Err(ExitCode::from(2));
    };
    output::setup_step(&format!(
        "no vLLM found; installing it into {} first (what `mqtt-llm setup` does; --no-bootstrap skips this)",
        venv.display()
    ));
    match setup::install(install, false).await {
        Ok(vllm) => {
            launch.vllm_bin = vllm;
            Ok(DryRunEngineOwned::Found(locate::EngineSource::Venv))
        }
        Err(e) => {
            output::error_with_hint(&format!("cannot install vLLM: {e}"), e.hint());
            Err(ExitCode::FAILURE)
        }
    }
}

/// [`DryRunEngine`] without borrows, as [`prepare_engine`] finds it.
enum DryRunEngineOwned {
    Found(locate::EngineSource),
    /// Not installed; `up` would install it into this virtualenv (if there is one).
    NotFound(Option<PathBuf>),
    /// llama.cpp: the given Python runs the embedded launcher, written to this path at launch.
    LlamaCpp(PathBuf),
}

/// A free port on 127.0.0.1, for the command `--dry-run` shows (a launch picks its own).
fn free_port() -> u16 {
    std::net::TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .map_or(8000, |a| a.port())
}

fn print_dry_run(config: &Config, args: &UpArgs, engine: &DryRunEngineOwned) {
    let (launch, served) = match &config.engine.mode {
        EngineMode::Attach { url } => return output::dry_run_attach(url),
        EngineMode::Launch(launch) => (launch, config.engine.served_model_name.as_deref()),
    };
    let command = build_command(
        launch,
        launch.port.unwrap_or_else(free_port),
        served.unwrap_or(&launch.model),
    );
    let note = match args.model.as_deref().map(str::trim) {
        Some(typed) => (typed != launch.model).then(|| format!("{typed} resolves to {}", launch.model)),
        None => Some(format!("the built-in model, {}", launch.model)),
    };
    let engine = match engine {
        DryRunEngineOwned::Found(source) => DryRunEngine::Found(*source),
        DryRunEngineOwned::NotFound(Some(venv)) => DryRunEngine::WouldInstall { venv },
        DryRunEngineOwned::NotFound(None) => DryRunEngine::NotFound,
        DryRunEngineOwned::LlamaCpp(launcher) => DryRunEngine::LlamaCpp { launcher },
    };
    output::dry_run(&command, &engine, note.as_deref());
}

/// Whether `--mqtt-password` was given on the command line (rather than in `MQTT_LLM_MQTT_PASSWORD`): `argv`
/// before a literal `--` holds `--mqtt-password` or `--mqtt-password=...`.
pub fn password_on_command_line(argv: &[std::ffi::OsString]) -> bool {
    argv.iter()
        .map(|a| a.to_string_lossy())
        .take_while(|a| a != "--")
        .any(|a| a == "--mqtt-password" || a.starts_with("--mqtt-password="))
}

pub async fn run(args: &UpArgs) -> ExitCode {
    let mut config = match Config::from_raw(args.raw_settings()) {
        Ok(c) => c,
        Err(e) => {
            output::failure(&e.to_string(), &[]);
            return ExitCode::from(2);
        }
    };
    if password_on_command_line(&std::env::args_os().collect::<Vec<_>>()) {
        tracing::warn!(
            "--mqtt-password on the command line is visible to every local user (/proc/PID/cmdline, ps); \
             use --mqtt-password-file FILE (or MQTT_LLM_MQTT_PASSWORD)"
        );
    }
    let mut log_file = None;
    let mut engine = DryRunEngineOwned::Found(locate::EngineSource::Flag);
    if let EngineMode::Launch(launch) = &mut config.engine.mode {
        log_file = launch.engine_log.clone();
        engine = match &launch.server {
            // llama.cpp: its managed virtualenv installed first when a default points there (not for --dry-run).
            LaunchedServer::LlamaCpp(llama) => {
                if !args.dry_run
                    && let Err(code) = super::setup_llamacpp::prepare(
                        llama,
                        std::path::Path::new(&launch.model),
                        &config.install.python,
                        args.no_bootstrap,
                    )
                    .await
                {
                    return code;
                }
                DryRunEngineOwned::LlamaCpp(llama.launcher.clone())
            }
            LaunchedServer::Vllm => match prepare_engine(launch, &config.install, args).await {
                Ok(engine) => engine,
                Err(code) => return code,
            },
        };
    }
    if args.dry_run {
        print_dry_run(&config, args, &engine);
        return ExitCode::SUCCESS;
    }
    let (events_tx, mut events_rx) = mpsc::unbounded_channel();
    let printer = async move {
        while let Some(event) = events_rx.recv().await {
            output::app_event(&event);
            super::systemd::app_event(&event);
        }
    };
    let (result, ()) = tokio::join!(app::run(config, shutdown_signal(), events_tx), printer);
    exit_code(result, log_file.as_deref())
}

/// Report how `up` ended and choose its exit code: 0 after a clean shutdown, the diagnosis' code (2 for a
/// command line vLLM rejected) after a failed start, 1 otherwise.
fn exit_code(result: Result<(), AppError>, log_file: Option<&std::path::Path>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(AppError::Engine(EngineError::StartFailed { reason, tail })) => {
            let d = diagnose(&tail, EngineExit::from_reason(&reason));
            output::diagnosis(&d, &tail, log_file);
            ExitCode::from(d.exit_code)
        }
        Err(AppError::Engine(EngineError::Spawn { program, source })) => {
            let d = diagnose_spawn(&program, &source);
            output::diagnosis(&d, &[], None);
            ExitCode::from(d.exit_code)
        }
        Err(AppError::EngineDied { reason, tail }) => {
            let mut d = diagnose(&tail, EngineExit::from_reason(&reason));
            d.reason = match d.kind {
                DiagnosisKind::Unknown => format!("the engine died: {reason}"),
                _ => format!("the engine died: {}", d.reason),
            };
            output::diagnosis(&d, &tail, log_file);
            ExitCode::FAILURE
        }
        Err(e) => {
            output::failure(&e.to_string(), &[]);
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::password_on_command_line;

    #[test]
    fn a_password_flag_is_noticed_before_the_engine_args_only() {
        let argv = |words: &[&str]| -> Vec<std::ffi::OsString> { words.iter().map(Into::into).collect() };
        assert!(password_on_command_line(&argv(&[
            "mqtt-llm",
            "up",
            "--mqtt-password",
            "p"
        ])));
        assert!(password_on_command_line(&argv(&[
            "mqtt-llm",
            "up",
            "--mqtt-password=p"
        ])));
        assert!(!password_on_command_line(&argv(&[
            "mqtt-llm",
            "up",
            "--mqtt-password-file",
            "f"
        ])));
        assert!(!password_on_command_line(&argv(&[
            "mqtt-llm",
            "up",
            "--",
            "--mqtt-password",
            "p"
        ])));
        assert!(!password_on_command_line(&argv(&["mqtt-llm", "up"])));
    }
}
