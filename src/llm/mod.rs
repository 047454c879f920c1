//! The OpenAI-compatible streaming client: typed requests in, typed [`ChatEvent`]s out, over HTTP SSE.
//!
//! Written against vLLM's contract (`shared/reference/vllm-contract.md` §2-§4) and tolerant of llama.cpp's and
//! Ollama's differences (null content deltas, a finish chunk of its own, no `/health`, extra fields).
//!
//! - [`client`]: [`LlmClient`], the HTTP calls and the checks made before streaming.
//! - [`sse`]: [`ChatStream`], any SSE byte stream to events; `[DONE]` ends it, a cut-off body is an error.
//! - [`types`]: request, event and error-body types, and the minimal wire types decoded per chunk.
//! - [`error`]: [`LlmError`], its stable codes and user-facing messages.
//! - [`think`]: removal of `<think>` blocks, streamed ([`ThinkFilter`]) and final ([`clean_reply`]).

// `LlmError::Status` is 136 bytes (the raw body plus the parsed `ApiError`, fields fixed by the module's API),
// just over clippy's 128-byte default. Errors here are the cold path; boxing would cost every caller a `Box`.
#![allow(clippy::result_large_err)]

pub mod client;
pub mod error;
pub mod sse;
pub mod think;
pub mod types;

#[cfg(test)]
mod client_tests;
#[cfg(test)]
mod sse_tests;

pub use client::{LlmClient, PROBE_TIMEOUT, TokenCount};
pub use error::{ClientError, LlmError, LlmErrorKind};
pub use sse::ChatStream;
pub use think::{ThinkFilter, clean_reply};
pub use types::{
    ApiError, ChatEvent, ChatMessage, CompletionRequest, ContentPart, ImageUrlRef, MessageContent, Messages, ModelInfo,
    Role, Usage, request_body,
};
