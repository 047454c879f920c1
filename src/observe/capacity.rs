//! The retained capacity topic, `{--status-prefix}/capacity`: how busy the service is, for devices to back off
//! before they publish instead of after an overload reply.
//!
//! `{"queueDepth":3,"maxQueue":1000,"inflight":3,"maxInflight":64,"engineState":"ready","acceptingRequests":true}`,
//! plus `retryAfterMs` while requests are not accepted. Published (retained, QoS 1) once MQTT is subscribed, at once
//! when the engine's state changes, within a second when the queue or the in-flight count changes, and every
//! `--capacity-interval` regardless; once more with `acceptingRequests:false` when shutdown starts. The topic has
//! no Last Will (a connection carries one, and it is the status topic's): trust it while `{prefix}/status` says
//! `online`.

use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::Board;
use crate::admission::Load;
use crate::mqtt::publisher::Publisher;

/// How often the queue is looked at for changes.
const CHECK: Duration = Duration::from_secs(1);

/// Where and how often.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapacitySettings {
    /// `{prefix}/capacity`.
    pub topic: String,
    /// Published at least this often while connected.
    pub interval: Duration,
}

impl CapacitySettings {
    pub fn topic_for(prefix: &str) -> String {
        format!("{prefix}/capacity")
    }
}

/// One capacity message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Capacity {
    pub queue_depth: usize,
    pub max_queue: usize,
    pub inflight: usize,
    pub max_inflight: usize,
    pub engine_state: &'static str,
    pub accepting_requests: bool,
    /// When to try again, while requests are not accepted and the service can tell.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
}

impl Capacity {
    /// What `board` says now; `closing` when shutdown has started (nothing is accepted any more).
    pub fn read(board: &Board, closing: bool) -> Self {
        let load = board.load().unwrap_or(Load {
            queued: 0,
            max_queued: 0,
            inflight: 0,
            max_inflight: 0,
            draining: false,
        });
        let accepting = !closing && board.accepting();
        let retry_after_ms = (!accepting && !closing)
            .then(|| board.retry_after())
            .flatten()
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        Self {
            queue_depth: load.queued,
            max_queue: load.max_queued,
            inflight: load.inflight,
            max_inflight: load.max_inflight,
            engine_state: if closing {
                "stopping"
            } else {
                board.engine_state().name()
            },
            accepting_requests: accepting,
            retry_after_ms,
        }
    }

    fn payload(&self) -> Bytes {
        Bytes::from(serde_json::to_vec(self).expect("capacity messages always serialise"))
    }
}

/// Publish the closing capacity (nothing accepted) now, before the drain: the retained message then says so after
/// the shutdown, and the drain's wait for acknowledgements covers it.
pub fn publish_closing(board: &Board, publisher: &Publisher, settings: &CapacitySettings) {
    let _ = publisher.try_retained(&settings.topic, Capacity::read(board, true).payload());
}

/// Keep the capacity topic current until `cancel`.
pub fn spawn_capacity(
    board: Board,
    publisher: Publisher,
    mut mqtt_ready: watch::Receiver<bool>,
    settings: CapacitySettings,
    tracker: &TaskTracker,
    cancel: CancellationToken,
) {
    tracker.spawn(async move {
        let mut engine = board.subscribe_engine();
        let mut check = tokio::time::interval(CHECK);
        check.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut last: Option<(Capacity, Instant)> = None;
        loop {
            // `force`: publish even if unchanged (a new connection, an engine transition, the interval).
            let force = tokio::select! {
                _ = cancel.cancelled() => break,
                r = mqtt_ready.changed() => {
                    if r.is_err() { break; }
                    true
                }
                r = engine.changed() => {
                    if r.is_err() { break; }
                    true
                }
                _ = check.tick() => false,
            };
            if !*mqtt_ready.borrow_and_update() {
                // Anything published now would only queue up behind the reconnect; the ConnAck republishes.
                last = None;
                continue;
            }
            let now = Instant::now();
            let current = Capacity::read(&board, false);
            let due = match &last {
                None => true,
                Some((published, at)) => force || *published != current || now >= *at + settings.interval,
            };
            if due && publisher.try_retained(&settings.topic, current.payload()) {
                last = Some((current, now));
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_message_has_the_documented_fields() {
        let c = Capacity {
            queue_depth: 3,
            max_queue: 1000,
            inflight: 2,
            max_inflight: 64,
            engine_state: "ready",
            accepting_requests: true,
            retry_after_ms: None,
        };
        assert_eq!(
            serde_json::to_value(&c).unwrap(),
            serde_json::json!({"queueDepth":3,"maxQueue":1000,"inflight":2,"maxInflight":64,"engineState":"ready","acceptingRequests":true})
        );
        let refusing = Capacity {
            accepting_requests: false,
            retry_after_ms: Some(1500),
            ..c
        };
        assert_eq!(serde_json::to_value(&refusing).unwrap()["retryAfterMs"], 1500);
        assert_eq!(CapacitySettings::topic_for("site/ai"), "site/ai/capacity");
    }
}
