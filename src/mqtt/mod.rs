//! MQTT side of the service (the wire itself, topics and payloads, is the `mqtt-llm-protocol` crate).
//!
//! - [`eventloop`]: the actor that owns the `rumqttc` event loop (connect, re-subscribe, classify, reconnect).
//! - [`client`]: the publishing handle over MQTT 3.1.1 or 5.
//! - [`settings`]: the connection's settings ([`MqttSettings`]), built by `config`.

pub mod client;
pub mod eventloop;
pub mod settings;

pub use settings::{MqttSettings, MqttVersion};
