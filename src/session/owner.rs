//! Session ownership: who may use a conversation.
//!
//! Under [`OwnerMode::Client`] a session is bound to the client that created it. A request's client is resolved
//! once, at intake, by [`resolve_client_id`]: the request's `clientId` field, else its MQTT 5 user property
//! [`CLIENT_ID_PROPERTY`], else the client segment of its reply topic ([`reply_client_segment`]); those present
//! must agree. The intake then claims the session for that [`Owner`] ([`super::SessionStore::claim`]) before the
//! request is queued, so of two first requests from different clients exactly one wins; the lane worker checks
//! again when it builds the prompt and commits the turn, in case the session was forgotten (idle expiry, eviction)
//! and claimed anew while the request waited. Under [`OwnerMode::None`] (the default, the original's behaviour)
//! nothing is checked.

use mqtt_llm_protocol::topics::{ProjectName, reply_base};
use mqtt_llm_protocol::wire::{ChatRequest, MAX_REQUEST_ID_BYTES, V5Props};

/// The MQTT 5 user property that names a request's client when the payload has no `clientId` field.
pub const CLIENT_ID_PROPERTY: &str = "clientId";

/// How a project's sessions are owned (`--session-owner`, per project `session_owner`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum OwnerMode {
    /// Any request may use any session of the project (the original server's behaviour).
    #[default]
    None,
    /// A session belongs to the client id that created it.
    Client,
}

/// Who a session belongs to, and who a request speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    /// [`OwnerMode::None`]: not checked; such a request may use any session.
    Unchecked,
    /// [`OwnerMode::Client`], but the request names no client: it may only use sessions created the same way.
    Anonymous,
    /// [`OwnerMode::Client`]: bound to this client id.
    Client(String),
}

impl Owner {
    /// Who a request with the (resolved) `client_id` speaks for under `mode`.
    pub fn of(mode: OwnerMode, client_id: Option<&str>) -> Self {
        match (mode, client_id) {
            (OwnerMode::None, _) => Self::Unchecked,
            (OwnerMode::Client, None) => Self::Anonymous,
            (OwnerMode::Client, Some(id)) => Self::Client(id.to_owned()),
        }
    }

    /// Whether a request speaking for `self` may use a session that belongs to `session_owner`.
    pub fn may_use(&self, session_owner: &Owner) -> bool {
        *self == Self::Unchecked || self == session_owner
    }
}

/// A request refused for ownership. `Display` is the reply text without the `Error: ` prefix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OwnerRefusal {
    /// The session is bound to another client (or to none, for a request that names one).
    #[error("session belongs to another client")]
    OtherOwner,
    /// The `clientId` field, the user property and the reply topic name different clients.
    #[error("conflicting client ids (the clientId field, the clientId user property and the reply topic must agree)")]
    ConflictingClientIds,
}

impl OwnerRefusal {
    /// Stable code: the `reason` label of `mqtt_llm_requests_rejected_total`.
    pub fn code(&self) -> &'static str {
        match self {
            Self::OtherOwner => "session_owner",
            Self::ConflictingClientIds => "conflicting_client_id",
        }
    }

    /// The reply payload.
    pub fn reply_text(&self) -> String {
        format!("Error: {self}")
    }
}

/// The client segment of a reply topic: the second level after `{project}/assistant_response/`, as the original's
/// clients form their reply topics (`{p}/assistant_response/{sessionId}/{clientId}/{requestId}`). `None` for the
/// default topic `{p}/assistant_response/{sessionId}` (one level), an empty second level, or a topic elsewhere
/// (a Response Topic under one of the project's `reply_prefixes`).
pub fn reply_client_segment<'a>(project: &ProjectName, topic: &'a str) -> Option<&'a str> {
    let base = reply_base(project);
    let rest = topic.strip_prefix(base.as_str())?.strip_prefix('/')?;
    rest.split('/').nth(1).filter(|segment| !segment.is_empty())
}

