//! The wire protocol of mqtt-llm, pure (no I/O): what clients publish and what they get back.
//!
//! # Layout
//! - [`topics`]: project names and session ids, the request/reply/stream topic formats, the validation of
//!   client-chosen reply topics.
//! - [`wire`]: request payloads parsed into a [`wire::ChatRequest`] or a [`wire::Rejection`] with its exact reply
//!   text; the JSON frames of the opt-in stream topic.
//! - [`broker`]: broker URLs (`mqtt://`, `mqtts://`).
//!
//! Shared by the service (`mqtt-llm up`) and the protocol client (`mqtt-llm chat`, `mqtt-llm bench`), so both
//! spell every topic and payload the same way.

pub mod broker;
pub mod topics;
pub mod wire;
