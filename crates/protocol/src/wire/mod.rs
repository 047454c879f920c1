//! Wire payloads, all pure: one request payload on `{project}/user_input` becomes either a typed [`ChatRequest`] or a
//! [`Rejection`] that says where to send the error reply and its exact text; and the JSON frames of the opt-in
//! stream topic.
//! A game state on a state project's `{project}/state` becomes a [`ChatRequest`] of kind [`RequestKind::State`] the
//! same way ([`state`]: its parsing, the user turn it becomes, and the JSON hint and error replies).
//!
//! Request parsing stays wire-compatible with the original server (seed-protocol §2: camelCase fields, unknown
//! fields ignored, non-JSON payload = the whole message in a fresh `default-…` session, `sessionId` coercion, the
//! §1.4 `replyTopic` rule) and fixes its defects: parameters are validated (`temperature: 0` is honoured instead of
//! `x or default`), and malformed input gets an `Error: …` reply wherever a reply topic can be derived instead of
//! being dropped silently. The reply target is therefore resolved before anything else is validated.
//!
//! Input hygiene (differs from the original, whose plain-text rule also caught broken JSON): a payload whose first
//! non-whitespace byte is `{` or `[` is meant as JSON and never becomes plain text. Its nesting is bounded by
//! [`WireLimits::max_json_depth`], checked by a byte scan before `serde_json` sees it; when it cannot be parsed
//! (too large, too deep, invalid JSON, not UTF-8), a shallow scan of its top-level object recovers `sessionId`,
//! `replyTopic` and `requestId` so the error still reaches the sender (the `scan` module).

use bytes::Bytes;
use serde_json::{Map, Value};

use super::topics::{
    ProjectName, ReplyPolicy, SessionId, TopicFallback, default_hint_topic, default_reply_topic, default_stream_topic,
    hint_base, reply_base, stream_base, validate_client_topic, validate_hint_response_topic, validate_response_topic,
};
use fields::{
    generate_request_id, id_text_from, invalid, max_tokens_from, session_from, system_prompt_from, temperature_from,
    top_p_from,
};

/// Default for [`WireLimits::max_payload_bytes`].
pub const DEFAULT_MAX_PAYLOAD_BYTES: usize = 65_536;
/// Default for [`WireLimits::max_json_depth`].
pub const DEFAULT_MAX_JSON_DEPTH: usize = 32;
/// Default for [`WireLimits::max_tokens_limit`].
pub const DEFAULT_MAX_TOKENS_LIMIT: u32 = 32_768;
/// Default for [`WireLimits::max_images`]: mqtt-llm's default `--limit-mm-per-prompt` for a vision model
/// (`{"image":4,"video":0}`), so that the count is refused here, in our words, rather than by the engine.
pub const DEFAULT_MAX_IMAGES: usize = 4;
/// Default for [`WireLimits::max_image_bytes`]: decoded bytes of one data-URL image. The payload limit
/// ([`DEFAULT_MAX_PAYLOAD_BYTES`], raised for images with `--max-payload-bytes`) usually binds first.
pub const DEFAULT_MAX_IMAGE_BYTES: usize = 4 * 1024 * 1024;
/// Longest `requestId` / `clientId` kept, in bytes; longer ones are not echoed (request ids are regenerated).
pub const MAX_REQUEST_ID_BYTES: usize = 128;

/// Limits the parser enforces (from config).
#[derive(Debug, Clone)]
pub struct WireLimits {
    /// Larger payloads are rejected with [`RequestError::TooLarge`] (still answered when a reply topic is derivable).
    pub max_payload_bytes: usize,
    /// Deepest nesting of a JSON payload (the outermost object is level 1); deeper ones are rejected with
    /// [`RequestError::TooDeep`] before they are parsed. Keep it under 128, serde_json's own recursion limit, so
    /// that this limit, with its own error text, is the one that applies.
    pub max_json_depth: usize,
    /// Upper bound for a request's `maxTokens`.
    pub max_tokens_limit: u32,
    /// Most images per request ([`RequestError::TooManyImages`]).
    pub max_images: usize,
    /// Largest decoded data-URL image, in bytes ([`RequestError::ImageTooLarge`]).
    pub max_image_bytes: usize,
}

