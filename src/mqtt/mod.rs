//! MQTT side of the service (the wire itself, topics and payloads, is the `mqtt-llm-protocol` crate).
//!
//! - [`eventloop`]: the actor that owns the `rumqttc` event loop (connect, re-subscribe, classify, reconnect).
//! - [`client`]: the publishing handle over MQTT 3.1.1 or 5.

pub mod client;
mod connection;
pub mod eventloop;
pub mod publisher;
