//! [`Failure`]: why an accepted request got no answer, mapped in one place to wire codes and reply texts.

use std::time::Duration;

use crate::admission::Refusal;
use crate::llm::{LlmError, LlmErrorKind};
use crate::session::OwnerRefusal;

/// An accepted request that got no answer from the engine.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    #[error(transparent)]
    Engine(#[from] LlmError),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The drain timeout passed before the request finished.
    #[error("shutting down")]
    ShuttingDown,
    /// The engine finished without any visible text.
    #[error("empty reply")]
    EmptyReply,
    /// The engine crashed or hung and is being restarted; the request may be sent again.
    #[error("engine restarted")]
    EngineRestarted,
    /// Admission turned the request away when its turn came (the engine was not ready within `--engine-wait`).
    #[error(transparent)]
    Refused(Refusal),
    /// The session was forgotten while the request waited and another client has claimed its id since.
    #[error(transparent)]
    SessionOwner(OwnerRefusal),
    /// The prompt cannot fit the model's context (or the budget) even without history.
    #[error(transparent)]
    NoRoom(super::budget::NoRoom),
}

impl Failure {
    pub fn code(&self) -> &'static str {
        match self {
            Self::Engine(e) => e.code(),
            Self::Timeout(_) => "timeout",
            Self::ShuttingDown => "shutting_down",
            Self::EmptyReply => "empty_reply",
            Self::EngineRestarted => "engine_restarting",
            Self::Refused(r) => r.code(),
            Self::SessionOwner(r) => r.code(),
            // The code the engine's own 400 maps to: a client sees one code for one cause.
            Self::NoRoom(_) => "context_overflow",
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
            Self::Refused(r) => r.user_message(),
            Self::SessionOwner(r) => r.to_string(),
            Self::NoRoom(r) => r.to_string(),
        }
    }

    pub fn reply_text(&self) -> String {
        format!("Error: {}", self.user_message())
    }

    /// Failures that a crash or hang of the engine can cause (and then explain better).
    pub fn may_be_engine_death(&self) -> bool {
        let Self::Engine(e) = self else { return false };
        match e.kind() {
            LlmErrorKind::EngineUnavailable
            | LlmErrorKind::EngineDisconnected
            | LlmErrorKind::EngineError
            | LlmErrorKind::ProtocolError => true,
            LlmErrorKind::ModelNotFound
            | LlmErrorKind::EngineBusy
            | LlmErrorKind::ContextOverflow
            | LlmErrorKind::ImagesUnsupported
            | LlmErrorKind::BadRequest
            | LlmErrorKind::ClientError => false,
        }
    }
}
