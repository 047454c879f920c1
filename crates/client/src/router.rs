//! Routing of incoming messages to the request that waits for them: the client's subscription filters, pure
//! classification of a topic and a registry of request ids. The event-loop task calls [`Registry::route`] and never
//! awaits.
//!
//! The filters are per project and client, not per session, so one subscription serves every session: a message
//! is tied to its request by the request id (the reply topic's last level, the frame's `requestId`), and the
//! registry checks that the topic's project and session are the request's.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use tokio::sync::mpsc;

use super::Violation;
use mqtt_llm_protocol::wire::StreamFrame;

/// What arrived for one request.
#[derive(Debug)]
pub enum Incoming {
    Frame { at: Instant, frame: StreamFrame },
    Reply { at: Instant, text: String },
}

/// How many filters [`filters`] returns (and so how many SubAck reason codes each project has).
pub const FILTERS_PER_PROJECT: usize = 2;

/// The client's subscription filters for `project`: every reply and stream topic of every session of this client
/// (the shapes `request_payload` puts in `replyTopic` and `streamTopic`). `#` on replies, so that a reply one level
/// too deep still arrives and is reported as a foreign topic.
pub fn filters(project: &str, client_id: &str) -> [String; FILTERS_PER_PROJECT] {
    [
        format!("{project}/assistant_response/+/{client_id}/#"),
        format!("{project}/assistant_stream/+/{client_id}"),
    ]
}

/// Where a topic points, by its shape alone.
#[derive(Debug, PartialEq, Eq)]
pub enum TopicKind<'a> {
    /// `{p}/assistant_response/{session}/{clientId}/{requestId}` with our client id.
    Reply {
        project: &'a str,
        session: &'a str,
        request_id: &'a str,
    },
    /// `{p}/assistant_stream/{session}/{clientId}` with our client id.
    Stream {
        project: &'a str,
        session: &'a str,
    },
    Foreign,
}

/// Classify `topic` for the client `client_id`.
pub fn classify<'a>(topic: &'a str, client_id: &str) -> TopicKind<'a> {
    let parts: Vec<&str> = topic.split('/').collect();
    match parts.as_slice() {
        [project, "assistant_response", session, client, request_id] if *client == client_id => TopicKind::Reply {
            project,
            session,
            request_id,
        },
        [project, "assistant_stream", session, client] if *client == client_id => {
            TopicKind::Stream { project, session }
        }
        _ => TopicKind::Foreign,
    }
}

#[derive(Debug)]
enum EntryState {
    /// Waiting: incoming messages go to the request task.
    Pending(mpsc::UnboundedSender<Incoming>),
    /// The final reply arrived: anything more is a violation.
    Replied,
    /// The request gave up (timeout): late messages are expected and ignored.
    Abandoned,
}

#[derive(Debug)]
struct Entry {
    project: String,
    session: String,
    state: EntryState,
}

/// Every request this client sent, by request id, and the violations seen outside any request.
#[derive(Debug, Default)]
pub struct Registry {
    inner: Mutex<RegistryState>,
}

#[derive(Debug, Default)]
struct RegistryState {
    entries: HashMap<String, Entry>,
    violations: Vec<Violation>,
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, RegistryState> {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Register a request before it is published; its messages arrive on the returned receiver.
    pub fn register(&self, request_id: &str, project: &str, session: &str) -> mpsc::UnboundedReceiver<Incoming> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.lock().entries.insert(
            request_id.to_owned(),
            Entry {
                project: project.to_owned(),
                session: session.to_owned(),
                state: EntryState::Pending(tx),
            },
        );
        rx
    }

    /// The request timed out: late messages for it are not violations.
    pub fn abandon(&self, request_id: &str) {
        if let Some(entry) = self.lock().entries.get_mut(request_id) {
            entry.state = EntryState::Abandoned;
        }
    }

    /// Violations seen so far outside the requests (foreign topics, duplicate replies, late frames).
    pub fn violations(&self) -> Vec<Violation> {
        self.lock().violations.clone()
    }

