//! The metrics, declared once in `src/metrics.rs`, against the README's table and against what is exported: every
//! README row names a declared metric of the same type, every declared metric has a row, and after a few
//! requests of each kind every declared name is on `/metrics` (the GPU ones from a sampler over scripted GPUs,
//! since this machine has no NVML).
#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use mqtt_llm::gpu::fake::gpu;
use mqtt_llm::gpu::{FakeSource, GpuError, SamplerConfig, spawn_sampler};
use serde_json::json;
use support::{MqttLlm, TestClient, sim_up_args_embedded};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The README's metric table: name → type. A row naming `a_b_used_bytes`, `_free_bytes` expands the suffix
/// against the first name (as many trailing words replaced as the suffix has).
fn readme_metrics() -> BTreeMap<String, String> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let mut rows = readme
        .lines()
        .skip_while(|l| !l.starts_with("| metric | type |"))
        .skip(2)
        .take_while(|l| l.starts_with('|'));
    let mut table = BTreeMap::new();
    for row in rows.by_ref() {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let (names, kind) = (cells[1], cells[2]);
        let names: Vec<&str> = names.split(',').map(|n| n.trim().trim_matches('`')).collect();
        let first = names[0];
        for name in &names {
            let full = if let Some(suffix) = name.strip_prefix('_') {
                let words = suffix.split('_').count();
                let stem: Vec<&str> = first.split('_').collect();
                format!("{}_{suffix}", stem[..stem.len() - words].join("_"))
            } else {
                (*name).to_owned()
            };
            assert!(
                table.insert(full.clone(), kind.to_owned()).is_none(),
                "{full} has two rows"
            );
        }
    }
    assert!(table.len() > 30, "the README table was not found: {table:?}");
    table
}

fn declared() -> BTreeMap<String, String> {
    mqtt_llm::metrics::declared()
        .map(|(n, k)| (n.to_owned(), k.to_owned()))
        .collect()
}

/// `# TYPE name kind` lines of a Prometheus text.
fn exported(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .map(|(n, k)| (n.to_owned(), k.to_owned()))
        .collect()
}

#[test]
fn every_readme_row_is_declared_and_every_declared_metric_has_a_row() {
    assert_eq!(readme_metrics(), declared());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_few_requests_every_declared_metric_is_exported() {
    // A small context so that a long message is refused after acceptance (context_overflow: a request error).
    let server = MqttLlm::start(&sim_up_args_embedded(&[
        "--engine-arg=--max-model-len=512",
        "--projects",
        "general maze",
        "--engine-arg=--sim-itl-ms=5",
    ]))
    .await;
    let mut client = TestClient::connect(server.mqtt_port()).await;
    client.subscribe("general/assistant_response/#").await;
    client.subscribe("general/control_notice/#").await;
    let ask = |v| client.publish_json("general/user_input", v);
    ask(json!({"sessionId": "a", "message": "hello", "stream": true})).await;
    ask(json!({"sessionId": "a", "message": "again", "replyTopic": "elsewhere/x"})).await;
    ask(json!({"sessionId": "b", "message": "word ".repeat(600)})).await;
    ask(json!({"sessionId": "c", "message": ""})).await;
    let mut texts = Vec::new();
    while texts.len() < 4 {
        texts.push(client.recv().await.text());
    }
    assert!(
        texts.iter().any(|t| t.starts_with("Error: message too long")),
        "{texts:?}"
    );
    client
        .publish_json("general/clear_history/a", json!({"sessionId": "a"}))
        .await;
    client.recv().await;
    // Two states of one maze session at once: the first waits behind nothing, a third replaces the second.
    for x in 0..3 {
        client
            .publish_json(
                "maze/state",
                json!({"sessionId": "m", "player_pos": [x, 0], "exit_pos": [4, 4], "visible_map": [[1]]}),
            )
            .await;
    }
    server.wait_metric("mqtt_llm_state_superseded_total", 1.0).await;
    // The broker's figures are sampled every 2 s, the store written every second.
    server
        .wait_metric("mqtt_llm_store_writes_total{outcome=\"ok\"}", 1.0)
        .await;
    server.wait_metric("mqtt_llm_broker_messages_total", 1.0).await;

    let (_, text) = server.get("/metrics").await;
    let exported = exported(&text);
    let missing: Vec<_> = declared()
        .into_iter()
        .filter(|(name, _)| !name.starts_with("mqtt_llm_gpu_"))
        .filter(|(name, kind)| exported.get(name) != Some(kind))
        .collect();
    assert!(
        missing.is_empty(),
        "declared but not exported (or another type): {missing:?}\n{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gpu_sampler_exports_every_gpu_metric() {
    let handle = mqtt_llm::metrics::install();
    let tracker = TaskTracker::new();
    let cancel = CancellationToken::new();
    let config = SamplerConfig {
        interval: Duration::from_millis(100),
        // 80 GiB GPUs with 79 GiB used: under 2 GiB free, so the low-free warning is counted.
        low_free_bytes: 2 << 30,
    };
    let (_, pgid) = tokio::sync::watch::channel(Some(1));
    let mut busy = gpu(0, 80, 79);
    busy.utilization_percent = Some(50);
    let full = spawn_sampler(
        Arc::new(FakeSource::new(vec![busy])),
        pgid.clone(),
        config,
        &tracker,
        cancel.clone(),
    );
    let failing = FakeSource::failing(GpuError::Nvml("scripted".into()));
    let broken = spawn_sampler(Arc::new(failing), pgid, config, &tracker, cancel.clone());
    let mut full_rx = full.subscribe();
    full_rx.wait_for(|s| s.samples >= 1).await.unwrap();
    broken.subscribe().wait_for(|s| s.errors >= 1).await.unwrap();
    let exported = exported(&handle.render());
    let missing: Vec<_> = declared()
        .into_iter()
        .filter(|(name, _)| name.starts_with("mqtt_llm_gpu_"))
        .filter(|(name, kind)| exported.get(name) != Some(kind))
        .collect();
    assert!(missing.is_empty(), "{missing:?}");
    cancel.cancel();
    tracker.close();
    tracker.wait().await;
}
