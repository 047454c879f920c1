//! Black-box tests of the `vllm-sim` binary against `vllm-contract.md`: the real process on port
//! 0, compared field by field with the contract's examples.

#[path = "support/sim.rs"]
mod sim_support;

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{Value, json};
use sim_support::{Output, SimProcess, WAIT, client, sample};
use tokio::task::JoinSet;

const MODEL: &str = "Qwen/Qwen3-0.6B";

/// The `data:` payloads of an SSE body, checking vLLM's framing on the way.
fn events(body: &str) -> Vec<String> {
    assert!(body.ends_with("\n\n"), "every event ends with a blank line: {body:?}");
    body.trim_end_matches("\n\n")
        .split("\n\n")
        .map(|event| {
            assert!(
                !event.contains('\n'),
                "one data line per event, no event:/id: lines: {event:?}"
            );
            event.strip_prefix("data: ").expect("data: prefix").to_owned()
        })
        .collect()
}

/// `POST /v1/chat/completions` with a streaming `body` and the payloads of its SSE answer.
async fn stream_events(sim: &SimProcess, body: &Value) -> Vec<String> {
    events(&sim.post("/v1/chat/completions", body).await.text().await.expect("body"))
}

fn parse(event: &str) -> Value {
    serde_json::from_str(event).unwrap_or_else(|e| panic!("{e}: {event}"))
}

fn chat(messages: Value, extra: Value) -> Value {
    let mut body = json!({"model": "qwen3", "messages": messages});
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    body
}

/// `POST /v1/chat/completions` and its JSON answer.
async fn completion(sim: &SimProcess, body: &Value) -> Value {
    sim.post("/v1/chat/completions", body).await.json().await.expect("json")
}

async fn prompt_tokens(sim: &SimProcess, messages: &Value) -> u64 {
    let r: Value = sim
        .post("/tokenize", &json!({"model": "qwen3", "messages": messages}))
        .await
        .json()
        .await
        .expect("tokenize json");
    r["count"].as_u64().expect("count")
}

