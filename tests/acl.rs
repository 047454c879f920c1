//! The README's mosquitto recipe (`### Broker ACLs (external brokers)`: its `mosquitto.conf` lines and its
//! `acl_file`, read from the README itself) on a real mosquitto with a password file made by `mosquitto_passwd`:
//! mqtt-llm serves a device through it, a device cannot read or forge another's replies, and mqtt-llm's own
//! account cannot publish on an actuator topic. Every "nothing arrived" is shown by a later message that must come
//! first: the broker delivers one connection's messages to a subscriber in order, so anything denied would have
//! arrived before it.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

mod support;

use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{ConnectReturnCode, Packet, PubAckReason, SubscribeReasonCode};
use rumqttc::v5::{AsyncClient, ConnectionError, Event, MqttOptions};
use serde_json::json;
use support::{Mosquitto, MqttLlm, WAIT, sim_up_args_with};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

const ACCOUNTS: &[(&str, &str)] = &[
    ("mqtt-llm", "llm-secret"),
    ("kiosk-1", "k1-secret"),
    ("kiosk-2", "k2-secret"),
    ("door", "door-secret"),
];

/// The fenced block of the README's ACL section whose first line is `first_line`.
fn readme_block(first_line: &str) -> String {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let section = readme
        .split("### Broker ACLs (external brokers)")
        .nth(1)
        .expect("the README has a Broker ACLs section");
    let section = section.split("\n### ").next().unwrap();
    section
        .split("```")
        .skip(1)
        .step_by(2)
        .map(|block| block.split_once('\n').map_or("", |(_, body)| body))
        .find(|body| body.lines().next() == Some(first_line))
        .unwrap_or_else(|| panic!("no README block starting with {first_line:?}"))
        .to_owned()
}

/// A password file with [`ACCOUNTS`], made by `mosquitto_passwd` as the README says.
fn password_file() -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("passwd");
    for (i, (user, password)) in ACCOUNTS.iter().enumerate() {
        let mut cmd = Command::new("mosquitto_passwd");
        cmd.arg("-b");
        if i == 0 {
            cmd.arg("-c");
        }
        let status = cmd
            .arg(&path)
            .args([user, password])
            .status()
            .expect("mosquitto_passwd is installed with mosquitto");
        assert!(status.success());
    }
    std::fs::read_to_string(&path).unwrap()
}

/// The README's broker, with one more account: `door`, the actuator, may use `home/#`.
async fn broker() -> Mosquitto {
    // The fixture's listener (a free port) stands for the README's `listener 1883`.
    let conf: String = readme_block("# mosquitto.conf")
        .lines()
        .filter_map(|line| match line.split_once(' ') {
            Some(("listener", _)) => None,
            Some(("password_file", _)) => Some("password_file {dir}/passwd".to_owned()),
            Some(("acl_file", _)) => Some("acl_file {dir}/acl".to_owned()),
            _ => Some(line.to_owned()),
        })
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        conf.contains("allow_anonymous false") && conf.contains("{dir}/acl"),
        "{conf}"
    );
    let acl = readme_block("# acl_file") + "\nuser door\ntopic readwrite home/#\n";
    Mosquitto::start_with_config(&conf, &[("passwd", &password_file()), ("acl", &acl)]).await
}

/// An MQTT 5 client logged in as one account. It never reconnects: a second connection under an account's
/// client id (the broker makes it the username) would take over the first.
struct Device {
    client: AsyncClient,
    messages: mpsc::UnboundedReceiver<(String, String)>,
    subacks: mpsc::UnboundedReceiver<Vec<SubscribeReasonCode>>,
    pubacks: mpsc::UnboundedReceiver<PubAckReason>,
    _task: JoinSet<()>,
}

fn options(port: u16, user: &str, password: &str) -> MqttOptions {
    let mut opts = MqttOptions::new(user, "127.0.0.1", port);
    opts.set_credentials(user, password)
        .set_keep_alive(Duration::from_secs(30));
    opts
}

async fn within<T>(what: &str, future: impl Future<Output = Option<T>>) -> T {
    tokio::time::timeout(WAIT, future)
        .await
        .unwrap_or_else(|_| panic!("no {what} within {WAIT:?}"))
        .unwrap_or_else(|| panic!("the connection ended before {what}"))
}

