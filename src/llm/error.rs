//! [`LlmError`]: everything that can go wrong between us and the engine, keeping what failed (the raw body, the raw
//! chunk), plus the one mapping to stable error codes and the one line shown to users.

use super::types::ApiError;

/// Longest engine text quoted in a [`LlmError::user_message`].
const USER_MESSAGE_MAX_CHARS: usize = 300;
/// Longest engine text quoted by `Display`.
const DISPLAY_MAX_CHARS: usize = 1000;

#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    /// Could not reach the engine (refused, DNS, connect timeout).
    #[error("could not connect to the engine")]
    Connect(#[source] reqwest::Error),
    /// Non-2xx before streaming; `body` is kept raw, `api` is the parsed OpenAI error when the body had that shape.
    #[error("engine answered HTTP {status}: {}", status_detail(.api.as_ref(), .body))]
    Status {
        status: u16,
        api: Option<ApiError>,
        body: String,
    },
    /// A 2xx whose content type is not `text/event-stream`.
    #[error("engine answered with content type {content_type:?} instead of text/event-stream")]
    NotEventStream { content_type: String, body: String },
    /// `data: {"error":{...}}` after the 200.
    #[error("engine error during the stream: {}", .0.message)]
    InStream(ApiError),
    /// A `data:` payload that is not the expected JSON; `raw` is the payload as received.
    #[error("could not decode a chunk from the engine")]
    Decode {
        raw: String,
        #[source]
        source: serde_json::Error,
    },
    /// The body ended, or the transport broke, mid-stream without `[DONE]`.
    #[error("engine stream ended before [DONE]")]
    Disconnected,
    /// Any other HTTP failure (connection reset before the response, failure reading an error body).
    #[error("HTTP transport error talking to the engine")]
    Transport(#[source] reqwest::Error),
    /// Building the client or the request failed.
    #[error("LLM client setup failed: {0}")]
    Client(#[from] ClientError),
}

/// Why the client, or one request, could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("engine URL must look like http://host:port, got {0}")]
    BadUrl(url::Url),
    #[error("building the HTTP client: {}", chain(.0))]
    Build(#[source] reqwest::Error),
    #[error("request id {0:?} is not a valid header value")]
    BadRequestId(String),
}

/// An error and its causes on one line.
pub(crate) fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        out.push_str(": ");
        out.push_str(&e.to_string());
        source = e.source();
    }
    out
}

/// What kind of failure an [`LlmError`] is: decisions match on this; [`LlmErrorKind::code`] is its stable name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LlmErrorKind {
    EngineUnavailable,
    ModelNotFound,
    EngineBusy,
    ContextOverflow,
    /// The request carried images and the model is text-only.
    ImagesUnsupported,
    BadRequest,
    EngineError,
    EngineDisconnected,
    ProtocolError,
    ClientError,
}

impl LlmErrorKind {
    /// Stable snake_case code for metrics labels and wire error frames.
    pub fn code(self) -> &'static str {
        match self {
            Self::EngineUnavailable => "engine_unavailable",
            Self::ModelNotFound => "model_not_found",
            Self::EngineBusy => "engine_busy",
            Self::ContextOverflow => "context_overflow",
            Self::ImagesUnsupported => "images_unsupported",
            Self::BadRequest => "bad_request",
            Self::EngineError => "engine_error",
            Self::EngineDisconnected => "engine_disconnected",
            Self::ProtocolError => "protocol_error",
            Self::ClientError => "client_error",
        }
    }
}

/// The engine's message, else the start of the raw body (an HTML error page can be long).
fn status_detail<'a>(api: Option<&'a ApiError>, body: &'a str) -> &'a str {
    let text = match api {
        Some(api) if !api.message.is_empty() => &api.message,
        _ => body,
    };
    match text.char_indices().nth(DISPLAY_MAX_CHARS) {
        Some((cut, _)) => &text[..cut],
        None => text,
    }
}

