//! The embedded MQTT broker (`mqtt_llm::broker`) with real clients on real sockets: MQTT v3.1.1 and v5 interop
//! (properties), request/response, retained messages, wills, QoS 1 and persistent sessions, passwords, TLS,
//! WebSocket, 1,000 idle clients, port 0, a taken port, shutdown, and two brokers in one process.
//! Every wait is on an event (CONNACK, SUBACK, a message), bounded by `WAIT`; none is a sleep.
#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use mqtt_llm::broker::{BrokerError, BrokerSettings, BrokerStats, Credentials, EmbeddedBroker, ListenerKind, TlsFiles};
use rumqttc::v5::mqttbytes::v5::{Packet as Packet5, PublishProperties};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(10);
const LOOPBACK_0: &str = "127.0.0.1:0";

fn local_settings() -> BrokerSettings {
    BrokerSettings {
        tcp: Some(LOOPBACK_0.parse().unwrap()),
        ws: None,
        ..BrokerSettings::default()
    }
}

async fn start(settings: BrokerSettings) -> EmbeddedBroker {
    EmbeddedBroker::start(settings).await.unwrap()
}

/// What a client's event loop saw, in order.
#[derive(Debug)]
enum Seen {
    ConnAck,
    SubAck,
    PubAck,
    /// The client sent DISCONNECT.
    Disconnected,
    Publish {
        topic: String,
        payload: Bytes,
        props: Option<PublishProperties>,
    },
    /// The event loop ended with this error (a refused CONNECT, a dropped connection).
    Failed(String),
}

/// A client's receiving side: its event loop runs in `tasks` and reports here.
struct Inbox(mpsc::UnboundedReceiver<Seen>);

impl Inbox {
    async fn next(&mut self) -> Seen {
        timeout(WAIT, self.0.recv())
            .await
            .expect("no MQTT event in time")
            .expect("event loop gone")
    }

    /// Skips other events until `want` matches one; a failure on the way fails the test.
    async fn until<T>(&mut self, mut want: impl FnMut(&Seen) -> Option<T>) -> T {
        loop {
            let seen = self.next().await;
            if let Some(found) = want(&seen) {
                return found;
            }
            if let Seen::Failed(e) = seen {
                panic!("client failed: {e}");
            }
        }
    }

    async fn connack(&mut self) {
        self.until(|s| matches!(s, Seen::ConnAck).then_some(())).await
    }

    async fn suback(&mut self) {
        self.until(|s| matches!(s, Seen::SubAck).then_some(())).await
    }

    async fn puback(&mut self) {
        self.until(|s| matches!(s, Seen::PubAck).then_some(())).await
    }

    /// After DISCONNECT neither side closes the socket by itself (rmqtt leaves that to the client, rumqttc's event
    /// loop keeps reading): the caller drops the event loop next.
    async fn disconnected(&mut self) {
        self.until(|s| matches!(s, Seen::Disconnected).then_some(())).await
    }

    async fn publish(&mut self) -> (String, Bytes, Option<PublishProperties>) {
        self.until(|s| match s {
            Seen::Publish { topic, payload, props } => Some((topic.clone(), payload.clone(), props.clone())),
            _ => None,
        })
        .await
    }

    async fn failure(&mut self) -> String {
        loop {
            if let Seen::Failed(e) = self.next().await {
                return e;
            }
        }
    }
}