impl Device {
    async fn connect(port: u16, user: &str) -> Self {
        let password = ACCOUNTS.iter().find(|(u, _)| *u == user).unwrap().1;
        let (client, mut eventloop) = AsyncClient::new(options(port, user, password), 64);
        let (msg_tx, messages) = mpsc::unbounded_channel();
        let (sub_tx, subacks) = mpsc::unbounded_channel();
        let (pub_tx, pubacks) = mpsc::unbounded_channel();
        let (conn_tx, mut connected) = mpsc::unbounded_channel();
        let mut task = JoinSet::new();
        task.spawn(async move {
            while let Ok(event) = eventloop.poll().await {
                let Event::Incoming(packet) = event else { continue };
                match packet {
                    Packet::ConnAck(_) => drop(conn_tx.send(())),
                    Packet::SubAck(ack) => drop(sub_tx.send(ack.return_codes)),
                    Packet::PubAck(ack) => drop(pub_tx.send(ack.reason)),
                    Packet::Publish(p) => {
                        let topic = String::from_utf8_lossy(&p.topic).into_owned();
                        drop(msg_tx.send((topic, String::from_utf8_lossy(&p.payload).into_owned())));
                    }
                    _ => {}
                }
            }
        });
        within("ConnAck", connected.recv()).await;
        Self {
            client,
            messages,
            subacks,
            pubacks,
            _task: task,
        }
    }

    async fn subscribe(&mut self, filter: &str) -> Vec<SubscribeReasonCode> {
        self.client.subscribe(filter, QoS::AtLeastOnce).await.unwrap();
        within("SubAck", self.subacks.recv()).await
    }

    /// Publish at QoS 1 and wait for the broker's PubAck: once it is here, the broker has routed (or dropped) it.
    async fn publish(&mut self, topic: &str, payload: impl Into<Bytes>) -> PubAckReason {
        let payload = payload.into();
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload)
            .await
            .unwrap();
        within("PubAck", self.pubacks.recv()).await
    }

    async fn next_message(&mut self) -> (String, String) {
        within("message", self.messages.recv()).await
    }
}

/// The code the broker refuses a connection with.
async fn refused(port: u16, user: &str, password: &str) -> ConnectReturnCode {
    let (_client, mut eventloop) = AsyncClient::new(options(port, user, password), 8);
    match tokio::time::timeout(WAIT, eventloop.poll()).await {
        Ok(Err(ConnectionError::ConnectionRefused(code))) => code,
        other => panic!("not refused: {other:?}"),
    }
}

