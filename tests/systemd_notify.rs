//! systemd's readiness protocol: run under `Type=notify` (a `NOTIFY_SOCKET` of the test's), `mqtt-llm up` sends
//! `READY=1` only once it serves (after `ready` on stdout, when `/readyz` says 200), and `STOPPING=1` when a
//! SIGTERM starts the drain.
#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

mod support;

use std::time::Duration;

use support::{Mosquitto, MqttLlm, sim_up_args};
use tokio::net::UnixDatagram;

/// The next datagram, as text.
async fn next(socket: &UnixDatagram) -> String {
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(60), socket.recv(&mut buf))
        .await
        .expect("no notification from mqtt-llm")
        .unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// Datagrams until one contains `what`; all of them.
async fn until(socket: &UnixDatagram, what: &str) -> Vec<String> {
    let mut seen = Vec::new();
    loop {
        let msg = next(socket).await;
        let hit = msg.lines().any(|l| l == what);
        seen.push(msg);
        if hit {
            return seen;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_when_serving_and_stopping_at_the_drain() {
    let broker = Mosquitto::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    let mut server = MqttLlm::spawn_with_env(
        &sim_up_args(&broker.url()),
        &[("NOTIFY_SOCKET", path.to_str().unwrap())],
    )
    .await;

    let before = until(&socket, "READY=1").await;
    // The start-up milestones came first, as STATUS lines, and READY=1 only once it serves.
    assert!(
        before.iter().any(|m| m.contains("STATUS=engine launched")),
        "{before:?}"
    );
    let (code, body) = server.get("/readyz").await;
    assert_eq!(code, 200, "READY=1 before /readyz said ready: {body}");

    server.signal(nix::sys::signal::Signal::SIGTERM);
    let after = until(&socket, "STOPPING=1").await;
    assert!(!after.iter().any(|m| m.contains("READY=1")), "{after:?}");
    assert_eq!(server.wait_exit().await, Some(0));
}
