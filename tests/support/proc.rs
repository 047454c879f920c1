//! Helpers for the fault suite (`tests/faults_engine.rs`): the engine's processes under a running `mqtt-llm`
//! (read from `/proc`), a process's resident memory, an open-loop request generator, and a subscriber that
//! records each delivery's QoS and arrival time (what [`TestClient`](super::TestClient) does not keep).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::task::JoinSet;

use super::{MqttLlm, TestClient, WAIT, children_of, group_members, proc_stats};

/// `/proc/PID/cmdline`, split at NULs; empty when the process is gone.
pub fn cmdline(pid: i32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|raw| {
            raw.split(|&b| b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// The state letter of `/proc/PID/stat` (`R`, `S`, `T` stopped, `Z` zombie...); `None` when gone.
pub fn state(pid: i32) -> Option<char> {
    proc_stats().into_iter().find(|s| s.pid == pid).map(|s| s.state)
}

/// Resident memory (`VmRSS` of `/proc/PID/status`) in KiB; `None` when the process is gone.
pub fn rss_kib(pid: i32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The engine's processes under a running `mqtt-llm` (README, Lifecycle): `mqtt-llm` → `mqtt-llm
/// __engine-guard` (leader of its own process group) → the engine (`vllm serve`, here `vllm-sim`) → its
/// `EngineCore` child, all in the guard's group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineTree {
    pub guard: i32,
    pub engine: i32,
    pub core: i32,
}

impl EngineTree {
    /// The tree under `server`, whose engine is ready. Panics, with what was found, when it is not that shape.
    pub fn of(server: &MqttLlm) -> Self {
        let guard = children_of(server.pid())
            .into_iter()
            .find(|&p| group_members(p).contains(&p))
            .expect("the guard: a child of mqtt-llm leading its own process group");
        assert!(
            cmdline(guard).iter().any(|a| a == "__engine-guard"),
            "not the guard: {:?}",
            cmdline(guard)
        );
        let engine = only(children_of(guard), "the engine under the guard");
        let core = only(children_of(engine), "the EngineCore under the engine");
        assert!(
            cmdline(core).iter().any(|a| a == "__engine-core"),
            "not the EngineCore: {:?}",
            cmdline(core)
        );
        Self { guard, engine, core }
    }

    /// Every process (zombies included) still in the engine's process group.
    pub fn group(&self) -> Vec<i32> {
        group_members(self.guard)
    }

    /// Whether any of the three processes still exists (a zombie counts: nobody reaped it).
    pub fn any_left(&self) -> bool {
        [self.guard, self.engine, self.core]
            .into_iter()
            .any(|p| state(p).is_some())
    }
}

fn only(pids: Vec<i32>, what: &str) -> i32 {
    match pids[..] {
        [pid] => pid,
        _ => panic!("expected exactly one process as {what}, found {pids:?}"),
    }
}

/// Samples a process's RSS every `every` on a background task (a measurement, not a synchronisation).
pub struct RssSampler {
    samples: Arc<Mutex<Vec<u64>>>,
    _task: JoinSet<()>,
}

impl RssSampler {
    /// Starts with a sample taken now.
    pub fn start(pid: i32, every: Duration) -> Self {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let into = Arc::clone(&samples);
        let mut task = JoinSet::new();
        task.spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                let Some(kib) = rss_kib(pid) else { break };
                into.lock().unwrap().push(kib);
            }
        });
        Self { samples, _task: task }
    }

    /// Every sample so far, in KiB, oldest first.
    pub fn samples(&self) -> Vec<u64> {
        self.samples.lock().unwrap().clone()
    }
}

/// One publish a [`Recorder`] received, with its QoS and arrival time.
pub type Delivery = super::Received;

/// An MQTT 5 subscriber that keeps, for each delivery, the QoS the broker delivered it with and when it arrived.
pub type Recorder = TestClient;

/// A request asking for a stream, for session `session`: echo mode answers with a line that holds `message`,
/// one token per word or so, so a long message makes a long stream.
pub fn stream_request(session: &str, message: &str) -> serde_json::Value {
    serde_json::json!({"sessionId": session, "message": message, "stream": true, "maxTokens": 2000})
}

/// A message of `words` words: with the sim's echo mode, a reply of about as many tokens.
pub fn long_message(words: usize) -> String {
    (0..words).map(|i| format!("w{i}")).collect::<Vec<_>>().join(" ")
}

/// Publish a stream request for each of `sessions` on `general/user_input`, then wait until each has sent a
/// stream frame (all are in flight). Frames and replies seen meanwhile are returned, by topic.
pub async fn start_streams(
    client: &TestClient,
    recorder: &mut Recorder,
    sessions: &[String],
    message: &str,
) -> HashMap<String, Vec<Delivery>> {
    for s in sessions {
        client
            .publish_json("general/user_input", stream_request(s, message))
            .await;
    }
    let mut seen: HashMap<String, Vec<Delivery>> = HashMap::new();
    let streaming = |seen: &HashMap<String, Vec<Delivery>>| {
        sessions
            .iter()
            .all(|s| seen.contains_key(&format!("general/assistant_stream/{s}")))
    };
    while !streaming(&seen) {
        let d = recorder.recv().await;
        seen.entry(d.topic.clone()).or_default().push(d);
    }
    seen
}

/// An open-loop load: one request every `period` until `duration` has passed, each in its own session
/// (`{prefix}{n}`), whatever the replies. Returns when each request was published, by session.
pub async fn open_loop(
    client: &TestClient,
    prefix: &str,
    period: Duration,
    duration: Duration,
    body: impl Fn(&str) -> serde_json::Value,
) -> HashMap<String, Instant> {
    let mut sent = HashMap::new();
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let end = Instant::now() + duration;
    while Instant::now() < end {
        tick.tick().await;
        let session = format!("{prefix}{}", sent.len());
        client.publish_json("general/user_input", body(&session)).await;
        sent.insert(session, Instant::now());
    }
    sent
}

/// Poll `/readyz` (every 20 ms, for at most [`WAIT`]) until it answers 200.
pub async fn wait_readyz_200(server: &MqttLlm) {
    let ok = tokio::time::timeout(WAIT, async {
        while server.get("/readyz").await.0 != 200 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(ok.is_ok(), "/readyz never answered 200 again");
}

/// Summary of RSS samples in MiB: (first, max, last).
pub fn rss_summary_mib(samples: &[u64]) -> (f64, f64, f64) {
    let mib = |k: u64| k as f64 / 1024.0;
    let first = samples.first().copied().unwrap_or(0);
    let max = samples.iter().copied().max().unwrap_or(0);
    let last = samples.last().copied().unwrap_or(0);
    (mib(first), mib(max), mib(last))
}

/// Poll `/metrics` (every 20 ms, for at most [`WAIT`]) until the metric, as [`MqttLlm::metric`] reads it, is at
/// most `value` (for a gauge coming back down; [`MqttLlm::wait_metric`] waits for one going up).
pub async fn wait_metric_at_most(server: &MqttLlm, prefix: &str, value: f64) {
    let ok = tokio::time::timeout(WAIT, async {
        while server.metric(prefix).await > value {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(ok.is_ok(), "{prefix} never came down to {value}");
}
