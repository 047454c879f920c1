//! Byte scanners that run before, or instead of, `serde_json` on a request payload: whether the sender meant JSON,
//! how deep it nests, and the routing fields of a top-level object that cannot be parsed whole.
//!
//! All three are linear, never recurse and allocate nothing but the few values they return. They respect JSON
//! strings and their escapes, so a `[` or a `"` inside a string is text, not structure.

use serde_json::{Map, Value};

/// The members of a request that say where its error reply goes ([`routing_fields`]).
const ROUTING_FIELDS: [&str; 3] = ["sessionId", "replyTopic", "requestId"];

/// JSON's insignificant whitespace (RFC 8259 §2), the same set `serde_json` skips.
fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

/// True when the first non-whitespace byte is `{` or `[`: the sender meant JSON, so the payload is never taken as
/// plain text, whether or not it parses.
pub(crate) fn looks_like_json_container(payload: &[u8]) -> bool {
    matches!(payload.iter().find(|b| !is_ws(**b)), Some(b'{' | b'['))
}

/// True when some `{` or `[` opens a level deeper than `max` (the outermost container is level 1). Brackets inside
/// strings do not count; a stray closer only lowers the count to 0 (the parser refuses such a payload anyway).
///
/// Up to the first byte `serde_json` refuses, it sees the same strings and the same nesting as this scan, so after
/// a `false` here the parser never nests deeper than `max` either: the nesting limit is this one, not serde_json's
/// internal recursion limit (128).
pub(crate) fn nests_deeper_than(payload: &[u8], max: usize) -> bool {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &b in payload {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// `sessionId`, `replyTopic` and `requestId` of a payload that is not parsed whole (too large, nested too deep,
/// invalid JSON, not UTF-8), read from its top-level object member by member: keys and scalar values are decoded by
/// `serde_json`, nested values are skipped by bracket matching and kept as an empty array (these fields refuse
/// arrays and objects alike, whatever is inside). A later duplicate wins, as in a full parse.
///
/// The scan stops at the end of the object, at the end of the payload, or at the first member it cannot read (a
/// syntax error, a truncated value, a string that is not UTF-8); what was read before that is kept. A payload whose
/// top level is not an object gives nothing.
pub(crate) fn routing_fields(payload: &[u8]) -> Map<String, Value> {
    let mut fields = Map::new();
    let mut cursor = Cursor { bytes: payload, pos: 0 };
    if cursor.eat(b'{') {
        // `None` only means the scan stopped early; the members read so far are in `fields`.
        let _ = cursor.members(&mut fields);
    }
    fields
}

struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn skip_ws(&mut self) {
        while self.bytes.get(self.pos).copied().is_some_and(is_ws) {
            self.pos += 1;
        }
    }

    /// The next non-whitespace byte, not consumed.
    fn peek(&mut self) -> Option<u8> {
        self.skip_ws();
        self.bytes.get(self.pos).copied()
    }

    /// Consume `b` if it is the next non-whitespace byte.
    fn eat(&mut self, b: u8) -> bool {
        let found = self.peek() == Some(b);
        if found {
            self.pos += 1;
        }
        found
    }

    /// Read the members after the object's `{` into `out` (routing fields only). `None`: stopped early.
    fn members(&mut self, out: &mut Map<String, Value>) -> Option<()> {
        if self.eat(b'}') {
            return Some(());
        }
        loop {
            if self.peek()? != b'"' {
                return None;
            }
            let key = self.string()?;
            let wanted = routing_field(key)?;
            if !self.eat(b':') {
                return None;
            }
            let value = match self.peek()? {
                b'"' => {
                    let raw = self.string()?;
                    match wanted {
                        Some(_) => serde_json::from_slice(raw).ok()?,
                        None => Value::Null,
                    }
                }
                b'{' | b'[' => {
                    self.skip_container()?;
                    Value::Array(Vec::new())
                }
                _ => {
                    let raw = self.scalar()?;
                    serde_json::from_slice(raw).ok()?
                }
            };
            if let Some(name) = wanted {
                out.insert(name.to_owned(), value);
            }
            if !self.eat(b',') {
                return Some(());
            }
        }
    }

    /// The raw string token at `pos` (which holds `"`), quotes included; `None` when it does not end.
    fn string(&mut self) -> Option<&'a [u8]> {
        let start = self.pos;
        let mut i = start + 1;
        let mut escaped = false;
        while let Some(&b) = self.bytes.get(i) {
            i += 1;
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                self.pos = i;
                return self.bytes.get(start..i);
            }
        }
        None
    }

    /// The raw token of a number, `true`, `false` or `null` at `pos`: up to the next delimiter. `None` when the
    /// payload ends first (the token may be cut short, `12` of `123`).
    fn scalar(&mut self) -> Option<&'a [u8]> {
        let start = self.pos;
        let len = self
            .bytes
            .get(start..)?
            .iter()
            .position(|&b| is_ws(b) || matches!(b, b',' | b'}' | b']'))?;
        self.pos = start + len;
        self.bytes.get(start..self.pos)
    }

    /// Skip the container at `pos` (which holds `{` or `[`) by bracket matching; `None` when it does not close.
    fn skip_container(&mut self) -> Option<()> {
        let mut depth = 0usize;
        while let Some(&b) = self.bytes.get(self.pos) {
            match b {
                b'"' => {
                    self.string()?;
                    continue;
                }
                b'{' | b'[' => depth += 1,
                b'}' | b']' => {
                    depth -= 1;
                    if depth == 0 {
                        self.pos += 1;
                        return Some(());
                    }
                }
                _ => {}
            }
            self.pos += 1;
        }
        None
    }
}

/// Which routing field a raw key token names: `Some(Some(name))` for one of [`ROUTING_FIELDS`], `Some(None)` for
/// any other key, `None` when the key is not a valid JSON string. Keys without escapes are compared as bytes, so
/// the common case allocates nothing.
fn routing_field(raw: &[u8]) -> Option<Option<&'static str>> {
    let decoded;
    let key: &[u8] = if raw.contains(&b'\\') {
        decoded = serde_json::from_slice::<String>(raw).ok()?;
        decoded.as_bytes()
    } else {
        raw.get(1..raw.len().saturating_sub(1))?
    };
    Some(ROUTING_FIELDS.iter().copied().find(|name| name.as_bytes() == key))
}
