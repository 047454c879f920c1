//! [`ChatStream`] over in-memory byte streams: SSE framing, engine chunk shapes, and the ways a stream ends.

use std::convert::Infallible;

use futures_util::StreamExt;
use futures_util::stream;

use super::{ChatEvent, ChatStream, LlmError, Usage};

/// vLLM 0.33's exact chunks (contract §3), with the include_usage chunk and `[DONE]`.
const VLLM_BODY: &str = concat!(
    r#"data: {"id":"chatcmpl-9f1c2a7b3d4e5f60","object":"chat.completion.chunk","created":1763840000,"model":"qwen3","choices":[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}],"prompt_token_ids":null,"prompt_text":null}"#,
    "\n\n",
    r#"data: {"id":"chatcmpl-9f1c2a7b3d4e5f60","object":"chat.completion.chunk","created":1763840000,"model":"qwen3","choices":[{"index":0,"delta":{"content":"Hello"},"logprobs":null,"finish_reason":null,"token_ids":null}],"kv_transfer_params":null}"#,
    "\n\n",
    r#"data: {"id":"chatcmpl-9f1c2a7b3d4e5f60","object":"chat.completion.chunk","created":1763840000,"model":"qwen3","choices":[{"index":0,"delta":{"content":" wörld 世界 🎉"},"logprobs":null,"finish_reason":null,"token_ids":null}],"kv_transfer_params":null}"#,
    "\n\n",
    r#"data: {"id":"chatcmpl-9f1c2a7b3d4e5f60","object":"chat.completion.chunk","created":1763840000,"model":"qwen3","choices":[{"index":0,"delta":{"content":""},"logprobs":null,"finish_reason":"stop","stop_reason":null,"token_ids":null,"weight_versions":null}],"system_fingerprint":"vllm-0.33.0-1a2b3c4d","kv_transfer_params":null}"#,
    "\n\n",
    r#"data: {"id":"chatcmpl-9f1c2a7b3d4e5f60","object":"chat.completion.chunk","created":1763840000,"model":"qwen3","choices":[],"usage":{"prompt_tokens":12,"total_tokens":17,"completion_tokens":5,"prompt_tokens_details":{"cached_tokens":0}},"system_fingerprint":"vllm-0.33.0-1a2b3c4d"}"#,
    "\n\n",
    "data: [DONE]\n\n",
);

fn vllm_events() -> Vec<Outcome> {
    vec![
        delta("Hello"),
        delta(" wörld 世界 🎉"),
        finished("stop"),
        usage(12, 5, Some(0)),
    ]
}

/// A stream item with the error reduced to what the tests compare.
#[derive(Debug, PartialEq)]
enum Outcome {
    Event(ChatEvent),
    InStream(String),
    Decode(String),
    Disconnected,
    Other(String),
}

fn delta(text: &str) -> Outcome {
    Outcome::Event(ChatEvent::Delta(text.into()))
}

fn finished(reason: &str) -> Outcome {
    Outcome::Event(ChatEvent::Finished {
        finish_reason: reason.into(),
    })
}

fn usage(prompt_tokens: u32, completion_tokens: u32, cached_tokens: Option<u32>) -> Outcome {
    Outcome::Event(ChatEvent::Usage(Usage {
        prompt_tokens,
        completion_tokens,
        cached_tokens,
    }))
}

async fn run(stream: ChatStream) -> Vec<Outcome> {
    let mut stream = stream;
    let mut out = Vec::new();
    while let Some(item) = stream.next().await {
        out.push(match item {
            Ok(event) => Outcome::Event(event),
            Err(LlmError::InStream(api)) => Outcome::InStream(api.message),
            Err(LlmError::Decode { raw, .. }) => Outcome::Decode(raw),
            Err(LlmError::Disconnected) => Outcome::Disconnected,
            Err(other) => Outcome::Other(format!("{other:?}")),
        });
    }
    assert!(stream.next().await.is_none(), "stays ended");
    out
}

async fn run_parts(parts: Vec<Vec<u8>>) -> Vec<Outcome> {
    run(ChatStream::from_byte_stream(stream::iter(
        parts.into_iter().map(Ok::<_, Infallible>),
    )))
    .await
}

async fn run_body(body: &str) -> Vec<Outcome> {
    run_parts(vec![body.as_bytes().to_vec()]).await
}

#[tokio::test]
async fn vllm_chunks_in_one_piece() {
    assert_eq!(run_body(VLLM_BODY).await, vllm_events());
}

