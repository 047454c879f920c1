//! `POST /v1/chat/completions`: validate like vLLM, plan the reply, submit to the engine core,
//! then either stream SSE chunks as the engine emits tokens or answer once it has finished.

mod stream;

use std::borrow::Cow;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::app::{AppState, check_model, json_body, unix_now};
use super::cache::block_hashes;
use super::cli::ReplyMode;
use super::errors::ApiError;
use super::log;
use super::openai::{ChatChoice, ChatCompletion, ChatMessageOut, ChatRequest, FullUsage, PromptTokensDetails, Stop};
use super::reply::{ReplyPlan, ReplySpec, echo_line, reply_seed};
use super::scheduler::{EngineError, EngineRequest};
use super::sse::UsageMode;
use super::tokenizer::{TemplateOptions, render_chat, tokenize};
use stream::stream_response;

/// Most stop strings per request (`VLLM_MAX_STOP_STRINGS`).
const MAX_STOP_STRINGS: usize = 4;
/// A stream poll hands hyper at most about this many bytes at once.
pub(super) const MAX_FRAME: usize = 64 * 1024;

/// A validated request, ready for the engine.
pub(super) struct Prepared {
    pub(super) id: String,
    /// The role of the first delta and of the message.
    pub(super) role: Arc<str>,
    pub(super) stream: bool,
    pub(super) usage: UsageMode,
    pub(super) prompt_tokens: u32,
    pub(super) plan: ReplyPlan,
    pub(super) engine: EngineRequest,
    /// A prompt that fills the whole context: rejected by the engine, after the 200 for streams.
    pub(super) late_error: Option<ApiError>,
}

pub async fn chat_completions(State(app): State<Arc<AppState>>, headers: HeaderMap, body: Bytes) -> Response {
    match respond(app, &headers, &body).await {
        Ok(response) => response,
        Err(err) => err.into_response(),
    }
}

async fn respond(app: Arc<AppState>, headers: &HeaderMap, body: &[u8]) -> Result<Response, ApiError> {
    let req: ChatRequest = json_body(headers, body)?;
    // The sampling parameters as sent (`None` when absent, as vLLM's Python prints it), so tests can see what the
    // engine was asked for.
    let sampling = format!(
        "temperature={}, top_p={}",
        py_option(req.temperature),
        py_option(req.top_p)
    );
    let prepared = prepare(&app, headers, req)?;
    if app.config.logging.log_requests {
        log::info(
            "logger.py:49",
            format_args!(
                "Received request {}: prompt_tokens={}, max_tokens={}, {sampling}",
                prepared.id,
                prepared.prompt_tokens,
                prepared.plan.tokens()
            ),
        );
    }
    let id_header = app
        .config
        .server
        .request_id_headers
        .then(|| HeaderValue::from_str(&prepared.id).ok())
        .flatten();
    let mut response = if prepared.stream {
        stream_response(app, prepared).await?
    } else {
        full_response(app, prepared).await?
    };
    if let Some(value) = id_header {
        response.headers_mut().insert("x-request-id", value);
    }
    Ok(response)
}

/// A number as Python prints an optional float: `0.0`, `0.9`, `None`.
fn py_option(value: Option<f64>) -> String {
    value.map_or_else(|| "None".to_owned(), |v| format!("{v:?}"))
}