/// An MQTT v3.1.1 client (rumqttc's v4 API). `stop_on_error`: the event loop ends at its first error instead of
/// reconnecting.
fn v311(tasks: &mut JoinSet<()>, opts: rumqttc::MqttOptions) -> (rumqttc::AsyncClient, Inbox) {
    let (client, mut eventloop) = rumqttc::AsyncClient::new(opts, 64);
    let (tx, rx) = mpsc::unbounded_channel();
    tasks.spawn(async move {
        loop {
            let seen = match eventloop.poll().await {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_))) => Seen::ConnAck,
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_))) => Seen::SubAck,
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_))) => Seen::PubAck,
                Ok(rumqttc::Event::Outgoing(rumqttc::Outgoing::Disconnect)) => Seen::Disconnected,
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => Seen::Publish {
                    topic: p.topic,
                    payload: p.payload,
                    props: None,
                },
                Ok(_) => continue,
                Err(e) => {
                    let _ = tx.send(Seen::Failed(format!("{e:?}")));
                    return;
                }
            };
            if tx.send(seen).is_err() {
                return;
            }
        }
    });
    (client, Inbox(rx))
}

fn v311_opts(id: &str, addr: SocketAddr) -> rumqttc::MqttOptions {
    let mut opts = rumqttc::MqttOptions::new(id, addr.ip().to_string(), addr.port());
    opts.set_keep_alive(Duration::from_secs(30));
    opts
}

/// An MQTT v5 client (rumqttc's v5 API).
fn v5(tasks: &mut JoinSet<()>, opts: rumqttc::v5::MqttOptions) -> (rumqttc::v5::AsyncClient, Inbox) {
    let (client, mut eventloop) = rumqttc::v5::AsyncClient::new(opts, 64);
    let (tx, rx) = mpsc::unbounded_channel();
    tasks.spawn(async move {
        loop {
            let seen = match eventloop.poll().await {
                Ok(rumqttc::v5::Event::Incoming(Packet5::ConnAck(_))) => Seen::ConnAck,
                Ok(rumqttc::v5::Event::Incoming(Packet5::SubAck(_))) => Seen::SubAck,
                Ok(rumqttc::v5::Event::Incoming(Packet5::PubAck(_))) => Seen::PubAck,
                Ok(rumqttc::v5::Event::Outgoing(rumqttc::Outgoing::Disconnect)) => Seen::Disconnected,
                Ok(rumqttc::v5::Event::Incoming(Packet5::Publish(p))) => Seen::Publish {
                    topic: String::from_utf8_lossy(&p.topic).into_owned(),
                    payload: p.payload,
                    props: p.properties,
                },
                Ok(_) => continue,
                Err(e) => {
                    let _ = tx.send(Seen::Failed(format!("{e:?}")));
                    return;
                }
            };
            if tx.send(seen).is_err() {
                return;
            }
        }
    });
    (client, Inbox(rx))
}

fn v5_opts(id: &str, addr: SocketAddr) -> rumqttc::v5::MqttOptions {
    let mut opts = rumqttc::v5::MqttOptions::new(id, addr.ip().to_string(), addr.port());
    opts.set_keep_alive(Duration::from_secs(30));
    opts
}

