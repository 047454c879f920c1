//! Micro-benchmarks of the per-request hot paths: request parsing, SSE chunk to event to frame, and history
//! assembly. Run with `cargo bench --bench hot_paths` (quicker: append `-- --warm-up-time 1 --measurement-time 2`).
#![allow(clippy::unwrap_used)]

use std::hint::black_box;

use bytes::Bytes;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use futures_util::StreamExt;
use mqtt_llm::llm::{ChatMessage, ChatStream, CompletionRequest, Messages, Role, request_body};
use mqtt_llm::session::{Counted, Fit, Owner, SessionKey, SessionStore, TrimSettings};
use mqtt_llm_protocol::topics::{ProjectName, ReplyPolicy, SessionId};
use mqtt_llm_protocol::wire::{DeltaFrame, V5Props, WireLimits, parse_request};

/// A typical device request: session, reply topic, sampling and streaming fields.
const JSON_REQUEST: &str = r#"{"message":"What is the capital of France? Answer in one short sentence.","sessionId":"kitchen-speaker-42","clientId":"dev-7f3a","requestId":"r-000123","replyTopic":"general/assistant_response/kitchen-speaker-42/dev-7f3a/r-000123","temperature":0.7,"topP":0.9,"maxTokens":256,"stream":true}"#;

/// Tokens in the simulated reply (one SSE chunk each).
const SSE_TOKENS: usize = 64;

fn parse_benches(c: &mut Criterion) {
    let project = ProjectName::try_new("general").unwrap();
    let props = V5Props::default();
    let limits = WireLimits::default();
    let policy = ReplyPolicy::none();
    let mut group = c.benchmark_group("parse_request");
    let cases: [(&str, &[u8]); 3] = [
        ("json", JSON_REQUEST.as_bytes()),
        ("plain_text", b"turn on the lights in the living room please"),
        // Valid JSON object, but `message` is missing: rejected with a reply to the session topic.
        ("bad_missing_message", br#"{"sessionId":"s1","temperature":0.5}"#),
    ];
    for (name, payload) in cases {
        group.throughput(Throughput::Bytes(payload.len() as u64));
        group.bench_function(name, |b| {
            b.iter(|| parse_request(&project, black_box(payload), &props, &limits, &policy));
        });
    }
    group.finish();
}

/// A vLLM-shaped SSE body: a role chunk, one chunk per token, a finish chunk, the usage-only chunk, `[DONE]`.
fn sse_body() -> Vec<Bytes> {
    let head = r#"{"id":"chatcmpl-0b5c","object":"chat.completion.chunk","created":1733000000,"model":"demo","#;
    let mut out = Vec::new();
    out.push(format!(
        "data: {head}\"choices\":[{{\"index\":0,\"delta\":{{\"role\":\"assistant\",\"content\":\"\"}},\"logprobs\":null,\"finish_reason\":null}}]}}\n\n"
    ));
    for i in 0..SSE_TOKENS {
        out.push(format!(
            "data: {head}\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\" tok{i}\"}},\"logprobs\":null,\"finish_reason\":null}}],\"usage\":{{\"prompt_tokens\":31,\"total_tokens\":{},\"completion_tokens\":{}}}}}\n\n",
            32 + i,
            i + 1
        ));
    }
    out.push(format!(
        "data: {head}\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"\"}},\"logprobs\":null,\"finish_reason\":\"stop\",\"stop_reason\":null}}]}}\n\n"
    ));
    out.push(format!(
        "data: {head}\"choices\":[],\"usage\":{{\"prompt_tokens\":31,\"total_tokens\":95,\"completion_tokens\":64,\"prompt_tokens_details\":{{\"cached_tokens\":16}}}}}}\n\n"
    ));
    out.push("data: [DONE]\n\n".to_owned());
    out.into_iter().map(Bytes::from).collect()
}

/// Decode an SSE body given as these reads; the number of events.
async fn count_events(reads: Vec<Bytes>) -> usize {
    let mut stream = ChatStream::from_byte_stream(futures_util::stream::iter(reads.into_iter().map(Ok::<_, String>)));
    let mut events = 0usize;
    while let Some(event) = stream.next().await {
        event.unwrap();
        events += 1;
    }
    // 64 deltas, the finish reason, the usage.
    assert_eq!(events, SSE_TOKENS + 2);
    events
}

fn stream_benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let body = sse_body();
    let total: usize = body.iter().map(Bytes::len).sum();
    let mut group = c.benchmark_group("sse");
    group.throughput(Throughput::Bytes(total as u64));
    // One read per chunk, as a streaming engine sends them; then an instant engine's whole answer in one read.
    let one_read = vec![Bytes::from(body.concat())];
    for (name, input) in [("chunks", body), ("chunks_one_read", one_read)] {
        group.bench_function(format!("chat_stream_{SSE_TOKENS}_{name}"), |b| {
            b.iter_batched(
                || input.clone(),
                |input| rt.block_on(count_events(input)),
                BatchSize::SmallInput,
            );
        });
    }
    group.finish();

    let frame = DeltaFrame {
        request_id: "r-000123".to_owned(),
        seq: 17,
        delta: " the capital of France is Paris".to_owned(),
    };
    c.bench_function("delta_frame_to_json", |b| {
        b.iter(|| serde_json::to_vec(black_box(&frame)).unwrap());
    });
}

