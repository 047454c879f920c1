//! MQTT side of the service (the wire itself, topics and payloads, is the `mqtt-llm-protocol` crate).
//!
//! - [`eventloop`]: the actor that owns the `rumqttc` event loop (connect, re-subscribe, classify, reconnect);
//!   [`spawn_mqtt`](eventloop::spawn_mqtt) returns its handle and the [`Publisher`](publisher::Publisher).
//! - `connection`: what differs between MQTT 3.1.1 and 5 (polling, classifying, subscribing), and the final
//!   replies held across a broken connection.
//! - [`publisher`]: the one way a reply, an error text or a stream frame leaves the service.
//! - [`client`]: the raw publishing handle over MQTT 3.1.1 or 5, and the typed MQTT errors.
//! - [`settings`]: the connection's settings ([`MqttSettings`]), built by `config`.
//! - [`status`]: the retained online/offline status ([`Presence`](status::Presence)) and its Last Will.
//! - [`legacy_status`]: the successor server's heartbeat on `{first project}/status`.

pub mod client;
mod connection;
pub mod eventloop;
pub mod legacy_status;
pub mod publisher;
pub mod settings;
pub mod status;

pub use settings::{MqttSettings, MqttVersion};
