//! The simulated tokenizer and chat template. Simple, but one function serves `/tokenize`, usage
//! counts, `max_model_len` checks and the prefix cache, so they always agree.
//!
//! # Tokens
//! Text is split left to right into:
//! - special markers (`<|im_start|>`, `<|im_end|>`, `<|endoftext|>`, `<|vision_start|>`,
//!   `<|vision_end|>`, `<|image_pad|>`, `<|video_pad|>`): one token each, with Qwen's ids
//!   (151643..=151656);
//! - words: a maximal run of alphanumeric characters;
//! - punctuation and symbols: one character each;
//! - whitespace: one single space directly before a word or a symbol belongs to that token
//!   (`" world"`, GPT-2 style); any other whitespace run (newlines, double spaces) is a token.
//!
//! Concatenating the pieces gives the text back exactly. A piece's id is FNV-1a-64 of its bytes
//! modulo 151643 (so it never collides with a special id); the vocabulary size is 151936.
//!
//! # Chat template (ChatML, as Qwen uses)
//! Each message renders as `<|im_start|>{role}\n{content}<|im_end|>\n`; with
//! `add_generation_prompt` the prompt ends in `<|im_start|>assistant\n`. With
//! `continue_final_message` the last message is left open (no `<|im_end|>\n`, no generation
//! prompt).

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::RwLock;

/// Vocabulary size of the simulated model (Qwen3's).
pub const VOCAB_SIZE: u32 = 151_936;
/// Ids below this are ordinary pieces; specials sit above.
const ORDINARY_IDS: u64 = 151_643;
/// Most reverse-vocabulary entries `/detokenize` remembers.
const VOCAB_MEMORY_LIMIT: usize = 1 << 20;

/// Special markers and their ids.
pub const SPECIALS: &[(&str, u32)] = &[
    ("<|endoftext|>", 151_643),
    ("<|im_start|>", 151_644),
    ("<|im_end|>", 151_645),
    ("<|vision_start|>", 151_652),
    ("<|vision_end|>", 151_653),
    ("<|image_pad|>", 151_655),
    ("<|video_pad|>", 151_656),
];

/// FNV-1a, 64 bit: stable across runs, builds and platforms.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The id of one piece.
pub fn token_id(piece: &str) -> u32 {
    if piece.starts_with("<|")
        && let Some(&(_, id)) = SPECIALS.iter().find(|(s, _)| *s == piece)
    {
        return id;
    }
    // The modulus is below u32::MAX, so the cast is lossless.
    (fnv1a(piece.as_bytes()) % ORDINARY_IDS) as u32
}

/// The pieces of `text`, in order; they concatenate back to `text`.
pub fn pieces(text: &str) -> Pieces<'_> {
    Pieces { text, pos: 0 }
}

/// Token ids of `text`, appended to `out`.
pub fn tokenize_into(text: &str, out: &mut Vec<u32>) {
    out.extend(pieces(text).map(token_id));
}

/// Token ids of `text`.
pub fn tokenize(text: &str) -> Vec<u32> {
    let mut out = Vec::with_capacity(text.len() / 4 + 1);
    tokenize_into(text, &mut out);
    out
}

/// Iterator over the pieces of a text; see the module doc for the rules.
#[derive(Debug, Clone)]
pub struct Pieces<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> Iterator for Pieces<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let rest = &self.text[self.pos..];
        let first = rest.chars().next()?;
        let len = if let Some(special) = special_at(rest) {
            special.len()
        } else if first.is_whitespace() {
            whitespace_piece_len(rest)
        } else if first.is_alphanumeric() {
            word_len(rest)
        } else {
            first.len_utf8()
        };
        let piece = &rest[..len];
        self.pos += len;
        Some(piece)
    }
}

fn special_at(rest: &str) -> Option<&'static str> {
    if !rest.starts_with("<|") {
        return None;
    }
    SPECIALS.iter().map(|(s, _)| *s).find(|s| rest.starts_with(s))
}

fn word_len(rest: &str) -> usize {
    rest.char_indices()
        .find(|(_, c)| !c.is_alphanumeric())
        .map_or(rest.len(), |(i, _)| i)
}

fn whitespace_piece_len(rest: &str) -> usize {
    let run = rest
        .char_indices()
        .find(|(_, c)| !c.is_whitespace())
        .map_or(rest.len(), |(i, _)| i);
    let after = &rest[run..];
    if after.is_empty() || !rest[..run].ends_with(' ') || special_at(after).is_some() {
        return run;
    }
    if run > 1 {
        // Leave the final space to prefix the next word.
        return run - 1;
    }
    // A single space: it joins the following word or symbol.
    let next = after.chars().next().map_or(0, char::len_utf8);
    let next_len = if after.starts_with(|c: char| c.is_alphanumeric()) {
        word_len(after)
    } else {
        next
    };
    1 + next_len
}

