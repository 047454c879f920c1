//! Control payloads, pure: a message on `{p}/template[/sid]`, `{p}/clear_history[/sid]` or
//! `{p}/delete_session[/sid]` becomes a [`ControlCommand`] or a [`ControlError`] (sent back as an error notice).
//!
//! The payload keys are the successor's (seed-protocol §2, L:1615-1707): the template text from `template` |
//! `system_prompt` | `prompt_template` (a string, or an object whose `.content` or `.template` is one); `reset`
//! (default true); the session from the topic suffix, `session_id`, `sessionId` or `target`. Its defects are fixed:
//! a payload that names no session is refused instead of meaning "every session", and the whole project is only
//! ever targeted by an explicit `"all"` (`"target":"all"`, or the suffix `/all`); an empty payload is refused.

use serde_json::{Map, Value};

use crate::topics::{ALL_SESSIONS, ControlAction, SessionId};

/// Which sessions a control message acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlTarget {
    Session(SessionId),
    /// Every session of the project (explicit `"all"` only).
    All,
}

impl ControlTarget {
    /// The notice topic's last level: the session id or `all`.
    pub fn suffix(&self) -> &str {
        match self {
            Self::Session(s) => s.as_str(),
            Self::All => ALL_SESSIONS,
        }
    }
}

/// What a valid control message does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlOp {
    /// Set the system prompt (`prompt`: trimmed, never empty); with `reset` (default true) clear the history too.
    Template {
        prompt: String,
        reset: bool,
    },
    ClearHistory,
    DeleteSession,
}

impl ControlOp {
    pub fn action(&self) -> ControlAction {
        match self {
            Self::Template { .. } => ControlAction::Template,
            Self::ClearHistory => ControlAction::ClearHistory,
            Self::DeleteSession => ControlAction::DeleteSession,
        }
    }
}

/// A valid control message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlCommand {
    pub op: ControlOp,
    pub target: ControlTarget,
    /// The payload's `clientId`, for session ownership.
    pub client_id: Option<String>,
}

/// Why a control message was refused; `Display` is the `{"error": ...}` notice text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    #[error("payload too large (over {max} bytes)")]
    TooLarge { max: usize },
    #[error("empty payload: name the session (topic suffix, sessionId) or \"target\":\"all\"")]
    Empty,
    #[error("payload is not a JSON object")]
    NotObject,
    #[error("no target: name the session (topic suffix, sessionId) or \"target\":\"all\"")]
    NoTarget,
    #[error("{0} must be a string")]
    NotString(&'static str),
    #[error("invalid session id in {field}: {reason}")]
    BadSession { field: &'static str, reason: String },
    #[error("conflicting targets: {0} and {1} name different sessions")]
    Conflict(&'static str, &'static str),
    #[error("no template: give template, system_prompt or prompt_template")]
    NoTemplate,
    #[error("reset must be true or false")]
    BadReset,
}

impl ControlError {
    /// Stable label (the `outcome` of `mqtt_llm_control_messages_total`).
    pub fn code(&self) -> &'static str {
        match self {
            Self::TooLarge { .. } => "too_large",
            Self::Empty => "empty",
            Self::NotObject => "not_object",
            Self::NoTarget => "no_target",
            Self::NotString(_) | Self::BadReset => "bad_type",
            Self::BadSession { .. } => "bad_session",
            Self::Conflict(..) => "conflict",
            Self::NoTemplate => "no_template",
        }
    }
}

/// Which session a refused control message is about, as far as it can be told (the topic suffix, else the
/// payload's `session_id`, `sessionId` or `target`): its error notice goes to that session's notice topic, else to
/// the project's `all` notice topic.
pub fn notice_session(suffix: Option<&str>, payload: &[u8]) -> Option<SessionId> {
    let from_payload = || match serde_json::from_slice::<Value>(payload) {
        Ok(Value::Object(obj)) => ["session_id", "sessionId", "target"]
            .into_iter()
            .find_map(|k| obj.get(k).and_then(Value::as_str).map(str::to_owned)),
        _ => None,
    };
    suffix
        .map(str::to_owned)
        .or_else(from_payload)
        .filter(|s| !s.trim().eq_ignore_ascii_case(ALL_SESSIONS))
        .and_then(|s| SessionId::try_new(&s).ok())
}

/// Parse a control message of `action` whose topic ended in `/{suffix}` (if it did); payloads over `max_bytes`
/// (the request limit, `--max-payload-bytes`) are refused unread.
pub fn parse_control(
    action: ControlAction,
    suffix: Option<&str>,
    payload: &[u8],
    max_bytes: usize,
) -> Result<ControlCommand, ControlError> {
    if payload.len() > max_bytes {
        return Err(ControlError::TooLarge { max: max_bytes });
    }
    if payload.trim_ascii().is_empty() {
        return Err(ControlError::Empty);
    }
    let Ok(Value::Object(obj)) = serde_json::from_slice::<Value>(payload) else {
        return Err(ControlError::NotObject);
    };
    let target = target_from(suffix, &obj)?;
    let op = match action {
        ControlAction::Template => ControlOp::Template {
            prompt: template_from(&obj)?,
            reset: reset_from(&obj)?,
        },
        ControlAction::ClearHistory => ControlOp::ClearHistory,
        ControlAction::DeleteSession => ControlOp::DeleteSession,
    };
    let client_id = match obj.get("clientId") {
        Some(Value::String(s)) if !s.trim().is_empty() => Some(s.trim().to_owned()),
        _ => None,
    };
    Ok(ControlCommand { op, target, client_id })
}

