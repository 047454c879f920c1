//! The lane worker: runs a session's requests one at a time, in arrival order.
//!
//! For each [`Ticket`] it waits at admission for an engine slot, builds the prompt from the session's history,
//! streams the engine's answer (stream frames through a [`StreamSink`] when asked), then publishes exactly one
//! final reply through the [`Publisher`]: the cleaned text, or `Error: ...` (JSON to a game state, see [`state`]).
//! Only a successful reply becomes a turn of the history. `Worker` is everything a lane needs, and nothing else.

use std::sync::Arc;

use futures_util::StreamExt;
use tokio::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

use super::budget::{self, ContextWindow, MAX_RECOUNTS, NoRoom, Tokenizer};
use super::failure::Failure;
use super::state;
use super::stream::StreamSink;
use crate::admission::{Admission, Ticket};
use crate::config::{ProjectCatalog, SamplingDefaults};
use crate::engine::EngineHandle;
use crate::llm::{ChatEvent, CompletionRequest, LlmClient, MessageContent, ThinkFilter, Usage, clean_reply};
use crate::metrics;
use crate::mqtt::publisher::Publisher;
use crate::session::{Counted, Fit, Owner, SessionStore, user_turn_text};
use mqtt_llm_protocol::wire::{ChatRequest, FrameUsage, ReplyTarget};

/// How long a request that lost its engine connection waits for the supervisor to notice a crash.
pub const RESTART_NOTICE: Duration = Duration::from_secs(1);

/// How a worker answers.
#[derive(Debug, Clone)]
pub(super) struct WorkerSettings {
    /// Zero: one frame per engine chunk.
    pub(super) stream_interval: Duration,
    pub(super) defaults: SamplingDefaults,
    pub(super) skip_thinking: bool,
    pub(super) request_timeout: Duration,
}

/// What a lane worker uses: its tickets' admission, the engine, the conversation store and the publisher.
#[derive(Debug)]
pub(super) struct Worker {
    pub(super) admission: Admission,
    pub(super) engine: EngineHandle,
    pub(super) llm: LlmClient,
    pub(super) sessions: SessionStore,
    /// The engine's context length and tokenizer support.
    pub(super) window: ContextWindow,
    pub(super) catalog: ProjectCatalog,
    pub(super) publisher: Publisher,
    pub(super) settings: WorkerSettings,
    /// Cancelled when the drain timeout passes: running and queued requests are answered with an error.
    pub(super) abort: CancellationToken,
}

/// What the engine produced for one request.
struct Generation {
    raw: String,
    finish_reason: String,
    usage: Option<Usage>,
    ttft: Option<Duration>,
    /// The prompt budget the request was prepared under (the turn is trimmed to it when stored).
    budget: u32,
}

/// Run `ticket`, then every ticket queued behind it in the same session, until the lane is empty.
pub(super) async fn run_lane(worker: Arc<Worker>, mut ticket: Ticket) {
    let key = ticket.key().clone();
    loop {
        worker.process(ticket).await;
        match worker.admission.next(&key) {
            Some(next) => ticket = next,
            None => break,
        }
    }
    metrics::sessions(worker.sessions.len());
    metrics::session_bytes(worker.sessions.bytes());
}

/// Answer a ticket taken out of its lane after `--max-queue-wait`: admission refuses it at once, and it gets the
/// overload reply (and stream error frame) like any request refused at its turn.
pub(super) async fn answer_expired(worker: Arc<Worker>, ticket: Ticket) {
    worker.process(ticket).await;
}

