//! The successor server's liveness topic, kept for the tools that watch it: `{first project}/status`.
//!
//! The original's successor (`llamacpp_mqtt_deploy.py`, seed-protocol §1.3) published `{"service":id,
//! "status":"online","ts":...}` there on connect and every 30 s, not retained, with a Last Will
//! `{"service":id,"status":"offline"}`. mqtt-llm does the same, beside its own retained `mqtt-llm/status`:
//!
//! - `online` once the subscriptions are acknowledged after every (re)connect, then every `interval` while
//!   connected (the heartbeat task, [`spawn_legacy_status`]), QoS 1, never retained;
//! - `offline` on a clean shutdown, queued by [`MqttHandle::shutdown`](super::eventloop::MqttHandle::shutdown)
//!   with mqtt-llm's own offline status, before the DISCONNECT.
//!
//! There is no Last Will here: one MQTT connection carries one Will, and mqtt-llm's is its own status topic's. A
//! watcher of this topic notices a dead mqtt-llm by its silence: no `online` with a `ts` newer than two
//! intervals (60 s by default).
//!
//! `service` is mqtt-llm's MQTT client id (the successor used its own, `llamacpp-deploy-{8hex}`); `ts` is Unix
//! time in seconds, a number, as Python's `time.time()` gives it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use mqtt_llm_protocol::topics::ProjectName;
use serde::Serialize;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::publisher::Publisher;

/// Where and how often (`--legacy-status`, `--legacy-status-interval`); `None` in the settings when turned off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegacyStatusSettings {
    /// `{first project}/status`.
    pub topic: String,
    /// Between two `online` messages while connected.
    pub interval: Duration,
}

impl LegacyStatusSettings {
    /// `{project}/status`.
    pub fn topic_for(project: &ProjectName) -> String {
        format!("{}/status", project.as_str())
    }
}

/// The payloads, for one instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegacyStatus {
    pub topic: String,
    /// The MQTT client id.
    pub service: String,
}

#[derive(Serialize)]
struct Payload<'a> {
    service: &'a str,
    status: &'static str,
    ts: f64,
}

impl LegacyStatus {
    /// `{"service","status":"online","ts"}`, `ts` now.
    pub fn online(&self) -> Bytes {
        self.payload("online")
    }

    /// `{"service","status":"offline","ts"}`, `ts` now (the successor's Will had no `ts`; a shutdown knows when).
    pub fn offline(&self) -> Bytes {
        self.payload("offline")
    }

    fn payload(&self, status: &'static str) -> Bytes {
        let payload = Payload {
            service: &self.service,
            status,
            ts: unix_seconds(SystemTime::now()),
        };
        Bytes::from(serde_json::to_vec(&payload).expect("legacy status payloads always serialise"))
    }
}

/// Seconds since the Unix epoch, to the millisecond.
fn unix_seconds(at: SystemTime) -> f64 {
    let millis = at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis());
    // Exact: milliseconds since 1970 stay far below 2^53.
    millis as f64 / 1000.0
}

/// Run the heartbeat on `tracker` until `stop`: `online` each time `ready` turns true, then every `interval`
/// while it stays true.
pub(super) fn spawn_legacy_status(
    status: LegacyStatus,
    interval: Duration,
    publisher: Publisher,
    ready: watch::Receiver<bool>,
    tracker: &TaskTracker,
    stop: CancellationToken,
) {
    tracker.spawn(heartbeat(ready, interval, stop, move || {
        if !publisher.try_notice(&status.topic, status.online()) {
            tracing::warn!(topic = status.topic, "cannot queue the legacy online status");
        }
    }));
}

/// The heartbeat's schedule, apart from what it publishes (so that a paused clock can drive it).
async fn heartbeat(
    mut ready: watch::Receiver<bool>,
    interval: Duration,
    stop: CancellationToken,
    mut beat: impl FnMut(),
) {
    loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            r = ready.wait_for(|r| *r) => if r.is_err() { return },
        }
        beat();
        let mut next = tokio::time::Instant::now() + interval;
        loop {
            tokio::select! {
                biased;
                _ = stop.cancelled() => return,
                r = ready.wait_for(|r| !*r) => if r.is_err() { return } else { break },
                _ = tokio::time::sleep_until(next) => {
                    beat();
                    next += interval;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[test]
    fn payloads_are_the_successors() {
        let status = LegacyStatus {
            topic: "general/status".into(),
            service: "mqtt-llm-0a1b2c3d".into(),
        };
        let online: serde_json::Value = serde_json::from_slice(&status.online()).unwrap();
        assert_eq!(online["service"], "mqtt-llm-0a1b2c3d");
        assert_eq!(online["status"], "online");
        let ts = online["ts"].as_f64().unwrap();
        let now = unix_seconds(SystemTime::now());
        assert!(ts > 1.7e9 && ts <= now, "{online}");
        assert_eq!(online.as_object().unwrap().len(), 3, "{online}");
        let offline: serde_json::Value = serde_json::from_slice(&status.offline()).unwrap();
        assert_eq!(offline["status"], "offline");
        assert_eq!(offline["service"], "mqtt-llm-0a1b2c3d");
    }

    /// Lets every ready task run (the paused clock does not move).
    async fn settle() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn beats_on_connect_and_every_interval_while_connected() {
        let (ready_tx, ready) = watch::channel(false);
        let stop = CancellationToken::new();
        let beats = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&beats);
        let task = TaskTracker::new().spawn(heartbeat(ready, Duration::from_secs(30), stop.clone(), move || {
            count.fetch_add(1, Ordering::SeqCst);
        }));
        let n = || beats.load(Ordering::SeqCst);

        tokio::time::advance(Duration::from_secs(90)).await;
        settle().await;
        assert_eq!(n(), 0, "nothing before the first connection");

        ready_tx.send_replace(true);
        settle().await;
        assert_eq!(n(), 1, "online as soon as connected");
        tokio::time::advance(Duration::from_secs(29)).await;
        settle().await;
        assert_eq!(n(), 1);
        tokio::time::advance(Duration::from_secs(1)).await;
        settle().await;
        assert_eq!(n(), 2, "the heartbeat after one interval");
        tokio::time::advance(Duration::from_secs(30)).await;
        settle().await;
        assert_eq!(n(), 3);

        ready_tx.send_replace(false);
        settle().await;
        tokio::time::advance(Duration::from_secs(120)).await;
        settle().await;
        assert_eq!(n(), 3, "silent while disconnected");

        ready_tx.send_replace(true);
        settle().await;
        assert_eq!(n(), 4, "online again on reconnect");

        stop.cancel();
        settle().await;
        tokio::time::advance(Duration::from_secs(60)).await;
        settle().await;
        assert_eq!(n(), 4, "silent once stopped");
        assert!(task.is_finished());
    }
}
