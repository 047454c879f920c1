//! Persistence of the session store through the on-disk [`Store`]: what changed is written in batches, one
//! transaction (one fsync) per `--persist-interval`, and once more on shutdown; on start, what was on disk comes
//! back ([`SessionStore::restore`]).
//!
//! The session store records which sessions changed ([`super::Changes`]: a committed turn, a template, a clear,
//! a new owner's claim, a delete, an eviction); [`SessionStore::take_batch`] turns them into a [`Batch`] of whole
//! records under the lock (texts are shared `Arc<str>`, so this copies them once, into the records), and the
//! [`Persister`] writes it off the async workers. A batch that fails to write is merged back, to be tried again
//! with the next one: a turn is lost only if the process dies before any write succeeds.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::Mutex as AsyncMutex;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{History, Owner, Session, SessionKey, SessionStore, Turn};
use crate::store::{Batch, Recovered, Store, StoredOwner, StoredSession, StoredTurn};
use mqtt_llm_protocol::topics::{ProjectName, SessionId};

fn stored_owner(owner: &Owner) -> StoredOwner {
    match owner {
        Owner::Unchecked => StoredOwner::Unchecked,
        Owner::Anonymous => StoredOwner::Anonymous,
        Owner::Client(id) => StoredOwner::Client(id.clone()),
    }
}