fn head(id: &str, created: u64) -> String {
    format!(r#"{{"id":"{id}","object":"chat.completion.chunk","created":{created},"model":"qwen3","choices":"#)
}

fn json_str(s: &Value) -> String {
    serde_json::to_string(s).expect("json")
}

#[tokio::test]
async fn stream_chunks_match_the_contract() {
    let sim = SimProcess::start(MODEL, &["--served-model-name", "qwen3"]).await;
    let messages = json!([{"role": "user", "content": "Hi"}]);
    let resp = client()
        .post(sim.url("/v1/chat/completions"))
        .header("X-Request-Id", "abc123")
        .json(&chat(messages.clone(), json!({"stream": true, "max_tokens": 3})))
        .send()
        .await
        .expect("POST");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream; charset=utf-8");
    let ev = events(&resp.text().await.expect("body"));
    assert_eq!(ev.len(), 5, "role, 2 content chunks, finish, [DONE]: {ev:#?}");
    let first = parse(&ev[0]);
    let created = first["created"].as_u64().expect("created");
    let h = head("chatcmpl-abc123", created);
    assert_eq!(
        ev[0],
        format!(
            r#"{h}[{{"index":0,"delta":{{"role":"assistant","content":""}},"logprobs":null,"finish_reason":null}}],"prompt_token_ids":null,"prompt_text":null}}"#
        )
    );
    for event in &ev[1..3] {
        let text = json_str(&parse(event)["choices"][0]["delta"]["content"]);
        assert_eq!(
            *event,
            format!(
                r#"{h}[{{"index":0,"delta":{{"content":{text}}},"logprobs":null,"finish_reason":null,"token_ids":null}}],"kv_transfer_params":null}}"#
            )
        );
    }
    let finish = parse(&ev[3]);
    let fingerprint = finish["system_fingerprint"].as_str().expect("fingerprint").to_owned();
    assert!(fingerprint.starts_with("vllm-0.33.0-") && fingerprint.len() == "vllm-0.33.0-".len() + 8);
    let text = json_str(&finish["choices"][0]["delta"]["content"]);
    assert_eq!(
        ev[3],
        format!(
            r#"{h}[{{"index":0,"delta":{{"content":{text}}},"logprobs":null,"finish_reason":"length","stop_reason":null,"token_ids":null,"weight_versions":null}}],"system_fingerprint":"{fingerprint}","kv_transfer_params":null}}"#
        )
    );
    assert_eq!(ev[4], "[DONE]");

    // include_usage: the fingerprint moves from the finish chunk to the usage chunk.
    let body = chat(
        messages.clone(),
        json!({"stream": true, "max_completion_tokens": 2, "stream_options": {"include_usage": true}}),
    );
    let ev = stream_events(&sim, &body).await;
    assert_eq!(ev.len(), 5, "role, content, finish, usage, [DONE]: {ev:#?}");
    let id = parse(&ev[0])["id"].as_str().expect("id").to_owned();
    assert!(
        id.starts_with("chatcmpl-") && id.len() == "chatcmpl-".len() + 16,
        "random id: {id}"
    );
    assert!(id["chatcmpl-".len()..].chars().all(|c| c.is_ascii_hexdigit()));
    assert!(!ev[2].contains("system_fingerprint"));
    let p = prompt_tokens(&sim, &messages).await;
    let created = parse(&ev[3])["created"].as_u64().expect("created");
    assert_eq!(
        ev[3],
        format!(
            r#"{}[],"usage":{{"prompt_tokens":{p},"total_tokens":{},"completion_tokens":2}},"system_fingerprint":"{fingerprint}"}}"#,
            head(&id, created),
            p + 2
        )
    );
    assert_eq!(ev[4], "[DONE]");
}

#[tokio::test]
async fn continuous_usage_is_on_every_chunk() {
    let sim = SimProcess::start(MODEL, &["--served-model-name", "qwen3"]).await;
    let body = chat(
        json!([{"role": "user", "content": "Count"}]),
        json!({"stream": true, "max_tokens": 3, "stream_options": {"include_usage": true, "continuous_usage_stats": true}}),
    );
    let ev = stream_events(&sim, &body).await;
    assert_eq!(ev.len(), 6);
    for (i, event) in ev[..4].iter().enumerate() {
        let usage = &parse(event)["usage"];
        assert_eq!(usage["completion_tokens"], json!(i), "cumulative in {event}");
        assert!(event.contains(&format!(
            r#""completion_tokens":{i},"completion_tokens_details":null}}"#
        )));
    }
    assert!(ev[0].contains(r#""finish_reason":null}],"usage":{"prompt_tokens":"#));
    assert!(
        !ev[4].contains("completion_tokens_details"),
        "the final usage chunk drops nulls"
    );
}

#[tokio::test]
async fn non_streaming_response_and_tokenize_agree() {
    let sim = SimProcess::start(MODEL, &["--served-model-name", "qwen3"]).await;
    let messages = json!([
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": [{"type": "text", "text": "Hello, world!"}]}
    ]);
    let resp = sim
        .post("/v1/chat/completions", &chat(messages.clone(), json!({})))
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let v: Value = resp.json().await.expect("json");
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["model"], "qwen3");
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(v["choices"][0]["stop_reason"], Value::Null);
    let usage = &v["usage"];
    assert_eq!(
        usage["completion_tokens"], 32,
        "--sim-reply-tokens default, EOS included"
    );
    assert_eq!(
        usage["prompt_tokens"].as_u64(),
        Some(prompt_tokens(&sim, &messages).await)
    );
    assert_eq!(usage["prompt_tokens_details"], Value::Null);
    // Same text for the same prompt.
    let again: Value = completion(&sim, &chat(messages, json!({}))).await;
    assert_eq!(
        again["choices"][0]["message"]["content"],
        v["choices"][0]["message"]["content"]
    );

    let r = sim
        .post("/tokenize", &json!({"model": "qwen3", "prompt": "Hello world"}))
        .await;
    let body = r.text().await.expect("body");
    let t: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(t["count"], 2);
    assert_eq!(t["max_model_len"], 4096);
    assert!(
        body.starts_with(r#"{"count":2,"max_model_len":4096,"tokens":["#) && body.ends_with(r#"],"token_strs":null}"#)
    );
    let strs: Value = sim
        .post(
            "/tokenize",
            &json!({"prompt": "Hello world", "return_token_strs": true}),
        )
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(strs["token_strs"], json!(["Hello", " world"]));
    let d: Value = sim
        .post("/detokenize", &json!({"model": "qwen3", "tokens": t["tokens"]}))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(d, json!({"prompt": "Hello world"}));
    let r = sim.post("/tokenize", &json!({"model": "nope", "prompt": "x"})).await;
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn errors_match_the_contract() {
    let sim = SimProcess::start(MODEL, &["--served-model-name", "qwen3", "--max-model-len", "64"]).await;
    let words = |n: usize| vec!["a"; n].join(" ");
    // One user message of n words is 8 + n tokens (template markers, role, generation prompt).
    let user = |n: usize| json!([{"role": "user", "content": words(n)}]);
    assert_eq!(prompt_tokens(&sim, &user(100)).await, 108);

    let r = sim.post("/v1/chat/completions", &chat(user(100), json!({}))).await;
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.text().await.expect("body"),
        r#"{"error":{"message":"This model's maximum context length is 64 tokens. However, your prompt contains 108 input tokens, which exceeds this limit even without any output tokens. Please reduce the length of the input prompt. (parameter=input_tokens, value=108)","type":"BadRequestError","param":"input_tokens","code":400}}"#
    );
    let mut body = chat(user(1), json!({}));
    body["model"] = json!("foo");
    let r = sim.post("/v1/chat/completions", &body).await;
    assert_eq!(r.status(), 404);
    assert_eq!(
        r.text().await.expect("body"),
        r#"{"error":{"message":"The model `foo` does not exist. Valid aliases: qwen3.","type":"NotFoundError","param":"model","code":404}}"#
    );
    let r = sim
        .post("/v1/chat/completions", &chat(user(1), json!({"max_tokens": 65})))
        .await;
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.text().await.expect("body"),
        r#"{"error":{"message":"max_tokens=65 cannot be greater than max_model_len=64. Please request fewer output tokens.","type":"BadRequestError","param":"max_tokens","code":400}}"#
    );
    let r = client()
        .post(sim.url("/v1/chat/completions"))
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .expect("POST");
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.text().await.expect("body"),
        r#"{"error":{"message":"1 validation error:\n  Unsupported Media Type: Only 'application/json' is allowed","type":"Bad Request","param":null,"code":400}}"#
    );
    let r: Value = completion(&sim, &json!({"model": "qwen3"})).await;
    assert_eq!(
        (
            r["error"]["type"].clone(),
            r["error"]["param"].clone(),
            r["error"]["code"].clone()
        ),
        (json!("Bad Request"), json!("messages"), json!(400))
    );

    let r = sim
        .post(
            "/v1/chat/completions",
            &chat(user(1), json!({"stop": ["a", "b", "c", "d", "e"]})),
        )
        .await;
    assert_eq!(r.status(), 400);
    let r: Value = r.json().await.expect("json");
    assert_eq!(r["error"]["param"], "stop");

    // prompt + max_tokens > max_model_len: max_tokens is clamped, not an error.
    let r: Value = completion(&sim, &chat(user(50), json!({"max_tokens": 20}))).await;
    assert_eq!(r["usage"]["completion_tokens"], 6);
    assert_eq!(r["choices"][0]["finish_reason"], "length");

    // A prompt that fills the context fails inside the engine: after the 200, in the stream.
    let r = sim
        .post("/v1/chat/completions", &chat(user(56), json!({"stream": true})))
        .await;
    assert_eq!(r.status(), 200);
    let ev = events(&r.text().await.expect("body"));
    assert_eq!(ev.len(), 2);
    let err = parse(&ev[0]);
    assert_eq!(
        (err["error"]["type"].clone(), err["error"]["code"].clone()),
        (json!("BadRequestError"), json!(400))
    );
    assert_eq!(ev[1], "[DONE]");
}

#[tokio::test]
async fn models_version_health() {
    let sim = SimProcess::start(MODEL, &["--served-model-name", "qwen3", "--max_model_len=2048"]).await;
    let body = sim.get("/v1/models").await.text().await.expect("body");
    let v: Value = serde_json::from_str(&body).expect("json");
    let created = v["data"][0]["created"].as_u64().expect("created");
    let perm = v["data"][0]["permission"][0]["id"].as_str().expect("perm id");
    assert!(perm.starts_with("modelperm-") && perm.len() == "modelperm-".len() + 16);
    assert_eq!(
        body,
        format!(
            r#"{{"object":"list","data":[{{"id":"qwen3","object":"model","created":{created},"owned_by":"vllm","root":"{MODEL}","parent":null,"max_model_len":2048,"permission":[{{"id":"{perm}","object":"model_permission","created":{created},"allow_create_engine":false,"allow_sampling":true,"allow_logprobs":true,"allow_search_indices":false,"allow_view":true,"allow_fine_tuning":false,"organization":"*","group":null,"is_blocking":false}}]}}]}}"#
        )
    );
    let r = sim.get("/version").await;
    assert_eq!(r.text().await.expect("body"), r#"{"version":"0.33.0"}"#);
    let r = sim.get("/health").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.expect("body"), "");
    assert_eq!(sim.get("/ping").await.status(), 200);
    assert_eq!(
        client().post(sim.url("/ping")).send().await.expect("POST").status(),
        200
    );
    assert_eq!(sim.get("/nope").await.status(), 404);
}

#[tokio::test]
async fn metrics_and_the_prefix_cache() {
    let sim = SimProcess::start(
        MODEL,
        &["--served-model-name", "qwen3", "--enable-prompt-tokens-details"],
    )
    .await;
    let system = "You are a careful assistant. ".repeat(12);
    let messages = json!([{"role": "system", "content": system}, {"role": "user", "content": "Tell me a story."}]);
    let p = prompt_tokens(&sim, &messages).await;
    let body = chat(
        messages,
        json!({"stream": true, "stream_options": {"include_usage": true}}),
    );
    let mut cached = Vec::new();
    for _ in 0..2 {
        let ev = stream_events(&sim, &body).await;
        let usage = parse(&ev[ev.len() - 2])["usage"].clone();
        assert_eq!(usage["prompt_tokens"].as_u64(), Some(p));
        cached.push(
            usage["prompt_tokens_details"]["cached_tokens"]
                .as_u64()
                .expect("cached_tokens"),
        );
    }
    assert_eq!(cached[0], 0);
    assert!(
        cached[1] > 0 && cached[1] % 16 == 0 && cached[1] < p,
        "block-granular hit: {cached:?} of {p}"
    );

    let r = sim.get("/metrics").await;
    assert_eq!(r.headers()["content-type"], "text/plain; version=1.0.0; charset=utf-8");
    let text = r.text().await.expect("body");
    let labels = r#"{engine="0",model_name="qwen3"}"#;
    for (name, kind) in [
        ("vllm:num_requests_running", "gauge"),
        ("vllm:num_requests_waiting", "gauge"),
        ("vllm:kv_cache_usage_perc", "gauge"),
        ("vllm:prefix_cache_queries_total", "counter"),
        ("vllm:prefix_cache_hits_total", "counter"),
        ("vllm:prompt_tokens_total", "counter"),
        ("vllm:generation_tokens_total", "counter"),
        ("vllm:prompt_tokens_cached_total", "counter"),
        ("vllm:request_success_total", "counter"),
        ("vllm:time_to_first_token_seconds", "histogram"),
        ("vllm:e2e_request_latency_seconds", "histogram"),
        ("vllm:inter_token_latency_seconds", "histogram"),
    ] {
        assert!(text.contains(&format!("\n# TYPE {name} {kind}\n")), "{name} {kind}");
    }
    assert!(text.starts_with("# HELP vllm:num_requests_running Number of requests in model execution batches.\n"));
    assert_eq!(sample(&text, &format!("vllm:num_requests_running{labels}")), 0.0);
    assert_eq!(
        sample(&text, &format!("vllm:prefix_cache_queries_total{labels}")),
        2.0 * p as f64
    );
    assert_eq!(
        sample(&text, &format!("vllm:prefix_cache_hits_total{labels}")),
        cached[1] as f64
    );
    assert_eq!(
        sample(&text, &format!("vllm:prompt_tokens_cached_total{labels}")),
        cached[1] as f64
    );
    assert_eq!(
        sample(&text, &format!("vllm:prompt_tokens_total{labels}")),
        2.0 * p as f64
    );
    assert_eq!(sample(&text, &format!("vllm:generation_tokens_total{labels}")), 64.0);
    assert_eq!(
        sample(
            &text,
            r#"vllm:request_success_total{engine="0",finished_reason="stop",model_name="qwen3"}"#
        ),
        2.0
    );
    assert_eq!(
        sample(
            &text,
            r#"vllm:request_success_total{engine="0",finished_reason="abort",model_name="qwen3"}"#
        ),
        0.0
    );
    assert_eq!(
        sample(&text, &format!("vllm:time_to_first_token_seconds_count{labels}")),
        2.0
    );
    assert_eq!(
        sample(
            &text,
            r#"vllm:time_to_first_token_seconds_bucket{engine="0",le="+Inf",model_name="qwen3"}"#
        ),
        2.0
    );
    assert_eq!(
        sample(
            &text,
            r#"vllm:e2e_request_latency_seconds_bucket{engine="0",le="+Inf",model_name="qwen3"}"#
        ),
        2.0
    );
    assert_eq!(
        sample(&text, &format!("vllm:inter_token_latency_seconds_count{labels}")),
        62.0
    );
    assert!(text.contains("# TYPE vllm:prompt_tokens_created gauge\n"));
    assert!(sample(&text, &format!("vllm:prompt_tokens_created{labels}")) > 1.7e9);
}

#[tokio::test]
async fn disable_log_stats_removes_vllm_metrics() {
    let sim = SimProcess::start(MODEL, &["--disable-log-stats"]).await;
    let text = sim.metrics().await;
    assert!(!text.contains("vllm:"));
}

#[tokio::test]
async fn connection_refused_during_startup() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
        .to_string();
    let mut sim = SimProcess::spawn(&[
        "serve",
        MODEL,
        "--host",
        "127.0.0.1",
        "--port",
        &port,
        "--sim-startup-ms",
        "1500",
    ]);
    // The engine starts initializing after the port is bound.
    sim.wait_line(|l| l.text.contains("Initializing a V1 LLM engine")).await;
    let port: u16 = port.parse().expect("port");
    let err = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect_err("refused while loading");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
    sim.wait_ready().await;
    assert_eq!(sim.port, Some(port));
    assert_eq!(sim.get("/health").await.status(), 200);
    assert!(sim.saw("GPU KV cache size: 65,536 tokens"));
}

