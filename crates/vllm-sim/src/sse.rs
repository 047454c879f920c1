//! Server-sent events exactly as vLLM frames `/v1/chat/completions` streams: `data: <compact
//! JSON>\n\n` per event, no `event:`/`id:` lines, `data: [DONE]` last.
//!
//! The chunk JSON is written by hand (a pre-rendered head plus the few fields that change) because
//! it is the hot path and because its key sets are pydantic's `exclude_unset` output, which differs
//! per chunk kind:
//! - role chunk: `choices[{index,delta{role,content},logprobs,finish_reason}]`, then
//!   `prompt_token_ids`, `prompt_text`;
//! - content chunk: `choices[{index,delta{content},logprobs,finish_reason,token_ids}]`, then
//!   `kv_transfer_params`;
//! - finish chunk: `choices[{...,finish_reason,stop_reason,token_ids,weight_versions}]`, then
//!   `system_fingerprint` (only without include_usage), `kv_transfer_params`;
//! - usage chunk: `choices:[]`, `usage{prompt_tokens,total_tokens,completion_tokens
//!   [,prompt_tokens_details{cached_tokens}]}`, `system_fingerprint`; no nulls;
//! - with continuous usage stats every choice chunk also carries
//!   `usage{prompt_tokens,total_tokens,completion_tokens,completion_tokens_details:null}` right
//!   after `choices`.

use std::sync::Arc;

/// The response content type of a stream.
pub const CONTENT_TYPE: &str = "text/event-stream; charset=utf-8";

/// Renders the events of one streamed chat completion.
#[derive(Debug, Clone)]
pub struct ChunkWriter {
    /// `{"id":"chatcmpl-…","object":"chat.completion.chunk","created":N,"model":"M","choices":`
    head: String,
    prompt_tokens: u32,
    include_usage: bool,
    continuous_usage: bool,
    prompt_tokens_details: bool,
    fingerprint: Arc<str>,
}

/// How a stream reports usage.
#[derive(Debug, Clone, Copy)]
pub struct UsageMode {
    pub include_usage: bool,
    pub continuous: bool,
    pub prompt_tokens_details: bool,
}

impl ChunkWriter {
    pub fn new(
        id: &str,
        created: u64,
        model: &str,
        prompt_tokens: u32,
        usage: UsageMode,
        fingerprint: Arc<str>,
    ) -> Self {
        let mut head = String::with_capacity(96 + id.len() + model.len());
        head.push_str("{\"id\":");
        push_json_str(&mut head, id);
        head.push_str(",\"object\":\"chat.completion.chunk\",\"created\":");
        head.push_str(&created.to_string());
        head.push_str(",\"model\":");
        push_json_str(&mut head, model);
        head.push_str(",\"choices\":");
        Self {
            head,
            prompt_tokens,
            include_usage: usage.include_usage,
            continuous_usage: usage.include_usage && usage.continuous,
            prompt_tokens_details: usage.prompt_tokens_details,
            fingerprint,
        }
    }

    /// The first chunk: `delta:{"role":ROLE,"content":""}`.
    pub fn role(&self, out: &mut String, role: &str) {
        self.open(out);
        out.push_str("[{\"index\":0,\"delta\":{\"role\":");
        push_json_str(out, role);
        out.push_str(",\"content\":\"\"},\"logprobs\":null,\"finish_reason\":null}]");
        self.continuous(out, 0);
        out.push_str(",\"prompt_token_ids\":null,\"prompt_text\":null}\n\n");
    }

    /// A content chunk carrying `text`, after `completion_tokens` tokens.
    pub fn content(&self, out: &mut String, text: &str, completion_tokens: u32) {
        self.open(out);
        out.push_str("[{\"index\":0,\"delta\":{\"content\":");
        push_json_str(out, text);
        out.push_str("},\"logprobs\":null,\"finish_reason\":null,\"token_ids\":null}]");
        self.continuous(out, completion_tokens);
        out.push_str(",\"kv_transfer_params\":null}\n\n");
    }

    /// The finish chunk: the last token's `text`, `finish_reason` and `stop_reason`.
    pub fn finish(
        &self,
        out: &mut String,
        text: &str,
        finish_reason: &str,
        stop_reason: Option<&str>,
        completion_tokens: u32,
    ) {
        self.open(out);
        out.push_str("[{\"index\":0,\"delta\":{\"content\":");
        push_json_str(out, text);
        out.push_str("},\"logprobs\":null,\"finish_reason\":\"");
        out.push_str(finish_reason);
        out.push_str("\",\"stop_reason\":");
        match stop_reason {
            Some(stop) => push_json_str(out, stop),
            None => out.push_str("null"),
        }
        out.push_str(",\"token_ids\":null,\"weight_versions\":null}]");
        self.continuous(out, completion_tokens);
        if !self.include_usage {
            out.push_str(",\"system_fingerprint\":");
            push_json_str(out, &self.fingerprint);
        }
        out.push_str(",\"kv_transfer_params\":null}\n\n");
    }

    /// The final usage chunk (only with include_usage).
    pub fn usage(&self, out: &mut String, completion_tokens: u32, cached_tokens: u32) {
        if !self.include_usage {
            return;
        }
        self.open(out);
        out.push_str("[],\"usage\":{");
        self.usage_counts(out, completion_tokens);
        if self.prompt_tokens_details {
            out.push_str(",\"prompt_tokens_details\":{\"cached_tokens\":");
            out.push_str(&cached_tokens.to_string());
            out.push('}');
        }
        out.push_str("},\"system_fingerprint\":");
        push_json_str(out, &self.fingerprint);
        out.push_str("}\n\n");
    }

