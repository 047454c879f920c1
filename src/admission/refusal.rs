//! [`Refusal`]: why admission turned a request away, and the one table that gives each refusal its metric label
//! and its reply text.

use std::borrow::Cow;

use mqtt_llm_protocol::wire::RequestError;

/// The text of the overload refusal; clients of the original server test for "Server is overloaded".
pub const OVERLOADED_TEXT: &str = "Error: Server is overloaded. Please try again in a moment.";

/// A request that admission turned away.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Refusal {
    /// The payload was not a valid request.
    #[error(transparent)]
    Invalid(RequestError),
    /// Too many accepted requests across all sessions, or the intake could not keep up.
    #[error("overloaded")]
    Overloaded,
    /// The session already has `--session-queue` requests waiting.
    #[error("session queue full")]
    SessionQueueFull,
    /// Shutdown has started.
    #[error("shutting down")]
    ShuttingDown,
    /// The engine did not become ready within `--engine-wait` (it is starting or restarting). Its reply is the
    /// overload text, which clients of the original server already retry on.
    #[error("engine not ready")]
    EngineNotReady,
    /// The request waited `--max-queue-wait` without reaching the engine. Its reply is the overload text.
    #[error("waited too long in the queue")]
    QueueTimeout,
}

impl Refusal {
    /// The table: stable code (the metric label and wire error code) and what follows "Error: " in the reply.
    fn entry(&self) -> (&'static str, Cow<'static, str>) {
        let overloaded = || Cow::Borrowed(OVERLOADED_TEXT.trim_start_matches("Error: "));
        match self {
            Self::Invalid(e) => (e.code(), Cow::Owned(e.to_string())),
            Self::Overloaded => ("overloaded", overloaded()),
            Self::SessionQueueFull => (
                "session_queue_full",
                Cow::Borrowed("too many requests waiting for this session; wait for the previous replies"),
            ),
            Self::ShuttingDown => ("shutting_down", Cow::Borrowed("server is shutting down, please retry")),
            Self::EngineNotReady => ("engine_not_ready", overloaded()),
            Self::QueueTimeout => ("queue_timeout", overloaded()),
        }
    }

    /// Whether the client is told when to retry ([`Admission::retry_after`](super::Admission::retry_after)): the
    /// refusals that mean "too busy now", not those of a bad request or a shutdown.
    pub fn hints_retry(&self) -> bool {
        match self {
            Self::Overloaded | Self::SessionQueueFull | Self::EngineNotReady | Self::QueueTimeout => true,
            Self::Invalid(_) | Self::ShuttingDown => false,
        }
    }

    /// Stable code for metrics and error frames.
    pub fn code(&self) -> &'static str {
        self.entry().0
    }

    /// What follows "Error: " in the reply.
    pub fn user_message(&self) -> String {
        self.entry().1.into_owned()
    }

    /// The reply payload.
    pub fn reply_text(&self) -> String {
        format!("Error: {}", self.entry().1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_keep_what_clients_test_for() {
        assert_eq!(Refusal::Overloaded.reply_text(), OVERLOADED_TEXT);
        assert_eq!(Refusal::EngineNotReady.reply_text(), OVERLOADED_TEXT);
        assert_eq!(Refusal::EngineNotReady.code(), "engine_not_ready");
        assert_eq!(Refusal::QueueTimeout.reply_text(), OVERLOADED_TEXT);
        assert_eq!(Refusal::QueueTimeout.code(), "queue_timeout");
        assert_eq!(
            Refusal::ShuttingDown.reply_text(),
            "Error: server is shutting down, please retry"
        );
        let invalid = Refusal::Invalid(RequestError::EmptyMessage);
        assert_eq!(invalid.reply_text(), RequestError::EmptyMessage.reply_text());
        assert_eq!(invalid.code(), RequestError::EmptyMessage.code());
    }
}
