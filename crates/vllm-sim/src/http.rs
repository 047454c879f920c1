//! The HTTP surface: vLLM's routes, thin handlers over [`AppState`] (see [`super::app`]), the API-key gate and the
//! uvicorn-style access log. Chat completions live in [`super::chat`].

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use super::app::{AppState, check_model, json_body, unix_now};
use super::chat::chat_completions;
use super::cli::VLLM_VERSION;
use super::config::ServerSettings;
use super::errors::ApiError;
use super::log;
use super::openai::{
    DetokenizeRequest, DetokenizeResponse, ModelCard, ModelList, ModelPermission, TokenizeRequest, TokenizeResponse,
};
use super::tokenizer::{TemplateOptions, VOCAB_SIZE, pieces, render_chat, token_id};

/// Prometheus' content type (prometheus_client's `CONTENT_TYPE_LATEST`).
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=1.0.0; charset=utf-8";

/// The routes as vLLM logs them at startup (`Route: PATH, Methods: M`).
pub const ROUTES: &[(&str, &str)] = &[
    ("/openapi.json", "HEAD, GET"),
    ("/docs", "HEAD, GET"),
    ("/health", "GET"),
    ("/load", "GET"),
    ("/ping", "GET"),
    ("/ping", "POST"),
    ("/version", "GET"),
    ("/metrics", "GET"),
    ("/tokenize", "POST"),
    ("/detokenize", "POST"),
    ("/v1/models", "GET"),
    ("/v1/chat/completions", "POST"),
];

/// The whole router.
pub fn router(app: Arc<AppState>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/ping", get(health).post(health))
        .route("/version", get(version))
        .route("/load", get(load))
        .route("/v1/models", get(models))
        .route("/v1/chat/completions", post(chat_completions))
        .route("/tokenize", post(tokenize_handler))
        .route("/detokenize", post(detokenize_handler))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(app.clone(), gate))
        .with_state(app)
}

fn json(body: String) -> Response {
    (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// 200, or 503 once the engine core is dead; like vLLM it does not ping the engine, so a hung
/// engine still answers 200.
async fn health(State(app): State<Arc<AppState>>) -> StatusCode {
    if app.dead.is_cancelled() {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    }
}

async fn version() -> Response {
    json(format!("{{\"version\":\"{VLLM_VERSION}\"}}"))
}

async fn load() -> Response {
    json("{\"server_load\":0}".to_owned())
}

async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        [(header::CONTENT_TYPE, "application/json")],
        "{\"detail\":\"Not Found\"}",
    )
        .into_response()
}

async fn method_not_allowed() -> Response {
    (
        StatusCode::METHOD_NOT_ALLOWED,
        [(header::CONTENT_TYPE, "application/json")],
        "{\"detail\":\"Method Not Allowed\"}",
    )
        .into_response()
}

async fn models(State(app): State<Arc<AppState>>) -> Response {
    let created = unix_now();
    let cfg = &app.config;
    let data = cfg
        .served_names
        .iter()
        .map(|name| ModelCard {
            id: name.clone(),
            object: "model",
            created,
            owned_by: "vllm",
            root: cfg.model.clone(),
            parent: None,
            max_model_len: cfg.engine.max_model_len,
            permission: vec![ModelPermission {
                id: format!("modelperm-{:016x}", rand::random::<u64>()),
                object: "model_permission",
                created,
                allow_create_engine: false,
                allow_sampling: true,
                allow_logprobs: true,
                allow_search_indices: false,
                allow_view: true,
                allow_fine_tuning: false,
                organization: "*",
                group: None,
                is_blocking: false,
            }],
        })
        .collect();
    let list = ModelList { object: "list", data };
    json(serde_json::to_string(&list).unwrap_or_default())
}

async fn tokenize_handler(State(app): State<Arc<AppState>>, headers: HeaderMap, body: Bytes) -> Response {
    tokenize_inner(&app, &headers, &body).unwrap_or_else(IntoResponse::into_response)
}

