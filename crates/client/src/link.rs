//! The connection and its subscriptions as plain state: whether the client is connected, which projects it wants
//! replies for, which of those the broker acknowledged on the current connection, and which SUBSCRIBE (by packet
//! id) carries which projects. Transitions are pure functions driven by the event-loop task (connection events)
//! and by [`super::Client::open_session`] (a new project); both run them inside `watch::Sender::send_modify`, so
//! waiters see every change and a SUBSCRIBE is handed to the MQTT request queue in the same critical section that
//! records it in `queued`: the order of `queued` is the order in which the event loop will write them.
//!
//! Subscriptions are per project, never per session: `{p}/assistant_response/+/{clientId}/#` and
//! `{p}/assistant_stream/+/{clientId}` (see [`super::router::filters`]). A clean start makes the broker forget them
//! on every reconnect, so every ConnAck turns every project back into `Subscription::Wanted`.

use std::collections::{BTreeMap, HashMap, VecDeque};

use rumqttc::v5::mqttbytes::v5::SubscribeReasonCode;

use super::router::FILTERS_PER_PROJECT;

/// Why the connection (or an attempt at one) failed. It travels in the [`Link`] through a `watch` channel, so it keeps
/// rumqttc's error as its text (`ConnectionError` is not `Clone`) and the one decision taken on it, `fatal`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct LinkError {
    pub message: String,
    /// Retrying cannot help (a TLS failure, the broker refused the CONNECT): the first connect gives up at once.
    pub fatal: bool,
}

impl LinkError {
    /// A failed connect that left no error behind (the event loop stopped first).
    pub fn unknown() -> Self {
        Self {
            message: "the connection ended before the broker answered".into(),
            fatal: true,
        }
    }
}

/// Where one project's subscriptions stand on the current connection.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Subscription {
    /// Not asked for on this connection yet (new project, reconnect, or the request queue had no room).
    Wanted,
    /// In a SUBSCRIBE queued or written, not acknowledged yet.
    Pending,
    Acked,
    /// The broker refused a filter (an ACL, say); `reason` is its reason code.
    Refused {
        reason: SubscribeReasonCode,
    },
}

/// Whether requests of a project may be published now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    /// Connected, and the broker acknowledged the project's filters on this connection.
    Ready,
    /// Not connected, or the SubAck has not come yet.
    Pending,
    Refused {
        reason: SubscribeReasonCode,
    },
}

/// The link as a person would want to hear about it (`chat` prints the changes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkStatus {
    /// Connecting, or connected and (re-)subscribing.
    Connecting,
    /// Connected (the `connection`-th ConnAck) and every project's SubAck is in.
    Up { connection: u64 },
    /// Lost; the event loop reconnects after a back-off.
    Down { error: String },
}

/// The connection and subscription state of one client.
#[derive(Debug, Default)]
pub struct Link {
    /// ConnAcks so far: 0 until the first connection.
    connection: u64,
    connected: bool,
    /// The last connection failure, cleared by the next ConnAck.
    last_error: Option<LinkError>,
    projects: BTreeMap<String, Subscription>,
    /// SUBSCRIBEs handed to the request queue on this connection and not written yet, in queue order.
    queued: VecDeque<Vec<String>>,
    /// Written SUBSCRIBEs awaiting their SubAck, by packet id.
    sent: HashMap<u16, Vec<String>>,
}

impl Link {
    pub fn connection(&self) -> u64 {
        self.connection
    }

    pub fn is_connected(&self) -> bool {
        self.connected
    }

    pub fn last_error(&self) -> Option<&LinkError> {
        self.last_error.as_ref()
    }

    /// Start tracking `project`; false when it is already known (its subscription is shared).
    pub fn want(&mut self, project: &str) -> bool {
        if self.projects.contains_key(project) {
            return false;
        }
        self.projects.insert(project.to_owned(), Subscription::Wanted);
        true
    }

    /// The projects the next SUBSCRIBE should carry: the wanted ones, while connected (a SUBSCRIBE queued while
    /// disconnected would be dropped with the rest of the queue when the clean session starts).
    pub fn to_subscribe(&self) -> Vec<String> {
        if !self.connected {
            return Vec::new();
        }
        self.projects
            .iter()
            .filter(|(_, s)| **s == Subscription::Wanted)
            .map(|(p, _)| p.clone())
            .collect()
    }

    /// Whether [`Self::to_subscribe`] has anything (without building the list).
    pub fn wants_subscribe(&self) -> bool {
        self.connected && self.projects.values().any(|s| *s == Subscription::Wanted)
    }