/// Waits until the broker's counters satisfy `ok` (the broker updates them on its own time, after the packets
/// that a client sees: a CONNACK, a delivery, a dropped socket).
async fn stats_until(broker: &EmbeddedBroker, what: &str, ok: impl Fn(&BrokerStats) -> bool) -> BrokerStats {
    let polled = timeout(WAIT, async {
        loop {
            let stats = broker.stats().await;
            if ok(&stats) {
                return stats;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    match polled {
        Ok(stats) => stats,
        Err(_) => panic!("the broker's counters never showed {what}: {:?}", broker.stats().await),
    }
}

async fn clients_connected(broker: &EmbeddedBroker, n: i64) {
    stats_until(broker, &format!("{n} clients"), |s| s.clients_connected == n).await;
}

fn rich_properties() -> PublishProperties {
    PublishProperties {
        response_topic: Some("replies/abc".into()),
        correlation_data: Some(Bytes::from_static(b"\x00corr-42\xff")),
        user_properties: vec![("k".into(), "v".into()), ("trace".into(), "t-1".into())],
        content_type: Some("application/json".into()),
        ..PublishProperties::default()
    }
}

/// A v3.1.1 subscriber and a v5 subscriber both get a v5 publish that carries properties (the case that breaks
/// rumqttd 0.20); the v5 one gets the properties intact (request/response: response topic and correlation data);
/// the broker keeps taking new connections afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_publish_with_properties_reaches_v311_and_v5_subscribers() {
    let broker = start(local_settings()).await;
    let addr = broker.tcp_addr().unwrap();
    let mut tasks = JoinSet::new();

    let (sub3, mut in3) = v311(&mut tasks, v311_opts("sub-v311", addr));
    in3.connack().await;
    sub3.subscribe("interop/+", rumqttc::QoS::AtLeastOnce).await.unwrap();
    in3.suback().await;
    let (sub5, mut in5) = v5(&mut tasks, v5_opts("sub-v5", addr));
    in5.connack().await;
    sub5.subscribe("interop/+", rumqttc::v5::mqttbytes::QoS::AtLeastOnce)
        .await
        .unwrap();
    in5.suback().await;

    let (publisher, mut inp) = v5(&mut tasks, v5_opts("pub-v5", addr));
    inp.connack().await;
    publisher
        .publish_with_properties(
            "interop/request",
            rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
            false,
            "hello",
            rich_properties(),
        )
        .await
        .unwrap();
    inp.puback().await;

    let (topic, payload, _) = in3.publish().await;
    assert_eq!((topic.as_str(), &payload[..]), ("interop/request", &b"hello"[..]));
    let (topic, payload, props) = in5.publish().await;
    assert_eq!((topic.as_str(), &payload[..]), ("interop/request", &b"hello"[..]));
    let props = props.expect("the v5 subscriber got no properties");
    let sent = rich_properties();
    assert_eq!(props.response_topic, sent.response_topic);
    assert_eq!(props.correlation_data, sent.correlation_data);
    assert_eq!(props.content_type, sent.content_type);
    assert_eq!(props.user_properties, sent.user_properties);

    // Request/response: the responder answers on the response topic with the correlation data.
    let (requester, mut inr) = v5(&mut tasks, v5_opts("requester", addr));
    inr.connack().await;
    requester
        .subscribe("replies/abc", rumqttc::v5::mqttbytes::QoS::AtLeastOnce)
        .await
        .unwrap();
    inr.suback().await;
    let reply = PublishProperties {
        correlation_data: props.correlation_data.clone(),
        ..PublishProperties::default()
    };
    sub5.publish_with_properties(
        props.response_topic.clone().unwrap(),
        rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
        false,
        "answer",
        reply,
    )
    .await
    .unwrap();
    let (topic, payload, props) = inr.publish().await;
    assert_eq!((topic.as_str(), &payload[..]), ("replies/abc", &b"answer"[..]));
    assert_eq!(props.unwrap().correlation_data, sent.correlation_data);

    // Still up: a new v3.1.1 client connects and round-trips.
    let (late, mut inl) = v311(&mut tasks, v311_opts("late", addr));
    inl.connack().await;
    late.subscribe("after/x", rumqttc::QoS::AtMostOnce).await.unwrap();
    inl.suback().await;
    late.publish("after/x", rumqttc::QoS::AtMostOnce, false, "still up")
        .await
        .unwrap();
    assert_eq!(&inl.publish().await.1[..], b"still up");

    // 5 clients, 4 subscriptions; received: request, answer, "still up"; sent: 2 requests, answer, "still up".
    stats_until(&broker, "the traffic above", |s| {
        s.clients_connected == 5 && s.subscriptions == 4 && s.messages_received == 3 && s.messages_sent == 4
    })
    .await;
    broker.shutdown().await;
}

/// A retained message reaches a subscriber that comes later; an empty retained publish clears it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_message_reaches_a_late_subscriber_until_cleared() {
    let broker = start(local_settings()).await;
    let addr = broker.tcp_addr().unwrap();
    let mut tasks = JoinSet::new();

    let (publisher, mut inp) = v311(&mut tasks, v311_opts("retainer", addr));
    inp.connack().await;
    publisher
        .publish("state/model", rumqttc::QoS::AtLeastOnce, true, "ready")
        .await
        .unwrap();
    inp.puback().await;
    stats_until(&broker, "1 retained message", |s| s.retained == 1).await;

    let (late, mut inl) = v311(&mut tasks, v311_opts("late-sub", addr));
    inl.connack().await;
    late.subscribe("state/#", rumqttc::QoS::AtLeastOnce).await.unwrap();
    let (topic, payload, _) = inl.publish().await;
    assert_eq!((topic.as_str(), &payload[..]), ("state/model", &b"ready"[..]));

    publisher
        .publish("state/model", rumqttc::QoS::AtLeastOnce, true, "")
        .await
        .unwrap();
    inp.puback().await;
    // The live subscriber sees the (empty) clearing publish; after it the store holds nothing.
    assert_eq!(&inl.publish().await.1[..], b"");
    stats_until(&broker, "no retained message", |s| s.retained == 0).await;

    // A marker published after the clear arrives, and nothing retained came before it.
    let (later, mut in2) = v311(&mut tasks, v311_opts("later-sub", addr));
    in2.connack().await;
    later.subscribe("state/#", rumqttc::QoS::AtLeastOnce).await.unwrap();
    in2.suback().await;
    publisher
        .publish("state/marker", rumqttc::QoS::AtLeastOnce, false, "m")
        .await
        .unwrap();
    let (topic, _, _) = in2.publish().await;
    assert_eq!(topic, "state/marker", "a cleared retained message was still delivered");
    broker.shutdown().await;
}

/// A client whose TCP connection dies without DISCONNECT (its event loop and socket dropped) has its will
/// published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_will_is_published_when_a_connection_dies() {
    let broker = start(local_settings()).await;
    let addr = broker.tcp_addr().unwrap();
    let mut tasks = JoinSet::new();

    let (watcher, mut inw) = v311(&mut tasks, v311_opts("watcher", addr));
    inw.connack().await;
    watcher
        .subscribe("devices/+/status", rumqttc::QoS::AtLeastOnce)
        .await
        .unwrap();
    inw.suback().await;

    let mut opts = v311_opts("dying", addr);
    opts.set_last_will(rumqttc::LastWill::new(
        "devices/dying/status",
        "offline",
        rumqttc::QoS::AtLeastOnce,
        false,
    ));
    let mut dying_tasks = JoinSet::new();
    let (_dying, mut ind) = v311(&mut dying_tasks, opts);
    ind.connack().await;
    dying_tasks.shutdown().await; // drops the event loop and its socket: no DISCONNECT is sent

    let (topic, payload, _) = inw.publish().await;
    assert_eq!(
        (topic.as_str(), &payload[..]),
        ("devices/dying/status", &b"offline"[..])
    );
    broker.shutdown().await;
}

/// QoS 1 end to end, and persistent sessions (v3.1.1 clean session false; v5 session expiry) get the QoS 1
/// messages published while they were offline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_sessions_get_qos1_messages_queued_while_offline() {
    let broker = start(local_settings()).await;
    let addr = broker.tcp_addr().unwrap();
    let mut tasks = JoinSet::new();

    // v3.1.1: subscribe with clean session false, go away cleanly, come back.
    let mut opts3 = v311_opts("persist-v311", addr);
    opts3.set_clean_session(false);
    let mut first = JoinSet::new();
    let (c3, mut i3) = v311(&mut first, opts3.clone());
    i3.connack().await;
    c3.subscribe("queue/v311", rumqttc::QoS::AtLeastOnce).await.unwrap();
    i3.suback().await;
    c3.disconnect().await.unwrap();
    i3.disconnected().await;
    first.shutdown().await;
    clients_connected(&broker, 0).await;

    // v5: session expiry 300 s.
    let mut opts5 = v5_opts("persist-v5", addr);
    opts5.set_clean_start(false);
    opts5.set_session_expiry_interval(Some(300));
    let mut first5 = JoinSet::new();
    let (c5, mut i5) = v5(&mut first5, opts5.clone());
    i5.connack().await;
    c5.subscribe("queue/v5", rumqttc::v5::mqttbytes::QoS::AtLeastOnce)
        .await
        .unwrap();
    i5.suback().await;
    c5.disconnect().await.unwrap();
    i5.disconnected().await;
    first5.shutdown().await;
    clients_connected(&broker, 0).await;

    let (publisher, mut inp) = v311(&mut tasks, v311_opts("queue-pub", addr));
    inp.connack().await;
    for topic in ["queue/v311", "queue/v5"] {
        publisher
            .publish(topic, rumqttc::QoS::AtLeastOnce, false, format!("queued for {topic}"))
            .await
            .unwrap();
        inp.puback().await;
    }

    let (_c3, mut i3) = v311(&mut tasks, opts3);
    let (topic, payload, _) = i3.publish().await;
    assert_eq!(
        (topic.as_str(), &payload[..]),
        ("queue/v311", &b"queued for queue/v311"[..])
    );
    let (_c5, mut i5) = v5(&mut tasks, opts5);
    let (topic, payload, _) = i5.publish().await;
    assert_eq!(
        (topic.as_str(), &payload[..]),
        ("queue/v5", &b"queued for queue/v5"[..])
    );
    broker.shutdown().await;
}

