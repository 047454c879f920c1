//! [`LlmClient`]: the HTTP side of the OpenAI-compatible API (`/health`, `/v1/models`, streaming
//! `/v1/chat/completions`). It checks a response before handing its body to [`ChatStream`]: a non-2xx becomes
//! [`LlmError::Status`] with the body read, a 2xx that is not `text/event-stream` becomes
//! [`LlmError::NotEventStream`].

use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderValue};
use url::Url;

use super::error::{ClientError, LlmError, chain};
use super::sse::ChatStream;
use super::types::{CompletionRequest, ModelInfo, WireModelList, parse_api_error, request_body};

/// Bound on `/health` and `/v1/models` calls: a probe that hangs this long means the engine is not serving.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// Idle pooled connections are closed before uvicorn's keep-alive (vLLM's `VLLM_HTTP_TIMEOUT_KEEP_ALIVE`, 5 s)
/// closes them, so a request never races the server closing its connection.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(4);
/// Error bodies are kept for the error value; an HTML page from a proxy need not be kept whole.
const ERROR_BODY_MAX_BYTES: usize = 64 * 1024;
/// `/v1/models` bodies are small; this only bounds a misbehaving server.
const MODELS_BODY_MAX_BYTES: usize = 1024 * 1024;

/// The client of one engine. Cheap to clone (shared connection pool).
#[derive(Debug, Clone)]
pub struct LlmClient {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    http: reqwest::Client,
    base_url: Url,
    model: String,
    chat_url: Url,
    health_url: Url,
    models_url: Url,
    metrics_url: Url,
    tokenize_url: Url,
}

impl LlmClient {
    /// base_url like http://127.0.0.1:8000 (no /v1). model: the served model name sent in requests.
    ///
    /// The client has a connect timeout and no total timeout (the caller bounds each request), keeps idle
    /// connections pooled, sets `TCP_NODELAY`, and ignores `HTTP(S)_PROXY`: the engine is local or on the LAN, and a
    /// stray proxy variable must not route engine traffic (or `127.0.0.1`) through a proxy.
    pub fn new(base_url: Url, model: String, connect_timeout: Duration) -> Result<Self, LlmError> {
        if !matches!(base_url.scheme(), "http" | "https") || base_url.cannot_be_a_base() {
            return Err(ClientError::BadUrl(base_url).into());
        }
        mqtt_llm_client::tls::ensure_crypto_provider();
        let http = reqwest::Client::builder()
            .connect_timeout(connect_timeout)
            .tcp_nodelay(true)
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .no_proxy()
            .build()
            .map_err(ClientError::Build)?;
        Ok(LlmClient {
            inner: Arc::new(Inner {
                chat_url: endpoint(&base_url, "v1/chat/completions"),
                health_url: endpoint(&base_url, "health"),
                models_url: endpoint(&base_url, "v1/models"),
                metrics_url: endpoint(&base_url, "metrics"),
                tokenize_url: endpoint(&base_url, "tokenize"),
                http,
                base_url,
                model,
            }),
        })
    }

    pub fn base_url(&self) -> &Url {
        &self.inner.base_url
    }

    pub fn model(&self) -> &str {
        &self.inner.model
    }

    /// GET /health; 2xx = Ok. If /health is 404, fall back to GET /v1/models 2xx (Ollama has no /health).
    /// Bounded by [`PROBE_TIMEOUT`]; a timeout is `Connect` (engine unavailable).
    pub async fn health(&self) -> Result<(), LlmError> {
        let resp = self.probe(&self.inner.health_url).await?;
        let status = resp.status();
        if status.is_success() {
            read_capped(resp, ERROR_BODY_MAX_BYTES).await;
            return Ok(());
        }
        if status != reqwest::StatusCode::NOT_FOUND {
            return Err(status_error(resp).await);
        }
        let resp = self.probe(&self.inner.models_url).await?;
        if resp.status().is_success() {
            read_capped(resp, MODELS_BODY_MAX_BYTES).await;
            Ok(())
        } else {
            Err(status_error(resp).await)
        }
    }

    /// GET /metrics and sum `vllm:generation_tokens_total` (the engine's progress, for hang detection).
    pub async fn generation_tokens_total(&self) -> Result<f64, LlmError> {
        let resp = self.probe(&self.inner.metrics_url).await?;
        if !resp.status().is_success() {
            return Err(status_error(resp).await);
        }
        let body = read_capped(resp, METRICS_BODY_MAX_BYTES).await;
        parse_counter(&body, "vllm:generation_tokens_total").ok_or_else(|| LlmError::Decode {
            raw: String::new(),
            source: serde::de::Error::custom("no vllm:generation_tokens_total in /metrics"),
        })
    }

