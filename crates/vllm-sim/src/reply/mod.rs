//! What the simulated model says, decided up front: a [`ReplyPlan`] holds the full reply text and,
//! for every token the engine will emit, how much of the text is visible after it. The engine only
//! counts tokens; the HTTP layer slices the plan.
//!
//! - `lorem`: sentences of words from [`LOREM_WORDS`], chosen by a SplitMix64 generator seeded from
//!   the prompt's token ids and the request's `seed`. `--sim-reply-tokens N` tokens in all: N-1
//!   text tokens and a final EOS token (empty text), so `completion_tokens` is N on a natural stop.
//! - `echo`: one line describing what the engine saw, then EOS:
//!   `messages=<N> roles=<first letter of each role, comma-separated> system=<first 6 words of the
//!   first system message, or none> [images=<N> ]user=<the last user message verbatim, or none>`. `images=` is
//!   there only when the prompt has image parts (N of them, in all messages), and an image part shows as
//!   `<image>` in the user message.
//!
//! Either is cut by `max_tokens` (`finish_reason` `length`) or by a stop string (`stop`, with the
//! string as `stop_reason`; as in vLLM the text that could still become a stop string is held back
//! until it cannot).

use std::borrow::Cow;

use super::tokenizer::pieces;

/// The words of a lorem reply; each is one token (with or without its leading space).
pub const LOREM_WORDS: &[&str] = &[
    "lorem",
    "ipsum",
    "dolor",
    "sit",
    "amet",
    "consectetur",
    "adipiscing",
    "elit",
    "sed",
    "do",
    "eiusmod",
    "tempor",
    "incididunt",
    "ut",
    "labore",
    "et",
    "dolore",
    "magna",
    "aliqua",
    "enim",
    "ad",
    "minim",
    "veniam",
    "quis",
    "nostrud",
    "exercitation",
    "ullamco",
    "laboris",
    "nisi",
    "aliquip",
    "ex",
    "ea",
    "commodo",
    "consequat",
    "duis",
    "aute",
    "irure",
    "in",
    "reprehenderit",
    "voluptate",
    "velit",
    "esse",
    "cillum",
    "fugiat",
    "nulla",
    "pariatur",
    "excepteur",
    "sint",
    "occaecat",
    "cupidatat",
    "non",
    "proident",
    "sunt",
    "culpa",
    "qui",
    "officia",
    "deserunt",
    "mollit",
    "anim",
    "id",
    "est",
    "laborum",
];

/// Why a request ended (the `finished_reason` metric label and, for the first two, the API's
/// `finish_reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FinishReason {
    Stop,
    Length,
    Abort,
    Error,
    Repetition,
}

impl FinishReason {
    pub const ALL: [FinishReason; 5] = [
        FinishReason::Stop,
        FinishReason::Length,
        FinishReason::Abort,
        FinishReason::Error,
        FinishReason::Repetition,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::Abort => "abort",
            FinishReason::Error => "error",
            FinishReason::Repetition => "repetition",
        }
    }
}

/// SplitMix64: tiny, fast and stable forever (unlike `StdRng`, which may change between releases).
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform-ish in `0..n` (n > 0).
    pub fn below(&mut self, n: u32) -> u32 {
        (((self.next_u64() >> 32) * u64::from(n)) >> 32) as u32
    }
}

/// The seed of a reply: the prompt's token ids and the request's `seed`.
pub fn reply_seed(prompt: &[u32], seed: Option<i64>) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &t in prompt {
        h = (h ^ u64::from(t)).wrapping_mul(0x0100_0000_01b3);
    }
    let s = seed.map_or(0x1234_5678, |s| s as u64);
    SplitMix64::new(h ^ s.rotate_left(17)).next_u64()
}

