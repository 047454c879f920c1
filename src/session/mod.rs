//! Conversations per `(project, sessionId)`: the session store, its history trimming and who owns each session.
//!
//! The store is a small handle around plain state behind a `std::sync::Mutex`, never held across `.await`.
//! Requests of one session never overlap (the admission lanes serialise them), so "prepare the prompt, call the
//! engine, commit the turn" cannot interleave within a session.
//!
//! Ownership ([`owner`]) is part of a session's record: [`SessionStore::claim`] binds a new session to its first
//! request's owner, and the owner lives exactly as long as the record (idle expiry and eviction free the id).
//!
//! Control messages ([`SessionStore::set_template`], [`SessionStore::clear`], [`SessionStore::delete`] and their
//! project-wide `*_project` twins) change the store under the same lock, never held across an `.await`. One that
//! arrives while a turn of the session is running does not disturb that request (the engine already has its prompt,
//! and its reply is delivered), but its turn, built on the conversation that was cleared or forgotten, is not
//! stored: the session remembers that a turn is pending between `prepare` and `commit`, and a clear, a template with
//! `reset` or a delete marks that turn to be discarded. (A delete then leaves a fresh record in place of the
//! forgotten one until that turn is done with: same owner, no history, no prompt.)

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
    /// A prompt was prepared and its turn not yet committed (a request may be running; one whose engine call
    /// failed leaves it set until the next prepare, which is harmless: see `discard_turn`).
    turn_pending: bool,
    /// A control message cleared or forgot the conversation after the pending turn's prompt was built: that turn
    /// belongs to the old conversation and is not stored. Reset by every prepare.
    discard_turn: bool,
}

impl Session {
    fn new(owner: Owner) -> Self {
        Self {
            owner,
            system_override: None,
            history: History::default(),
            last_used: Instant::now(),
            turn_pending: false,
            discard_turn: false,
        }
    }

    /// Start the conversation afresh (a clear, or a template with `reset`): the history goes, and so does the
    /// turn of a request running on the old one.
    fn clear(&mut self) {
        self.history = History::default();
        self.discard_turn = self.turn_pending;
    }
}

/// What the store's lock guards.
#[derive(Debug, Default)]
struct State {
    sessions: HashMap<SessionKey, Session>,
    /// Project-wide templates set by control messages (`"target":"all"`): they replace the configured prompt of
    /// their project for every session without a prompt of its own, until the process ends.
    project_templates: HashMap<ProjectName, String>,
}

/// All conversations.
#[derive(Debug, Clone)]
pub struct SessionStore {
    inner: Arc<Mutex<State>>,
    max_history_tokens: NonZeroU32,
}

