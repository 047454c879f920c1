//! The embedded MQTT broker: `mqtt-llm up` without `--broker` runs one in-process and points the bridge at it.
//!
//! It wraps [rmqtt](https://crates.io/crates/rmqtt) 0.24 (chosen by test: `docs/embedded-broker.md`). rmqtt spawns
//! its tasks with `tokio::spawn` and has no shutdown of its own, so the broker runs on **its own Tokio runtime on
//! its own thread** (an actor that owns the broker's sockets): [`EmbeddedBroker::shutdown`] drops that runtime,
//! which closes the listeners and every client connection and ends every task rmqtt started, without touching the
//! caller's runtime. Each broker has its own `rmqtt` server context, so several run side by side in one process
//! (the tests do).
//!
//! - [`auth`]: the password file (mosquitto's `mosquitto_passwd` format) and its check.
//! - [`error`]: [`BrokerError`], one sentence per failure (a taken port names `--broker` and the listen flags).
//! - `hooks`: what we plug into rmqtt: in-memory retained messages, the password check, the message counters.

pub mod auth;
pub mod error;
#[cfg(feature = "embedded-broker")]
mod hooks;
#[cfg(feature = "embedded-broker")]
mod server;
#[cfg(not(feature = "embedded-broker"))]
mod stub;

#[cfg(feature = "embedded-broker")]
pub use server::EmbeddedBroker;
#[cfg(not(feature = "embedded-broker"))]
pub use stub::EmbeddedBroker;

use std::net::SocketAddr;
use std::path::PathBuf;

pub use auth::{Credentials, CredentialsError};
pub use error::{BrokerError, ListenerKind};

/// `--mqtt-listen`'s default.
pub const DEFAULT_TCP_LISTEN: SocketAddr =
    SocketAddr::V4(std::net::SocketAddrV4::new(std::net::Ipv4Addr::UNSPECIFIED, 1883));
/// `--mqtt-ws-listen`'s default.
pub const DEFAULT_WS_LISTEN: SocketAddr =
    SocketAddr::V4(std::net::SocketAddrV4::new(std::net::Ipv4Addr::UNSPECIFIED, 9001));
/// The path WebSocket clients use. rmqtt does not check the request path: any path upgrades, this one included.
pub const WS_PATH: &str = "/mqtt";
/// The largest MQTT packet accepted by default (rmqtt's default too).
pub const DEFAULT_MAX_PACKET_SIZE: u32 = 1024 * 1024;
/// The user name of the bridge's own account when users are checked (`--broker-auth`).
pub const BRIDGE_USER: &str = "mqtt-llm-bridge";

/// PEM files for TLS on the TCP listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain, leaf first.
    pub cert: PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// What the embedded broker listens on and whom it lets in.
#[derive(Debug, Clone)]
pub struct BrokerSettings {
    /// MQTT over TCP (`--mqtt-listen`); `None`: off. With [`BrokerSettings::tls`] this listener speaks TLS only.
    pub tcp: Option<SocketAddr>,
    /// MQTT over WebSocket, subprotocol `mqtt`, path [`WS_PATH`] (`--mqtt-ws-listen`); `None`: off. Always plain
    /// `ws://` (no TLS).
    pub ws: Option<SocketAddr>,
    /// TLS for the TCP listener (`--mqtt-tls-cert`, `--mqtt-tls-key`).
    pub tls: Option<TlsFiles>,
    /// Users and password hashes (`--broker-auth`, `MQTT_LLM_BROKER_AUTH`); `None`: anyone may connect.
    pub auth: Option<Credentials>,
    /// The largest MQTT packet accepted, both ways (`--max-packet-size`).
    pub max_packet_size: u32,
}

impl Default for BrokerSettings {
    fn default() -> Self {
        Self {
            tcp: Some(DEFAULT_TCP_LISTEN),
            ws: Some(DEFAULT_WS_LISTEN),
            tls: None,
            auth: None,
            max_packet_size: DEFAULT_MAX_PACKET_SIZE,
        }
    }
}

/// A snapshot of the broker's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BrokerStats {
    /// Client connections open now.
    pub clients_connected: i64,
    /// Sessions held now, including persistent sessions whose client is offline.
    pub sessions: i64,
    /// Subscriptions (client, topic filter) held now.
    pub subscriptions: i64,
    /// Retained messages held now.
    pub retained: i64,
    /// PUBLISH packets received from clients since start (wills included).
    pub messages_received: u64,
    /// Messages delivered to subscribers since start.
    pub messages_sent: u64,
}
