//! The OpenAI-compatible wire types: request bodies (unknown fields ignored, like vLLM's
//! `extra="allow"`) and the JSON responses, whose struct field order is vLLM's key order.
//! Streaming chunks are written by hand in [`super::sse`].

use std::borrow::Cow;
use std::sync::LazyLock;

use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};

/// Prompt tokens of one image: what Qwen-VL gives a 448×448 picture (28×28 pixels per token after its 2×2 patch
/// merge). Real counts follow each image's resolution; the sim does not decode images, so every image costs this.
pub const IMAGE_TOKENS: usize = 256;

/// Rendered in place of an image part, as vLLM expands Qwen-VL's placeholder: `<|vision_start|>`, then
/// [`IMAGE_TOKENS`] `<|image_pad|>` tokens, then `<|vision_end|>`. The pad tokens count in `prompt_tokens`,
/// `max_model_len` and prefill time, as in vLLM. (vLLM also hashes the image into the prefix-cache keys; the sim
/// does not, so two different images at the same place of a prompt share cache blocks.)
pub static IMAGE_PLACEHOLDER: LazyLock<String> =
    LazyLock::new(|| format!("<|vision_start|>{}<|vision_end|>", "<|image_pad|>".repeat(IMAGE_TOKENS)));

/// How the echo reply shows an image part.
pub const ECHO_IMAGE: &str = "<image>";

/// `POST /v1/chat/completions`.
#[derive(Debug, Deserialize)]
pub struct ChatRequest {
    pub messages: Vec<Message>,
    pub model: Option<String>,
    pub stream: Option<bool>,
    pub stream_options: Option<StreamOptions>,
    pub max_tokens: Option<i64>,
    pub max_completion_tokens: Option<i64>,
    pub stop: Option<Stop>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub seed: Option<i64>,
    pub n: Option<u32>,
    pub chat_template_kwargs: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(default)]
    pub priority: i64,
    pub request_id: Option<String>,
    pub add_generation_prompt: Option<bool>,
    #[serde(default)]
    pub continue_final_message: bool,
    #[serde(default)]
    pub include_stop_str_in_output: bool,
    #[serde(default)]
    pub ignore_eos: bool,
    #[serde(default)]
    pub min_tokens: u32,
    pub cache_salt: Option<String>,
}

/// `stream_options`; vLLM defaults `include_usage` to true once the object is present.
#[derive(Debug, Deserialize)]
pub struct StreamOptions {
    pub include_usage: Option<bool>,
    pub continuous_usage_stats: Option<bool>,
}

/// `stop`: a string or a list of strings.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

impl Stop {
    pub fn into_vec(self) -> Vec<String> {
        match self {
            Stop::One(s) => vec![s],
            Stop::Many(v) => v,
        }
    }
}

/// One chat message; fields other than `role` and `content` are accepted and ignored.
#[derive(Debug, Deserialize)]
pub struct Message {
    pub role: String,
    #[serde(default)]
    pub content: Option<Content>,
}

/// `content`: a string or a list of parts.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<Part>),
}

/// A content part: `text`, or a media part (`image_url`, `input_image`, ...).
#[derive(Debug, Deserialize)]
pub struct Part {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub text: Option<String>,
    pub image_url: Option<IgnoredAny>,
}

impl Part {
    fn is_image(&self) -> bool {
        match self.kind.as_deref() {
            Some(kind) => kind.starts_with("image") || kind == "input_image",
            None => self.image_url.is_some(),
        }
    }
}

impl Message {
    /// The content as the template sees it: text parts joined by `\n`, images as [`IMAGE_PLACEHOLDER`].
    pub fn text(&self) -> Cow<'_, str> {
        self.render(&IMAGE_PLACEHOLDER)
    }

    /// The content as the echo reply shows it: images as [`ECHO_IMAGE`].
    pub fn echo_text(&self) -> Cow<'_, str> {
        self.render(ECHO_IMAGE)
    }

    fn render(&self, image: &str) -> Cow<'_, str> {
        match &self.content {
            None => Cow::Borrowed(""),
            Some(Content::Text(text)) => Cow::Borrowed(text),
            Some(Content::Parts(parts)) => {
                let mut out = String::new();
                let mut last_was_text = false;
                for part in parts {
                    if part.is_image() {
                        out.push_str(image);
                        last_was_text = false;
                    } else if let Some(text) = &part.text {
                        if last_was_text {
                            out.push('\n');
                        }
                        out.push_str(text);
                        last_was_text = true;
                    }
                }
                Cow::Owned(out)
            }
        }
    }

    /// Image parts in this message.
    pub fn images(&self) -> u32 {
        match &self.content {
            Some(Content::Parts(parts)) => parts.iter().filter(|p| p.is_image()).count() as u32,
            _ => 0,
        }
    }
}

/// `POST /tokenize`: the completion form (`prompt`) or the chat form (`messages`).
#[derive(Debug, Deserialize)]
pub struct TokenizeRequest {
    pub model: Option<String>,
    pub prompt: Option<String>,
    pub messages: Option<Vec<Message>>,
    pub add_generation_prompt: Option<bool>,
    #[serde(default)]
    pub continue_final_message: bool,
    #[serde(default)]
    pub return_token_strs: bool,
}

