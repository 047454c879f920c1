//! [`Publisher`]: the one owner of every way a reply leaves the service. Final replies and error texts, stream
//! frames, and the non-blocking refusal the event-loop task sends when the intake has no room all go through it;
//! a failed publish is logged and counted here, once.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;
use tokio::sync::watch;

use super::client::{MqttClient, Outgoing};
use crate::metrics;
use mqtt_llm_protocol::wire::ReplyTarget;

const TEXT: &str = "text/plain";
const JSON: &str = "application/json";

/// Publishes waiting for the broker (queued or in flight) from which on a delta frame is not queued: its text
/// waits for the next frame instead. Half the client's request queue, so that a broker that is behind or away
/// fills the queue with final replies (and done frames), never with previews, and no worker waits on a frame.
pub(super) const FRAME_BACKLOG: usize = 2048;

/// The number of QoS 1 publishes handed to the client and not yet acknowledged by the broker (PUBACK): those
/// still in the client's request queue plus those in flight, and final replies held across a broken connection.
/// The [`Publisher`] counts one up before it queues a publish (and down again if the client refuses it); the
/// event-loop actor counts down on each PUBACK and, after a connection error, by the frames (and replies beyond
/// the bound) that it drops. Watched by
/// [`MqttHandle::shutdown`](super::eventloop::MqttHandle::shutdown) so that it disconnects only once the count
/// is 0.
#[derive(Debug, Clone)]
pub(super) struct Unacked(Arc<watch::Sender<usize>>);

impl Unacked {
    pub(super) fn new() -> Self {
        Self(Arc::new(watch::Sender::new(0)))
    }

    pub(super) fn subscribe(&self) -> watch::Receiver<usize> {
        self.0.subscribe()
    }

    fn queued(&self) {
        self.0.send_modify(|n| *n += 1);
    }

    fn count(&self) -> usize {
        *self.0.borrow()
    }

    /// `count` publishes were acknowledged, refused by the client or dropped with a session.
    pub(super) fn settled(&self, count: usize) {
        if count > 0 {
            self.0.send_modify(|n| *n = n.saturating_sub(count));
        }
    }
}

/// Cloneable; built together with the MQTT actor by [`spawn_mqtt`](super::eventloop::spawn_mqtt).
#[derive(Debug, Clone)]
pub struct Publisher {
    client: MqttClient,
    unacked: Unacked,
}

impl Publisher {
    pub(super) fn new(client: MqttClient, unacked: Unacked) -> Self {
        Self { client, unacked }
    }

    pub(super) fn unacked(&self) -> &Unacked {
        &self.unacked
    }

    /// Publish a final reply (or `Error: ...`) text. Waits only while the client's queue is full; never call it
    /// from the event-loop task. Returns whether the publish was queued.
    pub async fn reply(&self, target: &ReplyTarget, text: String) -> bool {
        self.send(target, Bytes::from(text), TEXT, None).await
    }

    /// Publish a refusal's reply text, as [`Self::reply`]; under MQTT 5 with the user property `retryAfterMs` when
    /// `retry_after` is given (the text stays the one the original's clients test for).
    pub async fn refusal(&self, target: &ReplyTarget, text: String, retry_after: Option<Duration>) -> bool {
        self.send(target, Bytes::from(text), TEXT, retry_after.map(millis))
            .await
    }

    /// Publish the JSON reply to a state message (a hint or `{"error": ...}`), as [`Self::refusal`] but with
    /// Content Type `application/json` under MQTT 5.
    pub async fn json_reply(&self, target: &ReplyTarget, json: String, retry_after: Option<Duration>) -> bool {
        self.send(target, Bytes::from(json), JSON, retry_after.map(millis))
            .await
    }

    /// Publish one delta frame as JSON unless [`FRAME_BACKLOG`] publishes already wait for the broker (or the
    /// client's queue is full): never waits. Returns whether the frame was queued; when not, the caller keeps
    /// its text for a later frame.
    pub fn try_frame(&self, target: &ReplyTarget, frame: &impl Serialize) -> bool {
        if self.backlogged() {
            return false;
        }
        let json = match serde_json::to_vec(frame) {
            Ok(json) => json,
            Err(e) => {
                tracing::error!(error = %e, "cannot encode a stream frame");
                return false;
            }
        };
        let msg = Outgoing {
            topic: target.topic.clone(),
            payload: Bytes::from(json),
            correlation_data: target.correlation_data.clone(),
            content_type: JSON,
            retry_after_ms: None,
            retain: false,
        };
        self.unacked.queued();
        match self.client.try_publish(msg) {
            Ok(()) => true,
            Err(e) => {
                self.unacked.settled(1);
                tracing::debug!(error = %e, "stream frame deferred: the MQTT client's queue is full");
                false
            }
        }
    }

