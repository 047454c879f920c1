//! `mqtt-llm up` without `--broker`: the embedded broker serves real clients over real sockets (MQTT 3.1.1 and 5,
//! WebSocket, TLS, passwords), and the bridge behind it answers them. The broker itself is tested on its own in
//! `tests/embedded_broker.rs`; this is the product as users start it.
#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

mod support;

use std::process::Stdio;
use std::time::Duration;

use bytes::Bytes;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::json;
use support::{MqttLlm, TestClient, WAIT, sim_up_args_embedded};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// A v3.1.1 client (rumqttc's v4 API) collecting (topic, payload) of what it receives.
struct V311 {
    client: AsyncClient,
    rx: mpsc::UnboundedReceiver<(String, Bytes)>,
    subacks: mpsc::UnboundedReceiver<()>,
    _task: tokio::task::JoinSet<()>,
}

impl V311 {
    async fn connect(port: u16, credentials: Option<(&str, &str)>) -> Result<Self, rumqttc::ConnectionError> {
        let mut opts = MqttOptions::new(format!("v311-{:08x}", rand::random::<u32>()), "127.0.0.1", port);
        opts.set_keep_alive(Duration::from_secs(30));
        if let Some((u, p)) = credentials {
            opts.set_credentials(u, p);
        }
        let (client, mut eventloop) = AsyncClient::new(opts, 64);
        // The first poll is the CONNECT/CONNACK: a refusal surfaces here.
        loop {
            match tokio::time::timeout(WAIT, eventloop.poll()).await.expect("no CONNACK") {
                Ok(Event::Incoming(Packet::ConnAck(_))) => break,
                Ok(_) => {}
                Err(e) => return Err(e),
            }
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let (sub_tx, subacks) = mpsc::unbounded_channel();
        let mut task = tokio::task::JoinSet::new();
        task.spawn(async move {
            while let Ok(event) = eventloop.poll().await {
                match event {
                    Event::Incoming(Packet::Publish(p)) => {
                        let _ = tx.send((p.topic.clone(), p.payload.clone()));
                    }
                    Event::Incoming(Packet::SubAck(_)) => {
                        let _ = sub_tx.send(());
                    }
                    _ => {}
                }
            }
        });
        Ok(Self {
            client,
            rx,
            subacks,
            _task: task,
        })
    }

    async fn subscribe(&mut self, filter: &str) {
        self.client.subscribe(filter, QoS::AtLeastOnce).await.unwrap();
        tokio::time::timeout(WAIT, self.subacks.recv())
            .await
            .expect("no SubAck");
    }

    async fn recv(&mut self) -> (String, Bytes) {
        tokio::time::timeout(WAIT, self.rx.recv())
            .await
            .expect("nothing received")
            .expect("client gone")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v311_and_v5_clients_on_one_project_get_replies_and_stream_frames() {
    let server = MqttLlm::start(&sim_up_args_embedded(&[])).await;
    let port = server.mqtt_port();
    let mut old = V311::connect(port, None).await.unwrap();
    old.subscribe("general/assistant_response/#").await;
    old.subscribe("general/assistant_stream/#").await;
    let mut new = TestClient::connect(port).await;
    new.subscribe("general/assistant_stream/#").await;
    new.subscribe("general/assistant_response/v5/#").await;

    // The v5 client asks with a Response Topic and Correlation Data, and streams: mqtt-llm's v5 replies carry
    // properties (content type, correlation data), and the v3.1.1 client subscribed to the same topics gets
    // them too (the case that breaks rumqttd 0.20).
    let ask = json!({"sessionId": "v5", "message": "from five", "stream": true});
    new.publish_v5(
        "general/user_input",
        serde_json::to_vec(&ask).unwrap(),
        "general/assistant_response/v5/req-1",
        b"corr-\x00\xff",
    )
    .await;
    let mut others = Vec::new();
    let reply = new.recv_on("general/assistant_response/v5/req-1", &mut others).await;
    assert!(reply.text().ends_with("user=from five"), "{}", reply.text());
    assert_eq!(reply.correlation_data.as_deref(), Some(&b"corr-\x00\xff"[..]));
    assert!(
        others
            .iter()
            .any(|m| m.topic == "general/assistant_stream/v5" && m.json()["done"] == true),
        "no done frame before the reply: {others:?}"
    );

    // The v3.1.1 client saw the v5 conversation's frames and reply.
    let mut seen = Vec::new();
    while !seen
        .iter()
        .any(|(t, _): &(String, Bytes)| t == "general/assistant_response/v5/req-1")
    {
        seen.push(old.recv().await);
    }
    assert!(seen.iter().any(|(t, _)| t == "general/assistant_stream/v5"), "{seen:?}");

    // And its own request is answered, with stream frames, by the same bridge.
    old.client
        .publish(
            "general/user_input",
            QoS::AtLeastOnce,
            false,
            json!({"sessionId": "v3", "message": "from three", "stream": true}).to_string(),
        )
        .await
        .unwrap();
    let mut frames = 0;
    loop {
        let (topic, payload) = old.recv().await;
        match topic.as_str() {
            "general/assistant_stream/v3" => frames += 1,
            "general/assistant_response/v3" => {
                assert!(String::from_utf8_lossy(&payload).ends_with("user=from three"));
                break;
            }
            _ => {}
        }
    }
    assert!(frames >= 1, "no stream frame before the v3.1.1 client's reply");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_status_and_capacity_reach_a_late_subscriber() {
    let server = MqttLlm::start(&sim_up_args_embedded(&[])).await;
    let mut late = TestClient::connect(server.mqtt_port()).await;
    late.subscribe("mqtt-llm/status").await;
    let status = late.recv().await;
    assert!(status.retain);
    assert_eq!(status.json()["status"], "online");
    assert_eq!(status.json()["model"], "sim-model");
    late.subscribe("mqtt-llm/capacity").await;
    let capacity = late.recv().await;
    assert_eq!(capacity.topic, "mqtt-llm/capacity");
    assert_eq!(capacity.json()["acceptingRequests"], true);
}

/// A raw MQTT 3.1.1 CONNECT (clean session, keep-alive 120 s) for `client_id`.
fn connect_packet(client_id: &str) -> Vec<u8> {
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 120];
    body.extend_from_slice(&(client_id.len() as u16).to_be_bytes());
    body.extend_from_slice(client_id.as_bytes());
    let mut packet = vec![0x10, body.len() as u8];
    packet.extend(body);
    packet
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_idle_clients_connect_at_once_and_a_chat_still_answers() {
    let server = MqttLlm::start(&sim_up_args_embedded(&[])).await;
    let port = server.mqtt_port();
    let mut connecting = tokio::task::JoinSet::new();
    for i in 0..1000 {
        connecting.spawn(async move {
            let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
            s.write_all(&connect_packet(&format!("idle-{i}"))).await.unwrap();
            let mut connack = [0u8; 4];
            s.read_exact(&mut connack).await.unwrap();
            assert_eq!(connack, [0x20, 2, 0, 0], "CONNACK of idle-{i}");
            s
        });
    }
    let mut idle = Vec::new();
    while let Some(s) = tokio::time::timeout(WAIT, connecting.join_next())
        .await
        .expect("CONNACKs")
        .transpose()
        .unwrap()
    {
        idle.push(s);
    }
    assert_eq!(idle.len(), 1000);
    let mut client = TestClient::connect(port).await;
    client.subscribe("general/assistant_response/#").await;
    client
        .publish_json(
            "general/user_input",
            json!({"sessionId": "busy", "message": "still there?"}),
        )
        .await;
    let reply = client.recv().await;
    assert!(reply.text().ends_with("user=still there?"), "{}", reply.text());
    // The broker counts them (the figures are sampled every 2 s).
    let mut clients = 0;
    for _ in 0..100 {
        let (_, body) = server.get("/status").await;
        let status: serde_json::Value = serde_json::from_str(&body).unwrap();
        clients = status["mqtt"]["broker"]["figures"]["clients"].as_u64().unwrap();
        if clients >= 1001 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(clients >= 1001, "the broker reports {clients} clients");
    drop(idle);
}

/// `mosquitto_passwd -b -c FILE USER PASSWORD` into a temporary directory.
fn password_file(user: &str, password: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("passwd");
    let status = std::process::Command::new("mosquitto_passwd")
        .args(["-b", "-c"])
        .arg(&path)
        .args([user, password])
        .stdout(Stdio::null())
        .status()
        .expect("mosquitto_passwd (package mosquitto) is needed");
    assert!(status.success());
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_auth_refuses_a_wrong_password_and_serves_the_right_one() {
    let dir = password_file("kiosk", "k-secret");
    let file = dir.path().join("passwd");
    let server = MqttLlm::start(&sim_up_args_embedded(&["--broker-auth", file.to_str().unwrap()])).await;
    let port = server.mqtt_port();
    for wrong in [Some(("kiosk", "nope")), Some(("stranger", "k-secret")), None] {
        match V311::connect(port, wrong).await {
            Err(rumqttc::ConnectionError::ConnectionRefused(code)) => {
                assert!(
                    matches!(
                        code,
                        rumqttc::ConnectReturnCode::BadUserNamePassword | rumqttc::ConnectReturnCode::NotAuthorized
                    ),
                    "{wrong:?}: {code:?}"
                );
            }
            Err(e) => panic!("{wrong:?}: refused the wrong way: {e}"),
            Ok(_) => panic!("{wrong:?} was let in"),
        }
    }
    // The right password gets in, and the bridge (its own account) answers.
    let mut kiosk = V311::connect(port, Some(("kiosk", "k-secret"))).await.unwrap();
    kiosk.subscribe("general/assistant_response/#").await;
    kiosk
        .client
        .publish(
            "general/user_input",
            QoS::AtLeastOnce,
            false,
            r#"{"sessionId":"k","message":"hello"}"#,
        )
        .await
        .unwrap();
    let (topic, reply) = kiosk.recv().await;
    assert_eq!(topic, "general/assistant_response/k");
    assert!(String::from_utf8_lossy(&reply).ends_with("user=hello"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_port_is_a_one_sentence_error_that_suggests_broker() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let mut args = sim_up_args_embedded(&[]);
    let at = args.iter().position(|a| a == "--mqtt-listen").unwrap();
    args[at + 1] = addr.clone();
    let mut server = MqttLlm::spawn_raw(&args).await;
    assert_eq!(server.wait_exit().await, Some(1));
    let line = server
        .stderr
        .wait_for("the error line", |l| l.starts_with("error: "))
        .await;
    assert!(
        line.contains(&addr) && line.contains("--broker") && line.contains("--mqtt-listen"),
        "{line}"
    );
    assert_eq!(line.matches(". ").count(), 0, "more than one sentence: {line}");
    // Nothing was launched: the engine never started.
    assert!(
        !server.stdout.seen.iter().any(|l| l.starts_with("engine launched")),
        "{:?}",
        server.stdout.seen
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_on_the_embedded_broker_serves_clients_that_trust_its_certificate() {
    let (ca, cert, key) = support::test_pki();
    let dir = tempfile::tempdir().unwrap();
    for (name, pem) in [("ca.pem", &ca), ("cert.pem", &cert), ("key.pem", &key)] {
        std::fs::write(dir.path().join(name), pem).unwrap();
    }
    let path = |n: &str| dir.path().join(n).to_str().unwrap().to_owned();
    let server = MqttLlm::start(&sim_up_args_embedded(&[
        "--mqtt-tls-cert",
        &path("cert.pem"),
        "--mqtt-tls-key",
        &path("key.pem"),
    ]))
    .await;
    let port = server.mqtt_port().to_string();
    let tls = ["--cafile", &path("ca.pem"), "-h", "localhost", "-p", &port];
    let sub = tokio::process::Command::new("mosquitto_sub")
        .args(tls)
        .args(["-t", "general/assistant_response/#", "-C", "1", "-W", "60"])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("mosquitto_sub");
    // Publish until the subscriber has subscribed: each publish is a new session, so one may come too early.
    let mut output = Box::pin(sub.wait_with_output());
    let mut n = 0;
    let out = loop {
        n += 1;
        let status = tokio::process::Command::new("mosquitto_pub")
            .args(tls)
            .args(["-t", "general/user_input", "-m"])
            .arg(format!(r#"{{"sessionId":"tls{n}","message":"over tls"}}"#))
            .status()
            .await
            .unwrap();
        assert!(status.success(), "mosquitto_pub over TLS failed");
        if let Ok(out) = tokio::time::timeout(Duration::from_millis(500), &mut output).await {
            break out.unwrap();
        }
        assert!(n < 60, "no reply over TLS");
    };
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.trim_end().ends_with("user=over tls"), "{text}");
    // A plain client is refused by the TLS listener.
    assert!(V311::connect(server.mqtt_port(), None).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_users_may_come_from_the_environment() {
    let dir = password_file("env-user", "env-secret");
    let lines = std::fs::read_to_string(dir.path().join("passwd")).unwrap();
    let mut server =
        MqttLlm::spawn_with_env(&sim_up_args_embedded(&[]), &[("MQTT_LLM_BROKER_AUTH", lines.as_str())]).await;
    server.wait_ready().await;
    let port = server.mqtt_port();
    assert!(V311::connect(port, None).await.is_err(), "anonymous let in");
    assert!(V311::connect(port, Some(("env-user", "env-secret"))).await.is_ok());
    // The lines are a secret: never in the log.
    let hash = lines.trim().split_once(':').unwrap().1.to_owned();
    server.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(server.wait_exit().await, Some(0));
    while server.stderr.find(|_| false).await.is_some() {}
    assert!(
        !server.stderr.seen.iter().any(|l| l.contains(&hash)),
        "the hash was logged"
    );
}

/// SIGTERM while replies stream: every accepted request still gets its final reply through the embedded broker,
/// which stops only after passing them on (then the devices' connections close).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_streams_in_flight_loses_no_reply() {
    let mut server = MqttLlm::start(&sim_up_args_embedded(&["--engine-arg=--sim-itl-ms=30"])).await;
    let mut client = TestClient::connect(server.mqtt_port()).await;
    client.subscribe("general/assistant_response/#").await;
    client.subscribe("general/assistant_stream/#").await;
    for s in ["t1", "t2", "t3"] {
        let ask = json!({"sessionId": s, "message": "tell me everything about the sea", "stream": true});
        client.publish_json("general/user_input", ask).await;
    }
    // Streams are running: the first delta frame is out.
    loop {
        let m = client.recv().await;
        if m.topic.starts_with("general/assistant_stream/") && m.json()["delta"].is_string() {
            break;
        }
    }
    server.signal(nix::sys::signal::Signal::SIGTERM);
    let mut replies = Vec::new();
    while replies.len() < 3 {
        let m = client.recv().await;
        if m.topic.starts_with("general/assistant_response/") {
            replies.push((m.topic.clone(), m.text()));
        }
    }
    for (topic, text) in &replies {
        assert!(
            text.ends_with("user=tell me everything about the sea"),
            "{topic}: {text}"
        );
    }
    assert_eq!(server.wait_exit().await, Some(0));
}
