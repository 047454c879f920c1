//! Topic rules, all pure: how request, reply and stream topics are spelled, and which client-chosen reply topics
//! are honoured. The ids a topic is built from ([`ProjectName`], [`SessionId`]) live in [`crate::ids`] and are
//! re-exported here.
//!
//! Wire compatibility with the original server (seed-protocol §1):
//! - requests arrive on `{project}/user_input`;
//! - replies go to `{project}/assistant_response/{sessionId}` unless the client named another topic under that base
//!   (`replyTopic`, §1.4) or, under MQTT 5, a Response Topic under that base or under one of the project's
//!   configured extra prefixes ([`ReplyPolicy`]): mqtt-llm never publishes anywhere else, so a request cannot make it
//!   publish on another device's (actuator) topic;
//! - the opt-in stream of partial tokens goes to `{project}/assistant_stream/{sessionId}`, deliberately outside
//!   `assistant_response/#` because clients take every message there as the answer;
//! - a state project (`maze`, seed-protocol §1.3) also takes game states on `{project}/state` and answers each with
//!   a JSON hint on `{project}/hint/{sessionId}`, or on a client-chosen topic under `{project}/hint/`.
//! - control messages arrive on `{project}/{template,clear_history,delete_session}[/{sessionId}]`
//!   ([`ControlAction`]) and their notices go to `{project}/control_notice/{sessionId|all}`
//!   ([`control_notice_topic`]) or, for the maze game, `maze/hint/{sessionId|all}` ([`hint_notice_topic`]) as the
//!   successor did; never under `assistant_response/`.

use std::fmt;

pub use crate::ids::{
    MAX_PROJECT_NAME_BYTES, MAX_SESSION_ID_BYTES, ProjectName, SessionId, TopicError, parse_project_list,
};

/// MQTT topic names are length-prefixed with a u16: nothing longer can be published.
pub const MAX_TOPIC_BYTES: usize = 65_535;

const REQUEST_SUFFIX: &str = "user_input";
const REPLY_LEVEL: &str = "assistant_response";
const STREAM_LEVEL: &str = "assistant_stream";
const STATE_SUFFIX: &str = "state";
const NOTICE_LEVEL: &str = "control_notice";
const HINT_LEVEL: &str = "hint";
/// The topic suffix (and `target` value) that names every session of a project.
pub const ALL_SESSIONS: &str = "all";

/// The topic a project's requests arrive on: `{p}/user_input`.
pub fn request_topic(p: &ProjectName) -> String {
    format!("{p}/{REQUEST_SUFFIX}")
}

/// The configured project whose request topic is exactly `topic`, if any.
pub fn request_filter_project<'a>(topic: &str, projects: &'a [ProjectName]) -> Option<&'a ProjectName> {
    let name = topic.strip_suffix(REQUEST_SUFFIX)?.strip_suffix('/')?;
    projects.iter().find(|p| p.as_str() == name)
}

/// The topic a state project's game states arrive on: `{p}/state`.
pub fn state_topic(p: &ProjectName) -> String {
    format!("{p}/{STATE_SUFFIX}")
}

/// The state project (one of `projects`) whose state topic is exactly `topic`, if any.
pub fn state_filter_project<'a>(topic: &str, projects: &'a [ProjectName]) -> Option<&'a ProjectName> {
    let name = topic.strip_suffix(STATE_SUFFIX)?.strip_suffix('/')?;
    projects.iter().find(|p| p.as_str() == name)
}

/// The base every hint topic of state project `p` lives under: `{p}/hint` (the original's `maze/hint`).
pub fn hint_base(p: &ProjectName) -> String {
    format!("{p}/{HINT_LEVEL}")
}

/// `{p}/hint/{s}`: where the hint for a state goes by default.
pub fn default_hint_topic(p: &ProjectName, s: &SessionId) -> String {
    format!("{p}/{HINT_LEVEL}/{s}")
}