    /// Whether so many publishes wait for the broker that delta frames are deferred ([`Self::try_frame`]).
    pub fn backlogged(&self) -> bool {
        self.unacked.count() >= FRAME_BACKLOG
    }

    /// Publish one stream frame as JSON; waits only while the client's queue is full (done and error frames,
    /// and the last text before them). Returns whether the publish was queued.
    pub async fn frame(&self, target: &ReplyTarget, frame: &impl Serialize) -> bool {
        match serde_json::to_vec(frame) {
            Ok(json) => self.send(target, Bytes::from(json), JSON, None).await,
            Err(e) => {
                tracing::error!(error = %e, "cannot encode a stream frame");
                false
            }
        }
    }

    /// Publish a control notice (`{"hint": ...}` or `{"error": ...}`) as JSON on `topic`; waits only while the
    /// client's queue is full. Returns whether the publish was queued.
    pub async fn notice(&self, topic: String, notice: &impl Serialize) -> bool {
        let target = ReplyTarget {
            topic,
            correlation_data: None,
        };
        self.frame(&target, notice).await
    }

    /// Publish a reply text without waiting (fails when the client's queue is full): the only way the
    /// event-loop task may publish. Returns whether the publish was queued.
    pub fn try_reply(&self, target: ReplyTarget, text: &str, retry_after: Option<Duration>) -> bool {
        let msg = Outgoing {
            topic: target.topic,
            payload: Bytes::copy_from_slice(text.as_bytes()),
            correlation_data: target.correlation_data,
            content_type: TEXT,
            retry_after_ms: retry_after.map(millis),
            retain: false,
        };
        self.unacked.queued();
        self.counted(self.client.try_publish(msg))
    }

    async fn send(
        &self,
        target: &ReplyTarget,
        payload: Bytes,
        content_type: &'static str,
        retry_after_ms: Option<u64>,
    ) -> bool {
        let msg = Outgoing {
            topic: target.topic.clone(),
            payload,
            correlation_data: target.correlation_data.clone(),
            content_type,
            retry_after_ms,
            retain: false,
        };
        // Counted before it is queued, so that its PUBACK can never come before the count.
        self.unacked.queued();
        self.counted(self.client.publish(msg).await)
    }

    /// Publish a retained status message (JSON) without waiting: from the event-loop task (once subscribed) and
    /// at shutdown. Counted as unacknowledged like every QoS 1 publish. Returns whether it was queued.
    pub(super) fn try_status(&self, topic: &str, payload: Bytes) -> bool {
        self.try_json(topic, payload, true)
    }

    /// Publish a retained JSON message (the capacity topic) without waiting, as [`Self::try_status`].
    pub fn try_retained(&self, topic: &str, payload: Bytes) -> bool {
        self.try_json(topic, payload, true)
    }

    /// Publish a JSON notice that is not retained (the legacy status) without waiting, as [`Self::try_status`].
    pub(super) fn try_notice(&self, topic: &str, payload: Bytes) -> bool {
        self.try_json(topic, payload, false)
    }

    fn try_json(&self, topic: &str, payload: Bytes, retain: bool) -> bool {
        let msg = Outgoing {
            topic: topic.to_owned(),
            payload,
            correlation_data: None,
            content_type: JSON,
            retry_after_ms: None,
            retain,
        };
        self.unacked.queued();
        self.counted(self.client.try_publish(msg))
    }

    fn counted(&self, result: Result<(), super::client::MqttError>) -> bool {
        match result {
            Ok(()) => true,
            Err(e) => {
                self.unacked.settled(1);
                metrics::mqtt_publish_error();
                tracing::error!(error = %e, "publish failed");
                false
            }
        }
    }
}

/// Whole milliseconds, saturating.
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