impl SessionStore {
    pub fn new(max_history_tokens: NonZeroU32) -> Self {
        Self {
            inner: Arc::default(),
            max_history_tokens,
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
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
        let mut state = self.state();
        let sessions = &mut state.sessions;
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
    /// own (from an earlier request or a session template), else the project-wide template, else `project_prompt`. A session that `owner` may not use (forgotten and claimed by another
    /// owner since the request was queued) is left untouched.
    pub fn prepare(
        &self,
        key: &SessionKey,
        owner: &Owner,
        system_prompt: Option<&str>,
        project_prompt: &str,
        user: impl Into<MessageContent>,
    ) -> Result<Vec<ChatMessage>, OwnerRefusal> {
        let mut state = self.state();
        let State {
            sessions,
            project_templates,
        } = &mut *state;
        let session = sessions
            .entry(key.clone())
            .or_insert_with(|| Session::new(owner.clone()));
        if !owner.may_use(&session.owner) {
            return Err(OwnerRefusal::OtherOwner);
        }
        session.last_used = Instant::now();
        session.turn_pending = true;
        session.discard_turn = false;
        if let Some(prompt) = system_prompt {
            session.system_override = Some(prompt.to_owned());
        }
        let system = session
            .system_override
            .as_deref()
            .or(project_templates.get(&key.project).map(String::as_str))
            .unwrap_or(project_prompt);
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
        let mut state = self.state();
        let sessions = &mut state.sessions;
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
        session.turn_pending = false;
        if std::mem::take(&mut session.discard_turn) {
            tracing::debug!(
                project = key.project.as_str(),
                session = key.session.as_str(),
                "turn not stored: the conversation was cleared while it ran"
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
        let mut state = self.state();
        let sessions = &mut state.sessions;
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

    /// A session template: `prompt` becomes the session's system prompt (as a request's `systemPrompt` would), and
    /// with `reset` its history is cleared. Creates the session, bound to `owner`, if it does not exist. Refused,
    /// changing nothing, when `owner` may not use it.
    pub fn set_template(&self, key: &SessionKey, owner: &Owner, prompt: &str, reset: bool) -> Result<(), OwnerRefusal> {
        let mut state = self.state();
        let session = state
            .sessions
            .entry(key.clone())
            .or_insert_with(|| Session::new(owner.clone()));
        if !owner.may_use(&session.owner) {
            return Err(OwnerRefusal::OtherOwner);
        }
        session.last_used = Instant::now();
        session.system_override = Some(prompt.to_owned());
        if reset {
            session.clear();
        }
        Ok(())
    }

    /// Clear a session's history, keeping its prompt and owner. Returns whether the session existed; refused,
    /// changing nothing, when `owner` may not use it.
    pub fn clear(&self, key: &SessionKey, owner: &Owner) -> Result<bool, OwnerRefusal> {
        let mut state = self.state();
        let Some(session) = state.sessions.get_mut(key) else {
            return Ok(false);
        };
        if !owner.may_use(&session.owner) {
            return Err(OwnerRefusal::OtherOwner);
        }
        session.clear();
        Ok(true)
    }

    /// Forget a session: history, prompt and owner (its id is free again). Returns whether it existed; refused,
    /// changing nothing, when `owner` may not use it.
    pub fn delete(&self, key: &SessionKey, owner: &Owner) -> Result<bool, OwnerRefusal> {
        let mut state = self.state();
        match state.sessions.get(key) {
            None => Ok(false),
            Some(session) if !owner.may_use(&session.owner) => Err(OwnerRefusal::OtherOwner),
            Some(_) => Ok(state
                .sessions
                .remove(key)
                .is_some_and(|s| forget(&mut state.sessions, key, s))),
        }
    }

    /// A project-wide template, as the successor applied one (L `reset_all_sessions`): `prompt` replaces the
    /// project's configured prompt and every session's own prompt (a later request's `systemPrompt` sets one
    /// again); with `reset`, every session's history in the project is cleared too. Returns how many sessions the
    /// project has.
    pub fn set_project_template(&self, project: &ProjectName, prompt: &str, reset: bool) -> usize {
        let mut state = self.state();
        state.project_templates.insert(project.clone(), prompt.to_owned());
        let mut count = 0;
        for session in project_sessions(&mut state.sessions, project) {
            session.system_override = None;
            if reset {
                session.clear();
            }
            count += 1;
        }
        count
    }

    /// Clear the history of every session of `project`. Returns how many sessions there were.
    pub fn clear_project(&self, project: &ProjectName) -> usize {
        let mut state = self.state();
        let mut count = 0;
        for session in project_sessions(&mut state.sessions, project) {
            session.clear();
            count += 1;
        }
        count
    }

    /// Forget every session of `project` (a project-wide template stays). Returns how many were forgotten.
    pub fn delete_project(&self, project: &ProjectName) -> usize {
        let mut state = self.state();
        let keys: Vec<SessionKey> = state
            .sessions
            .keys()
            .filter(|k| k.project == *project)
            .cloned()
            .collect();
        for key in &keys {
            if let Some(session) = state.sessions.remove(key) {
                forget(&mut state.sessions, key, session);
            }
        }
        keys.len()
    }

    /// Number of stored sessions.
    pub fn len(&self) -> usize {
        self.state().sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A copy of a session's history (for tests and diagnostics).
    pub fn history(&self, key: &SessionKey) -> Option<History> {
        self.state().sessions.get(key).map(|s| s.history.clone())
    }
}

/// After `session` was removed for a delete: when a turn of it may still be running, leave a fresh record in its
/// place (same owner, no history, no prompt) that discards that turn, so the running request cannot bring the
/// forgotten conversation back when it commits. The record then lives like any other (idle expiry frees it).
/// Returns true (the session existed).
fn forget(sessions: &mut HashMap<SessionKey, Session>, key: &SessionKey, session: Session) -> bool {
    if session.turn_pending {
        let mut fresh = Session::new(session.owner);
        fresh.turn_pending = true;
        fresh.discard_turn = true;
        sessions.insert(key.clone(), fresh);
    }
    true
}

fn project_sessions<'a>(
    sessions: &'a mut HashMap<SessionKey, Session>,
    project: &'a ProjectName,
) -> impl Iterator<Item = &'a mut Session> {
    sessions
        .iter_mut()
        .filter(move |(k, _)| k.project == *project)
        .map(|(_, s)| s)
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
