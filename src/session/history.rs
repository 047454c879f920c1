//! A conversation's turns, their engine token counts, the cached JSON of its unchanged prefix, and the pure
//! trimming rule ([`turns_to_drop`]) both policies share.
//!
//! **Token counts.** Each turn carries what it adds to the prompt, as the engine counted it: for a turn `n` sent
//! after an unchanged history, `prompt_tokens + completion_tokens` of request `n` minus the same sum of the context
//! it was built on. The system prompt's share (with the chat template's framing) is the residual
//! ([`History::system_tokens`]), so `system + Σ turns` always equals the engine's last count of the conversation.
//!
//! **Trimming.** Whole oldest turns go, never the system prompt, never part of a turn; what is kept is a suffix of
//! the turns, in order. `stable` drops down to a low-water mark in one step, so the next turns share one unchanged
//! prefix and hit the engine's prefix cache; `sliding` drops just enough, which changes the prompt's start on
//! every turn once the window is full (a full prefill each time).
//!
//! **Cheap turns.** Turn texts are shared `Arc<str>` (a prompt never clones them), and the JSON of the stored turns
//! is kept while the conversation is active, so a request serializes only its new message.

use std::collections::VecDeque;
use std::num::NonZeroU32;
use std::sync::Arc;

use serde::Serialize;

/// One completed exchange. Only successful replies become turns; error texts never do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Turn {
    pub user: Arc<str>,
    pub assistant: Arc<str>,
    /// What this turn adds to the prompt, in engine tokens.
    pub tokens: u32,
}

impl Turn {
    /// Bytes of text this turn holds.
    pub fn text_bytes(&self) -> usize {
        self.user.len() + self.assistant.len()
    }
}

/// How a history over its budget is trimmed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TrimPolicy {
    /// Drop whole oldest turns down to the low-water mark in one step (prefix-cache friendly).
    #[default]
    Stable,
    /// Drop whole oldest turns until the prompt just fits (a sliding window: a full prefill on every turn once full).
    Sliding,
}

impl TrimPolicy {
    /// The `policy` label of the trim metrics.
    pub fn label(self) -> &'static str {
        match self {
            Self::Stable => "stable",
            Self::Sliding => "sliding",
        }
    }
}

/// The trimming rule's settings (`--trim-policy`, `--trim-low-water`, `--max-history-turns`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrimSettings {
    pub policy: TrimPolicy,
    /// `stable`: after a trim, the prompt holds at most this share of the budget (and of `max_turns`). In (0, 1).
    pub low_water: f32,
    /// Most turns kept; `None`: no limit but the tokens.
    pub max_turns: Option<NonZeroU32>,
}

impl Default for TrimSettings {
    fn default() -> Self {
        Self {
            policy: TrimPolicy::Stable,
            low_water: 0.6,
            max_turns: None,
        }
    }
}

/// How many of the oldest turns to drop so that a prompt of `fixed` tokens (system prompt), the kept turns and
/// `incoming` tokens (the new message; 0 after a commit) fits `budget`, and the turns fit `max_turns`.
///
/// `turn_tokens` lists the turns' counts, oldest first. Nothing is dropped while everything fits. Once it does not,
/// `sliding` drops the fewest oldest turns that make it fit; `stable` drops down to `low_water` of the budget and of
/// `max_turns`. All turns may go (the caller checks whether `fixed + incoming` alone fits).
pub fn turns_to_drop(
    fixed: u32,
    turn_tokens: impl IntoIterator<Item = u32>,
    incoming: u32,
    budget: u32,
    settings: &TrimSettings,
) -> usize {
    let counts: Vec<u32> = turn_tokens.into_iter().collect();
    let total = |kept: &[u32]| -> u64 {
        u64::from(fixed) + u64::from(incoming) + kept.iter().map(|&t| u64::from(t)).sum::<u64>()
    };
    let max_turns = settings.max_turns.map_or(usize::MAX, |n| n.get() as usize);
    if total(&counts) <= u64::from(budget) && counts.len() <= max_turns {
        return 0;
    }
    let (token_target, turn_target) = match settings.policy {
        TrimPolicy::Sliding => (u64::from(budget), max_turns),
        TrimPolicy::Stable => {
            let low = f64::from(settings.low_water.clamp(0.0, 1.0));
            let turns = if max_turns == usize::MAX {
                usize::MAX
            } else {
                (max_turns as f64 * low).floor() as usize
            };
            ((f64::from(budget) * low).floor() as u64, turns)
        }
    };
    let mut remaining = total(&counts);
    let mut dropped = 0;
    while dropped < counts.len() && (remaining > token_target || counts.len() - dropped > turn_target) {
        remaining -= u64::from(counts[dropped]);
        dropped += 1;
    }
    dropped
}

