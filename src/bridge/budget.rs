//! The token budget of one request, and the engine facts it rests on.
//!
//! A request's prompt (system prompt + kept turns + new message) may hold
//! `min(--max-history-tokens, max_model_len − max_tokens − CONTEXT_MARGIN)` tokens, with `max_model_len` read from
//! the engine's `GET /v1/models` once per engine incarnation (and refreshed by what `/tokenize` says). When the
//! estimate of a prompt comes near that budget, the engine counts it exactly with `POST /tokenize` in messages
//! form (the chat template applied), and the prompt is trimmed further if the count says so: a prompt that cannot
//! fit even with no turns gets an `Error:` reply from mqtt-llm, never the engine's 400.

use std::sync::{Mutex, PoisonError};

use crate::llm::LlmClient;

/// Tokens kept free between the prompt plus `max_tokens` and the model's context (the template's end-of-turn
/// markers, and an estimate's slack).
pub const CONTEXT_MARGIN: u32 = 16;

/// An estimate at or above this share of the budget is counted by the engine's `/tokenize`.
pub const TOKENIZE_ABOVE: f64 = 0.85;

/// How many times a prompt is counted and trimmed further before mqtt-llm gives up and lets the engine decide.
pub const MAX_RECOUNTS: usize = 3;

/// Whether the engine counts chat prompts (`POST /tokenize` with `messages`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Tokenizer {
    #[default]
    Unknown,
    Works,
    /// No such endpoint, or no count in its answer (llama.cpp): estimates only, the engine has the last word.
    Unsupported,
}

/// What is known of the current engine incarnation.
#[derive(Debug, Clone, Copy, Default)]
struct Known {
    incarnation: u64,
    /// Whether `/v1/models` was asked in this incarnation.
    asked: bool,
    max_model_len: Option<u32>,
    tokenizer: Tokenizer,
}

/// The engine's context window and tokenizer support, per engine incarnation (a restart may serve another
/// `--max-model-len`). Shared by every lane worker.
#[derive(Debug, Default)]
pub struct ContextWindow {
    known: Mutex<Known>,
}

impl ContextWindow {
    fn known(&self, incarnation: u64) -> std::sync::MutexGuard<'_, Known> {
        let mut known = self.known.lock().unwrap_or_else(PoisonError::into_inner);
        if known.incarnation != incarnation {
            *known = Known {
                incarnation,
                ..Known::default()
            };
        }
        known
    }

    /// The model's context length, asked of `/v1/models` once per incarnation (`None`: the engine does not say).
    pub async fn max_model_len(&self, llm: &LlmClient, incarnation: u64) -> Option<u32> {
        {
            let known = self.known(incarnation);
            if known.asked {
                return known.max_model_len;
            }
        }
        let found = match llm.models().await {
            Ok(models) => models
                .iter()
                .find(|m| m.id == llm.model())
                .or(models.first())
                .and_then(|m| m.max_model_len),
            Err(e) => {
                tracing::debug!(error = %e, "GET /v1/models failed: the context length stays unknown for now");
                return None;
            }
        };
        let mut known = self.known(incarnation);
        known.asked = true;
        known.max_model_len = found;
        found
    }

    pub fn tokenizer(&self, incarnation: u64) -> Tokenizer {
        self.known(incarnation).tokenizer
    }

    /// Record what a `/tokenize` call showed: whether it counts, and the `max_model_len` it reported.
    pub fn tokenized(&self, incarnation: u64, tokenizer: Tokenizer, max_model_len: Option<u32>) {
        let mut known = self.known(incarnation);
        known.tokenizer = tokenizer;
        if let Some(len) = max_model_len {
            known.asked = true;
            known.max_model_len = Some(len);
        }
    }
}

/// Why a request's prompt cannot be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NoRoom {
    /// `max_tokens` alone (with the margin) fills the model's context.
    #[error(
        "maxTokens {max_tokens} leaves no room for a prompt in this model's context of {max_model_len} tokens; ask for fewer tokens"
    )]
    MaxTokens { max_tokens: u32, max_model_len: u32 },
    /// The system prompt and the new message alone exceed the budget.
    #[error("{}", too_long(*prompt_tokens, *budget, *max_model_len, *max_tokens))]
    Message {
        prompt_tokens: u32,
        budget: u32,
        max_model_len: Option<u32>,
        max_tokens: u32,
    },
}

