//! What the event-loop actor needs from a protocol version: poll one event, classified into a [`LoopEvent`],
//! queue a SUBSCRIBE without waiting, and hold the final replies of a broken connection for the next one. MQTT
//! 3.1.1 and 5 differ only here.
//!
//! # Replies across a broken connection
//! When the connection breaks, `rumqttc` moves the publishes still in flight and those still in its request queue
//! to its `pending` list for "the next session", and clears that list when the next ConnAck says the broker kept
//! no session, which it never does for our clean sessions: every final reply written but not yet acknowledged
//! would be lost. So after each connection error [`Connection::set_aside`] takes the publishes out of `pending`
//! first: final replies are held (in the order they were sent, then queued), stream frames are dropped (a preview;
//! the final reply is the record), and on the next ConnAck [`Connection::republish`] puts the held replies back
//! at the head of `pending`, ahead of anything queued since. Replies are thus published at least once: one the
//! broker received but had not acknowledged when the link broke goes out again, with the DUP flag set.

use std::collections::VecDeque;

use bytes::Bytes;

use super::client::{ClientError, ConnectionError};
use crate::session::CLIENT_ID_PROPERTY;
use mqtt_llm_protocol::topics::{ProjectName, stream_base};
use mqtt_llm_protocol::wire::V5Props;

/// Final replies held across broken connections at most; beyond it the oldest are dropped (and counted). Four
/// times the default `--max-queued`: only a broker that keeps failing while replies pile up gets there.
pub(super) const HELD_REPLIES: usize = 4096;

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
    /// After a connection error: take the publishes the event loop set aside for the next session (those in
    /// flight and those still in the request queue) before the next clean-session ConnAck drops them; hold the
    /// final replies, drop the stream frames.
    fn set_aside(&mut self) -> SetAside;
    /// After a ConnAck: queue the held replies ahead of everything queued since. Returns how many.
    fn republish(&mut self) -> usize;
}

/// What [`Connection::set_aside`] did with the publishes of a broken connection.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct SetAside {
    /// Final replies now held for the next connection (those of earlier errors included).
    pub(super) held: usize,
    /// Stream frames dropped.
    pub(super) frames_dropped: usize,
    /// The oldest final replies dropped because more than [`HELD_REPLIES`] were held.
    pub(super) replies_dropped: usize,
}

/// MQTT 3.1.1: `rumqttc`'s event loop and client, and the replies held across broken connections.
pub(super) struct V3 {
    eventloop: rumqttc::EventLoop,
    client: rumqttc::AsyncClient,
    held: Held<rumqttc::Publish>,
}

/// MQTT 5: as [`V3`].
pub(super) struct V5 {
    eventloop: rumqttc::v5::EventLoop,
    client: rumqttc::v5::AsyncClient,
    held: Held<rumqttc::v5::mqttbytes::v5::Publish>,
}

impl V3 {
    pub(super) fn new(eventloop: rumqttc::EventLoop, client: rumqttc::AsyncClient, projects: &[ProjectName]) -> Self {
        Self {
            eventloop,
            client,
            held: Held::new(projects),
        }
    }
}

impl V5 {
    pub(super) fn new(
        eventloop: rumqttc::v5::EventLoop,
        client: rumqttc::v5::AsyncClient,
        projects: &[ProjectName],
    ) -> Self {
        Self {
            eventloop,
            client,
            held: Held::new(projects),
        }
    }
}

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
        Ok(match self.eventloop.poll().await? {
            Event::Incoming(Packet::ConnAck(_)) => LoopEvent::Connected,
            Event::Incoming(Packet::SubAck(ack)) => LoopEvent::Subscribed {
                refused: refused(&ack.return_codes),
            },
            Event::Incoming(Packet::Publish(p)) => LoopEvent::Message(p.into()),
            Event::Incoming(Packet::PubAck(_)) => LoopEvent::Acked,
            Event::Outgoing(Outgoing::Disconnect) => LoopEvent::Disconnected,
            Event::Outgoing(Outgoing::Publish(pkid)) => {
                self.held.sent(pkid);
                LoopEvent::Other
            }
            _ => LoopEvent::Other,
        })
    }

    fn subscribe(&self, filters: Vec<String>) -> Result<(), ClientError> {
        let filters = filters
            .into_iter()
            .map(|f| rumqttc::SubscribeFilter::new(f, rumqttc::QoS::AtLeastOnce));
        Ok(self.client.try_subscribe_many(filters)?)
    }

    fn set_aside(&mut self) -> SetAside {
        use rumqttc::Request;
        let mut publishes = Vec::new();
        for request in std::mem::take(&mut self.eventloop.pending) {
            match request {
                Request::Publish(p) => publishes.push(p),
                other => self.eventloop.pending.push_back(other),
            }
        }
        let collided = self.eventloop.state.collision.take();
        self.held.take(publishes, collided)
    }

    fn republish(&mut self) -> usize {
        self.held
            .requeue(&mut self.eventloop.pending, rumqttc::Request::Publish)
    }
}

