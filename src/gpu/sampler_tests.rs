use metrics_exporter_prometheus::PrometheusBuilder;
use tokio::io::AsyncBufReadExt;

use super::*;
use crate::gpu::FakeSource;
use crate::gpu::fake::{gpu, process};

const GIB: u64 = 1 << 30;

fn with_free(index: u32, free_gib_tenths: u64) -> GpuInfo {
    let mut g = gpu(index, 80, 0);
    g.memory_free = free_gib_tenths * GIB / 10;
    g.memory_used = g.memory_total - g.memory_free;
    g
}

#[test]
fn warns_once_per_crossing_with_hysteresis() {
    let mut state = SamplerState::new(2 * GIB);
    // free (tenths of GiB) per sample; recovery needs 2.2 GiB.
    let script = [100, 10, 5, 21, 15, 22, 19, 19];
    let mut warnings = Vec::new();
    let mut events = Vec::new();
    for free in script {
        let (readings, evs) = state.apply(&[with_free(0, free)], None);
        warnings.push(readings[0].low_free_warnings);
        events.extend(evs);
    }
    assert_eq!(warnings, [0, 1, 1, 1, 1, 1, 2, 2]);
    assert_eq!(
        events,
        [
            LowFreeEvent::Entered {
                index: 0,
                free: GIB,
                threshold: 2 * GIB
            },
            LowFreeEvent::Recovered {
                index: 0,
                free: 22 * GIB / 10
            },
            LowFreeEvent::Entered {
                index: 0,
                free: 19 * GIB / 10,
                threshold: 2 * GIB
            },
        ]
    );
}

#[test]
fn zero_threshold_never_warns() {
    let mut state = SamplerState::new(0);
    let (readings, events) = state.apply(&[with_free(0, 0)], None);
    assert!(events.is_empty());
    assert!(!readings[0].low_free);
}

#[test]
fn engine_memory_is_the_sum_over_group_members() {
    let mut g = gpu(0, 80, 30);
    g.processes = vec![
        process(100, "vllm", 512),               // the API server: a little
        process(101, "VLLM::EngineCor", 20_480), // EngineCore: the weights and KV cache
        process(300, "python3", 9_216),          // someone else
        crate::gpu::GpuProcess {
            pid: 102,
            name: None,
            used_bytes: None,
        },
    ];
    let members: HashSet<u32> = [100, 101, 102].into();
    let mut state = SamplerState::new(0);
    let (readings, _) = state.apply(std::slice::from_ref(&g), Some(&members));
    assert_eq!(readings[0].engine_bytes, Some((512 + 20_480) << 20));
    let (readings, _) = state.apply(&[g], None);
    assert_eq!(readings[0].engine_bytes, None);
}

/// The sample line `name value` is in `text`.
fn assert_sample(text: &str, name: &str, value: &str) {
    assert_eq!(line(text, name), Some(format!("{name} {value}").as_str()));
}

fn line<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    text.lines().find(|l| l.starts_with(prefix))
}

/// On a paused clock: samples every interval, metrics follow the snapshot, and a GPU under the threshold warns
/// once however many samples it stays there.
#[tokio::test(start_paused = true)]
async fn sampler_records_metrics_and_warns_once() {
    let recorder = PrometheusBuilder::new().build_recorder();
    let prometheus = recorder.handle();
    let _guard = ::metrics::set_default_local_recorder(&recorder);

    let mut busy = with_free(1, 100);
    busy.utilization_percent = Some(37);
    let fake = Arc::new(FakeSource::new(vec![with_free(0, 100), busy.clone()]));
    let (_pgid_tx, pgid_rx) = watch::channel(None);
    let tracker = TaskTracker::new();
    let cancel = CancellationToken::new();
    let config = SamplerConfig {
        interval: Duration::from_secs(5),
        low_free_bytes: 2 * GIB,
    };
    let monitor = spawn_sampler(fake.clone(), pgid_rx, config, &tracker, cancel.clone());
    let mut rx = monitor.subscribe();
    let start = tokio::time::Instant::now();

    rx.changed().await.unwrap();
    let s = monitor.status();
    assert_eq!((s.samples, s.gpus.len(), s.engine_pgid), (1, 2, None));
    assert_eq!(start.elapsed(), Duration::ZERO, "the first sample is immediate");
    let text = prometheus.render();
    assert_sample(&text, "mqtt_llm_gpu_memory_free_bytes{gpu=\"1\"}", "10737418240");
    assert_sample(&text, "mqtt_llm_gpu_memory_total_bytes{gpu=\"0\"}", "85899345920");
    assert_sample(&text, "mqtt_llm_gpu_utilization_ratio{gpu=\"1\"}", "0.37");
    assert_eq!(line(&text, "mqtt_llm_gpu_utilization_ratio{gpu=\"0\"}"), None);
    assert_eq!(
        line(&text, "mqtt_llm_gpu_engine_memory_bytes"),
        None,
        "no engine group, no gauge"
    );

    // GPU 1 drops to 1 GiB free and stays there for three samples.
    fake.set(Ok(vec![with_free(0, 100), with_free(1, 10)]));
    for expected_samples in 2..=4 {
        rx.changed().await.unwrap();
        let s = monitor.status();
        assert_eq!(s.samples, expected_samples);
        assert!(s.gpus[1].low_free && !s.gpus[0].low_free);
        assert_eq!((s.gpus[0].low_free_warnings, s.gpus[1].low_free_warnings), (0, 1));
    }
    assert_eq!(start.elapsed(), Duration::from_secs(15));
    let text = prometheus.render();
    assert_sample(&text, "mqtt_llm_gpu_low_free_warnings_total{gpu=\"1\"}", "1");
    assert_sample(&text, "mqtt_llm_gpu_memory_used_bytes{gpu=\"1\"}", "84825604096");

    // Recovers, then crosses again: a second warning.
    fake.set(Ok(vec![with_free(0, 100), with_free(1, 50)]));
    rx.changed().await.unwrap();
    assert!(!monitor.status().gpus[1].low_free);
    fake.set(Ok(vec![with_free(0, 100), with_free(1, 10)]));
    rx.changed().await.unwrap();
    assert_eq!(monitor.status().gpus[1].low_free_warnings, 2);
    assert!(
        prometheus
            .render()
            .contains("mqtt_llm_gpu_low_free_warnings_total{gpu=\"1\"} 2")
    );

    cancel.cancel();
    tracker.close();
    tracker.wait().await;
    assert_eq!(fake.snapshots(), 6);
}

