//! What operators and devices are told about the running service, beside `/metrics`:
//!
//! - [`Board`]: the one place `/status`, the capacity topic and the stats line read from (engine, admission, GPUs,
//!   the broker), filled in as the components start;
//! - [`capacity`]: the retained `{prefix}/capacity` topic, so that devices can back off before publishing;
//! - [`stats`]: the original server's 60-second stats line and its queue warning.

pub mod capacity;
pub mod stats;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::SystemTime;

use serde::Serialize;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::admission::{Admission, Load};
use crate::engine::{EngineHandle, EngineState};
use crate::gpu::GpuMonitor;
use crate::metrics::{self, TotalsSnapshot};

/// The embedded broker's figures at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BrokerFigures {
    /// Clients connected now.
    pub clients: usize,
    /// Subscriptions held now.
    pub subscriptions: usize,
    /// Messages published to the broker so far.
    pub messages_in: u64,
    /// Messages the broker delivered so far.
    pub messages_out: u64,
}

/// Reads the embedded broker's figures.
pub type BrokerProbe = Arc<dyn Fn() -> BrokerFigures + Send + Sync>;

/// Which broker the bridge uses.
#[derive(Clone)]
pub enum BrokerView {
    /// `--broker URL` (shown without credentials).
    External { url: String },
    /// The in-process broker and where it listens.
    Embedded {
        tcp: Option<SocketAddr>,
        ws: Option<SocketAddr>,
        probe: BrokerProbe,
    },
}

impl std::fmt::Debug for BrokerView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::External { url } => f.debug_struct("External").field("url", url).finish(),
            Self::Embedded { tcp, ws, .. } => f.debug_struct("Embedded").field("tcp", tcp).field("ws", ws).finish(),
        }
    }
}

/// Cloneable handle on what the service knows about itself.
#[derive(Debug, Clone)]
pub struct Board {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    since: SystemTime,
    started: Instant,
    version: &'static str,
    projects: Vec<String>,
    /// The served model: the configured name until the engine tells its own.
    model: Mutex<Option<String>>,
    engine: EngineHandle,
    /// Whether the engine is launched by us (restarts are counted) or attached.
    launched: bool,
    mqtt_ready: watch::Receiver<bool>,
    admission: OnceLock<Admission>,
    gpus: OnceLock<GpuMonitor>,
    broker: OnceLock<BrokerView>,
}

/// What [`Board::new`] needs.
#[derive(Debug)]
pub struct BoardParts {
    pub projects: Vec<String>,
    /// The model name known before the engine answers (`--served-model-name` or `--model`), if any.
    pub model: Option<String>,
    pub engine: EngineHandle,
    pub launched: bool,
    pub mqtt_ready: watch::Receiver<bool>,
}

impl Board {
    pub fn new(parts: BoardParts) -> Self {
        Self {
            inner: Arc::new(Inner {
                since: SystemTime::now(),
                started: Instant::now(),
                version: env!("CARGO_PKG_VERSION"),
                projects: parts.projects,
                model: Mutex::new(parts.model),
                engine: parts.engine,
                launched: parts.launched,
                mqtt_ready: parts.mqtt_ready,
                admission: OnceLock::new(),
                gpus: OnceLock::new(),
                broker: OnceLock::new(),
            }),
        }
    }

    /// The engine named its model.
    pub fn set_model(&self, model: &str) {
        if let Ok(mut m) = self.inner.model.lock() {
            *m = Some(model.to_owned());
        }
    }

    /// Admission exists (once the engine is ready and the bridge built).
    pub fn set_admission(&self, admission: Admission) {
        let _ = self.inner.admission.set(admission);
    }

    pub fn set_gpus(&self, gpus: GpuMonitor) {
        let _ = self.inner.gpus.set(gpus);
    }

    pub fn set_broker(&self, broker: BrokerView) {
        let _ = self.inner.broker.set(broker);
    }

    pub fn engine_state(&self) -> EngineState {
        self.inner.engine.state()
    }

    pub fn subscribe_engine(&self) -> watch::Receiver<EngineState> {
        self.inner.engine.subscribe()
    }

    /// Admission's load; `None` before the bridge exists (the engine has not been ready yet).
    pub fn load(&self) -> Option<Load> {
        self.inner.admission.get().map(Admission::load)
    }

    /// The embedded broker's figures, when there is one.
    pub fn broker_figures(&self) -> Option<BrokerFigures> {
        match self.inner.broker.get()? {
            BrokerView::Embedded { probe, .. } => Some(probe()),
            BrokerView::External { .. } => None,
        }
    }

