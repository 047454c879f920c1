//! The raw publishing handle over MQTT 3.1.1 or 5, and the typed errors of the MQTT side. Only the
//! [`Publisher`](super::publisher::Publisher) and the event-loop actor hold one: nothing else publishes.

use bytes::Bytes;
use rumqttc::QoS;

/// A message to publish: QoS 1, never retained.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub topic: String,
    pub payload: Bytes,
    /// MQTT 5 Correlation Data echoed from the request.
    pub correlation_data: Option<Bytes>,
    /// MQTT 5 Content Type (`text/plain` replies, `application/json` frames).
    pub content_type: &'static str,
    /// MQTT 5 user property `retryAfterMs` (overload refusals): when the client should try again.
    pub retry_after_ms: Option<u64>,
    /// Retained (mqtt-llm's status topic only; the legacy status is not).
    pub retain: bool,
}

/// A request the `rumqttc` client could not queue (it keeps the request, payload included; boxed, since a v5
/// request is large and errors are the cold path).
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    V3(Box<rumqttc::ClientError>),
    #[error(transparent)]
    V5(Box<rumqttc::v5::ClientError>),
}

impl From<rumqttc::ClientError> for ClientError {
    fn from(e: rumqttc::ClientError) -> Self {
        Self::V3(Box::new(e))
    }
}

impl From<rumqttc::v5::ClientError> for ClientError {
    fn from(e: rumqttc::v5::ClientError) -> Self {
        Self::V5(Box::new(e))
    }
}

/// A broken connection, as the event loop of either protocol version reports it.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    #[error(transparent)]
    V3(#[from] rumqttc::ConnectionError),
    #[error(transparent)]
    V5(#[from] rumqttc::v5::ConnectionError),
}

#[derive(Debug, thiserror::Error)]
pub enum MqttError {
    /// The event loop is gone or its request queue is full.
    #[error("cannot hand publish to {topic} to the MQTT client: {source}")]
    Publish {
        topic: String,
        #[source]
        source: ClientError,
    },
    #[error("MQTT TLS setup: {0}")]
    Tls(#[from] mqtt_llm_client::tls::TlsError),
}

/// A handle that publishes through the event-loop actor (MQTT 3.1.1 or 5).
#[derive(Debug, Clone)]
pub enum MqttClient {
    V3(rumqttc::AsyncClient),
    V5(rumqttc::v5::AsyncClient),
}

/// The MQTT 5 user property of an overload refusal that says when to retry, in milliseconds.
pub const RETRY_AFTER_PROPERTY: &str = "retryAfterMs";

fn v5_properties(msg: &Outgoing) -> rumqttc::v5::mqttbytes::v5::PublishProperties {
    rumqttc::v5::mqttbytes::v5::PublishProperties {
        // 1 = the payload is UTF-8 text (replies and JSON frames both are).
        payload_format_indicator: Some(1),
        correlation_data: msg.correlation_data.clone(),
        content_type: Some(msg.content_type.to_owned()),
        user_properties: msg
            .retry_after_ms
            .map(|ms| vec![(RETRY_AFTER_PROPERTY.to_owned(), ms.to_string())])
            .unwrap_or_default(),
        ..Default::default()
    }
}

const V5_QOS: rumqttc::v5::mqttbytes::QoS = rumqttc::v5::mqttbytes::QoS::AtLeastOnce;

impl Outgoing {
    fn failed(self, result: Result<(), ClientError>) -> Result<(), MqttError> {
        result.map_err(|source| MqttError::Publish {
            topic: self.topic,
            source,
        })
    }
}

impl MqttClient {
    /// Queue a publish; waits only while the client's request queue is full (never call it from the event-loop
    /// task).
    pub async fn publish(&self, msg: Outgoing) -> Result<(), MqttError> {
        let (topic, payload) = (msg.topic.clone(), msg.payload.clone());
        let result = match self {
            Self::V3(c) => c
                .publish(topic, QoS::AtLeastOnce, msg.retain, payload)
                .await
                .map_err(Into::into),
            Self::V5(c) => (c
                .publish_with_properties(topic, V5_QOS, msg.retain, payload, v5_properties(&msg))
                .await)
                .map_err(Into::into),
        };
        msg.failed(result)
    }

    /// Queue a publish without waiting; fails when the request queue is full. Safe to call from the event loop.
    pub fn try_publish(&self, msg: Outgoing) -> Result<(), MqttError> {
        let (topic, payload) = (msg.topic.clone(), msg.payload.clone());
        let result = match self {
            Self::V3(c) => c
                .try_publish(topic, QoS::AtLeastOnce, msg.retain, payload)
                .map_err(Into::into),
            Self::V5(c) => (c.try_publish_with_properties(topic, V5_QOS, msg.retain, payload, v5_properties(&msg)))
                .map_err(Into::into),
        };
        msg.failed(result)
    }

    /// Ask the event loop to send DISCONNECT after everything queued before it.
    pub async fn disconnect(&self) {
        let result: Result<(), ClientError> = match self {
            Self::V3(c) => c.disconnect().await.map_err(Into::into),
            Self::V5(c) => c.disconnect().await.map_err(Into::into),
        };
        if let Err(e) = result {
            tracing::debug!(error = %e, "MQTT disconnect not queued (event loop gone)");
        }
    }
}
