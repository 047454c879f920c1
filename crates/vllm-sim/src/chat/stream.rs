//! The streaming half of chat completions: an SSE body fed by the engine's per-request channel.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::Stream;
use tokio_util::sync::CancellationToken;

use super::{MAX_FRAME, Prepared, engine_error};
use crate::app::{AppState, unix_now};
use crate::errors::ApiError;
use crate::failure;
use crate::log;
use crate::reply::ReplyPlan;
use crate::scheduler::{Output, RequestStream};
use crate::sse::{self, ChunkWriter};

pub(super) async fn stream_response(app: Arc<AppState>, p: Prepared) -> Result<Response, ApiError> {
    let Prepared {
        id,
        usage,
        prompt_tokens,
        plan,
        engine,
        late_error,
        role,
        ..
    } = p;
    let submitted = match late_error {
        Some(err) => Err(err),
        None => app.engine.submit(engine).await.map_err(engine_error),
    };
    let (requests, pending) = match submitted {
        Ok(requests) => (Some(requests), None),
        // Refused before streaming: the engine is busy, or dead (vLLM checks `errored` first).
        Err(err @ (ApiError::QueueFull | ApiError::EngineDead)) => return Err(err),
        Err(err) => {
            let mut out = String::new();
            sse::data(&mut out, &err.to_json());
            sse::done(&mut out);
            (None, Some(out))
        }
    };
    let writer = ChunkWriter::new(
        &id,
        unix_now(),
        app.config.model_name(),
        prompt_tokens,
        usage,
        app.fingerprint.clone(),
    );
    let body = SseBody {
        requests,
        pending,
        state: SseState {
            writer,
            plan,
            role,
            emitted: 0,
            cached: 0,
        },
        abort_log: app.config.logging.log_requests.then_some(id),
        dead: app.dead.clone(),
    };
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, sse::CONTENT_TYPE)],
        Body::from_stream(body),
    )
        .into_response())
}

/// What a stream has told the client so far.
struct SseState {
    writer: ChunkWriter,
    plan: ReplyPlan,
    role: Arc<str>,
    emitted: u32,
    cached: u32,
}

impl SseState {
    /// Render one engine output (one chunk per token); true once the stream is complete
    /// (`[DONE]` written).
    fn render(&mut self, output: Output, out: &mut String) -> bool {
        if let Some(cached_tokens) = output.cached_tokens {
            self.cached = cached_tokens;
            self.writer.role(out, &self.role);
        }
        for _ in 0..output.tokens {
            let index = self.emitted as usize;
            self.emitted += 1;
            let text = self.plan.delta(index);
            if self.emitted < self.plan.tokens() {
                self.writer.content(out, text, self.emitted);
                continue;
            }
            let finish = self.plan.finish_reason().as_str();
            self.writer
                .finish(out, text, finish, self.plan.stop_reason(), self.emitted);
            self.writer.usage(out, self.emitted, self.cached);
            sse::done(out);
            return true;
        }
        false
    }
}

/// The SSE body: engine outputs in, chunk bytes out. Dropped by hyper when the client goes away,
/// which drops the [`RequestStream`] and so aborts the request.
struct SseBody {
    requests: Option<RequestStream>,
    /// Bytes to send before anything else (an in-stream error and `[DONE]`).
    pending: Option<String>,
    state: SseState,
    /// The request id to log on abort (`--enable-log-requests`).
    abort_log: Option<String>,
    /// Cancelled when the engine core died: a stream the engine dropped then ends with vLLM's
    /// in-stream `EngineDeadError` event and `[DONE]` instead of being cut off.
    dead: CancellationToken,
}

impl Stream for SseBody {
    type Item = Result<Bytes, Infallible>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if let Some(pending) = this.pending.take() {
            return Poll::Ready(Some(Ok(Bytes::from(pending))));
        }
        let Some(requests) = this.requests.as_mut() else {
            return Poll::Ready(None);
        };
        let mut out = String::new();
        let mut finished = false;
        let mut engine_gone = false;
        while out.len() < MAX_FRAME {
            match requests.poll_recv(cx) {
                Poll::Ready(Some(output)) => {
                    if this.state.render(output, &mut out) {
                        finished = true;
                        break;
                    }
                }
                Poll::Ready(None) => {
                    // The engine dropped the request. On shutdown the stream is cut without
                    // [DONE]; when the engine core died, vLLM's generator raises EngineDeadError.
                    engine_gone = true;
                    if this.dead.is_cancelled() {
                        log::error_block(
                            "serving.py:947",
                            &format!(
                                "Error in chat completion stream generator.\n{}",
                                failure::stream_generator_failed()
                            ),
                        );
                        sse::data(&mut out, &ApiError::EngineDead.to_json());
                        sse::done(&mut out);
                    }
                    break;
                }
                Poll::Pending => break,
            }
        }
        if finished || engine_gone {
            this.requests = None;
            this.abort_log = None;
        }
        if !out.is_empty() {
            Poll::Ready(Some(Ok(Bytes::from(out))))
        } else if this.requests.is_none() {
            Poll::Ready(None)
        } else {
            Poll::Pending
        }
    }
}

impl Drop for SseBody {
    fn drop(&mut self) {
        if self.requests.is_some()
            && let Some(id) = &self.abort_log
        {
            log::info("async_llm.py:421", format_args!("Aborted request {id}."));
        }
    }
}