    /// A SUBSCRIBE for `projects` (from [`Self::to_subscribe`]) went into the request queue.
    pub fn queued(&mut self, projects: Vec<String>) {
        for p in &projects {
            if let Some(s) = self.projects.get_mut(p) {
                *s = Subscription::Pending;
            }
        }
        self.queued.push_back(projects);
    }

    /// ConnAck: a new clean session, which has none of our subscriptions.
    pub fn on_connack(&mut self) {
        self.connection += 1;
        self.connected = true;
        self.last_error = None;
        self.forget_subscriptions();
    }

    /// The connection (or an attempt) failed. Whatever was queued or written is gone: rumqttc drops it when the
    /// next clean session starts.
    pub fn on_error(&mut self, error: LinkError) {
        self.connected = false;
        self.last_error = Some(error);
        self.forget_subscriptions();
    }

    fn forget_subscriptions(&mut self) {
        self.queued.clear();
        self.sent.clear();
        for s in self.projects.values_mut() {
            *s = Subscription::Wanted;
        }
    }

    /// The event loop wrote a SUBSCRIBE with packet id `pkid`: the oldest queued one. Returns whether it was ours
    /// (events left over from a lost connection come before its ConnAck, while disconnected, and are ignored).
    pub fn on_subscribe_written(&mut self, pkid: u16) -> bool {
        if !self.connected {
            return false;
        }
        match self.queued.pop_front() {
            Some(projects) => {
                self.sent.insert(pkid, projects);
                true
            }
            None => false,
        }
    }

    /// SubAck for packet `pkid`: `refusals` has one entry per filter, `Some(reason)` when it was not granted.
    pub fn on_suback(&mut self, pkid: u16, refusals: &[Option<SubscribeReasonCode>]) -> bool {
        if !self.connected {
            return false;
        }
        let Some(projects) = self.sent.remove(&pkid) else {
            return false;
        };
        for (i, p) in projects.iter().enumerate() {
            let refused = refusals
                .iter()
                .skip(i * FILTERS_PER_PROJECT)
                .take(FILTERS_PER_PROJECT)
                .find_map(Option::as_ref);
            if let Some(s) = self.projects.get_mut(p) {
                *s = match refused {
                    Some(reason) => Subscription::Refused { reason: *reason },
                    None => Subscription::Acked,
                };
            }
        }
        true
    }

    pub fn readiness(&self, project: &str) -> Readiness {
        match self.projects.get(project) {
            Some(Subscription::Acked) if self.connected => Readiness::Ready,
            Some(Subscription::Refused { reason }) if self.connected => Readiness::Refused { reason: *reason },
            _ => Readiness::Pending,
        }
    }