impl Worker {
    async fn process(&self, ticket: Ticket) {
        let req = ticket.request();
        let key = ticket.key();
        let project = key.project.as_str();
        let mut sink = req.stream.as_ref().map(|topic| {
            let target = ReplyTarget {
                topic: topic.clone(),
                correlation_data: req.reply.correlation_data.clone(),
            };
            let (id, interval) = (req.request_id.clone(), self.settings.stream_interval);
            StreamSink::new(self.publisher.clone(), target, id, project.to_owned(), interval)
        });
        let timeout = self.settings.request_timeout;
        let outcome = tokio::select! {
            biased;
            _ = self.abort.cancelled() => Err(Failure::ShuttingDown),
            r = tokio::time::timeout(timeout, self.generate(&ticket, sink.as_mut())) => {
                r.unwrap_or(Err(Failure::Timeout(timeout)))
            }
        };
        let total = ticket.accepted_at().elapsed();
        let result = outcome.and_then(|generation| {
            let text = if self.settings.skip_thinking {
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
                    sink.done(generation.finish_reason, frame_usage, ttft, total).await;
                }
                // The turn is stored before the reply goes out: once a client has the reply, a restart keeps it
                // (within --persist-interval). The engine's count of an image turn includes the image's tokens, which later prompts do not
                // carry (the history keeps a placeholder): estimate that turn instead.
                let counted = generation.usage.filter(|_| req.images.is_empty()).map(|u| Counted {
                    prompt_tokens: u.prompt_tokens,
                    completion_tokens: u.completion_tokens,
                });
                let owner = self.owner(req, project);
                let user = user_turn_text(&req.message, req.images.len());
                self.sessions
                    .commit_turn(key, &owner, user, text.clone(), counted, generation.budget);
                // The final reply goes out after the last stream frame.
                state::publish_answer(&self.publisher, req, text).await;
                metrics::reply_published(project, None);
                metrics::request_timing(project, total, generation.ttft);
                metrics::tokens(project, usage.prompt_tokens, usage.completion_tokens, cached);
            }
            Err(failure) => {
                tracing::warn!(project, session = key.session.as_str(), code = failure.code(), error = %failure.user_message(), "request failed");
                let hint = match &failure {
                    Failure::Refused(r) if r.hints_retry() => Some(self.admission.retry_after()),
                    _ => None,
                };
                if let Some(sink) = sink.as_mut() {
                    sink.error(failure.code(), failure.user_message(), hint).await;
                }
                let message = failure.user_message();
                state::publish_failure(&self.publisher, req, failure.reply_text(), &message, hint).await;
                metrics::reply_published(project, Some(failure.code()));
                metrics::request_timing(project, total, None);
            }
        }
    }

    /// Wait for an engine slot, then stream the answer. A failure caused by the engine dying (or being killed as
    /// hung) under the request becomes [`Failure::EngineRestarted`].
    async fn generate(&self, ticket: &Ticket, sink: Option<&mut StreamSink>) -> Result<Generation, Failure> {
        let _slot = self.admission.engine_slot(ticket).await.map_err(Failure::Refused)?;
        metrics::queue_wait(ticket.key().project.as_str(), ticket.accepted_at().elapsed());
        let incarnation = self.engine.incarnation();
        let _busy = self.engine.activity().begin();
        let answer = tokio::select! {
            biased;
            answer = self.stream_answer(ticket, sink) => answer,
            // A hung engine keeps the stream open until its group is killed, after the grace: do not wait.
            () = self.engine.restarting() => return Err(Failure::EngineRestarted),
        };
        match answer {
            Err(failure) if failure.may_be_engine_death() && self.engine_restarted_since(incarnation).await => {
                Err(Failure::EngineRestarted)
            }
            other => other,
        }
    }

    /// Whether the engine went down (or was replaced) since incarnation `since`; waits up to [`RESTART_NOTICE`]
    /// for the supervisor to notice a crash that the request saw first.
    async fn engine_restarted_since(&self, since: u64) -> bool {
        let mut state = self.engine.subscribe();
        let noticed = tokio::time::timeout(RESTART_NOTICE, state.wait_for(|s| !s.is_ready()))
            .await
            .is_ok();
        // A terminal engine will not come back: "restarted, please retry" would be a lie.
        (noticed || self.engine.incarnation() != since) && !self.engine.state().is_terminal()
    }

    /// Who the request speaks for: the intake resolved its client id into `client_id` when it claimed the session.
    fn owner(&self, req: &ChatRequest, project: &str) -> Owner {
        Owner::of(self.catalog.session_owner(project), req.client_id.as_deref())
    }