impl LlmError {
    /// Map a failed `send()`: connect failures and timeouts (only connect and probe timeouts are set) mean the
    /// engine is unreachable; the rest is transport trouble.
    pub(crate) fn from_send(e: reqwest::Error) -> Self {
        if e.is_connect() || e.is_timeout() {
            LlmError::Connect(e)
        } else {
            LlmError::Transport(e)
        }
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> LlmErrorKind {
        use LlmErrorKind as K;
        match self {
            LlmError::Connect(_) => K::EngineUnavailable,
            LlmError::Status { status, api, body } => match *status {
                404 => K::ModelNotFound,
                // 429 is what a rate-limiting proxy in front of the engine says: busy, retry later.
                429 | 503 => K::EngineBusy,
                400..=499 if is_context_overflow(api.as_ref(), body) => K::ContextOverflow,
                400..=499 if is_images_unsupported(api.as_ref(), body) => K::ImagesUnsupported,
                400..=499 => K::BadRequest,
                // 5xx, and the 1xx/3xx that should never reach us.
                0..=399 | 500..=u16::MAX => K::EngineError,
            },
            // vLLM reports a prompt of exactly max_model_len after the 200, as an in-stream 400.
            LlmError::InStream(api) if is_context_overflow(Some(api), "") => K::ContextOverflow,
            LlmError::InStream(api) if is_images_unsupported(Some(api), "") => K::ImagesUnsupported,
            LlmError::InStream(_) => K::EngineError,
            LlmError::Disconnected | LlmError::Transport(_) => K::EngineDisconnected,
            LlmError::NotEventStream { .. } | LlmError::Decode { .. } => K::ProtocolError,
            LlmError::Client(_) => K::ClientError,
        }
    }

    /// Stable snake_case code for metrics labels and wire error frames.
    pub fn code(&self) -> &'static str {
        self.kind().code()
    }

    /// One line for the user after "Error: ". No Rust Debug noise; the engine's own words where they help.
    pub fn user_message(&self) -> String {
        match self {
            LlmError::Connect(_) => "engine unavailable, please retry".to_owned(),
            LlmError::Status { status, api, body } => {
                let detail = one_line(status_detail(api.as_ref(), body));
                match self.kind() {
                    LlmErrorKind::ContextOverflow => context_overflow_message(&detail),
                    LlmErrorKind::ImagesUnsupported => IMAGES_UNSUPPORTED_MESSAGE.to_owned(),
                    LlmErrorKind::EngineBusy => "engine busy, please retry later".to_owned(),
                    LlmErrorKind::ModelNotFound if detail.is_empty() => "model not found (HTTP 404)".to_owned(),
                    LlmErrorKind::EngineError if detail.is_empty() => format!("engine error (HTTP {status})"),
                    LlmErrorKind::EngineError => format!("engine error (HTTP {status}): {detail}"),
                    _ if detail.is_empty() => {
                        format!("engine rejected the request (HTTP {status})")
                    }
                    _ => detail,
                }
            }
            LlmError::NotEventStream { content_type, .. } => {
                format!("engine sent an unexpected response ({})", one_line(content_type))
            }
            LlmError::InStream(api) => {
                let detail = one_line(&api.message);
                if self.kind() == LlmErrorKind::ContextOverflow {
                    context_overflow_message(&detail)
                } else if self.kind() == LlmErrorKind::ImagesUnsupported {
                    IMAGES_UNSUPPORTED_MESSAGE.to_owned()
                } else if detail.is_empty() {
                    "engine error".to_owned()
                } else {
                    format!("engine error: {detail}")
                }
            }
            LlmError::Decode { .. } => "engine sent a malformed response".to_owned(),
            LlmError::Disconnected | LlmError::Transport(_) => "engine connection lost, please retry".to_owned(),
            LlmError::Client(e) => format!("internal error: {}", one_line(&e.to_string())),
        }
    }
}

fn context_overflow_message(detail: &str) -> String {
    if detail.is_empty() {
        "conversation is too long for the model's context".to_owned()
    } else {
        format!("conversation is too long for the model's context ({detail})")
    }
}