impl Default for WireLimits {
    fn default() -> Self {
        Self {
            max_payload_bytes: DEFAULT_MAX_PAYLOAD_BYTES,
            max_json_depth: DEFAULT_MAX_JSON_DEPTH,
            max_tokens_limit: DEFAULT_MAX_TOKENS_LIMIT,
            max_images: DEFAULT_MAX_IMAGES,
            max_image_bytes: DEFAULT_MAX_IMAGE_BYTES,
        }
    }
}

/// MQTT 5 request properties (None under MQTT 3.1.1).
#[derive(Debug, Clone, Default)]
pub struct V5Props {
    /// Where the requester wants the reply; wins over `replyTopic` when valid.
    pub response_topic: Option<String>,
    /// Opaque bytes the reply must carry back so the requester can match it.
    pub correlation_data: Option<Bytes>,
    /// The `clientId` user property (the first one), naming the requester for session ownership.
    pub client_id: Option<String>,
}

/// Where a reply (or an error reply) is published.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplyTarget {
    pub topic: String,
    /// The request's MQTT 5 Correlation Data, to set on the reply (always carried, whatever chose the topic).
    pub correlation_data: Option<Bytes>,
}

/// Per-request sampling parameters; `None` means the configured default.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SamplingOverrides {
    /// 0 ≤ t ≤ 2.
    pub temperature: Option<f32>,
    /// 0 < p ≤ 1 (a request's `topP: 0` arrives as `temperature: Some(0.0)`, greedy decoding).
    pub top_p: Option<f32>,
    /// 1 ≤ n ≤ [`WireLimits::max_tokens_limit`].
    pub max_tokens: Option<u32>,
}

/// Where a request came from, which decides how it is answered and queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestKind {
    /// `{p}/user_input`: a plain-text reply (or `Error: ...`); queued in arrival order.
    Chat,
    /// `{p}/state` of a state project: a JSON reply (`{"hint": ...}` / `{"error": ...}`, see [`state`]); latest
    /// wins (a newer state replaces one still waiting in its session).
    State,
}

/// An accepted chat request.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatRequest {
    pub project: ProjectName,
    pub session: SessionId,
    /// The user turn's text, trimmed; empty only when `images` is not.
    pub message: String,
    /// The turn's images, in order (`images` field and `image_url` content parts); empty for text-only turns.
    pub images: Vec<ImageUrl>,
    pub sampling: SamplingOverrides,
    /// Trimmed, never empty.
    pub system_prompt: Option<String>,
    pub reply: ReplyTarget,
    /// The stream topic when the request asked for `"stream": true`.
    pub stream: Option<String>,
    /// Echoed in stream frames; the client's `requestId`, or 16 generated lowercase hex digits.
    pub request_id: String,
    /// The client the request speaks for: its `clientId` field as parsed; under `--session-owner client` the intake
    /// replaces it with the resolved owner (field, MQTT 5 user property or reply-topic segment).
    pub client_id: Option<String>,
    /// Set when a `replyTopic` or Response Topic was given but not usable (the default topic is used instead).
    pub reply_topic_fallback: Option<TopicFallback>,
    /// False when the payload was not JSON (the whole payload is the message, the original's plain-text mode).
    pub raw_json: bool,
    /// A chat message or a game state.
    pub kind: RequestKind,
}

/// A refused request: what went wrong and, when one can be derived, where to say so.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    /// `None` when no reply topic can be derived (then nothing is published).
    pub reply: Option<ReplyTarget>,
    pub error: RequestError,
    /// The client's own `requestId` when it sent a usable one; never a generated id.
    pub request_id: Option<String>,
}

