//! Request, event and wire types of the OpenAI-compatible chat API.
//!
//! The public types are what the rest of the service codes against. The `Wire*` types mirror the JSON on the
//! wire: the request is serialized from borrowed data (no copy of the history per request), and the chunk types
//! are minimal so the per-chunk hot path decodes only what it uses. Every chunk field is optional and unknown
//! fields are ignored, because vLLM, llama.cpp and Ollama each add, omit or null different fields.

use serde::{Deserialize, Deserializer, Serialize};

/// Who wrote a message of the conversation.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
}

/// One message of the conversation sent to the engine.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: Role,
    pub content: MessageContent,
}

/// What a message says: plain text (serialized as a JSON string, which every engine reads), or OpenAI content
/// parts (a JSON array) for a user turn that carries images.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum MessageContent {
    Text(String),
    Parts(Vec<ContentPart>),
}

/// One OpenAI content part: `{"type":"text","text":...}` or `{"type":"image_url","image_url":{"url":...}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ContentPart {
    Text { text: String },
    ImageUrl { image_url: ImageUrlRef },
}

/// The `image_url` object of an image part: a data URL or an `http(s)` URL that the engine fetches.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageUrlRef {
    pub url: String,
}

impl MessageContent {
    /// `text` alone when there are no images; otherwise the images, then the text (if any) as parts. Images come
    /// first because Qwen-VL's examples and training put the picture before the question about it.
    pub fn with_images(text: &str, images: impl IntoIterator<Item = String>) -> Self {
        let mut parts: Vec<ContentPart> = images
            .into_iter()
            .map(|url| ContentPart::ImageUrl {
                image_url: ImageUrlRef { url },
            })
            .collect();
        if parts.is_empty() {
            return Self::Text(text.to_owned());
        }
        if !text.is_empty() {
            parts.push(ContentPart::Text { text: text.to_owned() });
        }
        Self::Parts(parts)
    }

    /// The text parts (joined with `\n`), without the images.
    pub fn text(&self) -> String {
        match self {
            Self::Text(text) => text.clone(),
            Self::Parts(parts) => {
                let texts: Vec<&str> = parts
                    .iter()
                    .filter_map(|p| match p {
                        ContentPart::Text { text } => Some(text.as_str()),
                        ContentPart::ImageUrl { .. } => None,
                    })
                    .collect();
                texts.join("\n")
            }
        }
    }
}

impl From<String> for MessageContent {
    fn from(text: String) -> Self {
        Self::Text(text)
    }
}

impl From<&str> for MessageContent {
    fn from(text: &str) -> Self {
        Self::Text(text.to_owned())
    }
}

impl PartialEq<&str> for MessageContent {
    fn eq(&self, other: &&str) -> bool {
        matches!(self, Self::Text(text) if text == other)
    }
}

/// One chat completion call. Sampling fields left `None` are omitted, so the engine's defaults apply (for vLLM:
/// the model's `generation_config.json`).
#[derive(Debug, Clone, Default)]
pub struct CompletionRequest {
    pub messages: Messages,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub max_tokens: Option<u32>,
    /// e.g. {"enable_thinking": false}; omitted from the body when None.
    pub chat_template_kwargs: Option<serde_json::Value>,
    /// Sent as the X-Request-Id header when set.
    pub request_id: Option<String>,
    /// vLLM's scheduling priority (lower first; only with `--scheduling-policy priority`); omitted when None.
    pub priority: Option<i32>,
}

/// The conversation of a request: typed messages, or a JSON array already serialized (the session store keeps
/// the JSON of a conversation's stored turns, so a turn serializes only its new message).
#[derive(Debug, Clone)]
pub enum Messages {
    List(Vec<ChatMessage>),
    /// A JSON array of OpenAI messages, as sent.
    Json(String),
}

impl Default for Messages {
    fn default() -> Self {
        Self::List(Vec::new())
    }
}

impl From<Vec<ChatMessage>> for Messages {
    fn from(list: Vec<ChatMessage>) -> Self {
        Self::List(list)
    }
}

impl Messages {
    /// The JSON array.
    pub fn to_json(&self) -> std::borrow::Cow<'_, str> {
        match self {
            Self::Json(json) => json.as_str().into(),
            Self::List(list) => serde_json::to_string(list).unwrap_or_else(|_| "[]".to_owned()).into(),
        }
    }

    /// The messages, typed (a [`Messages::Json`] is parsed back: for tests and diagnostics).
    pub fn to_list(&self) -> Vec<ChatMessage> {
        match self {
            Self::List(list) => list.clone(),
            Self::Json(json) => serde_json::from_str(json).unwrap_or_default(),
        }
    }
}

/// What a [`ChatStream`](super::ChatStream) yields, in order: `Delta`s, then `Finished`, then (at the end of the
/// stream) at most one `Usage`.
#[derive(Debug, Clone, PartialEq)]
pub enum ChatEvent {
    /// Non-empty content text (empty/null deltas and the role chunk are skipped).
    Delta(String),
    /// A choice finished (stop, length, ...). May be followed by Usage.
    Finished {
        finish_reason: String,
    },
    Usage(Usage),
}