fn history_benches(c: &mut Criterion) {
    let store = SessionStore::new(1_000_000, TrimSettings::default(), false);
    let key = SessionKey {
        project: ProjectName::try_new("general").unwrap(),
        session: SessionId::try_new("kitchen-speaker-42").unwrap(),
    };
    let fit = Fit {
        budget: 1_000_000,
        correction: 0,
    };
    let question = |i: u32| format!("question number {i}: what should I cook tonight with rice, beans and peppers?");
    let answer = |i: u32| {
        format!(
            "answer number {i}: a quick burrito bowl works well; cook the rice, warm the beans, roast the peppers and season with cumin and lime."
        )
    };
    for i in 0..20 {
        store
            .prepare_prompt(
                &key,
                &Owner::Unchecked,
                None,
                "You are a helpful assistant.",
                question(i).into(),
                fit,
            )
            .unwrap();
        let counted = Counted {
            prompt_tokens: 50 * (i + 1),
            completion_tokens: 0,
        };
        store.commit_turn(
            &key,
            &Owner::Unchecked,
            question(i),
            answer(i),
            Some(counted),
            1_000_000,
        );
    }
    // The request path: prompt from the session store (cached turn JSON) and the whole HTTP body.
    c.bench_function("session_prepare_20_turns", |b| {
        b.iter(|| {
            let prompt = store
                .prepare_prompt(
                    &key,
                    &Owner::Unchecked,
                    None,
                    "You are a helpful assistant.",
                    black_box("and for dessert?").into(),
                    fit,
                )
                .unwrap();
            let req = CompletionRequest {
                messages: Messages::Json(prompt.json),
                max_tokens: Some(256),
                ..Default::default()
            };
            request_body("qwen3", &req)
        });
    });
    // The same body from typed messages, serialized whole on every request (how prompts were built before the
    // turn JSON was cached).
    let mut list = vec![ChatMessage {
        role: Role::System,
        content: "You are a helpful assistant.".into(),
    }];
    for i in 0..20 {
        list.push(ChatMessage {
            role: Role::User,
            content: question(i).into(),
        });
        list.push(ChatMessage {
            role: Role::Assistant,
            content: answer(i).into(),
        });
    }
    c.bench_function("typed_messages_20_turns_body", |b| {
        b.iter(|| {
            let mut messages = list.clone();
            messages.push(ChatMessage {
                role: Role::User,
                content: black_box("and for dessert?").into(),
            });
            let req = CompletionRequest {
                messages: Messages::List(messages),
                max_tokens: Some(256),
                ..Default::default()
            };
            request_body("qwen3", &req)
        });
    });
}

criterion_group!(benches, parse_benches, stream_benches, history_benches);
criterion_main!(benches);
