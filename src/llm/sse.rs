//! [`ChatStream`]: an SSE body (any byte stream) to typed [`ChatEvent`]s.
//!
//! # Theory of operation
//! `eventsource_stream` does the SSE framing (events split across reads, split UTF-8, comments such as
//! `: keep-alive`, CRLF). Each `data:` payload is then one of:
//! - `[DONE]`: the end. The last usage seen is emitted, then `None`.
//! - `{"error":{...}}`: an error after the 200 (vLLM still sends `[DONE]` after it; we stop at the error).
//! - a chunk: non-empty `delta.content` becomes `Delta`, a non-null `finish_reason` becomes `Finished`, and a
//!   `usage` is remembered. Usage is held back until `[DONE]` because vLLM with `--enable-force-include-usage` puts
//!   cumulative usage on every chunk; the last one (the `choices: []` chunk) is the complete one.
//!
//! Every error is terminal: after an `Err` the stream yields `None`. A body that ends, or a transport that breaks,
//! before `[DONE]` is `Err(Disconnected)`, never a silent end.

use std::collections::VecDeque;
use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use eventsource_stream::{Event, EventStreamError, Eventsource};
use futures_util::stream::{self, BoxStream, Stream, TryStreamExt};

use super::error::LlmError;
use super::types::{ChatEvent, Usage, WireChunk};

/// SSE events with the transport error already reduced to its text (it only feeds a log line).
type SseEvents = BoxStream<'static, Result<Event, EventStreamError<String>>>;

/// impl Stream<Item = Result<ChatEvent, LlmError>> + Send + Unpin. Ends (None) right after `data: [DONE]`.
/// A body that ends without `[DONE]` yields `Err(LlmError::Disconnected)` once, then `None`.
/// An in-stream `data: {"error":{...}}` yields Err(LlmError::InStream(ApiError)).
///
/// Dropping it closes the connection, which makes vLLM abort the request.
pub struct ChatStream {
    events: SseEvents,
    /// Events decoded from the current chunk and not yet returned (a chunk can carry text and a finish reason).
    pending: VecDeque<ChatEvent>,
    /// The latest usage seen; emitted once at `[DONE]`.
    usage: Option<Usage>,
    /// Set at `[DONE]` or after an error: once `pending` is drained, only `None` follows.
    done: bool,
}

impl fmt::Debug for ChatStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChatStream")
            .field("pending", &self.pending)
            .field("usage", &self.usage)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl ChatStream {
    /// Decode an SSE body. The HTTP client passes `reqwest::Response::bytes_stream()`; tests and fakes can pass
    /// any byte stream. A transport error `E` ends the stream with `Err(Disconnected)`.
    pub fn from_byte_stream<S, B, E>(body: S) -> Self
    where
        S: Stream<Item = Result<B, E>> + Send + 'static,
        B: AsRef<[u8]> + Send + 'static,
        E: fmt::Display + Send + 'static,
    {
        let events = body.map_err(|e| e.to_string()).eventsource();
        ChatStream {
            events: Box::pin(events),
            pending: VecDeque::with_capacity(2),
            usage: None,
            done: false,
        }
    }

    /// Handle one `data:` payload. `Ok(true)` at `[DONE]`.
    fn on_data(&mut self, data: String) -> Result<bool, LlmError> {
        if data.trim() == "[DONE]" {
            if let Some(usage) = self.usage.take() {
                self.pending.push_back(ChatEvent::Usage(usage));
            }
            return Ok(true);
        }
        let chunk: WireChunk = match serde_json::from_str(&data) {
            Ok(chunk) => chunk,
            Err(source) => return Err(LlmError::Decode { raw: data, source }),
        };
        if let Some(error) = chunk.error {
            return Err(LlmError::InStream(error.into()));
        }
        if let Some(usage) = chunk.usage {
            self.usage = Some(usage.into());
        }
        for choice in chunk.choices.into_iter().flatten() {
            if let Some(text) = choice.delta.and_then(|d| d.content)
                && !text.is_empty()
            {
                self.pending.push_back(ChatEvent::Delta(text));
            }
            if let Some(finish_reason) = choice.finish_reason
                && !finish_reason.is_empty()
            {
                self.pending.push_back(ChatEvent::Finished { finish_reason });
            }
        }
        Ok(false)
    }

    /// Stop reading. One last non-blocking poll lets an already-received end of body be read, so the connection
    /// can go back to the pool; whatever it returns is ignored.
    fn finish(&mut self, cx: &mut Context<'_>) {
        self.done = true;
        let _ = self.events.as_mut().poll_next(cx);
        self.events = Box::pin(stream::empty());
    }

    fn fail(&mut self, err: LlmError) -> Poll<Option<Result<ChatEvent, LlmError>>> {
        self.done = true;
        self.pending.clear();
        self.events = Box::pin(stream::empty());
        Poll::Ready(Some(Err(err)))
    }
}

impl Stream for ChatStream {
    type Item = Result<ChatEvent, LlmError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if let Some(event) = this.pending.pop_front() {
                return Poll::Ready(Some(Ok(event)));
            }
            if this.done {
                return Poll::Ready(None);
            }
            match ready!(this.events.as_mut().poll_next(cx)) {
                Some(Ok(event)) => match this.on_data(event.data) {
                    Ok(true) => this.finish(cx),
                    Ok(false) => {}
                    Err(err) => return this.fail(err),
                },
                Some(Err(EventStreamError::Transport(error))) => {
                    tracing::debug!(%error, "engine stream broke before [DONE]");
                    return this.fail(LlmError::Disconnected);
                }
                Some(Err(EventStreamError::Utf8(err))) => {
                    let source = <serde_json::Error as serde::de::Error>::custom(&err);
                    let raw = String::from_utf8_lossy(err.as_bytes()).into_owned();
                    return this.fail(LlmError::Decode { raw, source });
                }
                Some(Err(EventStreamError::Parser(err))) => {
                    let source = <serde_json::Error as serde::de::Error>::custom(&err);
                    return this.fail(LlmError::Decode { raw: err.input, source });
                }
                None => return this.fail(LlmError::Disconnected),
            }
        }
    }
}
