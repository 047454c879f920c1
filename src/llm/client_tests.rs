//! [`LlmClient`] against real local HTTP servers (axum on 127.0.0.1, port 0), one per test.

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use futures_util::{StreamExt, stream};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use url::Url;

use super::{ChatEvent, ChatMessage, CompletionRequest, LlmClient, LlmError, Messages, Role, Usage};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

const SSE_BODY: &str = concat!(
    r#"data: {"id":"chatcmpl-r-1","object":"chat.completion.chunk","created":1,"model":"qwen3","choices":[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]}"#,
    "\n\n",
    ": keep-alive\n\n",
    r#"data: {"id":"chatcmpl-r-1","object":"chat.completion.chunk","created":1,"model":"qwen3","choices":[{"index":0,"delta":{"content":"Hi!"},"logprobs":null,"finish_reason":null}]}"#,
    "\n\n",
    r#"data: {"id":"chatcmpl-r-1","object":"chat.completion.chunk","created":1,"model":"qwen3","choices":[{"index":0,"delta":{"content":""},"logprobs":null,"finish_reason":"stop","stop_reason":null}]}"#,
    "\n\n",
    r#"data: {"id":"chatcmpl-r-1","object":"chat.completion.chunk","created":1,"model":"qwen3","choices":[],"usage":{"prompt_tokens":12,"total_tokens":14,"completion_tokens":2}}"#,
    "\n\n",
    "data: [DONE]\n\n",
);

const VLLM_MODELS: &str = r#"{"object":"list","data":[{"id":"qwen3","object":"model","created":1763840000,"owned_by":"vllm","root":"Qwen/Qwen3-0.6B","parent":null,"max_model_len":40960,"permission":[{"id":"modelperm-8c2d4e6f0a1b3c5d","object":"model_permission","created":1763840000,"allow_create_engine":false,"allow_sampling":true,"allow_logprobs":true,"allow_search_indices":false,"allow_view":true,"allow_fine_tuning":false,"organization":"*","group":null,"is_blocking":false}]}]}"#;

/// A server running until the test ends (the `JoinSet` aborts it on drop).
struct TestServer {
    url: Url,
    _tasks: JoinSet<()>,
}

async fn serve(app: Router) -> TestServer {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut tasks = JoinSet::new();
    tasks.spawn(async move { axum::serve(listener, app).await.unwrap() });
    TestServer {
        url: Url::parse(&format!("http://{addr}")).unwrap(),
        _tasks: tasks,
    }
}

/// A base URL where nothing listens: bind port 0, then close it.
async fn refused_url() -> Url {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    Url::parse(&format!("http://{addr}")).unwrap()
}

fn client(url: &Url) -> LlmClient {
    LlmClient::new(url.clone(), "qwen3".into(), CONNECT_TIMEOUT).unwrap()
}

fn respond(status: StatusCode, content_type: &'static str, body: &'static str) -> Response {
    (status, [(header::CONTENT_TYPE, content_type)], body).into_response()
}

/// Serves `status`/`body` on the chat endpoint.
async fn chat_server(status: StatusCode, content_type: &'static str, body: &'static str) -> TestServer {
    let app = Router::new().route(
        "/v1/chat/completions",
        post(move || async move { respond(status, content_type, body) }),
    );
    serve(app).await
}

fn hello_request() -> CompletionRequest {
    CompletionRequest {
        messages: Messages::List(vec![
            ChatMessage {
                role: Role::System,
                content: "You are terse.".into(),
            },
            ChatMessage {
                role: Role::User,
                content: "Hello".into(),
            },
        ]),
        temperature: Some(0.0),
        max_tokens: Some(16),
        chat_template_kwargs: Some(json!({"enable_thinking": false})),
        request_id: Some("req-42".into()),
        ..Default::default()
    }
}

async fn chat_error(server: &TestServer) -> LlmError {
    match client(&server.url).chat_stream(&hello_request()).await {
        Ok(_) => panic!("expected an error"),
        Err(err) => err,
    }
}

