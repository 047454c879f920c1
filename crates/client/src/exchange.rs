//! What one request asks for and everything observed about it: the request payload, the outcome, the frames and
//! timings, and the protocol breaches the client can see.

use std::time::Duration;

use serde::Serialize;

use mqtt_llm_protocol::wire::StreamFrame;

/// A breach of the wire protocol seen by the client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Violation {
    /// A message on a topic (or for a request id) that is not one of ours.
    ForeignTopic { topic: String },
    /// More than one final reply for one request.
    DuplicateReply { request_id: String },
    /// A stream frame after the request's final reply.
    FrameAfterReply { request_id: String },
    /// Frames not in `seq` order from 0, or after the last frame.
    FrameOutOfOrder {
        request_id: String,
        expected: u64,
        got: u64,
    },
    /// A payload on a stream topic that is no stream frame.
    MalformedFrame { topic: String },
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::ForeignTopic { topic } => write!(f, "message on a foreign topic or for an unknown request: {topic}"),
            Self::DuplicateReply { request_id } => write!(f, "more than one final reply for request {request_id}"),
            Self::FrameAfterReply { request_id } => write!(f, "stream frame after the final reply of {request_id}"),
            Self::FrameOutOfOrder {
                request_id,
                expected,
                got,
            } => write!(
                f,
                "frame of {request_id} out of order: expected seq {expected}, got {got}"
            ),
            Self::MalformedFrame { topic } => write!(f, "not a stream frame on {topic}"),
        }
    }
}

/// What a request asks for (the optional fields are omitted from the payload when `None`).
#[derive(Debug, Clone, Default)]
pub struct RequestSpec {
    pub message: String,
    pub stream: bool,
    pub temperature: Option<f32>,
    pub max_tokens: Option<u32>,
    pub system_prompt: Option<String>,
}

/// How a request ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    /// An `Error:` reply; `code` from the error frame when streaming, else from the reply text.
    Error {
        code: String,
        message: String,
    },
    Timeout,
}

/// Everything observed about one request.
#[derive(Debug, Clone)]
pub struct Exchange {
    pub request_id: String,
    /// Stream frames in arrival order, with the time since the request was published.
    pub frames: Vec<(Duration, StreamFrame)>,
    /// The final plain-text reply (None on timeout).
    pub reply: Option<String>,
    /// Time to the first delta frame (streaming only).
    pub ttft: Option<Duration>,
    /// Time to the final reply.
    pub e2e: Option<Duration>,
    pub outcome: Outcome,
    /// Per-request protocol breaches (frame order); the client-wide ones are in [`Client::violations`](crate::Client::violations).
    pub violations: Vec<Violation>,
}

impl Exchange {
    /// Gaps between consecutive delta frames.
    pub fn inter_token_gaps(&self) -> Vec<Duration> {
        let deltas: Vec<Duration> = self
            .frames
            .iter()
            .filter(|(_, f)| matches!(f, StreamFrame::Delta(_)))
            .map(|(t, _)| *t)
            .collect();
        deltas.windows(2).map(|w| w[1].saturating_sub(w[0])).collect()
    }

    /// The done frame's usage, when there is one.
    pub fn usage(&self) -> Option<&mqtt_llm_protocol::wire::FrameUsage> {
        self.frames.iter().find_map(|(_, f)| match f {
            StreamFrame::Done(d) => Some(&d.usage),
            _ => None,
        })
    }
}

/// The stable error code of an `Error:` reply text (`docs/protocol.md`, *Errors*).
pub fn error_code_of(text: &str) -> &'static str {
    const CODES: &[(&str, &str)] = &[
        ("Error: request too large", "too_large"),
        ("Error: missing 'message'", "missing_message"),
        ("Error: 'message' is empty", "empty_message"),
        ("Error: invalid sessionId", "invalid_session_id"),
        ("Error: invalid '", "invalid_param"),
        ("Error: Server is overloaded", "overloaded"),
        ("Error: too many requests waiting", "session_queue_full"),
        ("Error: server is shutting down", "shutting_down"),
        ("Error: conversation is too long", "context_overflow"),
        ("Error: engine unavailable", "engine_unavailable"),
        ("Error: engine busy", "engine_busy"),
        ("Error: engine connection lost", "engine_disconnected"),
        ("Error: engine sent", "protocol_error"),
        ("Error: engine error", "engine_error"),
        ("Error: the engine did not answer", "timeout"),
        ("Error: No response generated", "empty_reply"),
    ];
    CODES
        .iter()
        .find(|(prefix, _)| text.starts_with(prefix))
        .map_or("error", |(_, code)| code)
}

/// The seed-compatible request payload.
pub(super) fn request_payload(
    project: &str,
    session: &str,
    client_id: &str,
    request_id: &str,
    spec: &RequestSpec,
) -> Vec<u8> {
    let mut body = serde_json::json!({
        "sessionId": session,
        "message": spec.message,
        "replyTopic": format!("{project}/assistant_response/{session}/{client_id}/{request_id}"),
        "clientId": client_id,
        "requestId": request_id,
        "stream": spec.stream,
        "streamTopic": format!("{project}/assistant_stream/{session}/{client_id}"),
    });
    if let Some(t) = spec.temperature {
        body["temperature"] = serde_json::json!(t);
    }
    if let Some(m) = spec.max_tokens {
        body["maxTokens"] = serde_json::json!(m);
    }
    if let Some(sp) = &spec.system_prompt {
        body["systemPrompt"] = serde_json::json!(sp);
    }
    body.to_string().into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_is_seed_compatible() {
        let spec = RequestSpec {
            message: "hi".into(),
            stream: true,
            max_tokens: Some(8),
            ..Default::default()
        };
        let v: serde_json::Value = serde_json::from_slice(&request_payload("p", "s", "c", "r1", &spec)).unwrap();
        assert_eq!(v["replyTopic"], "p/assistant_response/s/c/r1");
        assert_eq!(v["streamTopic"], "p/assistant_stream/s/c");
        assert_eq!(v["maxTokens"], 8);
        assert!(v.get("temperature").is_none());
    }

    #[test]
    fn error_texts_map_to_codes() {
        assert_eq!(
            error_code_of("Error: Server is overloaded. Please try again"),
            "overloaded"
        );
        assert_eq!(error_code_of("Error: invalid 'temperature': must be"), "invalid_param");
        assert_eq!(error_code_of("Error: something new"), "error");
    }
}
