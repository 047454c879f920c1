//! State messages of a state project (`maze`, seed-protocol §1.3, §2): one game state on `{p}/state` becomes a
//! [`ChatRequest`] of kind [`RequestKind::State`] whose user turn is the state in the successor's (L's) form, and
//! the reply to it is always a JSON object on `{p}/hint/{sessionId}`.
//!
//! The payload: `sessionId` (the usual coercion: missing or blank → a fresh `default-…` session), `player_pos` and
//! `exit_pos` (`{"x":1,"y":2}` or `[1,2]`, required), `visible_map` (an array, passed on verbatim), `germs` and
//! `oxygenPellets` (arrays of positions in either form), `oxygenCollected` (a number), the sampling fields of a chat
//! request, `systemPrompt` or else `prompt_template.content` as the system prompt, `replyTopic` (validated against
//! `{p}/hint` by the §1.4 rule), `requestId`, `clientId`. Everything else (`tick`, `health`, `oxygen`,
//! `test_number`, `timestamp`, ...) is ignored.
//!
//! The user turn is what L sent (`_convert_state_to_message`: Python's `json.dumps` of
//! `{player_pos, exit_pos, visible_map, germs, oxygen, oxygen_collected}`, in that order, positions as `[x, y]`,
//! `", "` and `": "` separators, non-ASCII unescaped), so prompts written for L read the same input. Where L
//! defaulted a missing position to `[0, 0]` (a made-up position the model would trust), mqtt-llm refuses the state.
//!
//! Replies: [`hint_payload`] passes a JSON object through and wraps anything else as `{"hint": text}`, since the
//! maze clients (seed-protocol §4) parse JSON only and drop the rest; errors are `{"error": "..."}`
//! ([`error_payload`]), like the LAM server's.

use serde::Serialize;
use serde_json::{Map, Value};

use super::fields::{
    generate_request_id, id_text_from, invalid, max_tokens_from, system_prompt_from, temperature_from, top_p_from,
};
use super::{
    ChatRequest, Ctx, ProjectName, Rejection, ReplyPolicy, RequestError, RequestKind, SamplingOverrides, V5Props,
    WireLimits, scan,
};

/// A map position, `[x, y]` on the wire to the model whichever form the client used.
pub type Position = [i64; 2];

/// The part of a state message the model sees.
#[derive(Debug, Clone, PartialEq)]
pub struct GameState {
    pub player_pos: Position,
    pub exit_pos: Position,
    /// The client's array, verbatim (the clients send rows of 1 = floor, 0 = wall).
    pub visible_map: Value,
    pub germs: Vec<Position>,
    /// From `oxygenPellets`.
    pub oxygen: Vec<Position>,
    /// From `oxygenCollected`, verbatim; 0 when absent.
    pub oxygen_collected: Value,
}

impl GameState {
    /// The state fields of a state message; extra keys are ignored.
    pub fn from_fields(fields: &Map<String, Value>) -> Result<Self, RequestError> {
        let visible_map = match fields.get("visible_map") {
            None | Some(Value::Null) => Value::Array(Vec::new()),
            Some(map @ Value::Array(_)) => map.clone(),
            Some(_) => return Err(invalid("visible_map", "must be an array")),
        };
        let oxygen_collected = match fields.get("oxygenCollected") {
            None | Some(Value::Null) => Value::from(0),
            Some(n @ Value::Number(_)) => n.clone(),
            Some(_) => return Err(invalid("oxygenCollected", "must be a number")),
        };
        Ok(Self {
            player_pos: required_position(fields, "player_pos")?,
            exit_pos: required_position(fields, "exit_pos")?,
            visible_map,
            germs: positions(fields, "germs")?,
            oxygen: positions(fields, "oxygenPellets")?,
            oxygen_collected,
        })
    }