fn tokenize_inner(app: &AppState, headers: &HeaderMap, body: &[u8]) -> Result<Response, ApiError> {
    let req: TokenizeRequest = json_body(headers, body)?;
    check_model(&app.config, req.model.as_deref())?;
    let text = match (&req.prompt, &req.messages) {
        (Some(prompt), None) => prompt.clone(),
        (None, Some(messages)) => {
            let rendered: Vec<_> = messages.iter().map(|m| (m.role.as_str(), m.text())).collect();
            let opts = TemplateOptions {
                add_generation_prompt: req.add_generation_prompt.unwrap_or(true),
                continue_final_message: req.continue_final_message,
            };
            render_chat(&rendered, opts)
        }
        _ => {
            return Err(ApiError::invalid(
                "{'type': 'union_tag_invalid', 'loc': ('body',), 'msg': 'Input should have exactly one of `prompt` or `messages`'}",
                None,
            ));
        }
    };
    let strs: Vec<&str> = pieces(&text).collect();
    app.vocab.remember(strs.iter().copied());
    let response = TokenizeResponse {
        count: strs.len(),
        max_model_len: app.config.engine.max_model_len,
        tokens: strs.iter().map(|p| token_id(p)).collect(),
        token_strs: req.return_token_strs.then_some(strs),
    };
    Ok(json(serde_json::to_string(&response).unwrap_or_default()))
}

async fn detokenize_handler(State(app): State<Arc<AppState>>, headers: HeaderMap, body: Bytes) -> Response {
    detokenize_inner(&app, &headers, &body).unwrap_or_else(IntoResponse::into_response)
}

fn detokenize_inner(app: &AppState, headers: &HeaderMap, body: &[u8]) -> Result<Response, ApiError> {
    let req: DetokenizeRequest = json_body(headers, body)?;
    check_model(&app.config, req.model.as_deref())?;
    let mut ids = Vec::with_capacity(req.tokens.len());
    for &id in &req.tokens {
        match u32::try_from(id) {
            Ok(id) if id < VOCAB_SIZE => ids.push(id),
            _ => {
                return Err(ApiError::invalid(
                    format!(
                        "{{'type': 'value_error', 'loc': ('body', 'tokens'), 'msg': 'Token id {id} is out of vocabulary'}}"
                    ),
                    Some("tokens"),
                ));
            }
        }
    }
    let response = DetokenizeResponse {
        prompt: app.vocab.decode(&ids),
    };
    Ok(json(serde_json::to_string(&response).unwrap_or_default()))
}

async fn metrics(State(app): State<Arc<AppState>>) -> Response {
    let body = if app.config.logging.log_stats {
        let stats = app.stats.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        app.exposition.render(&stats)
    } else {
        String::new()
    };
    (StatusCode::OK, [(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)], body).into_response()
}

/// `--api-key` on `/v1/*` (401 `{"error":"Unauthorized"}`, not OpenAI-shaped) and the access log.
async fn gate(State(app): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let peer = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0);
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let response = if needs_key(&app.config.server, &method, &path) && !authorized(&app.config.server, req.headers()) {
        (
            StatusCode::UNAUTHORIZED,
            [(header::CONTENT_TYPE, "application/json")],
            "{\"error\":\"Unauthorized\"}",
        )
            .into_response()
    } else {
        next.run(req).await
    };
    if app.config.logging.access_log {
        let status = response.status();
        let peer = peer.map_or_else(|| "-".to_owned(), |p| p.to_string());
        log::access(format_args!(
            "{peer} - \"{method} {path} HTTP/1.1\" {} {}",
            status.as_u16(),
            status.canonical_reason().unwrap_or("")
        ));
    }
    response
}

fn needs_key(server: &ServerSettings, method: &Method, path: &str) -> bool {
    !server.api_keys.is_empty()
        && method != Method::OPTIONS
        && ["/v1", "/v2", "/inference", "/cohere"]
            .iter()
            .any(|p| path.starts_with(p))
}

fn authorized(server: &ServerSettings, headers: &HeaderMap) -> bool {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|key| server.api_keys.iter().any(|k| k == key))
}
