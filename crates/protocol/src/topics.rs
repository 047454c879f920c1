//! Topic rules, all pure: what a project name and a session id may contain, how request, reply and stream topics
//! are spelled, and which client-chosen reply topics are honoured.
//!
//! Wire compatibility with the original server (seed-protocol §1):
//! - requests arrive on `{project}/user_input`;
//! - replies go to `{project}/assistant_response/{sessionId}` unless the client named another topic under that base
//!   (`replyTopic`, §1.4) or, under MQTT 5, a Response Topic;
//! - the opt-in stream of partial tokens goes to `{project}/assistant_stream/{sessionId}`, deliberately outside
//!   `assistant_response/#` because clients take every message there as the answer.

use std::fmt;

/// Longest project name accepted, in bytes.
pub const MAX_PROJECT_NAME_BYTES: usize = 64;
/// Longest session id accepted, in bytes (after trimming).
pub const MAX_SESSION_ID_BYTES: usize = 128;
/// MQTT topic names are length-prefixed with a u16: nothing longer can be published.
pub const MAX_TOPIC_BYTES: usize = 65_535;

const REQUEST_SUFFIX: &str = "user_input";
const REPLY_LEVEL: &str = "assistant_response";
const STREAM_LEVEL: &str = "assistant_stream";

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

/// A configured project name (first topic level). Non-empty, ≤ 64 bytes, no '/', '+', '#', NUL or control chars,
/// and no whitespace (the `--projects` list syntax could not express it).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProjectName(String);