    /// The user turn: L's JSON text of the state (see the module doc).
    pub fn user_turn(&self) -> String {
        let fields: [(&str, Value); 6] = [
            ("player_pos", Value::from(self.player_pos.to_vec())),
            ("exit_pos", Value::from(self.exit_pos.to_vec())),
            ("visible_map", self.visible_map.clone()),
            ("germs", position_list(&self.germs)),
            ("oxygen", position_list(&self.oxygen)),
            ("oxygen_collected", self.oxygen_collected.clone()),
        ];
        let body: Vec<String> = fields
            .iter()
            .map(|(key, value)| format!("{}: {}", python_json(&Value::from(*key)), python_json(value)))
            .collect();
        format!("{{{}}}", body.join(", "))
    }
}

const POSITION_RULE: &str = "must be {\"x\": <integer>, \"y\": <integer>} or [x, y]";

fn required_position(fields: &Map<String, Value>, field: &'static str) -> Result<Position, RequestError> {
    match fields.get(field) {
        None | Some(Value::Null) => Err(RequestError::MissingField { field }),
        Some(v) => position(v).ok_or_else(|| invalid(field, POSITION_RULE)),
    }
}

/// An array of positions; absent or null is empty.
fn positions(fields: &Map<String, Value>, field: &'static str) -> Result<Vec<Position>, RequestError> {
    match fields.get(field) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| position(item).ok_or_else(|| invalid(field, format!("each item {POSITION_RULE}"))))
            .collect(),
        Some(_) => Err(invalid(field, "must be an array of positions")),
    }
}

/// `{x, y}` or `[x, y]` with integer-valued coordinates (`3` or `3.0`).
fn position(value: &Value) -> Option<Position> {
    let (x, y) = match value {
        Value::Object(o) => (o.get("x")?, o.get("y")?),
        Value::Array(a) if a.len() == 2 => (&a[0], &a[1]),
        _ => return None,
    };
    Some([coordinate(x)?, coordinate(y)?])
}

fn coordinate(value: &Value) -> Option<i64> {
    let n = value.as_number()?;
    n.as_i64().or_else(|| {
        let f = n.as_f64()?;
        // Integral and well inside i64, so the cast is exact.
        (f.fract() == 0.0 && f.abs() < 9.0e15).then_some(f as i64)
    })
}

fn position_list(list: &[Position]) -> Value {
    Value::Array(list.iter().map(|p| Value::from(p.to_vec())).collect())
}

/// Python's `json.dumps(value, ensure_ascii=False)`: `", "` between items, `": "` after keys.
fn python_json(value: &Value) -> String {
    let mut out = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(&mut out, PythonFormatter);
    value.serialize(&mut ser).expect("a JSON value serialises into memory");
    String::from_utf8(out).expect("serde_json writes UTF-8")
}

struct PythonFormatter;

impl serde_json::ser::Formatter for PythonFormatter {
    fn begin_array_value<W: ?Sized + std::io::Write>(&mut self, writer: &mut W, first: bool) -> std::io::Result<()> {
        if first { Ok(()) } else { writer.write_all(b", ") }
    }

    fn begin_object_key<W: ?Sized + std::io::Write>(&mut self, writer: &mut W, first: bool) -> std::io::Result<()> {
        if first { Ok(()) } else { writer.write_all(b", ") }
    }

    fn begin_object_value<W: ?Sized + std::io::Write>(&mut self, writer: &mut W) -> std::io::Result<()> {
        writer.write_all(b": ")
    }
}

