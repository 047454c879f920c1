//! One request field's JSON value to its typed value, or the [`RequestError`] that refuses it.

use serde_json::Value;

use super::{MAX_REQUEST_ID_BYTES, RequestError, SamplingOverrides, SessionId};

/// `sessionId`: absent, null or blank → a fresh `default-…` session; strings are trimmed; numbers and booleans use
/// their JSON text (the original `str()`ed them); anything else, or text breaking the [`SessionId`] rules → `None`.
pub(super) fn session_from(value: Option<&Value>) -> Option<SessionId> {
    let text = match value {
        None | Some(Value::Null) => return Some(SessionId::generate_default()),
        Some(Value::String(s)) if s.trim().is_empty() => {
            return Some(SessionId::generate_default());
        }
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::Bool(b)) => b.to_string(),
        Some(Value::Array(_) | Value::Object(_)) => return None,
    };
    SessionId::try_new(&text).ok()
}

/// `requestId` (numbers allowed) / `clientId` (strings only): trimmed, 1-128 bytes, no control characters; anything
/// else is ignored (they are correlation and log aids, never a reason to refuse a request).
pub(super) fn id_text_from(value: Option<&Value>, allow_number: bool) -> Option<String> {
    let text = match value {
        Some(Value::String(s)) => s.trim().to_owned(),
        Some(Value::Number(n)) if allow_number => n.to_string(),
        _ => return None,
    };
    let usable = !text.is_empty() && text.len() <= MAX_REQUEST_ID_BYTES && !text.chars().any(char::is_control);
    usable.then_some(text)
}

/// 16 random lowercase hex digits.
pub(super) fn generate_request_id() -> String {
    format!("{:016x}", rand::random::<u64>())
}

pub(super) fn message_from(value: Option<&Value>) -> Result<String, RequestError> {
    match value {
        None => Err(RequestError::MissingMessage),
        Some(Value::String(s)) => {
            let message = s.trim();
            if message.is_empty() {
                Err(RequestError::EmptyMessage)
            } else {
                Ok(message.to_owned())
            }
        }
        Some(_) => Err(RequestError::MessageNotString),
    }
}

pub(super) fn invalid(field: &'static str, reason: impl Into<String>) -> RequestError {
    RequestError::InvalidParam {
        field,
        reason: reason.into(),
    }
}

/// A present, non-null JSON number as f64; `Err(())` for any other type.
fn number(value: Option<&Value>) -> Result<Option<f64>, ()> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n.as_f64().map(Some).ok_or(()),
        Some(_) => Err(()),
    }
}

pub(super) fn temperature_from(value: Option<&Value>) -> Result<Option<f32>, RequestError> {
    let err = || invalid("temperature", "must be a number between 0 and 2");
    match number(value).map_err(|()| err())? {
        None => Ok(None),
        Some(t) if t.is_finite() && (0.0..=2.0).contains(&t) => Ok(Some(t as f32)),
        Some(_) => Err(err()),
    }
}

/// `topP`: 0 to 1. `0` (the web chat's slider reaches it) keeps only the most likely token, which is greedy
/// decoding; it comes back as `Some(0.0)` and [`SamplingOverrides::greedy_when_top_p_is_zero`] turns it into what
/// the engine accepts.
pub(super) fn top_p_from(value: Option<&Value>) -> Result<Option<f32>, RequestError> {
    let err = || invalid("topP", "must be a number between 0 and 1");
    match number(value).map_err(|()| err())? {
        None => Ok(None),
        Some(p) if p.is_finite() && (0.0..=1.0).contains(&p) => Ok(Some(p as f32)),
        Some(_) => Err(err()),
    }
}

impl SamplingOverrides {
    /// `topP: 0` as greedy decoding: vLLM refuses `top_p` 0 (it must be in (0, 1]), so the request is sent as
    /// `temperature` 0 with the configured `top_p` (greedy sampling ignores it), exactly as `temperature: 0` is.
    /// Any `temperature` the request also gave is overridden: only the top token can be chosen either way.
    pub(super) fn greedy_when_top_p_is_zero(self) -> Self {
        match self.top_p {
            // (A float pattern compares with `==`: `-0.0` matches too.)
            Some(0.0) => Self {
                temperature: Some(0.0),
                top_p: None,
                ..self
            },
            _ => self,
        }
    }
}

/// An integer-valued JSON number (`512` or `512.0`) in `1..=limit`.
pub(super) fn max_tokens_from(value: Option<&Value>, limit: u32) -> Result<Option<u32>, RequestError> {
    let err = || invalid("maxTokens", format!("must be an integer between 1 and {limit}"));
    match number(value).map_err(|()| err())? {
        None => Ok(None),
        Some(n) if n.fract() == 0.0 && n >= 1.0 && n <= f64::from(limit) => Ok(Some(n as u32)),
        Some(_) => Err(err()),
    }
}

/// `systemPrompt`: absent, null or blank → `None`; a string → trimmed; other types → invalid.
pub(super) fn system_prompt_from(value: Option<&Value>) -> Result<Option<String>, RequestError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => {
            let prompt = s.trim();
            Ok((!prompt.is_empty()).then(|| prompt.to_owned()))
        }
        Some(_) => Err(invalid("systemPrompt", "must be a string")),
    }
}