impl ProjectName {
    /// Validates `s` as is (no trimming: a name with surrounding spaces is refused, not repaired).
    pub fn try_new(s: &str) -> Result<Self, TopicError> {
        if s.is_empty() {
            return Err(TopicError::EmptyProjectName);
        }
        if s.len() > MAX_PROJECT_NAME_BYTES {
            return Err(TopicError::ProjectNameTooLong {
                len: s.len(),
                max: MAX_PROJECT_NAME_BYTES,
            });
        }
        if let Some(ch) = s.chars().find(|&c| is_structural_or_control(c) || c.is_whitespace()) {
            return Err(TopicError::ProjectNameForbiddenChar { name: s.to_owned(), ch });
        }
        Ok(Self(s.to_owned()))
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
        if s.is_empty() {
            return Err(TopicError::EmptySessionId);
        }
        if s.len() > MAX_SESSION_ID_BYTES {
            return Err(TopicError::SessionIdTooLong {
                len: s.len(),
                max: MAX_SESSION_ID_BYTES,
            });
        }
        if let Some(ch) = s.chars().find(|&c| is_structural_or_control(c)) {
            return Err(TopicError::SessionIdForbiddenChar { ch });
        }
        Ok(Self(s.to_owned()))
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
    if topic.is_empty() {
        return Err(TopicFallback::Empty);
    }
    if topic.contains(['#', '+']) {
        return Err(TopicFallback::Wildcard);
    }
    if topic.contains('\0') {
        return Err(TopicFallback::NulChar);
    }
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
    if t.is_empty() {
        return Err(TopicFallback::Empty);
    }
    if t.contains(['#', '+']) {
        return Err(TopicFallback::Wildcard);
    }
    if t.contains('\0') {
        return Err(TopicFallback::NulChar);
    }
    if t.len() > MAX_TOPIC_BYTES {
        return Err(TopicFallback::TooLong);
    }
    Ok(t.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn project(s: &str) -> ProjectName {
        ProjectName::try_new(s).unwrap()
    }

    #[test]
    fn project_name_table() {
        let long = "p".repeat(MAX_PROJECT_NAME_BYTES);
        let too_long = "p".repeat(MAX_PROJECT_NAME_BYTES + 1);
        let forbidden = |name: &str, ch| {
            Err(TopicError::ProjectNameForbiddenChar {
                name: name.to_owned(),
                ch,
            })
        };
        let cases: Vec<(&str, Result<&str, TopicError>)> = vec![
            ("general", Ok("general")),
            ("prompt_portal", Ok("prompt_portal")),
            ("maze-2.v1", Ok("maze-2.v1")),
            ("проект", Ok("проект")),
            (&long, Ok(&long)),
            ("", Err(TopicError::EmptyProjectName)),
            (
                &too_long,
                Err(TopicError::ProjectNameTooLong {
                    len: MAX_PROJECT_NAME_BYTES + 1,
                    max: MAX_PROJECT_NAME_BYTES,
                }),
            ),
            ("a/b", forbidden("a/b", '/')),
            ("a+", forbidden("a+", '+')),
            ("#", forbidden("#", '#')),
            ("a\0", forbidden("a\0", '\0')),
            ("a\u{7f}", forbidden("a\u{7f}", '\u{7f}')),
            ("a\nb", forbidden("a\nb", '\n')),
            ("a b", forbidden("a b", ' ')),
            (" a", forbidden(" a", ' ')),
        ];
        for (input, want) in cases {
            let got = ProjectName::try_new(input);
            match want {
                Ok(name) => assert_eq!(got.unwrap().as_str(), name, "input {input:?}"),
                Err(e) => assert_eq!(got, Err(e), "input {input:?}"),
            }
        }
    }

    #[test]
    fn project_list_table() {
        let cases: Vec<(&str, Result<Vec<&str>, TopicError>)> = vec![
            ("general", Ok(vec!["general"])),
            ("a,b c", Ok(vec!["a", "b", "c"])),
            ("a, b ,c", Ok(vec!["a", "b", "c"])),
            ("  maze\tdriving\n", Ok(vec!["maze", "driving"])),
            ("a,,b", Ok(vec!["a", "b"])),
            ("b,a,b,a", Ok(vec!["b", "a"])),
            ("", Err(TopicError::EmptyProjectList)),
            (" , ,, ", Err(TopicError::EmptyProjectList)),
            (
                "a,b/c",
                Err(TopicError::ProjectNameForbiddenChar {
                    name: "b/c".to_owned(),
                    ch: '/',
                }),
            ),
        ];
        for (input, want) in cases {
            let got = parse_project_list(input);
            let got = got.map(|v| v.iter().map(|p| p.as_str().to_owned()).collect::<Vec<_>>());
            let want = want.map(|v| v.into_iter().map(str::to_owned).collect::<Vec<_>>());
            assert_eq!(got, want, "input {input:?}");
        }
    }

    #[test]
    fn session_id_table() {
        let max = "s".repeat(MAX_SESSION_ID_BYTES);
        let over = "s".repeat(MAX_SESSION_ID_BYTES + 1);
        let padded_max = format!("  {max}\t");
        // 64 two-byte characters = 128 bytes; one more is 130.
        let wide = "é".repeat(64);
        let wide_over = "é".repeat(65);
        let forbidden = |ch| Err(TopicError::SessionIdForbiddenChar { ch });
        let cases: Vec<(&str, Result<&str, TopicError>)> = vec![
            ("abc", Ok("abc")),
            ("  abc \n", Ok("abc")),
            ("user1-0123456789", Ok("user1-0123456789")),
            ("user 1", Ok("user 1")),
            ("42", Ok("42")),
            (&max, Ok(&max)),
            (&padded_max, Ok(&max)),
            (&wide, Ok(&wide)),
            ("", Err(TopicError::EmptySessionId)),
            ("   \t", Err(TopicError::EmptySessionId)),
            (
                &over,
                Err(TopicError::SessionIdTooLong {
                    len: 129,
                    max: MAX_SESSION_ID_BYTES,
                }),
            ),
            (
                &wide_over,
                Err(TopicError::SessionIdTooLong {
                    len: 130,
                    max: MAX_SESSION_ID_BYTES,
                }),
            ),
            ("a+b", forbidden('+')),
            ("a#", forbidden('#')),
            ("s/c", forbidden('/')),
            ("a\0b", forbidden('\0')),
            ("a\nb", forbidden('\n')),
            ("a\u{1b}[31m", forbidden('\u{1b}')),
            ("a\u{85}b", forbidden('\u{85}')),
        ];
        for (input, want) in cases {
            let got = SessionId::try_new(input);
            match want {
                Ok(id) => assert_eq!(got.unwrap().as_str(), id, "input {input:?}"),
                Err(e) => assert_eq!(got, Err(e), "input {input:?}"),
            }
        }
    }

    #[test]
    fn generated_default_session_is_default_dash_8_lowercase_hex() {
        let a = SessionId::generate_default();
        let b = SessionId::generate_default();
        for s in [&a, &b] {
            let hex = s.as_str().strip_prefix("default-").unwrap();
            assert_eq!(hex.len(), 8, "{s}");
            assert!(
                hex.chars().all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)),
                "{s}"
            );
            assert_eq!(SessionId::try_new(s.as_str()).as_ref(), Ok(s));
        }
        // 2^-32 chance of a false failure.
        assert_ne!(a, b);
    }

