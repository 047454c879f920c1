//! Where a conversation's requests go: mqtt-llm over MQTT (the server keeps the history), or an
//! OpenAI-compatible endpoint over HTTP SSE (the bench keeps the history, as the server would).

use std::time::{Duration, Instant};

use futures_util::StreamExt;

use super::stats::{Record, RecordOutcome};
use crate::client::{Client, Outcome, RequestSpec, Session};
use crate::llm::{ChatEvent, ChatMessage, ChatRequest, LlmClient, Role, clean_reply};

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
    Direct(LlmClient),
}

/// One conversation in progress.
#[derive(Debug)]
pub enum Conversation {
    Mqtt(Session),
    Direct { llm: LlmClient, history: Vec<ChatMessage> },
}

impl Target {
    pub async fn open(&self, project: &str, session: &str, params: &TurnParams) -> Result<Conversation, String> {
        match self {
            Self::Mqtt(client) => client
                .open_session(project, session)
                .await
                .map(Conversation::Mqtt)
                .map_err(|e| e.to_string()),
            Self::Direct(llm) => {
                let history = params
                    .system_prompt
                    .iter()
                    .map(|s| ChatMessage {
                        role: Role::System,
                        content: s.clone(),
                    })
                    .collect();
                Ok(Conversation::Direct {
                    llm: llm.clone(),
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
            Self::Direct { llm, history } => direct_turn(llm, history, turn, message, params).await,
        }
    }

    pub fn close(&self) {
        if let Self::Mqtt(session) = self {
            session.close();
        }
    }
}

fn failed(turn: u32, outcome: RecordOutcome) -> Record {
    Record {
        turn,
        outcome,
        ttft: None,
        e2e: None,
        itl: Vec::new(),
        completion_tokens: 0,
        prompt_tokens: 0,
        cached_tokens: None,
        violations: 0,
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
        Err(e) => return failed(turn, RecordOutcome::Error(format!("client: {e}"))),
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
        violations: ex.violations.len(),
    }
}

async fn direct_turn(
    llm: &LlmClient,
    history: &mut Vec<ChatMessage>,
    turn: u32,
    message: &str,
    params: &TurnParams,
) -> Record {
    let mut messages = history.clone();
    messages.push(ChatMessage {
        role: Role::User,
        content: message.to_owned(),
    });
    let req = ChatRequest {
        messages,
        temperature: params.temperature,
        max_tokens: params.max_tokens,
        // What mqtt-llm asks with --skip-thinking (its default).
        chat_template_kwargs: Some(serde_json::json!({"enable_thinking": false})),
        ..Default::default()
    };
    let start = Instant::now();
    let result = tokio::time::timeout(params.timeout, async {
        let mut stream = llm.chat_stream(&req).await?;
        let mut text = String::new();
        let mut deltas = Vec::new();
        let mut usage = None;
        while let Some(event) = stream.next().await {
            match event? {
                ChatEvent::Delta(d) => {
                    deltas.push(start.elapsed());
                    text.push_str(&d);
                }
                ChatEvent::Finished { .. } => {}
                ChatEvent::Usage(u) => usage = Some(u),
            }
        }
        Ok::<_, crate::llm::LlmError>((text, deltas, usage))
    })
    .await;
    match result {
        Err(_) => failed(turn, RecordOutcome::Timeout),
        Ok(Err(e)) => failed(turn, RecordOutcome::Error(e.code().to_owned())),
        Ok(Ok((text, deltas, usage))) => {
            let e2e = start.elapsed();
            let reply = clean_reply(&text);
            if reply.is_empty() {
                return failed(turn, RecordOutcome::Error("empty_reply".into()));
            }
            history.push(ChatMessage {
                role: Role::User,
                content: message.to_owned(),
            });
            history.push(ChatMessage {
                role: Role::Assistant,
                content: reply,
            });
            Record {
                turn,
                outcome: RecordOutcome::Ok,
                ttft: deltas.first().copied(),
                e2e: Some(e2e),
                itl: deltas.windows(2).map(|w| w[1].saturating_sub(w[0])).collect(),
                completion_tokens: usage.map_or(0, |u| u.completion_tokens),
                prompt_tokens: usage.map_or(0, |u| u.prompt_tokens),
                cached_tokens: usage.and_then(|u| u.cached_tokens),
                violations: 0,
            }
        }
    }
}
