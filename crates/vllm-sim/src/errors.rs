//! Every error the API returns, and the one exhaustive mapping to vLLM's status, `type`, `param`
//! and message (`{"error":{"message","type","param","code"}}`).

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::openai::{ErrorBody, ErrorInfo};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    #[error("1 validation error:\n  Unsupported Media Type: Only 'application/json' is allowed")]
    UnsupportedMediaType,
    /// Body validation (pydantic in vLLM); `param` is the offending field when known.
    #[error("{message}")]
    InvalidBody { message: String, param: Option<String> },
    #[error("The model `{model}` does not exist. Valid aliases: {aliases}.")]
    ModelNotFound { model: String, aliases: String },
    #[error(
        "This model's maximum context length is {max_model_len} tokens. However, your prompt \
         contains {prompt_tokens} input tokens, which exceeds this limit even without any output \
         tokens. Please reduce the length of the input prompt. (parameter=input_tokens, \
         value={prompt_tokens})"
    )]
    PromptTooLong { prompt_tokens: u32, max_model_len: u32 },
    /// A prompt exactly `max_model_len` long leaves no room for output; vLLM rejects it inside
    /// the engine, so a stream reports it after the 200.
    #[error(
        "The decoder prompt (length {prompt_tokens}) is longer than the maximum model length of \
         {max_model_len}. Make sure that `max_model_len` is no smaller than the number of text \
         tokens."
    )]
    PromptFillsContext { prompt_tokens: u32, max_model_len: u32 },
    #[error(
        "max_tokens={max_tokens} cannot be greater than max_model_len={max_model_len}. Please \
         request fewer output tokens."
    )]
    MaxTokensTooLarge { max_tokens: i64, max_model_len: u32 },
    #[error("max_tokens must be at least 1, got {max_tokens}.")]
    MaxTokensTooSmall { max_tokens: i64 },
    #[error("At most {limit} image(s) may be provided in one prompt.")]
    TooManyImages { limit: u32 },
    /// Image parts sent to a text-only model: a `ValueError` → 400 naming the served model (observed on vLLM 0.32.0,
    /// `{"message":"smollm2 is not a multimodal model","type":"BadRequestError",...}`).
    #[error("{model} is not a multimodal model")]
    NotMultimodal { model: String },
    #[error(
        "The engine is currently busy and cannot accept new requests. Please try again later or \
         on a different instance."
    )]
    QueueFull,
    #[error("The server had an error while processing your request.")]
    EngineDead,
}

impl ApiError {
    /// A body-validation error in pydantic's wording.
    pub fn invalid(detail: impl AsRef<str>, param: Option<&str>) -> Self {
        ApiError::InvalidBody {
            message: format!("1 validation error:\n  {}", detail.as_ref()),
            param: param.map(str::to_owned),
        }
    }

    /// A request body that did not parse.
    pub fn from_json(err: &serde_json::Error) -> Self {
        let text = err.to_string();
        if err.is_syntax() || err.is_eof() {
            return Self::invalid(
                format!(
                    "{{'type': 'json_invalid', 'loc': ('body', {}), 'msg': 'JSON decode error', 'input': {{}}, 'ctx': {{'error': '{text}'}}}}",
                    err.column()
                ),
                None,
            );
        }
        if let Some(field) = text
            .strip_prefix("missing field `")
            .and_then(|rest| rest.split('`').next())
        {
            return Self::invalid(
                format!("{{'type': 'missing', 'loc': ('body', '{field}'), 'msg': 'Field required'}}"),
                Some(field),
            );
        }
        Self::invalid(
            format!("{{'type': 'value_error', 'loc': ('body',), 'msg': '{text}'}}"),
            None,
        )
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::UnsupportedMediaType
            | ApiError::InvalidBody { .. }
            | ApiError::PromptTooLong { .. }
            | ApiError::PromptFillsContext { .. }
            | ApiError::MaxTokensTooLarge { .. }
            | ApiError::MaxTokensTooSmall { .. }
            | ApiError::TooManyImages { .. }
            | ApiError::NotMultimodal { .. } => StatusCode::BAD_REQUEST,
            ApiError::ModelNotFound { .. } => StatusCode::NOT_FOUND,
            ApiError::QueueFull => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::EngineDead => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The `type` field.
    pub fn kind(&self) -> &'static str {
        match self {
            ApiError::UnsupportedMediaType | ApiError::InvalidBody { .. } => "Bad Request",
            ApiError::PromptTooLong { .. }
            | ApiError::PromptFillsContext { .. }
            | ApiError::MaxTokensTooLarge { .. }
            | ApiError::MaxTokensTooSmall { .. }
            | ApiError::TooManyImages { .. }
            | ApiError::NotMultimodal { .. } => "BadRequestError",
            ApiError::ModelNotFound { .. } => "NotFoundError",
            ApiError::QueueFull => "Service Unavailable",
            ApiError::EngineDead => "InternalServerError",
        }
    }

