//! What the store holds ([`StoredSession`] and its parts), what one write does ([`Batch`]), what an open reads back
//! ([`Recovered`]), and the encoding of a session's key.

use serde::{Deserialize, Serialize};

/// Who owns a stored session (mirrors `crate::session::Owner`; the store does not depend on `session`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StoredOwner {
    Unchecked,
    Anonymous,
    Client(String),
}

/// One exchange of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredTurn {
    pub user: String,
    pub assistant: String,
    pub tokens: u32,
}

/// One conversation, whole (it is rewritten whole each time it changes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredSession {
    pub project: String,
    pub session: String,
    pub owner: StoredOwner,
    pub system_override: Option<String>,
    pub turns: Vec<StoredTurn>,
    pub context_tokens: u32,
    /// Wall-clock time of the last use, milliseconds since the Unix epoch (idle expiry resumes from it).
    pub last_used_unix_ms: u64,
}

/// What one write transaction does. Applied atomically, in this order: `delete_projects`, `upserts`, `deletes`,
/// `templates`. So a batch may wipe a project and upsert some of its sessions anew, and a session both upserted
/// and deleted in one batch ends up deleted.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Batch {
    /// Sessions to write whole (insert or replace).
    pub upserts: Vec<StoredSession>,
    /// (project, session) to delete; deleting a missing key is fine.
    pub deletes: Vec<(String, String)>,
    /// Project-wide templates: Some(prompt) sets, None removes (removing a missing one is fine).
    pub templates: Vec<(String, Option<String>)>,
    /// Delete every session of these projects (a project-wide delete), applied before `upserts`. Templates are
    /// not touched: remove one through `templates`.
    pub delete_projects: Vec<String>,
}

impl Batch {
    /// Whether the batch does nothing ([`super::Store::write`] then writes nothing).
    pub fn is_empty(&self) -> bool {
        self.upserts.is_empty()
            && self.deletes.is_empty()
            && self.templates.is_empty()
            && self.delete_projects.is_empty()
    }
}

/// What was on disk at open: every session (in key order: by project, then session) and every template (by
/// project).
#[derive(Debug, Default)]
pub struct Recovered {
    pub sessions: Vec<StoredSession>,
    pub templates: Vec<(String, String)>,
}

/// What one [`super::Store::write`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteStats {
    /// Sessions inserted or replaced (`upserts.len()`).
    pub sessions_written: usize,
    /// Sessions that existed and were removed, by `deletes` or `delete_projects`.
    pub deleted: usize,
    /// Bytes of keys and values written (sessions and templates set); not counting redb's own overhead.
    pub bytes: u64,
}

/// The `sessions` table's key for `(project, session)`: the project's length (u32, big-endian), its bytes, then
/// the session's bytes. Unambiguous for any two strings (NUL included), and all of one project's keys share the
/// prefix [`project_prefix`], which no other project's keys start with.
pub(super) fn session_key(project: &str, session: &str) -> Vec<u8> {
    let mut key = project_prefix(project);
    key.extend_from_slice(session.as_bytes());
    key
}

/// The prefix of every key of `project`.
pub(super) fn project_prefix(project: &str) -> Vec<u8> {
    let len = u32::try_from(project.len()).unwrap_or(u32::MAX);
    let mut key = Vec::with_capacity(4 + project.len());
    key.extend_from_slice(&len.to_be_bytes());
    key.extend_from_slice(project.as_bytes());
    key
}

/// The smallest byte string greater than every string that starts with `prefix` (the exclusive end of the prefix's
/// key range); `None` when there is none (the prefix is all 0xFF bytes or empty: the range is unbounded).
pub(super) fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while end.last() == Some(&0xFF) {
        end.pop();
    }
    *end.last_mut()? += 1;
    Some(end)
}

/// `(project, session)` from a key, `None` when it is not one [`session_key`] makes.
pub(super) fn decode_key(key: &[u8]) -> Option<(String, String)> {
    let (len, rest) = key.split_first_chunk::<4>()?;
    let len = usize::try_from(u32::from_be_bytes(*len)).ok()?;
    if rest.len() < len {
        return None;
    }
    let (project, session) = rest.split_at(len);
    Some((
        String::from_utf8(project.to_vec()).ok()?,
        String::from_utf8(session.to_vec()).ok()?,
    ))
}
