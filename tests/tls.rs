//! `mqtts://` brokers: mqtt-llm connects over TLS, trusting the CA given with `--mqtt-ca`, and presents a client
//! certificate (`--mqtt-client-cert`, `--mqtt-client-key`) to a broker that requires one (mutual TLS).
#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

mod support;

use serde_json::json;
use support::{Mosquitto, MqttLlm, MtlsPki, TestClient, TlsBroker, WAIT, mqtt_llm_bin, sim_up_args_with};

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

/// `--mqtt-ca` and, when given, the client certificate and key flags.
fn tls_flags(pki: &MtlsPki, cert: Option<(&std::path::Path, &std::path::Path)>) -> Vec<String> {
    let mut flags = vec!["--mqtt-ca".to_owned(), pki.ca.display().to_string()];
    if let Some((cert, key)) = cert {
        flags.extend([
            "--mqtt-client-cert".to_owned(),
            cert.display().to_string(),
            "--mqtt-client-key".to_owned(),
            key.display().to_string(),
        ]);
    }
    flags
}

fn up_args(url: &str, flags: &[String]) -> Vec<String> {
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    sim_up_args_with(url, &flags)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_with_a_client_certificate_serves_up_and_chat() {
    let pki = MtlsPki::new();
    let (broker, tls_port) = Mosquitto::start_with_mtls(&pki).await;
    let url = format!("mqtts://localhost:{tls_port}");
    let flags = tls_flags(&pki, Some((&pki.client_cert, &pki.client_key)));
    let server = MqttLlm::start(&up_args(&url, &flags)).await;
    assert_eq!(server.metric("mqtt_llm_mqtt_connected").await, 1.0);

    let mut client = TestClient::connect(broker.port).await;
    client.subscribe("general/assistant_response/#").await;
    client
        .publish_json(
            "general/user_input",
            json!({"sessionId": "mtls", "message": "mutual hello"}),
        )
        .await;
    let reply = client.recv().await;
    assert_eq!(reply.topic, "general/assistant_response/mtls");
    assert!(reply.text().ends_with("user=mutual hello"), "{}", reply.text());

    // `chat` presents its certificate the same way.
    let mut chat = tokio::process::Command::new(mqtt_llm_bin());
    chat.args(["chat", "--broker", &url, "--no-stream"])
        .args(&flags)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let mut child = chat.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut stdin, b"chat over mtls\n")
        .await
        .unwrap();
    drop(stdin);
    let out = tokio::time::timeout(WAIT, child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stdout.contains("user=chat over mtls"), "{stdout}\n{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_refuses_no_client_certificate_and_a_stranger_one() {
    let pki = MtlsPki::new();
    let (_broker, tls_port) = Mosquitto::start_with_mtls(&pki).await;
    let url = format!("mqtts://localhost:{tls_port}");
    let cases = [
        ("no client certificate", tls_flags(&pki, None)),
        (
            "a certificate another CA signed",
            tls_flags(&pki, Some((&pki.stranger_cert, &pki.stranger_key))),
        ),
    ];
    for (name, flags) in cases {
        let server = MqttLlm::spawn(&up_args(&url, &flags)).await;
        server.wait_metric("mqtt_llm_mqtt_connection_errors_total", 1.0).await;
        let (status, body) = server.get("/readyz").await;
        assert_eq!(status, 503, "{name}: {body}");
        assert!(body.contains("\"mqtt\":{\"ready\":false}"), "{name}: {body}");
        assert_eq!(server.metric("mqtt_llm_mqtt_connections_total").await, 0.0, "{name}");
    }
}