    #[test]
    fn topic_formats() {
        let p = project("general");
        let s = SessionId::try_new("s1").unwrap();
        assert_eq!(request_topic(&p), "general/user_input");
        assert_eq!(reply_base(&p), "general/assistant_response");
        assert_eq!(stream_base(&p), "general/assistant_stream");
        assert_eq!(default_reply_topic(&p, &s), "general/assistant_response/s1");
        assert_eq!(default_stream_topic(&p, &s), "general/assistant_stream/s1");
    }

    #[test]
    fn request_filter_matches_exact_request_topics_only() {
        let projects = vec![project("general"), project("maze"), project("gen")];
        let cases: Vec<(&str, Option<&str>)> = vec![
            ("general/user_input", Some("general")),
            ("maze/user_input", Some("maze")),
            ("gen/user_input", Some("gen")),
            ("other/user_input", None),
            ("general/user_input/", None),
            ("general/user_input/s1", None),
            ("general/user_inputs", None),
            ("generaluser_input", None),
            ("/general/user_input", None),
            ("general//user_input", None),
            ("user_input", None),
            ("/user_input", None),
            ("maze/state", None),
            ("general/assistant_response/s1", None),
            ("", None),
        ];
        for (topic, want) in cases {
            let got = request_filter_project(topic, &projects).map(ProjectName::as_str);
            assert_eq!(got, want, "topic {topic:?}");
        }
        assert_eq!(request_filter_project("general/user_input", &[]), None);
    }

    /// seed-protocol §1.4 accept/reject table, base `general/assistant_response`, session `s1`.
    #[test]
    fn reply_topic_table() {
        let base = "general/assistant_response";
        let long_suffix = "x".repeat(MAX_TOPIC_BYTES);
        let too_long = json!(format!("{base}/{long_suffix}"));
        let cases: Vec<(Value, Result<&str, TopicFallback>)> = vec![
            // Accepted.
            (
                json!("general/assistant_response/s1"),
                Ok("general/assistant_response/s1"),
            ),
            (
                json!("general/assistant_response/s1/client7/req9"),
                Ok("general/assistant_response/s1/client7/req9"),
            ),
            (
                json!("general/assistant_response/s/c/r"),
                Ok("general/assistant_response/s/c/r"),
            ),
            // The first segment need not be the session id.
            (
                json!("general/assistant_response/other"),
                Ok("general/assistant_response/other"),
            ),
            // Trailing slashes stripped, surrounding whitespace trimmed.
            (
                json!("general/assistant_response/s1/"),
                Ok("general/assistant_response/s1"),
            ),
            (
                json!("general/assistant_response/s1///"),
                Ok("general/assistant_response/s1"),
            ),
            (
                json!("  general/assistant_response/s1 \n"),
                Ok("general/assistant_response/s1"),
            ),
            (
                json!(" general/assistant_response/s1/ "),
                Ok("general/assistant_response/s1"),
            ),
            // Inner empty levels are kept as given (the original did not touch them).
            (
                json!("general/assistant_response//s1"),
                Ok("general/assistant_response//s1"),
            ),
            (
                json!("general/assistant_response/s 1"),
                Ok("general/assistant_response/s 1"),
            ),
            // Not a string.
            (Value::Null, Err(TopicFallback::NotString)),
            (json!(42), Err(TopicFallback::NotString)),
            (json!(true), Err(TopicFallback::NotString)),
            (
                json!({"topic": "general/assistant_response/s1"}),
                Err(TopicFallback::NotString),
            ),
            (json!(["general/assistant_response/s1"]), Err(TopicFallback::NotString)),
            // Empty.
            (json!(""), Err(TopicFallback::Empty)),
            (json!("  \t "), Err(TopicFallback::Empty)),
            // Wildcards anywhere.
            (json!("general/assistant_response/+"), Err(TopicFallback::Wildcard)),
            (json!("general/assistant_response/#"), Err(TopicFallback::Wildcard)),
            (json!("general/assistant_response/s1/#"), Err(TopicFallback::Wildcard)),
            (json!("general/assistant_response/a+b"), Err(TopicFallback::Wildcard)),
            (json!("other/assistant_response/#"), Err(TopicFallback::Wildcard)),
            // Wrong prefix: other project, the base alone, a look-alike level, other topic families.
            (json!("maze/assistant_response/s1"), Err(TopicFallback::WrongPrefix)),
            (json!("general/assistant_response"), Err(TopicFallback::WrongPrefix)),
            (json!("general/assistant_responses/s1"), Err(TopicFallback::WrongPrefix)),
            (json!("general/assistant_stream/s1"), Err(TopicFallback::WrongPrefix)),
            (json!("general/user_input"), Err(TopicFallback::WrongPrefix)),
            (json!("/general/assistant_response/s1"), Err(TopicFallback::WrongPrefix)),
            (json!("General/assistant_response/s1"), Err(TopicFallback::WrongPrefix)),
            // Empty suffix.
            (json!("general/assistant_response/"), Err(TopicFallback::EmptySuffix)),
            (json!("general/assistant_response///"), Err(TopicFallback::EmptySuffix)),
            (json!(" general/assistant_response/ "), Err(TopicFallback::EmptySuffix)),
            // Unpublishable.
            (json!("general/assistant_response/s\u{0}1"), Err(TopicFallback::NulChar)),
            (too_long, Err(TopicFallback::TooLong)),
        ];
        for (candidate, want) in cases {
            let got = validate_client_topic(base, &candidate);
            assert_eq!(got.as_deref().map_err(|e| *e), want, "candidate {candidate}");
        }
    }

