//! Fault-injection fixtures for `tests/faults_broker.rs`: a broker that logs every packet (to count PUBACKs and
//! audit topics), killing and reviving it on the same port, a TCP proxy that can stall (stop reading without
//! closing), cut and restore, an MQTT 5 client that re-subscribes after every reconnect, one-shot publishers for
//! oversized payloads (MQTT 3.1.1 and 5), and `/proc` readers (resident memory). Like the rest of `support`,
//! every wait is on a signal or bounded by [`WAIT`]; polling is only for what announces nothing (metrics, RSS).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Filter, Packet};
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use super::{MOSQUITTO_TRIES, Mosquitto, MqttLlm, Received, Started, WAIT, free_port};

// ---------------------------------------------------------------------------------------------------------------
// The broker

/// A mosquitto like [`Mosquitto::start`] that also logs every packet it sends and receives (`log_type all`):
/// `Received PUBLISH from CLIENT (d0, q1, r0, m3, 'TOPIC', ... (N bytes))`, `Sending PUBACK to CLIENT (m3, rc0)`.
pub async fn verbose_broker() -> Mosquitto {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("mosquitto.conf");
    for _ in 0..MOSQUITTO_TRIES {
        let port = free_port();
        let text = format!(
            "per_listener_settings false\nallow_anonymous true\nset_tcp_nodelay true\npersistence false\n\
             log_type all\nlistener {port} 127.0.0.1\n"
        );
        std::fs::write(&conf, text).unwrap();
        let (child, log, started) = Mosquitto::spawn(&conf).await;
        if let Started::Running = started {
            return Mosquitto {
                port,
                child,
                log,
                conf,
                _dir: dir,
            };
        }
    }
    panic!("mosquitto found no free port in {MOSQUITTO_TRIES} tries");
}

/// `kill -9` the broker and reap it: every connection drops at once, with nothing said, and (persistence off)
/// every session and subscription is forgotten.
pub async fn kill_broker(broker: &mut Mosquitto) {
    broker.child.kill().await.unwrap();
}

/// Start the broker again on the same port and configuration after [`kill_broker`]; returns once it runs.
pub async fn revive_broker(broker: &mut Mosquitto) {
    let (child, log, started) = Mosquitto::spawn(&broker.conf).await;
    assert!(
        matches!(started, Started::Running),
        "the port was taken while mosquitto was down:\n{}",
        log.seen.join("\n")
    );
    (broker.child, broker.log) = (child, log);
}

/// Every line the (current) broker has logged so far, reading what has arrived without waiting.
pub fn broker_log(broker: &mut Mosquitto) -> &[String] {
    while let Ok(line) = broker.log.rx.try_recv() {
        broker.log.seen.push(line);
    }
    &broker.log.seen
}

/// The topics of the publishes the broker received from clients whose id starts with `client_prefix`.
pub fn published_topics(log: &[String], client_prefix: &str) -> Vec<String> {
    let from = format!("Received PUBLISH from {client_prefix}");
    log.iter()
        .filter(|l| l.contains(&from))
        .filter_map(|l| l.split('\'').nth(1).map(str::to_owned))
        .collect()
}

/// How many PUBACKs the broker sent to clients whose id starts with `client_prefix`.
pub fn pubacks_to(log: &[String], client_prefix: &str) -> usize {
    let to = format!("Sending PUBACK to {client_prefix}");
    log.iter().filter(|l| l.contains(&to)).count()
}