// `mosquitto_passwd -b -c FILE alice secret` (mosquitto 2.x: PBKDF2-SHA512, 101 iterations).
const ALICE: &str = "alice:$7$101$c2MgsWmgQpXuRaAW$811deHVaX5p599EQnR7i6WgarbSvgYt6BhJBQlcIo2j3RUMFbTXroVNiumM6qdGdHJLRueKPrw0uQIUQZVlmuw==";

/// With a password file, a wrong password (v3.1.1 and v5) and a client with no user name are refused; the right
/// password is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passwords_from_a_mosquitto_passwd_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("passwd");
    std::fs::write(&file, format!("# users\n{ALICE}\n")).unwrap();
    let settings = BrokerSettings {
        auth: Some(Credentials::from_file(&file).unwrap()),
        ..local_settings()
    };
    let broker = start(settings).await;
    let addr = broker.tcp_addr().unwrap();
    let mut tasks = JoinSet::new();

    let mut wrong = v311_opts("wrong", addr);
    wrong.set_credentials("alice", "Secret");
    let (_c, mut inbox) = v311(&mut tasks, wrong);
    let e = inbox.failure().await;
    assert!(e.contains("BadUserNamePassword"), "{e}");

    let (_c, mut inbox) = v311(&mut tasks, v311_opts("anonymous", addr));
    let e = inbox.failure().await;
    assert!(e.contains("ConnectionRefused"), "{e}");

    let mut wrong5 = v5_opts("wrong5", addr);
    wrong5.set_credentials("alice", "nope");
    let (_c, mut inbox) = v5(&mut tasks, wrong5);
    let e = inbox.failure().await;
    assert!(e.contains("BadUserNamePassword"), "{e}");

    let mut right = v311_opts("right", addr);
    right.set_credentials("alice", "secret");
    let (client, mut inbox) = v311(&mut tasks, right);
    inbox.connack().await;
    client.subscribe("auth/ok", rumqttc::QoS::AtMostOnce).await.unwrap();
    inbox.suback().await;
    broker.shutdown().await;
}