/// The base every client-chosen reply topic of project `p` must live under: `{p}/assistant_response`.
pub fn reply_base(p: &ProjectName) -> String {
    format!("{p}/{REPLY_LEVEL}")
}

/// The base every client-chosen stream topic of project `p` must live under: `{p}/assistant_stream`.
pub fn stream_base(p: &ProjectName) -> String {
    format!("{p}/{STREAM_LEVEL}")
}

/// `{p}/assistant_response/{s}`.
pub fn default_reply_topic(p: &ProjectName, s: &SessionId) -> String {
    format!("{p}/{REPLY_LEVEL}/{s}")
}

/// `{p}/assistant_stream/{s}`.
pub fn default_stream_topic(p: &ProjectName, s: &SessionId) -> String {
    format!("{p}/{STREAM_LEVEL}/{s}")
}

/// A control topic's action: `{p}/template`, `{p}/clear_history`, `{p}/delete_session` (each also with a
/// `/{sessionId}` suffix), as the successor served them for `maze` (seed-protocol §1.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ControlAction {
    /// Set the system prompt (and, with `reset`, clear the history).
    Template,
    /// Clear the history, keep the prompt.
    ClearHistory,
    /// Forget the session.
    DeleteSession,
}

impl ControlAction {
    pub const ALL: [Self; 3] = [Self::Template, Self::ClearHistory, Self::DeleteSession];

    /// The topic level, also the stable metrics label and the config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Template => "template",
            Self::ClearHistory => "clear_history",
            Self::DeleteSession => "delete_session",
        }
    }

    /// The action spelled `s` (its topic level), if any.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == s)
    }
}

impl fmt::Display for ControlAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The subscription filters of project `p`'s control topics: `{p}/{action}` and `{p}/{action}/+` for each action.
pub fn control_filters(p: &ProjectName) -> Vec<String> {
    ControlAction::ALL
        .into_iter()
        .flat_map(|a| [format!("{p}/{a}"), format!("{p}/{a}/+")])
        .collect()
}

/// A message on a control topic: its project, action and the raw `/{suffix}` level, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlTopic<'a> {
    pub project: &'a ProjectName,
    pub action: ControlAction,
    /// The topic's last level after `{p}/{action}/` (not yet validated as a session id).
    pub suffix: Option<&'a str>,
}

/// The served project's control topic `topic` is, if it is one: `{p}/{action}` or `{p}/{action}/{suffix}` with a
/// one-level suffix.
pub fn control_topic<'a>(topic: &'a str, projects: &'a [ProjectName]) -> Option<ControlTopic<'a>> {
    projects.iter().find_map(|p| {
        let rest = topic.strip_prefix(p.as_str())?.strip_prefix('/')?;
        let (level, suffix) = match rest.split_once('/') {
            Some((level, suffix)) if !suffix.contains('/') => (level, Some(suffix)),
            Some(_) => return None,
            None => (rest, None),
        };
        Some(ControlTopic {
            project: p,
            action: ControlAction::parse(level)?,
            suffix,
        })
    })
}

/// `{p}/control_notice/{suffix}`: where a chat project's control notices go (`suffix`: a session id or
/// [`ALL_SESSIONS`]). Outside `{p}/assistant_response/`, where clients take any message as an answer.
pub fn control_notice_topic(p: &ProjectName, suffix: &str) -> String {
    format!("{p}/{NOTICE_LEVEL}/{suffix}")
}

/// `{p}/hint/{suffix}`: where the successor sent `maze`'s control notices (`maze/hint/{sid}`).
pub fn hint_notice_topic(p: &ProjectName, suffix: &str) -> String {
    format!("{p}/{HINT_LEVEL}/{suffix}")
}