/// Token counts of one completion, as reported by the engine.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    /// Prefix-cache hits; only reported by vLLM with `--enable-prompt-tokens-details` (and by newer llama.cpp).
    pub cached_tokens: Option<u32>,
}

/// The OpenAI error object, `{"error":{"message","type","param","code"}}`, before or inside a stream.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct ApiError {
    /// Missing in some non-OpenAI bodies; then empty.
    #[serde(default)]
    pub message: String,
    /// `BadRequestError`, `Bad Request`, `NotFoundError`, llama.cpp's `exceed_context_size_error`, ...
    #[serde(rename = "type", default, deserialize_with = "lenient_string")]
    pub kind: Option<String>,
    /// Which request field was wrong, e.g. `input_tokens` for a context overflow.
    #[serde(default, deserialize_with = "lenient_string")]
    pub param: Option<String>,
    /// A number in vLLM and llama.cpp, a string elsewhere.
    pub code: Option<serde_json::Value>,
}

/// One model served by the engine, from `GET /v1/models`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ModelInfo {
    pub id: String,
    /// The effective context length; vLLM reports it, llama.cpp and Ollama do not.
    pub max_model_len: Option<u32>,
}

/// A string field that some engine might send as a number or null: strings stay, null is `None`, anything else
/// is kept as its JSON text rather than failing the whole error object.
fn lenient_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match Option::<serde_json::Value>::deserialize(d)? {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(s)) => Some(s),
        Some(other) => Some(other.to_string()),
    })
}

/// The body of `POST /v1/chat/completions`, borrowed from the [`CompletionRequest`].
#[derive(Debug, Serialize)]
pub(crate) struct WireRequest<'a> {
    pub model: &'a str,
    pub stream: bool,
    pub stream_options: WireStreamOptions,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f32>,
    /// `max_tokens` rather than vLLM's preferred `max_completion_tokens`: every engine accepts it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chat_template_kwargs: Option<&'a serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub priority: Option<i32>,
}

impl<'a> WireRequest<'a> {
    pub(crate) fn new(model: &'a str, req: &'a CompletionRequest) -> Self {
        Self {
            model,
            stream: true,
            stream_options: WireStreamOptions { include_usage: true },
            temperature: req.temperature,
            top_p: req.top_p,
            max_tokens: req.max_tokens,
            chat_template_kwargs: req.chat_template_kwargs.as_ref(),
            priority: req.priority,
        }
    }
}