/// Why a request was refused. `Display` is the reply text without the `Error: ` prefix.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RequestError {
    #[error("request too large ({size} bytes, limit {limit})")]
    TooLarge { size: usize, limit: usize },
    #[error("payload is not valid UTF-8")]
    NotUtf8,
    /// A payload starting with `{` or `[` that nests deeper than [`WireLimits::max_json_depth`].
    #[error("JSON nested deeper than {limit} levels")]
    TooDeep { limit: usize },
    /// A payload starting with `{` or `[` that is not valid JSON; `detail` is serde_json's description with its
    /// line and column.
    #[error("invalid JSON: {detail}")]
    InvalidJson { detail: String },
    #[error("request must be a JSON object")]
    NotObject,
    #[error("missing 'message'")]
    MissingMessage,
    #[error("'message' must be a string")]
    MessageNotString,
    #[error("'message' is empty")]
    EmptyMessage,
    #[error("invalid sessionId")]
    InvalidSessionId,
    /// A required field of a state message (`player_pos`, `exit_pos`) is absent or null.
    #[error("missing '{field}'")]
    MissingField { field: &'static str },
    /// `index` is 1-based, in the order the images were given.
    #[error("invalid image {index}: {reason}")]
    InvalidImage { index: usize, reason: &'static str },
    #[error("too many images ({count}, limit {limit})")]
    TooManyImages { count: usize, limit: usize },
    /// `size` is the decoded size of a data URL's bytes.
    #[error("image {index} too large ({size} bytes, limit {limit})")]
    ImageTooLarge { index: usize, size: usize, limit: usize },
    /// `field` is the wire (camelCase) field name.
    #[error("invalid '{field}': {reason}")]
    InvalidParam { field: &'static str, reason: String },
}

impl RequestError {
    /// Stable snake_case code for metrics labels.
    pub fn code(&self) -> &'static str {
        match self {
            Self::TooLarge { .. } => "too_large",
            Self::NotUtf8 => "not_utf8",
            Self::TooDeep { .. } => "too_deep",
            Self::InvalidJson { .. } => "invalid_json",
            Self::NotObject => "not_object",
            Self::MissingMessage => "missing_message",
            Self::MessageNotString => "message_not_string",
            Self::EmptyMessage => "empty_message",
            Self::InvalidSessionId => "invalid_session_id",
            Self::MissingField { .. } => "missing_field",
            Self::InvalidImage { .. } => "invalid_image",
            Self::TooManyImages { .. } => "too_many_images",
            Self::ImageTooLarge { .. } => "image_too_large",
            Self::InvalidParam { .. } => "invalid_param",
        }
    }

    /// The exact reply payload, always starting with `Error: ` (clients test for that prefix).
    pub fn reply_text(&self) -> String {
        format!("Error: {self}")
    }
}

/// Parse one payload received on `{project}/user_input`. See the module doc and seed-protocol §2 for the rules.
/// `policy` says where the project's MQTT 5 Response Topic may point ([`validate_response_topic`]).
pub fn parse_request(
    project: &ProjectName,
    payload: &[u8],
    props: &V5Props,
    limits: &WireLimits,
    policy: &ReplyPolicy,
) -> Result<ChatRequest, Rejection> {
    let ctx = Ctx {
        project,
        props,
        policy,
        kind: RequestKind::Chat,
    };
    let json_container = scan::looks_like_json_container(payload);
    if payload.len() > limits.max_payload_bytes {
        return Err(reject_oversize(&ctx, payload, json_container, limits.max_payload_bytes));
    }
    let Ok(text) = std::str::from_utf8(payload) else {
        let routing = if json_container {
            ctx.unparsed(payload)
        } else {
            ctx.v5_only()
        };
        return Err(routing.reject(&ctx, RequestError::NotUtf8));
    };
    if !json_container {
        // Plain text, or a JSON scalar (`"hi"`, `42`): the original server's rules, unchanged.
        return match serde_json::from_str::<Value>(text) {
            Err(_) => parse_plain_text(&ctx, text),
            Ok(_) => Err(ctx.v5_only().reject(&ctx, RequestError::NotObject)),
        };
    }
    let fields = json_object(&ctx, payload, text, limits)?;
    parse_object(&ctx, &fields, limits)
}

/// A JSON-looking payload as an object: refused when nested deeper than `max_json_depth` (checked before serde sees
/// it), when it does not parse, or when it is not an object; the refusal is routed by a shallow scan.
fn json_object(
    ctx: &Ctx<'_>,
    payload: &[u8],
    text: &str,
    limits: &WireLimits,
) -> Result<Map<String, Value>, Rejection> {
    if scan::nests_deeper_than(payload, limits.max_json_depth) {
        let error = RequestError::TooDeep {
            limit: limits.max_json_depth,
        };
        return Err(ctx.unparsed(payload).reject(ctx, error));
    }
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(fields)) => Ok(fields),
        Ok(_) => Err(ctx.v5_only().reject(ctx, RequestError::NotObject)),
        Err(e) => {
            let error = RequestError::InvalidJson { detail: e.to_string() };
            Err(ctx.unparsed(payload).reject(ctx, error))
        }
    }
}

struct Ctx<'a> {
    project: &'a ProjectName,
    props: &'a V5Props,
    policy: &'a ReplyPolicy,
    /// Chat replies live under `{p}/assistant_response`, hints under `{p}/hint`.
    kind: RequestKind,
}