/// Why a client-supplied topic was not used (for logs/metrics labels via [`TopicFallback::as_str`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicFallback {
    /// The JSON value was not a string (number, bool, object, array).
    NotString,
    /// Empty (after trimming, for `replyTopic`).
    Empty,
    /// Contains `+` or `#` anywhere.
    Wildcard,
    /// Does not start with `{base}/` (e.g. another project's topic).
    WrongPrefix,
    /// Nothing but slashes after `{base}/`.
    EmptySuffix,
    /// Contains NUL, which MQTT forbids in topic names (an addition to §1.4: the original tried and failed to publish).
    NulChar,
    /// Longer than an MQTT topic can be (65535 bytes).
    TooLong,
    /// An MQTT 5 Response Topic outside the project's reply prefixes (`$` topics included): mqtt-llm does not
    /// publish there.
    NotAllowed,
}

impl TopicFallback {
    /// Stable snake_case label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotString => "not_string",
            Self::Empty => "empty",
            Self::Wildcard => "wildcard",
            Self::WrongPrefix => "wrong_prefix",
            Self::EmptySuffix => "empty_suffix",
            Self::NulChar => "nul_char",
            Self::TooLong => "too_long",
            Self::NotAllowed => "not_allowed",
        }
    }
}

impl fmt::Display for TopicFallback {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// seed-protocol §1.4, exactly: the candidate must be a JSON string; it is trimmed; empty → fallback; `#` or `+`
/// anywhere → fallback; it must start with `{base}/` (so no cross-project replies) → else fallback; the remainder
/// with `/` stripped at both ends must be non-empty → else fallback. The first remainder segment may differ from the
/// session id and any depth is allowed. The result is the trimmed candidate with trailing `/` stripped (the original
/// publisher's `rstrip("/")`). Two additions make every accepted topic publishable: NUL → [`TopicFallback::NulChar`],
/// over 65535 bytes → [`TopicFallback::TooLong`].
///
/// `Err(reason)` tells the caller to use the default topic.
pub fn validate_client_topic(base: &str, candidate: &serde_json::Value) -> Result<String, TopicFallback> {
    let serde_json::Value::String(raw) = candidate else {
        return Err(TopicFallback::NotString);
    };
    let topic = raw.trim();
    screen(topic)?;
    let remainder = topic
        .strip_prefix(base)
        .and_then(|rest| rest.strip_prefix('/'))
        .ok_or(TopicFallback::WrongPrefix)?;
    if remainder.trim_matches('/').is_empty() {
        return Err(TopicFallback::EmptySuffix);
    }
    let topic = topic.trim_end_matches('/');
    if topic.len() > MAX_TOPIC_BYTES {
        return Err(TopicFallback::TooLong);
    }
    Ok(topic.to_owned())
}

/// Why a configured reply prefix ([`ReplyPolicy::new`]) is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyPrefixError {
    #[error("a reply prefix must not be empty")]
    Empty,
    #[error("{0:?}: a reply prefix must not contain '+' or '#'")]
    Wildcard(String),
    #[error("{0:?}: a reply prefix must not start with '$' (broker-reserved topics)")]
    Dollar(String),
    #[error("{0:?}: a reply prefix must not contain NUL")]
    NulChar(String),
    #[error("a reply prefix must be shorter than {MAX_TOPIC_BYTES} bytes")]
    TooLong,
}

/// Where a project's MQTT 5 Response Topic may point, besides `{p}/assistant_response/<suffix>`: extra topic
/// prefixes the operator allowed for that project (e.g. `devices/`). Built from configuration and handed to
/// [`crate::wire::parse_request`] as data; [`ReplyPolicy::default`] allows no extra prefix.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplyPolicy {
    /// Each non-empty, ends with `/`, no wildcard, no NUL, no leading `$`.
    extra_prefixes: Vec<String>,
}

impl ReplyPolicy {
    /// No extra prefix: only `{p}/assistant_response/<suffix>`.
    pub const fn none() -> Self {
        Self {
            extra_prefixes: Vec::new(),
        }
    }

