//! The `mqtt-llm` binary: parse the command line, set up logging, dispatch, map the outcome to an exit code.

use std::process::ExitCode;

mod cli;
mod cmd;

use cli::{Cli, Command, LogFormat};
use tracing_subscriber::EnvFilter;

fn init_tracing(format: LogFormat, filter: &str) {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() -> ExitCode {
    // The same binary is the engine guard (see `engine::guard`).
    if let Some(code) = mqtt_llm::engine::guard::run_if_guard() {
        return code;
    }
    let cli = Cli::parse_checked();
    init_tracing(cli.log_format, &cli.log);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        match &cli.command {
            Command::Up(args) => cmd::up::run(args).await,
            Command::Setup(args) => cmd::setup::run(args).await,
            Command::Gpus(args) => cmd::gpus::run(args).await,
            Command::Chat(args) => cmd::chat::run(args).await,
            Command::Bench(args) => cmd::bench::run(args).await,
        }
    })
}