/// The target named by the topic suffix and the keys `session_id`, `sessionId`, `target`: those present must agree.
fn target_from(suffix: Option<&str>, obj: &Map<String, Value>) -> Result<ControlTarget, ControlError> {
    let mut found: Option<(&'static str, ControlTarget)> = None;
    let named = suffix
        .map(|s| ("topic suffix", Value::String(s.to_owned())))
        .into_iter()
        .chain(
            ["session_id", "sessionId", "target"]
                .into_iter()
                .filter_map(|k| obj.get(k).filter(|v| !v.is_null()).map(|v| (k, v.clone()))),
        );
    for (field, value) in named {
        let Value::String(raw) = value else {
            return Err(ControlError::NotString(field));
        };
        let target = if raw.trim().eq_ignore_ascii_case(ALL_SESSIONS) {
            ControlTarget::All
        } else {
            SessionId::try_new(&raw)
                .map(ControlTarget::Session)
                .map_err(|e| ControlError::BadSession {
                    field,
                    reason: e.to_string(),
                })?
        };
        match &found {
            None => found = Some((field, target)),
            Some((first, t)) if *t != target => return Err(ControlError::Conflict(first, field)),
            Some(_) => {}
        }
    }
    found.map(|(_, t)| t).ok_or(ControlError::NoTarget)
}

/// `template` | `system_prompt` | `prompt_template`, the first present; an object gives its `.content` or
/// `.template`.
fn template_from(obj: &Map<String, Value>) -> Result<String, ControlError> {
    for key in ["template", "system_prompt", "prompt_template"] {
        let text = match obj.get(key) {
            None | Some(Value::Null) => continue,
            Some(Value::String(s)) => s.as_str(),
            Some(Value::Object(inner)) => match inner.get("content").or_else(|| inner.get("template")) {
                Some(Value::String(s)) => s.as_str(),
                _ => return Err(ControlError::NotString(key)),
            },
            Some(_) => return Err(ControlError::NotString(key)),
        };
        let text = text.trim();
        if text.is_empty() {
            return Err(ControlError::NoTemplate);
        }
        return Ok(text.to_owned());
    }
    Err(ControlError::NoTemplate)
}

fn reset_from(obj: &Map<String, Value>) -> Result<bool, ControlError> {
    match obj.get("reset") {
        None | Some(Value::Null) => Ok(true),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(ControlError::BadReset),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const T: ControlAction = ControlAction::Template;
    const C: ControlAction = ControlAction::ClearHistory;
    const D: ControlAction = ControlAction::DeleteSession;

    fn parse(action: ControlAction, suffix: Option<&str>, v: Value) -> Result<ControlCommand, ControlError> {
        parse_control(action, suffix, v.to_string().as_bytes(), MAX)
    }

    const MAX: usize = 1024;

    fn session(s: &str) -> ControlTarget {
        ControlTarget::Session(SessionId::try_new(s).unwrap())
    }

    #[test]
    fn every_template_key_form() {
        for payload in [
            json!({"sessionId": "s1", "template": "Be brief."}),
            json!({"sessionId": "s1", "template": {"content": "Be brief."}}),
            json!({"sessionId": "s1", "template": {"template": "Be brief."}}),
            json!({"sessionId": "s1", "system_prompt": " Be brief. "}),
            json!({"sessionId": "s1", "prompt_template": "Be brief."}),
            json!({"sessionId": "s1", "prompt_template": {"content": "Be brief.", "title": "x"}}),
            json!({"sessionId": "s1", "prompt_template": {"template": "Be brief."}}),
            // OwOGPT's persona change (OWO/mqtt_client.py:183-200).
            json!({"sessionId": "s1", "systemPrompt": "old", "template": {"content": "Be brief."}, "reset": true}),
        ] {
            let cmd = parse(T, None, payload.clone()).unwrap();
            let want = ControlOp::Template {
                prompt: "Be brief.".into(),
                reset: true,
            };
            assert_eq!(cmd.op, want, "{payload}: reset defaults to true");
            assert_eq!(cmd.target, session("s1"));
        }
    }

    #[test]
    fn template_errors() {
        assert_eq!(parse(T, Some("s1"), json!({})), Err(ControlError::NoTemplate));
        assert_eq!(
            parse(T, Some("s1"), json!({"template": "  "})),
            Err(ControlError::NoTemplate)
        );
        assert_eq!(
            parse(T, Some("s1"), json!({"template": 5})),
            Err(ControlError::NotString("template"))
        );
        assert_eq!(
            parse(T, Some("s1"), json!({"prompt_template": {"title": "x"}})),
            Err(ControlError::NotString("prompt_template"))
        );
        assert_eq!(
            parse(T, Some("s1"), json!({"template": "x", "reset": "no"})),
            Err(ControlError::BadReset)
        );
        let kept = parse(T, Some("s1"), json!({"template": "x", "reset": false})).unwrap();
        assert_eq!(
            kept.op,
            ControlOp::Template {
                prompt: "x".into(),
                reset: false
            }
        );
    }

    #[test]
    fn every_target_form() {
        for (suffix, payload, want) in [
            (Some("s1"), json!({}), session("s1")),
            (None, json!({"session_id": "s1"}), session("s1")),
            (None, json!({"sessionId": " s1 "}), session("s1")),
            (None, json!({"target": "s1"}), session("s1")),
            (None, json!({"target": "all"}), ControlTarget::All),
            (None, json!({"target": "ALL"}), ControlTarget::All),
            (Some("all"), json!({}), ControlTarget::All),
            // OwOGPT's delete (OWO/mqtt_client.py:203-220): suffix and sessionId agree.
            (Some("s1"), json!({"sessionId": "s1", "target": "s1"}), session("s1")),
            (None, json!({"sessionId": null, "target": "all"}), ControlTarget::All),
        ] {
            for action in [C, D] {
                assert_eq!(
                    parse(action, suffix, payload.clone()).unwrap().target,
                    want,
                    "{payload}"
                );
            }
            let mut with_template = payload.as_object().unwrap().clone();
            with_template.insert("template".into(), json!("p"));
            assert_eq!(parse(T, suffix, Value::Object(with_template)).unwrap().target, want);
        }
    }

    #[test]
    fn no_target_is_refused_not_everything() {
        for action in [T, C, D] {
            assert_eq!(parse_control(action, None, b"", MAX), Err(ControlError::Empty));
            assert_eq!(
                parse_control(action, Some("s1"), b"  \n", MAX),
                Err(ControlError::Empty)
            );
            assert_eq!(
                parse(action, None, json!({"template": "x"})),
                Err(ControlError::NoTarget)
            );
            assert_eq!(
                parse_control(action, None, b"not json", MAX),
                Err(ControlError::NotObject)
            );
            assert_eq!(parse_control(action, None, b"[1]", MAX), Err(ControlError::NotObject));
        }
    }

    #[test]
    fn oversized_payloads_are_refused_unread() {
        let big = format!(r#"{{"sessionId":"s1","template":"{}"}}"#, "x".repeat(MAX));
        assert_eq!(
            parse_control(T, None, big.as_bytes(), MAX),
            Err(ControlError::TooLarge { max: MAX })
        );
    }

    #[test]
    fn target_errors() {
        assert_eq!(
            parse(C, None, json!({"sessionId": 5})),
            Err(ControlError::NotString("sessionId"))
        );
        assert_eq!(
            parse(C, Some("s1"), json!({"sessionId": "s2"})),
            Err(ControlError::Conflict("topic suffix", "sessionId"))
        );
        assert_eq!(
            parse(D, None, json!({"sessionId": "s1", "target": "all"})),
            Err(ControlError::Conflict("sessionId", "target"))
        );
        assert!(matches!(
            parse(C, None, json!({"sessionId": "a+b"})),
            Err(ControlError::BadSession { field: "sessionId", .. })
        ));
        assert!(matches!(
            parse_control(C, Some("a#"), b"{}", MAX),
            Err(ControlError::BadSession {
                field: "topic suffix",
                ..
            })
        ));
    }

    #[test]
    fn client_id_is_read_for_ownership() {
        let cmd = parse(C, Some("s1"), json!({"clientId": "devA"})).unwrap();
        assert_eq!(cmd.client_id.as_deref(), Some("devA"));
        assert_eq!(parse(C, Some("s1"), json!({"clientId": 3})).unwrap().client_id, None);
    }

    #[test]
    fn error_notices_find_their_session() {
        let sid =
            |suffix: Option<&str>, payload: &str| notice_session(suffix, payload.as_bytes()).map(|s| s.to_string());
        assert_eq!(sid(Some("s1"), ""), Some("s1".into()));
        assert_eq!(sid(None, r#"{"sessionId": "s2", "template": 5}"#), Some("s2".into()));
        assert_eq!(sid(None, r#"{"target": "all"}"#), None);
        assert_eq!(sid(None, "junk"), None);
        assert_eq!(sid(Some("a#b"), "{}"), None);
    }

    #[test]
    fn error_codes_are_stable() {
        assert_eq!(ControlError::Empty.code(), "empty");
        assert_eq!(ControlError::NoTarget.code(), "no_target");
        assert_eq!(ControlError::BadReset.code(), "bad_type");
    }
}
