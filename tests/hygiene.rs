//! Input hygiene end to end: a real mosquitto, the real `mqtt-llm` binary launching `vllm-sim` (echo mode), and an
//! MQTT 5 test client. Payloads that start like JSON but cannot be parsed are answered on the session they name,
//! never taken as a plain-text chat message in a random `default-…` session.

mod support;

use serde_json::json;
use support::{Mosquitto, MqttLlm, TestClient, sim_up_args_with};

const REQUESTS: &str = "testproj/user_input";
const N1: &str = "testproj/assistant_response/n1";

fn rejected(reason: &str) -> String {
    format!("mqtt_llm_requests_rejected_total{{project=\"testproj\",reason=\"{reason}\"}}")
}

/// The tester's 5,000-deep request, a truncated one and a broken array: the first two are answered on
/// `testproj/assistant_response/n1`, the array only counted, and nothing goes to any other reply topic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_unparsable_json_is_answered_on_its_session() {
    let broker = Mosquitto::start().await;
    let server = MqttLlm::start(&sim_up_args_with(&broker.url(), &["--projects", "testproj"])).await;
    let mut client = TestClient::connect(broker.port).await;
    client.subscribe("testproj/assistant_response/#").await;

    let deep = format!(
        r#"{{"sessionId":"n1","message":"hi","x":{}{}}}"#,
        "[".repeat(5000),
        "]".repeat(5000)
    );
    client.publish(REQUESTS, deep).await;
    let reply = client.recv().await;
    assert_eq!(
        (reply.topic.as_str(), reply.text().as_str()),
        (N1, "Error: JSON nested deeper than 32 levels")
    );

    client.publish(REQUESTS, r#"{"sessionId":"n1","message":"hi"#).await;
    let reply = client.recv().await;
    assert_eq!(
        (reply.topic.as_str(), reply.text().as_str()),
        (
            N1,
            "Error: invalid JSON: EOF while parsing a string at line 1 column 31"
        )
    );

    // No session to answer: counted only. Requests are taken in order, so had it been answered, that reply would
    // arrive before the barrier's.
    client.publish(REQUESTS, "[1,2").await;
    client
        .publish_json(REQUESTS, json!({"sessionId": "n1", "message": "barrier"}))
        .await;
    let reply = client.recv().await;
    assert_eq!(reply.topic, N1);
    assert!(reply.text().ends_with("user=barrier"), "{:?}", reply.text());

    assert_eq!(server.metric(&rejected("too_deep")).await, 1.0);
    assert_eq!(server.metric(&rejected("invalid_json")).await, 2.0);
}
