//! `mqtts://` brokers: mqtt-llm connects over TLS, trusting the CA given with `--mqtt-ca`.
#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

mod support;

use serde_json::json;
use support::{Mosquitto, MqttLlm, TestClient, sim_up_args, test_pki};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtts_broker_with_a_private_ca() {
    let (ca, cert, key) = test_pki();
    let (broker, tls_port) = Mosquitto::start_with_tls(&cert, &key).await;
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca).unwrap();

    let mut args = sim_up_args(&format!("mqtts://localhost:{tls_port}"));
    args.extend(["--mqtt-ca".to_owned(), ca_file.display().to_string()]);
    let server = MqttLlm::start(&args).await;
    assert_eq!(server.metric("mqtt_llm_mqtt_connected").await, 1.0);

    let mut client = TestClient::connect(broker.port).await;
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
    let (_ca, cert, key) = test_pki();
    let (_broker, tls_port) = Mosquitto::start_with_tls(&cert, &key).await;
    let (other_ca, _, _) = test_pki();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("other-ca.pem");
    std::fs::write(&ca_file, other_ca).unwrap();
    let mut args = sim_up_args(&format!("mqtts://localhost:{tls_port}"));
    args.extend(["--mqtt-ca".to_owned(), ca_file.display().to_string()]);
    let server = MqttLlm::spawn(&args).await;
    server.wait_metric("mqtt_llm_mqtt_connection_errors_total", 1.0).await;
    let (status, body) = server.get("/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("\"mqtt\":{\"ready\":false}"), "{body}");
}
