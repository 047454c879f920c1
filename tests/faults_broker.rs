//! The fault suite, broker half: what mqtt-llm does when its broker dies, stalls, forwards a packet larger than
//! it accepts, or is flooded by a client. Each test prints one `FAULT-FIGURES:` line with what it measured (run
//! with `--nocapture` to see them).
//!
//! The broker runs without persistence, as the fixtures' mosquitto does, so a `kill -9` forgets every session and
//! subscription. The test clients therefore use clean sessions and re-subscribe after every ConnAck
//! ([`Subscriber`]); mqtt-llm re-subscribes by itself. A reply published before its requester has re-subscribed
//! would be dropped by the broker, not by mqtt-llm, so mqtt-llm reaches the broker through a [`StallProxy`] that
//! is held closed until the clients are back: the outage mqtt-llm sees ends when the proxy opens.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::json;
use support::faults::{
    StallProxy, Subscriber, Version, broker_log, kill_broker, pubacks_to, publish_once, published_topics,
    revive_broker, rss_kib, verbose_broker, wait_broker_log, wait_metric_where,
};
use support::{MqttLlm, Received, sim_up_args, sim_up_args_with};

const CONNECTED: &str = "mqtt_llm_mqtt_connected";
const CONNECTION_ERRORS: &str = "mqtt_llm_mqtt_connection_errors_total";
const REPLIES: &str = "mqtt_llm_replies_total";
const INFLIGHT: &str = "mqtt_llm_requests_inflight";

/// `up` against `broker` with the simulator answering lorem ipsum (long enough for any `maxTokens`) after
/// `extra` arguments.
fn lorem_up_args(broker: &str, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = sim_up_args(broker)
        .into_iter()
        .map(|a| {
            if a == "--engine-arg=--sim-reply=echo" {
                "--engine-arg=--sim-reply=lorem".to_owned()
            } else {
                a
            }
        })
        .collect();
    args.push("--engine-arg=--sim-reply-tokens=2000".to_owned());
    args.extend(extra.iter().map(|a| a.to_string()));
    args
}

/// The messages one requester received, split into stream frames and final replies.
#[derive(Debug, Default)]
struct Inbox {
    frames: Vec<serde_json::Value>,
    replies: Vec<String>,
}

impl Inbox {
    fn add(&mut self, m: Received) {
        if m.topic.contains("/assistant_stream/") {
            self.frames.push(m.json());
        } else if m.topic.contains("/assistant_response/") {
            self.replies.push(m.text());
        } else {
            panic!("message on an unexpected topic {}", m.topic);
        }
    }
}

/// Receive until this requester has its final reply.
async fn until_reply(client: &mut Subscriber, inbox: &mut Inbox) {
    while inbox.replies.is_empty() {
        inbox.add(client.recv().await);
    }
}

/// How long a reply that is coming at all may take after the broker is back: the figures are printed, and the
/// losses asserted, after it.
const REPLY_DEADLINE: Duration = Duration::from_secs(10);