#[tokio::test]
async fn client_disconnect_frees_the_batch_slot() {
    let sim = SimProcess::start(
        MODEL,
        &[
            "--served-model-name",
            "qwen3",
            "--max-num-seqs",
            "1",
            "--sim-itl-ms",
            "20",
            "--sim-reply-tokens",
            "5000",
        ],
    )
    .await;
    let long = chat(
        json!([{"role": "user", "content": "Go on forever"}]),
        json!({"stream": true, "max_tokens": 2000}),
    );
    let resp = sim.post("/v1/chat/completions", &long).await;
    let mut stream = resp.bytes_stream();
    let first = tokio::time::timeout(WAIT, stream.next())
        .await
        .expect("first chunk")
        .expect("chunk")
        .expect("bytes");
    assert!(first.starts_with(b"data: "));
    // A second request waits for the only slot.
    let mut waiter = JoinSet::new();
    let short = chat(json!([{"role": "user", "content": "Quick"}]), json!({"max_tokens": 3}));
    let url = sim.url("/v1/chat/completions");
    waiter.spawn(async move { client().post(url).json(&short).send().await?.json::<Value>().await });
    // The second request is shown waiting.
    sim.wait_for_metric(r#"vllm:num_requests_waiting{engine="0",model_name="qwen3"}"#, |n| {
        n == 1.0
    })
    .await;
    drop(stream);
    let done = tokio::time::timeout(Duration::from_secs(10), waiter.join_next())
        .await
        .expect("the waiting request completes once the slot is freed")
        .expect("task")
        .expect("join")
        .expect("response");
    assert_eq!(done["usage"]["completion_tokens"], 3);
    let text = sim.metrics().await;
    assert_eq!(
        sample(
            &text,
            r#"vllm:request_success_total{engine="0",finished_reason="abort",model_name="qwen3"}"#
        ),
        1.0
    );
}