#[tokio::test(start_paused = true)]
async fn sampling_errors_are_counted_and_cleared() {
    let fake = Arc::new(FakeSource::failing(GpuError::Nvml("GPU is lost".into())));
    let (_pgid_tx, pgid_rx) = watch::channel(None);
    let tracker = TaskTracker::new();
    let cancel = CancellationToken::new();
    let monitor = spawn_sampler(
        fake.clone(),
        pgid_rx,
        SamplerConfig::default(),
        &tracker,
        cancel.clone(),
    );
    let mut rx = monitor.subscribe();
    rx.changed().await.unwrap();
    rx.changed().await.unwrap();
    let s = monitor.status();
    assert_eq!((s.samples, s.errors), (0, 2));
    assert_eq!(s.last_error.as_deref(), Some("NVML error: GPU is lost"));
    fake.set(Ok(vec![with_free(0, 100)]));
    rx.changed().await.unwrap();
    let s = monitor.status();
    assert_eq!((s.samples, s.errors, s.last_error), (1, 2, None));
    cancel.cancel();
    tracker.close();
    tracker.wait().await;
}

/// The engine's memory through a real process group: a leader and a child (like the API server and EngineCore),
/// the fake GPU listing both and this test process, which is not in the group.
#[tokio::test]
async fn engine_memory_maps_nvml_pids_onto_the_real_group() {
    let (mut leader, leader_pid) = crate::gpu::host::spawn_test_group("sleep 30 & echo $!; wait");
    let mut lines = tokio::io::BufReader::new(leader.stdout.take().unwrap()).lines();
    let child_pid: u32 = lines.next_line().await.unwrap().unwrap().trim().parse().unwrap();

    let mut g = gpu(0, 80, 40);
    g.processes = vec![
        process(leader_pid, "vllm", 500),
        process(child_pid, "VLLM::EngineCor", 30_000),
        process(std::process::id(), "other", 9_000),
    ];
    let fake = Arc::new(FakeSource::new(vec![g]));
    let (pgid_tx, pgid_rx) = watch::channel(None);
    let tracker = TaskTracker::new();
    let cancel = CancellationToken::new();
    let config = SamplerConfig {
        interval: Duration::from_millis(100),
        low_free_bytes: 0,
    };
    let monitor = spawn_sampler(fake, pgid_rx, config, &tracker, cancel.clone());
    let mut rx = monitor.subscribe();
    rx.changed().await.unwrap();
    assert_eq!(monitor.status().gpus[0].engine_bytes, None);

    let pgid = i32::try_from(leader_pid).unwrap();
    pgid_tx.send_replace(Some(pgid));
    let status = tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|s| s.engine_pgid == Some(pgid)))
        .await
        .unwrap()
        .unwrap()
        .clone();
    assert_eq!(status.gpus[0].engine_bytes, Some(30_500 << 20));

    cancel.cancel();
    tracker.close();
    tracker.wait().await;
    nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pgid), nix::sys::signal::Signal::SIGKILL).unwrap();
    let _ = leader.wait().await;
}