    /// When a refused client should retry (admission's drain estimate); `None` before the bridge exists.
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        self.inner.admission.get().map(Admission::retry_after)
    }

    /// `/readyz`'s broker component: `{"mode":"embedded","clients":N}` or `{"mode":"external"}`.
    pub fn broker_summary(&self) -> serde_json::Value {
        match self.inner.broker.get() {
            Some(BrokerView::Embedded { probe, .. }) => {
                serde_json::json!({"mode": "embedded", "clients": probe().clients})
            }
            Some(BrokerView::External { .. }) => serde_json::json!({"mode": "external"}),
            None => serde_json::json!({"mode": "unknown"}),
        }
    }

    /// Whether a request published now would be accepted (as far as the service can tell): the bridge is up and
    /// not draining, admission has room, MQTT is subscribed, and the engine is ready or coming back (a request
    /// waits `--engine-wait` for a restarting engine).
    pub fn accepting(&self) -> bool {
        let engine_ok = matches!(
            self.engine_state(),
            EngineState::Ready | EngineState::Starting | EngineState::Unhealthy { .. } | EngineState::Restarting { .. }
        );
        let room = self.load().is_some_and(|l| l.has_room());
        engine_ok && room && *self.inner.mqtt_ready.borrow()
    }

    /// The body of `GET /status`.
    pub fn status(&self) -> StatusReport {
        let i = &self.inner;
        let engine = i.engine.state();
        let reason = match &engine {
            EngineState::Unhealthy { reason } | EngineState::Failed { reason } => Some(reason.clone()),
            EngineState::Restarting { reason, .. } => Some(reason.clone()),
            _ => None,
        };
        let load = self.load();
        let totals = metrics::totals();
        let gpus = i.gpus.get().map(|g| g.status().gpus).unwrap_or_default();
        let broker = match i.broker.get() {
            Some(BrokerView::External { url }) => BrokerReport {
                mode: "external",
                url: Some(url.clone()),
                tcp: None,
                ws: None,
                figures: None,
            },
            Some(BrokerView::Embedded { tcp, ws, probe }) => BrokerReport {
                mode: "embedded",
                url: None,
                tcp: *tcp,
                ws: *ws,
                figures: Some(probe()),
            },
            None => BrokerReport {
                mode: "unknown",
                url: None,
                tcp: None,
                ws: None,
                figures: None,
            },
        };
        StatusReport {
            model: i.model.lock().ok().and_then(|m| m.clone()),
            projects: i.projects.clone(),
            version: i.version,
            since: humantime::format_rfc3339_seconds(i.since).to_string(),
            uptime_secs: i.started.elapsed().as_secs(),
            accepting_requests: self.accepting(),
            engine: EngineReport {
                state: engine.name(),
                reason,
                url: i.engine.base_url().to_string(),
                restarts: if i.launched {
                    i.engine.incarnation().saturating_sub(1)
                } else {
                    0
                },
            },
            mqtt: MqttReport {
                ready: *i.mqtt_ready.borrow(),
                broker,
            },
            queue: load.map(|l| QueueReport {
                depth: l.queued,
                max: l.max_queued,
                inflight: l.inflight,
                max_inflight: l.max_inflight,
                draining: l.draining,
            }),
            totals,
            gpus,
        }
    }
}

/// `GET /status`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusReport {
    pub model: Option<String>,
    pub projects: Vec<String>,
    pub version: &'static str,
    /// When the process started (RFC 3339).
    pub since: String,
    pub uptime_secs: u64,
    pub accepting_requests: bool,
    pub engine: EngineReport,
    pub mqtt: MqttReport,
    /// `null` until the engine has been ready once (the bridge starts then).
    pub queue: Option<QueueReport>,
    pub totals: TotalsSnapshot,
    /// The GPUs at the last sample (empty without NVML).
    pub gpus: Vec<crate::gpu::GpuReading>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EngineReport {
    pub state: &'static str,
    pub reason: Option<String>,
    pub url: String,
    /// Restarts of a launched engine since start.
    pub restarts: u64,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MqttReport {
    /// Connected and subscribed.
    pub ready: bool,
    pub broker: BrokerReport,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BrokerReport {
    /// `embedded` or `external`.
    pub mode: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcp: Option<SocketAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ws: Option<SocketAddr>,
    /// The embedded broker's clients, subscriptions and messages.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub figures: Option<BrokerFigures>,
}

#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct QueueReport {
    pub depth: usize,
    pub max: usize,
    pub inflight: usize,
    pub max_inflight: usize,
    pub draining: bool,
}
