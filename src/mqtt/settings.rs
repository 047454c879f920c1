//! The MQTT connection's settings: broker, credentials, protocol version, client id, packet size, the projects
//! subscribed, keep-alive and reconnect back-off. `config` builds them; the event loop reads them.

use std::path::PathBuf;
use std::time::Duration;

use mqtt_llm_client::tls::ClientIdentity;
use mqtt_llm_protocol::topics::ProjectName;

use super::legacy_status::LegacyStatusSettings;
use crate::secret::Secret;

pub const DEFAULT_RECONNECT_MIN: Duration = Duration::from_millis(200);
/// The longest reconnect delay before jitter (which adds up to as much again): a broker that comes back is
/// reached again within 1.6 s, however long it was away. A refused or failed connection attempt every second
/// or so costs a broker nothing worth saving, and every reply waits while mqtt-llm is away.
pub const DEFAULT_RECONNECT_MAX: Duration = Duration::from_millis(800);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MqttVersion {
    V311,
    V5,
}

#[derive(Debug, Clone)]
pub struct MqttSettings {
    pub host: String,
    pub port: u16,
    pub tls: bool,
    /// CA certificates (PEM) for TLS; `None`: the system's.
    pub ca_file: Option<PathBuf>,
    /// The certificate and key presented for mutual TLS (`--mqtt-client-cert`, `--mqtt-client-key`), loaded.
    pub client_identity: Option<ClientIdentity>,
    pub username: Option<String>,
    /// Never printed (its `Debug` is `***`); sent only in the CONNECT packet.
    pub password: Option<Secret>,
    pub version: MqttVersion,
    pub client_id: String,
    pub keep_alive: Duration,
    /// Largest packet we send or accept.
    pub max_packet_size: u32,
    pub projects: Vec<ProjectName>,
    /// The state projects among `projects` (`[projects.NAME] state_topic`): `{p}/state` is subscribed too.
    pub state_projects: Vec<ProjectName>,
    /// `{--status-prefix}/status`: the retained online/offline status and the Last Will.
    pub status_topic: String,
    /// The successor's liveness on `{first project}/status` (`--legacy-status`); `None` when turned off.
    pub legacy_status: Option<LegacyStatusSettings>,
    /// Reconnect back-off bounds.
    pub reconnect_min: Duration,
    pub reconnect_max: Duration,
}