#[tokio::test]
async fn streams_events_and_sends_the_expected_request() {
    let (seen_tx, mut seen_rx) = mpsc::unbounded_channel::<(HeaderMap, Value)>();
    let app = Router::new().route(
        "/v1/chat/completions",
        post(move |headers: HeaderMap, body: axum::Json<Value>| {
            let seen_tx = seen_tx.clone();
            async move {
                seen_tx.send((headers, body.0)).unwrap();
                respond(StatusCode::OK, "text/event-stream; charset=utf-8", SSE_BODY)
            }
        }),
    );
    let server = serve(app).await;
    let llm = client(&server.url);
    assert_eq!(llm.model(), "qwen3");
    assert_eq!(llm.base_url(), &server.url);

    let stream = llm.chat_stream(&hello_request()).await.unwrap();
    let events: Vec<ChatEvent> = stream.map(|item| item.unwrap()).collect().await;
    assert_eq!(
        events,
        vec![
            ChatEvent::Delta("Hi!".into()),
            ChatEvent::Finished {
                finish_reason: "stop".into()
            },
            ChatEvent::Usage(Usage {
                prompt_tokens: 12,
                completion_tokens: 2,
                cached_tokens: None
            }),
        ]
    );

    let (headers, body) = seen_rx.recv().await.unwrap();
    assert_eq!(headers["x-request-id"], "req-42");
    assert_eq!(headers[header::CONTENT_TYPE], "application/json");
    assert_eq!(headers[header::ACCEPT], "text/event-stream");
    assert_eq!(
        body,
        json!({
            "model": "qwen3",
            "messages": [
                {"role": "system", "content": "You are terse."},
                {"role": "user", "content": "Hello"},
            ],
            "stream": true,
            "stream_options": {"include_usage": true},
            "temperature": 0.0,
            "max_tokens": 16,
            "chat_template_kwargs": {"enable_thinking": false},
        })
    );

    // A second call reuses the client (and its pool); without an id there is no header.
    let plain = CompletionRequest {
        request_id: None,
        ..hello_request()
    };
    let events: Vec<_> = llm.chat_stream(&plain).await.unwrap().collect().await;
    assert_eq!(events.len(), 3);
    let (headers, _) = seen_rx.recv().await.unwrap();
    assert!(headers.get("x-request-id").is_none());
}

#[tokio::test]
async fn context_overflow_400() {
    let body = r#"{"error":{"message":"This model's maximum context length is 4096 tokens. However, your prompt contains 5000 input tokens, which exceeds this limit even without any output tokens. Please reduce the length of the input prompt. (parameter=input_tokens, value=5000)","type":"BadRequestError","param":"input_tokens","code":400}}"#;
    let server = chat_server(StatusCode::BAD_REQUEST, "application/json", body).await;
    let err = chat_error(&server).await;
    assert_eq!(err.code(), "context_overflow");
    match &err {
        LlmError::Status { status, api, body: raw } => {
            assert_eq!(*status, 400);
            assert_eq!(api.as_ref().unwrap().param.as_deref(), Some("input_tokens"));
            assert_eq!(raw, body);
        }
        other => panic!("expected Status, got {other:?}"),
    }
    assert!(err.user_message().starts_with("conversation is too long"));
}

#[tokio::test]
async fn model_not_found_404() {
    let body = r#"{"error":{"message":"The model `qwen3` does not exist. Valid aliases: other.","type":"NotFoundError","param":"model","code":404}}"#;
    let server = chat_server(StatusCode::NOT_FOUND, "application/json", body).await;
    let err = chat_error(&server).await;
    assert_eq!(err.code(), "model_not_found");
    assert_eq!(
        err.user_message(),
        "The model `qwen3` does not exist. Valid aliases: other."
    );
}

#[tokio::test]
async fn busy_503_and_plain_text_500() {
    let busy = r#"{"error":{"message":"The engine is currently busy and cannot accept new requests. Please try again later or on a different instance.","type":"Service Unavailable","param":null,"code":503}}"#;
    let server = chat_server(StatusCode::SERVICE_UNAVAILABLE, "application/json", busy).await;
    assert_eq!(chat_error(&server).await.code(), "engine_busy");

    let server = chat_server(StatusCode::INTERNAL_SERVER_ERROR, "text/plain", "Internal Server Error").await;
    let err = chat_error(&server).await;
    assert_eq!(err.code(), "engine_error");
    assert!(matches!(&err, LlmError::Status { api: None, body, .. } if body == "Internal Server Error"));
}

#[tokio::test]
async fn html_200_is_not_an_event_stream() {
    let server = chat_server(StatusCode::OK, "text/html; charset=utf-8", "<html>login</html>").await;
    let err = chat_error(&server).await;
    assert_eq!(err.code(), "protocol_error");
    match err {
        LlmError::NotEventStream { content_type, body } => {
            assert_eq!(content_type, "text/html; charset=utf-8");
            assert_eq!(body, "<html>login</html>");
        }
        other => panic!("expected NotEventStream, got {other:?}"),
    }
}

