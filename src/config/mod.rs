//! Configuration, parsed rather than merely validated. Two layers:
//! - [`RawSettings`] (serde, `deny_unknown_fields`): every setting of `mqtt-llm up` as given, with the defaults of
//!   [`defaults`], in one section per subsystem ([`RawEngine`], [`RawInstall`], [`RawMqtt`], [`RawRequests`],
//!   [`RawOps`], [`RawGpu`]; nested tables in serde terms); the command line fills one (in the binary), tests and
//!   embedders build one directly;
//! - [`Config::from_raw`]: validates it into each subsystem's own typed settings ([`EngineSettings`],
//!   [`MqttSettings`], [`SessionSettings`], [`AdmissionSettings`], [`GpuSettings`]), the request path's [`BridgeConfig`]
//!   (which carries the admission and session settings) and the
//!   [`ProjectCatalog`] (built-in prompts and the optional TOML file). Errors ([`ConfigError`]) name the flag.
//!
//! `config` imports the subsystems' settings types and builds them; no subsystem imports `config` for its own
//! settings.

mod broker;
mod credentials;
pub mod defaults;
mod engine;
mod error;
mod projects;
mod raw;
mod service;
#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::time::Duration;

use crate::admission::AdmissionSettings;
use crate::engine::{EngineSettings, InstallSettings};
use crate::gpu::GpuSettings;
use crate::mqtt::MqttSettings;
use crate::observe::capacity::CapacitySettings;
use crate::session::SessionSettings;
use mqtt_llm_protocol::wire::WireLimits;

pub use defaults::*;
pub use engine::parse_gpus;
pub use error::{ConfigError, Problem};
pub use projects::{GENERAL, ProjectCatalog};
pub use raw::{
    RawEngine, RawEngineKind, RawGpu, RawInstall, RawMqtt, RawOps, RawRequests, RawSessionOwner, RawSettings,
};

/// Everything `mqtt-llm up` runs with.
#[derive(Debug, Clone)]
pub struct Config {
    pub engine: EngineSettings,
    /// Where vLLM is found or installed (launch mode).
    pub install: InstallSettings,
    pub mqtt: MqttSettings,
    pub bridge: BridgeConfig,
    pub projects: ProjectCatalog,
    /// Address of /livez, /readyz, /metrics.
    pub http_addr: SocketAddr,
    /// How long in-flight and queued requests may run after a shutdown signal.
    pub drain_timeout: Duration,
    pub gpu: GpuSettings,
    /// The capacity topic and the stats line.
    pub observe: ObserveSettings,
    /// Without `--broker`: the embedded broker to run (the bridge connects to it; `mqtt`'s host and port are set
    /// once it listens).
    pub embedded_broker: Option<crate::broker::BrokerSettings>,
}

/// What the service tells about itself besides `/metrics` (see [`crate::observe`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObserveSettings {
    pub capacity: CapacitySettings,
    /// `None`: no stats line.
    pub stats_interval: Option<Duration>,
}

/// Sampling used when a request does not say.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplingDefaults {
    pub temperature: f32,
    pub top_p: f32,
    pub max_tokens: u32,
}

/// The request path's settings.
#[derive(Debug, Clone)]
pub struct BridgeConfig {
    /// What admission lets through (capacity, lanes, the wait for a starting engine).
    pub admission: AdmissionSettings,
    /// The conversations' budget and lifetime.
    pub sessions: SessionSettings,
    /// Zero: one frame per engine chunk.
    pub stream_interval: Duration,
    pub defaults: SamplingDefaults,
    pub skip_thinking: bool,
    pub request_timeout: Duration,
    pub limits: WireLimits,
}

impl Config {
    /// Validate the raw settings (and read the TOML file they name) into the typed configuration.
    pub fn from_raw(raw: RawSettings) -> Result<Self, ConfigError> {
        let projects = match &raw.ops.config {
            Some(path) => ProjectCatalog::load(path)?,
            None => ProjectCatalog::builtin(),
        };
        let projects = projects.with_default_session_owner(service::session_owner(&raw.requests)?);
        let engine = engine::engine_settings(&raw.engine, raw.ops.drain_timeout, projects.uses_priorities())?;
        let mut mqtt = service::mqtt_settings(&raw.mqtt)?;
        mqtt.state_projects = projects.state_projects(&mqtt.projects);
        let session = service::session_settings(&raw.requests)?;
        let bridge = service::bridge_config(&raw.requests, mqtt.max_packet_size, session)?;
        Ok(Self {
            install: engine::install_settings(&raw.install, raw.engine.vllm_bin.clone()),
            engine,
            mqtt,
            bridge,
            projects,
            http_addr: raw.ops.http,
            drain_timeout: raw.ops.drain_timeout,
            gpu: service::gpu_settings(&raw.gpu),
            observe: service::observe_settings(&raw.mqtt, &raw.ops)?,
            embedded_broker: broker::embedded_broker(&raw.mqtt)?,
        })
    }
}