#[tokio::test]
async fn vllm_chunks_split_at_every_byte_boundary() {
    let body = VLLM_BODY.as_bytes();
    let expected = vllm_events();
    for cut in 0..=body.len() {
        let parts = vec![body[..cut].to_vec(), body[cut..].to_vec()];
        assert_eq!(run_parts(parts).await, expected, "cut at byte {cut}");
    }
    let bytes = body.iter().map(|b| vec![*b]).collect();
    assert_eq!(run_parts(bytes).await, expected, "one byte per read");
}

#[tokio::test]
async fn vllm_chunks_split_at_random_boundaries() {
    let body = VLLM_BODY.as_bytes();
    let expected = vllm_events();
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
    for round in 0..300 {
        let mut parts = Vec::new();
        let mut at = 0;
        while at < body.len() {
            // xorshift64: deterministic, no dependency.
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let len = 1 + (seed % 40) as usize;
            let end = (at + len).min(body.len());
            parts.push(body[at..end].to_vec());
            at = end;
        }
        assert_eq!(run_parts(parts).await, expected, "round {round}");
    }
}

#[tokio::test]
async fn crlf_framing_and_keep_alive_comments() {
    let body = VLLM_BODY.replace("\n\n", "\r\n\r\n");
    let body = format!(
        ": keep-alive\n\n{}",
        body.replacen("\r\n\r\n", "\r\n\r\n: keep-alive\r\n\r\n", 2)
    );
    assert_eq!(run_body(&body).await, vllm_events());
}

#[tokio::test]
async fn llamacpp_chunks() {
    // llama.cpp: first delta has content null, the finish reason comes in its own chunk with an empty delta,
    // the usage chunk has choices [] and extra fields (timings).
    let body = concat!(
        r#"data: {"choices":[{"finish_reason":null,"index":0,"delta":{"role":"assistant","content":null}}],"created":1,"id":"chatcmpl-x","model":"smollm2","system_fingerprint":"b1-abc","object":"chat.completion.chunk"}"#,
        "\n\n",
        r#"data: {"choices":[{"finish_reason":null,"index":0,"delta":{"content":"Hi"}}],"created":1,"id":"chatcmpl-x","model":"smollm2","object":"chat.completion.chunk"}"#,
        "\n\n",
        r#"data: {"choices":[{"finish_reason":null,"index":0,"delta":{"content":" there"}}],"created":1,"id":"chatcmpl-x","model":"smollm2","object":"chat.completion.chunk"}"#,
        "\n\n",
        r#"data: {"choices":[{"finish_reason":"length","index":0,"delta":{}}],"created":1,"id":"chatcmpl-x","model":"smollm2","object":"chat.completion.chunk"}"#,
        "\n\n",
        r#"data: {"choices":[],"created":1,"id":"chatcmpl-x","model":"smollm2","object":"chat.completion.chunk","usage":{"completion_tokens":2,"prompt_tokens":9,"total_tokens":11},"timings":{"prompt_n":9,"predicted_n":2}}"#,
        "\n\n",
        "data: [DONE]\n\n",
    );
    assert_eq!(
        run_body(body).await,
        vec![delta("Hi"), delta(" there"), finished("length"), usage(9, 2, None)]
    );
}

#[tokio::test]
async fn nulls_and_unknown_fields_everywhere() {
    let body = concat!(
        "data: {\"choices\":null,\"usage\":null,\"error\":null}\n\n",
        "data: {\"choices\":[{\"delta\":null,\"finish_reason\":null}]}\n\n",
        "data: {\"choices\":[{\"delta\":{\"reasoning\":\"hmm\",\"content\":null,\"tool_calls\":[]}}]}\n\n",
        "data: {\"choices\":[{\"delta\":{\"content\":\"a\"},\"finish_reason\":\"stop\",\"new\":{\"x\":[1]}}]}\n\n",
        "data: {\"usage\":{\"prompt_tokens\":null,\"completion_tokens\":3,\"prompt_tokens_details\":null}}\n\n",
        "data: {}\n\n",
        "data: [DONE]\n\n",
    );
    assert_eq!(
        run_body(body).await,
        vec![delta("a"), finished("stop"), usage(0, 3, None)]
    );
}

#[tokio::test]
async fn continuous_usage_emits_only_the_last_usage() {
    // --enable-force-include-usage: cumulative usage on every chunk, then the final usage chunk.
    let body = concat!(
        r#"data: {"choices":[{"index":0,"delta":{"role":"assistant","content":""}}],"usage":{"prompt_tokens":12,"total_tokens":12,"completion_tokens":0,"completion_tokens_details":null}}"#,
        "\n\n",
        r#"data: {"choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"total_tokens":13,"completion_tokens":1}}"#,
        "\n\n",
        r#"data: {"choices":[],"usage":{"prompt_tokens":12,"total_tokens":13,"completion_tokens":1}}"#,
        "\n\n",
        "data: [DONE]\n\n",
    );
    assert_eq!(
        run_body(body).await,
        vec![delta("Hi"), finished("stop"), usage(12, 1, None)]
    );
}