/// The echo line for `(role, content)` messages carrying `images` image parts in all.
pub fn echo_line(messages: &[(&str, Cow<'_, str>)], images: u32) -> String {
    let roles: Vec<String> = messages
        .iter()
        .map(|(role, _)| role.chars().next().map_or_else(|| "?".to_owned(), String::from))
        .collect();
    let system = messages.iter().find(|(role, _)| *role == "system").map_or_else(
        || "none".to_owned(),
        |(_, content)| content.split_whitespace().take(6).collect::<Vec<_>>().join(" "),
    );
    let user = messages
        .iter()
        .rev()
        .find(|(role, _)| *role == "user")
        .map_or("none", |(_, content)| content.as_ref());
    let images = if images > 0 {
        format!("images={images} ")
    } else {
        String::new()
    };
    format!(
        "messages={} roles={} system={system} {images}user={user}",
        messages.len(),
        roles.join(",")
    )
}

/// Everything that decides a reply.
#[derive(Debug, Clone)]
pub struct ReplySpec<'a> {
    /// `Some(line)` in echo mode, `None` for lorem.
    pub echo: Option<&'a str>,
    /// `--sim-reply-tokens` (lorem's natural length, EOS included).
    pub natural_tokens: u32,
    pub seed: u64,
    /// At least 1.
    pub max_tokens: u32,
    pub stop: &'a [String],
    pub include_stop_str_in_output: bool,
    pub ignore_eos: bool,
    pub min_tokens: u32,
}

/// The reply of one request: its text and what each emitted token reveals.
#[derive(Debug, Clone)]
pub struct ReplyPlan {
    text: String,
    /// Visible text end (byte offset) after each token; as many entries as tokens.
    ends: Vec<u32>,
    finish: FinishReason,
    stop_reason: Option<String>,
}

impl ReplyPlan {
    pub fn new(spec: &ReplySpec<'_>) -> Self {
        let mut lorem = Lorem::new(spec.seed);
        let mut echo = spec.echo.map(pieces);
        let content_tokens = match spec.echo {
            Some(line) => pieces(line).count() as u32,
            None => spec.natural_tokens.saturating_sub(1),
        };
        let eos_at = (!spec.ignore_eos).then(|| content_tokens.max(spec.min_tokens.saturating_sub(1)));
        let max_stop = spec.stop.iter().map(String::len).max().unwrap_or(0);
        let holdback = if spec.include_stop_str_in_output {
            0
        } else {
            max_stop.saturating_sub(1)
        };
        let mut text = String::new();
        let mut ends = Vec::with_capacity(spec.max_tokens.min(4096) as usize);
        let mut visible = 0usize;
        for index in 0..spec.max_tokens {
            if eos_at == Some(index) {
                ends.push(text.len() as u32);
                return Self::finished(text, ends, FinishReason::Stop, None);
            }
            let before = text.len();
            match echo.as_mut().and_then(Iterator::next) {
                Some(piece) => text.push_str(piece),
                None => lorem.push_piece(&mut text),
            }
            if let Some((at, stop)) = find_stop(&text, before.saturating_sub(max_stop), spec.stop) {
                let end = if spec.include_stop_str_in_output {
                    at + stop.len()
                } else {
                    at
                };
                text.truncate(end);
                ends.push(end as u32);
                return Self::finished(text, ends, FinishReason::Stop, Some(stop.to_owned()));
            }
            let mut shown = text.len().saturating_sub(holdback).max(visible);
            while !text.is_char_boundary(shown) {
                shown -= 1;
            }
            visible = shown.max(visible);
            ends.push(visible as u32);
        }
        if let Some(last) = ends.last_mut() {
            *last = text.len() as u32;
        }
        Self::finished(text, ends, FinishReason::Length, None)
    }

    fn finished(text: String, ends: Vec<u32>, finish: FinishReason, stop: Option<String>) -> Self {
        Self {
            text,
            ends,
            finish,
            stop_reason: stop,
        }
    }

    /// Tokens the engine generates for this reply.
    pub fn tokens(&self) -> u32 {
        self.ends.len() as u32
    }

    /// Text revealed by token `index` (0-based).
    pub fn delta(&self, index: usize) -> &str {
        let start = if index == 0 { 0 } else { self.ends[index - 1] as usize };
        let end = self.ends.get(index).map_or(start, |&e| e as usize);
        &self.text[start..end.max(start)]
    }

    /// The whole reply text.
    pub fn text(&self) -> &str {
        &self.text
    }

    pub fn finish_reason(&self) -> FinishReason {
        self.finish
    }

    pub fn stop_reason(&self) -> Option<&str> {
        self.stop_reason.as_deref()
    }
}

/// Earliest stop string that ends after `from`.
fn find_stop<'s>(text: &str, from: usize, stops: &'s [String]) -> Option<(usize, &'s str)> {
    let mut from = from;
    while !text.is_char_boundary(from) {
        from -= 1;
    }
    stops
        .iter()
        .filter(|s| !s.is_empty())
        .filter_map(|s| text[from..].find(s.as_str()).map(|at| (from + at, s.as_str())))
        .min_by_key(|(at, _)| *at)
}

/// Lorem sentence generator: one piece per call.
#[derive(Debug)]
struct Lorem {
    rng: SplitMix64,
    /// Words left in the current sentence; 0 means the next piece is a period.
    words_left: u32,
    sentence_start: bool,
    first_piece: bool,
}

impl Lorem {
    fn new(seed: u64) -> Self {
        let mut rng = SplitMix64::new(seed);
        let words_left = 5 + rng.below(9);
        Self {
            rng,
            words_left,
            sentence_start: true,
            first_piece: true,
        }
    }

    fn push_piece(&mut self, out: &mut String) {
        if self.words_left == 0 {
            out.push('.');
            self.words_left = 5 + self.rng.below(9);
            self.sentence_start = true;
            return;
        }
        let word = LOREM_WORDS[self.rng.below(LOREM_WORDS.len() as u32) as usize];
        if !self.first_piece {
            out.push(' ');
        }
        if self.sentence_start {
            let mut chars = word.chars();
            if let Some(c) = chars.next() {
                out.push(c.to_ascii_uppercase());
                out.push_str(chars.as_str());
            }
        } else {
            out.push_str(word);
        }
        self.first_piece = false;
        self.sentence_start = false;
        self.words_left -= 1;
    }
}

#[cfg(test)]
mod tests;