#[tokio::test]
async fn sigterm_cuts_streams_and_exits_zero() {
    let mut sim = SimProcess::start(MODEL, &["--sim-itl-ms", "20", "--sim-reply-tokens", "1000"]).await;
    let body = json!({"messages": [{"role": "user", "content": "Hi"}], "stream": true});
    let resp = sim.post("/v1/chat/completions", &body).await;
    let mut stream = resp.bytes_stream();
    tokio::time::timeout(WAIT, stream.next()).await.expect("first chunk");
    let status = sim.terminate().await;
    assert_eq!(status.code(), Some(0));
    assert!(sim.saw("[shutdown] API server: shutdown triggered"));
    let mut rest = Vec::new();
    while let Some(Ok(chunk)) = stream.next().await {
        rest.extend_from_slice(&chunk);
    }
    assert!(
        !String::from_utf8_lossy(&rest).contains("[DONE]"),
        "aborted, not finished"
    );
}

#[tokio::test]
async fn sigterm_with_shutdown_timeout_drains_in_flight_requests() {
    let mut sim = SimProcess::start(
        MODEL,
        &[
            "--sim-itl-ms",
            "20",
            "--sim-reply-tokens",
            "15",
            "--shutdown-timeout",
            "20",
        ],
    )
    .await;
    let body = json!({"messages": [{"role": "user", "content": "Hi"}], "stream": true});
    let resp = sim.post("/v1/chat/completions", &body).await;
    let mut stream = resp.bytes_stream();
    let mut text = String::new();
    let first = tokio::time::timeout(WAIT, stream.next())
        .await
        .expect("first chunk")
        .expect("chunk")
        .expect("bytes");
    text.push_str(&String::from_utf8_lossy(&first));
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(sim.pid()), nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
    while let Some(chunk) = stream.next().await {
        text.push_str(&String::from_utf8_lossy(&chunk.expect("bytes")));
    }
    assert!(text.ends_with("data: [DONE]\n\n"), "drained to completion: {text}");
    assert_eq!(sim.wait_exit().await.code(), Some(0));
}

