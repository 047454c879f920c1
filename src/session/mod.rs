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
pub mod persist;
pub mod settings;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use crate::llm::{ChatMessage, MessageContent, Role};
use mqtt_llm_protocol::topics::{ProjectName, SessionId};

pub use history::{
    Counted, History, IMAGE_PLACEHOLDER, TrimPolicy, TrimSettings, Turn, estimate_message, turns_to_drop,
    user_turn_text,
};
pub use owner::{CLIENT_ID_PROPERTY, Owner, OwnerMode, OwnerRefusal};
pub use settings::SessionSettings;

/// A conversation idle this long keeps only its text: the JSON cache of its turns is released (see
/// [`History::release_cache`]).
pub const CACHE_IDLE: Duration = Duration::from_secs(60);

/// The empty system prompt, shared by every new session.
static EMPTY: std::sync::LazyLock<Arc<str>> = std::sync::LazyLock::new(|| Arc::from(""));

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
    system_override: Option<Arc<str>>,
    history: History,
    /// For idle expiry and for evicting the least recently used sessions beyond the caps.
    last_used: Instant,
    /// The system prompt of the prompt last prepared: the turn committed next was sent with it.
    sent_system: Arc<str>,
    /// The oldest turns the prompt last prepared left out to fit its budget: dropped when its turn is committed
    /// (a request that fails loses nothing of the conversation).
    pending_drop: usize,
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
            sent_system: Arc::clone(&EMPTY),
            pending_drop: 0,
            turn_pending: false,
            discard_turn: false,
        }
    }

    /// Start the conversation afresh (a clear, or a template with `reset`): the history goes, and so does the
    /// turn of a request running on the old one.
    fn clear(&mut self) {
        self.history = History::default();
        self.pending_drop = 0;
        self.discard_turn = self.turn_pending;
    }

    /// Bytes this session holds: its turns' text and its cached JSON.
    fn bytes(&self) -> usize {
        self.history.text_bytes() + self.history.cache_bytes()
    }
}

/// What changed since the store last took the changes (only tracked with persistence on): the sets are kept
/// disjoint, so the order in which a batch applies them does not matter.
#[derive(Debug, Default)]
pub struct Changes {
    /// Sessions whose record must be (re)written.
    pub upserts: HashSet<SessionKey>,
    /// Sessions whose record must go.
    pub deletes: HashSet<SessionKey>,
    /// Projects whose every record goes (applied before the upserts of this batch).
    pub delete_projects: HashSet<ProjectName>,
    /// Project-wide templates set since.
    pub templates: HashMap<ProjectName, Option<Arc<str>>>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.upserts.is_empty()
            && self.deletes.is_empty()
            && self.delete_projects.is_empty()
            && self.templates.is_empty()
    }

    /// Sessions to write or delete.
    pub fn pending(&self) -> usize {
        self.upserts.len() + self.deletes.len()
    }

    fn upsert(&mut self, key: &SessionKey) {
        self.deletes.remove(key);
        self.upserts.insert(key.clone());
    }

    fn delete(&mut self, key: &SessionKey) {
        self.upserts.remove(key);
        self.deletes.insert(key.clone());
    }

    fn delete_project(&mut self, project: &ProjectName) {
        self.upserts.retain(|k| k.project != *project);
        self.deletes.retain(|k| k.project != *project);
        self.delete_projects.insert(project.clone());
    }
}

/// What the store's lock guards.
#[derive(Debug, Default)]
struct State {
    sessions: HashMap<SessionKey, Session>,
    /// Project-wide templates set by control messages (`"target":"all"`): they replace the configured prompt of
    /// their project for every session without a prompt of its own.
    project_templates: HashMap<ProjectName, Arc<str>>,
    /// `Some` when persistence is on.
    changes: Option<Changes>,
    /// Each project's configured prompt, shared by its sessions (not one copy per session).
    project_prompts: HashMap<ProjectName, Arc<str>>,
    /// Σ [`Session::bytes`]: kept by prepare and commit, recounted by the rarer changes.
    bytes: usize,
}

impl State {
    fn recount(&mut self) {
        self.bytes = self.sessions.values().map(Session::bytes).sum();
    }

    fn changed(&mut self, key: &SessionKey) {
        if let Some(c) = &mut self.changes {
            c.upsert(key);
            crate::metrics::store_pending(c.pending());
        }
    }