    #[test]
    fn client_topic_uses_the_given_base() {
        let base = "maze/assistant_stream";
        assert_eq!(
            validate_client_topic(base, &json!("maze/assistant_stream/s1/c/")).as_deref(),
            Ok("maze/assistant_stream/s1/c")
        );
        assert_eq!(
            validate_client_topic(base, &json!("maze/assistant_response/s1")),
            Err(TopicFallback::WrongPrefix)
        );
    }

    #[test]
    fn response_topic_table() {
        let too_long = "t".repeat(MAX_TOPIC_BYTES + 1);
        let max = "t".repeat(MAX_TOPIC_BYTES);
        let cases: Vec<(&str, Result<&str, TopicFallback>)> = vec![
            ("replies/abc", Ok("replies/abc")),
            ("general/assistant_response/s1", Ok("general/assistant_response/s1")),
            ("other-project/anything/at/all/", Ok("other-project/anything/at/all/")),
            (" spaced ", Ok(" spaced ")),
            ("/", Ok("/")),
            (&max, Ok(&max)),
            ("", Err(TopicFallback::Empty)),
            ("a/+/b", Err(TopicFallback::Wildcard)),
            ("a/#", Err(TopicFallback::Wildcard)),
            ("a\0b", Err(TopicFallback::NulChar)),
            (&too_long, Err(TopicFallback::TooLong)),
        ];
        for (t, want) in cases {
            let got = validate_response_topic(t);
            assert_eq!(got.as_deref().map_err(|e| *e), want, "topic {t:?}");
        }
    }

    #[test]
    fn fallback_labels_are_snake_case_and_distinct() {
        let all = [
            TopicFallback::NotString,
            TopicFallback::Empty,
            TopicFallback::Wildcard,
            TopicFallback::WrongPrefix,
            TopicFallback::EmptySuffix,
            TopicFallback::NulChar,
            TopicFallback::TooLong,
        ];
        let labels: Vec<&str> = all.iter().map(|f| f.as_str()).collect();
        assert_eq!(
            labels,
            [
                "not_string",
                "empty",
                "wildcard",
                "wrong_prefix",
                "empty_suffix",
                "nul_char",
                "too_long"
            ]
        );
        assert_eq!(TopicFallback::WrongPrefix.to_string(), "wrong_prefix");
    }

    #[test]
    fn topic_error_messages_name_the_rule() {
        assert_eq!(
            TopicError::SessionIdTooLong { len: 129, max: 128 }.to_string(),
            "session id is 129 bytes, the limit is 128"
        );
        assert_eq!(
            TopicError::SessionIdForbiddenChar { ch: '#' }.to_string(),
            "session id contains the forbidden character '#'"
        );
        assert_eq!(
            TopicError::ProjectNameForbiddenChar {
                name: "a/b".into(),
                ch: '/'
            }
            .to_string(),
            "project name \"a/b\" contains the forbidden character '/'"
        );
        assert_eq!(TopicError::EmptyProjectList.to_string(), "project list is empty");
    }
}