    /// Validate and normalise `prefixes`: each must be non-empty, free of `+`, `#` and NUL, and must not start
    /// with `$`; a missing trailing `/` is added (so `devices` allows `devices/...`, never `devices-other/...`).
    pub fn new<I, S>(prefixes: I) -> Result<Self, ReplyPrefixError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut extra_prefixes = Vec::new();
        for p in prefixes {
            let p = p.as_ref();
            if p.is_empty() {
                return Err(ReplyPrefixError::Empty);
            } else if p.contains(['#', '+']) {
                return Err(ReplyPrefixError::Wildcard(p.to_owned()));
            } else if p.starts_with('$') {
                return Err(ReplyPrefixError::Dollar(p.to_owned()));
            } else if p.contains('\0') {
                return Err(ReplyPrefixError::NulChar(p.to_owned()));
            } else if p.len() >= MAX_TOPIC_BYTES {
                return Err(ReplyPrefixError::TooLong);
            }
            let p = if p.ends_with('/') {
                p.to_owned()
            } else {
                format!("{p}/")
            };
            if !extra_prefixes.contains(&p) {
                extra_prefixes.push(p);
            }
        }
        Ok(Self { extra_prefixes })
    }

    /// The normalised extra prefixes, each ending with `/`.
    pub fn extra_prefixes(&self) -> &[String] {
        &self.extra_prefixes
    }
}

/// MQTT 5 Response Topic property of a request to project `p`: non-empty, no `+`/`#`, no NUL, at most 65535
/// bytes, and under `{p}/assistant_response/` or one of `policy`'s extra prefixes with a non-empty remainder
/// (not only slashes) → else [`TopicFallback::EmptySuffix`]. Any other topic, `$SYS/...` and other projects'
/// topics included, is [`TopicFallback::NotAllowed`]: a request must not make mqtt-llm publish on an arbitrary
/// topic (on an IoT broker, another device's actuator). `{p}/assistant_stream/...` is not allowed either: stream
/// parsers there expect JSON frames, and a plain-text reply would confuse them. An accepted topic is used
/// verbatim: no trimming, no slash stripping.
pub fn validate_response_topic(p: &ProjectName, policy: &ReplyPolicy, t: &str) -> Result<String, TopicFallback> {
    validate_response_topic_under(&reply_base(p), policy, t)
}

/// [`validate_response_topic`] for the reply to a state message: the same rules with `{p}/hint/` in place of
/// `{p}/assistant_response/`, so a hint never lands among chat replies nor a chat reply among hints.
pub fn validate_hint_response_topic(p: &ProjectName, policy: &ReplyPolicy, t: &str) -> Result<String, TopicFallback> {
    validate_response_topic_under(&hint_base(p), policy, t)
}

fn validate_response_topic_under(base: &str, policy: &ReplyPolicy, t: &str) -> Result<String, TopicFallback> {
    screen(t)?;
    if t.len() > MAX_TOPIC_BYTES {
        return Err(TopicFallback::TooLong);
    }
    if t.starts_with('$') {
        return Err(TopicFallback::NotAllowed);
    }
    let base = format!("{base}/");
    let remainder = std::iter::once(base.as_str())
        .chain(policy.extra_prefixes.iter().map(String::as_str))
        .find_map(|prefix| t.strip_prefix(prefix))
        .ok_or(TopicFallback::NotAllowed)?;
    if remainder.trim_matches('/').is_empty() {
        return Err(TopicFallback::EmptySuffix);
    }
    Ok(t.to_owned())
}

/// The checks every client-chosen topic passes first, in this order: not empty, no wildcard, no NUL.
fn screen(topic: &str) -> Result<(), TopicFallback> {
    if topic.is_empty() {
        Err(TopicFallback::Empty)
    } else if topic.contains(['#', '+']) {
        Err(TopicFallback::Wildcard)
    } else if topic.contains('\0') {
        Err(TopicFallback::NulChar)
    } else {
        Ok(())
    }
}

#[cfg(test)]
#[path = "topics_tests.rs"]
mod tests;