    fn removed(&mut self, key: &SessionKey) {
        if let Some(c) = &mut self.changes {
            c.delete(key);
        }
    }
}

/// The sweep's limits: idle expiry, and the caps on sessions and on history bytes in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SweepLimits {
    pub idle: Duration,
    pub max_sessions: usize,
    pub max_bytes: usize,
}

/// What one sweep removed, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Evictions {
    pub idle: usize,
    pub lru: usize,
    pub bytes: usize,
}

impl Evictions {
    pub fn total(&self) -> usize {
        self.idle + self.lru + self.bytes
    }
}

/// The token budget of one request's prompt (system prompt + kept turns + the new message), and a correction to
/// apply to the estimate of the new message (after the engine counted a prompt the estimate had under-counted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fit {
    pub budget: u32,
    pub correction: u32,
}

/// A prepared prompt.
#[derive(Debug, Clone)]
pub struct Prompt {
    /// The messages as a JSON array: system prompt, kept turns, the new user message.
    pub json: String,
    /// Estimated tokens of the whole prompt (engine counts where known).
    pub estimate: u32,
    /// Turns it carries.
    pub turns: usize,
    /// Turns dropped to fit it.
    pub dropped: usize,
    /// Tokens of the system prompt and the new message alone (estimated).
    pub fixed: u32,
}

impl Prompt {
    /// The messages, typed (parsed back from the JSON: for tests and diagnostics).
    pub fn messages(&self) -> Vec<ChatMessage> {
        serde_json::from_str(&self.json).unwrap_or_default()
    }
}

/// All conversations.
#[derive(Debug, Clone)]
pub struct SessionStore {
    inner: Arc<Mutex<State>>,
    max_history_tokens: u32,
    trim: TrimSettings,
}

impl SessionStore {
    /// A store trimming histories to `max_history_tokens` with `trim`; with `persist`, it records what changed for
    /// [`Self::take_changes`].
    pub fn new(max_history_tokens: u32, trim: TrimSettings, persist: bool) -> Self {
        Self {
            inner: Arc::new(Mutex::new(State {
                changes: persist.then(Changes::default),
                ..State::default()
            })),
            max_history_tokens,
            trim,
        }
    }

    pub fn trim_settings(&self) -> &TrimSettings {
        &self.trim
    }

    pub fn max_history_tokens(&self) -> u32 {
        self.max_history_tokens
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
        let mut created = false;
        let session = state.sessions.entry(key.clone()).or_insert_with(|| {
            created = true;
            Session::new(owner.clone())
        });
        if !owner.may_use(&session.owner) {
            return Err(OwnerRefusal::OtherOwner);
        }
        session.last_used = Instant::now();
        if created {
            state.changed(key);
        }
        Ok(())
    }