/// The password check also reads a file written by the real `mosquitto_passwd`, where it is installed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_written_by_mosquitto_passwd_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("passwd");
    let status = tokio::process::Command::new("mosquitto_passwd")
        .arg("-b")
        .arg("-c")
        .arg(&file)
        .args(["bob", "hunter2"])
        .status()
        .await;
    let Ok(status) = status else {
        eprintln!("mosquitto_passwd is not installed: skipped");
        return;
    };
    assert!(status.success());
    let credentials = Credentials::from_file(&file).unwrap();
    assert!(credentials.verify("bob", b"hunter2"));
    assert!(!credentials.verify("bob", b"hunter3"));
}

/// TLS on the TCP listener with a PEM certificate and key: a client trusting the certificate connects and
/// round-trips; a plain-TCP client cannot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_listener_with_pem_files() {
    let dir = tempfile::tempdir().unwrap();
    let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    let settings = BrokerSettings {
        tls: Some(TlsFiles { cert, key }),
        ..local_settings()
    };
    let broker = start(settings).await;
    let addr = broker.tcp_addr().unwrap();
    let mut tasks = JoinSet::new();

    let mut roots = rustls::RootCertStore::empty();
    roots.add(certified.cert.der().clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut opts = v311_opts("tls-client", addr);
    opts.set_transport(rumqttc::Transport::tls_with_config(rumqttc::TlsConfiguration::Rustls(
        Arc::new(config),
    )));
    let (client, mut inbox) = v311(&mut tasks, opts);
    inbox.connack().await;
    client.subscribe("tls/t", rumqttc::QoS::AtLeastOnce).await.unwrap();
    inbox.suback().await;
    client
        .publish("tls/t", rumqttc::QoS::AtLeastOnce, false, "over tls")
        .await
        .unwrap();
    assert_eq!(&inbox.publish().await.1[..], b"over tls");

    let (_plain, mut inbox) = v311(&mut tasks, v311_opts("plain", addr));
    inbox.failure().await;
    broker.shutdown().await;

    let missing = BrokerSettings {
        tls: Some(TlsFiles {
            cert: dir.path().join("nope.pem"),
            key: dir.path().join("key.pem"),
        }),
        ..local_settings()
    };
    let err = EmbeddedBroker::start(missing).await.unwrap_err();
    assert!(matches!(err, BrokerError::Tls { .. }), "{err:?}");
    assert!(err.to_string().contains("nope.pem"), "{err}");
}