/// The client a request speaks for: its `clientId` field, else the [`CLIENT_ID_PROPERTY`] user property, else the
/// client segment of its reply topic; `None` when it names none. Every one of them that is present must name the
/// same client, so a request cannot claim one client's session while its replies go to another client's topic.
/// A user property that is blank, longer than [`MAX_REQUEST_ID_BYTES`] or holds a control character is ignored,
/// as such a `clientId` field is.
pub fn resolve_client_id(request: &ChatRequest, props: &V5Props) -> Result<Option<String>, OwnerRefusal> {
    let property = props
        .client_id
        .as_deref()
        .map(str::trim)
        .filter(|id| !id.is_empty() && id.len() <= MAX_REQUEST_ID_BYTES && !id.chars().any(char::is_control));
    let segment = reply_client_segment(&request.project, &request.reply.topic);
    let mut named = [request.client_id.as_deref(), property, segment].into_iter().flatten();
    let Some(first) = named.next() else {
        return Ok(None);
    };
    if named.any(|other| other != first) {
        return Err(OwnerRefusal::ConflictingClientIds);
    }
    Ok(Some(first.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use mqtt_llm_protocol::topics::ReplyPolicy;
    use mqtt_llm_protocol::wire::{WireLimits, parse_request};

    fn project() -> ProjectName {
        ProjectName::try_new("general").unwrap()
    }

    fn request(payload: serde_json::Value) -> ChatRequest {
        let payload = payload.to_string();
        parse_request(
            &project(),
            payload.as_bytes(),
            &V5Props::default(),
            &WireLimits::default(),
            &ReplyPolicy::none(),
        )
        .unwrap()
    }

    fn property(id: &str) -> V5Props {
        V5Props {
            client_id: Some(id.to_owned()),
            ..V5Props::default()
        }
    }

    #[test]
    fn client_segment_is_the_level_after_the_session() {
        let p = project();
        let seg = |t| reply_client_segment(&p, t);
        assert_eq!(seg("general/assistant_response/s1/devA/r1"), Some("devA"));
        assert_eq!(seg("general/assistant_response/s1/devA"), Some("devA"));
        assert_eq!(seg("general/assistant_response/other/devA/x/y"), Some("devA"));
        assert_eq!(
            seg("general/assistant_response/s1"),
            None,
            "the default topic names no client"
        );
        assert_eq!(seg("general/assistant_response/s1//r1"), None);
        assert_eq!(
            seg("maze/assistant_response/s1/devA/r1"),
            None,
            "another project's topic"
        );
        assert_eq!(seg("general/assistant_responses/s1/devA"), None);
        assert_eq!(seg("devices/devA/replies"), None, "a reply prefix is not read");
    }

    #[test]
    fn field_then_property_then_reply_topic() {
        let field = request(serde_json::json!({"message": "m", "sessionId": "s1", "clientId": " devA "}));
        assert_eq!(resolve_client_id(&field, &V5Props::default()), Ok(Some("devA".into())));
        let bare = request(serde_json::json!({"message": "m", "sessionId": "s1"}));
        assert_eq!(resolve_client_id(&bare, &V5Props::default()), Ok(None));
        assert_eq!(resolve_client_id(&bare, &property(" devB ")), Ok(Some("devB".into())));
        for ignored in ["", "  ", "a\u{7}b", &"x".repeat(MAX_REQUEST_ID_BYTES + 1)] {
            assert_eq!(resolve_client_id(&bare, &property(ignored)), Ok(None), "{ignored:?}");
        }
        let topic = request(serde_json::json!({
            "message": "m", "sessionId": "s1", "replyTopic": "general/assistant_response/s1/devC/r1"
        }));
        assert_eq!(resolve_client_id(&topic, &V5Props::default()), Ok(Some("devC".into())));
        let agreeing = request(serde_json::json!({
            "message": "m", "sessionId": "s1", "clientId": "devC",
            "replyTopic": "general/assistant_response/s1/devC/r1"
        }));
        assert_eq!(resolve_client_id(&agreeing, &property("devC")), Ok(Some("devC".into())));
    }

    #[test]
    fn disagreeing_client_ids_are_refused() {
        // Someone naming devA's session while the replies go to their own topic.
        let hijack = request(serde_json::json!({
            "message": "m", "sessionId": "s1", "clientId": "devA",
            "replyTopic": "general/assistant_response/s1/devB/r1"
        }));
        assert_eq!(
            resolve_client_id(&hijack, &V5Props::default()),
            Err(OwnerRefusal::ConflictingClientIds)
        );
        let field = request(serde_json::json!({"message": "m", "sessionId": "s1", "clientId": "devA"}));
        assert_eq!(
            resolve_client_id(&field, &property("devB")),
            Err(OwnerRefusal::ConflictingClientIds)
        );
        assert_eq!(resolve_client_id(&field, &property("devA")), Ok(Some("devA".into())));
    }

    #[test]
    fn owners_and_who_may_use_them() {
        assert_eq!(Owner::of(OwnerMode::None, Some("a")), Owner::Unchecked);
        assert_eq!(Owner::of(OwnerMode::Client, None), Owner::Anonymous);
        let a = Owner::of(OwnerMode::Client, Some("a"));
        assert!(a.may_use(&a));
        assert!(!a.may_use(&Owner::Client("b".into())));
        assert!(!a.may_use(&Owner::Anonymous));
        assert!(!Owner::Anonymous.may_use(&a));
        assert!(Owner::Anonymous.may_use(&Owner::Anonymous));
        assert!(Owner::Unchecked.may_use(&a));
    }

    #[test]
    fn refusal_texts_and_codes() {
        assert_eq!(
            OwnerRefusal::OtherOwner.reply_text(),
            "Error: session belongs to another client"
        );
        assert_eq!(OwnerRefusal::OtherOwner.code(), "session_owner");
        assert_eq!(OwnerRefusal::ConflictingClientIds.code(), "conflicting_client_id");
        assert!(OwnerRefusal::ConflictingClientIds.reply_text().starts_with("Error: "));
    }
}
