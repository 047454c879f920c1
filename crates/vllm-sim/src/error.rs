//! The simulator's errors: [`SimError`], everything [`SimServer`](crate::SimServer) and
//! [`run`](crate::run) can fail with, and [`SimExit`], the failures that vLLM itself would show
//! (a Python traceback, a dead engine, an interrupted start-up) and that decide the exit status.

use std::io;
use std::net::SocketAddr;

use crate::config::ConfigError;

/// Why a simulator could not start or stopped with a failure.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The arguments do not make a valid configuration (vLLM's `ValueError` text).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A failure in vLLM's own words; see [`SimExit::exit_code`].
    #[error(transparent)]
    Exit(#[from] SimExit),
    /// `--host` could not be resolved.
    #[error("cannot resolve --host {host}")]
    Resolve {
        host: String,
        #[source]
        source: io::Error,
    },
    /// `--host` resolved to no address at all.
    #[error("no address for --host {host}")]
    NoAddress { host: String },
    /// Creating, configuring or listening on the API server's socket (`op` names the step).
    #[error("{op}")]
    Socket {
        op: &'static str,
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    /// The EngineCore child process could not be started.
    #[error("cannot start the EngineCore process")]
    EngineCoreSpawn(#[source] io::Error),
    /// The HTTP server stopped with an I/O error.
    #[error("HTTP server")]
    Http(#[source] io::Error),
}

impl SimError {
    /// The process exit status: [`SimExit::exit_code`] for those, 1 for everything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            SimError::Exit(exit) => exit.exit_code(),
            _ => 1,
        }
    }
}

/// Why the simulator stopped with a failure; `main` turns it into the exit code.
#[derive(Debug, thiserror::Error)]
pub enum SimExit {
    /// An uncaught Python exception: `main` prints the traceback on stderr and exits 1.
    #[error("{0}")]
    Traceback(String),
    /// The engine core died at runtime; everything was logged already. Exit 1.
    #[error("the engine core died")]
    EngineDied,
    /// SIGTERM/SIGINT during start-up: vLLM dies of the re-raised `KeyboardInterrupt`
    /// (shell status 130). The traceback was printed already. Exit 130.
    #[error("interrupted during start-up")]
    Interrupted,
}

impl SimExit {
    /// The process exit status.
    pub fn exit_code(&self) -> u8 {
        match self {
            SimExit::Traceback(_) | SimExit::EngineDied => 1,
            SimExit::Interrupted => 130,
        }
    }
}