/// Rough token estimate for text the engine has not counted (about 4 bytes a token).
pub fn estimate_tokens(text: &str) -> u32 {
    u32::try_from(text.len().div_ceil(4)).unwrap_or(u32::MAX)
}

/// The chat template's framing of one message (role markers, separators), in tokens, for estimates.
pub const MESSAGE_FRAMING_TOKENS: u32 = 4;

/// Estimated tokens of one message with `text`.
pub fn estimate_message(text: &str) -> u32 {
    estimate_tokens(text).saturating_add(MESSAGE_FRAMING_TOKENS)
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

/// The engine's counts for a completed request, when it reported them (not for a turn with images: its count
/// includes the images' tokens, which later prompts do not carry).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counted {
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
}

/// The turns of one session and their token accounting.
#[derive(Debug, Clone, Default)]
pub struct History {
    pub turns: VecDeque<Turn>,
    /// The system prompt the counts below were taken with, and its share of the engine's count (template framing
    /// included). `None` until a request's usage was seen, or after the prompt changed.
    system: Option<(Arc<str>, u32)>,
    /// Σ `turns[i].tokens`.
    turn_tokens: u32,
    /// Σ `turns[i].text_bytes()`.
    text_bytes: usize,
    /// The JSON of the turns (`,{"role":"user",...},{"role":"assistant",...}` each), while the conversation is
    /// active; rebuilt from the turns when missing.
    json: Option<String>,
}

impl PartialEq for History {
    fn eq(&self, other: &Self) -> bool {
        self.turns == other.turns && self.system == other.system && self.turn_tokens == other.turn_tokens
    }
}

impl History {
    /// A history restored from the store: `context_tokens` is the engine's last count of system + turns.
    pub fn restored(system: Option<Arc<str>>, turns: Vec<Turn>, context_tokens: u32) -> Self {
        let turn_tokens = turns.iter().map(|t| t.tokens).fold(0u32, u32::saturating_add);
        let text_bytes = turns.iter().map(Turn::text_bytes).sum();
        let system = system
            .filter(|_| context_tokens >= turn_tokens && context_tokens > 0)
            .map(|s| (s, context_tokens - turn_tokens));
        Self {
            turns: turns.into(),
            system,
            turn_tokens,
            text_bytes,
            json: None,
        }
    }

    /// Tokens of the system prompt + turns as last counted (estimated where the engine has not counted).
    pub fn context_tokens(&self) -> u32 {
        self.system
            .as_ref()
            .map_or(0, |(_, t)| *t)
            .saturating_add(self.turn_tokens)
    }

    /// Σ of the turns' tokens (without the system prompt's).
    pub fn turn_tokens(&self) -> u32 {
        self.turn_tokens
    }

    /// Bytes of turn text held.
    pub fn text_bytes(&self) -> usize {
        self.text_bytes
    }

    /// Bytes held beyond the turn text: the cached JSON, while there is one.
    pub fn cache_bytes(&self) -> usize {
        self.json.as_ref().map_or(0, String::capacity)
    }

    /// Tokens of `system` as the engine counted it with these turns, else an estimate.
    pub fn system_tokens(&self, system: &str) -> u32 {
        match &self.system {
            Some((text, tokens)) if **text == *system => *tokens,
            _ if system.is_empty() => 0,
            _ => estimate_message(system),
        }
    }

    /// Drop the cached JSON (an idle conversation keeps only its text).
    pub fn release_cache(&mut self) {
        self.json = None;
    }

    /// Drop the `n` oldest turns. Returns how many went.
    pub fn drop_oldest(&mut self, n: usize) -> usize {
        let n = n.min(self.turns.len());
        if n == 0 {
            return 0;
        }
        let mut cut = 0;
        for turn in self.turns.drain(..n) {
            self.turn_tokens = self.turn_tokens.saturating_sub(turn.tokens);
            self.text_bytes -= turn.text_bytes();
            cut += turn_json_len(&turn);
        }
        if let Some(json) = &mut self.json {
            json.drain(..cut.min(json.len()));
        }
        n
    }

    /// How many oldest turns a prompt with `system` and `incoming` new tokens leaves out to fit `budget`.
    pub fn plan_trim(&self, system: &str, incoming: u32, budget: u32, settings: &TrimSettings) -> usize {
        let fixed = self.system_tokens(system);
        turns_to_drop(fixed, self.turns.iter().map(|t| t.tokens), incoming, budget, settings)
    }

    /// Trim for a prompt with `system` and `incoming` new tokens under `budget`. Returns the turns dropped.
    pub fn trim(&mut self, system: &str, incoming: u32, budget: u32, settings: &TrimSettings) -> usize {
        let n = self.plan_trim(system, incoming, budget, settings);
        self.drop_oldest(n)
    }