    /// The engine request of `ticket`, and the prompt budget it was fitted to: the budget from the model's
    /// context, the prompt from the session (trimmed by the store's policy), counted by the engine when its
    /// estimate comes near the budget and trimmed again if the count says so.
    async fn completion_request(&self, ticket: &Ticket) -> Result<(CompletionRequest, u32), Failure> {
        let (req, key) = (ticket.request(), ticket.key());
        let project = key.project.as_str();
        let defaults = self.settings.defaults;
        let incarnation = self.engine.incarnation();
        let max_model_len = self.window.max_model_len(&self.llm, incarnation).await;
        let max_tokens = budget::max_tokens(req.sampling.max_tokens, defaults.max_tokens, max_model_len);
        let budget =
            budget::budget(self.sessions.max_history_tokens(), max_model_len, max_tokens).map_err(Failure::NoRoom)?;
        let kwargs = self
            .settings
            .skip_thinking
            .then(|| serde_json::json!({"enable_thinking": false}));
        let owner = self.owner(req, project);
        let system = self.catalog.system_prompt(project);
        let content = MessageContent::with_images(&req.message, req.images.iter().map(|i| i.as_str().to_owned()));
        let mut fit = Fit { budget, correction: 0 };
        let prepare = |fit: Fit| {
            self.sessions
                .prepare_prompt(key, &owner, req.system_prompt.as_deref(), system, content.clone(), fit)
                .map_err(Failure::SessionOwner)
        };
        let mut prompt = prepare(fit)?;
        let no_room = |prompt_tokens: u32| {
            Failure::NoRoom(NoRoom::Message {
                prompt_tokens,
                budget,
                max_model_len,
                max_tokens,
            })
        };
        // Images are not counted: their tokens depend on the model's processor; the engine has the last word.
        let countable = req.images.is_empty() && self.window.tokenizer(incarnation) != Tokenizer::Unsupported;
        if countable && budget::worth_counting(prompt.estimate, budget) {
            for _ in 0..MAX_RECOUNTS {
                match self.llm.tokenize_messages(&prompt.json, kwargs.as_ref()).await {
                    Ok(Some(count)) => {
                        self.window
                            .tokenized(incarnation, Tokenizer::Works, count.max_model_len);
                        if count.count <= budget {
                            metrics::tokenize_call("fits");
                            break;
                        }
                        metrics::tokenize_call("over");
                        if prompt.turns == 0 {
                            return Err(no_room(count.count));
                        }
                        // The estimate fell short by this much: fit again with the difference counted.
                        fit.correction = fit
                            .correction
                            .saturating_add(count.count.saturating_sub(prompt.estimate).max(1));
                        prompt = prepare(fit)?;
                    }
                    Ok(None) => {
                        metrics::tokenize_call("unsupported");
                        self.window.tokenized(incarnation, Tokenizer::Unsupported, None);
                        break;
                    }
                    Err(e) => {
                        metrics::tokenize_call("error");
                        tracing::debug!(error = %e, "POST /tokenize failed: sending the estimated prompt");
                        break;
                    }
                }
            }
        }
        Ok((
            CompletionRequest {
                messages: crate::llm::Messages::Json(prompt.json),
                temperature: Some(req.sampling.temperature.unwrap_or(defaults.temperature)),
                top_p: Some(req.sampling.top_p.unwrap_or(defaults.top_p)),
                max_tokens: Some(max_tokens),
                chat_template_kwargs: kwargs,
                request_id: Some(req.request_id.clone()),
                priority: self.catalog.priority(project),
            },
            budget,
        ))
    }

    async fn stream_answer(&self, ticket: &Ticket, mut sink: Option<&mut StreamSink>) -> Result<Generation, Failure> {
        let (request, budget) = self.completion_request(ticket).await?;
        let mut events = self.llm.chat_stream(&request).await?;
        let mut filter = self.settings.skip_thinking.then(ThinkFilter::new);
        let mut generation = Generation {
            raw: String::new(),
            finish_reason: "stop".into(),
            usage: None,
            ttft: None,
            budget,
        };
        let gaps = metrics::inter_token_histogram(ticket.key().project.as_str());
        let mut last_delta: Option<Instant> = None;
        loop {
            let deadline = sink.as_ref().and_then(|s| s.deadline());
            let event = tokio::select! {
                ev = events.next() => ev,
                _ = sleep_until_opt(deadline) => {
                    if let Some(s) = sink.as_mut() {
                        s.flush().await;
                    }
                    continue;
                }
            };
            match event {
                None => break,
                Some(Ok(ChatEvent::Delta(text))) => {
                    self.engine.activity().progress();
                    generation.ttft.get_or_insert_with(|| ticket.accepted_at().elapsed());
                    let now = Instant::now();
                    if let Some(previous) = last_delta.replace(now) {
                        gaps.record(now.duration_since(previous).as_secs_f64());
                    }
                    if let Some(s) = sink.as_mut() {
                        let visible = match filter.as_mut() {
                            Some(f) => f.feed(&text),
                            None => text.clone(),
                        };
                        s.push(&visible).await;
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
            s.push(&rest).await;
        }
        Ok(generation)
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
