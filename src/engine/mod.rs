//! The engine: the `vllm serve` child process mqtt-llm launches and supervises, or a server it attaches to.
//!
//! - [`command`]: the pure `LaunchConfig → argv/env` function;
//! - [`llamacpp`]: llama.cpp as the launched engine (`--engine llamacpp`): the embedded launcher and its command;
//! - [`alias`]: model aliases and vision-model detection (pure);
//! - [`locate`]: which `vllm` to launch (flag, virtualenv, PATH);
//! - [`state`]: [`EngineState`] and its pure transitions;
//! - `handle`: [`spawn_engine`] and the [`EngineHandle`] others hold (its doc is the theory of operation);
//! - `actor`: the task that owns the child and its incarnations; `launch`: one launch (its own process group)
//!   and its stop; `health`: the `/health` probes, hang detection and attach mode;
//! - [`logs`]: the engine's output into tracing, the tail kept for diagnosis, the rotated engine log file;
//! - [`progress`]: start-up phases read from the engine's log lines (pure parser);
//! - [`diagnose`]: why a start failed and what to do, from the last lines (pure);
//! - [`guard`]: the process between mqtt-llm and the engine that takes the engine down if mqtt-llm dies;
//! - [`restart`]: the restart back-off and give-up policy;
//! - [`settings`]: what the engine runs with (launch or attach, the command line's inputs, GPUs, timings, where
//!   vLLM is installed), built by `config`;
//! - [`activity`]: the requests' progress, reported by the bridge, for hang detection.

pub mod activity;
mod actor;
pub mod alias;
pub mod command;
pub mod diagnose;
pub mod guard;
mod handle;
mod health;
mod launch;
pub mod llamacpp;
pub mod llamacpp_pins;
pub mod locate;
pub mod logs;
pub mod progress;
pub mod restart;
pub mod settings;
pub mod state;

pub use activity::Activity;
pub use handle::{Control, EngineError, EngineHandle, spawn_engine};
pub use health::{HEALTH_FAILURES_TO_RESTART, START_POLL};
pub use launch::check_executable;
pub use restart::RestartPolicy;
pub use settings::{
    EngineMode, EngineSettings, GpuPlacement, InstallSettings, LaunchSettings, LaunchedServer, LlamaCppSettings,
};
pub use state::EngineState;