    /// Σ tokens of the turns from `skip` on.
    pub fn tokens_after(&self, skip: usize) -> u32 {
        self.turns
            .iter()
            .skip(skip)
            .map(|t| t.tokens)
            .fold(0, u32::saturating_add)
    }

    /// [`Self::trim`] after a commit: the same rule with no incoming message, but the newest turn stays (the next
    /// prompt decides, with its own message, whether it fits).
    pub fn trim_after_commit(&mut self, system: &str, budget: u32, settings: &TrimSettings) -> usize {
        let fixed = self.system_tokens(system);
        let n = turns_to_drop(fixed, self.turns.iter().map(|t| t.tokens), 0, budget, settings);
        self.drop_oldest(n.min(self.turns.len().saturating_sub(1)))
    }

    /// Record a successful turn sent with `system` on the current turns. With the engine's `counted` usage the
    /// turn's tokens are exact when the system prompt's share was already known, and the system's share becomes
    /// the residual otherwise; without usage both are estimated.
    pub fn push(&mut self, system: &Arc<str>, user: Arc<str>, assistant: Arc<str>, counted: Option<Counted>) {
        let estimate = estimate_message(&user).saturating_add(estimate_message(&assistant));
        let known_system = match &self.system {
            Some((text, tokens)) if **text == **system => Some(*tokens),
            _ => None,
        };
        let tokens = match (counted, known_system) {
            (Some(c), Some(sys)) => {
                let context = c.prompt_tokens.saturating_add(c.completion_tokens);
                context.saturating_sub(sys.saturating_add(self.turn_tokens)).max(1)
            }
            (Some(c), None) => {
                // The new user message's share is estimated, the reply's is counted; the rest is the system's.
                let context = c.prompt_tokens.saturating_add(c.completion_tokens);
                let turn = estimate_message(&user)
                    .saturating_add(c.completion_tokens)
                    .min(context.saturating_sub(self.turn_tokens))
                    .max(1);
                let residual = context.saturating_sub(self.turn_tokens.saturating_add(turn));
                self.system = Some((Arc::clone(system), residual));
                turn
            }
            (None, _) => estimate.max(1),
        };
        if counted.is_none() && known_system.is_none() && !system.is_empty() {
            self.system = Some((Arc::clone(system), estimate_message(system)));
        }
        let turn = Turn {
            user,
            assistant,
            tokens,
        };
        if let Some(json) = &mut self.json {
            append_turn_json(json, &turn);
        }
        self.turn_tokens = self.turn_tokens.saturating_add(tokens);
        self.text_bytes += turn.text_bytes();
        self.turns.push_back(turn);
        if self.turns.len() == 1 {
            // A first push allocates room for 4 turns; most sessions of an IoT fleet never have a second.
            self.turns.shrink_to_fit();
        }
    }

    /// The JSON of the stored turns from `skip` on (each preceded by a comma).
    pub fn turns_json_after(&mut self, skip: usize) -> &str {
        // A conversation's first request builds no cache: a one-shot session (most IoT requests) never holds one.
        if self.turns.is_empty() {
            return "";
        }
        let cut: usize = self.turns.iter().take(skip).map(turn_json_len).sum();
        let json = self.turns_json();
        &json[cut.min(json.len())..]
    }

    /// The JSON of the stored turns (each preceded by a comma), built once and then kept up to date.
    pub fn turns_json(&mut self) -> &str {
        let turns = &self.turns;
        self.json.get_or_insert_with(|| {
            let mut json = String::with_capacity(turns.iter().map(|t| t.text_bytes() + 64).sum());
            for turn in turns {
                append_turn_json(&mut json, turn);
            }
            json
        })
    }
}

/// `,{"role":"user","content":...},{"role":"assistant","content":...}`.
fn append_turn_json(out: &mut String, turn: &Turn) {
    out.push_str(r#",{"role":"user","content":"#);
    push_json_string(out, &turn.user);
    out.push_str(r#"},{"role":"assistant","content":"#);
    push_json_string(out, &turn.assistant);
    out.push('}');
}

/// Length of [`append_turn_json`]'s output for `turn`.
fn turn_json_len(turn: &Turn) -> usize {
    let mut s = String::new();
    append_turn_json(&mut s, turn);
    s.len()
}

/// `text` as a JSON string literal.
pub fn push_json_string(out: &mut String, text: &str) {
    // serde_json's escaping, written straight into `out`.
    let quoted = serde_json::to_string(text).unwrap_or_else(|_| "\"\"".to_owned());
    out.push_str(&quoted);
}

#[cfg(test)]
#[path = "history_tests.rs"]
mod tests;
