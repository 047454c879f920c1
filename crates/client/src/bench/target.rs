//! Where a conversation's requests go: mqtt-llm over MQTT (the server keeps the history), or an engine reached
//! directly (a [`DirectEngine`]: the bench keeps the history, as the server would).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::stats::{Record, RecordOutcome};
use crate::{Client, ClientError, Outcome, RequestSpec, Session};

/// Who said a message of a direct conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirectRole {
    System,
    User,
    Assistant,
}

/// One message of a direct conversation's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectMessage {
    pub role: DirectRole,
    pub content: String,
}

impl DirectMessage {
    fn user(content: &str) -> Self {
        Self {
            role: DirectRole::User,
            content: content.to_owned(),
        }
    }
}

/// The whole answer of a direct request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DirectReply {
    /// The answer as mqtt-llm would publish it (thinking removed, trimmed).
    pub text: String,
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    pub cached_tokens: Option<u32>,
}

/// The future of one direct completion: the reply, or the error code the engine's failure maps to.
pub type DirectFuture<'a> = Pin<Box<dyn Future<Output = Result<DirectReply, &'static str>> + Send + 'a>>;

/// An engine the bench asks without mqtt-llm in between (`--direct`, `--compare`): the service implements it with
/// its own OpenAI-compatible client, so that both paths send the same request.
pub trait DirectEngine: fmt::Debug + Send + Sync {
    /// Stream one completion of `messages`, calling `on_delta` as each piece of text arrives.
    fn complete<'a>(
        &'a self,
        messages: Vec<DirectMessage>,
        params: &'a TurnParams,
        on_delta: &'a mut (dyn FnMut() + Send),
    ) -> DirectFuture<'a>;
}

/// The knobs every request of a conversation shares.
#[derive(Debug, Clone)]
pub struct TurnParams {
    pub stream: bool,
    pub max_tokens: Option<u32>,
    pub temperature: Option<f32>,
    pub system_prompt: Option<String>,
    pub timeout: Duration,
}

#[derive(Debug, Clone)]
pub enum Target {
    Mqtt(Client),
    Direct(Arc<dyn DirectEngine>),
}

/// One conversation in progress.
#[derive(Debug)]
pub enum Conversation {
    Mqtt(Session),
    Direct {
        engine: Arc<dyn DirectEngine>,
        history: Vec<DirectMessage>,
    },
}

impl Target {
    pub async fn open(&self, project: &str, session: &str, params: &TurnParams) -> Result<Conversation, ClientError> {
        match self {
            Self::Mqtt(client) => client.open_session(project, session).await.map(Conversation::Mqtt),
            Self::Direct(engine) => {
                let history = params
                    .system_prompt
                    .iter()
                    .map(|s| DirectMessage {
                        role: DirectRole::System,
                        content: s.clone(),
                    })
                    .collect();
                Ok(Conversation::Direct {
                    engine: engine.clone(),
                    history,
                })
            }
        }
    }
}

impl Conversation {
    pub async fn turn(&mut self, turn: u32, message: &str, params: &TurnParams) -> Record {
        match self {
            Self::Mqtt(session) => mqtt_turn(session, turn, message, params).await,
            Self::Direct { engine, history } => direct_turn(engine.as_ref(), history, turn, message, params).await,
        }
    }

    pub fn close(&self) {
        if let Self::Mqtt(session) = self {
            session.close();
        }
    }
}

/// One request of an MQTT session, followed to its reply or timeout.
pub async fn mqtt_turn(session: &Session, turn: u32, message: &str, params: &TurnParams) -> Record {
    let spec = RequestSpec {
        message: message.to_owned(),
        stream: params.stream,
        temperature: params.temperature,
        max_tokens: params.max_tokens,
        system_prompt: params.system_prompt.clone(),
    };
    let ex = match session.request(&spec, params.timeout, |_| {}).await {
        Ok(ex) => ex,
        Err(e) => return Record::failed(turn, RecordOutcome::Error(format!("client: {e}"))),
    };
    let outcome = match &ex.outcome {
        Outcome::Ok => RecordOutcome::Ok,
        Outcome::Error { code, .. } => RecordOutcome::Error(code.clone()),
        Outcome::Timeout => RecordOutcome::Timeout,
    };
    let usage = ex.usage();
    Record {
        turn,
        outcome,
        // Without streaming the first token is the whole reply.
        ttft: ex.ttft.or(if params.stream { None } else { ex.e2e }),
        e2e: ex.e2e,
        itl: ex.inter_token_gaps(),
        completion_tokens: usage.map_or(0, |u| u.completion_tokens),
        prompt_tokens: usage.map_or(0, |u| u.prompt_tokens),
        cached_tokens: usage.map(|u| u.cached_tokens),
        message_bytes: byte_len(message),
        reply_bytes: ex.reply.as_deref().map_or(0, byte_len),
        violations: ex.violations.len(),
    }
}

async fn direct_turn(
    engine: &dyn DirectEngine,
    history: &mut Vec<DirectMessage>,
    turn: u32,
    message: &str,
    params: &TurnParams,
) -> Record {
    let mut messages = history.clone();
    messages.push(DirectMessage::user(message));
    let start = Instant::now();
    let mut deltas = Vec::new();
    let mut on_delta = || deltas.push(start.elapsed());
    let result = tokio::time::timeout(params.timeout, engine.complete(messages, params, &mut on_delta)).await;
    match result {
        Err(_) => Record::failed(turn, RecordOutcome::Timeout),
        Ok(Err(code)) => Record::failed(turn, RecordOutcome::Error(code.to_owned())),
        Ok(Ok(reply)) => {
            let e2e = start.elapsed();
            if reply.text.is_empty() {
                return Record::failed(turn, RecordOutcome::Error("empty_reply".into()));
            }
            let reply_bytes = byte_len(&reply.text);
            history.push(DirectMessage::user(message));
            history.push(DirectMessage {
                role: DirectRole::Assistant,
                content: reply.text,
            });
            Record {
                turn,
                outcome: RecordOutcome::Ok,
                ttft: deltas.first().copied(),
                e2e: Some(e2e),
                itl: deltas.windows(2).map(|w| w[1].saturating_sub(w[0])).collect(),
                completion_tokens: reply.completion_tokens,
                prompt_tokens: reply.prompt_tokens,
                cached_tokens: reply.cached_tokens,
                message_bytes: byte_len(message),
                reply_bytes,
                violations: 0,
            }
        }
    }
}

fn byte_len(text: &str) -> u32 {
    u32::try_from(text.len()).unwrap_or(u32::MAX)
}
