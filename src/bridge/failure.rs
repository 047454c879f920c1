//! Why a request was refused or failed, mapped in one place to wire codes and reply texts.

use std::time::Duration;

use crate::llm::LlmError;
use mqtt_llm_protocol::wire::RequestError;

/// The text of the overload refusal; clients of the original server test for "Server is overloaded".
pub const OVERLOADED_TEXT: &str = "Error: Server is overloaded. Please try again in a moment.";

/// A request refused before it reached a session lane.
#[derive(Debug, Clone, PartialEq)]
pub enum Refusal {
    /// The payload was not a valid request.
    Invalid(RequestError),
    /// Too many accepted requests across all sessions (or the intake could not keep up).
    Overloaded,
    /// The session already has `--session-queue` requests waiting.
    SessionQueueFull,
    /// Shutdown has started.
    ShuttingDown,
}

impl Refusal {
    /// Stable code for metrics.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Invalid(e) => e.code(),
            Self::Overloaded => "overloaded",
            Self::SessionQueueFull => "session_queue_full",
            Self::ShuttingDown => "shutting_down",
        }
    }

    /// The reply payload.
    pub fn reply_text(&self) -> String {
        match self {
            Self::Invalid(e) => e.reply_text(),
            Self::Overloaded => OVERLOADED_TEXT.to_owned(),
            Self::SessionQueueFull => {
                "Error: too many requests waiting for this session; wait for the previous replies".to_owned()
            }
            Self::ShuttingDown => "Error: server is shutting down, please retry".to_owned(),
        }
    }
}

/// An accepted request that got no answer from the engine.
#[derive(Debug)]
pub enum Failure {
    Engine(LlmError),
    Timeout(Duration),
    /// The drain timeout passed before the request finished.
    ShuttingDown,
    /// The engine finished without any visible text.
    EmptyReply,
    /// The engine crashed or hung and is being restarted; the request may be sent again.
    EngineRestarted,
    /// The engine was not ready within `--engine-wait` (it is starting or restarting).
    EngineNotReady,
}

impl From<LlmError> for Failure {
    fn from(e: LlmError) -> Self {
        Self::Engine(e)
    }
}

impl Failure {
    pub fn code(&self) -> &'static str {
        match self {
            Self::Engine(e) => e.code(),
            Self::Timeout(_) => "timeout",
            Self::ShuttingDown => "shutting_down",
            Self::EmptyReply => "empty_reply",
            Self::EngineRestarted => "engine_restarting",
            Self::EngineNotReady => "engine_not_ready",
        }
    }

    /// What follows "Error: " in the reply.
    pub fn user_message(&self) -> String {
        match self {
            Self::Engine(e) => e.user_message(),
            Self::Timeout(d) => format!("the engine did not answer within {}s, please retry", d.as_secs()),
            Self::ShuttingDown => "server is shutting down, please retry".to_owned(),
            Self::EmptyReply => "No response generated".to_owned(),
            Self::EngineRestarted => "engine restarted, please retry".to_owned(),
            Self::EngineNotReady => OVERLOADED_TEXT.trim_start_matches("Error: ").to_owned(),
        }
    }

    pub fn reply_text(&self) -> String {
        format!("Error: {}", self.user_message())
    }

    /// Failures that a crash or hang of the engine can cause (and then explain better).
    pub fn may_be_engine_death(&self) -> bool {
        matches!(self, Self::Engine(e) if matches!(
            e.code(),
            "engine_unavailable" | "engine_disconnected" | "engine_error" | "protocol_error"
        ))
    }
}
