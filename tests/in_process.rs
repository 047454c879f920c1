//! The whole service in the test process through `mqtt_llm::app::run_on`: the test binds the HTTP listener (port
//! 0) and keeps it, so nothing can take the port first, and waits for the app's readiness events instead of
//! sleeping. A real mosquitto, `vllm-sim` (echo mode) as the engine, an MQTT 5 test client.

mod support;

use mqtt_llm::app::AppEvent;
use serde_json::json;
use support::service::{InProcess, sim_settings};
use support::{Mosquitto, TestClient};

/// Ask `message` in `session` of `project`; the text of the reply on its default topic.
async fn ask(client: &mut TestClient, project: &str, session: &str, message: &str) -> String {
    client
        .publish_json(
            &format!("{project}/user_input"),
            json!({"sessionId": session, "message": message}),
        )
        .await;
    let topic = format!("{project}/assistant_response/{session}");
    client.recv_on(&topic, &mut Vec::new()).await.text()
}

/// GET `path` on the service's held listener: (status, body).
async fn get(service: &InProcess, path: &str) -> (u16, String) {
    mqtt_llm_client::tls::ensure_crypto_provider();
    let response = reqwest::get(service.url(path)).await.expect("HTTP request");
    (response.status().as_u16(), response.text().await.expect("HTTP body"))
}

fn echo(message: &str) -> String {
    format!("messages=2 roles=s,u system=You are a helpful AI assistant. user={message}")
}

/// Whether `events` holds events matching `expected`, in this order (others may come between).
fn in_order(events: &[AppEvent], expected: &[&dyn Fn(&AppEvent) -> bool]) -> bool {
    let mut rest = events.iter();
    expected.iter().all(|want| rest.any(want))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_over_mqtt_and_http_then_shuts_down_in_order() {
    let broker = Mosquitto::start().await;
    let service = InProcess::start(sim_settings(&broker.url())).await;
    let mut client = TestClient::connect(broker.port).await;
    client.subscribe("general/assistant_response/#").await;

    assert_eq!(
        ask(&mut client, "general", "s1", "hello there").await,
        echo("hello there")
    );
    let (status, body) = get(&service, "/readyz").await;
    assert_eq!(status, 200, "{body}");
    let readyz: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(readyz["status"], "ready", "{body}");
    assert_eq!(get(&service, "/livez").await, (200, "ok".to_owned()));

    let held = service.http;
    let (result, events) = service.shutdown().await;
    assert!(result.is_ok(), "{result:?}");
    let expected: [&dyn Fn(&AppEvent) -> bool; 5] = [
        &|e| *e == AppEvent::HttpListening(held),
        &|e| matches!(e, AppEvent::EngineReady { model, .. } if model == "demo"),
        &|e| *e == AppEvent::MqttReady,
        &|e| *e == AppEvent::Draining,
        &|e| *e == AppEvent::Stopped,
    ];
    assert!(in_order(&events, &expected), "{events:?}");
    assert_eq!(events.last(), Some(&AppEvent::Stopped), "{events:?}");
}

/// Two services in one process, on one broker: each on its own held listener and its own project, both ready and
/// answering. Nothing process-wide (the metrics recorder, the crypto provider) clashes, and no port is raced for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_services_in_one_process() {
    let broker = Mosquitto::start().await;
    let settings = |project: &str| {
        let mut raw = sim_settings(&broker.url());
        raw.mqtt.projects = project.to_owned();
        raw
    };
    let (a, b) = tokio::join!(InProcess::start(settings("alpha")), InProcess::start(settings("beta")));
    assert_ne!(a.http, b.http);
    let mut client = TestClient::connect(broker.port).await;
    client.subscribe("+/assistant_response/#").await;

    assert_eq!(ask(&mut client, "alpha", "s1", "to a").await, echo("to a"));
    assert_eq!(ask(&mut client, "beta", "s1", "to b").await, echo("to b"));
    for service in [&a, &b] {
        let (status, body) = get(service, "/readyz").await;
        assert_eq!(status, 200, "{}: {body}", service.http);
        let (status, _) = get(service, "/metrics").await;
        assert_eq!(status, 200, "{}", service.http);
    }

    for service in [a, b] {
        let held = service.http;
        let (result, events) = service.shutdown().await;
        assert!(result.is_ok(), "{held}: {result:?}");
        assert!(events.contains(&AppEvent::HttpListening(held)), "{events:?}");
        assert_eq!(events.last(), Some(&AppEvent::Stopped), "{events:?}");
    }
}
