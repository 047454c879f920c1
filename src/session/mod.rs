//! Conversations per `(project, sessionId)`: the session store and its history trimming.
//!
//! The store is a small handle around plain state behind a `std::sync::Mutex`, never held across `.await`.
//! Requests of one session never overlap (the admission lanes serialise them), so "prepare the prompt, call the
//! engine, commit the turn" cannot interleave within a session.

pub mod history;
pub mod settings;

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::llm::{ChatMessage, Role};
use mqtt_llm_protocol::topics::{ProjectName, SessionId};

pub use history::{History, Turn};
pub use settings::SessionSettings;

/// Identifies a conversation. Two projects may use the same session id without sharing history.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SessionKey {
    pub project: ProjectName,
    pub session: SessionId,
}

#[derive(Debug)]
struct Session {
    /// The request-supplied system prompt; replaces the project's for this and later turns.
    system_override: Option<String>,
    history: History,
    /// For idle expiry and for evicting the least recently used sessions beyond the cap.
    last_used: Instant,
}

impl Default for Session {
    fn default() -> Self {
        Self {
            system_override: None,
            history: History::default(),
            last_used: Instant::now(),
        }
    }
}

/// All conversations.
#[derive(Debug, Clone)]
pub struct SessionStore {
    inner: Arc<Mutex<HashMap<SessionKey, Session>>>,
    max_history_tokens: NonZeroU32,
}

impl SessionStore {
    pub fn new(max_history_tokens: NonZeroU32) -> Self {
        Self {
            inner: Arc::default(),
            max_history_tokens,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SessionKey, Session>> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The messages for the next engine request: system prompt, stored turns, the new user message.
    /// A request's `system_prompt` replaces the session's (and applies from now on); else the session keeps its
    /// own, else `project_prompt` applies.
    pub fn prepare(
        &self,
        key: &SessionKey,
        system_prompt: Option<&str>,
        project_prompt: &str,
        user: &str,
    ) -> Vec<ChatMessage> {
        let mut sessions = self.lock();
        let session = sessions.entry(key.clone()).or_default();
        session.last_used = Instant::now();
        if let Some(prompt) = system_prompt {
            session.system_override = Some(prompt.to_owned());
        }
        let system = session.system_override.as_deref().unwrap_or(project_prompt);
        let mut messages = Vec::with_capacity(2 + 2 * session.history.turns.len());
        if !system.is_empty() {
            messages.push(ChatMessage {
                role: Role::System,
                content: system.to_owned(),
            });
        }
        for turn in &session.history.turns {
            messages.push(ChatMessage {
                role: Role::User,
                content: turn.user.clone(),
            });
            messages.push(ChatMessage {
                role: Role::Assistant,
                content: turn.assistant.clone(),
            });
        }
        messages.push(ChatMessage {
            role: Role::User,
            content: user.to_owned(),
        });
        messages
    }

    /// Store a successful turn and trim the history to the token budget. `context_tokens` is the engine's
    /// prompt + completion count of the request. Returns how many old turns were dropped.
    pub fn commit(&self, key: &SessionKey, user: String, assistant: String, context_tokens: Option<u32>) -> usize {
        let mut sessions = self.lock();
        let session = sessions.entry(key.clone()).or_default();
        session.history.push(user, assistant, context_tokens);
        let dropped = session.history.trim_to(self.max_history_tokens.get());
        if dropped > 0 {
            tracing::debug!(
                project = key.project.as_str(),
                session = key.session.as_str(),
                dropped,
                "history trimmed"
            );
        }
        dropped
    }

    /// Forget sessions idle for longer than `idle`, then the least recently used beyond `max_sessions`.
    /// Returns how many were removed. (A session's requests refresh it, so one in use is never the oldest.)
    pub fn sweep(&self, now: Instant, idle: Duration, max_sessions: usize) -> usize {
        let mut sessions = self.lock();
        let before = sessions.len();
        sessions.retain(|_, s| now.saturating_duration_since(s.last_used) <= idle);
        if sessions.len() > max_sessions {
            let mut by_age: Vec<(Instant, SessionKey)> =
                sessions.iter().map(|(k, s)| (s.last_used, k.clone())).collect();
            by_age.sort_unstable_by_key(|(t, _)| *t);
            let excess = sessions.len() - max_sessions;
            for (_, key) in by_age.into_iter().take(excess) {
                sessions.remove(&key);
            }
        }
        before - sessions.len()
    }

    /// Number of stored sessions.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A copy of a session's history (for tests and diagnostics).
    pub fn history(&self, key: &SessionKey) -> Option<History> {
        self.lock().get(key).map(|s| s.history.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(p: &str, s: &str) -> SessionKey {
        SessionKey {
            project: ProjectName::try_new(p).unwrap(),
            session: SessionId::try_new(s).unwrap(),
        }
    }

    fn roles(m: &[ChatMessage]) -> Vec<Role> {
        m.iter().map(|m| m.role).collect()
    }

    #[test]
    fn history_and_system_prompt_precedence() {
        let store = SessionStore::new(NonZeroU32::new(3000).unwrap());
        let k = key("general", "s1");
        let m = store.prepare(&k, None, "project prompt", "hi");
        assert_eq!(roles(&m), [Role::System, Role::User]);
        assert_eq!(m[0].content, "project prompt");
        store.commit(&k, "hi".into(), "hello".into(), Some(20));

        let m = store.prepare(&k, Some("custom"), "project prompt", "next");
        assert_eq!(roles(&m), [Role::System, Role::User, Role::Assistant, Role::User]);
        assert_eq!(m[0].content, "custom");
        // Not committed (say the engine failed): the user turn is not stored, the override is.
        let m = store.prepare(&k, None, "project prompt", "again");
        assert_eq!(m[0].content, "custom");
        assert_eq!(m.len(), 4);
    }

    #[test]
    fn projects_do_not_share_sessions() {
        let store = SessionStore::new(NonZeroU32::new(3000).unwrap());
        store.commit(&key("a", "s"), "u".into(), "a".into(), Some(5));
        assert_eq!(store.prepare(&key("b", "s"), None, "p", "x").len(), 2);
        assert_eq!(store.len(), 2);
    }

    #[test]
    fn sweep_expires_idle_then_evicts_least_recently_used() {
        let store = SessionStore::new(NonZeroU32::new(3000).unwrap());
        for s in ["a", "b", "c", "d"] {
            store.prepare(&key("p", s), None, "", "x");
        }
        let later = Instant::now() + Duration::from_secs(10);
        // Nothing idle for longer than an hour, but only two may stay: the two used first go.
        assert_eq!(store.sweep(later, Duration::from_secs(3600), 2), 2);
        assert!(store.history(&key("p", "a")).is_none() && store.history(&key("p", "b")).is_none());
        assert!(store.history(&key("p", "d")).is_some());
        // Everything idle for longer than 5 s goes.
        assert_eq!(store.sweep(later, Duration::from_secs(5), 100), 2);
        assert!(store.is_empty());
    }

    #[test]
    fn commit_trims_to_budget() {
        let store = SessionStore::new(NonZeroU32::new(100).unwrap());
        let k = key("general", "s");
        for (i, total) in [40, 80, 120, 160].into_iter().enumerate() {
            store.commit(&k, format!("u{i}"), format!("a{i}"), Some(total));
        }
        let h = store.history(&k).unwrap();
        assert!(h.context_tokens <= 100, "{h:?}");
        assert_eq!(h.turns.back().map(|t| t.user.as_str()), Some("u3"));
    }
}