#[tokio::test]
async fn usage_with_and_without_prompt_tokens_details() {
    let with = "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":40,\"completion_tokens\":2,\"prompt_tokens_details\":{\"cached_tokens\":32,\"multimodal_tokens\":{\"image\":256}}}}\n\ndata: [DONE]\n\n";
    let without = "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":40,\"total_tokens\":42,\"completion_tokens\":2}}\n\ndata: [DONE]\n\n";
    assert_eq!(run_body(with).await, vec![usage(40, 2, Some(32))]);
    assert_eq!(run_body(without).await, vec![usage(40, 2, None)]);
}

#[tokio::test]
async fn in_stream_error_then_done() {
    let body = concat!(
        "data: {\"choices\":[{\"delta\":{\"content\":\"partial\"}}]}\n\n",
        r#"data: {"error":{"message":"Internal server error","type":"InternalServerError","param":null,"code":500}}"#,
        "\n\n",
        "data: [DONE]\n\n",
    );
    assert_eq!(
        run_body(body).await,
        vec![delta("partial"), Outcome::InStream("Internal server error".into())]
    );
}

#[tokio::test]
async fn body_ending_without_done_is_disconnected() {
    let cut = VLLM_BODY.trim_end_matches("data: [DONE]\n\n");
    let mut expected = vllm_events();
    expected.pop(); // usage is only emitted at [DONE]
    expected.push(Outcome::Disconnected);
    assert_eq!(run_body(cut).await, expected);

    // Cut in the middle of an event, and an empty body.
    assert_eq!(
        run_body("data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\ndata: {\"cho").await,
        vec![delta("a"), Outcome::Disconnected]
    );
    assert_eq!(run_body("").await, vec![Outcome::Disconnected]);
    assert_eq!(run_body(": keep-alive\n\n").await, vec![Outcome::Disconnected]);
}

#[tokio::test]
async fn transport_error_is_disconnected() {
    let parts: Vec<Result<&[u8], std::io::Error>> = vec![
        Ok(b"data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\n"),
        Err(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset")),
        Ok(b"data: [DONE]\n\n"),
    ];
    assert_eq!(
        run(ChatStream::from_byte_stream(stream::iter(parts))).await,
        vec![delta("a"), Outcome::Disconnected]
    );
}

#[tokio::test]
async fn malformed_chunk_is_decode_error_keeping_raw_text() {
    let body = concat!(
        "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\n",
        "data: {\"choices\":[{\"delta\":{\"content\":\"b\"}}\n\n",
        "data: [DONE]\n\n",
    );
    assert_eq!(
        run_body(body).await,
        vec![
            delta("a"),
            Outcome::Decode("{\"choices\":[{\"delta\":{\"content\":\"b\"}}".into()),
        ]
    );
    let mut wrong_type = ChatStream::from_byte_stream(stream::iter([Ok::<_, Infallible>(
        "data: {\"choices\":[{\"delta\":{\"content\":7}}]}\n\n",
    )]));
    match wrong_type.next().await {
        Some(Err(err @ LlmError::Decode { .. })) => assert_eq!(err.code(), "protocol_error"),
        other => panic!("expected Decode, got {other:?}"),
    }
}

#[tokio::test]
async fn invalid_utf8_is_decode_error() {
    let parts = vec![b"data: {\"choices\":[]}\n\ndata: \xff\xfe\n\n".to_vec()];
    let out = run_parts(parts).await;
    assert_eq!(out.len(), 1, "{out:?}");
    assert!(matches!(out[0], Outcome::Decode(_)), "{out:?}");
}

#[tokio::test]
async fn nothing_is_read_after_done() {
    let body = "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\ndata: [DONE]\n\ndata: {\"choices\":[{\"delta\":{\"content\":\"late\"}}]}\n\n";
    assert_eq!(run_body(body).await, vec![delta("a")]);
}

#[test]
fn public_types_are_send_and_unpin() {
    fn send_unpin<T: Send + Unpin + 'static>() {}
    fn send_sync<T: Send + Sync + 'static>() {}
    send_unpin::<ChatStream>();
    send_sync::<LlmError>();
    send_sync::<super::LlmClient>();
}