/// Whether an error says the prompt does not fit the context window. vLLM: 400 with `param` `input_tokens` (or
/// `input_text`) and "This model's maximum context length is ..."; in-stream "... longer than the maximum model
/// length ..."; llama.cpp: `exceed_context_size_error`, "request (N tokens) exceeds the available context size
/// (M tokens)"; OpenAI: "context_length_exceeded".
fn is_context_overflow(api: Option<&ApiError>, body: &str) -> bool {
    const PHRASES: [&str; 5] = [
        "maximum context length",
        "exceeds the available context size",
        "context length",
        "maximum model length",
        "context_length_exceeded",
    ];
    let mentions = |text: &str| {
        let text = text.to_ascii_lowercase();
        PHRASES.iter().any(|p| text.contains(p))
    };
    match api {
        Some(api) => {
            matches!(api.param.as_deref(), Some("input_tokens" | "input_text"))
                || matches!(
                    api.kind.as_deref(),
                    Some("exceed_context_size_error" | "context_length_exceeded")
                )
                || mentions(&api.message)
        }
        None => mentions(body),
    }
}

/// The reply to an image request for a text-only model.
const IMAGES_UNSUPPORTED_MESSAGE: &str = "this model does not read images";

/// Whether an error says the model takes no images. vLLM (a text-only model given an `image_url` part): 400
/// `BadRequestError` "{served model} is not a multimodal model" (vLLM 0.32.0, observed with SmolLM2); llama.cpp without an
/// mmproj: "image input is not supported"; others: "does not support image input" and the like.
fn is_images_unsupported(api: Option<&ApiError>, body: &str) -> bool {
    const PHRASES: [&str; 4] = [
        "not multimodal",
        "not a multimodal",
        "image input is not supported",
        "does not support image",
    ];
    let text = api.map_or(body, |api| api.message.as_str()).to_ascii_lowercase();
    PHRASES.iter().any(|p| text.contains(p))
}