/// Minimal MQTT 3.1.1 packets, for the raw WebSocket and idle-client tests.
fn connect_packet(client_id: &str, keep_alive_s: u16) -> Vec<u8> {
    let mut body = b"\x00\x04MQTT\x04\x02".to_vec();
    body.extend_from_slice(&keep_alive_s.to_be_bytes());
    body.extend_from_slice(&(client_id.len() as u16).to_be_bytes());
    body.extend_from_slice(client_id.as_bytes());
    packet(0x10, body)
}

fn packet(header: u8, body: Vec<u8>) -> Vec<u8> {
    assert!(body.len() < 128, "one-byte remaining length only");
    let mut out = vec![header, body.len() as u8];
    out.extend(body);
    out
}

fn topic_bytes(topic: &str) -> Vec<u8> {
    let mut out = (topic.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(topic.as_bytes());
    out
}

/// A bare WebSocket client: the upgrade on `/mqtt` with subprotocol `mqtt`, masked binary frames out, unmasked in.
struct WsClient {
    stream: TcpStream,
    buffered: Vec<u8>,
}

impl WsClient {
    async fn connect(addr: SocketAddr) -> (Self, String) {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let request = format!(
            "GET /mqtt HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Protocol: mqtt\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut byte = [0u8; 1];
            timeout(WAIT, stream.read_exact(&mut byte)).await.unwrap().unwrap();
            head.push(byte[0]);
        }
        (
            Self {
                stream,
                buffered: Vec::new(),
            },
            String::from_utf8_lossy(&head).into_owned(),
        )
    }

    async fn send(&mut self, mqtt: &[u8]) {
        let mask = [0x12u8, 0x34, 0x56, 0x78];
        assert!(mqtt.len() < 126);
        let mut frame = vec![0x82, 0x80 | mqtt.len() as u8];
        frame.extend_from_slice(&mask);
        frame.extend(mqtt.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.stream.write_all(&frame).await.unwrap();
    }

    /// The next MQTT packet (one-byte remaining length), across frame boundaries.
    async fn recv(&mut self) -> Vec<u8> {
        loop {
            if self.buffered.len() >= 2 && self.buffered.len() >= 2 + self.buffered[1] as usize {
                let len = 2 + self.buffered[1] as usize;
                return self.buffered.drain(..len).collect();
            }
            let mut head = [0u8; 2];
            timeout(WAIT, self.stream.read_exact(&mut head)).await.unwrap().unwrap();
            let len = match head[1] & 0x7f {
                126 => {
                    let mut ext = [0u8; 2];
                    self.stream.read_exact(&mut ext).await.unwrap();
                    u16::from_be_bytes(ext) as usize
                }
                n => n as usize,
            };
            let mut payload = vec![0u8; len];
            self.stream.read_exact(&mut payload).await.unwrap();
            if head[0] & 0x0f == 0x2 {
                self.buffered.extend(payload);
            }
        }
    }
}

/// A WebSocket client (path /mqtt, subprotocol mqtt) connects, subscribes, gets a message published over TCP, and
/// publishes one that a TCP subscriber gets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_client_subscribes_and_publishes() {
    let settings = BrokerSettings {
        ws: Some(LOOPBACK_0.parse().unwrap()),
        ..local_settings()
    };
    let broker = start(settings).await;
    let (tcp, ws) = (broker.tcp_addr().unwrap(), broker.ws_addr().unwrap());
    assert_ne!(ws.port(), 0);
    let mut tasks = JoinSet::new();

    let (mut client, head) = WsClient::connect(ws).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("sec-websocket-protocol: mqtt"),
        "{head}"
    );
    client.send(&connect_packet("ws-client", 30)).await;
    assert_eq!(client.recv().await, [0x20, 0x02, 0x00, 0x00], "CONNACK accepted");
    let mut subscribe = vec![0x00, 0x01];
    subscribe.extend(topic_bytes("ws/in"));
    subscribe.push(0x00);
    client.send(&packet(0x82, subscribe)).await;
    assert_eq!(client.recv().await, [0x90, 0x03, 0x00, 0x01, 0x00], "SUBACK QoS 0");

    let (tcp_client, mut inbox) = v311(&mut tasks, v311_opts("tcp-peer", tcp));
    inbox.connack().await;
    tcp_client.subscribe("ws/out", rumqttc::QoS::AtMostOnce).await.unwrap();
    inbox.suback().await;
    tcp_client
        .publish("ws/in", rumqttc::QoS::AtMostOnce, false, "to ws")
        .await
        .unwrap();
    let publish = client.recv().await;
    let mut expected = vec![0x30, 0];
    expected.extend(topic_bytes("ws/in"));
    expected.extend_from_slice(b"to ws");
    expected[1] = (expected.len() - 2) as u8;
    assert_eq!(publish, expected);

    let mut body = topic_bytes("ws/out");
    body.extend_from_slice(b"from ws");
    client.send(&packet(0x30, body)).await;
    let (topic, payload, _) = inbox.publish().await;
    assert_eq!((topic.as_str(), &payload[..]), ("ws/out", &b"from ws"[..]));
    broker.shutdown().await;
}

