//! Hiding `<think>...</think>` reasoning from replies: [`ThinkFilter`] while streaming, [`clean_reply`] on the
//! whole reply. Only these two exact lowercase tags are special; all other text (including other tags such as
//! `<EOS>` or `<PlayerOp:x>`) passes through byte for byte.

const OPEN: &str = "<think>";
const CLOSE: &str = "</think>";

/// Incremental filter that removes <think>...</think> blocks from streamed text, tags possibly split across deltas.
///
/// Text that might be the start of a tag (`<`, `<th`, ...) at the end of a delta is held back until the next
/// delta shows whether it is one; [`ThinkFilter::finish`] releases it at the end of the stream.
#[derive(Debug, Default)]
pub struct ThinkFilter {
    /// Inside a `<think>` block: text is dropped until `</think>`.
    inside: bool,
    /// The tail of the last delta that is a proper prefix of the tag being looked for.
    held: String,
}

impl ThinkFilter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feed one delta; returns its visible part (may be empty).
    pub fn feed(&mut self, delta: &str) -> String {
        let joined;
        let mut rest = if self.held.is_empty() {
            delta
        } else {
            self.held.push_str(delta);
            joined = std::mem::take(&mut self.held);
            joined.as_str()
        };
        let mut visible = String::new();
        loop {
            let tag = if self.inside { CLOSE } else { OPEN };
            if let Some(at) = rest.find(tag) {
                if !self.inside {
                    visible.push_str(&rest[..at]);
                }
                rest = &rest[at + tag.len()..];
                self.inside = !self.inside;
                continue;
            }
            // Tags are ASCII, so the held suffix starts on a char boundary.
            let keep = partial_tag_len(rest, tag);
            let (shown, held) = rest.split_at(rest.len() - keep);
            if !self.inside {
                visible.push_str(shown);
            }
            self.held.push_str(held);
            return visible;
        }
    }

    /// End of stream: flush held-back partial tag text that turned out not to be a tag. The text of an unclosed
    /// `<think>` block stays hidden. The filter is then ready for a new stream.
    pub fn finish(&mut self) -> String {
        let held = std::mem::take(&mut self.held);
        let inside = std::mem::take(&mut self.inside);
        if inside { String::new() } else { held }
    }
}

/// Length of the longest suffix of `text` that is a proper prefix of `tag`.
fn partial_tag_len(text: &str, tag: &str) -> usize {
    (1..tag.len()).rev().find(|&n| text.ends_with(&tag[..n])).unwrap_or(0)
}

