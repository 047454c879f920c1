//! The lane worker: runs a session's requests one at a time, in arrival order.
//!
//! For each request it waits for an engine slot, builds the prompt from the session's history, streams the
//! engine's answer (publishing coalesced stream frames when asked), then publishes exactly one final reply: the
//! cleaned text, or `Error: ...`. Only a successful reply becomes a turn of the history.

use std::sync::Arc;

use futures_util::StreamExt;
use tokio::time::{Duration, Instant};

use super::failure::Failure;
use super::stream::StreamSink;
use super::{Job, Shared};
use crate::llm::{ChatEvent, ChatRequest, ThinkFilter, Usage, clean_reply};
use crate::metrics;
use crate::session::SessionKey;
use mqtt_llm_protocol::wire::{FrameUsage, ReplyTarget};

/// Run `job`, then every job queued behind it in the same session, until the lane is empty.
pub async fn run_lane(shared: Arc<Shared>, key: SessionKey, mut job: Job) {
    loop {
        process(&shared, &key, job).await;
        match shared.lanes.next(&key) {
            Some(next) => job = next,
            None => break,
        }
    }
    metrics::sessions(shared.sessions.len());
}

/// What the engine produced for one request.
struct Generation {
    raw: String,
    finish_reason: String,
    usage: Option<Usage>,
    ttft: Option<Duration>,
}

async fn process(shared: &Shared, key: &SessionKey, job: Job) {
    let req = &job.request;
    let project = key.project.as_str();
    let mut sink = req.stream.as_ref().map(|topic| {
        StreamSink::new(
            ReplyTarget {
                topic: topic.clone(),
                correlation_data: req.reply.correlation_data.clone(),
            },
            req.request_id.clone(),
            project.to_owned(),
            shared.cfg.stream_interval,
        )
    });
    let outcome = tokio::select! {
        biased;
        _ = shared.abort.cancelled() => Err(Failure::ShuttingDown),
        r = tokio::time::timeout(shared.cfg.request_timeout, generate(shared, key, &job, sink.as_mut())) => {
            r.unwrap_or(Err(Failure::Timeout(shared.cfg.request_timeout)))
        }
    };
    let total = job.accepted_at.elapsed();
    let result = outcome.and_then(|generation| {
        let text = if shared.cfg.skip_thinking {
            clean_reply(&generation.raw)
        } else {
            generation.raw.trim().to_owned()
        };
        if text.is_empty() {
            Err(Failure::EmptyReply)
        } else {
            Ok((text, generation))
        }
    });
    match result {
        Ok((text, generation)) => {
            let usage = generation.usage.unwrap_or_default();
            let cached = usage.cached_tokens.unwrap_or(0);
            if let Some(sink) = sink.as_mut() {
                let frame_usage = FrameUsage {
                    prompt_tokens: usage.prompt_tokens,
                    completion_tokens: usage.completion_tokens,
                    cached_tokens: cached,
                };
                let ttft = generation.ttft.unwrap_or(total);
                sink.done(shared, generation.finish_reason, frame_usage, ttft, total)
                    .await;
            }
            // The final reply goes out after the last stream frame.
            shared.publish_text(&req.reply, text.clone()).await;
            metrics::reply_published(project, None);
            metrics::request_timing(project, total, generation.ttft);
            metrics::tokens(project, usage.prompt_tokens, usage.completion_tokens, cached);
            let context = generation
                .usage
                .map(|u| u.prompt_tokens.saturating_add(u.completion_tokens));
            let dropped = shared.sessions.commit(key, req.message.clone(), text, context);
            if dropped > 0 {
                metrics::history_trimmed(dropped);
            }
        }
        Err(failure) => {
            tracing::warn!(project, session = key.session.as_str(), code = failure.code(), error = %failure.user_message(), "request failed");
            if let Some(sink) = sink.as_mut() {
                sink.error(shared, failure.code(), failure.user_message()).await;
            }
            shared.publish_text(&req.reply, failure.reply_text()).await;
            metrics::reply_published(project, Some(failure.code()));
            metrics::request_timing(project, total, None);
        }
    }
}

/// Wait for a ready engine and an engine slot, then stream the answer. A failure caused by the engine dying (or
/// being killed as hung) under the request becomes [`Failure::EngineRestarted`].
async fn generate(
    shared: &Shared,
    key: &SessionKey,
    job: &Job,
    sink: Option<&mut StreamSink>,
) -> Result<Generation, Failure> {
    if !shared.engine.state().is_ready() && !shared.engine.wait_until_ready(shared.cfg.engine_wait).await {
        return Err(Failure::EngineNotReady);
    }
    let _slot = shared.admission.acquire_inflight().await;
    let incarnation = shared.engine.incarnation();
    let _busy = shared.engine.activity().begin();
    match stream_answer(shared, key, job, sink).await {
        Err(failure) if failure.may_be_engine_death() && shared.engine_restarted_since(incarnation).await => {
            Err(Failure::EngineRestarted)
        }
        other => other,
    }
}

async fn stream_answer(
    shared: &Shared,
    key: &SessionKey,
    job: &Job,
    mut sink: Option<&mut StreamSink>,
) -> Result<Generation, Failure> {
    let req = &job.request;
    let messages = shared.sessions.prepare(
        key,
        req.system_prompt.as_deref(),
        shared.catalog.system_prompt(key.project.as_str()),
        &req.message,
    );
    let defaults = shared.cfg.defaults;
    let chat = ChatRequest {
        messages,
        temperature: Some(req.sampling.temperature.unwrap_or(defaults.temperature)),
        top_p: Some(req.sampling.top_p.unwrap_or(defaults.top_p)),
        max_tokens: Some(req.sampling.max_tokens.unwrap_or(defaults.max_tokens)),
        chat_template_kwargs: shared
            .cfg
            .skip_thinking
            .then(|| serde_json::json!({"enable_thinking": false})),
        request_id: Some(req.request_id.clone()),
        priority: shared.catalog.priority(key.project.as_str()),
    };
    let mut events = shared.llm.chat_stream(&chat).await?;
    let mut filter = shared.cfg.skip_thinking.then(ThinkFilter::new);
    let mut generation = Generation {
        raw: String::new(),
        finish_reason: "stop".into(),
        usage: None,
        ttft: None,
    };
    loop {
        let deadline = sink.as_ref().and_then(|s| s.deadline());
        let event = tokio::select! {
            ev = events.next() => ev,
            _ = sleep_until_opt(deadline) => {
                if let Some(s) = sink.as_mut() {
                    s.flush(shared).await;
                }
                continue;
            }
        };
        match event {
            None => break,
            Some(Ok(ChatEvent::Delta(text))) => {
                shared.engine.activity().progress();
                generation.ttft.get_or_insert_with(|| job.accepted_at.elapsed());
                if let Some(s) = sink.as_mut() {
                    let visible = match filter.as_mut() {
                        Some(f) => f.feed(&text),
                        None => text.clone(),
                    };
                    s.push(shared, &visible).await;
                }
                generation.raw.push_str(&text);
            }
            Some(Ok(ChatEvent::Finished { finish_reason })) => generation.finish_reason = finish_reason,
            Some(Ok(ChatEvent::Usage(usage))) => generation.usage = Some(usage),
            Some(Err(e)) => return Err(Failure::Engine(e)),
        }
    }
    if let (Some(s), Some(f)) = (sink.as_mut(), filter.as_mut()) {
        let rest = f.finish();
        s.push(shared, &rest).await;
    }
    Ok(generation)
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
