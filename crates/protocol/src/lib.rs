//! The wire protocol of mqtt-llm, pure (no I/O): what clients publish and what they get back.
//!
//! # Layout
//! - [`ids`]: the domain ids, project names and session ids (and the `--projects` list), with their
//!   [`ids::TopicError`].
//! - [`topics`]: the request/reply/stream topic formats built from those ids, the validation of client-chosen
//!   reply topics. It re-exports the ids, so `topics::{ProjectName, SessionId}` keeps working.
//! - [`wire`]: request payloads parsed into a [`wire::ChatRequest`] or a [`wire::Rejection`] with its exact reply
//!   text; the JSON frames of the opt-in stream topic.
//! - [`broker`]: broker URLs (`mqtt://`, `mqtts://`).
//!
//! Dependencies run one way: `wire` uses `topics`, `topics` uses `ids`, `broker` stands alone. Nothing here
//! opens a socket, a file or a clock; randomness is the only outside input (`SessionId::generate_default`).
//!
//! Shared by the service (`mqtt-llm up`) and the protocol client (`mqtt-llm chat`, `mqtt-llm bench`), so both
//! spell every topic and payload the same way.

pub mod broker;
pub mod ids;
pub mod topics;
pub mod wire;