    pub fn status(&self) -> LinkStatus {
        if !self.connected {
            return match &self.last_error {
                Some(e) => LinkStatus::Down {
                    error: e.message.clone(),
                },
                None => LinkStatus::Connecting,
            };
        }
        let settled = self
            .projects
            .values()
            .all(|s| matches!(s, Subscription::Acked | Subscription::Refused { .. }));
        if settled {
            LinkStatus::Up {
                connection: self.connection,
            }
        } else {
            LinkStatus::Connecting
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: [Option<SubscribeReasonCode>; 2] = [None, None];

    fn error(message: &str) -> LinkError {
        LinkError {
            message: message.into(),
            fatal: false,
        }
    }

    /// Connected, with `projects` subscribed through packet `pkid`.
    fn subscribed(projects: &[&str], pkid: u16) -> Link {
        let mut link = Link::default();
        link.on_connack();
        for p in projects {
            assert!(link.want(p));
        }
        let batch = link.to_subscribe();
        link.queued(batch);
        assert!(link.on_subscribe_written(pkid));
        let refusals: Vec<Option<SubscribeReasonCode>> = projects.iter().flat_map(|_| OK).collect();
        assert!(link.on_suback(pkid, &refusals));
        link
    }

    /// Connected, each of `projects` wanted and its SUBSCRIBE queued on its own, none written yet.
    fn queued_one_by_one(projects: &[&str]) -> Link {
        let mut link = Link::default();
        link.on_connack();
        for p in projects {
            link.want(p);
            link.queued(link.to_subscribe());
        }
        link
    }

    #[test]
    fn a_project_is_subscribed_once_and_shared() {
        let mut link = Link::default();
        link.on_connack();
        assert!(link.want("p"));
        assert!(
            !link.want("p"),
            "a second session of p shares the first one's subscription"
        );
        assert_eq!(link.to_subscribe(), ["p"]);
        link.queued(vec!["p".into()]);
        assert!(link.to_subscribe().is_empty(), "queued once, not again");
        assert!(!link.wants_subscribe());
        assert!(!link.want("p"));
        assert_eq!(link.readiness("p"), Readiness::Pending);
        assert!(link.on_subscribe_written(7));
        assert_eq!(link.readiness("p"), Readiness::Pending, "written is not acknowledged");
        assert!(link.on_suback(7, &OK));
        assert_eq!(link.readiness("p"), Readiness::Ready);
        assert!(!link.want("p"));
        assert!(link.to_subscribe().is_empty(), "a known project costs nothing");
    }

    #[test]
    fn subacks_are_matched_by_packet_id() {
        let mut link = queued_one_by_one(&["a", "b"]);
        assert!(link.on_subscribe_written(1));
        assert!(link.on_subscribe_written(2));
        assert!(link.on_suback(2, &OK));
        assert_eq!(link.readiness("a"), Readiness::Pending);
        assert_eq!(link.readiness("b"), Readiness::Ready);
        assert!(!link.on_suback(9, &OK), "not one of ours");
        assert!(link.on_suback(1, &OK));
        assert_eq!(link.readiness("a"), Readiness::Ready);
    }

    #[test]
    fn a_refused_filter_refuses_its_project_only() {
        let mut link = Link::default();
        link.on_connack();
        link.want("a");
        link.want("b");
        link.queued(link.to_subscribe());
        link.on_subscribe_written(3);
        // Filters in project order: a's reply and stream filters, then b's.
        link.on_suback(3, &[None, None, None, Some(SubscribeReasonCode::NotAuthorized)]);
        assert_eq!(link.readiness("a"), Readiness::Ready);
        assert_eq!(
            link.readiness("b"),
            Readiness::Refused {
                reason: SubscribeReasonCode::NotAuthorized
            }
        );
        assert_eq!(link.status(), LinkStatus::Up { connection: 1 });
    }

    #[test]
    fn nothing_is_subscribed_while_disconnected() {
        let mut link = Link::default();
        link.want("p");
        assert!(link.to_subscribe().is_empty(), "before the first ConnAck");
        assert!(!link.wants_subscribe());
        assert_eq!(link.status(), LinkStatus::Connecting);
        link.on_connack();
        assert_eq!(link.to_subscribe(), ["p"]);
        link.on_error(error("reset"));
        assert!(link.to_subscribe().is_empty());
        assert_eq!(link.readiness("p"), Readiness::Pending);
    }

    #[test]
    fn every_project_is_subscribed_again_after_a_reconnect() {
        let mut link = subscribed(&["a", "b"], 1);
        assert_eq!(link.status(), LinkStatus::Up { connection: 1 });
        link.on_error(error("connection reset"));
        assert_eq!(
            link.readiness("a"),
            Readiness::Pending,
            "requests wait for the resubscription"
        );
        assert_eq!(
            link.status(),
            LinkStatus::Down {
                error: "connection reset".into()
            }
        );
        link.on_connack();
        assert_eq!(link.status(), LinkStatus::Connecting, "connected, not yet subscribed");
        assert_eq!(link.readiness("a"), Readiness::Pending);
        assert_eq!(link.to_subscribe(), ["a", "b"], "one SUBSCRIBE for every known project");
        link.queued(link.to_subscribe());
        assert!(link.on_subscribe_written(1));
        assert!(link.on_suback(1, &[None, None, None, None]));
        assert_eq!(link.readiness("a"), Readiness::Ready);
        assert_eq!(link.readiness("b"), Readiness::Ready);
        assert_eq!(link.status(), LinkStatus::Up { connection: 2 });
    }

    #[test]
    fn events_of_a_lost_connection_are_ignored() {
        let mut link = queued_one_by_one(&["p"]);
        link.on_error(error("reset"));
        // rumqttc delivers events buffered before the failure ahead of the next ConnAck.
        assert!(!link.on_subscribe_written(4));
        assert!(!link.on_suback(4, &OK));
        assert_eq!(link.readiness("p"), Readiness::Pending);
        link.on_connack();
        // The SUBSCRIBE queued on the lost connection is gone: p is wanted again, and a late SubAck for an old
        // packet id matches nothing.
        assert!(!link.on_suback(4, &OK));
        assert_eq!(link.to_subscribe(), ["p"]);
    }

    #[test]
    fn a_connack_clears_the_last_error() {
        let mut link = Link::default();
        link.on_error(LinkError {
            message: "TLS: invalid peer certificate".into(),
            fatal: true,
        });
        assert!(link.last_error().is_some_and(|e| e.fatal));
        link.on_connack();
        assert!(link.last_error().is_none());
        assert_eq!(
            link.status(),
            LinkStatus::Up { connection: 1 },
            "no projects: nothing to wait for"
        );
    }
}
