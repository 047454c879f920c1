//! Conversations per `(project, sessionId)`: the session store, its history trimming and who owns each session.
//!
//! The store is a small handle around plain state behind a `std::sync::Mutex`, never held across `.await`.
//! Requests of one session never overlap (the admission lanes serialise them), so "prepare the prompt, call the
//! engine, commit the turn" cannot interleave within a session.
//!
//! Ownership ([`owner`]) is part of a session's record: [`SessionStore::claim`] binds a new session to its first
//! request's owner, and the owner lives exactly as long as the record (idle expiry and eviction free the id).

pub mod history;
pub mod owner;
pub mod settings;

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::llm::{ChatMessage, MessageContent, Role};
use mqtt_llm_protocol::topics::{ProjectName, SessionId};

pub use history::{History, IMAGE_PLACEHOLDER, Turn, user_turn_text};
pub use owner::{CLIENT_ID_PROPERTY, Owner, OwnerMode, OwnerRefusal};
pub use settings::SessionSettings;

/// Identifies a conversation. Two projects may use the same session id without sharing history.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SessionKey {
    pub project: ProjectName,
    pub session: SessionId,
}

#[derive(Debug)]
struct Session {
    /// Who may use it: set when the session is created, never changed.
    owner: Owner,
    /// The request-supplied system prompt; replaces the project's for this and later turns.
    system_override: Option<String>,
    history: History,
    /// For idle expiry and for evicting the least recently used sessions beyond the cap.
    last_used: Instant,
}