/// Collapse whitespace (vLLM validation messages span lines) and cap the length, on a char boundary.
fn one_line(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(USER_MESSAGE_MAX_CHARS + 4));
    for (n, word) in text.split_whitespace().enumerate() {
        if n > 0 {
            out.push(' ');
        }
        out.push_str(word);
        if out.chars().count() > USER_MESSAGE_MAX_CHARS {
            let cut = out
                .char_indices()
                .nth(USER_MESSAGE_MAX_CHARS)
                .map_or(out.len(), |(i, _)| i);
            out.truncate(cut);
            out.push('…');
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::types::parse_api_error;

    fn status(status: u16, body: &str) -> LlmError {
        LlmError::Status {
            status,
            api: parse_api_error(body),
            body: body.to_owned(),
        }
    }

    const VLLM_OVERFLOW: &str = r#"{"error":{"message":"This model's maximum context length is 4096 tokens. However, your prompt contains 5000 input tokens, which exceeds this limit even without any output tokens. Please reduce the length of the input prompt. (parameter=input_tokens, value=5000)","type":"BadRequestError","param":"input_tokens","code":400}}"#;
    const LLAMA_OVERFLOW: &str = r#"{"error":{"code":400,"message":"request (4476 tokens) exceeds the available context size (4096 tokens)","type":"exceed_context_size_error","n_prompt_tokens":4476,"n_ctx":4096}}"#;

    #[test]
    fn codes_of_http_statuses() {
        let cases = [
            (status(400, VLLM_OVERFLOW), "context_overflow"),
            (status(400, LLAMA_OVERFLOW), "context_overflow"),
            (
                status(
                    400,
                    r#"{"error":{"message":"x","type":"BadRequestError","param":"input_text","code":400}}"#,
                ),
                "context_overflow",
            ),
            (
                status(400, "the request exceeds the available context size, try increasing it"),
                "context_overflow",
            ),
            (
                status(
                    400,
                    r#"{"error":{"message":"max_tokens=9000 cannot be greater than max_model_len=4096. Please request fewer output tokens.","type":"BadRequestError","param":"max_tokens","code":400}}"#,
                ),
                "bad_request",
            ),
            (status(401, r#"{"error":"Unauthorized"}"#), "bad_request"),
            (
                status(
                    404,
                    r#"{"error":{"message":"The model `foo` does not exist. Valid aliases: qwen3.","type":"NotFoundError","param":"model","code":404}}"#,
                ),
                "model_not_found",
            ),
            (status(404, ""), "model_not_found"),
            (status(429, ""), "engine_busy"),
            (status(503, ""), "engine_busy"),
            (status(500, ""), "engine_error"),
            (status(502, "<html>bad gateway</html>"), "engine_error"),
            (status(302, ""), "engine_error"),
        ];
        for (err, code) in cases {
            assert_eq!(err.code(), code, "{err:?}");
        }
    }

    #[test]
    fn codes_of_stream_errors() {
        let api = |message: &str, param: Option<&str>| ApiError {
            message: message.into(),
            kind: None,
            param: param.map(Into::into),
            code: None,
        };
        assert_eq!(
            LlmError::InStream(api("Internal server error", None)).code(),
            "engine_error"
        );
        let at_limit = "The decoder prompt (length 4096) is longer than the maximum model length of 4096.";
        assert_eq!(LlmError::InStream(api(at_limit, None)).code(), "context_overflow");
        assert_eq!(
            LlmError::InStream(api("x", Some("input_tokens"))).code(),
            "context_overflow"
        );
        assert_eq!(LlmError::Disconnected.code(), "engine_disconnected");
        let source = serde_json::from_str::<serde_json::Value>("{").unwrap_err();
        assert_eq!(
            LlmError::Decode {
                raw: "{".into(),
                source
            }
            .code(),
            "protocol_error"
        );
        let not_sse = LlmError::NotEventStream {
            content_type: "text/html".into(),
            body: String::new(),
        };
        assert_eq!(not_sse.code(), "protocol_error");
        let bad_id = LlmError::Client(ClientError::BadRequestId("x\n".into()));
        assert_eq!(bad_id.code(), "client_error");
    }

    #[test]
    fn user_messages_are_one_clean_line() {
        let overflow = status(400, VLLM_OVERFLOW).user_message();
        assert!(overflow.starts_with("conversation is too long for the model's context (This model's maximum"));
        assert_eq!(status(503, "").user_message(), "engine busy, please retry later");
        assert_eq!(
            status(400, r#"{"error":{"message":"1 validation error:\n  Unsupported Media Type","type":"Bad Request","param":null,"code":400}}"#)
                .user_message(),
            "1 validation error: Unsupported Media Type"
        );
        assert_eq!(status(418, "").user_message(), "engine rejected the request (HTTP 418)");
        assert_eq!(status(500, "").user_message(), "engine error (HTTP 500)");
        assert_eq!(
            LlmError::Disconnected.user_message(),
            "engine connection lost, please retry"
        );
        let long = status(400, &"word ".repeat(500)).user_message();
        assert_eq!(long.chars().count(), USER_MESSAGE_MAX_CHARS + 1);
        assert!(long.ends_with('…'));
        for err in [status(400, VLLM_OVERFLOW), status(404, ""), LlmError::Disconnected] {
            let msg = err.user_message();
            assert!(
                !msg.contains('\n') && !msg.contains("Some(") && !msg.contains('{'),
                "{msg}"
            );
        }
    }

    #[test]
    fn a_text_only_model_given_images_says_so() {
        let vllm = r#"{"error":{"message":"smollm2 is not a multimodal model","type":"BadRequestError","param":null,"code":400}}"#;
        let llamacpp = r#"{"error":{"code":500,"message":"image input is not supported - hint: if this is unexpected, you may need to provide the mmproj","type":"server_error"}}"#;
        for err in [
            status(400, vllm),
            status(400, llamacpp),
            LlmError::InStream(parse_api_error(vllm).unwrap()),
        ] {
            assert_eq!(err.code(), "images_unsupported", "{err:?}");
            assert_eq!(err.user_message(), "this model does not read images");
        }
        // A 5xx is the engine failing, whatever it says.
        assert_eq!(status(500, llamacpp).code(), "engine_error");
    }

    #[test]
    fn display_prefers_the_engine_message() {
        let err = status(404, r#"{"error":{"message":"no such model","type":"NotFoundError"}}"#);
        assert_eq!(err.to_string(), "engine answered HTTP 404: no such model");
        assert_eq!(
            status(502, "bad gateway").to_string(),
            "engine answered HTTP 502: bad gateway"
        );
    }
}
