//! mqtt-llm: serve a local LLM (vLLM) to many devices over MQTT. This library is the service; the `mqtt-llm`
//! binary (`src/main.rs`, with its `cli` clap definitions and one `cmd` module per subcommand) parses the command
//! line and drives it. The library cannot see the binary's modules.
//!
//! # Layout
//! - [`config`]: the raw settings ([`config::RawSettings`], in sections by subsystem; the defaults) validated by
//!   [`config::Config::from_raw`] into each subsystem's own settings type; errors name the flag.
//! - [`app`]: the composition root: builds every component, runs until shutdown, drains; [`app::run`] binds the
//!   HTTP address, [`app::run_on`] serves on a listener the caller holds.
//! - [`engine`]: the engine actor that owns the `vllm serve` child process (or attaches to a URL), and its
//!   settings ([`engine::EngineSettings`]).
//! - [`gpu`]: the GPUs through NVML (run-time loaded), the pre-launch memory check, and the sampler into metrics.
//! - [`mqtt`]: the MQTT event-loop actor, the publisher, and the connection's settings ([`mqtt::MqttSettings`]).
//! - [`llm`]: the OpenAI-compatible streaming client (HTTP SSE to typed events).
//! - [`session`]: conversation history per `(project, sessionId)` and its trimming ([`session::SessionSettings`]).
//! - [`store`]: the on-disk conversation store (one redb file in the state directory): sessions and templates,
//!   written in fsync'd batches, read back at start.
//! - [`admission`]: per-session lanes (ordering, bounded queues) and global capacity permits.
//! - [`broker`]: the embedded MQTT broker (rmqtt on its own runtime) that `up` runs when no `--broker` is given:
//!   listeners (TCP or TLS, WebSocket), the password file, shutdown.
//! - [`bridge`]: the request pipeline: one accepted MQTT request to one engine call to one reply.
//! - [`observe`]: `/status`, the retained capacity topic and the stats line, read from one `Board`.
//! - [`http`]: `/livez`, `/readyz`, `/status`, `/metrics`.
//! - [`metrics`]: every metric of the service, declared once.
//! - [`secret`]: [`secret::Secret`], a string that never prints its value, and reading one from a file.
//!
//! The wire protocol (topics, payloads, broker URLs) is the `mqtt-llm-protocol` crate; the protocol client, the
//! bench's workloads and the TLS client settings are `mqtt-llm-client`.
//!
//! Dependencies point one way: `app` → `bridge` → `admission`, `session`, `mqtt`, `engine`, `llm`, `metrics`;
//! `config` → the subsystems whose settings it builds (`engine`, `mqtt`, `session`, `admission`, `gpu`); no subsystem imports
//! `config` for its own settings.

pub mod admission;
pub mod app;
pub mod bridge;
pub mod broker;
pub mod config;
pub mod engine;
pub mod gpu;
pub mod http;
pub mod llm;
pub mod metrics;
pub mod mqtt;
pub mod observe;
pub mod secret;
pub mod session;
pub mod store;