/// Final cleaning of a whole reply when skip-thinking is on: remove every complete <think>...</think> block; if a `</think>`
/// remains with no opening tag (templates that open `<think>` themselves), drop everything up to and including the last one;
/// if an unclosed `<think>` remains, drop it and everything after. Then trim. Everything else (tags like `<EOS>`,
/// <PlayerOp:x>, JSON) passes through untouched.
pub fn clean_reply(raw: &str) -> String {
    if !raw.contains(OPEN) && !raw.contains(CLOSE) {
        return raw.trim().to_owned();
    }
    let mut kept = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(open) = rest.find(OPEN) {
        kept.push_str(&rest[..open]);
        let body = &rest[open + OPEN.len()..];
        match body.find(CLOSE) {
            Some(close) => rest = &body[close + CLOSE.len()..],
            None => {
                rest = "";
                break;
            }
        }
    }
    kept.push_str(rest);
    let visible = match kept.rfind(CLOSE) {
        Some(close) => &kept[close + CLOSE.len()..],
        None => kept.as_str(),
    };
    visible.trim().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed_all(parts: &[&str]) -> String {
        let mut filter = ThinkFilter::new();
        let mut out = String::new();
        for part in parts {
            out.push_str(&filter.feed(part));
        }
        out.push_str(&filter.finish());
        out
    }

    /// Every way to cut `text` in two, plus one char per delta.
    fn assert_filters_to(text: &str, expected: &str) {
        let cuts = text.char_indices().map(|(i, _)| i).chain([text.len()]);
        for cut in cuts {
            let (a, b) = text.split_at(cut);
            assert_eq!(feed_all(&[a, b]), expected, "cut at {cut} of {text:?}");
        }
        let chars: Vec<String> = text.chars().map(String::from).collect();
        let parts: Vec<&str> = chars.iter().map(String::as_str).collect();
        assert_eq!(feed_all(&parts), expected, "char by char: {text:?}");
    }

    #[test]
    fn filter_removes_blocks_with_tags_split_anywhere() {
        assert_filters_to("<think>\nhmm\n</think>\n\nHello", "\n\nHello");
        assert_filters_to("a<think>x</think>b<think>y</think>c", "abc");
        assert_filters_to("<think></think>", "");
        assert_filters_to("no tags at all, é 世界 🎉", "no tags at all, é 世界 🎉");
    }

    #[test]
    fn filter_keeps_outside_text_byte_exact() {
        let text = "  <EOS> <Cont><PlayerOp:x><AgentOP:y> {\"a\": [1, \"<b>\"]} <thin <think/> </think> < <t";
        assert_filters_to(text, text);
        assert_filters_to("x <thinking> y", "x <thinking> y");
        assert_filters_to("pre <think>secret <b> </thin </think>post<", "pre post<");
    }

    #[test]
    fn filter_holds_partial_tags_until_resolved() {
        let mut filter = ThinkFilter::new();
        assert_eq!(filter.feed("Hi <th"), "Hi ");
        assert_eq!(filter.feed("ere"), "<there");
        assert_eq!(filter.feed(" <"), " ");
        assert_eq!(filter.feed("think>secret</thi"), "");
        assert_eq!(filter.feed("nk>ok"), "ok");
        assert_eq!(filter.feed("<thi"), "");
        assert_eq!(filter.finish(), "<thi");
    }

    #[test]
    fn filter_hides_unclosed_block_and_resets_on_finish() {
        let mut filter = ThinkFilter::new();
        assert_eq!(filter.feed("a<think>never closed</th"), "a");
        assert_eq!(filter.finish(), "");
        assert_eq!(filter.feed("fresh"), "fresh");
        assert_eq!(filter.finish(), "");
    }

    #[test]
    fn clean_reply_table() {
        let cases = [
            ("Hello", "Hello"),
            ("  Hello \n", "Hello"),
            ("<think>\nreasoning\n</think>\n\nHello", "Hello"),
            ("<think></think>Hi", "Hi"),
            ("a <think>x</think> b <think>y</think> c", "a  b  c"),
            ("reasoning without opening tag</think>\nAnswer", "Answer"),
            ("one</think>two</think> three", "three"),
            ("x</think>y<think>z</think>w", "yw"),
            ("Answer<think>unclosed trailing", "Answer"),
            ("<think>only thinking", ""),
            ("<think><think>a</think></think>b", "b"),
            ("<Cont><PlayerOp:x><AgentOP:y>", "<Cont><PlayerOp:x><AgentOP:y>"),
            (
                "<think>plan</think><Cont><PlayerOp:x><AgentOP:y>",
                "<Cont><PlayerOp:x><AgentOP:y>",
            ),
            ("<EOS>", "<EOS>"),
            // An unclosed tag cuts even inside JSON: the rule is textual.
            (r#"{"move": "<think>", "n": 1}"#, r#"{"move": ""#),
            (
                r#"{"op":"<PlayerOp:x>","list":[1,2]}"#,
                r#"{"op":"<PlayerOp:x>","list":[1,2]}"#,
            ),
            ("<thinking>kept</thinking>", "<thinking>kept</thinking>"),
            ("<THINK>kept</THINK>", "<THINK>kept</THINK>"),
            ("", ""),
        ];
        for (raw, expected) in cases {
            assert_eq!(clean_reply(raw), expected, "clean_reply({raw:?})");
        }
    }
}
