//! The bench's `--direct` engine: the service's own OpenAI-compatible client behind the client crate's
//! [`DirectEngine`], so that the direct path sends exactly what `mqtt-llm up` would send.

use futures_util::StreamExt;
use mqtt_llm_client::bench::target::{DirectEngine, DirectFuture, DirectMessage, DirectReply, DirectRole, TurnParams};

use mqtt_llm::llm::{ChatEvent, ChatMessage, CompletionRequest, LlmClient, Role, clean_reply};

/// An engine reached over HTTP SSE, without mqtt-llm in between.
#[derive(Debug)]
pub struct DirectLlm(pub LlmClient);

fn role(role: DirectRole) -> Role {
    match role {
        DirectRole::System => Role::System,
        DirectRole::User => Role::User,
        DirectRole::Assistant => Role::Assistant,
    }
}

impl DirectEngine for DirectLlm {
    fn complete<'a>(
        &'a self,
        messages: Vec<DirectMessage>,
        params: &'a TurnParams,
        on_delta: &'a mut (dyn FnMut() + Send),
    ) -> DirectFuture<'a> {
        Box::pin(async move {
            let req = CompletionRequest {
                messages: messages
                    .into_iter()
                    .map(|m| ChatMessage {
                        role: role(m.role),
                        content: m.content.into(),
                    })
                    .collect::<Vec<_>>()
                    .into(),
                temperature: params.temperature,
                max_tokens: params.max_tokens,
                // What mqtt-llm asks with --skip-thinking (its default).
                chat_template_kwargs: Some(serde_json::json!({"enable_thinking": false})),
                ..Default::default()
            };
            let mut stream = self.0.chat_stream(&req).await.map_err(|e| e.code())?;
            let mut text = String::new();
            let mut usage = None;
            while let Some(event) = stream.next().await {
                match event.map_err(|e| e.code())? {
                    ChatEvent::Delta(d) => {
                        on_delta();
                        text.push_str(&d);
                    }
                    ChatEvent::Finished { .. } => {}
                    ChatEvent::Usage(u) => usage = Some(u),
                }
            }
            Ok(DirectReply {
                text: clean_reply(&text),
                prompt_tokens: usage.map_or(0, |u| u.prompt_tokens),
                completion_tokens: usage.map_or(0, |u| u.completion_tokens),
                cached_tokens: usage.and_then(|u| u.cached_tokens),
            })
        })
    }
}