/// The JSON body of a streaming chat request: `messages` (spliced in as it is, see [`Messages::Json`]) and the
/// [`WireRequest`] fields.
pub fn request_body(model: &str, req: &CompletionRequest) -> Vec<u8> {
    let rest = serde_json::to_string(&WireRequest::new(model, req)).unwrap_or_else(|_| "{}".to_owned());
    let messages = req.messages.to_json();
    let mut body = String::with_capacity(messages.len() + rest.len() + 16);
    body.push_str(r#"{"messages":"#);
    body.push_str(&messages);
    // `rest` is a non-empty object (`model` and `stream` are always there): `{"model":...}` → `,"model":...}`.
    body.push(',');
    body.push_str(rest.strip_prefix('{').unwrap_or(&rest));
    body.into_bytes()
}

#[derive(Debug, Serialize)]
pub(crate) struct WireStreamOptions {
    pub include_usage: bool,
}

/// One `data:` payload of the stream: a chunk, a usage chunk (`choices: []`) or an error.
#[derive(Debug, Deserialize)]
pub(crate) struct WireChunk {
    pub choices: Option<Vec<WireChoice>>,
    pub usage: Option<WireUsage>,
    pub error: Option<WireError>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct WireChoice {
    pub delta: Option<WireDelta>,
    pub finish_reason: Option<String>,
}

/// Only the content: `role`, `reasoning`, `tool_calls` and the rest are skipped without being decoded.
#[derive(Debug, Deserialize)]
pub(crate) struct WireDelta {
    pub content: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct WireUsage {
    pub prompt_tokens: Option<u32>,
    pub completion_tokens: Option<u32>,
    pub prompt_tokens_details: Option<WirePromptTokensDetails>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct WirePromptTokensDetails {
    pub cached_tokens: Option<u32>,
}

impl From<WireUsage> for Usage {
    fn from(u: WireUsage) -> Self {
        Usage {
            prompt_tokens: u.prompt_tokens.unwrap_or(0),
            completion_tokens: u.completion_tokens.unwrap_or(0),
            cached_tokens: u.prompt_tokens_details.and_then(|d| d.cached_tokens),
        }
    }
}

/// `error` as the OpenAI object, or a bare string (vLLM's 401 body is `{"error":"Unauthorized"}`).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum WireError {
    Object(ApiError),
    Text(String),
}

impl From<WireError> for ApiError {
    fn from(e: WireError) -> Self {
        match e {
            WireError::Object(api) => api,
            WireError::Text(message) => ApiError {
                message,
                kind: None,
                param: None,
                code: None,
            },
        }
    }
}

/// The body of an error response, `{"error": ...}`.
#[derive(Debug, Deserialize)]
struct WireErrorBody {
    error: WireError,
}

/// Parse a non-2xx body as the OpenAI error shape, if it is one.
pub(crate) fn parse_api_error(body: &str) -> Option<ApiError> {
    serde_json::from_str::<WireErrorBody>(body).ok().map(|b| b.error.into())
}

/// `GET /v1/models`.
#[derive(Debug, Deserialize)]
pub(crate) struct WireModelList {
    pub data: Option<Vec<ModelInfo>>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn request_body_omits_unset_fields() {
        let req = CompletionRequest {
            messages: Messages::List(vec![ChatMessage {
                role: Role::User,
                content: "Hi".into(),
            }]),
            ..Default::default()
        };
        let body = serde_json::from_slice::<serde_json::Value>(&request_body("qwen3", &req)).unwrap();
        assert_eq!(
            body,
            json!({"model":"qwen3","messages":[{"role":"user","content":"Hi"}],"stream":true,
                   "stream_options":{"include_usage":true}})
        );
    }

    #[test]
    fn request_body_carries_sampling_and_template_kwargs() {
        let req = CompletionRequest {
            messages: Messages::List(vec![
                ChatMessage {
                    role: Role::System,
                    content: "Be brief".into(),
                },
                ChatMessage {
                    role: Role::Assistant,
                    content: "Ok".into(),
                },
            ]),
            temperature: Some(0.5),
            top_p: Some(0.25),
            max_tokens: Some(64),
            priority: Some(-1),
            chat_template_kwargs: Some(json!({"enable_thinking": false})),
            request_id: Some("r1".into()),
        };
        let body = serde_json::from_slice::<serde_json::Value>(&request_body("m", &req)).unwrap();
        assert_eq!(body["messages"][0]["role"], "system");
        assert_eq!(body["messages"][1]["role"], "assistant");
        assert_eq!(body["temperature"], 0.5);
        assert_eq!(body["top_p"], 0.25);
        assert_eq!(body["max_tokens"], 64);
        assert_eq!(body["priority"], json!(-1));
        assert_eq!(body["chat_template_kwargs"], json!({"enable_thinking": false}));
        assert!(body.get("request_id").is_none(), "the id travels as a header");
    }

    #[test]
    fn a_user_turn_with_images_is_sent_as_openai_content_parts() {
        let png = "data:image/png;base64,iVBORw0KGgo=".to_owned();
        let req = CompletionRequest {
            messages: Messages::List(vec![
                ChatMessage {
                    role: Role::User,
                    content: MessageContent::with_images("what is this?", [png.clone(), "https://x.test/a.jpg".into()]),
                },
                ChatMessage {
                    role: Role::User,
                    content: MessageContent::with_images("", [png.clone()]),
                },
                ChatMessage {
                    role: Role::User,
                    content: MessageContent::with_images("no picture", []),
                },
            ]),
            ..Default::default()
        };
        let body = serde_json::from_slice::<serde_json::Value>(&request_body("qwen3-vl", &req)).unwrap();
        assert_eq!(
            body["messages"],
            json!([
                {"role":"user","content":[
                    {"type":"image_url","image_url":{"url":png}},
                    {"type":"image_url","image_url":{"url":"https://x.test/a.jpg"}},
                    {"type":"text","text":"what is this?"}]},
                {"role":"user","content":[{"type":"image_url","image_url":{"url":png}}]},
                {"role":"user","content":"no picture"},
            ])
        );
        assert_eq!(req.messages.to_list()[0].content.text(), "what is this?");
        assert_eq!(req.messages.to_list()[1].content.text(), "");
    }

    #[test]
    fn api_error_parses_vllm_llamacpp_and_bare_shapes() {
        let vllm = r#"{"error":{"message":"The model `foo` does not exist. Valid aliases: qwen3.","type":"NotFoundError","param":"model","code":404}}"#;
        let api = parse_api_error(vllm).unwrap();
        assert_eq!(api.kind.as_deref(), Some("NotFoundError"));
        assert_eq!(api.param.as_deref(), Some("model"));
        assert_eq!(api.code, Some(json!(404)));

        let llama = r#"{"error":{"code":400,"message":"request (4476 tokens) exceeds the available context size (4096 tokens)","type":"exceed_context_size_error","n_prompt_tokens":4476,"n_ctx":4096}}"#;
        let api = parse_api_error(llama).unwrap();
        assert_eq!(api.kind.as_deref(), Some("exceed_context_size_error"));
        assert_eq!(api.param, None);

        let bare = parse_api_error(r#"{"error":"Unauthorized"}"#).unwrap();
        assert_eq!(bare.message, "Unauthorized");

        let odd = parse_api_error(r#"{"error":{"message":"x","param":3,"type":null}}"#).unwrap();
        assert_eq!(odd.param.as_deref(), Some("3"));
        assert_eq!(odd.kind, None);

        assert_eq!(parse_api_error("<html>502 Bad Gateway</html>"), None);
        assert_eq!(parse_api_error(""), None);
    }
}
