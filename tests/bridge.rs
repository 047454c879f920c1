//! End-to-end behaviour of the bridge: a real mosquitto, the real `mqtt-llm` binary launching `vllm-sim` (echo
//! mode: the reply says what the engine saw), and an MQTT 5 test client.

mod support;

use std::collections::HashMap;

use serde_json::json;
use support::{Received, TestClient};

type Harness = support::Stack;

impl Harness {
    async fn start(extra: &[&str]) -> Self {
        Self::launch(extra, &["+/assistant_response/#", "+/assistant_stream/#"]).await
    }

    /// Send a request and return the next message on `reply_topic`.
    async fn ask(&mut self, project: &str, body: serde_json::Value, reply_topic: &str) -> Received {
        self.client.publish_json(&format!("{project}/user_input"), body).await;
        let mut others = Vec::new();
        let reply = self.client.recv_on(reply_topic, &mut others).await;
        assert!(
            others.iter().all(|m| m.topic.contains("/assistant_stream/")),
            "unexpected messages before the reply: {others:?}"
        );
        reply
    }

    /// Ask `message` in `session` of the project `general`; the reply on its default topic.
    async fn say(&mut self, session: &str, message: &str) -> Received {
        let topic = format!("general/assistant_response/{session}");
        self.ask("general", json!({"sessionId": session, "message": message}), &topic)
            .await
    }

    /// Publish a request to the project `general`, waiting for nothing.
    async fn send(&self, body: serde_json::Value) {
        self.client.publish_json("general/user_input", body).await;
    }