/// Wait until the broker's log satisfies `pred` (read every 20 ms: a log line is no event we can await without
/// consuming it), at most [`WAIT`].
pub async fn wait_broker_log(broker: &mut Mosquitto, what: &str, pred: impl Fn(&[String]) -> bool) {
    let ok = tokio::time::timeout(WAIT, async {
        while !pred(broker_log(broker)) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(ok.is_ok(), "never saw {what} in the broker's log");
}

// ---------------------------------------------------------------------------------------------------------------
// A proxy that stalls

/// What the proxy does with the bytes of its connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    Forward,
    /// Stop reading what the client (mqtt-llm) sends; the broker's side still flows. The connection stays open.
    StallUpstream,
    /// Stop reading either side; the connection stays open.
    Stall,
    /// Close every connection, and every new one as soon as it is accepted.
    Cut,
}

/// A TCP proxy from a port of its own (bound on port 0) to `127.0.0.1:target` that a test can tell to stall
/// (stop reading and forwarding without closing, as a wedged broker or a black-holed link does), resume, cut
/// (close everything, refuse new connections) and restore.
pub struct StallProxy {
    pub port: u16,
    flow: watch::Sender<Flow>,
    accepted: Arc<AtomicUsize>,
    _tasks: JoinSet<()>,
}

impl StallProxy {
    pub async fn start(target: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (flow, flow_rx) = watch::channel(Flow::Forward);
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&accepted);
        let mut tasks = JoinSet::new();
        tasks.spawn(async move {
            let mut connections = JoinSet::new();
            while let Ok((inbound, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                if *flow_rx.borrow() == Flow::Cut {
                    continue;
                }
                connections.spawn(relay(inbound, target, flow_rx.clone()));
            }
        });
        Self {
            port,
            flow,
            accepted,
            _tasks: tasks,
        }
    }

    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// Connections accepted so far (cut ones included).
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Stop reading what clients send (their publishes pile up in the sockets); the broker's side still flows.
    pub fn stall_upstream(&self) {
        self.flow.send_replace(Flow::StallUpstream);
    }

    /// Stop reading both sides.
    pub fn stall(&self) {
        self.flow.send_replace(Flow::Stall);
    }

    /// Forward again, on the same connections.
    pub fn resume(&self) {
        self.flow.send_replace(Flow::Forward);
    }

    /// Close every connection and every new one, until [`Self::resume`].
    pub fn cut(&self) {
        self.flow.send_replace(Flow::Cut);
    }
}

/// Forward one accepted connection until either side closes or the proxy is cut.
async fn relay(inbound: TcpStream, target: u16, flow: watch::Receiver<Flow>) {
    let Ok(outbound) = TcpStream::connect(("127.0.0.1", target)).await else {
        return;
    };
    let _ = (inbound.set_nodelay(true), outbound.set_nodelay(true));
    let (client_read, client_write) = inbound.into_split();
    let (server_read, server_write) = outbound.into_split();
    let stalled_up = |f: &Flow| matches!(f, Flow::StallUpstream | Flow::Stall);
    let stalled_down = |f: &Flow| matches!(f, Flow::Stall);
    tokio::select! {
        _ = pump(client_read, server_write, flow.clone(), stalled_up) => {}
        _ = pump(server_read, client_write, flow, stalled_down) => {}
    }
}

/// Copy one direction; before each read, wait while `stalled` holds. Returns on EOF, an error or a cut.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut flow: watch::Receiver<Flow>,
    stalled: impl Fn(&Flow) -> bool,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let Ok(state) = flow.wait_for(|f| !stalled(f)).await.map(|f| *f) else {
            return;
        };
        if state == Flow::Cut {
            return;
        }
        let n = tokio::select! {
            n = from.read(&mut buf) => match n {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            // A stall or a cut while waiting for bytes: look at the state again before reading.
            _ = flow.changed() => continue,
        };
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Clients

/// An MQTT 5 client (clean start) that subscribes to its filters after every ConnAck, as a real client must
/// when its broker forgets sessions. Counts the SubAcks, so that a test can wait for it to be subscribed again.
pub struct Subscriber {
    pub client: AsyncClient,
    rx: mpsc::UnboundedReceiver<Received>,
    subscribed: watch::Receiver<usize>,
    _tasks: JoinSet<()>,
}

impl Subscriber {
    /// Connect to `port`, subscribe to `filters` (QoS 1) and wait for the first SubAck.
    pub async fn connect(port: u16, filters: &[String]) -> Self {
        let id = format!("sub-{:08x}", rand::random::<u32>());
        let mut opts = MqttOptions::new(id, "127.0.0.1", port);
        opts.set_keep_alive(Duration::from_secs(30))
            .set_max_packet_size(Some(4 * 1024 * 1024));
        let (client, mut eventloop) = AsyncClient::new(opts, 1024);
        let (tx, rx) = mpsc::unbounded_channel();
        let (subscribed_tx, subscribed) = watch::channel(0usize);
        let filters: Vec<Filter> = filters
            .iter()
            .map(|f| Filter::new(f.clone(), QoS::AtLeastOnce))
            .collect();
        let handle = client.clone();
        let mut tasks = JoinSet::new();
        tasks.spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        // Never await the client from the task that polls its event loop.
                        let _ = handle.try_subscribe_many(filters.clone());
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        subscribed_tx.send_modify(|n| *n += 1);
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let _ = tx.send(Received::from(p));
                    }
                    Ok(_) => {}
                    // Reconnect pacing, not synchronisation: the next poll reconnects.
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        });
        let mut this = Self {
            client,
            rx,
            subscribed,
            _tasks: tasks,
        };
        this.wait_subscribed(1).await;
        this
    }

    /// Wait until the client has been subscribed `times` times (once per connection).
    pub async fn wait_subscribed(&mut self, times: usize) {
        let ok = tokio::time::timeout(WAIT, self.subscribed.wait_for(|n| *n >= times)).await;
        assert!(ok.is_ok(), "client not subscribed {times} times");
    }

    pub async fn publish_json(&self, topic: &str, value: serde_json::Value) {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, serde_json::to_vec(&value).unwrap())
            .await
            .unwrap();
    }

    /// The next message received, if one comes within [`WAIT`].
    pub async fn recv(&mut self) -> Received {
        tokio::time::timeout(WAIT, self.rx.recv())
            .await
            .expect("no message received")
            .expect("client closed")
    }

    /// The next message received before `deadline`, if any.
    pub async fn recv_before(&mut self, deadline: tokio::time::Instant) -> Option<Received> {
        tokio::time::timeout_at(deadline, self.rx.recv()).await.ok().flatten()
    }

    /// Whatever arrives within `window` (only to check that nothing more arrives after an awaited final
    /// message; never to wait for something expected).
    pub async fn drain_for(&mut self, window: Duration) -> Vec<Received> {
        let mut got = Vec::new();
        while let Ok(Some(m)) = tokio::time::timeout(window, self.rx.recv()).await {
            got.push(m);
        }
        got
    }
}