    /// GET /v1/models and return the first model id (attach mode when the user gave no --served-model-name).
    /// An empty list is a `Decode` error keeping the body.
    pub async fn discover_model(base_url: &Url, connect_timeout: Duration) -> Result<String, LlmError> {
        let client = LlmClient::new(base_url.clone(), String::new(), connect_timeout)?;
        let (models, body) = client.fetch_models().await?;
        match models.into_iter().next() {
            Some(model) => Ok(model.id),
            None => Err(LlmError::Decode {
                raw: body,
                source: <serde_json::Error as serde::de::Error>::custom("GET /v1/models listed no model"),
            }),
        }
    }

    /// GET /v1/models: every model the engine serves (vLLM also says each one's `max_model_len`).
    pub async fn models(&self) -> Result<Vec<ModelInfo>, LlmError> {
        Ok(self.fetch_models().await?.0)
    }

    /// The models and the raw body they were read from.
    async fn fetch_models(&self) -> Result<(Vec<ModelInfo>, String), LlmError> {
        let resp = self.probe(&self.inner.models_url).await?;
        if !resp.status().is_success() {
            return Err(status_error(resp).await);
        }
        let body = read_capped(resp, MODELS_BODY_MAX_BYTES).await;
        match serde_json::from_str::<WireModelList>(&body) {
            Ok(list) => Ok((list.data.unwrap_or_default(), body)),
            Err(source) => Err(LlmError::Decode { raw: body, source }),
        }
    }

    /// POST /v1/chat/completions with stream:true, stream_options {include_usage:true}.
    ///
    /// Returns once the engine has answered with a 200 and `text/event-stream` (for vLLM: after validation,
    /// before prefill); the tokens then arrive on the [`ChatStream`].
    pub async fn chat_stream(&self, req: &CompletionRequest) -> Result<ChatStream, LlmError> {
        let mut call = self
            .inner
            .http
            .post(self.inner.chat_url.clone())
            .header(ACCEPT, "text/event-stream")
            .header(CONTENT_TYPE, "application/json")
            .body(request_body(&self.inner.model, req));
        if let Some(id) = &req.request_id {
            let value = HeaderValue::from_str(id).map_err(|_| ClientError::BadRequestId(id.clone()))?;
            call = call.header("x-request-id", value);
        }
        let resp = call.send().await.map_err(LlmError::from_send)?;
        if !resp.status().is_success() {
            return Err(status_error(resp).await);
        }
        let content_type = resp
            .headers()
            .get(CONTENT_TYPE)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .unwrap_or_default();
        if !is_event_stream(&content_type) {
            let body = read_capped(resp, ERROR_BODY_MAX_BYTES).await;
            return Err(LlmError::NotEventStream { content_type, body });
        }
        Ok(ChatStream::from_byte_stream(resp.bytes_stream()))
    }

    /// POST /tokenize in vLLM's chat form: the prompt `messages` (a JSON array) make with the chat template and
    /// the generation prompt, counted by the engine's own tokenizer. Returns the count and the engine's
    /// `max_model_len` when it says it. `Ok(None)`: this engine has no such endpoint (404/405) or answers without a
    /// count (llama.cpp's `/tokenize` takes `{"content"}` and returns no tokens for this form).
    pub async fn tokenize_messages(
        &self,
        messages: &str,
        chat_template_kwargs: Option<&serde_json::Value>,
    ) -> Result<Option<TokenCount>, LlmError> {
        let mut body = String::with_capacity(messages.len() + 128);
        body.push_str(r#"{"messages":"#);
        body.push_str(messages);
        body.push_str(r#","model":"#);
        body.push_str(&serde_json::to_string(&self.inner.model).unwrap_or_else(|_| "\"\"".to_owned()));
        body.push_str(r#","add_generation_prompt":true"#);
        if let Some(kwargs) = chat_template_kwargs {
            body.push_str(r#","chat_template_kwargs":"#);
            body.push_str(&kwargs.to_string());
        }
        body.push('}');
        let resp = self
            .inner
            .http
            .post(self.inner.tokenize_url.clone())
            .header(CONTENT_TYPE, "application/json")
            .body(body)
            .timeout(PROBE_TIMEOUT)
            .send()
            .await
            .map_err(LlmError::from_send)?;
        let status = resp.status();
        if matches!(status.as_u16(), 404 | 405 | 501) {
            read_capped(resp, ERROR_BODY_MAX_BYTES).await;
            return Ok(None);
        }
        if !status.is_success() {
            return Err(status_error(resp).await);
        }
        let body = read_capped(resp, MODELS_BODY_MAX_BYTES).await;
        #[derive(serde::Deserialize)]
        struct Counted {
            count: Option<u32>,
            max_model_len: Option<u32>,
        }
        match serde_json::from_str::<Counted>(&body) {
            Ok(Counted {
                count: Some(count),
                max_model_len,
            }) if count > 0 => Ok(Some(TokenCount { count, max_model_len })),
            Ok(_) => Ok(None),
            Err(source) => Err(LlmError::Decode { raw: body, source }),
        }
    }

    async fn probe(&self, url: &Url) -> Result<reqwest::Response, LlmError> {
        self.inner
            .http
            .get(url.clone())
            .timeout(PROBE_TIMEOUT)
            .send()
            .await
            .map_err(LlmError::from_send)
    }
}

/// What `/tokenize` said of a prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenCount {
    pub count: u32,
    pub max_model_len: Option<u32>,
}

/// Largest /metrics body read.
const METRICS_BODY_MAX_BYTES: usize = 4 * 1024 * 1024;

/// The sum of a counter's samples (`name{labels} value` or `name value`) in Prometheus text.
fn parse_counter(text: &str, name: &str) -> Option<f64> {
    let mut found = None;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name) else { continue };
        if !(rest.starts_with('{') || rest.starts_with(' ')) {
            continue;
        }
        let value = rest.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok());
        if let Some(v) = value {
            found = Some(found.unwrap_or(0.0) + v);
        }
    }
    found
}