fn owner(stored: StoredOwner) -> Owner {
    match stored {
        StoredOwner::Unchecked => Owner::Unchecked,
        StoredOwner::Anonymous => Owner::Anonymous,
        StoredOwner::Client(id) => Owner::Client(id),
    }
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl SessionStore {
    /// Put back what the store held at start-up: sessions idle for less than `idle` (by the wall clock) with their
    /// last use carried over, and the project templates. Sessions idle for longer are not restored and are deleted
    /// from the store with the next batch. Returns how many sessions came back.
    pub fn restore(&self, recovered: Recovered, idle: Duration) -> usize {
        let now_wall = unix_ms(SystemTime::now());
        let now = Instant::now();
        let mut state = self.state();
        for (project, prompt) in recovered.templates {
            if let Ok(project) = ProjectName::try_new(&project) {
                state.project_templates.insert(project, Arc::from(prompt));
            }
        }
        let mut restored = 0;
        for record in recovered.sessions {
            let key = match (
                ProjectName::try_new(&record.project),
                SessionId::try_new(&record.session),
            ) {
                (Ok(project), Ok(session)) => SessionKey { project, session },
                _ => {
                    tracing::warn!(
                        project = record.project,
                        session = record.session,
                        "stored session with an invalid name skipped"
                    );
                    continue;
                }
            };
            let age = Duration::from_millis(now_wall.saturating_sub(record.last_used_unix_ms));
            if age > idle {
                state.removed(&key);
                continue;
            }
            let turns: Vec<Turn> = record
                .turns
                .into_iter()
                .map(|t| Turn {
                    user: Arc::from(t.user),
                    assistant: Arc::from(t.assistant),
                    tokens: t.tokens,
                })
                .collect();
            let mut session = Session::new(owner(record.owner));
            // The count of the system prompt is kept for a session's own prompt (then the one it was sent with);
            // a project's prompt is counted again by the next turn's usage.
            let own: Option<Arc<str>> = record.system_override.map(Arc::from);
            session.history = History::restored(own.clone(), turns, record.context_tokens);
            if let Some(own) = own {
                session.sent_system = own.clone();
                session.system_override = Some(own);
            }
            session.last_used = now.checked_sub(age).unwrap_or(now);
            state.sessions.insert(key, session);
            restored += 1;
        }
        state.recount();
        restored
    }

    /// Changed sessions not yet taken into a batch (0 with persistence off).
    pub fn pending(&self) -> usize {
        self.state().changes.as_ref().map_or(0, super::Changes::pending)
    }

    /// The changes since the last call, as a batch of whole records (empty with persistence off).
    pub fn take_batch(&self) -> Batch {
        let now_wall = SystemTime::now();
        let now = Instant::now();
        let mut state = self.state();
        let Some(changes) = state.changes.as_mut().map(std::mem::take) else {
            return Batch::default();
        };
        let mut batch = Batch {
            delete_projects: changes.delete_projects.iter().map(|p| p.as_str().to_owned()).collect(),
            templates: changes
                .templates
                .iter()
                .map(|(p, t)| (p.as_str().to_owned(), t.as_deref().map(str::to_owned)))
                .collect(),
            ..Batch::default()
        };
        for key in &changes.upserts {
            match state.sessions.get(key) {
                Some(session) => batch.upserts.push(record(key, session, now, now_wall)),
                None => batch.deletes.push(names(key)),
            }
        }
        batch.deletes.extend(changes.deletes.iter().map(names));
        batch
    }

    /// Mark what `batch` would have written as changed again (its write failed): the next batch retries it.
    pub fn requeue(&self, batch: &Batch) {
        let mut state = self.state();
        let Some(changes) = state.changes.as_mut() else { return };
        for project in &batch.delete_projects {
            if let Ok(p) = ProjectName::try_new(project) {
                changes.delete_projects.insert(p);
            }
        }
        for (project, template) in &batch.templates {
            if let Ok(p) = ProjectName::try_new(project) {
                changes
                    .templates
                    .entry(p)
                    .or_insert_with(|| template.as_deref().map(Arc::from));
            }
        }
        let keys = batch
            .upserts
            .iter()
            .map(|r| (&r.project, &r.session, true))
            .chain(batch.deletes.iter().map(|(p, s)| (p, s, false)));
        for (project, session, upsert) in keys {
            let (Ok(project), Ok(session)) = (ProjectName::try_new(project), SessionId::try_new(session)) else {
                continue;
            };
            let key = SessionKey { project, session };
            // A newer change of the same key wins.
            if changes.upserts.contains(&key) || changes.deletes.contains(&key) {
                continue;
            }
            if upsert {
                changes.upserts.insert(key);
            } else {
                changes.deletes.insert(key);
            }
        }
    }
}

fn names(key: &SessionKey) -> (String, String) {
    (key.project.as_str().to_owned(), key.session.as_str().to_owned())
}

fn record(key: &SessionKey, session: &Session, now: Instant, now_wall: SystemTime) -> StoredSession {
    let idle = now.saturating_duration_since(session.last_used);
    StoredSession {
        project: key.project.as_str().to_owned(),
        session: key.session.as_str().to_owned(),
        owner: stored_owner(&session.owner),
        system_override: session.system_override.as_deref().map(str::to_owned),
        turns: session
            .history
            .turns
            .iter()
            .map(|t| StoredTurn {
                user: t.user.to_string(),
                assistant: t.assistant.to_string(),
                tokens: t.tokens,
            })
            .collect(),
        context_tokens: session.history.context_tokens(),
        last_used_unix_ms: unix_ms(now_wall.checked_sub(idle).unwrap_or(now_wall)),
    }
}

/// Writes the session store's changes to the [`Store`]: every `interval` from [`Persister::spawn`], and on demand
/// ([`Persister::flush`], at shutdown). One write at a time.
#[derive(Debug, Clone)]
pub struct Persister {
    store: Store,
    sessions: SessionStore,
    /// Serializes writes: the periodic one and a shutdown flush never overlap.
    writing: Arc<AsyncMutex<()>>,
}

impl Persister {
    pub fn new(store: Store, sessions: SessionStore) -> Self {
        Self {
            store,
            sessions,
            writing: Arc::default(),
        }
    }

    pub fn path(&self) -> &std::path::Path {
        self.store.path()
    }

    /// Write what changed since the last write, now. Returns whether the store is up to date.
    pub async fn flush(&self) -> bool {
        let _writing = self.writing.lock().await;
        let batch = self.sessions.take_batch();
        if batch.is_empty() {
            return true;
        }
        let store = self.store.clone();
        let started = std::time::Instant::now();
        let (batch, result) = match tokio::task::spawn_blocking(move || {
            let result = store.write(&batch);
            (batch, result)
        })
        .await
        {
            Ok(done) => done,
            Err(e) => {
                tracing::error!(error = %e, "session store write task failed");
                return false;
            }
        };
        let seconds = started.elapsed().as_secs_f64();
        match result {
            Ok(stats) => {
                crate::metrics::store_write(true, seconds, stats.sessions_written);
                tracing::debug!(
                    written = stats.sessions_written,
                    deleted = stats.deleted,
                    bytes = stats.bytes,
                    ms = seconds * 1000.0,
                    "session store written"
                );
                crate::metrics::store_pending(self.sessions.pending());
                true
            }
            Err(e) => {
                crate::metrics::store_write(false, seconds, 0);
                tracing::error!(error = %e, "session store write failed; retrying with the next batch");
                self.sessions.requeue(&batch);
                false
            }
        }
    }

    /// Flush every `interval` until `cancel` (the final flush is the caller's, after the requests drained).
    pub fn spawn(&self, interval: Duration, tracker: &TaskTracker, cancel: CancellationToken) {
        let this = self.clone();
        tracker.spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = cancel.cancelled() => break,
                }
                this.flush().await;
            }
        });
    }
}

#[cfg(test)]
#[path = "persist_tests.rs"]
mod tests;