    /// The `param` field.
    pub fn param(&self) -> Option<&str> {
        match self {
            ApiError::InvalidBody { param, .. } => param.as_deref(),
            ApiError::ModelNotFound { .. } => Some("model"),
            ApiError::PromptTooLong { .. } => Some("input_tokens"),
            ApiError::MaxTokensTooLarge { .. } | ApiError::MaxTokensTooSmall { .. } => Some("max_tokens"),
            ApiError::TooManyImages { .. } => Some("image"),
            ApiError::UnsupportedMediaType
            | ApiError::PromptFillsContext { .. }
            | ApiError::NotMultimodal { .. }
            | ApiError::QueueFull
            | ApiError::EngineDead => None,
        }
    }

    /// The compact JSON body.
    pub fn to_json(&self) -> String {
        let message = self.to_string();
        let body = ErrorBody {
            error: ErrorInfo {
                message: &message,
                kind: self.kind(),
                param: self.param(),
                code: self.status().as_u16(),
            },
        };
        serde_json::to_string(&body).unwrap_or_default()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status(),
            [(header::CONTENT_TYPE, "application/json")],
            self.to_json(),
        )
            .into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_match_the_contract() {
        let e = ApiError::ModelNotFound {
            model: "foo".into(),
            aliases: "qwen3".into(),
        };
        assert_eq!(
            e.to_json(),
            r#"{"error":{"message":"The model `foo` does not exist. Valid aliases: qwen3.","type":"NotFoundError","param":"model","code":404}}"#
        );
        assert_eq!(
            ApiError::UnsupportedMediaType.to_json(),
            r#"{"error":{"message":"1 validation error:\n  Unsupported Media Type: Only 'application/json' is allowed","type":"Bad Request","param":null,"code":400}}"#
        );
        let e = ApiError::PromptTooLong {
            prompt_tokens: 5000,
            max_model_len: 4096,
        };
        assert_eq!(
            e.to_string(),
            "This model's maximum context length is 4096 tokens. However, your prompt contains 5000 input tokens, which exceeds this limit even without any output tokens. Please reduce the length of the input prompt. (parameter=input_tokens, value=5000)"
        );
        let e = ApiError::MaxTokensTooLarge {
            max_tokens: 5000,
            max_model_len: 4096,
        };
        assert_eq!(
            e.to_string(),
            "max_tokens=5000 cannot be greater than max_model_len=4096. Please request fewer output tokens."
        );
    }

    #[test]
    fn json_errors_name_the_missing_field() {
        let err = serde_json::from_str::<super::super::openai::ChatRequest>("{}").unwrap_err();
        let api = ApiError::from_json(&err);
        assert_eq!(api.param(), Some("messages"));
        assert_eq!(api.kind(), "Bad Request");
        let err = serde_json::from_str::<super::super::openai::ChatRequest>("{").unwrap_err();
        assert!(ApiError::from_json(&err).to_string().contains("json_invalid"));
    }
}