    fn open(&self, out: &mut String) {
        out.push_str("data: ");
        out.push_str(&self.head);
    }

    fn continuous(&self, out: &mut String, completion_tokens: u32) {
        if self.continuous_usage {
            out.push_str(",\"usage\":{");
            self.usage_counts(out, completion_tokens);
            out.push_str(",\"completion_tokens_details\":null}");
        }
    }

    fn usage_counts(&self, out: &mut String, completion_tokens: u32) {
        let p = self.prompt_tokens;
        let total = u64::from(p) + u64::from(completion_tokens);
        out.push_str(&format!(
            "\"prompt_tokens\":{p},\"total_tokens\":{total},\"completion_tokens\":{completion_tokens}"
        ));
    }
}

/// The terminating event.
pub fn done(out: &mut String) {
    out.push_str("data: [DONE]\n\n");
}

/// An in-stream event carrying `json` (an error body).
pub fn data(out: &mut String, json: &str) {
    out.push_str("data: ");
    out.push_str(json);
    out.push_str("\n\n");
}

/// Append `s` as a JSON string literal (no ASCII escaping of non-ASCII, like pydantic).
pub fn push_json_str(out: &mut String, s: &str) {
    out.push('"');
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        let escape = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            0..=0x1f => "",
            _ => continue,
        };
        out.push_str(&s[start..i]);
        if escape.is_empty() {
            out.push_str(&format!("\\u{b:04x}"));
        } else {
            out.push_str(escape);
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "chatcmpl-9f1c2a7b3d4e5f60";

    fn writer(include_usage: bool, continuous: bool, details: bool, prompt: u32) -> ChunkWriter {
        let usage = UsageMode {
            include_usage,
            continuous,
            prompt_tokens_details: details,
        };
        ChunkWriter::new(
            ID,
            1_763_840_000,
            "qwen3",
            prompt,
            usage,
            Arc::from("vllm-0.33.0-1a2b3c4d"),
        )
    }

    /// The exact chunks of the contract (vllm-contract.md §3).
    #[test]
    fn chunks_match_the_contract_examples() {
        let w = writer(false, false, false, 12);
        let mut out = String::new();
        w.role(&mut out, "assistant");
        w.content(&mut out, "Hello", 1);
        w.finish(&mut out, "", "stop", None, 2);
        done(&mut out);
        let expected = concat!(
            r#"data: {"id":"chatcmpl-9f1c2a7b3d4e5f60","object":"chat.completion.chunk","created":1763840000,"model":"qwen3","choices":[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}],"prompt_token_ids":null,"prompt_text":null}"#,
            "\n\n",
            r#"data: {"id":"chatcmpl-9f1c2a7b3d4e5f60","object":"chat.completion.chunk","created":1763840000,"model":"qwen3","choices":[{"index":0,"delta":{"content":"Hello"},"logprobs":null,"finish_reason":null,"token_ids":null}],"kv_transfer_params":null}"#,
            "\n\n",
            r#"data: {"id":"chatcmpl-9f1c2a7b3d4e5f60","object":"chat.completion.chunk","created":1763840000,"model":"qwen3","choices":[{"index":0,"delta":{"content":""},"logprobs":null,"finish_reason":"stop","stop_reason":null,"token_ids":null,"weight_versions":null}],"system_fingerprint":"vllm-0.33.0-1a2b3c4d","kv_transfer_params":null}"#,
            "\n\n",
            "data: [DONE]\n\n",
        );
        assert_eq!(out, expected);
    }

    #[test]
    fn usage_chunk_matches_the_contract_and_moves_the_fingerprint() {
        let w = writer(true, false, true, 12);
        let mut out = String::new();
        w.finish(&mut out, "", "length", None, 5);
        assert!(!out.contains("system_fingerprint"));
        out.clear();
        w.usage(&mut out, 5, 0);
        assert_eq!(
            out,
            concat!(
                r#"data: {"id":"chatcmpl-9f1c2a7b3d4e5f60","object":"chat.completion.chunk","created":1763840000,"model":"qwen3","choices":[],"usage":{"prompt_tokens":12,"total_tokens":17,"completion_tokens":5,"prompt_tokens_details":{"cached_tokens":0}},"system_fingerprint":"vllm-0.33.0-1a2b3c4d"}"#,
                "\n\n"
            )
        );
        let plain = writer(true, false, false, 12);
        out.clear();
        plain.usage(&mut out, 5, 3);
        assert!(
            out.contains(
                r#""usage":{"prompt_tokens":12,"total_tokens":17,"completion_tokens":5},"system_fingerprint""#
            )
        );
    }

    #[test]
    fn continuous_usage_rides_on_every_choice_chunk() {
        let w = writer(true, true, false, 12);
        let mut out = String::new();
        w.role(&mut out, "assistant");
        assert!(out.contains(r#""finish_reason":null}],"usage":{"prompt_tokens":12,"total_tokens":12,"completion_tokens":0,"completion_tokens_details":null},"prompt_token_ids":null"#));
        out.clear();
        w.finish(&mut out, ".", "stop", Some("\n"), 3);
        assert!(out.contains(r#""stop_reason":"\n","token_ids":null,"weight_versions":null}],"usage":{"prompt_tokens":12,"total_tokens":15,"completion_tokens":3,"completion_tokens_details":null},"kv_transfer_params":null}"#));
    }

    #[test]
    fn json_strings_are_escaped() {
        let mut out = String::new();
        push_json_str(&mut out, "a\"b\\c\nd\u{1}é");
        assert_eq!(out, r#""a\"b\\c\nd\u0001é""#);
    }
}
