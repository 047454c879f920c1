//! Topic rules, all pure: how request, reply and stream topics are spelled, and which client-chosen reply topics
//! are honoured. The ids a topic is built from ([`ProjectName`], [`SessionId`]) live in [`crate::ids`] and are
//! re-exported here.
//!
//! Wire compatibility with the original server (seed-protocol §1):
//! - requests arrive on `{project}/user_input`;
//! - replies go to `{project}/assistant_response/{sessionId}` unless the client named another topic under that base
//!   (`replyTopic`, §1.4) or, under MQTT 5, a Response Topic;
//! - the opt-in stream of partial tokens goes to `{project}/assistant_stream/{sessionId}`, deliberately outside
//!   `assistant_response/#` because clients take every message there as the answer.

use std::fmt;

pub use crate::ids::{
    MAX_PROJECT_NAME_BYTES, MAX_SESSION_ID_BYTES, ProjectName, SessionId, TopicError, parse_project_list,
};

/// MQTT topic names are length-prefixed with a u16: nothing longer can be published.
pub const MAX_TOPIC_BYTES: usize = 65_535;

const REQUEST_SUFFIX: &str = "user_input";
const REPLY_LEVEL: &str = "assistant_response";
const STREAM_LEVEL: &str = "assistant_stream";

/// The topic a project's requests arrive on: `{p}/user_input`.
pub fn request_topic(p: &ProjectName) -> String {
    format!("{p}/{REQUEST_SUFFIX}")
}

/// The configured project whose request topic is exactly `topic`, if any.
pub fn request_filter_project<'a>(topic: &str, projects: &'a [ProjectName]) -> Option<&'a ProjectName> {
    let name = topic.strip_suffix(REQUEST_SUFFIX)?.strip_suffix('/')?;
    projects.iter().find(|p| p.as_str() == name)
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

/// MQTT 5 Response Topic property: non-empty, no `+`/`#`, no NUL. Any prefix is allowed (the requester chose it and
/// subscribes to exactly it), and it is used verbatim: no trimming, no slash stripping.
pub fn validate_response_topic(t: &str) -> Result<String, TopicFallback> {
    screen(t)?;
    if t.len() > MAX_TOPIC_BYTES {
        return Err(TopicFallback::TooLong);
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
