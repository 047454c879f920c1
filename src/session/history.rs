//! A conversation's turns and the pure token-budget trimming over them.

use std::collections::VecDeque;

/// One completed exchange. Only successful replies become turns; error texts never do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Turn {
    pub user: String,
    pub assistant: String,
    /// What this turn adds to the prompt, in engine tokens (from the engine's usage counts).
    pub tokens: u32,
}

/// The turns of one session and the engine's last count of the whole context.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct History {
    pub turns: VecDeque<Turn>,
    /// Tokens of system prompt + turns as the engine last counted them (prompt + completion of the last turn).
    pub context_tokens: u32,
}

/// What the history keeps of each image of a user turn, instead of its bytes.
pub const IMAGE_PLACEHOLDER: &str = "[image]";

/// The user turn as the history stores it: one [`IMAGE_PLACEHOLDER`] per image, then the text. The engine sees an
/// image only in its own turn (0 turns back): later turns see the placeholder, which says that a picture was shown
/// without re-sending (and re-encoding, at hundreds of tokens each) its bytes on every later request, and keeps the
/// stored prefix of the conversation identical from turn to turn, so vLLM's prefix cache still hits.
pub fn user_turn_text(text: &str, images: usize) -> String {
    let mut stored: Vec<&str> = vec![IMAGE_PLACEHOLDER; images];
    if !text.is_empty() {
        stored.push(text);
    }
    stored.join(" ")
}

/// Rough token estimate for text the engine has not counted (about 4 bytes a token).
pub fn estimate_tokens(text: &str) -> u32 {
    u32::try_from(text.len().div_ceil(4)).unwrap_or(u32::MAX)
}

impl History {
    /// Record a successful turn. `context_tokens` is the engine's prompt + completion count for this request,
    /// i.e. the size of the whole conversation including the new turn; without usage, estimate it.
    pub fn push(&mut self, user: String, assistant: String, context_tokens: Option<u32>) {
        let context = context_tokens
            .unwrap_or_else(|| self.context_tokens + estimate_tokens(&user) + estimate_tokens(&assistant));
        let tokens = context.saturating_sub(self.context_tokens).max(1);
        self.turns.push_back(Turn {
            user,
            assistant,
            tokens,
        });
        self.context_tokens = context;
    }

    /// Drop whole oldest turns until the context fits `budget` tokens. The system prompt is never dropped, and
    /// the newest turn is always kept (the conversation must make sense to the next request). Returns how many
    /// turns were dropped.
    pub fn trim_to(&mut self, budget: u32) -> usize {
        let mut dropped = 0;
        while self.context_tokens > budget && self.turns.len() > 1 {
            if let Some(turn) = self.turns.pop_front() {
                self.context_tokens = self.context_tokens.saturating_sub(turn.tokens);
                dropped += 1;
            }
        }
        dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn history(counts: &[u32]) -> History {
        let mut h = History::default();
        for (i, c) in counts.iter().enumerate() {
            h.push(format!("u{i}"), format!("a{i}"), Some(*c));
        }
        h
    }

    #[test]
    fn an_image_turn_is_stored_as_placeholders_and_text() {
        assert_eq!(user_turn_text("what is this?", 1), "[image] what is this?");
        assert_eq!(user_turn_text("", 2), "[image] [image]");
        assert_eq!(user_turn_text("plain", 0), "plain");
    }

    #[test]
    fn turn_tokens_are_usage_deltas() {
        let h = history(&[100, 160, 230]);
        let tokens: Vec<u32> = h.turns.iter().map(|t| t.tokens).collect();
        assert_eq!(tokens, [100, 60, 70]);
        assert_eq!(h.context_tokens, 230);
    }

    #[test]
    fn trims_whole_oldest_turns_within_budget() {
        let mut h = history(&[100, 160, 230, 300]);
        assert_eq!(h.trim_to(1000), 0);
        assert_eq!(h.trim_to(150), 2);
        assert_eq!(h.turns.front().map(|t| t.user.as_str()), Some("u2"));
        assert_eq!(h.context_tokens, 140);
    }

    #[test]
    fn keeps_the_newest_turn_even_over_budget() {
        let mut h = history(&[100, 5000]);
        assert_eq!(h.trim_to(10), 1);
        assert_eq!(h.turns.len(), 1);
        assert_eq!(h.turns[0].user, "u1");
    }

    #[test]
    fn estimates_without_usage() {
        let mut h = History::default();
        h.push("abcd".repeat(10), "xy".into(), None);
        assert_eq!(h.context_tokens, 11);
    }
}