    /// Prove nothing else arrived for `session`: a barrier request in the same session must be the very next
    /// message on its reply topic (replies of a session are ordered, so a duplicate would come first).
    async fn assert_no_more_replies(&mut self, project: &str, session: &str) {
        let topic = format!("{project}/assistant_response/{session}");
        let reply = self
            .ask(project, json!({"sessionId": session, "message": "barrier"}), &topic)
            .await;
        assert!(
            reply.text().ends_with("user=barrier"),
            "expected the barrier reply, got {:?}",
            reply.text()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_turn_plain_text_reply() {
    let mut h = Harness::start(&[]).await;
    let reply = h.say("s1", "hello there").await;
    assert_eq!(
        reply.text(),
        "messages=2 roles=s,u system=You are a helpful AI assistant. user=hello there"
    );
    h.assert_no_more_replies("general", "s1").await;
    assert_eq!(
        h.server
            .metric("mqtt_llm_replies_total{project=\"general\",outcome=\"ok\"}")
            .await,
        2.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_turn_history_and_system_prompt_switch() {
    let mut h = Harness::start(&["--projects", "general maze"]).await;
    let t = "maze/assistant_response/m1";
    let r1 = h.ask("maze", json!({"sessionId": "m1", "message": "first"}), t).await;
    assert_eq!(
        r1.text(),
        "messages=2 roles=s,u system=You are the guide in a user=first"
    );
    let r2 = h.ask("maze", json!({"sessionId": "m1", "message": "second"}), t).await;
    assert_eq!(
        r2.text(),
        "messages=4 roles=s,u,a,u system=You are the guide in a user=second"
    );
    // A systemPrompt replaces the prompt for this and later turns; the history stays.
    let r3 = h
        .ask(
            "maze",
            json!({"sessionId": "m1", "message": "third", "systemPrompt": "Talk like a pirate now."}),
            t,
        )
        .await;
    assert_eq!(
        r3.text(),
        "messages=6 roles=s,u,a,u,a,u system=Talk like a pirate now. user=third"
    );
    let r4 = h.ask("maze", json!({"sessionId": "m1", "message": "fourth"}), t).await;
    assert_eq!(
        r4.text(),
        "messages=8 roles=s,u,a,u,a,u,a,u system=Talk like a pirate now. user=fourth"
    );
    // Same session id in another project: a fresh conversation with that project's prompt.
    let g = h.say("m1", "other").await;
    assert_eq!(
        g.text(),
        "messages=2 roles=s,u system=You are a helpful AI assistant. user=other"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reply_topic_rules_end_to_end() {
    let mut h = Harness::start(&["--projects", "general,maze"]).await;
    // (replyTopic, where the reply must arrive)
    let cases = [
        (
            "general/assistant_response/r1/client-a/req-1",
            "general/assistant_response/r1/client-a/req-1",
        ),
        (
            "general/assistant_response/other-session",
            "general/assistant_response/other-session",
        ),
        (
            "  general/assistant_response/r1/x/  ",
            "general/assistant_response/r1/x",
        ),
        ("general/assistant_response/+/x", "general/assistant_response/r1"),
        ("general/assistant_response/#", "general/assistant_response/r1"),
        ("maze/assistant_response/r1", "general/assistant_response/r1"),
        ("general/assistant_response/", "general/assistant_response/r1"),
        ("general/elsewhere/r1", "general/assistant_response/r1"),
    ];
    for (i, (reply_topic, expected)) in cases.into_iter().enumerate() {
        let msg = format!("case {i}");
        let reply = h
            .ask(
                "general",
                json!({"sessionId": "r1", "message": msg, "replyTopic": reply_topic}),
                expected,
            )
            .await;
        assert!(
            reply.text().ends_with(&format!("user={msg}")),
            "{reply_topic:?}: {}",
            reply.text()
        );
    }
    // Five of them fell back to the default topic, and were counted.
    assert_eq!(h.server.metric("mqtt_llm_reply_topic_fallbacks_total").await, 5.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt5_response_topic_and_correlation_data() {
    let mut h = Harness::start(&[]).await;
    let inbox = "general/assistant_response/devices/42/inbox";
    let body = serde_json::to_vec(&json!({"sessionId": "v5", "message": "ping"})).unwrap();
    h.client
        .publish_v5("general/user_input", body, inbox, b"corr-\x00\x01")
        .await;
    let mut others = Vec::new();
    let reply = h.client.recv_on(inbox, &mut others).await;
    assert!(reply.text().ends_with("user=ping"), "{}", reply.text());
    assert_eq!(reply.correlation_data.as_deref(), Some(&b"corr-\x00\x01"[..]));
    assert!(others.is_empty(), "{others:?}");
    // The Response Topic wins over replyTopic, and errors go there too.
    let body =
        serde_json::to_vec(&json!({"sessionId": "v5", "message": "", "replyTopic": "general/assistant_response/v5/x"}))
            .unwrap();
    h.client.publish_v5("general/user_input", body, inbox, b"c2").await;
    let reply = h.client.recv_on(inbox, &mut others).await;
    assert_eq!(reply.text(), "Error: 'message' is empty");
    assert_eq!(reply.correlation_data.as_deref(), Some(&b"c2"[..]));
    assert!(others.is_empty(), "{others:?}");
    assert_eq!(h.server.metric("mqtt_llm_reply_topic_fallbacks_total").await, 0.0);
}

/// A Response Topic outside the project's reply prefixes (here another device's actuator topic) is never published
/// on: the reply goes to the default topic, still with the Correlation Data, and the fallback is counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt5_response_topic_outside_the_project_is_not_used() {
    let mut h = Harness::start(&[]).await;
    let actuator = "home/door/set";
    h.client.subscribe(actuator).await;
    // Not routable without the Response Topic: refused with no reply at all.
    h.client
        .publish_v5("general/user_input", &b"[]"[..], actuator, b"c0")
        .await;
    let body = serde_json::to_vec(&json!({"sessionId": "relay", "message": "open"})).unwrap();
    h.client.publish_v5("general/user_input", body, actuator, b"c1").await;
    let mut others = Vec::new();
    let reply = h.client.recv_on("general/assistant_response/relay", &mut others).await;
    assert!(reply.text().ends_with("user=open"), "{}", reply.text());
    assert_eq!(reply.correlation_data.as_deref(), Some(&b"c1"[..]));
    // Both requests were handled in order before this reply; a short window catches any late publish.
    others.extend(h.client.drain_for(std::time::Duration::from_millis(300)).await);
    assert!(others.iter().all(|m| m.topic != actuator), "{others:?}");
    // Counted for the accepted request (before it was admitted, so before its reply).
    assert_eq!(h.server.metric("mqtt_llm_reply_topic_fallbacks_total").await, 1.0);
    let (_, metrics) = h.server.get("/metrics").await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("mqtt_llm_reply_topic_fallbacks_total") && l.contains(r#"reason="not_allowed""#)),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_an_error_reply_or_is_counted() {
    let mut h = Harness::start(&["--max-payload-bytes", "2048"]).await;
    let t = "general/assistant_response/bad";
    let big = json!({"sessionId": "bad", "message": "x".repeat(3000)});
    let big_len = serde_json::to_vec(&big).unwrap().len();
    let replied: Vec<(serde_json::Value, String)> = vec![
        (json!({"sessionId": "bad"}), "Error: missing 'message'".into()),
        (
            json!({"sessionId": "bad", "message": "   "}),
            "Error: 'message' is empty".into(),
        ),
        (
            json!({"sessionId": "bad", "message": 42}),
            "Error: 'message' must be a string".into(),
        ),
        (
            json!({"sessionId": "bad", "message": null}),
            "Error: 'message' must be a string".into(),
        ),
        (
            json!({"sessionId": "bad", "message": "hi", "temperature": 2.5}),
            "Error: invalid 'temperature': must be a number between 0 and 2".into(),
        ),
        (
            json!({"sessionId": "bad", "message": "hi", "temperature": "hot"}),
            "Error: invalid 'temperature': must be a number between 0 and 2".into(),
        ),
        (
            json!({"sessionId": "bad", "message": "hi", "topP": -0.1}),
            "Error: invalid 'topP': must be a number between 0 and 1".into(),
        ),
        (
            json!({"sessionId": "bad", "message": "hi", "maxTokens": 0}),
            "Error: invalid 'maxTokens': must be an integer between 1 and 32768".into(),
        ),
        (
            json!({"sessionId": "bad", "message": "hi", "maxTokens": 1.5}),
            "Error: invalid 'maxTokens': must be an integer between 1 and 32768".into(),
        ),
        (
            json!({"sessionId": "bad", "message": "hi", "stream": "yes"}),
            "Error: invalid 'stream': must be a boolean".into(),
        ),
        (
            json!({"sessionId": "bad/x", "message": "hi", "replyTopic": t}),
            "Error: invalid sessionId".into(),
        ),
        (
            json!({"sessionId": "a+b", "message": "hi", "replyTopic": t}),
            "Error: invalid sessionId".into(),
        ),
        (
            json!({"sessionId": "x".repeat(129), "message": "hi", "replyTopic": t}),
            "Error: invalid sessionId".into(),
        ),
        (big, format!("Error: request too large ({big_len} bytes, limit 2048)")),
    ];
    for (body, expected) in &replied {
        let reply = h.ask("general", body.clone(), t).await;
        assert_eq!(&reply.text(), expected, "for {body}");
    }
    // Temperature 0 is valid (the original turned it into 0.6).
    let ok = h
        .ask(
            "general",
            json!({"sessionId": "bad", "message": "cold", "temperature": 0}),
            t,
        )
        .await;
    assert!(ok.text().ends_with("user=cold"), "{}", ok.text());

    // No reply topic can be derived: counted, not answered.
    for payload in [&b"\"just a string\""[..], b"42", b"[]", b"null", b"\xff\xfe not utf-8"] {
        h.client.publish("general/user_input", payload.to_vec()).await;
    }
    h.send(json!({"sessionId": "bad/slash", "message": "hi"})).await;
    h.send(json!({"sessionId": {"a": 1}, "message": "hi"})).await;
    h.assert_no_more_replies("general", "bad").await;
    let rejected =
        |reason: &str| format!("mqtt_llm_requests_rejected_total{{project=\"general\",reason=\"{reason}\"}}");
    assert_eq!(h.server.metric(&rejected("not_object")).await, 4.0);
    assert_eq!(h.server.metric(&rejected("not_utf8")).await, 1.0);
    assert_eq!(h.server.metric(&rejected("invalid_session_id")).await, 5.0);
    assert_eq!(h.server.metric(&rejected("too_large")).await, 1.0);
    assert_eq!(h.server.metric(&rejected("invalid_param")).await, 6.0);

    // A plain-text (non-JSON) payload is the message of a fresh default-xxxxxxxx session, as in the original.
    h.client
        .publish("general/user_input", &b"plain text question"[..])
        .await;
    let reply = h.client.recv().await;
    let session = reply
        .topic
        .strip_prefix("general/assistant_response/default-")
        .expect(&reply.topic);
    assert!(
        session.len() == 8 && session.chars().all(|c| c.is_ascii_hexdigit()),
        "{}",
        reply.topic
    );
    assert!(reply.text().ends_with("user=plain text question"), "{}", reply.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_frames_in_order_then_final_reply() {
    let mut h = Harness::start(&["--stream-interval-ms", "0"]).await;
    h.send(json!({"sessionId": "st", "message": "stream me please", "stream": true, "requestId": "req-7"}))
        .await;
    let mut frames = Vec::new();
    let reply = h.client.recv_on("general/assistant_response/st", &mut frames).await;
    let frames: Vec<serde_json::Value> = frames.iter().map(Received::json).collect();
    assert!(frames.len() >= 3, "{frames:?}");
    for (i, f) in frames.iter().enumerate() {
        assert_eq!(f["requestId"], "req-7");
        assert_eq!(f["seq"], i as u64, "{frames:?}");
    }
    let (done, deltas) = frames.split_last().unwrap();
    let text: String = deltas.iter().map(|f| f["delta"].as_str().unwrap()).collect();
    assert_eq!(text.trim(), reply.text());
    assert_eq!(done["done"], true);
    assert_eq!(done["finishReason"], "stop");
    assert!(done["usage"]["promptTokens"].as_u64().unwrap() > 0);
    assert!(done["usage"]["completionTokens"].as_u64().unwrap() > 0);
    assert!(done["usage"]["cachedTokens"].is_u64());
    assert!(done["ttftMs"].is_u64() && done["totalMs"].is_u64());
    // A second turn hits the engine's prefix cache and says so.
    h.send(json!({"sessionId": "st", "message": "again", "stream": true}))
        .await;
    let mut frames = Vec::new();
    h.client.recv_on("general/assistant_response/st", &mut frames).await;
    let done = frames.last().unwrap().json();
    assert!(done["usage"]["cachedTokens"].as_u64().unwrap() > 0, "{done}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_sessions_three_turns_concurrently() {
    let mut h = Harness::start(&["--max-inflight", "16"]).await;
    const SESSIONS: usize = 50;
    const TURNS: usize = 3;
    // Every session sends all its turns at once; replies must come back one per request, in order per session.
    for turn in 0..TURNS {
        for s in 0..SESSIONS {
            h.send(json!({"sessionId": format!("c{s}"), "message": format!("turn {turn}")}))
                .await;
        }
    }
    let mut per_session: HashMap<String, Vec<String>> = HashMap::new();
    for _ in 0..SESSIONS * TURNS {
        let m = h.client.recv().await;
        per_session.entry(m.topic.clone()).or_default().push(m.text());
    }
    assert_eq!(per_session.len(), SESSIONS);
    for (topic, replies) in &per_session {
        let expected: Vec<String> = (0..TURNS)
            .map(|t| {
                format!(
                    "messages={} roles={} system=You are a helpful AI assistant. user=turn {t}",
                    2 * t + 2,
                    roles(t)
                )
            })
            .collect();
        assert_eq!(replies, &expected, "{topic}");
    }
    for s in [0, SESSIONS - 1] {
        h.assert_no_more_replies("general", &format!("c{s}")).await;
    }
}

fn roles(turn: usize) -> String {
    let mut r = vec!["s"];
    for _ in 0..turn {
        r.extend(["u", "a"]);
    }
    r.push("u");
    r.join(",")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_queue_overflow_is_refused_with_an_error() {
    // A slow engine, one waiting slot per session: the third request of a burst is refused.
    let mut h = Harness::start(&["--session-queue", "1", "--engine-arg=--sim-itl-ms=50"]).await;
    for i in 0..3 {
        h.send(json!({"sessionId": "q", "message": format!("m{i}")})).await;
    }
    let t = "general/assistant_response/q";
    let mut replies = Vec::new();
    let mut others = Vec::new();
    for _ in 0..3 {
        replies.push(h.client.recv_on(t, &mut others).await.text());
    }
    assert_eq!(
        replies[0],
        "Error: too many requests waiting for this session; wait for the previous replies"
    );
    assert!(replies[1].ends_with("user=m0"), "{replies:?}");
    assert!(replies[2].ends_with("user=m1"), "{replies:?}");
    assert_eq!(
        h.server
            .metric("mqtt_llm_requests_rejected_total{project=\"general\",reason=\"session_queue_full\"}")
            .await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_overload_is_refused_with_the_original_text() {
    let mut h = Harness::start(&["--max-queued", "1", "--engine-arg=--sim-itl-ms=50"]).await;
    h.send(json!({"sessionId": "o1", "message": "slow one"})).await;
    h.send(json!({"sessionId": "o2", "message": "no room", "stream": true}))
        .await;
    let mut others = Vec::new();
    let refused = h.client.recv_on("general/assistant_response/o2", &mut others).await;
    assert_eq!(
        refused.text(),
        "Error: Server is overloaded. Please try again in a moment."
    );
    // MQTT 5 clients are told when to retry: nothing has drained yet, so the no-sample hint (5 s).
    assert_eq!(refused.user_property("retryAfterMs"), Some("5000"));
    let ok = h.client.recv_on("general/assistant_response/o1", &mut others).await;
    assert!(ok.text().ends_with("user=slow one"), "{}", ok.text());
    let metric = "mqtt_llm_requests_rejected_total{project=\"general\",reason=\"overloaded\"}";
    assert_eq!(h.server.metric(metric).await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_errors_are_replied_and_never_stored_as_turns() {
    let mut h = Harness::start(&["--engine-arg=--max-model-len=64", "--max-tokens", "16"]).await;
    let t = "general/assistant_response/e";
    let long = "word ".repeat(200);
    h.send(json!({"sessionId": "e", "message": long, "stream": true})).await;
    let mut frames = Vec::new();
    let reply = h.client.recv_on(t, &mut frames).await;
    // Counted with the engine's /tokenize and refused before the engine (its own 400 would say "conversation is
    // too long for the model's context"): the same code either way.
    assert!(
        reply.text().starts_with("Error: message too long: "),
        "{}",
        reply.text()
    );
    let frame = frames.last().expect("an error frame").json();
    assert_eq!(frame["error"]["code"], "context_overflow", "{frame}");
    assert_eq!(frame["seq"], 0);
    // The failed turn is not in the history: the next request sees a fresh conversation.
    let next = h.ask("general", json!({"sessionId": "e", "message": "short"}), t).await;
    assert!(next.text().starts_with("messages=2 "), "{}", next.text());
    let metric = "mqtt_llm_request_errors_total{project=\"general\",code=\"context_overflow\"}";
    assert_eq!(h.server.metric(metric).await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_3_1_1_works_too() {
    let mut h = Harness::start(&["--mqtt-version", "3"]).await;
    let reply = h.say("v3", "old broker").await;
    assert!(reply.text().ends_with("user=old broker"), "{}", reply.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnects_and_resubscribes_after_the_broker_restarts() {
    let mut h = Harness::start(&[]).await;
    let port = h.broker.port;
    h.broker.restart().await;
    // A new broker knows no subscriptions: mqtt-llm must reconnect and subscribe again (it counts a connection
    // only once the broker acknowledged the subscriptions).
    h.server.wait_metric("mqtt_llm_mqtt_connections_total", 2.0).await;
    let mut client = TestClient::connect(port).await;
    client.subscribe("general/assistant_response/#").await;
    h.client = client;
    let reply = h.say("rc", "still there?").await;
    assert!(reply.text().ends_with("user=still there?"), "{}", reply.text());
}
