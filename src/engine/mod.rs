//! The engine: the `vllm serve` child process mqtt-llm launches and supervises, or a server it attaches to.
//!
//! - [`command`]: the pure `LaunchConfig → argv/env` function;
//! - [`alias`]: model aliases and vision-model detection (pure);
//! - [`locate`]: which `vllm` to launch (flag, virtualenv, PATH);
//! - [`state`]: [`EngineState`] and its pure transitions;
//! - [`task`]: the actor that owns the child (its own process group), probes `/health` and stops it;
//! - [`logs`]: the engine's output into tracing, the tail kept for diagnosis, the rotated engine log file;
//! - [`progress`]: start-up phases read from the engine's log lines (pure parser);
//! - [`diagnose`]: why a start failed and what to do, from the last lines (pure);
//! - [`guard`]: the process between mqtt-llm and the engine that takes the engine down if mqtt-llm dies;
//! - [`restart`]: the restart back-off and give-up policy;
//! - [`settings`]: what the engine runs with (launch or attach, the command line's inputs, GPUs, timings, where
//!   vLLM is installed), built by `config`;
//! - [`activity`]: the requests' progress, reported by the bridge, for hang detection.

pub mod activity;
pub mod alias;
pub mod command;
pub mod diagnose;
pub mod guard;
pub mod locate;
pub mod logs;
pub mod progress;
pub mod restart;
pub mod settings;
pub mod state;
pub mod task;

pub use activity::Activity;
pub use restart::RestartPolicy;
pub use settings::{EngineMode, EngineSettings, GpuPlacement, InstallSettings, LaunchSettings};
pub use state::EngineState;
pub use task::{EngineError, EngineHandle, spawn_engine};