fn too_long(prompt: u32, budget: u32, max_model_len: Option<u32>, max_tokens: u32) -> String {
    let limit = match max_model_len {
        Some(len) if len.saturating_sub(max_tokens).saturating_sub(CONTEXT_MARGIN) <= budget => format!(
            "this model takes at most {budget} (its context of {len} tokens minus maxTokens {max_tokens} and a margin of {CONTEXT_MARGIN})"
        ),
        _ => format!("the limit is {budget} (--max-history-tokens)"),
    };
    format!(
        "message too long: the system prompt and this message come to {prompt} tokens and {limit}; send a shorter message"
    )
}

/// The prompt budget of a request asking for `max_tokens`: `min(max_history_tokens, max_model_len − reserved −
/// CONTEXT_MARGIN)`, where the reply's reservation is `max_tokens` but at most half the context (vLLM clamps a
/// `max_tokens` that does not fit after the prompt, so a large one on a small model need not starve the prompt).
/// A `max_tokens` that fills the context alone is refused, as vLLM refuses one above `max_model_len`.
pub fn budget(max_history_tokens: u32, max_model_len: Option<u32>, max_tokens: u32) -> Result<u32, NoRoom> {
    match max_model_len {
        None => Ok(max_history_tokens),
        Some(len) => {
            if max_tokens.saturating_add(CONTEXT_MARGIN) >= len {
                return Err(NoRoom::MaxTokens {
                    max_tokens,
                    max_model_len: len,
                });
            }
            let reserved = max_tokens.min(len / 2);
            let room = len.saturating_sub(reserved).saturating_sub(CONTEXT_MARGIN).max(1);
            Ok(max_history_tokens.min(room))
        }
    }
}

/// The `max_tokens` a request sends: its own, else the default lowered to half the model's context (a default
/// above the context would be refused by the engine; a request's own is checked by [`budget`]).
pub fn max_tokens(requested: Option<u32>, default: u32, max_model_len: Option<u32>) -> u32 {
    match (requested, max_model_len) {
        (Some(own), _) => own,
        (None, Some(len)) => default.min(len / 2).max(1),
        (None, None) => default,
    }
}

/// Whether a prompt estimated at `estimate` tokens should be counted by the engine before it is sent.
pub fn worth_counting(estimate: u32, budget: u32) -> bool {
    f64::from(estimate) >= f64::from(budget) * TOKENIZE_ABOVE
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_is_the_smaller_of_the_flag_and_the_models_room() {
        assert_eq!(budget(3000, None, 256), Ok(3000));
        assert_eq!(budget(3000, Some(40960), 256), Ok(3000));
        assert_eq!(budget(3000, Some(2048), 256), Ok(2048 - 256 - CONTEXT_MARGIN));
        // A large max_tokens reserves at most half the context.
        assert_eq!(budget(3000, Some(1000), 900), Ok(500 - CONTEXT_MARGIN));
        assert_eq!(
            budget(3000, Some(300), 290),
            Err(NoRoom::MaxTokens {
                max_tokens: 290,
                max_model_len: 300
            })
        );
    }

    #[test]
    fn the_too_long_message_names_the_limit_that_applied() {
        let by_model = NoRoom::Message {
            prompt_tokens: 2100,
            budget: 1776,
            max_model_len: Some(2048),
            max_tokens: 256,
        };
        let text = by_model.to_string();
        assert!(
            text.contains("2100 tokens") && text.contains("context of 2048"),
            "{text}"
        );
        let by_flag = NoRoom::Message {
            prompt_tokens: 900,
            budget: 800,
            max_model_len: Some(40960),
            max_tokens: 256,
        };
        assert!(by_flag.to_string().contains("--max-history-tokens"), "{by_flag}");
    }

    #[test]
    fn a_default_max_tokens_is_lowered_to_half_a_small_context() {
        assert_eq!(max_tokens(None, 512, Some(400)), 200);
        assert_eq!(max_tokens(None, 512, Some(40960)), 512);
        assert_eq!(max_tokens(None, 512, None), 512);
        assert_eq!(
            max_tokens(Some(390), 512, Some(400)),
            390,
            "a request's own is checked, not changed"
        );
    }

    #[test]
    fn only_prompts_near_the_budget_are_counted() {
        assert!(!worth_counting(100, 1000));
        assert!(worth_counting(850, 1000));
        assert!(worth_counting(5000, 1000));
    }
}