#[tokio::test]
async fn cli_shape() {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_vllm-sim"))
        .args(["serve", MODEL, "--no-such-flag"])
        .output()
        .await
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("vllm serve: error: unrecognized arguments: --no-such-flag"),
        "{stderr}"
    );
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_vllm-sim"))
        .arg("--version")
        .output()
        .await
        .expect("run");
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "0.33.0\n");

    let mut sim = SimProcess::start(MODEL, &["--max_num_seqs=4", "-tp", "2", "--enable_prefix_caching"]).await;
    assert!(sim.saw("vLLM server version 0.33.0, serving model Qwen/Qwen3-0.6B"));
    assert!(sim.saw("'port': 0, 'max_num_seqs': 4, 'enable_prefix_caching': True, 'tensor_parallel_size': 2}"));
    assert!(
        sim.seen
            .iter()
            .any(|l| l.output == Output::Stderr && l.text.starts_with("INFO:     Started server process ["))
    );
    assert_eq!(sim.terminate().await.code(), Some(0));
}

#[tokio::test]
async fn echo_mode_reports_what_the_engine_saw() {
    let sim = SimProcess::start(MODEL, &["--sim-reply", "echo"]).await;
    let body = json!({"messages": [
        {"role": "system", "content": "You are a helpful AI assistant. Be brief."},
        {"role": "user", "content": "hello"},
        {"role": "assistant", "content": "hi"},
        {"role": "user", "content": "what next?"}
    ]});
    let v: Value = completion(&sim, &body).await;
    assert_eq!(
        v["choices"][0]["message"]["content"],
        "messages=4 roles=s,u,a,u system=You are a helpful AI assistant. user=what next?"
    );
    assert_eq!(v["model"], MODEL);

    // Cut by a stop string, which is reported and not included.
    let body = json!({"messages": [{"role": "user", "content": "hi"}], "stop": "system="});
    let v: Value = completion(&sim, &body).await;
    assert_eq!(v["choices"][0]["message"]["content"], "messages=1 roles=u ");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(v["choices"][0]["stop_reason"], "system=");

    // Without a generation prompt the model continues the last message, in its role.
    let body = json!({"messages": [{"role": "user", "content": "hi"}], "add_generation_prompt": false});
    let v: Value = completion(&sim, &body).await;
    assert_eq!(v["choices"][0]["message"]["role"], "user");
}

