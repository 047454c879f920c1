//! Tests of [`super::Held`]: which publishes of a broken connection are held, in what order, and within what
//! bound.

use std::collections::VecDeque;

use super::*;
use rumqttc::{Publish, QoS, Request};

fn projects() -> Vec<ProjectName> {
    vec![ProjectName::try_new("general").unwrap()]
}

fn publish(topic: &str, pkid: u16, payload: &str) -> Publish {
    let mut p = Publish::new(topic, QoS::AtLeastOnce, payload.as_bytes().to_vec());
    p.pkid = pkid;
    p
}

fn payloads(pending: &VecDeque<Request>) -> Vec<String> {
    pending
        .iter()
        .map(|r| match r {
            Request::Publish(p) => String::from_utf8_lossy(&p.payload).into_owned(),
            other => format!("{other:?}"),
        })
        .collect()
}

#[test]
fn replies_are_held_in_sending_order_and_frames_dropped() {
    let mut held = Held::new(&projects());
    // Packet ids wrapped: 19 and 20 went out before 1 and 2; 2 was the last one sent.
    for pkid in [19, 20, 1, 2] {
        held.sent(pkid);
    }
    // rumqttc's `pending` after the error: never sent (packet id 0) from an earlier connection, then those in
    // flight in packet-id order, then those still queued.
    let pending = vec![
        publish("general/assistant_response/a", 0, "earlier"),
        publish("general/assistant_response/a", 1, "third"),
        publish("general/assistant_stream/a", 2, "frame"),
        publish("general/assistant_response/b", 19, "first"),
        publish("devices/lamp/reply", 20, "second"),
        publish("general/assistant_response/c", 0, "queued"),
    ];
    let aside = held.take(pending, None);
    assert_eq!(
        aside,
        SetAside {
            held: 5,
            frames_dropped: 1,
            replies_dropped: 0
        }
    );
    let mut queue = VecDeque::from([Request::PingReq(rumqttc::PingReq)]);
    assert_eq!(held.requeue(&mut queue, Request::Publish), 5);
    assert_eq!(
        payloads(&queue),
        ["first", "second", "third", "earlier", "queued", "PingReq(PingReq)"]
    );
    // Ready for a new session: fresh packet ids, DUP on those that went out before.
    let flags: Vec<(u16, bool)> = queue
        .iter()
        .filter_map(|r| match r {
            Request::Publish(p) => Some((p.pkid, p.dup)),
            _ => None,
        })
        .collect();
    assert_eq!(flags, [(0, true), (0, true), (0, true), (0, false), (0, false)]);
    assert_eq!(held.requeue(&mut queue, Request::Publish), 0, "requeued once");
}

#[test]
fn a_collided_publish_follows_those_in_flight() {
    let mut held = Held::new(&projects());
    held.sent(3);
    let aside = held.take(
        vec![
            publish("general/assistant_response/a", 3, "in flight"),
            publish("general/assistant_response/a", 0, "queued"),
        ],
        Some(publish("general/assistant_response/b", 3, "collided")),
    );
    assert_eq!(aside.held, 3);
    let mut queue = VecDeque::new();
    held.requeue(&mut queue, Request::Publish);
    assert_eq!(payloads(&queue), ["in flight", "collided", "queued"]);
}

#[test]
fn beyond_the_bound_the_oldest_replies_are_dropped() {
    let mut held = Held::new(&projects());
    let first: Vec<Publish> = (0..HELD_REPLIES)
        .map(|i| publish("general/assistant_response/a", 0, &format!("r{i}")))
        .collect();
    assert_eq!(held.take(first, None).replies_dropped, 0);
    // A second break before the first ones went out: three more than the bound.
    let more: Vec<Publish> = (0..3)
        .map(|i| publish("general/assistant_response/a", 0, &format!("s{i}")))
        .collect();
    let aside = held.take(more, None);
    assert_eq!((aside.held, aside.replies_dropped), (HELD_REPLIES, 3));
    let mut queue = VecDeque::new();
    held.requeue(&mut queue, Request::Publish);
    let kept = payloads(&queue);
    assert_eq!(kept.first().map(String::as_str), Some("r3"));
    assert_eq!(kept.last().map(String::as_str), Some("s2"));
}

#[test]
fn only_the_projects_stream_topics_are_frames() {
    let held: Held<Publish> = Held::new(&projects());
    let frame = |t: &str| held.is_frame(&publish(t, 1, ""));
    assert!(frame("general/assistant_stream/s1"));
    assert!(!frame("general/assistant_response/s1"));
    assert!(!frame("general/assistant_streaming/s1"));
    assert!(!frame("other/assistant_stream/s1"));
}
