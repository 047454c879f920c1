//! mqtt-llm: serve a local LLM (vLLM) to many devices over MQTT.
//!
//! # Layout
//! - [`cli`]: clap definitions only, no logic.
//! - [`cmd`]: one module per subcommand; `cmd::output` is the only place that prints for humans.
//! - [`config`]: raw (serde/clap) configuration parsed into the typed [`config::Config`].
//! - [`app`]: the composition root: builds every component, runs until shutdown, drains.
//! - [`engine`]: the engine actor that owns the `vllm serve` child process (or attaches to a URL).
//! - [`gpu`]: the GPUs through NVML (run-time loaded), the pre-launch memory check, and the sampler into metrics.
//! - [`mqtt`]: the MQTT event-loop actor, pure topic rules, wire payload types and the publisher.
//! - [`llm`]: the OpenAI-compatible streaming client (HTTP SSE to typed events).
//! - [`session`]: conversation history per `(project, sessionId)` and its trimming.
//! - [`admission`]: per-session lanes (ordering, bounded queues) and global capacity permits.
//! - [`bridge`]: the request pipeline: one accepted MQTT request to one engine call to one reply.
//! - [`http`]: `/livez`, `/readyz`, `/metrics`.
//! - [`metrics`]: every metric of the service, declared once.
//! - [`tls`]: the one rustls crypto provider (ring) used by every TLS client, and the `mqtts://` client settings.
//! - [`client`]: a client of the wire protocol (sessions, requests, frames, timings, protocol checks) for `chat`
//!   and `bench`.
//! - [`bench`]: the load generator's workloads, statistics, JSON report and plot.

pub mod admission;
pub mod app;
pub mod bridge;
pub mod config;
pub mod engine;
pub mod gpu;
pub mod http;
pub mod llm;
pub mod metrics;
pub mod mqtt;
pub mod session;