impl Session {
    fn new(owner: Owner) -> Self {
        Self {
            owner,
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

    /// Before a request of `key` is queued: create the session bound to `owner` if it does not exist, else check
    /// that `owner` may use it. Under one lock, so of two requests for a new session from different owners
    /// exactly one gets it. A refused claim changes nothing, not even the session's last use. An
    /// [`Owner::Unchecked`] request (`--session-owner none`) claims nothing: the session is created when its
    /// prompt is prepared, as before ownership existed.
    pub fn claim(&self, key: &SessionKey, owner: &Owner) -> Result<(), OwnerRefusal> {
        if *owner == Owner::Unchecked {
            return Ok(());
        }
        let mut sessions = self.lock();
        let session = sessions
            .entry(key.clone())
            .or_insert_with(|| Session::new(owner.clone()));
        if !owner.may_use(&session.owner) {
            return Err(OwnerRefusal::OtherOwner);
        }
        session.last_used = Instant::now();
        Ok(())
    }

    /// The messages for the next engine request: system prompt, stored turns, the new user message (text, or
    /// content parts with its images; stored turns are text, see [`user_turn_text`]).
    /// A request's `system_prompt` replaces the session's (and applies from now on); else the session keeps its
    /// own, else `project_prompt` applies. A session that `owner` may not use (forgotten and claimed by another
    /// owner since the request was queued) is left untouched.
    pub fn prepare(
        &self,
        key: &SessionKey,
        owner: &Owner,
        system_prompt: Option<&str>,
        project_prompt: &str,
        user: impl Into<MessageContent>,
    ) -> Result<Vec<ChatMessage>, OwnerRefusal> {
        let mut sessions = self.lock();
        let session = sessions
            .entry(key.clone())
            .or_insert_with(|| Session::new(owner.clone()));
        if !owner.may_use(&session.owner) {
            return Err(OwnerRefusal::OtherOwner);
        }
        session.last_used = Instant::now();
        if let Some(prompt) = system_prompt {
            session.system_override = Some(prompt.to_owned());
        }
        let system = session.system_override.as_deref().unwrap_or(project_prompt);
        let mut messages = Vec::with_capacity(2 + 2 * session.history.turns.len());
        if !system.is_empty() {
            messages.push(ChatMessage {
                role: Role::System,
                content: system.into(),
            });
        }
        for turn in &session.history.turns {
            messages.push(ChatMessage {
                role: Role::User,
                content: turn.user.as_str().into(),
            });
            messages.push(ChatMessage {
                role: Role::Assistant,
                content: turn.assistant.as_str().into(),
            });
        }
        messages.push(ChatMessage {
            role: Role::User,
            content: user.into(),
        });
        Ok(messages)
    }

    /// Store a successful turn and trim the history to the token budget. `context_tokens` is the engine's
    /// prompt + completion count of the request. Returns how many old turns were dropped. A session that `owner`
    /// may not use (forgotten and claimed by another owner while the engine answered) is left untouched.
    pub fn commit(
        &self,
        key: &SessionKey,
        owner: &Owner,
        user: String,
        assistant: String,
        context_tokens: Option<u32>,
    ) -> usize {
        let mut sessions = self.lock();
        let session = sessions
            .entry(key.clone())
            .or_insert_with(|| Session::new(owner.clone()));
        if !owner.may_use(&session.owner) {
            tracing::warn!(
                project = key.project.as_str(),
                session = key.session.as_str(),
                "turn not stored: the session was forgotten and now belongs to another client"
            );
            return 0;
        }
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

    /// A request of a project without ownership (`--session-owner none`).
    const ANYONE: Owner = Owner::Unchecked;

    fn client(id: &str) -> Owner {
        Owner::Client(id.to_owned())
    }

    fn store() -> SessionStore {
        SessionStore::new(NonZeroU32::new(3000).unwrap())
    }

    /// The session's owner, system prompt override and last use, as stored.
    fn record(store: &SessionStore, k: &SessionKey) -> (Owner, Option<String>, Instant) {
        let sessions = store.lock();
        let s = &sessions[k];
        (s.owner.clone(), s.system_override.clone(), s.last_used)
    }

    fn roles(m: &[ChatMessage]) -> Vec<Role> {
        m.iter().map(|m| m.role).collect()
    }

    #[test]
    fn history_and_system_prompt_precedence() {
        let store = SessionStore::new(NonZeroU32::new(3000).unwrap());
        let k = key("general", "s1");
        let m = store.prepare(&k, &ANYONE, None, "project prompt", "hi").unwrap();
        assert_eq!(roles(&m), [Role::System, Role::User]);
        assert_eq!(m[0].content, "project prompt");
        store.commit(&k, &ANYONE, "hi".into(), "hello".into(), Some(20));

        let m = store
            .prepare(&k, &ANYONE, Some("custom"), "project prompt", "next")
            .unwrap();
        assert_eq!(roles(&m), [Role::System, Role::User, Role::Assistant, Role::User]);
        assert_eq!(m[0].content, "custom");
        // Not committed (say the engine failed): the user turn is not stored, the override is.
        let m = store.prepare(&k, &ANYONE, None, "project prompt", "again").unwrap();
        assert_eq!(m[0].content, "custom");
        assert_eq!(m.len(), 4);
    }

    #[test]
    fn projects_do_not_share_sessions() {
        let store = SessionStore::new(NonZeroU32::new(3000).unwrap());
        store.commit(&key("a", "s"), &ANYONE, "u".into(), "a".into(), Some(5));
        assert_eq!(store.prepare(&key("b", "s"), &ANYONE, None, "p", "x").unwrap().len(), 2);
        assert_eq!(store.len(), 2);
    }

    #[test]
    fn sweep_expires_idle_then_evicts_least_recently_used() {
        let store = SessionStore::new(NonZeroU32::new(3000).unwrap());
        for s in ["a", "b", "c", "d"] {
            store.prepare(&key("p", s), &ANYONE, None, "", "x").unwrap();
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
            store.commit(&k, &ANYONE, format!("u{i}"), format!("a{i}"), Some(total));
        }
        let h = store.history(&k).unwrap();
        assert!(h.context_tokens <= 100, "{h:?}");
        assert_eq!(h.turns.back().map(|t| t.user.as_str()), Some("u3"));
    }

    #[test]
    fn the_first_claim_binds_a_new_session_and_others_are_refused() {
        let store = store();
        let k = key("general", "s1");
        assert_eq!(store.claim(&k, &client("devA")), Ok(()));
        assert_eq!(store.claim(&k, &client("devA")), Ok(()), "the owner again");
        assert_eq!(store.claim(&k, &client("devB")), Err(OwnerRefusal::OtherOwner));
        assert_eq!(store.claim(&k, &Owner::Anonymous), Err(OwnerRefusal::OtherOwner));
        assert_eq!(record(&store, &k).0, client("devA"));
        // Another project's session of the same id is another session.
        assert_eq!(store.claim(&key("maze", "s1"), &client("devB")), Ok(()));
        // Requests that name no client share sessions only among themselves.
        let anon = key("general", "anon");
        assert_eq!(store.claim(&anon, &Owner::Anonymous), Ok(()));
        assert_eq!(store.claim(&anon, &Owner::Anonymous), Ok(()));
        assert_eq!(store.claim(&anon, &client("devA")), Err(OwnerRefusal::OtherOwner));
    }

    #[test]
    fn a_refused_request_changes_nothing_of_the_owners_session() {
        let store = store();
        let k = key("general", "s1");
        let a = client("devA");
        store.claim(&k, &a).unwrap();
        store.prepare(&k, &a, Some("A's prompt"), "project", "hi").unwrap();
        store.commit(&k, &a, "hi".into(), "hello".into(), Some(20));
        let before = record(&store, &k);
        let b = client("devB");
        assert_eq!(store.claim(&k, &b), Err(OwnerRefusal::OtherOwner));
        assert_eq!(
            store
                .prepare(&k, &b, Some("B's prompt"), "project", "leak")
                .unwrap_err(),
            OwnerRefusal::OtherOwner
        );
        assert_eq!(store.commit(&k, &b, "leak".into(), "x".into(), Some(99)), 0);
        assert_eq!(record(&store, &k), before, "owner, prompt and last use untouched");
        let h = store.history(&k).unwrap();
        assert_eq!((h.turns.len(), h.context_tokens), (1, 20));
        let m = store.prepare(&k, &a, None, "project", "again").unwrap();
        assert_eq!(m[0].content, "A's prompt");
        assert_eq!(roles(&m), [Role::System, Role::User, Role::Assistant, Role::User]);
    }

    #[test]
    fn unchecked_requests_claim_nothing_and_use_any_session() {
        let store = store();
        let k = key("general", "s1");
        assert_eq!(store.claim(&k, &ANYONE), Ok(()));
        assert!(
            store.is_empty(),
            "none mode creates the session when it prepares, as before"
        );
        store.claim(&k, &client("devA")).unwrap();
        assert!(store.prepare(&k, &ANYONE, None, "p", "x").is_ok());
    }

    #[test]
    fn a_forgotten_session_is_free_for_a_new_owner() {
        let store = store();
        let k = key("general", "s1");
        store.claim(&k, &client("devA")).unwrap();
        let later = Instant::now() + Duration::from_secs(10);
        assert_eq!(store.sweep(later, Duration::from_secs(5), 100), 1);
        assert_eq!(store.claim(&k, &client("devB")), Ok(()));
        // devA's request, queued before the sweep, now finds devB's session: it neither reads nor writes it.
        assert_eq!(
            store.prepare(&k, &client("devA"), None, "p", "x").unwrap_err(),
            OwnerRefusal::OtherOwner
        );
        assert_eq!(store.commit(&k, &client("devA"), "x".into(), "y".into(), None), 0);
        assert!(store.history(&k).unwrap().turns.is_empty());
    }

    #[test]
    fn a_session_forgotten_while_its_request_waited_is_recreated_for_that_owner() {
        let store = store();
        let k = key("general", "s1");
        let a = client("devA");
        store.claim(&k, &a).unwrap();
        store.sweep(Instant::now() + Duration::from_secs(10), Duration::from_secs(5), 100);
        assert!(store.prepare(&k, &a, None, "p", "x").is_ok());
        assert_eq!(record(&store, &k).0, a);
        assert_eq!(store.claim(&k, &client("devB")), Err(OwnerRefusal::OtherOwner));
    }
}
