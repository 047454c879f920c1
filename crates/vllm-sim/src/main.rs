//! `vllm-sim`: a stand-in for `vllm serve` (see the [`vllm_sim`] library).
//!
//! Exit statuses: 0 after a SIGTERM/SIGINT shutdown, 2 for a bad command line (argparse), 1 for a
//! failed start (`--sim-fail-start`, a taken port, an EngineCore that died while starting) or an
//! engine core that died at runtime, 130 for SIGTERM/SIGINT during start-up. The hidden
//! `__engine-core` subcommand is the EngineCore child process (see [`vllm_sim::engine_core`]).

use std::io::Write;
use std::process::ExitCode;

use tokio::signal::unix::{SignalKind, signal};
use vllm_sim::{Invocation, SimConfig, SimError, SimExit, SimServer, engine_core, log, parse_argv};

/// What stops the binary: the simulator's own errors, or the process set-up around it.
#[derive(Debug, thiserror::Error)]
enum MainError {
    #[error(transparent)]
    Sim(#[from] SimError),
    /// Installing the signal handlers or finding our own executable.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

fn main() -> ExitCode {
    let (args, non_default) = match parse_argv(std::env::args_os()) {
        Ok(Invocation::Serve { args, non_default }) => (args, non_default),
        Ok(Invocation::Version) => {
            println!("{}", vllm_sim::VLLM_VERSION);
            return ExitCode::SUCCESS;
        }
        Ok(Invocation::EngineCore(core)) => return engine_core::child_main(&core),
        Err(err) => {
            if err.to_stdout {
                print!("{}", err.message);
                let _ = std::io::stdout().flush();
            } else {
                eprintln!("{}", err.message);
            }
            return ExitCode::from(err.exit_code);
        }
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            log::error(format_args!("cannot start the runtime: {err}"));
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        // Registered before anything else: a signal during start-up still shuts down cleanly,
        // and once registered a second signal is ignored rather than fatal.
        let shutdown = shutdown_signal()?;
        let mut config = SimConfig::from_args(&args).map_err(SimError::from)?;
        // The EngineCore child is this very program (`vllm-sim __engine-core`).
        config.engine_core_exe = Some(std::env::current_exe()?);
        SimServer::bind(config, &non_default).await?.run(shutdown).await?;
        Ok::<(), MainError>(())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(MainError::Sim(SimError::Exit(exit))) => {
            // Tracebacks are printed raw; the other exits were logged already.
            if let SimExit::Traceback(text) = &exit {
                log::stderr_raw(text);
            }
            ExitCode::from(exit.exit_code())
        }
        Err(err) => {
            log::error(format_args!("{}", chain(&err)));
            ExitCode::FAILURE
        }
    }
}

/// An error and its sources, `: `-separated (`listen: Address already in use (os error 98)`).
fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Resolves on the first SIGTERM or SIGINT.
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()> + Send> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}