#[tokio::test]
async fn body_cut_mid_stream_is_disconnected() {
    // The body breaks off only when the test says so, after the client has seen the first delta.
    let (cut_tx, cut_rx) = tokio::sync::oneshot::channel::<()>();
    let cut_rx = std::sync::Arc::new(std::sync::Mutex::new(Some(cut_rx)));
    let app = Router::new().route(
        "/v1/chat/completions",
        post(move || {
            let cut_rx = cut_rx.lock().unwrap().take().unwrap();
            async move {
                let first = b"data: {\"choices\":[{\"delta\":{\"content\":\"par\"}}]}\n\n";
                let parts = stream::iter([Ok(Bytes::from_static(first))]).chain(stream::once(async {
                    let _ = cut_rx.await;
                    Err(std::io::Error::other("engine died"))
                }));
                let body = Body::from_stream(parts);
                ([(header::CONTENT_TYPE, "text/event-stream")], body).into_response()
            }
        }),
    );
    let server = serve(app).await;
    let mut stream = client(&server.url).chat_stream(&hello_request()).await.unwrap();
    assert_eq!(stream.next().await.unwrap().unwrap(), ChatEvent::Delta("par".into()));
    cut_tx.send(()).unwrap();
    let err = stream.next().await.unwrap().unwrap_err();
    assert!(matches!(err, LlmError::Disconnected), "{err:?}");
    assert_eq!(err.code(), "engine_disconnected");
    assert!(stream.next().await.is_none());
}

#[tokio::test]
async fn connection_refused_is_engine_unavailable() {
    let llm = client(&refused_url().await);
    let err = llm.chat_stream(&hello_request()).await.unwrap_err();
    assert!(matches!(err, LlmError::Connect(_)), "{err:?}");
    assert_eq!(err.code(), "engine_unavailable");
    assert_eq!(err.user_message(), "engine unavailable, please retry");
    assert_eq!(llm.health().await.unwrap_err().code(), "engine_unavailable");
    let discovered = LlmClient::discover_model(llm.base_url(), CONNECT_TIMEOUT).await;
    assert_eq!(discovered.unwrap_err().code(), "engine_unavailable");
}

#[tokio::test]
async fn invalid_request_id_is_a_client_error() {
    let server = chat_server(StatusCode::OK, "text/event-stream", SSE_BODY).await;
    let req = CompletionRequest {
        request_id: Some("bad\nid".into()),
        ..hello_request()
    };
    let err = client(&server.url).chat_stream(&req).await.unwrap_err();
    assert_eq!(err.code(), "client_error");
}

#[tokio::test]
async fn health_vllm_and_llamacpp() {
    // vLLM: empty 200; llama.cpp: {"status":"ok"}.
    for body in ["", r#"{"status":"ok"}"#] {
        let app = Router::new().route("/health", get(move || async move { body }));
        let server = serve(app).await;
        client(&server.url).health().await.unwrap();
    }
}

#[tokio::test]
async fn health_falls_back_to_models_when_health_is_404() {
    // Ollama has no /health but serves /v1/models.
    let models =
        r#"{"object":"list","data":[{"id":"llama3.2:latest","object":"model","created":1,"owned_by":"library"}]}"#;
    let app = Router::new().route(
        "/v1/models",
        get(move || async move { respond(StatusCode::OK, "application/json", models) }),
    );
    let server = serve(app).await;
    client(&server.url).health().await.unwrap();

    let nothing = serve(Router::new()).await;
    let err = client(&nothing.url).health().await.unwrap_err();
    assert!(matches!(err, LlmError::Status { status: 404, .. }), "{err:?}");
}

#[tokio::test]
async fn health_503_is_an_error() {
    let app = Router::new().route("/health", get(|| async { StatusCode::SERVICE_UNAVAILABLE }));
    let server = serve(app).await;
    let err = client(&server.url).health().await.unwrap_err();
    assert_eq!(err.code(), "engine_busy");
}

#[tokio::test]
async fn discover_model_and_list_models() {
    let app = Router::new().route(
        "/v1/models",
        get(|| async { respond(StatusCode::OK, "application/json", VLLM_MODELS) }),
    );
    let server = serve(app).await;
    let model = LlmClient::discover_model(&server.url, CONNECT_TIMEOUT).await.unwrap();
    assert_eq!(model, "qwen3");
    let models = client(&server.url).models().await.unwrap();
    assert_eq!(models.len(), 1);
    assert_eq!(models[0].max_model_len, Some(40960));
}

#[tokio::test]
async fn discover_model_with_no_models_is_a_protocol_error() {
    for body in [r#"{"object":"list","data":[]}"#, "not json"] {
        let app = Router::new().route(
            "/v1/models",
            get(move || async move { respond(StatusCode::OK, "application/json", body) }),
        );
        let server = serve(app).await;
        let err = LlmClient::discover_model(&server.url, CONNECT_TIMEOUT)
            .await
            .unwrap_err();
        assert_eq!(err.code(), "protocol_error", "{body}: {err:?}");
    }
}