/// How a chat is turned into a prompt.
#[derive(Debug, Clone, Copy)]
pub struct TemplateOptions {
    pub add_generation_prompt: bool,
    pub continue_final_message: bool,
}

/// Render `(role, content)` pairs with the ChatML template.
pub fn render_chat(messages: &[(&str, Cow<'_, str>)], opts: TemplateOptions) -> String {
    let size: usize = messages.iter().map(|(r, c)| r.len() + c.len() + 24).sum();
    let mut out = String::with_capacity(size + 24);
    for (i, (role, content)) in messages.iter().enumerate() {
        out.push_str("<|im_start|>");
        out.push_str(role);
        out.push('\n');
        out.push_str(content);
        let open = opts.continue_final_message && i + 1 == messages.len();
        if !open {
            out.push_str("<|im_end|>\n");
        }
    }
    if opts.add_generation_prompt && !opts.continue_final_message {
        out.push_str("<|im_start|>assistant\n");
    }
    out
}

/// What `/detokenize` can turn back into text: the specials, the reply vocabulary and every piece
/// `/tokenize` has seen (up to a bound). Ids are hashes, so there is no other way back.
#[derive(Debug, Default)]
pub struct Vocab {
    known: RwLock<HashMap<u32, Box<str>>>,
}

impl Vocab {
    /// A vocabulary that knows the specials and the given pieces.
    pub fn with_pieces<'a>(seed: impl IntoIterator<Item = &'a str>) -> Self {
        let vocab = Self::default();
        vocab.remember(SPECIALS.iter().map(|(s, _)| *s).chain(seed));
        vocab
    }

    /// Remember the pieces (first writer of an id wins).
    pub fn remember<'a>(&self, pieces: impl IntoIterator<Item = &'a str>) {
        let Ok(mut known) = self.known.write() else {
            return;
        };
        for piece in pieces {
            if known.len() >= VOCAB_MEMORY_LIMIT {
                break;
            }
            known.entry(token_id(piece)).or_insert_with(|| piece.into());
        }
    }

    /// The text of `ids`; an id never seen renders as `<|unk_ID|>`.
    pub fn decode(&self, ids: &[u32]) -> String {
        let Ok(known) = self.known.read() else {
            return String::new();
        };
        let mut out = String::new();
        for id in ids {
            match known.get(id) {
                Some(piece) => out.push_str(piece),
                None => out.push_str(&format!("<|unk_{id}|>")),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(text: &str) -> Vec<&str> {
        pieces(text).collect()
    }

    #[test]
    fn words_punctuation_and_spaces() {
        assert_eq!(split("Hello world"), ["Hello", " world"]);
        assert_eq!(split("Hi, you!"), ["Hi", ",", " you", "!"]);
        assert_eq!(split("a  b\n\nc"), ["a", " ", " b", "\n\n", "c"]);
        assert_eq!(split(" x"), [" x"]);
        assert_eq!(split("end "), ["end", " "]);
        assert_eq!(split("héllo wörld"), ["héllo", " wörld"]);
    }

    #[test]
    fn pieces_concatenate_back() {
        let text = "  The <|im_start|>user\nquick, brown  fox?\t\n  jumps ";
        assert_eq!(split(text).concat(), text);
    }

    #[test]
    fn specials_are_single_tokens_with_qwen_ids() {
        let ids = tokenize("<|im_start|>user\nHi<|im_end|>\n");
        assert_eq!(ids.len(), 6);
        assert_eq!(ids[0], 151_644);
        assert_eq!(ids[4], 151_645);
        assert!(ids.iter().all(|&id| id < VOCAB_SIZE));
    }

    #[test]
    fn ids_are_stable() {
        assert_eq!(tokenize("Hello world"), tokenize("Hello world"));
        assert_ne!(token_id("Hello"), token_id(" Hello"));
    }

    #[test]
    fn template_and_counts_agree() {
        let msgs = [("system", Cow::Borrowed("Be brief.")), ("user", Cow::Borrowed("Hi"))];
        let opts = TemplateOptions {
            add_generation_prompt: true,
            continue_final_message: false,
        };
        let text = render_chat(&msgs, opts);
        assert_eq!(
            text,
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
        // system: 3 + "Be"," brief","." + 2; user: 3 + 1 + 2; generation prompt: 3.
        assert_eq!(tokenize(&text).len(), 8 + 6 + 3);
        let open = render_chat(
            &msgs,
            TemplateOptions {
                add_generation_prompt: true,
                continue_final_message: true,
            },
        );
        assert!(open.ends_with("<|im_start|>user\nHi"));
    }

    #[test]
    fn vocab_round_trips_remembered_pieces() {
        let vocab = Vocab::with_pieces([]);
        let text = "Hello world<|im_end|>";
        vocab.remember(pieces(text));
        assert_eq!(vocab.decode(&tokenize(text)), text);
        assert_eq!(vocab.decode(&[7]), "<|unk_7|>");
    }
}
