//! The JSON frames of the opt-in stream topic.

use serde::{Deserialize, Serialize};

/// One partial-token frame on the stream topic: `{"requestId":"r1","seq":3,"delta":"hi"}`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DeltaFrame {
    pub request_id: String,
    /// Starts at 0 and grows by one per frame of the request, whatever its kind.
    pub seq: u64,
    pub delta: String,
}

/// The last frame of a successful stream.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DoneFrame {
    pub request_id: String,
    pub seq: u64,
    /// Always true: lets clients recognise the end without knowing the other fields.
    pub done: bool,
    pub finish_reason: String,
    pub usage: FrameUsage,
    /// Time to first token, milliseconds.
    pub ttft_ms: u64,
    pub total_ms: u64,
}

/// Token counts of a finished request.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FrameUsage {
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    /// Prompt tokens served from the engine's prefix cache.
    pub cached_tokens: u32,
}

/// The last frame of a failed stream.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ErrorFrame {
    pub request_id: String,
    pub seq: u64,
    pub error: FrameError,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FrameError {
    /// Stable snake_case code.
    pub code: String,
    pub message: String,
    /// For overload refusals: when to retry, in milliseconds (from the server's current drain rate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
}

/// Client-side view used by tests and tools: parse any frame. Variant order matters for `untagged`: a done frame
/// needs `done`, an error frame `error`, a delta frame `delta`, and none has another's required field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum StreamFrame {
    Done(DoneFrame),
    Error(ErrorFrame),
    Delta(DeltaFrame),
}

impl StreamFrame {
    pub fn request_id(&self) -> &str {
        match self {
            Self::Done(f) => &f.request_id,
            Self::Error(f) => &f.request_id,
            Self::Delta(f) => &f.request_id,
        }
    }

    pub fn seq(&self) -> u64 {
        match self {
            Self::Done(f) => f.seq,
            Self::Error(f) => f.seq,
            Self::Delta(f) => f.seq,
        }
    }

    /// Done and error frames end a stream.
    pub fn is_last(&self) -> bool {
        match self {
            Self::Done(_) | Self::Error(_) => true,
            Self::Delta(_) => false,
        }
    }
}