    /// The prompt of the next engine request: system prompt, stored turns, the new user message (text, or content
    /// parts with its images; stored turns are text, see [`user_turn_text`]), trimmed to `fit` with the store's
    /// policy first. A request's `system_prompt` replaces the session's (and applies from now on); else the
    /// session keeps its own (from an earlier request or a session template), else the project-wide template, else
    /// `project_prompt`. A session that `owner` may not use (forgotten and claimed by another owner since the
    /// request was queued) is left untouched.
    pub fn prepare_prompt(
        &self,
        key: &SessionKey,
        owner: &Owner,
        system_prompt: Option<&str>,
        project_prompt: &str,
        user: MessageContent,
        fit: Fit,
    ) -> Result<Prompt, OwnerRefusal> {
        let user_json = serde_json::to_string(&ChatMessage {
            role: Role::User,
            content: user,
        })
        .unwrap_or_default();
        let incoming = estimate_message(&user_json).saturating_add(fit.correction);
        let mut state = self.state();
        let State {
            sessions,
            project_templates,
            changes,
            project_prompts,
            bytes,
        } = &mut *state;
        let session = sessions
            .entry(key.clone())
            .or_insert_with(|| Session::new(owner.clone()));
        if !owner.may_use(&session.owner) {
            return Err(OwnerRefusal::OtherOwner);
        }
        let before = session.bytes();
        session.last_used = Instant::now();
        session.turn_pending = true;
        session.discard_turn = false;
        if let Some(prompt) = system_prompt
            && session.system_override.as_deref() != Some(prompt)
        {
            session.system_override = Some(Arc::from(prompt));
            if let Some(c) = changes.as_mut() {
                c.upsert(key);
            }
        }
        let system: Arc<str> = match (&session.system_override, project_templates.get(&key.project)) {
            (Some(own), _) => own.clone(),
            (None, Some(template)) => template.clone(),
            (None, None) => {
                let shared = project_prompts
                    .entry(key.project.clone())
                    .or_insert_with(|| Arc::from(project_prompt));
                if **shared != *project_prompt {
                    *shared = Arc::from(project_prompt);
                }
                shared.clone()
            }
        };
        let dropped = session.history.plan_trim(&system, incoming, fit.budget, &self.trim);
        let fixed = session.history.system_tokens(&system).saturating_add(incoming);
        let estimate = fixed.saturating_add(session.history.tokens_after(dropped));
        let turns_json = session.history.turns_json_after(dropped);
        let mut json = String::with_capacity(system.len() + turns_json.len() + user_json.len() + 48);
        json.push('[');
        if !system.is_empty() {
            json.push_str(r#"{"role":"system","content":"#);
            history::push_json_string(&mut json, &system);
            json.push('}');
            json.push_str(turns_json);
        } else {
            json.push_str(turns_json.strip_prefix(',').unwrap_or(turns_json));
        }
        if json.len() > 1 {
            json.push(',');
        }
        json.push_str(&user_json);
        json.push(']');
        let turns = session.history.turns.len() - dropped;
        session.sent_system = system;
        session.pending_drop = dropped;
        *bytes = bytes.saturating_add(session.bytes()).saturating_sub(before);
        Ok(Prompt {
            json,
            estimate,
            turns,
            dropped,
            fixed,
        })
    }

    /// Store a successful turn (sent with the prompt prepared last: the turns it left out go now) and trim the history to `budget` with the
    /// store's policy. `counted` is the engine's usage of the request. Returns how many old turns were dropped.
    /// A session that `owner` may not use (forgotten and claimed by another owner while the engine answered) is
    /// left untouched.
    pub fn commit_turn(
        &self,
        key: &SessionKey,
        owner: &Owner,
        user: String,
        assistant: String,
        counted: Option<Counted>,
        budget: u32,
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
        let system = session.sent_system.clone();
        let before = session.bytes();
        let mut dropped = session.history.drop_oldest(std::mem::take(&mut session.pending_drop));
        session
            .history
            .push(&system, Arc::from(user), Arc::from(assistant), counted);
        dropped += session.history.trim_after_commit(&system, budget, &self.trim);
        let after = session.bytes();
        state.bytes = state.bytes.saturating_add(after).saturating_sub(before);
        if dropped > 0 {
            crate::metrics::history_trimmed(self.trim.policy.label(), dropped);
            tracing::debug!(
                project = key.project.as_str(),
                session = key.session.as_str(),
                dropped,
                "history trimmed"
            );
        }
        state.changed(key);
        dropped
    }

    /// Forget sessions idle for longer than `limits.idle`, then the least recently used beyond
    /// `limits.max_sessions`, then the least recently used while the history bytes exceed `limits.max_bytes`; release
    /// the JSON cache of sessions idle for [`CACHE_IDLE`]. (A session's requests refresh it, so one in use is never
    /// the oldest.)
    pub fn sweep_with(&self, now: Instant, limits: &SweepLimits) -> Evictions {
        let mut state = self.state();
        let mut out = Evictions::default();
        let mut gone: Vec<SessionKey> = Vec::new();
        state.sessions.retain(|k, s| {
            let keep = now.saturating_duration_since(s.last_used) <= limits.idle;
            if !keep {
                gone.push(k.clone());
            }
            keep
        });
        out.idle = gone.len();
        let mut bytes: usize = state.sessions.values().map(Session::bytes).sum();
        if state.sessions.len() > limits.max_sessions || bytes > limits.max_bytes {
            let mut by_age: Vec<(Instant, SessionKey)> =
                state.sessions.iter().map(|(k, s)| (s.last_used, k.clone())).collect();
            by_age.sort_unstable_by_key(|(t, _)| *t);
            for (_, key) in by_age {
                let over_count = state.sessions.len() > limits.max_sessions;
                if !over_count && bytes <= limits.max_bytes {
                    break;
                }
                if let Some(session) = state.sessions.remove(&key) {
                    bytes -= session.bytes();
                    if over_count {
                        out.lru += 1;
                    } else {
                        out.bytes += 1;
                    }
                    gone.push(key);
                }
            }
        }
        for key in &gone {
            state.removed(key);
        }
        for session in state.sessions.values_mut() {
            if now.saturating_duration_since(session.last_used) >= CACHE_IDLE {
                session.history.release_cache();
            }
        }
        state.recount();
        out
    }

    /// Bytes of history held in memory (turn text and cached JSON).
    pub fn bytes(&self) -> usize {
        self.state().bytes
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
        session.system_override = Some(Arc::from(prompt));
        if reset {
            session.clear();
        }
        state.changed(key);
        state.recount();
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
        state.changed(key);
        state.recount();
        Ok(true)
    }

    /// Forget a session: history, prompt and owner (its id is free again). Returns whether it existed; refused,
    /// changing nothing, when `owner` may not use it.
    pub fn delete(&self, key: &SessionKey, owner: &Owner) -> Result<bool, OwnerRefusal> {
        let mut state = self.state();
        match state.sessions.get(key) {
            None => Ok(false),
            Some(session) if !owner.may_use(&session.owner) => Err(OwnerRefusal::OtherOwner),
            Some(_) => {
                state.removed(key);
                let existed = state
                    .sessions
                    .remove(key)
                    .is_some_and(|s| forget(&mut state.sessions, key, s));
                state.recount();
                Ok(existed)
            }
        }
    }

    /// A project-wide template, as the successor applied one (L `reset_all_sessions`): `prompt` replaces the
    /// project's configured prompt and every session's own prompt (a later request's `systemPrompt` sets one
    /// again); with `reset`, every session's history in the project is cleared too. Returns how many sessions the
    /// project has.
    pub fn set_project_template(&self, project: &ProjectName, prompt: &str, reset: bool) -> usize {
        let mut state = self.state();
        let prompt: Arc<str> = Arc::from(prompt);
        state.project_templates.insert(project.clone(), prompt.clone());
        if let Some(c) = &mut state.changes {
            c.templates.insert(project.clone(), Some(prompt));
        }
        let mut keys = Vec::new();
        for (key, session) in state.sessions.iter_mut().filter(|(k, _)| k.project == *project) {
            session.system_override = None;
            if reset {
                session.clear();
            }
            keys.push(key.clone());
        }
        for key in &keys {
            state.changed(key);
        }
        state.recount();
        keys.len()
    }

    /// Clear the history of every session of `project`. Returns how many sessions there were.
    pub fn clear_project(&self, project: &ProjectName) -> usize {
        let mut state = self.state();
        let mut keys = Vec::new();
        for (key, session) in state.sessions.iter_mut().filter(|(k, _)| k.project == *project) {
            session.clear();
            keys.push(key.clone());
        }
        for key in &keys {
            state.changed(key);
        }
        state.recount();
        keys.len()
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
        if let Some(c) = &mut state.changes {
            c.delete_project(project);
        }
        for key in &keys {
            if let Some(session) = state.sessions.remove(key) {
                forget(&mut state.sessions, key, session);
            }
        }
        state.recount();
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

/// Conveniences for the unit tests: a prepare under the store's own budget that returns the typed messages, and a
/// commit whose usage is one context count.
#[cfg(test)]
impl SessionStore {
    fn prepare(
        &self,
        key: &SessionKey,
        owner: &Owner,
        system_prompt: Option<&str>,
        project_prompt: &str,
        user: impl Into<MessageContent>,
    ) -> Result<Vec<ChatMessage>, OwnerRefusal> {
        let fit = Fit {
            budget: self.max_history_tokens,
            correction: 0,
        };
        self.prepare_prompt(key, owner, system_prompt, project_prompt, user.into(), fit)
            .map(|p| p.messages())
    }

    fn commit(&self, key: &SessionKey, owner: &Owner, user: String, assistant: String, context: Option<u32>) -> usize {
        let counted = context.map(|c| Counted {
            prompt_tokens: c,
            completion_tokens: 0,
        });
        self.commit_turn(key, owner, user, assistant, counted, self.max_history_tokens)
    }

    fn sweep(&self, now: Instant, idle: Duration, max_sessions: usize) -> usize {
        let limits = SweepLimits {
            idle,
            max_sessions,
            max_bytes: usize::MAX,
        };
        self.sweep_with(now, &limits).total()
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

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