/// Receive until this requester has its final reply or `deadline` passes.
async fn reply_before(client: &mut Subscriber, inbox: &mut Inbox, deadline: tokio::time::Instant) {
    while inbox.replies.is_empty() {
        match client.recv_before(deadline).await {
            Some(m) => inbox.add(m),
            None => return,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_killed_mid_stream_loses_no_final_reply() {
    broker_killed_mid_stream("MQTT 5", &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_killed_mid_stream_loses_no_final_reply_mqtt311() {
    broker_killed_mid_stream("MQTT 3.1.1", &["--mqtt-version", "3"]).await;
}

/// The broker is `kill -9`ed with replies unacknowledged and streams running, and comes back on its port; mqtt-llm
/// (started with `extra` arguments) speaks `version`.
async fn broker_killed_mid_stream(version: &str, extra: &[&str]) {
    // Ten streaming requests: five short ones, whose final replies are written while the link to the broker is
    // wedged and are therefore unacknowledged when the broker is killed, and five long ones still streaming then,
    // which finish while the broker is down.
    const SHORT: usize = 5;
    const N: usize = 10;
    let mut broker = verbose_broker().await;
    let gate = StallProxy::start(broker.port).await;
    let slow = ["--engine-arg=--sim-itl-ms=30", "--stream-interval-ms", "0"];
    let args = lorem_up_args(&gate.url(), &[&slow[..], extra].concat());
    let server = MqttLlm::start(&args).await;
    let mut clients = Vec::new();
    for i in 0..N {
        let filters = [
            format!("general/assistant_response/k{i}"),
            format!("general/assistant_stream/k{i}"),
        ];
        clients.push(Subscriber::connect(broker.port, &filters).await);
    }
    for (i, client) in clients.iter().enumerate() {
        let max_tokens = if i < SHORT { 15 } else { 120 };
        client
            .publish_json(
                "general/user_input",
                json!({"sessionId": format!("k{i}"), "requestId": format!("r{i}"), "message": "tell me a story",
                       "stream": true, "maxTokens": max_tokens}),
            )
            .await;
    }
    // Every stream is under way once its requester has a frame.
    let mut inboxes: Vec<Inbox> = (0..N).map(|_| Inbox::default()).collect();
    for (client, inbox) in clients.iter_mut().zip(&mut inboxes) {
        while inbox.frames.is_empty() {
            inbox.add(client.recv().await);
        }
    }
    // Wedge the link: what mqtt-llm writes from now on stays in the sockets, unacknowledged.
    gate.stall_upstream();
    wait_metric_where(&server, REPLIES, "counted the short replies", |v| v >= SHORT as f64).await;
    let streaming = server.metric(INFLIGHT).await;
    assert!(streaming > 0.0, "the long streams ended before the broker was killed");
    kill_broker(&mut broker).await;
    let killed = Instant::now();
    // Hold mqtt-llm off until the requesters are back (see the module doc); it sees the broker gone.
    gate.cut();
    wait_metric_where(&server, CONNECTED, "dropped to 0", |v| v == 0.0).await;
    // The long streams end while the broker is down: their replies wait in mqtt-llm.
    wait_metric_where(&server, REPLIES, "counted every reply", |v| v >= N as f64).await;
    revive_broker(&mut broker).await;
    for client in &mut clients {
        client.wait_subscribed(2).await;
    }
    let outage = killed.elapsed();
    let errors_before = server.metric(CONNECTION_ERRORS).await;
    gate.resume();
    let back = Instant::now();
    // Connected and subscribed again (the gauge is set on the SubAck, as `/readyz` is).
    wait_metric_where(&server, CONNECTED, "rose to 1", |v| v == 1.0).await;
    let reconnect = back.elapsed();

    let deadline = tokio::time::Instant::now() + REPLY_DEADLINE;
    for (client, inbox) in clients.iter_mut().zip(&mut inboxes) {
        reply_before(client, inbox, deadline).await;
    }
    // Served as before: a new request after the outage.
    clients[0]
        .publish_json(
            "general/user_input",
            json!({"sessionId": "k0", "requestId": "after", "message": "still there?", "maxTokens": 5}),
        )
        .await;
    let mut after = Inbox::default();
    until_reply(&mut clients[0], &mut after).await;
    // Every reply has been awaited; whatever still arrives is a duplicate.
    for (client, inbox) in clients.iter_mut().zip(&mut inboxes) {
        for m in client.drain_for(Duration::from_millis(300)).await {
            inbox.add(m);
        }
    }
    let lost = inboxes.iter().filter(|i| i.replies.is_empty()).count();
    let duplicated: usize = inboxes.iter().map(|i| i.replies.len().saturating_sub(1)).sum();
    let errors: Vec<&String> = inboxes
        .iter()
        .flat_map(|i| &i.replies)
        .filter(|r| r.starts_with("Error"))
        .collect();
    let frames: usize = inboxes.iter().map(|i| i.frames.len()).sum();
    let republished = published_topics(broker_log(&mut broker), "mqtt-llm-")
        .iter()
        .filter(|t| t.contains("/assistant_response/"))
        .count();
    // The revived broker acknowledges each of mqtt-llm's publishes right after logging it.
    let published = published_topics(broker_log(&mut broker), "mqtt-llm-").len();
    wait_broker_log(&mut broker, "a PUBACK for every publish of mqtt-llm", |log| {
        pubacks_to(log, "mqtt-llm-") >= published
    })
    .await;
    let pubacks = pubacks_to(broker_log(&mut broker), "mqtt-llm-");
    eprintln!(
        "FAULT-FIGURES: broker kill -9 mid-stream ({version}): requests={N} outage_ms={} reconnect_ms={} replies_lost={lost} \
         replies_duplicated={duplicated} error_replies={} frames_received={frames} \
         replies_published_after_restart={republished} pubacks_after_restart={pubacks} connection_errors={}",
        outage.as_millis(),
        reconnect.as_millis(),
        errors.len(),
        server.metric(CONNECTION_ERRORS).await as u64,
    );
    let replies: Vec<usize> = inboxes.iter().map(|i| i.replies.len()).collect();
    assert_eq!(lost, 0, "final replies lost; replies per requester: {replies:?}");
    assert_eq!(
        duplicated, 0,
        "final replies duplicated; replies per requester: {replies:?}"
    );
    assert!(errors.is_empty(), "error replies: {errors:?}");
    assert!(after.replies[0].len() > 1, "{:?}", after.replies);
    assert!(
        reconnect < Duration::from_secs(2),
        "reconnected {reconnect:?} after the broker was back (connection errors before: {errors_before})"
    );
    let by_session: BTreeMap<usize, usize> = inboxes.iter().enumerate().map(|(i, b)| (i, b.frames.len())).collect();
    assert!(by_session.values().all(|&n| n > 0), "{by_session:?}");
}

/// Poll the metric (nothing pushes it) until `pred` holds or `within` passes; how long it took, if it did.
async fn metric_within(
    server: &MqttLlm,
    prefix: &str,
    within: Duration,
    pred: impl Fn(f64) -> bool,
) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < within {
        if pred(server.metric(prefix).await) {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_broker_link_does_not_stall_the_engine_side() {
    // 16 streams of 500 tokens, one frame per token: 8000 frames, more than the MQTT client's request queue
    // (4096) holds while the link to the broker is wedged. (16 requests: mosquitto sends at most 20 QoS 1
    // messages to a client before it acknowledges one, and mqtt-llm's PUBACKs are wedged too.)
    const N: usize = 16;
    let broker = support::Mosquitto::start().await;
    let link = StallProxy::start(broker.port).await;
    let args = lorem_up_args(&link.url(), &["--stream-interval-ms", "0"]);
    let server = MqttLlm::start(&args).await;
    let mut client = support::TestClient::connect(broker.port).await;
    client.subscribe("general/assistant_response/#").await;
    client.subscribe("general/assistant_stream/#").await;

    // The broker still delivers requests; nothing mqtt-llm sends gets through.
    link.stall_upstream();
    for i in 0..N {
        client
            .publish_json(
                "general/user_input",
                json!({"sessionId": format!("w{i}"), "requestId": format!("w{i}"), "message": "a long story please",
                       "stream": true, "maxTokens": 500}),
            )
            .await;
    }
    wait_metric_where(
        &server,
        "mqtt_llm_requests_received_total",
        "counted every request",
        |v| v >= N as f64,
    )
    .await;
    // The engine side finishes every request while the link is wedged: each final reply is queued, no engine
    // request is left open.
    let stall_start = Instant::now();
    let bound = Duration::from_secs(15);
    let replied = metric_within(&server, REPLIES, bound, |v| v >= N as f64).await;
    let left = bound.saturating_sub(stall_start.elapsed());
    let drained = metric_within(&server, INFLIGHT, left, |v| v == 0.0).await;
    let (status, _) = server.get("/livez").await;
    let stalled_for = stall_start.elapsed();
    link.resume();
    let resumed = Instant::now();
    let deadline = tokio::time::Instant::now() + REPLY_DEADLINE;
    let mut inboxes: BTreeMap<String, Inbox> = BTreeMap::new();
    while inboxes.values().filter(|i| !i.replies.is_empty()).count() < N {
        let Ok(m) = tokio::time::timeout_at(deadline, client.recv()).await else {
            break;
        };
        let session = m.topic.rsplit('/').next().unwrap_or_default().to_owned();
        inboxes.entry(session).or_default().add(m);
    }
    let delivered_after = resumed.elapsed();
    for m in client.drain_for(Duration::from_millis(300)).await {
        let session = m.topic.rsplit('/').next().unwrap_or_default().to_owned();
        inboxes.entry(session).or_default().add(m);
    }
    let replies: usize = inboxes.values().map(|i| i.replies.len()).sum();
    let lost = N - inboxes.values().filter(|i| !i.replies.is_empty()).count();
    let frames: usize = inboxes.values().map(|i| i.frames.len()).sum();
    eprintln!(
        "FAULT-FIGURES: stalled broker link: requests={N} engine_side_replied_ms={} engine_requests_drained_ms={} \
         stalled_ms={} delivered_after_resume_ms={} replies_lost={lost} replies_received={replies} \
         frames_received={frames} connection_errors={}",
        replied.map_or("never".to_owned(), |d| d.as_millis().to_string()),
        drained.map_or("never".to_owned(), |d| d.as_millis().to_string()),
        stalled_for.as_millis(),
        delivered_after.as_millis(),
        server.metric(CONNECTION_ERRORS).await as u64,
    );
    assert!(
        replied.is_some(),
        "final replies not produced while the link was wedged"
    );
    assert!(
        drained.is_some(),
        "engine requests still open while the link was wedged"
    );
    assert_eq!(status, 200, "/livez while wedged");
    assert_eq!((lost, replies), (0, N), "every request gets exactly one final reply");
    // Frames were deferred and coalesced, never skipped: `seq` runs 0, 1, 2, ... and the deltas add up to the
    // reply.
    for (session, inbox) in &inboxes {
        let seqs: Vec<u64> = inbox.frames.iter().map(|f| f["seq"].as_u64().unwrap()).collect();
        let expected: Vec<u64> = (0..seqs.len() as u64).collect();
        assert_eq!(seqs, expected, "{session}: frames skipped or out of order");
        let text: String = inbox.frames.iter().filter_map(|f| f["delta"].as_str()).collect();
        assert_eq!(
            text.trim(),
            inbox.replies[0],
            "{session}: the deltas do not add up to the reply"
        );
        assert_eq!(inbox.frames.last().unwrap()["done"], true, "{session}");
    }
}

/// Ask `project` one question on behalf of `session` and return the reply text.
async fn ask(client: &mut support::TestClient, project: &str, session: &str) -> String {
    client
        .publish_json(
            &format!("{project}/user_input"),
            json!({"sessionId": session, "message": "ping", "maxTokens": 200}),
        )
        .await;
    let mut others = Vec::new();
    client
        .recv_on(&format!("{project}/assistant_response/{session}"), &mut others)
        .await
        .text()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_mib_request_neither_disconnects_nor_loops() {
    const BIG: usize = 10 * 1024 * 1024;
    let mut broker = verbose_broker().await;
    // One mqtt-llm per protocol version, each serving its own project, side by side on one broker.
    let v5 = MqttLlm::start(&sim_up_args_with(&broker.url(), &["--projects", "big5"])).await;
    let mut v3 = MqttLlm::start(&sim_up_args_with(
        &broker.url(),
        &["--projects", "big3", "--mqtt-version", "3"],
    ))
    .await;
    let mut client = support::TestClient::connect(broker.port).await;
    client.subscribe("+/assistant_response/#").await;
    let first = ask(&mut client, "big5", "before").await;
    assert!(first.ends_with("user=ping"), "{first}");
    assert!(ask(&mut client, "big3", "before").await.ends_with("user=ping"));
    let payload =
        bytes::Bytes::from(serde_json::to_vec(&json!({"sessionId": "huge", "message": "x".repeat(BIG)})).unwrap());

    let mut rounds = Vec::new();
    for (i, version) in [Version::V5, Version::V311].into_iter().enumerate() {
        // MQTT 5: mqtt-llm announced its Maximum Packet Size, so the broker never forwards the message to it.
        publish_once(version, broker.port, "big5/user_input", payload.clone()).await;
        // MQTT 3.1.1: the broker forwards it, and the MQTT client rejects the packet by closing the connection.
        let errors = v3.metric(CONNECTION_ERRORS).await;
        let started = Instant::now();
        publish_once(version, broker.port, "big3/user_input", payload.clone()).await;
        wait_metric_where(&v3, CONNECTION_ERRORS, "counted the rejection", |v| v > errors).await;
        wait_metric_where(&v3, CONNECTED, "came back", |v| v == 1.0).await;
        let back = started.elapsed();
        // Both keep serving: other clients are answered.
        let session = format!("after{i}");
        let reply5 = ask(&mut client, "big5", &session).await;
        let reply3 = ask(&mut client, "big3", &session).await;
        assert!(
            reply5.ends_with("user=ping") && reply3.ends_with("user=ping"),
            "{reply5} / {reply3}"
        );
        rounds.push((version, back));
    }
    // No loop: the broker does not deliver the message again (clean session), so mqtt-llm stays connected.
    let (before, connections) = (
        v3.metric(CONNECTION_ERRORS).await,
        v3.metric("mqtt_llm_mqtt_connections_total").await,
    );
    assert!(ask(&mut client, "big3", "later").await.ends_with("user=ping"));
    // The broker says so in its log, once per message it kept from the MQTT 5 connection.
    let too_large = "Dropping too large outgoing PUBLISH for mqtt-llm-";
    wait_broker_log(&mut broker, "both oversized messages kept from mqtt-llm", |log| {
        log.iter().filter(|l| l.contains(too_large)).count() >= 2
    })
    .await;
    let kept_away = broker_log(&mut broker).iter().filter(|l| l.contains(too_large)).count();
    let rejection = v3
        .stderr
        .wait_for("the rejection in the log", |l| l.contains("MQTT connection error"))
        .await;
    let v3_errors = v3.metric(CONNECTION_ERRORS).await;
    eprintln!(
        "FAULT-FIGURES: 10 MiB request: v5_connection_errors={} v5_kept_away_by_broker={kept_away} \
         v3_connection_errors={} v3_connections_total={} v3_connected_again_after_ms=[{}] rss_v5_kib={} \
         rss_v3_kib={}",
        v5.metric(CONNECTION_ERRORS).await as u64,
        v3_errors as u64,
        v3.metric("mqtt_llm_mqtt_connections_total").await as u64,
        rounds
            .iter()
            .map(|(v, d)| format!("{v:?}:{}", d.as_millis()))
            .collect::<Vec<_>>()
            .join(","),
        rss_kib(v5.pid()),
        rss_kib(v3.pid()),
    );
    eprintln!("MQTT 3.1.1 rejection: {rejection}");
    assert_eq!(
        kept_away, 2,
        "the broker kept each oversized message from the MQTT 5 connection"
    );
    assert_eq!(v5.metric(CONNECTION_ERRORS).await, 0.0, "MQTT 5: never disconnected");
    assert_eq!(
        v3_errors, 2.0,
        "MQTT 3.1.1: one rejection (a reconnect) per oversized message"
    );
    assert_eq!(v3_errors, before, "MQTT 3.1.1: reconnecting again and again");
    assert_eq!(v3.metric("mqtt_llm_mqtt_connections_total").await, connections);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flood_from_one_client_leaves_others_answered_and_memory_bounded() {
    // One client subscribes to nothing and publishes FLOOD requests of 16 KiB as fast as it can (QoS 0), one in
    // ten asking for a reply topic mqtt-llm must not use. Meanwhile another client asks a question every 200 ms.
    const FLOOD: usize = 5000;
    const PROBES: usize = 10;
    const PROBE_BOUND: Duration = Duration::from_secs(10);
    let mut broker = verbose_broker().await;
    // An engine for 40 requests a second (8 at a time, 10 tokens of 20 ms): the flood is bound to overload it.
    let args = sim_up_args_with(
        &broker.url(),
        &[
            "--engine-arg=--sim-itl-ms=20",
            "--max-inflight",
            "8",
            "--max-queued",
            "100",
        ],
    );
    let server = MqttLlm::start(&args).await;
    let pid = server.pid();
    let mut probe = support::TestClient::connect(broker.port).await;
    probe.subscribe("general/assistant_response/probe/#").await;
    let flooder = support::TestClient::connect(broker.port).await;
    // Sees the reply to the request the flooder sends last (the flooder itself reads nothing).
    let mut marker = support::TestClient::connect(broker.port).await;
    marker.subscribe("general/assistant_response/marker").await;
    // Warm up, then take the baseline.
    let warm = ask_probe(&mut probe, "warm").await;
    assert!(warm.1.contains("user=ping"), "{}", warm.1);
    let baseline = rss_kib(pid);

    let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(baseline));
    let sampling = tokio_util::sync::CancellationToken::new();
    let mut tasks = tokio::task::JoinSet::new();
    {
        // Resident memory is sampled every 20 ms: nothing announces it.
        let (peak, stop) = (peak.clone(), sampling.clone());
        tasks.spawn(async move {
            while !stop.is_cancelled() {
                peak.fetch_max(rss_kib(pid), std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
    }
    let flood_started = Instant::now();
    {
        let client = flooder.client.clone();
        tasks.spawn(async move {
            let evil = [
                "victim/actuator",
                "$SYS/broker",
                "general/user_input",
                "general/assistant_stream/x",
                "#",
            ];
            let filler = "x".repeat(16 * 1024);
            for i in 0..FLOOD {
                let mut request = json!({"sessionId": format!("f{i}"), "message": filler, "maxTokens": 10});
                if i % 10 == 0 {
                    request["replyTopic"] = json!(evil[(i / 10) % evil.len()]);
                }
                client
                    .publish(
                        "general/user_input",
                        rumqttc::v5::mqttbytes::QoS::AtMostOnce,
                        false,
                        serde_json::to_vec(&request).unwrap(),
                    )
                    .await
                    .unwrap();
            }
            // Last, at QoS 1 (never dropped): once it is answered, mqtt-llm has read the whole flood.
            let last = json!({"sessionId": "marker", "message": "ping", "maxTokens": 10,
                              "replyTopic": "general/assistant_response/marker"});
            client
                .publish(
                    "general/user_input",
                    rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
                    false,
                    serde_json::to_vec(&last).unwrap(),
                )
                .await
                .unwrap();
        });
    }
    let mut latencies = Vec::new();
    let mut refused = 0;
    for i in 0..PROBES {
        let (took, text) = ask_probe(&mut probe, &format!("p{i}")).await;
        if text.starts_with("Error: Server is overloaded") {
            refused += 1;
        } else {
            assert!(text.contains("user=ping"), "{text}");
        }
        latencies.push(took);
        // Pace the probes across the flood (a measurement schedule, not a synchronisation).
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The whole flood has been read once the last request is answered, and answered once none is queued.
    marker.recv().await;
    wait_metric_where(&server, "mqtt_llm_requests_queued", "drained", |v| v == 0.0).await;
    let flood_ms = flood_started.elapsed().as_millis();
    sampling.cancel();
    while tasks.join_next().await.is_some() {}
    let peak = peak.load(std::sync::atomic::Ordering::Relaxed);
    let after = rss_kib(pid);
    let overloaded = server
        .metric("mqtt_llm_requests_rejected_total{project=\"general\",reason=\"overloaded\"}")
        .await;
    let received = server.metric("mqtt_llm_requests_received_total").await;
    let replies = server.metric(REPLIES).await;
    let rejected = server.metric("mqtt_llm_requests_rejected_total").await;
    let fallbacks = server.metric("mqtt_llm_reply_topic_fallbacks_total").await;
    // Audit every publish mqtt-llm made (the broker logs each one it received, then acknowledges it).
    wait_broker_log(&mut broker, "a PUBACK for every publish of mqtt-llm", |log| {
        let published = published_topics(log, "mqtt-llm-").len();
        // Replies and refusals, plus the retained online status.
        published as f64 >= replies + rejected + 1.0 && pubacks_to(log, "mqtt-llm-") >= published
    })
    .await;
    let topics = published_topics(broker_log(&mut broker), "mqtt-llm-");
    let outside: Vec<&String> = topics
        .iter()
        .filter(|t| {
            // Replies, the two status topics (mqtt-llm's own and the successor's heartbeat) and the capacity.
            !t.starts_with("general/assistant_response/")
                && !["mqtt-llm/status", "mqtt-llm/capacity", "general/status"].contains(&t.as_str())
        })
        .collect();
    let max_latency = latencies.iter().max().copied().unwrap_or_default();
    eprintln!(
        "FAULT-FIGURES: flood: requests={FLOOD} flood_ms={flood_ms} received={received} (flood, probes, warm-up, last) overloaded={overloaded} \
         rejected_total={rejected} replies={replies} reply_topic_fallbacks={fallbacks} probes={PROBES} \
         probes_refused={refused} probe_latency_max_ms={} rss_baseline_kib={baseline} rss_peak_kib={peak} \
         rss_after_kib={after} mqtt_llm_publishes={} pubacks={} published_outside_allowed={}",
        max_latency.as_millis(),
        topics.len(),
        pubacks_to(broker_log(&mut broker), "mqtt-llm-"),
        outside.len(),
    );
    assert!(
        outside.is_empty(),
        "published outside the project's reply topics: {outside:?}"
    );
    assert!(max_latency < PROBE_BOUND, "a probe waited {max_latency:?}");
    assert!(overloaded > 0.0, "the flood was never refused as overloaded");
    assert!(
        fallbacks >= (FLOOD / 10) as f64,
        "forbidden reply topics not replaced: {fallbacks}"
    );
    assert_eq!(
        received,
        replies + rejected,
        "every request is answered or refused, exactly once"
    );
    let growth_mib = peak.saturating_sub(baseline) / 1024;
    assert!(
        growth_mib < 64,
        "resident memory grew by {growth_mib} MiB under the flood"
    );
}

/// Ask the probe's question as `id` (reply on `general/assistant_response/probe/{id}`): (latency, reply text).
async fn ask_probe(probe: &mut support::TestClient, id: &str) -> (Duration, String) {
    let topic = format!("general/assistant_response/probe/{id}");
    let asked = Instant::now();
    probe
        .publish_json(
            "general/user_input",
            json!({"sessionId": format!("probe-{id}"), "message": "ping", "maxTokens": 200, "replyTopic": topic}),
        )
        .await;
    let mut others = Vec::new();
    let reply = probe.recv_on(&topic, &mut others).await;
    (asked.elapsed(), reply.text())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silently_dead_link_is_noticed_by_keep_alive_and_loses_no_reply() {
    // Four requests of ~1 s each (50 words echoed at 20 ms a token) are running when the link to the broker goes
    // silent both ways without closing (a black-holed network path): no FIN, no RST, nothing.
    const N: usize = 4;
    const KEEP_ALIVE: Duration = Duration::from_secs(5);
    let broker = support::Mosquitto::start().await;
    let link = StallProxy::start(broker.port).await;
    let args = sim_up_args_with(
        &link.url(),
        &["--mqtt-keep-alive", "5s", "--engine-arg=--sim-itl-ms=20"],
    );
    let server = MqttLlm::start(&args).await;
    let mut client = support::TestClient::connect(broker.port).await;
    client.subscribe("general/assistant_response/#").await;
    let words = support::proc::long_message(50);
    for i in 0..N {
        client
            .publish_json(
                "general/user_input",
                json!({"sessionId": format!("d{i}"), "message": words}),
            )
            .await;
    }
    wait_metric_where(&server, INFLIGHT, "had every request running", |v| v >= N as f64).await;
    link.stall();
    let silent = Instant::now();
    // Only keep-alive can tell: PINGREQ unanswered within the next keep-alive period.
    wait_metric_where(&server, CONNECTION_ERRORS, "noticed the dead link", |v| v >= 1.0).await;
    let noticed = silent.elapsed();
    // A working path again (the wedged connection is dead to both ends by now).
    link.resume();
    wait_metric_where(&server, CONNECTED, "reconnected", |v| v == 1.0).await;
    let reconnected = silent.elapsed();
    let mut inboxes: BTreeMap<String, Inbox> = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + REPLY_DEADLINE;
    while inboxes.len() < N {
        let Ok(m) = tokio::time::timeout_at(deadline, client.recv()).await else {
            break;
        };
        let session = m.topic.rsplit('/').next().unwrap_or_default().to_owned();
        inboxes.entry(session).or_default().add(m);
    }
    for m in client.drain_for(Duration::from_millis(300)).await {
        let session = m.topic.rsplit('/').next().unwrap_or_default().to_owned();
        inboxes.entry(session).or_default().add(m);
    }
    let lost = N - inboxes.len();
    let duplicates: usize = inboxes.values().map(|i| i.replies.len().saturating_sub(1)).sum();
    eprintln!(
        "FAULT-FIGURES: silently dead broker link (keep-alive 5s): noticed_after_s={:.2} reconnected_after_s={:.2} \
         requests={N} replies_lost={lost} duplicates={duplicates}",
        noticed.as_secs_f64(),
        reconnected.as_secs_f64()
    );
    assert_eq!(lost, 0, "replies lost: {inboxes:?}");
    // At least once: a reply that reached the broker while its PUBACK was swallowed by the dead link is sent
    // again after the reconnect (README, Lifecycle: broker outage); never a different or an error reply.
    for (session, inbox) in &inboxes {
        assert!((1..=2).contains(&inbox.replies.len()), "{session}: {:?}", inbox.replies);
        for reply in &inbox.replies {
            assert!(reply.ends_with(&words), "{session}: {reply}");
        }
    }
    // Noticed within two keep-alive periods (one to send PINGREQ, one to miss its PINGRESP), plus slack.
    assert!(
        noticed <= 2 * KEEP_ALIVE + Duration::from_secs(3),
        "the dead link was noticed only after {noticed:?}"
    );
}