/// Everything derived before validation proper, so that every rejection can carry it: the session (`None` =
/// invalid `sessionId`), the overriding reply target, why an override was not usable, and the client's request id.
struct Routing {
    session: Option<SessionId>,
    reply_override: Option<ReplyTarget>,
    fallback: Option<TopicFallback>,
    request_id: Option<String>,
}

impl Routing {
    /// The override, else the session's default topic, else nowhere.
    fn reply(&self, ctx: &Ctx<'_>) -> Option<ReplyTarget> {
        self.reply_override
            .clone()
            .or_else(|| self.session.as_ref().map(|s| ctx.default_target(s)))
    }

    fn reject(&self, ctx: &Ctx<'_>, error: RequestError) -> Rejection {
        Rejection {
            reply: self.reply(ctx),
            error,
            request_id: self.request_id.clone(),
        }
    }
}

impl Ctx<'_> {
    fn target(&self, topic: String) -> ReplyTarget {
        ReplyTarget {
            topic,
            correlation_data: self.props.correlation_data.clone(),
        }
    }

    fn default_target(&self, session: &SessionId) -> ReplyTarget {
        self.target(match self.kind {
            RequestKind::Chat => default_reply_topic(self.project, session),
            RequestKind::State => default_hint_topic(self.project, session),
        })
    }

    /// Reply target from the overrides only, in precedence order: a valid Response Topic, then a valid
    /// `replyTopic`. The fallback reason is that of the first given-but-unusable candidate that would have won.
    fn override_target(&self, reply_topic: Option<&Value>) -> (Option<ReplyTarget>, Option<TopicFallback>) {
        let mut fallback = None;
        let (validate_response, base): (fn(&ProjectName, &ReplyPolicy, &str) -> _, _) = match self.kind {
            RequestKind::Chat => (validate_response_topic, reply_base(self.project)),
            RequestKind::State => (validate_hint_response_topic, hint_base(self.project)),
        };
        if let Some(t) = &self.props.response_topic {
            match validate_response(self.project, self.policy, t) {
                Ok(topic) => return (Some(self.target(topic)), None),
                Err(reason) => fallback = Some(reason),
            }
        }
        if let Some(candidate) = reply_topic.filter(|v| !v.is_null()) {
            match validate_client_topic(&base, candidate) {
                Ok(topic) => return (Some(self.target(topic)), fallback),
                Err(reason) => fallback = fallback.or(Some(reason)),
            }
        }
        (None, fallback)
    }

    /// Routing when only the MQTT 5 Response Topic can name a reply topic (non-UTF-8, non-object payloads).
    fn v5_only(&self) -> Routing {
        let (reply_override, fallback) = self.override_target(None);
        Routing {
            session: None,
            reply_override,
            fallback,
            request_id: None,
        }
    }

    /// Routing of a payload starting with `{` or `[` that is not parsed whole: the routing fields of its top-level
    /// object, read by [`scan::routing_fields`]. Only a `sessionId` the client named gives a session: an error
    /// sent to a fresh `default-…` session would reach nobody who is waiting for it.
    fn unparsed(&self, payload: &[u8]) -> Routing {
        let fields = scan::routing_fields(payload);
        let (reply_override, fallback) = self.override_target(fields.get("replyTopic"));
        let session = match fields.get("sessionId") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s.trim().is_empty() => None,
            named => session_from(named),
        };
        Routing {
            session,
            reply_override,
            fallback,
            request_id: id_text_from(fields.get("requestId"), true),
        }
    }

    /// Routing of a plain-text payload: the given fresh session.
    fn plain_text(&self, session: SessionId) -> Routing {
        let (reply_override, fallback) = self.override_target(None);
        Routing {
            session: Some(session),
            reply_override,
            fallback,
            request_id: None,
        }
    }

    /// Routing of a JSON object: `sessionId`, `replyTopic`, `requestId` and the Response Topic.
    fn object(&self, fields: &Map<String, Value>) -> Routing {
        let (reply_override, fallback) = self.override_target(fields.get("replyTopic"));
        Routing {
            session: session_from(fields.get("sessionId")),
            reply_override,
            fallback,
            request_id: id_text_from(fields.get("requestId"), true),
        }
    }
}