fn granted(codes: &[SubscribeReasonCode]) -> bool {
    codes.iter().all(|c| matches!(c, SubscribeReasonCode::Success(_)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_acl_recipe_confines_devices_and_mqtt_llm() {
    let broker = broker().await;
    let code = refused(broker.port, "kiosk-1", "wrong").await;
    assert!(
        matches!(
            code,
            ConnectReturnCode::NotAuthorized | ConnectReturnCode::BadUserNamePassword
        ),
        "{code:?}"
    );

    // mqtt-llm's account cannot drive an actuator: the broker refuses the publish and the door never sees it.
    // (Checked before mqtt-llm connects: this connection has its client id, `mqtt-llm`.)
    let mut door = Device::connect(broker.port, "door").await;
    assert!(granted(&door.subscribe("home/#").await));
    {
        let mut llm_account = Device::connect(broker.port, "mqtt-llm").await;
        assert_eq!(
            llm_account.publish("home/door/set", "open").await,
            PubAckReason::NotAuthorized
        );
    }
    assert_eq!(door.publish("home/door/state", "closed").await, PubAckReason::Success);
    assert_eq!(
        door.next_message().await,
        ("home/door/state".to_owned(), "closed".to_owned())
    );

    let flags = [
        "--mqtt-username",
        "mqtt-llm",
        "--mqtt-password",
        "llm-secret",
        "--session-owner",
        "client",
        // The legacy status is not retained: a short interval lets the door see one after it subscribes.
        "--legacy-status-interval",
        "200ms",
    ];
    let _server = MqttLlm::start(&sim_up_args_with(&broker.url(), &flags)).await;

    // mqtt-llm's account may write the legacy status on the first project's topic, and devices may read it.
    assert!(granted(&door.subscribe("general/status").await));
    let (topic, legacy) = door.next_message().await;
    assert_eq!(topic, "general/status");
    assert!(legacy.contains(r#""status":"online""#), "{legacy}");

    let mut kiosk1 = Device::connect(broker.port, "kiosk-1").await;
    // mqtt-llm's account may write its status, and devices may read it.
    assert!(granted(&kiosk1.subscribe("mqtt-llm/status").await));
    let (topic, status) = kiosk1.next_message().await;
    assert_eq!(topic, "mqtt-llm/status");
    assert!(status.contains(r#""status":"online""#), "{status}");
    assert!(granted(
        &kiosk1.subscribe("general/assistant_response/+/kiosk-1/#").await
    ));
    // kiosk-2 tries to see everything: mosquitto 2.0 grants these subscriptions (others may refuse them) but
    // delivers only what kiosk-2 may read, which the rest of the test shows. (Its own replies come through the
    // wide one: a narrower one as well would deliver each of them twice under MQTT 5.)
    let mut kiosk2 = Device::connect(broker.port, "kiosk-2").await;
    kiosk2.subscribe("general/assistant_response/#").await;
    kiosk2.subscribe("general/user_input").await;

    // mqtt-llm serves kiosk-1 through the ACL.
    let t1 = "general/assistant_response/s1/kiosk-1/r1";
    let ask = json!({"sessionId": "s1", "clientId": "kiosk-1", "message": "secret plans", "replyTopic": t1});
    assert_eq!(
        kiosk1.publish("general/user_input", ask.to_string()).await,
        PubAckReason::Success
    );
    let reply = kiosk1.next_message().await;
    assert_eq!(reply.0, t1);
    assert!(reply.1.ends_with("user=secret plans"), "{}", reply.1);

    // kiosk-2 neither read kiosk-1's request nor its reply: its own reply, published by mqtt-llm after kiosk-1's,
    // is the first message it gets. Nor may it continue kiosk-1's session.
    let t2 = "general/assistant_response/s2/kiosk-2/r1";
    let own = json!({"sessionId": "s2", "clientId": "kiosk-2", "message": "hello", "replyTopic": t2});
    kiosk2.publish("general/user_input", own.to_string()).await;
    let first = kiosk2.next_message().await;
    assert_eq!(first.0, t2, "kiosk-2 received {first:?}");
    assert!(first.1.ends_with("user=hello"), "{}", first.1);
    let t3 = "general/assistant_response/s1/kiosk-2/r2";
    let hijack = json!({"sessionId": "s1", "clientId": "kiosk-2", "message": "what plans?", "replyTopic": t3});
    kiosk2.publish("general/user_input", hijack.to_string()).await;
    assert_eq!(
        kiosk2.next_message().await,
        (t3.to_owned(), "Error: session belongs to another client".to_owned())
    );

    // kiosk-2 cannot forge an answer into kiosk-1's topics: refused, and kiosk-1's next message is its real reply.
    assert_eq!(
        kiosk2
            .publish("general/assistant_response/s1/kiosk-1/r2", "forged")
            .await,
        PubAckReason::NotAuthorized
    );
    let t4 = "general/assistant_response/s1/kiosk-1/r2";
    let next = json!({"sessionId": "s1", "clientId": "kiosk-1", "message": "go on", "replyTopic": t4});
    kiosk1.publish("general/user_input", next.to_string()).await;
    let reply = kiosk1.next_message().await;
    assert_eq!(reply.0, t4);
    assert!(
        reply.1.starts_with("messages=4 ") && reply.1.ends_with("user=go on"),
        "{}",
        reply.1
    );

    // mqtt-llm's account may write the retained capacity, and devices may read it.
    assert!(granted(&kiosk2.subscribe("mqtt-llm/capacity").await));
    let (topic, capacity) = kiosk2.next_message().await;
    assert_eq!(topic, "mqtt-llm/capacity");
    assert!(capacity.contains(r#""acceptingRequests":true"#), "{capacity}");
}
