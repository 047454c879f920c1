//! The domain ids of the protocol, all pure: what a project name (the first topic level) and a session id (the
//! last level of a default reply topic) may contain, and the operator's `--projects` list. Topic spelling lives
//! in [`crate::topics`], which builds topics from these ids.

use std::fmt;

/// Longest project name accepted, in bytes.
pub const MAX_PROJECT_NAME_BYTES: usize = 64;
/// Longest session id accepted, in bytes (after trimming).
pub const MAX_SESSION_ID_BYTES: usize = 128;
/// Why a project name, project list or session id was refused.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum TopicError {
    #[error("project name is empty")]
    EmptyProjectName,
    #[error("project name is {len} bytes, the limit is {max}")]
    ProjectNameTooLong { len: usize, max: usize },
    /// `/`, `+`, `#` would change the topic structure; NUL and control characters are not publishable; whitespace
    /// cannot be written in the comma/space separated `--projects` list.
    #[error("project name {name:?} contains the forbidden character {ch:?}")]
    ProjectNameForbiddenChar { name: String, ch: char },
    /// Brokers reserve topics that start with `$` (`$SYS/...`): clients cannot publish there and wildcards skip them,
    /// so a project named `$x` could never be served.
    #[error("project name {name:?} starts with '$', which brokers reserve for their own topics")]
    ProjectNameReserved { name: String },
    #[error("project list is empty")]
    EmptyProjectList,
    #[error("session id is empty")]
    EmptySessionId,
    #[error("session id is {len} bytes, the limit is {max}")]
    SessionIdTooLong { len: usize, max: usize },
    /// `/` would change the reply topic's depth, `+`/`#` make the publish fail, NUL/control characters are not
    /// publishable (seed-protocol defect 8).
    #[error("session id contains the forbidden character {ch:?}")]
    SessionIdForbiddenChar { ch: char },
}

/// Characters that can never appear in a topic level we build from client or operator input.
fn is_structural_or_control(c: char) -> bool {
    matches!(c, '/' | '+' | '#') || c.is_control()
}

/// Why [`screen`] refused an id; each id names it in its own [`TopicError`] variant.
enum Refusal {
    Empty,
    TooLong { len: usize, max: usize },
    Forbidden(char),
}

/// The rules both ids share, in this order: not empty, at most `max` bytes, no character `forbidden` accepts.
fn screen(s: &str, max: usize, forbidden: impl Fn(char) -> bool) -> Result<(), Refusal> {
    if s.is_empty() {
        return Err(Refusal::Empty);
    }
    if s.len() > max {
        return Err(Refusal::TooLong { len: s.len(), max });
    }
    match s.chars().find(|&c| forbidden(c)) {
        Some(ch) => Err(Refusal::Forbidden(ch)),
        None => Ok(()),
    }
}

/// A configured project name (first topic level). Non-empty, ≤ 64 bytes, no '/', '+', '#', NUL or control chars,
/// no whitespace (the `--projects` list syntax could not express it), and no leading '$' (broker-reserved topics).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProjectName(String);

impl ProjectName {
    /// Validates `s` as is (no trimming: a name with surrounding spaces is refused, not repaired).
    pub fn try_new(s: &str) -> Result<Self, TopicError> {
        let forbidden = |c: char| is_structural_or_control(c) || c.is_whitespace();
        match screen(s, MAX_PROJECT_NAME_BYTES, forbidden) {
            Ok(()) if s.starts_with('$') => Err(TopicError::ProjectNameReserved { name: s.to_owned() }),
            Ok(()) => Ok(Self(s.to_owned())),
            Err(Refusal::Empty) => Err(TopicError::EmptyProjectName),
            Err(Refusal::TooLong { len, max }) => Err(TopicError::ProjectNameTooLong { len, max }),
            Err(Refusal::Forbidden(ch)) => Err(TopicError::ProjectNameForbiddenChar { name: s.to_owned(), ch }),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ProjectName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Parse `--projects` ("a,b c": comma and/or whitespace separated, as the original split it); empty pieces are
/// skipped, duplicates removed with the first occurrence's order kept; a list with no name at all is an error.
pub fn parse_project_list(s: &str) -> Result<Vec<ProjectName>, TopicError> {
    let mut projects: Vec<ProjectName> = Vec::new();
    for piece in s.split(|c: char| c == ',' || c.is_whitespace()) {
        if piece.is_empty() {
            continue;
        }
        let project = ProjectName::try_new(piece)?;
        if !projects.contains(&project) {
            projects.push(project);
        }
    }
    if projects.is_empty() {
        return Err(TopicError::EmptyProjectList);
    }
    Ok(projects)
}

/// A session id: trimmed, 1-128 bytes, no '+', '#', '/', NUL or control characters (they would change or break the
/// reply topic). Internal spaces are allowed, as they were in the original.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SessionId(String);

impl SessionId {
    /// Trims surrounding whitespace (the wire rule, seed-protocol §2: the original `.strip()`ped every session id),
    /// then validates; nothing else is changed.
    pub fn try_new(s: &str) -> Result<Self, TopicError> {
        let s = s.trim();
        match screen(s, MAX_SESSION_ID_BYTES, is_structural_or_control) {
            Ok(()) => Ok(Self(s.to_owned())),
            Err(Refusal::Empty) => Err(TopicError::EmptySessionId),
            Err(Refusal::TooLong { len, max }) => Err(TopicError::SessionIdTooLong { len, max }),
            Err(Refusal::Forbidden(ch)) => Err(TopicError::SessionIdForbiddenChar { ch }),
        }
    }

    /// A fresh random session, `default-` + 8 lowercase hex digits: what the original used when a request named
    /// no session (a new conversation each time).
    pub fn generate_default() -> Self {
        Self(format!("default-{:08x}", rand::random::<u32>()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