#[tokio::test]
async fn non_streaming_disconnect_aborts_too() {
    let sim = SimProcess::start(
        MODEL,
        &[
            "--served-model-name",
            "qwen3",
            "--sim-itl-ms",
            "50",
            "--sim-reply-tokens",
            "200",
        ],
    )
    .await;
    sim_support::ensure_crypto_provider();
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .expect("client");
    let body = chat(json!([{"role": "user", "content": "Take your time"}]), json!({}));
    let gave_up = impatient.post(sim.url("/v1/chat/completions")).json(&body).send().await;
    assert!(gave_up.is_err(), "10 s of decoding cannot finish in 300 ms");
    // The abandoned request is aborted.
    let abort = r#"vllm:request_success_total{engine="0",finished_reason="abort",model_name="qwen3"}"#;
    let text = sim.wait_for_metric(abort, |n| n == 1.0).await;
    assert_eq!(
        sample(&text, r#"vllm:num_requests_running{engine="0",model_name="qwen3"}"#),
        0.0
    );
}

#[tokio::test]
async fn api_key_guards_v1_only() {
    let sim = SimProcess::start(MODEL, &["--api-key", "sekret"]).await;
    let r = sim.get("/v1/models").await;
    assert_eq!(r.status(), 401);
    assert_eq!(r.text().await.expect("body"), r#"{"error":"Unauthorized"}"#);
    let r = client()
        .get(sim.url("/v1/models"))
        .bearer_auth("sekret")
        .send()
        .await
        .expect("GET");
    assert_eq!(r.status(), 200);
    assert_eq!(sim.get("/health").await.status(), 200);
}

/// CPU time (user + system) of a process so far, from `/proc/PID/stat`.
fn cpu_seconds(pid: i32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let fields: Vec<&str> = stat.rsplit(')').next().expect("fields").split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>().expect("utime") + fields[12].parse::<f64>().expect("stime");
    ticks / 100.0
}

/// Throughput smoke test: `cargo test --release --test sim_contract -- --ignored --nocapture`.
/// Prints completed streamed chats per second and the simulator's CPU time per chat.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "load test; run explicitly in release mode"]
async fn throughput_smoke() {
    let sim = SimProcess::start(MODEL, &["--served-model-name", "qwen3", "--disable-uvicorn-access-log"]).await;
    let url = sim.url("/v1/chat/completions");
    let client = client();
    let body = chat(
        json!([{"role": "user", "content": "Hello there, how are you?"}]),
        json!({"stream": true}),
    );
    let cpu0 = cpu_seconds(sim.pid());
    let start = std::time::Instant::now();
    let until = start + Duration::from_secs(5);
    let mut workers = JoinSet::new();
    for _ in 0..128 {
        let (client, url, body) = (client.clone(), url.clone(), body.clone());
        workers.spawn(async move {
            let mut done = 0u64;
            while std::time::Instant::now() < until {
                let text = client
                    .post(&url)
                    .json(&body)
                    .send()
                    .await
                    .expect("POST")
                    .text()
                    .await
                    .expect("body");
                assert!(text.ends_with("data: [DONE]\n\n"));
                done += 1;
            }
            done
        });
    }
    let mut total = 0;
    while let Some(n) = workers.join_next().await {
        total += n.expect("worker");
    }
    let secs = start.elapsed().as_secs_f64();
    let cpu = cpu_seconds(sim.pid()) - cpu0;
    println!(
        "{total} chats in {secs:.2} s = {:.0} chats/s; simulator CPU {cpu:.2} s = {:.1} us/chat",
        total as f64 / secs,
        cpu * 1e6 / total as f64
    );
}

/// The library entry: bind (port known before listening), run in-process, shut down.
#[tokio::test]
async fn runs_in_process_through_the_library_api() {
    use vllm_sim::{Invocation, SimConfig, SimServer, parse_argv};
    let Ok(Invocation::Serve { args, non_default }) =
        parse_argv(["vllm-sim", "serve", "m", "--host", "127.0.0.1", "--port", "0"])
    else {
        panic!("serve invocation");
    };
    let server = SimServer::bind(SimConfig::from_args(&args).expect("config"), &non_default)
        .await
        .expect("bind");
    let addr = server.local_addr();
    assert_ne!(addr.port(), 0);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let mut tasks = JoinSet::new();
    tasks.spawn(server.run(async move {
        let _ = stopped.await;
    }));
    let url = format!("http://{addr}/health");
    let ready = async {
        loop {
            // Connection refused until the server listens; the loop ends at the first 200.
            if let Ok(r) = client().get(&url).send().await
                && r.status() == 200
            {
                break;
            }
            tokio::task::yield_now().await;
        }
    };
    tokio::time::timeout(WAIT, ready).await.expect("ready");
    let _ = stop.send(());
    let result = tokio::time::timeout(WAIT, tasks.join_next())
        .await
        .expect("stops")
        .expect("task");
    result.expect("join").expect("run returns Ok");
}