/// `base` + `path`, keeping any path prefix of `base` (an engine behind a reverse proxy at `/llm/`).
fn endpoint(base: &Url, path: &str) -> Url {
    let mut url = base.clone();
    let joined = format!("{}/{path}", base.path().trim_end_matches('/'));
    url.set_path(&joined);
    url.set_query(None);
    url.set_fragment(None);
    url
}

/// `text/event-stream`, with or without parameters such as `; charset=utf-8`.
fn is_event_stream(content_type: &str) -> bool {
    content_type
        .split(';')
        .next()
        .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("text/event-stream"))
}

/// A non-2xx response as [`LlmError::Status`], with its body read and, if it has the OpenAI shape, parsed.
async fn status_error(resp: reqwest::Response) -> LlmError {
    let status = resp.status().as_u16();
    let body = read_capped(resp, ERROR_BODY_MAX_BYTES).await;
    LlmError::Status {
        status,
        api: parse_api_error(&body),
        body,
    }
}

/// Read at most `limit` bytes of the body as text. A body that breaks off keeps what arrived: the status the
/// caller already has says more than the transport error.
async fn read_capped(mut resp: reqwest::Response, limit: usize) -> String {
    let mut buf = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                let room = limit - buf.len();
                if chunk.len() >= room {
                    buf.extend_from_slice(&chunk[..room]);
                    break;
                }
                buf.extend_from_slice(&chunk);
            }
            Ok(None) => break,
            Err(error) => {
                tracing::debug!(error = %chain(&error), "engine response body broke off");
                break;
            }
        }
    }
    String::from_utf8_lossy(&buf).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_sum_their_samples_and_ignore_lookalikes() {
        let text = "# TYPE vllm:generation_tokens_total counter\n\
                    vllm:generation_tokens_total{engine=\"0\",model_name=\"m\"} 812.0\n\
                    vllm:generation_tokens_total{engine=\"1\",model_name=\"m\"} 8.0\n\
                    vllm:generation_tokens_total_created{engine=\"0\"} 1.7e9\n";
        assert_eq!(parse_counter(text, "vllm:generation_tokens_total"), Some(820.0));
        assert_eq!(parse_counter(text, "vllm:prompt_tokens_total"), None);
        assert_eq!(parse_counter("x 1\n", "x"), Some(1.0));
    }

    #[test]
    fn endpoints_keep_base_path() {
        let base = Url::parse("http://127.0.0.1:8000").unwrap();
        assert_eq!(endpoint(&base, "health").as_str(), "http://127.0.0.1:8000/health");
        let base = Url::parse("http://h:1/llm/?x=1").unwrap();
        assert_eq!(endpoint(&base, "v1/models").as_str(), "http://h:1/llm/v1/models");
    }

    #[test]
    fn event_stream_content_types() {
        assert!(is_event_stream("text/event-stream"));
        assert!(is_event_stream("text/event-stream; charset=utf-8"));
        assert!(is_event_stream("Text/Event-Stream;charset=utf-8"));
        assert!(!is_event_stream("text/html"));
        assert!(!is_event_stream("application/json"));
        assert!(!is_event_stream(""));
    }

    #[test]
    fn rejects_non_http_urls() {
        for url in ["unix:/tmp/x", "mailto:a@b", "ftp://h/"] {
            let err = LlmClient::new(Url::parse(url).unwrap(), "m".into(), Duration::from_secs(1));
            assert_eq!(err.map(|_| ()).unwrap_err().code(), "client_error", "{url}");
        }
    }
}