#[derive(Debug, Serialize)]
pub struct TokenizeResponse<'a> {
    pub count: usize,
    pub max_model_len: u32,
    pub tokens: Vec<u32>,
    pub token_strs: Option<Vec<&'a str>>,
}

/// `POST /detokenize`.
#[derive(Debug, Deserialize)]
pub struct DetokenizeRequest {
    pub model: Option<String>,
    pub tokens: Vec<i64>,
}

#[derive(Debug, Serialize)]
pub struct DetokenizeResponse {
    pub prompt: String,
}

/// `GET /v1/models`.
#[derive(Debug, Serialize)]
pub struct ModelList {
    pub object: &'static str,
    pub data: Vec<ModelCard>,
}

#[derive(Debug, Serialize)]
pub struct ModelCard {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub owned_by: &'static str,
    pub root: String,
    pub parent: Option<String>,
    pub max_model_len: u32,
    pub permission: Vec<ModelPermission>,
}

#[derive(Debug, Serialize)]
pub struct ModelPermission {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub allow_create_engine: bool,
    pub allow_sampling: bool,
    pub allow_logprobs: bool,
    pub allow_search_indices: bool,
    pub allow_view: bool,
    pub allow_fine_tuning: bool,
    pub organization: &'static str,
    pub group: Option<String>,
    pub is_blocking: bool,
}

/// Non-streaming `chat.completion` (pydantic `model_dump()`: every field, nulls included).
#[derive(Debug, Serialize)]
pub struct ChatCompletion<'a> {
    pub id: &'a str,
    pub object: &'static str,
    pub created: u64,
    pub model: &'a str,
    pub choices: [ChatChoice<'a>; 1],
    pub service_tier: Option<&'static str>,
    pub system_fingerprint: &'a str,
    pub usage: FullUsage,
    pub prompt_logprobs: Option<()>,
    pub prompt_token_ids: Option<()>,
    pub prompt_text: Option<()>,
    pub kv_transfer_params: Option<()>,
}

#[derive(Debug, Serialize)]
pub struct ChatChoice<'a> {
    pub index: u32,
    pub message: ChatMessageOut<'a>,
    pub logprobs: Option<()>,
    pub finish_reason: &'static str,
    pub stop_reason: Option<&'a str>,
    pub token_ids: Option<()>,
}

/// vLLM's `ChatMessage`; an empty `tool_calls` list is dropped by its serializer.
#[derive(Debug, Serialize)]
pub struct ChatMessageOut<'a> {
    pub role: &'a str,
    pub content: &'a str,
    pub refusal: Option<()>,
    pub annotations: Option<()>,
    pub audio: Option<()>,
    pub function_call: Option<()>,
    pub reasoning: Option<()>,
}

#[derive(Debug, Serialize)]
pub struct FullUsage {
    pub prompt_tokens: u32,
    pub total_tokens: u32,
    pub completion_tokens: u32,
    pub prompt_tokens_details: Option<PromptTokensDetails>,
    pub completion_tokens_details: Option<()>,
}

#[derive(Debug, Serialize)]
pub struct PromptTokensDetails {
    pub cached_tokens: u32,
    pub created_cache_tokens: Option<u32>,
    pub multimodal_tokens: Option<()>,
}

/// `{"error":{"message","type","param","code"}}`.
#[derive(Debug, Serialize)]
pub struct ErrorBody<'a> {
    pub error: ErrorInfo<'a>,
}

#[derive(Debug, Serialize)]
pub struct ErrorInfo<'a> {
    pub message: &'a str,
    #[serde(rename = "type")]
    pub kind: &'a str,
    pub param: Option<&'a str>,
    pub code: u16,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_forms_render_for_the_template() {
        let m: Message = serde_json::from_str(
            r#"{"role":"user","content":[{"type":"text","text":"a"},{"type":"image_url","image_url":{"url":"data:x"}},{"type":"text","text":"b"}],"name":"x"}"#,
        )
        .unwrap();
        assert_eq!(m.text(), format!("a{}b", *IMAGE_PLACEHOLDER));
        assert_eq!(m.echo_text(), "a<image>b");
        assert_eq!(m.images(), 1);
        assert_eq!(
            crate::tokenizer::tokenize(&IMAGE_PLACEHOLDER).len(),
            IMAGE_TOKENS + 2,
            "one token per pad, plus the start and end markers"
        );
        let m: Message = serde_json::from_str(r#"{"role":"assistant","content":null}"#).unwrap();
        assert_eq!(m.text(), "");
    }

    #[test]
    fn unknown_request_fields_are_ignored() {
        let r: ChatRequest =
            serde_json::from_str(r#"{"messages":[],"frobnicate":1,"stop":"x","stream_options":{}}"#).unwrap();
        assert!(matches!(r.stop, Some(Stop::One(_))));
        assert!(r.stream_options.unwrap().include_usage.is_none());
    }
}