fn prepare(app: &AppState, headers: &HeaderMap, req: ChatRequest) -> Result<Prepared, ApiError> {
    let cfg = &app.config;
    let stream = req.stream.unwrap_or(false);
    if req.stream_options.is_some() && !stream {
        return Err(ApiError::invalid(
            "{'type': 'value_error', 'loc': ('body',), 'msg': 'Value error, Stream options can only be defined when `stream=True`.'}",
            None,
        ));
    }
    let stop = req.stop.map(Stop::into_vec).unwrap_or_default();
    if stop.len() > MAX_STOP_STRINGS {
        return Err(ApiError::invalid(
            format!(
                "{{'type': 'too_long', 'loc': ('body', 'stop'), 'msg': 'List should have at most {MAX_STOP_STRINGS} items after validation, not {}'}}",
                stop.len()
            ),
            Some("stop"),
        ));
    }
    check_model(cfg, req.model.as_deref())?;
    let images: u32 = req.messages.iter().map(|m| m.images()).sum();
    if images > 0 && !cfg.engine.multimodal {
        // vLLM names the served model (the first name when the request names none).
        let model = req.model.clone().unwrap_or_else(|| cfg.served_names[0].clone());
        return Err(ApiError::NotMultimodal { model });
    }
    if let Some(limit) = cfg.engine.image_limit
        && images > limit
    {
        return Err(ApiError::TooManyImages { limit });
    }
    let messages: Vec<(&str, Cow<'_, str>)> = req.messages.iter().map(|m| (m.role.as_str(), m.text())).collect();
    let add_generation_prompt = req.add_generation_prompt.unwrap_or(true);
    // vLLM answers as `--response-role`, or continues the last message's role without a
    // generation prompt.
    let role = match messages.last() {
        Some((last, _)) if !add_generation_prompt => Arc::from(*last),
        _ => app.response_role.clone(),
    };
    let template = TemplateOptions {
        add_generation_prompt,
        continue_final_message: req.continue_final_message,
    };
    let prompt = tokenize(&render_chat(&messages, template));
    let prompt_tokens = u32::try_from(prompt.len()).unwrap_or(u32::MAX);
    let max_model_len = cfg.engine.max_model_len;
    if prompt_tokens > max_model_len {
        return Err(ApiError::PromptTooLong {
            prompt_tokens,
            max_model_len,
        });
    }
    let requested = req.max_completion_tokens.or(req.max_tokens);
    if let Some(max_tokens) = requested {
        if max_tokens > i64::from(max_model_len) {
            return Err(ApiError::MaxTokensTooLarge {
                max_tokens,
                max_model_len,
            });
        }
        if max_tokens < 1 {
            return Err(ApiError::MaxTokensTooSmall { max_tokens });
        }
    }
    let room = max_model_len - prompt_tokens;
    let late_error = (room == 0).then_some(ApiError::PromptFillsContext {
        prompt_tokens,
        max_model_len,
    });
    // Silently clamped to what is left of the context, like vLLM.
    let max_tokens = requested.map_or(room, |m| (m as u32).min(room)).max(1);
    let echo = (cfg.replies.reply_mode == ReplyMode::Echo).then(|| {
        let shown: Vec<(&str, Cow<'_, str>)> = req.messages.iter().map(|m| (m.role.as_str(), m.echo_text())).collect();
        echo_line(&shown, images)
    });
    let plan = ReplyPlan::new(&ReplySpec {
        echo: echo.as_deref(),
        natural_tokens: cfg.replies.reply_tokens,
        seed: reply_seed(&prompt, req.seed.or(cfg.replies.seed.map(|s| s as i64))),
        max_tokens,
        stop: &stop,
        include_stop_str_in_output: req.include_stop_str_in_output,
        ignore_eos: req.ignore_eos,
        min_tokens: req.min_tokens,
    });
    let hashes = if cfg.engine.prefix_caching {
        block_hashes(&prompt, req.cache_salt.as_deref())
    } else {
        Vec::new()
    };
    let priority = headers
        .get("x-vllm-priority")
        .and_then(|v| v.to_str().ok()?.trim().parse().ok())
        .unwrap_or(req.priority);
    let options = req.stream_options.as_ref();
    let usage = UsageMode {
        include_usage: cfg.replies.force_include_usage || options.is_some_and(|o| o.include_usage.unwrap_or(true)),
        continuous: cfg.replies.force_include_usage
            || options.is_some_and(|o| o.continuous_usage_stats.unwrap_or(false)),
        prompt_tokens_details: cfg.replies.prompt_tokens_details,
    };
    Ok(Prepared {
        id: request_id(headers, req.request_id.as_deref()),
        role,
        stream,
        usage,
        prompt_tokens,
        engine: EngineRequest {
            prompt_len: prompt_tokens,
            block_hashes: hashes,
            gen_len: plan.tokens(),
            finish: plan.finish_reason(),
            priority,
        },
        plan,
        late_error,
    })
}

/// `chatcmpl-` + the `X-Request-Id` header, else the body's `request_id`, else 16 random hex.
fn request_id(headers: &HeaderMap, body_id: Option<&str>) -> String {
    let header = headers.get("x-request-id").and_then(|v| v.to_str().ok());
    match header.or(body_id) {
        Some(id) => format!("chatcmpl-{id}"),
        None => format!("chatcmpl-{:016x}", rand::random::<u64>()),
    }
}

pub(super) fn engine_error(err: EngineError) -> ApiError {
    match err {
        EngineError::QueueFull => ApiError::QueueFull,
        EngineError::Dead => ApiError::EngineDead,
    }
}

async fn full_response(app: Arc<AppState>, p: Prepared) -> Result<Response, ApiError> {
    if let Some(err) = p.late_error {
        return Err(err);
    }
    let mut requests = app.engine.submit(p.engine).await.map_err(engine_error)?;
    let mut cached = 0;
    while let Some(output) = requests.recv().await {
        if let Some(cached_tokens) = output.cached_tokens {
            cached = cached_tokens;
        }
    }
    if requests.remaining() > 0 {
        return Err(ApiError::EngineDead);
    }
    let completion_tokens = p.plan.tokens();
    let body = ChatCompletion {
        id: &p.id,
        object: "chat.completion",
        created: unix_now(),
        model: app.config.model_name(),
        choices: [ChatChoice {
            index: 0,
            message: ChatMessageOut {
                role: &p.role,
                content: p.plan.text(),
                refusal: None,
                annotations: None,
                audio: None,
                function_call: None,
                reasoning: None,
            },
            logprobs: None,
            finish_reason: p.plan.finish_reason().as_str(),
            stop_reason: p.plan.stop_reason(),
            token_ids: None,
        }],
        service_tier: None,
        system_fingerprint: &app.fingerprint,
        usage: FullUsage {
            prompt_tokens: p.prompt_tokens,
            total_tokens: p.prompt_tokens + completion_tokens,
            completion_tokens,
            prompt_tokens_details: app.config.replies.prompt_tokens_details.then_some(PromptTokensDetails {
                cached_tokens: cached,
                created_cache_tokens: None,
                multimodal_tokens: None,
            }),
            completion_tokens_details: None,
        },
        prompt_logprobs: None,
        prompt_token_ids: None,
        prompt_text: None,
        kv_transfer_params: None,
    };
    let json = serde_json::to_string(&body).map_err(|_| ApiError::EngineDead)?;
    Ok((StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], json).into_response())
}