/// The payload is refused for its size, but the client still hears why when its reply topic can be found: JSON
/// (`json_container`) by the shallow scan of its top level, never parsed whole; plain text in a fresh session.
fn reject_oversize(ctx: &Ctx<'_>, payload: &[u8], json_container: bool, limit: usize) -> Rejection {
    let routing = if json_container {
        ctx.unparsed(payload)
    } else {
        match std::str::from_utf8(payload) {
            Err(_) => ctx.v5_only(),
            Ok(text) => match serde_json::from_str::<Value>(text) {
                Err(_) => ctx.plain_text(SessionId::generate_default()),
                Ok(_) => ctx.v5_only(),
            },
        }
    };
    routing.reject(
        ctx,
        RequestError::TooLarge {
            size: payload.len(),
            limit,
        },
    )
}

/// Not JSON (empty and whitespace-only payloads included): the whole payload, trimmed, is the message, in a fresh
/// `default-…` session with default sampling.
fn parse_plain_text(ctx: &Ctx<'_>, text: &str) -> Result<ChatRequest, Rejection> {
    let session = SessionId::generate_default();
    let (reply_override, fallback) = ctx.override_target(None);
    let reply = reply_override.unwrap_or_else(|| ctx.default_target(&session));
    let message = text.trim();
    if message.is_empty() {
        return Err(Rejection {
            reply: Some(reply),
            error: RequestError::EmptyMessage,
            request_id: None,
        });
    }
    Ok(ChatRequest {
        project: ctx.project.clone(),
        session,
        message: message.to_owned(),
        images: Vec::new(),
        sampling: SamplingOverrides::default(),
        system_prompt: None,
        reply,
        stream: None,
        request_id: generate_request_id(),
        client_id: None,
        reply_topic_fallback: fallback,
        raw_json: false,
        kind: RequestKind::Chat,
    })
}

fn parse_object(ctx: &Ctx<'_>, fields: &Map<String, Value>, limits: &WireLimits) -> Result<ChatRequest, Rejection> {
    let routing = ctx.object(fields);
    let reject = |error| routing.reject(ctx, error);
    let Some(session) = routing.session.clone() else {
        return Err(reject(RequestError::InvalidSessionId));
    };
    let reply = routing
        .reply_override
        .clone()
        .unwrap_or_else(|| ctx.default_target(&session));
    let (message, images) = content::user_turn_from(fields, limits).map_err(reject)?;
    let sampling = SamplingOverrides {
        temperature: temperature_from(fields.get("temperature")).map_err(reject)?,
        top_p: top_p_from(fields.get("topP")).map_err(reject)?,
        max_tokens: max_tokens_from(fields.get("maxTokens"), limits.max_tokens_limit).map_err(reject)?,
    }
    .greedy_when_top_p_is_zero();
    let system_prompt = system_prompt_from(fields.get("systemPrompt")).map_err(reject)?;
    let stream = match fields.get("stream") {
        None | Some(Value::Null | Value::Bool(false)) => None,
        Some(Value::Bool(true)) => Some(stream_topic(ctx.project, &session, fields)),
        Some(_) => return Err(reject(invalid("stream", "must be a boolean"))),
    };
    Ok(ChatRequest {
        project: ctx.project.clone(),
        session,
        message,
        images,
        sampling,
        system_prompt,
        reply,
        stream,
        request_id: routing.request_id.clone().unwrap_or_else(generate_request_id),
        client_id: id_text_from(fields.get("clientId"), false),
        reply_topic_fallback: routing.fallback,
        raw_json: true,
        kind: RequestKind::Chat,
    })
}

/// `streamTopic` when valid under `{p}/assistant_stream/` (§1.4 rules), else `{p}/assistant_stream/{session}`.
fn stream_topic(project: &ProjectName, session: &SessionId, fields: &Map<String, Value>) -> String {
    fields
        .get("streamTopic")
        .and_then(|v| validate_client_topic(&stream_base(project), v).ok())
        .unwrap_or_else(|| default_stream_topic(project, session))
}

mod content;
#[cfg(test)]
mod content_tests;
pub mod control;
mod fields;
mod frames;
mod scan;
#[cfg(test)]
mod scan_tests;
pub mod state;
#[cfg(test)]
mod state_tests;
#[cfg(test)]
mod tests;

pub use content::{ImageUrl, MAX_IMAGE_URL_BYTES};
pub use frames::*;
pub use state::parse_state;