impl Connection for V5 {
    async fn next(&mut self) -> Result<LoopEvent, ConnectionError> {
        use rumqttc::v5::Event;
        use rumqttc::v5::mqttbytes::v5::{Packet, SubscribeReasonCode as Code};
        let refused = |codes: &[Code]| codes.iter().filter(|c| !matches!(c, Code::Success(_))).count();
        Ok(match self.eventloop.poll().await? {
            Event::Incoming(Packet::ConnAck(_)) => LoopEvent::Connected,
            Event::Incoming(Packet::SubAck(ack)) => LoopEvent::Subscribed {
                refused: refused(&ack.return_codes),
            },
            Event::Incoming(Packet::Publish(p)) => LoopEvent::Message(p.into()),
            Event::Incoming(Packet::PubAck(_)) => LoopEvent::Acked,
            Event::Outgoing(rumqttc::Outgoing::Disconnect) => LoopEvent::Disconnected,
            Event::Outgoing(rumqttc::Outgoing::Publish(pkid)) => {
                self.held.sent(pkid);
                LoopEvent::Other
            }
            _ => LoopEvent::Other,
        })
    }

    fn subscribe(&self, filters: Vec<String>) -> Result<(), ClientError> {
        use rumqttc::v5::mqttbytes::{QoS, v5::Filter};
        let filters = filters.into_iter().map(|f| Filter::new(f, QoS::AtLeastOnce));
        Ok(self.client.try_subscribe_many(filters)?)
    }

    fn set_aside(&mut self) -> SetAside {
        use rumqttc::v5::Request;
        let mut publishes = Vec::new();
        for request in std::mem::take(&mut self.eventloop.pending) {
            match request {
                Request::Publish(p) => publishes.push(p),
                other => self.eventloop.pending.push_back(other),
            }
        }
        let collided = self.eventloop.state.collision.take();
        self.held.take(publishes, collided)
    }

    fn republish(&mut self) -> usize {
        self.held
            .requeue(&mut self.eventloop.pending, rumqttc::v5::Request::Publish)
    }
}

/// What holding needs from either version's PUBLISH.
trait HeldPublish {
    fn pkid(&self) -> u16;
    fn topic(&self) -> &[u8];
    /// Ready it for a new session: the packet id is the old session's (0 lets the event loop assign a fresh one),
    /// and one that went out before is a re-delivery (DUP).
    fn renew(&mut self);
}

impl HeldPublish for rumqttc::Publish {
    fn pkid(&self) -> u16 {
        self.pkid
    }

    fn topic(&self) -> &[u8] {
        self.topic.as_bytes()
    }

    fn renew(&mut self) {
        self.dup = self.pkid != 0;
        self.pkid = 0;
    }
}

impl HeldPublish for rumqttc::v5::mqttbytes::v5::Publish {
    fn pkid(&self) -> u16 {
        self.pkid
    }

    fn topic(&self) -> &[u8] {
        &self.topic
    }

    fn renew(&mut self) {
        self.dup = self.pkid != 0;
        self.pkid = 0;
    }
}

/// The final replies held between a broken connection and the next ConnAck, oldest first.
struct Held<P> {
    replies: VecDeque<P>,
    /// `{project}/assistant_stream/`, for each project: what is published under them is a stream frame (the
    /// protocol keeps every reply topic out of them).
    stream_prefixes: Vec<String>,
    /// Packet id of the last publish written: packet ids are handed out in sending order and wrap, so the ids in
    /// flight, read from just after it, are in the order they were sent.
    last_sent: u16,
}

impl<P: HeldPublish> Held<P> {
    fn new(projects: &[ProjectName]) -> Self {
        Self {
            replies: VecDeque::new(),
            stream_prefixes: projects.iter().map(|p| format!("{}/", stream_base(p))).collect(),
            last_sent: 0,
        }
    }

    /// Note a publish written to the socket.
    fn sent(&mut self, pkid: u16) {
        if pkid != 0 {
            self.last_sent = pkid;
        }
    }

    fn is_frame(&self, p: &P) -> bool {
        let topic = p.topic();
        self.stream_prefixes.iter().any(|s| topic.starts_with(s.as_bytes()))
    }

    /// Hold the final replies among `publishes` (`rumqttc`'s `pending` after an error: those not yet sent when an
    /// earlier connection broke, then those in flight, in packet-id order, then those still queued) and the
    /// publish that waited on a packet-id collision; drop the frames. The ones in flight went out before the
    /// rest, in the order of their packet ids counted from just after the last one sent.
    fn take(&mut self, publishes: Vec<P>, collided: Option<P>) -> SetAside {
        let (mut in_flight, unsent): (Vec<P>, Vec<P>) = publishes.into_iter().partition(|p| p.pkid() != 0);
        let last = self.last_sent;
        in_flight.sort_by_key(|p| (p.pkid() <= last, p.pkid()));
        let mut outcome = SetAside::default();
        for mut p in in_flight.into_iter().chain(collided).chain(unsent) {
            if self.is_frame(&p) {
                outcome.frames_dropped += 1;
            } else {
                p.renew();
                self.replies.push_back(p);
            }
        }
        while self.replies.len() > HELD_REPLIES {
            self.replies.pop_front();
            outcome.replies_dropped += 1;
        }
        outcome.held = self.replies.len();
        outcome
    }

    /// Put the held replies at the head of `pending`, where the event loop sends from first.
    fn requeue<R>(&mut self, pending: &mut VecDeque<R>, request: impl Fn(P) -> R) -> usize {
        let count = self.replies.len();
        let queued_since = std::mem::take(pending);
        pending.extend(self.replies.drain(..).map(request));
        pending.extend(queued_since);
        count
    }
}

#[cfg(test)]
#[path = "connection_tests.rs"]
mod tests;