/// 1,000 clients connect at once and stay idle while a subscriber and a publisher still get through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_idle_clients_while_pubsub_works() {
    let broker = start(local_settings()).await;
    let addr = broker.tcp_addr().unwrap();
    let mut connects = JoinSet::new();
    for i in 0..1000 {
        connects.spawn(async move {
            let mut stream = TcpStream::connect(addr).await.unwrap();
            stream
                .write_all(&connect_packet(&format!("idle-{i}"), 0))
                .await
                .unwrap();
            let mut connack = [0u8; 4];
            timeout(WAIT, stream.read_exact(&mut connack)).await.unwrap().unwrap();
            assert_eq!(connack, [0x20, 0x02, 0x00, 0x00]);
            stream
        });
    }
    let mut idle = Vec::new();
    while let Some(stream) = connects.join_next().await {
        idle.push(stream.unwrap());
    }
    assert_eq!(idle.len(), 1000);
    clients_connected(&broker, 1000).await;

    let mut tasks = JoinSet::new();
    let (sub, mut inbox) = v5(&mut tasks, v5_opts("busy-sub", addr));
    inbox.connack().await;
    sub.subscribe("busy/t", rumqttc::v5::mqttbytes::QoS::AtLeastOnce)
        .await
        .unwrap();
    inbox.suback().await;
    let (publisher, mut inp) = v311(&mut tasks, v311_opts("busy-pub", addr));
    inp.connack().await;
    publisher
        .publish("busy/t", rumqttc::QoS::AtLeastOnce, false, "through")
        .await
        .unwrap();
    assert_eq!(&inbox.publish().await.1[..], b"through");
    drop(idle);
    broker.shutdown().await;
}

