//! `vllm-sim`: a simulator of vLLM's `vllm serve` with the same CLI shape, HTTP endpoints, SSE
//! framing, error bodies and metric names (see `vllm-contract.md`), and a deterministic timing
//! model so that tests and benchmarks can run without a GPU.
//!
//! # Layout
//! - [`cli`]: clap definitions of `vllm-sim serve MODEL [options]` and the `--sim-*` knobs.
//! - [`argv`]: argv normalisation (`_`/`-`, `-tp`), argparse-style errors, `non-default args`.
//! - [`config`]: [`SimArgs`] parsed into the typed [`SimConfig`].
//! - [`tokenizer`]: the word/punctuation tokenizer, the ChatML template, the reverse vocabulary.
//! - [`cache`]: the prefix cache (chained block hashes, LRU), pure.
//! - [`reply`]: what the model says (`lorem` or `echo`), planned per request.
//! - [`scheduler`]: the engine core actor (waiting queue, running batch, steps, aborts).
//! - [`metrics`]: engine statistics and their Prometheus exposition.
//! - [`pyfmt`]: how Python prints values (`repr` of floats and strings, `True`, `65,536`).
//! - [`openai`]: request and response wire types; [`sse`]: hand-written stream chunks;
//!   [`errors`]: the HTTP error bodies ([`errors::ApiError`]).
//! - [`app`]: [`app::AppState`] and the checks every JSON endpoint makes; [`http`]: the router
//!   and the small endpoints; [`chat`]: `/v1/chat/completions` (both over [`app`], neither over
//!   the other: [`http`] only routes to [`chat`]).
//! - [`server`]: the lifecycle (bind, start-up, listen, serve, drain, engine death); `startup`:
//!   the start-up phases and their lines; [`log`]: vLLM-style lines.
//! - [`engine_core`]: the `EngineCore` child process (`vllm-sim __engine-core`);
//!   [`failure`]: vLLM's error lines (Python tracebacks: start-up and runtime).
//! - [`error`]: [`SimError`], what [`SimServer`] and [`run`] fail with (a bad configuration, a
//!   socket or process step that failed, with its I/O error), and [`SimExit`], the failures vLLM
//!   itself shows, which decide the exit status ([`SimError::exit_code`]). The binary alone turns
//!   them into output and an exit code.
//!
//! # Processes and failures (contract §7)
//! Like `vllm serve` with tp=1, the binary runs as two processes in one process group: the API
//! server and its `EngineCore` child, whose lines carry `(EngineCore pid=<child pid>)`. SIGTERM
//! after start-up drains, then kills the child (`[shutdown] Process manager: force killing
//! remaining process EngineCore pid N`) and exits 0; SIGTERM during start-up terminates the child
//! and exits 130 (`KeyboardInterrupt: terminated`); a SIGKILLed API server leaves the child
//! orphaned (no parent-death watchdog, as in vLLM) until its group is killed or
//! `--sim-engine-core-max-lifetime-s` (default 3600) runs out. The `--sim-*` fault knobs:
//! - `--sim-crash-after-requests N`: the EngineCore dies once request N has its first token
//!   (see [`server`] for what clients, `/health` and the exit status show; exit 1 ~100 ms later).
//! - `--sim-hang-after-requests N`: the engine stops stepping after admitting request N;
//!   `/health` stays 200 and the metrics freeze.
//! - `--sim-fail-start oom|model-not-found|port-in-use`: vLLM's start-up failures, exit 1; a port
//!   that is really taken fails exactly like `port-in-use`.
//!
//! # Library use
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use vllm_sim::{Invocation, SimConfig, SimServer, parse_argv};
//! let Invocation::Serve { args, non_default } = parse_argv(["vllm-sim", "serve", "m", "--port", "0"])? else {
//!     unreachable!()
//! };
//! let server = SimServer::bind(SimConfig::from_args(&args)?, &non_default).await?;
//! let addr = server.local_addr(); // bound, but refusing connections until `run` is ready
//! server.run(std::future::pending()).await?;
//! # Ok(()) }
//! ```

pub mod app;
pub mod argv;
pub mod cache;
pub mod chat;
pub mod cli;
pub mod config;
pub mod engine_core;
pub mod error;
pub mod errors;
pub mod failure;
pub mod http;
pub mod log;
pub mod metrics;
pub mod openai;
pub mod pyfmt;
pub mod reply;
pub mod scheduler;
pub mod server;
pub mod sse;
mod startup;
pub mod tokenizer;

use std::future::Future;

pub use argv::{CliError, Invocation, parse_argv};
pub use cli::{FailStart, ReplyMode, SimArgs, VLLM_VERSION};
pub use config::SimConfig;
pub use error::{SimError, SimExit};
pub use server::SimServer;

/// Run a simulator from parsed arguments until `shutdown` resolves (then drain and return).
pub async fn run(args: SimArgs, shutdown: impl Future<Output = ()> + Send) -> Result<(), SimError> {
    let config = SimConfig::from_args(&args)?;
    SimServer::bind(config, "{}").await?.run(shutdown).await
}
