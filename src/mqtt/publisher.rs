//! [`Publisher`]: the one owner of every way a reply leaves the service. Final replies and error texts, stream
//! frames, and the non-blocking refusal the event-loop task sends when the intake has no room all go through it;
//! a failed publish is logged and counted here, once.

use bytes::Bytes;
use serde::Serialize;

use super::client::{MqttClient, Outgoing};
use crate::metrics;
use mqtt_llm_protocol::wire::ReplyTarget;

const TEXT: &str = "text/plain";
const JSON: &str = "application/json";

/// Cloneable; built together with the MQTT actor by [`spawn_mqtt`](super::eventloop::spawn_mqtt).
#[derive(Debug, Clone)]
pub struct Publisher {
    client: MqttClient,
}

impl Publisher {
    pub(super) fn new(client: MqttClient) -> Self {
        Self { client }
    }

    /// Publish a final reply (or `Error: ...`) text. Waits only while the client's queue is full; never call it
    /// from the event-loop task. Returns whether the publish was queued.
    pub async fn reply(&self, target: &ReplyTarget, text: String) -> bool {
        self.send(target, Bytes::from(text), TEXT).await
    }

    /// Publish one stream frame as JSON. Returns whether the publish was queued.
    pub async fn frame(&self, target: &ReplyTarget, frame: &impl Serialize) -> bool {
        match serde_json::to_vec(frame) {
            Ok(json) => self.send(target, Bytes::from(json), JSON).await,
            Err(e) => {
                tracing::error!(error = %e, "cannot encode a stream frame");
                false
            }
        }
    }

    /// Publish a reply text without waiting (fails when the client's queue is full): the only way the
    /// event-loop task may publish. Returns whether the publish was queued.
    pub fn try_reply(&self, target: ReplyTarget, text: &str) -> bool {
        let msg = Outgoing {
            topic: target.topic,
            payload: Bytes::copy_from_slice(text.as_bytes()),
            correlation_data: target.correlation_data,
            content_type: TEXT,
        };
        counted(self.client.try_publish(msg))
    }

    async fn send(&self, target: &ReplyTarget, payload: Bytes, content_type: &'static str) -> bool {
        let msg = Outgoing {
            topic: target.topic.clone(),
            payload,
            correlation_data: target.correlation_data.clone(),
            content_type,
        };
        counted(self.client.publish(msg).await)
    }
}

fn counted(result: Result<(), super::client::MqttError>) -> bool {
    match result {
        Ok(()) => true,
        Err(e) => {
            metrics::mqtt_publish_error();
            tracing::error!(error = %e, "publish failed");
            false
        }
    }
}