/// MQTT protocol version of a one-shot publisher.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V311,
    V5,
}

/// Connect to `port` with room for `payload`, publish it at QoS 1 on `topic`, wait for the broker's PUBACK and
/// disconnect.
pub async fn publish_once(version: Version, port: u16, topic: &str, payload: Bytes) {
    let id = format!("big-{:08x}", rand::random::<u32>());
    let room = payload.len() + 1024;
    let acked = match version {
        Version::V311 => {
            let mut opts = rumqttc::MqttOptions::new(id, "127.0.0.1", port);
            opts.set_max_packet_size(room, room);
            let (client, mut eventloop) = rumqttc::AsyncClient::new(opts, 10);
            client
                .publish(topic, rumqttc::QoS::AtLeastOnce, false, payload)
                .await
                .unwrap();
            tokio::time::timeout(WAIT, async {
                loop {
                    match eventloop.poll().await {
                        Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_))) => break true,
                        Ok(_) => {}
                        Err(e) => panic!("MQTT 3.1.1 publisher: {e}"),
                    }
                }
            })
            .await
        }
        Version::V5 => {
            let mut opts = MqttOptions::new(id, "127.0.0.1", port);
            opts.set_max_packet_size(Some(u32::try_from(room).unwrap()));
            let (client, mut eventloop) = AsyncClient::new(opts, 10);
            client.publish(topic, QoS::AtLeastOnce, false, payload).await.unwrap();
            tokio::time::timeout(WAIT, async {
                loop {
                    match eventloop.poll().await {
                        Ok(Event::Incoming(Packet::PubAck(_))) => break true,
                        Ok(_) => {}
                        Err(e) => panic!("MQTT 5 publisher: {e}"),
                    }
                }
            })
            .await
        }
    };
    assert!(acked.is_ok(), "no PUBACK for the {version:?} publish on {topic}");
}

// ---------------------------------------------------------------------------------------------------------------
// Metrics and /proc

/// Wait until the metric (summed over its labels, as [`MqttLlm::metric`] reads it) satisfies `pred`; polls
/// `/metrics` (nothing pushes a metric), at most [`WAIT`]. Returns the value seen.
pub async fn wait_metric_where(server: &MqttLlm, prefix: &str, what: &str, pred: impl Fn(f64) -> bool) -> f64 {
    let found = tokio::time::timeout(WAIT, async {
        loop {
            let v = server.metric(prefix).await;
            if pred(v) {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    match found {
        Ok(v) => v,
        Err(_) => panic!("{prefix} never {what} (last {})", server.metric(prefix).await),
    }
}

/// Resident memory of process `pid` in KiB (`VmRSS` of `/proc/PID/status`).
pub fn rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS for {pid}"))
}
