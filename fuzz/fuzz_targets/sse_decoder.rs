//! The engine's SSE decoder (`mqtt_llm::llm::ChatStream`) on an arbitrary body, fed in different chunkings: whole,
//! one byte per chunk, and pseudo-random chunk sizes derived from the body. Never panics, always ends; and for a
//! UTF-8 body the decoded events, the end of the stream and the kind of error do not depend on where the body was
//! split.
//!
//! Input: the response body itself (seeds are SSE streams in vLLM's framing).
#![no_main]

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use futures_util::Stream;
use futures_util::stream;
use libfuzzer_sys::fuzz_target;
use mqtt_llm::llm::{ChatEvent, ChatStream, LlmError};

/// One stream item, errors reduced to what does not depend on the chunking.
#[derive(Debug, PartialEq)]
enum Item {
    Event(ChatEvent),
    /// An undecodable `data:` payload, kept as received.
    Decode(String),
    InStream(String),
    Disconnected,
    Other(String),
}

fn item(result: Result<ChatEvent, LlmError>) -> Item {
    match result {
        Ok(event) => Item::Event(event),
        Err(LlmError::Decode { raw, .. }) => Item::Decode(raw),
        Err(LlmError::InStream(api)) => Item::InStream(api.message),
        Err(LlmError::Disconnected) => Item::Disconnected,
        Err(other) => Item::Other(other.to_string()),
    }
}

/// Decode the body delivered as `chunks`. The body stream is in memory, so every poll is ready.
fn decode(chunks: Vec<Vec<u8>>) -> Vec<Item> {
    let body = stream::iter(chunks.into_iter().map(Ok::<_, Infallible>));
    let mut events = ChatStream::from_byte_stream(body);
    let mut cx = Context::from_waker(Waker::noop());
    let mut items = Vec::new();
    loop {
        match Pin::new(&mut events).poll_next(&mut cx) {
            Poll::Ready(Some(result)) => items.push(item(result)),
            Poll::Ready(None) => break,
            Poll::Pending => panic!("an in-memory body never pends"),
        }
    }
    // Ended means ended: polling again yields nothing.
    assert!(matches!(Pin::new(&mut events).poll_next(&mut cx), Poll::Ready(None)));
    items
}

/// Chunks of 1 to 16 bytes, sizes from a xorshift generator seeded by the body, so a given input always splits
/// the same way.
fn pseudo_random_chunks(data: &[u8]) -> Vec<Vec<u8>> {
    let mut state = data.iter().fold(0x9e37_79b9_7f4a_7c15_u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    }) | 1;
    let mut chunks = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let size = usize::try_from(state % 16).unwrap_or(0) + 1;
        let (chunk, tail) = rest.split_at(size.min(rest.len()));
        chunks.push(chunk.to_vec());
        rest = tail;
    }
    chunks
}

fuzz_target!(|data: &[u8]| {
    let whole = decode(vec![data.to_vec()]);
    let bytewise = decode(data.iter().map(|&b| vec![b]).collect());
    let random = decode(pseudo_random_chunks(data));
    // Every error is terminal: at most one, and nothing after it.
    for items in [&whole, &bytewise, &random] {
        if let Some(first_error) = items.iter().position(|i| !matches!(i, Item::Event(_))) {
            assert_eq!(first_error, items.len() - 1, "items after an error: {items:?}");
        }
    }
    // Invalid UTF-8 is reported for the chunk it is found in, so what comes before the error depends on the
    // chunking; an SSE body is UTF-8 by definition, so only UTF-8 bodies must decode alike.
    if std::str::from_utf8(data).is_ok() {
        assert_eq!(whole, bytewise, "one chunk vs one byte per chunk");
        assert_eq!(whole, random, "one chunk vs pseudo-random chunks");
    }
});