/// Parse one payload received on `{project}/state`. Refusals carry [`RequestError`]s like chat requests; the
/// caller words them as [`error_payload`]. The reply target is `{p}/hint/{sessionId}`, a valid `replyTopic` under
/// `{p}/hint/`, or (MQTT 5) a Response Topic under `{p}/hint/` or the project's reply prefixes.
pub fn parse_state(
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
        kind: RequestKind::State,
    };
    let json_container = scan::looks_like_json_container(payload);
    let unparsed = || {
        if json_container {
            ctx.unparsed(payload)
        } else {
            ctx.v5_only()
        }
    };
    if payload.len() > limits.max_payload_bytes {
        let error = RequestError::TooLarge {
            size: payload.len(),
            limit: limits.max_payload_bytes,
        };
        return Err(unparsed().reject(&ctx, error));
    }
    let Ok(text) = std::str::from_utf8(payload) else {
        return Err(unparsed().reject(&ctx, RequestError::NotUtf8));
    };
    // Unlike `user_input`, a state is never plain text: the original took a non-JSON state for a chat message.
    if !json_container {
        return Err(ctx.v5_only().reject(&ctx, RequestError::NotObject));
    }
    let fields = super::json_object(&ctx, payload, text, limits)?;
    parse_state_object(&ctx, &fields, limits)
}

fn parse_state_object(
    ctx: &Ctx<'_>,
    fields: &Map<String, Value>,
    limits: &WireLimits,
) -> Result<ChatRequest, Rejection> {
    let routing = ctx.object(fields);
    let reject = |error| routing.reject(ctx, error);
    let Some(session) = routing.session.clone() else {
        return Err(reject(RequestError::InvalidSessionId));
    };
    let reply = routing
        .reply_override
        .clone()
        .unwrap_or_else(|| ctx.default_target(&session));
    let state = GameState::from_fields(fields).map_err(reject)?;
    let sampling = SamplingOverrides {
        temperature: temperature_from(fields.get("temperature")).map_err(reject)?,
        top_p: top_p_from(fields.get("topP")).map_err(reject)?,
        max_tokens: max_tokens_from(fields.get("maxTokens"), limits.max_tokens_limit).map_err(reject)?,
    }
    .greedy_when_top_p_is_zero();
    let system_prompt = state_system_prompt(fields).map_err(reject)?;
    Ok(ChatRequest {
        project: ctx.project.clone(),
        session,
        message: state.user_turn(),
        images: Vec::new(),
        sampling,
        system_prompt,
        reply,
        stream: None,
        request_id: routing.request_id.clone().unwrap_or_else(generate_request_id),
        client_id: id_text_from(fields.get("clientId"), false),
        reply_topic_fallback: routing.fallback,
        raw_json: true,
        kind: RequestKind::State,
    })
}

/// `systemPrompt`, else `prompt_template.content` (what the web game sends), as L did.
fn state_system_prompt(fields: &Map<String, Value>) -> Result<Option<String>, RequestError> {
    if let Some(prompt) = system_prompt_from(fields.get("systemPrompt"))? {
        return Ok(Some(prompt));
    }
    match fields.get("prompt_template") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(template)) => match template.get("content") {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.trim()).filter(|s| !s.is_empty()).map(str::to_owned)),
            Some(_) => Err(invalid("prompt_template", "'content' must be a string")),
        },
        Some(_) => Err(invalid("prompt_template", "must be an object")),
    }
}

/// The reply to a state, always a JSON object: the model's text when it is one (also inside a Markdown code
/// fence, which is then removed), else `{"hint": text}`.
pub fn hint_payload(text: &str) -> String {
    let text = text.trim();
    let candidates = [Some(text), unfenced(text)];
    for candidate in candidates.into_iter().flatten() {
        if matches!(serde_json::from_str::<Value>(candidate), Ok(Value::Object(_))) {
            return candidate.to_owned();
        }
    }
    serde_json::json!({ "hint": text }).to_string()
}

/// The body of a Markdown code fence (```` ```json\n...\n``` ````), if `text` is exactly one.
fn unfenced(text: &str) -> Option<&str> {
    let rest = text.strip_prefix("```")?.strip_suffix("```")?;
    let (_info, body) = rest.split_once('\n')?;
    Some(body.trim())
}

/// An error on a state topic: `{"error": message}` (`message` without the chat replies' `Error: ` prefix).
pub fn error_payload(message: &str) -> String {
    serde_json::json!({ "error": message }).to_string()
}
