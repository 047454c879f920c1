//! `mqtts://` brokers: mqtt-llm connects over TLS, trusting the CA given with `--mqtt-ca`.
#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

mod support;

use serde_json::json;
use support::{MqttLlm, TestClient, TlsBroker, sim_up_args_with};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtts_broker_with_a_private_ca() {
    let tls = TlsBroker::start(true).await;
    let server = MqttLlm::start(&sim_up_args_with(&tls.url(), &["--mqtt-ca", &tls.ca_arg()])).await;
    assert_eq!(server.metric("mqtt_llm_mqtt_connected").await, 1.0);

    let mut client = TestClient::connect(tls.broker.port).await;
    client.subscribe("general/assistant_response/#").await;
    client
        .publish_json(
            "general/user_input",
            json!({"sessionId": "tls", "message": "secure hello"}),
        )
        .await;
    let reply = client.recv().await;
    assert_eq!(reply.topic, "general/assistant_response/tls");
    assert!(reply.text().ends_with("user=secure hello"), "{}", reply.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_broker_certificate_keeps_it_not_ready() {
    let tls = TlsBroker::start(false).await;
    let server = MqttLlm::spawn(&sim_up_args_with(&tls.url(), &["--mqtt-ca", &tls.ca_arg()])).await;
    server.wait_metric("mqtt_llm_mqtt_connection_errors_total", 1.0).await;
    let (status, body) = server.get("/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("\"mqtt\":{\"ready\":false}"), "{body}");
}
