//! What the event-loop actor needs from a protocol version: poll one event, classified into a [`LoopEvent`], and
//! queue a SUBSCRIBE without waiting. MQTT 3.1.1 and 5 differ only here.

use bytes::Bytes;

use super::client::{ClientError, ConnectionError};
use crate::session::CLIENT_ID_PROPERTY;
use mqtt_llm_protocol::wire::V5Props;

/// A message received on one of our request topics.
#[derive(Debug, Clone)]
pub struct Inbound {
    pub topic: String,
    pub payload: Bytes,
    pub props: V5Props,
}

/// One event of either protocol version's loop, classified.
pub(super) enum LoopEvent {
    /// ConnAck: (re-)subscribe now.
    Connected,
    /// SubAck for our request topics; `refused` filters were not granted.
    Subscribed {
        refused: usize,
    },
    Message(Inbound),
    /// The broker acknowledged one of our QoS 1 publishes (PUBACK).
    Acked,
    /// Our DISCONNECT went out: the loop is done.
    Disconnected,
    Other,
}

/// What the actor needs from a protocol version's event loop and client.
pub(super) trait Connection: Send {
    /// Poll the next event; after an error the next call reconnects.
    fn next(&mut self) -> impl Future<Output = Result<LoopEvent, ConnectionError>> + Send;
    /// Queue one SUBSCRIBE (QoS 1) for these filters without waiting.
    fn subscribe(&self, filters: Vec<String>) -> Result<(), ClientError>;
    /// After a connection error: the publishes the event loop set aside for the next session (those in flight and
    /// those still in the request queue). The next session is clean, so rumqttc drops them on the next ConnAck.
    fn dropped_publishes(&self) -> usize;
}

pub(super) struct V3(pub rumqttc::EventLoop, pub rumqttc::AsyncClient);
pub(super) struct V5(pub rumqttc::v5::EventLoop, pub rumqttc::v5::AsyncClient);

impl From<rumqttc::Publish> for Inbound {
    fn from(p: rumqttc::Publish) -> Self {
        Self {
            topic: p.topic,
            payload: p.payload,
            props: V5Props::default(),
        }
    }
}

impl From<rumqttc::v5::mqttbytes::v5::Publish> for Inbound {
    fn from(p: rumqttc::v5::mqttbytes::v5::Publish) -> Self {
        let props = p.properties.map(|pp| V5Props {
            client_id: pp
                .user_properties
                .into_iter()
                .find_map(|(key, value)| (key == CLIENT_ID_PROPERTY).then_some(value)),
            response_topic: pp.response_topic,
            correlation_data: pp.correlation_data,
        });
        Self {
            topic: String::from_utf8_lossy(&p.topic).into_owned(),
            payload: p.payload,
            props: props.unwrap_or_default(),
        }
    }
}

impl Connection for V3 {
    async fn next(&mut self) -> Result<LoopEvent, ConnectionError> {
        use rumqttc::{Event, Outgoing, Packet, SubscribeReasonCode as Code};
        let refused = |codes: &[Code]| codes.iter().filter(|c| matches!(c, Code::Failure)).count();
        Ok(match self.0.poll().await? {
            Event::Incoming(Packet::ConnAck(_)) => LoopEvent::Connected,
            Event::Incoming(Packet::SubAck(ack)) => LoopEvent::Subscribed {
                refused: refused(&ack.return_codes),
            },
            Event::Incoming(Packet::Publish(p)) => LoopEvent::Message(p.into()),
            Event::Incoming(Packet::PubAck(_)) => LoopEvent::Acked,
            Event::Outgoing(Outgoing::Disconnect) => LoopEvent::Disconnected,
            _ => LoopEvent::Other,
        })
    }

    fn subscribe(&self, filters: Vec<String>) -> Result<(), ClientError> {
        let filters = filters
            .into_iter()
            .map(|f| rumqttc::SubscribeFilter::new(f, rumqttc::QoS::AtLeastOnce));
        Ok(self.1.try_subscribe_many(filters)?)
    }

    fn dropped_publishes(&self) -> usize {
        let publish = |r: &&rumqttc::Request| matches!(r, rumqttc::Request::Publish(_));
        self.0.pending.iter().filter(publish).count()
    }
}

impl Connection for V5 {
    async fn next(&mut self) -> Result<LoopEvent, ConnectionError> {
        use rumqttc::v5::Event;
        use rumqttc::v5::mqttbytes::v5::{Packet, SubscribeReasonCode as Code};
        let refused = |codes: &[Code]| codes.iter().filter(|c| !matches!(c, Code::Success(_))).count();
        Ok(match self.0.poll().await? {
            Event::Incoming(Packet::ConnAck(_)) => LoopEvent::Connected,
            Event::Incoming(Packet::SubAck(ack)) => LoopEvent::Subscribed {
                refused: refused(&ack.return_codes),
            },
            Event::Incoming(Packet::Publish(p)) => LoopEvent::Message(p.into()),
            Event::Incoming(Packet::PubAck(_)) => LoopEvent::Acked,
            Event::Outgoing(rumqttc::Outgoing::Disconnect) => LoopEvent::Disconnected,
            _ => LoopEvent::Other,
        })
    }

    fn subscribe(&self, filters: Vec<String>) -> Result<(), ClientError> {
        use rumqttc::v5::mqttbytes::{QoS, v5::Filter};
        let filters = filters.into_iter().map(|f| Filter::new(f, QoS::AtLeastOnce));
        Ok(self.1.try_subscribe_many(filters)?)
    }

    fn dropped_publishes(&self) -> usize {
        let publish = |r: &&rumqttc::v5::Request| matches!(r, rumqttc::v5::Request::Publish(_));
        self.0.pending.iter().filter(publish).count()
    }
}