/// Port 0 resolves to the bound port; a taken port is a typed error with one sentence; shutdown closes the
/// listeners and drops connected clients without ending the process; two brokers run side by side.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_zero_taken_port_shutdown_and_two_brokers() {
    let a = start(BrokerSettings {
        ws: Some(LOOPBACK_0.parse().unwrap()),
        ..local_settings()
    })
    .await;
    let b = start(local_settings()).await;
    let (a_tcp, a_ws, b_tcp) = (a.tcp_addr().unwrap(), a.ws_addr().unwrap(), b.tcp_addr().unwrap());
    assert!(a_tcp.port() != 0 && a_ws.port() != 0 && a_tcp != b_tcp);

    // A taken port (held by broker a) is AddrInUse, for either listener.
    let err = EmbeddedBroker::start(BrokerSettings {
        tcp: Some(a_tcp),
        ws: None,
        ..BrokerSettings::default()
    })
    .await
    .unwrap_err();
    assert!(
        matches!(
            err,
            BrokerError::AddrInUse {
                which: ListenerKind::Tcp,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains(&format!("--broker mqtt://{a_tcp}")), "{err}");
    let err = EmbeddedBroker::start(BrokerSettings {
        ws: Some(a_ws),
        ..local_settings()
    })
    .await
    .unwrap_err();
    assert!(
        matches!(
            err,
            BrokerError::AddrInUse {
                which: ListenerKind::Ws,
                ..
            }
        ),
        "{err:?}"
    );

    let mut tasks = JoinSet::new();
    let (client_a, mut inbox_a) = v311(&mut tasks, v311_opts("on-a", a_tcp));
    inbox_a.connack().await;
    client_a.subscribe("x", rumqttc::QoS::AtMostOnce).await.unwrap();
    inbox_a.suback().await;

    a.shutdown().await;
    // Its client is dropped, its listeners refuse.
    inbox_a.failure().await;
    assert!(
        TcpStream::connect(a_tcp).await.is_err(),
        "TCP listener still open after shutdown"
    );
    assert!(
        TcpStream::connect(a_ws).await.is_err(),
        "WebSocket listener still open after shutdown"
    );

    // Broker b is untouched.
    let (client_b, mut inbox_b) = v311(&mut tasks, v311_opts("on-b", b_tcp));
    inbox_b.connack().await;
    client_b.subscribe("y", rumqttc::QoS::AtMostOnce).await.unwrap();
    inbox_b.suback().await;
    client_b
        .publish("y", rumqttc::QoS::AtMostOnce, false, "b lives")
        .await
        .unwrap();
    assert_eq!(&inbox_b.publish().await.1[..], b"b lives");

    // a's port is free again: a new broker binds it.
    let again = start(BrokerSettings {
        tcp: Some(a_tcp),
        ws: None,
        ..BrokerSettings::default()
    })
    .await;
    assert_eq!(again.tcp_addr(), Some(a_tcp));
    again.shutdown().await;
    b.shutdown().await;
}