    /// Route one incoming publish (never blocks beyond the mutex).
    pub fn route(&self, topic: &str, payload: &[u8], client_id: &str, at: Instant) {
        let mut state = self.lock();
        let state = &mut *state;
        let violation = match classify(topic, client_id) {
            TopicKind::Reply {
                project,
                session,
                request_id,
            } => match state.entries.get_mut(request_id) {
                Some(entry) if entry.project == project && entry.session == session => match &entry.state {
                    EntryState::Pending(tx) => {
                        let text = String::from_utf8_lossy(payload).into_owned();
                        let _ = tx.send(Incoming::Reply { at, text });
                        entry.state = EntryState::Replied;
                        None
                    }
                    EntryState::Replied => Some(Violation::DuplicateReply {
                        request_id: request_id.to_owned(),
                    }),
                    EntryState::Abandoned => None,
                },
                _ => Some(Violation::ForeignTopic {
                    topic: topic.to_owned(),
                }),
            },
            TopicKind::Stream { project, session } => match serde_json::from_slice::<StreamFrame>(payload) {
                Err(_) => Some(Violation::MalformedFrame {
                    topic: topic.to_owned(),
                }),
                Ok(frame) => match state.entries.get_mut(frame.request_id()) {
                    Some(entry) if entry.project == project && entry.session == session => match &entry.state {
                        EntryState::Pending(tx) => {
                            let _ = tx.send(Incoming::Frame { at, frame });
                            None
                        }
                        EntryState::Replied => Some(Violation::FrameAfterReply {
                            request_id: frame.request_id().to_owned(),
                        }),
                        EntryState::Abandoned => None,
                    },
                    _ => Some(Violation::ForeignTopic {
                        topic: topic.to_owned(),
                    }),
                },
            },
            TopicKind::Foreign => Some(Violation::ForeignTopic {
                topic: topic.to_owned(),
            }),
        };
        if let Some(v) = violation {
            state.violations.push(v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_are_classified_by_shape_and_client_id() {
        assert_eq!(
            classify("p/assistant_response/s/c/r1", "c"),
            TopicKind::Reply {
                project: "p",
                session: "s",
                request_id: "r1"
            }
        );
        assert_eq!(
            classify("p/assistant_stream/s/c", "c"),
            TopicKind::Stream {
                project: "p",
                session: "s"
            }
        );
        assert_eq!(classify("p/assistant_response/s/other/r1", "c"), TopicKind::Foreign);
        assert_eq!(classify("p/assistant_response/s", "c"), TopicKind::Foreign);
        assert_eq!(classify("p/assistant_stream/s/c/x", "c"), TopicKind::Foreign);
    }

    #[test]
    fn the_filters_cover_every_session_of_the_client_and_nothing_else() {
        use rumqttc::v5::mqttbytes::matches;
        let [reply, stream] = filters("p", "c");
        for session in ["s", "chat-0000abcd", "bench 1"] {
            let reply_topic = format!("p/assistant_response/{session}/c/r1");
            assert!(matches(&reply_topic, &reply), "{reply_topic}");
            assert!(matches!(classify(&reply_topic, "c"), TopicKind::Reply { .. }));
            let stream_topic = format!("p/assistant_stream/{session}/c");
            assert!(matches(&stream_topic, &stream), "{stream_topic}");
            assert!(matches!(classify(&stream_topic, "c"), TopicKind::Stream { .. }));
        }
        for other in [
            "p/assistant_response/s/other/r1",
            "p/assistant_stream/s/other",
            "q/assistant_response/s/c/r1",
            "p/assistant_response/s",
            "p/user_input",
        ] {
            assert!(!matches(other, &reply) && !matches(other, &stream), "{other}");
        }
        // Too deep for a reply: still delivered, so that it can be reported.
        assert!(matches("p/assistant_response/s/c/r1/x", &reply));
        assert_eq!(classify("p/assistant_response/s/c/r1/x", "c"), TopicKind::Foreign);
    }

    /// Route a delta frame of `request_id` on `topic` to client `c`.
    fn route_delta(reg: &Registry, topic: &str, request_id: &str, seq: u64) {
        let frame = format!(r#"{{"requestId":"{request_id}","seq":{seq},"delta":"x"}}"#);
        reg.route(topic, frame.as_bytes(), "c", Instant::now());
    }

    #[test]
    fn messages_of_two_sessions_go_to_their_own_requests() {
        let reg = Registry::default();
        let mut a = reg.register("r1", "p", "s1");
        let mut b = reg.register("r2", "p", "s2");
        let now = Instant::now();
        route_delta(&reg, "p/assistant_stream/s2/c", "r2", 0);
        reg.route("p/assistant_response/s1/c/r1", b"one", "c", now);
        reg.route("p/assistant_response/s2/c/r2", b"two", "c", now);
        assert!(matches!(a.try_recv(), Ok(Incoming::Reply { text, .. }) if text == "one"));
        assert!(matches!(b.try_recv(), Ok(Incoming::Frame { .. })));
        assert!(matches!(b.try_recv(), Ok(Incoming::Reply { text, .. }) if text == "two"));
        // A request id of this client under the wrong session is not that request's.
        reg.route("p/assistant_response/s2/c/r1", b"x", "c", now);
        route_delta(&reg, "p/assistant_stream/s1/c", "r2", 1);
        let v = reg.violations();
        assert_eq!(v.len(), 2, "{v:?}");
        assert!(v.iter().all(|v| matches!(v, Violation::ForeignTopic { .. })));
    }

    #[test]
    fn a_second_reply_and_unknown_ids_are_violations() {
        let reg = Registry::default();
        let mut rx = reg.register("r1", "p", "s");
        let now = Instant::now();
        reg.route("p/assistant_response/s/c/r1", b"hi", "c", now);
        assert!(matches!(rx.try_recv(), Ok(Incoming::Reply { .. })));
        reg.route("p/assistant_response/s/c/r1", b"hi", "c", now);
        reg.route("p/assistant_response/s/c/r2", b"hi", "c", now);
        route_delta(&reg, "p/assistant_stream/s/c", "r1", 0);
        reg.route("elsewhere", b"x", "c", now);
        let v = reg.violations();
        assert_eq!(v.len(), 4, "{v:?}");
        assert!(matches!(v[0], Violation::DuplicateReply { .. }));
        assert!(matches!(v[1], Violation::ForeignTopic { .. }));
        assert!(matches!(v[2], Violation::FrameAfterReply { .. }));
    }

    #[test]
    fn late_messages_of_an_abandoned_request_are_ignored() {
        let reg = Registry::default();
        let _rx = reg.register("r1", "p", "s");
        reg.abandon("r1");
        reg.route("p/assistant_response/s/c/r1", b"late", "c", Instant::now());
        assert!(reg.violations().is_empty());
    }
}
