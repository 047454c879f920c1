//! How far a starting vLLM has got, read from its log lines.
//!
//! vLLM loads for minutes (downloads, weights, torch.compile, KV-cache profiling, CUDA graphs) and its port
//! refuses connections until the very end, so its log is the only progress there is. [`phase_of`] maps one line
//! to the phase it shows; [`PhaseTracker`] only moves forward (vLLM logs some summaries after the next phase
//! began), and the log sink publishes each new phase with the time since launch.
//!
//! The patterns are substrings of vLLM 0.26's messages (the same in 0.19 through 0.33), matched anywhere in the
//! line so that the `(EngineCore pid=N) INFO 04-07 02:44:26 [file.py:N]` prefixes do not matter; a few are
//! llama.cpp's server's (`--engine llamacpp`, through xllamacpp), which loads in about a second.

use std::fmt;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// A start-up phase of `vllm serve`, in the order they happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum StartupPhase {
    /// Python imports done: the banner, `non-default args`, the engine configuration.
    Initializing,
    /// Downloading (when not cached) and loading the weights onto the GPU.
    LoadingWeights,
    /// torch.compile (Dynamo, Inductor); cached after the first start.
    Compiling,
    /// Profiling memory and sizing the KV cache.
    AllocatingKvCache,
    /// Capturing CUDA graphs.
    CapturingCudaGraphs,
    /// The engine is built; the HTTP server is starting.
    StartingApiServer,
    /// `Application startup complete.`: the port accepts connections.
    ApiServerUp,
}

impl StartupPhase {
    /// Operator words, as `up` prints them (`engine: loading weights (12.3s)`).
    pub fn describe(self) -> &'static str {
        match self {
            Self::Initializing => "initializing",
            Self::LoadingWeights => "loading weights",
            Self::Compiling => "compiling the model (torch.compile)",
            Self::AllocatingKvCache => "profiling memory and allocating the KV cache",
            Self::CapturingCudaGraphs => "capturing CUDA graphs",
            Self::StartingApiServer => "starting the API server",
            Self::ApiServerUp => "API server up",
        }
    }
}

impl fmt::Display for StartupPhase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.describe())
    }
}

/// Line substrings and the phase each shows. Order only matters within a line (first match wins).
const PATTERNS: &[(&str, StartupPhase)] = &[
    ("Application startup complete", StartupPhase::ApiServerUp),
    ("Starting vLLM server on", StartupPhase::StartingApiServer),
    ("Starting vLLM API server", StartupPhase::StartingApiServer),
    ("Available routes are", StartupPhase::StartingApiServer),
    ("Started server process", StartupPhase::StartingApiServer),
    ("Waiting for application startup", StartupPhase::StartingApiServer),
    ("Supported tasks:", StartupPhase::StartingApiServer),
    ("Capturing CUDA graph", StartupPhase::CapturingCudaGraphs),
    ("Capturing cudagraph", StartupPhase::CapturingCudaGraphs),
    ("Graph capturing finished", StartupPhase::CapturingCudaGraphs),
    ("Profiling CUDA graph memory", StartupPhase::AllocatingKvCache),
    ("Initial profiling/warmup run", StartupPhase::AllocatingKvCache),
    ("Available KV cache memory", StartupPhase::AllocatingKvCache),
    ("GPU KV cache size", StartupPhase::AllocatingKvCache),
    ("Maximum concurrency for", StartupPhase::AllocatingKvCache),
    (
        "init engine (profile, create kv cache, warmup model)",
        StartupPhase::AllocatingKvCache,
    ),
    ("torch.compile takes", StartupPhase::Compiling),
    ("torch.compile took", StartupPhase::Compiling),
    ("Compiling a graph", StartupPhase::Compiling),
    ("Dynamo bytecode transform time", StartupPhase::Compiling),
    ("for vLLM's torch.compile", StartupPhase::Compiling),
    ("Directly load the compiled graph", StartupPhase::Compiling),
    ("Starting to load model", StartupPhase::LoadingWeights),
    ("Loading safetensors checkpoint shards", StartupPhase::LoadingWeights),
    ("Loading weights took", StartupPhase::LoadingWeights),
    ("Model loading took", StartupPhase::LoadingWeights),
    ("Downloading", StartupPhase::LoadingWeights),
    ("non-default args", StartupPhase::Initializing),
    ("vLLM server version", StartupPhase::Initializing),
    ("vLLM API server version", StartupPhase::Initializing),
    ("Initializing a V1 LLM engine", StartupPhase::Initializing),
    ("Resolved architecture", StartupPhase::Initializing),
    // llama.cpp's server (xllamacpp).
    ("init: listening on http", StartupPhase::ApiServerUp),
    ("init: model loaded", StartupPhase::StartingApiServer),
    ("load_model: loading model", StartupPhase::LoadingWeights),
    ("srv          init: initializing", StartupPhase::Initializing),
];

/// The phase a log line shows, if any.
pub fn phase_of(line: &str) -> Option<StartupPhase> {
    PATTERNS
        .iter()
        .find(|(needle, _)| line.contains(needle))
        .map(|&(_, phase)| phase)
}

/// The furthest phase seen so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PhaseTracker {
    current: Option<StartupPhase>,
}

impl PhaseTracker {
    /// Feed one line; returns the phase when the line moved start-up forward.
    pub fn observe(&mut self, line: &str) -> Option<StartupPhase> {
        if self.current == Some(StartupPhase::ApiServerUp) {
            return None;
        }
        let phase = phase_of(line)?;
        if self.current.is_some_and(|current| phase <= current) {
            return None;
        }
        self.current = Some(phase);
        Some(phase)
    }

    pub fn current(&self) -> Option<StartupPhase> {
        self.current
    }
}

/// A phase reached, and when (since the engine was launched).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StartupProgress {
    pub phase: StartupPhase,
    pub elapsed: Duration,
}

/// Call `on_progress` for every new phase until `cancel` fires or the sender is gone. The channel is reset to
/// `None` at each launch, so a restarted engine reports its phases again.
pub async fn follow(
    mut progress: watch::Receiver<Option<StartupProgress>>,
    cancel: CancellationToken,
    mut on_progress: impl FnMut(StartupProgress) + Send + 'static,
) {
    loop {
        let seen = *progress.borrow_and_update();
        if let Some(p) = seen {
            on_progress(p);
        }
        tokio::select! {
            changed = progress.changed() => if changed.is_err() { return },
            () = cancel.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use StartupPhase as P;

    /// Real lines of a vLLM start (0.19-0.26 on an L40S and an H100, and the contract's §7), in order.
    #[rustfmt::skip]
    const REAL_START: &[(&str, Option<StartupPhase>)] = &[
        ("INFO 11-22 10:00:00 [api_server.py:1] vLLM server version 0.26.0, serving model Qwen/Qwen3-VL-4B-Instruct-FP8", Some(P::Initializing)),
        ("(APIServer pid=4106) INFO 04-07 02:43:24 [utils.py:233] non-default args: {'model_tag': 'Qwen/Qwen3.5-9B', 'port': 8001}", Some(P::Initializing)),
        ("INFO 04-07 02:43:34 [model.py:549] Resolved architecture: Qwen3_5ForConditionalGeneration", Some(P::Initializing)),
        ("INFO 04-07 02:43:34 [scheduler.py:238] Chunked prefill is enabled with max_num_batched_tokens=8192.", None),
        ("(EngineCore pid=1462) INFO 04-07 02:43:51 [core.py:105] Initializing a V1 LLM engine (v0.26.0) with config: model='Qwen/Qwen3.5-9B'", Some(P::Initializing)),
        ("(EngineCore pid=1462) INFO 04-07 02:43:58 [gpu_model_runner.py:4735] Starting to load model Qwen/Qwen3.5-9B...", Some(P::LoadingWeights)),
        ("Loading safetensors checkpoint shards:  25% Completed | 1/4 [00:07<00:21,  7.16s/it]", Some(P::LoadingWeights)),
        ("(EngineCore pid=1462) INFO 04-07 02:44:26 [default_loader.py:384] Loading weights took 26.10 seconds", Some(P::LoadingWeights)),
        ("(EngineCore pid=1462) INFO 04-07 02:44:26 [gpu_model_runner.py:4820] Model loading took 17.66 GiB memory and 26.884630 seconds", Some(P::LoadingWeights)),
        ("(EngineCore pid=1462) INFO 04-07 02:44:32 [backends.py:1051] Using cache directory: /root/.cache/vllm/torch_compile_cache/1776bb5122/rank_0_0/backbone for vLLM's torch.compile", Some(P::Compiling)),
        ("(EngineCore pid=1462) INFO 04-07 02:44:32 [backends.py:1111] Dynamo bytecode transform time: 4.61 s", Some(P::Compiling)),
        ("(EngineCore pid=1462) INFO 04-07 02:44:58 [backends.py:390] Compiling a graph for compile range (1, 8192) takes 25.35 s", Some(P::Compiling)),
        ("(EngineCore pid=1462) INFO 04-07 02:44:59 [monitor.py:48] torch.compile took 31.11 s in total", Some(P::Compiling)),
        ("INFO 07-23 10:22:50 [monitor.py:34] torch.compile takes 27.31 s in total", Some(P::Compiling)),
        ("(EngineCore pid=1462) INFO 04-07 02:46:12 [monitor.py:76] Initial profiling/warmup run took 73.16 s", Some(P::AllocatingKvCache)),
        ("(EngineCore pid=1462) INFO 04-07 02:46:21 [gpu_worker.py:436] Available KV cache memory: 20.27 GiB", Some(P::AllocatingKvCache)),
        ("(EngineCore pid=1462) INFO 04-07 02:46:21 [kv_cache_utils.py:1319] GPU KV cache size: 165,792 tokens", Some(P::AllocatingKvCache)),
        ("(EngineCore pid=1462) INFO 04-07 02:46:21 [kv_cache_utils.py:1324] Maximum concurrency for 262,144 tokens per request: 2.52x", Some(P::AllocatingKvCache)),
        ("Capturing CUDA graphs (mixed prefill-decode, PIECEWISE): 100%|██████████| 51/51 [00:02<00:00, 21.18it/s]", Some(P::CapturingCudaGraphs)),
        ("(EngineCore pid=1462) INFO 04-07 02:46:27 [gpu_model_runner.py:6046] Graph capturing finished in 5 secs, took 0.65 GiB", Some(P::CapturingCudaGraphs)),
        ("(EngineCore pid=1462) INFO 04-07 02:46:27 [core.py:283] init engine (profile, create kv cache, warmup model) took 120.47 seconds", Some(P::AllocatingKvCache)),
        ("(APIServer pid=4106) INFO 04-07 02:46:28 [api_server.py:1634] Supported tasks: ['generate']", Some(P::StartingApiServer)),
        ("(APIServer pid=4106) INFO 04-07 02:46:28 [api_server.py:1912] Starting vLLM server on http://127.0.0.1:8001", Some(P::StartingApiServer)),
        ("(APIServer pid=4106) INFO 04-07 02:46:28 [launcher.py:34] Available routes are:", Some(P::StartingApiServer)),
        ("(APIServer pid=4106) INFO 04-07 02:46:28 [launcher.py:42] Route: /health, Methods: GET", None),
        ("INFO:     Started server process [4106]", Some(P::StartingApiServer)),
        ("INFO:     Waiting for application startup.", Some(P::StartingApiServer)),
        ("INFO:     Application startup complete.", Some(P::ApiServerUp)),
        ("INFO:     127.0.0.1:50000 - \"GET /health HTTP/1.1\" 200 OK", None),
    ];

    #[test]
    fn each_real_line_maps_to_its_phase() {
        for (line, phase) in REAL_START {
            assert_eq!(phase_of(line), *phase, "{line}");
        }
    }

    /// Real lines of llama.cpp's server (xllamacpp 2026.10.11549, SmolLM2 on CPU), in order.
    #[rustfmt::skip]
    const LLAMACPP_START: &[(&str, Option<StartupPhase>)] = &[
        ("0.00.001.038 I srv          init: initializing ...", Some(P::Initializing)),
        ("0.00.005.551 I srv          init: build_info: b0-unknown", None),
        ("0.00.007.111 I srv          init: loading model", None),
        ("0.00.007.185 I srv    load_model: loading model '.cache/cpu-engine/SmolLM2-135M-Instruct.Q4_1.gguf'", Some(P::LoadingWeights)),
        ("0.00.522.005 I srv    load_model: initializing, n_slots = 2, n_ctx_slot = 2048, kv_unified = 'false'", None),
        ("0.00.526.222 I srv          init: model loaded", Some(P::StartingApiServer)),
        ("0.00.526.318 I srv          init: listening on http://127.0.0.1:36343", Some(P::ApiServerUp)),
        ("listening on http://127.0.0.1:36343", None),
    ];

    #[test]
    fn llamacpp_lines_map_to_their_phases() {
        for (line, phase) in LLAMACPP_START {
            assert_eq!(phase_of(line), *phase, "{line}");
        }
        let mut tracker = PhaseTracker::default();
        let seen: Vec<_> = LLAMACPP_START.iter().filter_map(|(l, _)| tracker.observe(l)).collect();
        assert_eq!(
            seen,
            [P::Initializing, P::LoadingWeights, P::StartingApiServer, P::ApiServerUp]
        );
    }

    #[test]
    fn tracker_only_moves_forward() {
        let mut tracker = PhaseTracker::default();
        let reported: Vec<StartupPhase> = REAL_START.iter().filter_map(|(l, _)| tracker.observe(l)).collect();
        assert_eq!(
            reported,
            [
                P::Initializing,
                P::LoadingWeights,
                P::Compiling,
                P::AllocatingKvCache,
                P::CapturingCudaGraphs,
                P::StartingApiServer,
                P::ApiServerUp
            ]
        );
        assert_eq!(tracker.current(), Some(P::ApiServerUp));
        assert_eq!(
            tracker.observe("INFO 04-07 [core.py:1] Initializing a V1 LLM engine"),
            None
        );
    }

    #[test]
    fn eager_start_skips_phases() {
        // --enforce-eager: no torch.compile and no CUDA graphs; vllm-sim prints the same subset.
        let mut tracker = PhaseTracker::default();
        let lines = [
            "INFO 11-22 10:00:00 [utils.py:253] non-default args: {'enforce_eager': True}",
            "(EngineCore pid=7) INFO 11-22 10:00:09 [gpu_model_runner.py:2653] Model loading took 1.1164 GiB memory and 0.360000 seconds",
            "(EngineCore pid=7) INFO 11-22 10:00:09 [kv_cache_utils.py:1087] GPU KV cache size: 65,536 tokens",
            "(EngineCore pid=7) INFO 11-22 10:00:09 [core.py:210] init engine (profile, create kv cache, warmup model) took 0.60 seconds",
            "INFO 11-22 10:00:09 [api_server.py:1912] Starting vLLM server on http://127.0.0.1:41234",
            "INFO:     Application startup complete.",
        ];
        let reported: Vec<_> = lines.iter().filter_map(|l| tracker.observe(l)).collect();
        assert_eq!(
            reported,
            [
                P::Initializing,
                P::LoadingWeights,
                P::AllocatingKvCache,
                P::StartingApiServer,
                P::ApiServerUp
            ]
        );
    }

    #[test]
    fn operator_words() {
        assert_eq!(P::LoadingWeights.to_string(), "loading weights");
        assert_eq!(P::CapturingCudaGraphs.to_string(), "capturing CUDA graphs");
    }

    #[tokio::test]
    async fn follow_reports_each_value_until_the_sender_is_gone() {
        let (tx, rx) = watch::channel(None);
        let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel();
        let follower = follow(rx, CancellationToken::new(), move |p| {
            let _ = seen_tx.send(p.phase);
        });
        let driver = async move {
            let step = |phase| {
                Some(StartupProgress {
                    phase,
                    elapsed: Duration::from_secs(1),
                })
            };
            tx.send_replace(step(P::Initializing));
            assert_eq!(seen_rx.recv().await, Some(P::Initializing));
            tx.send_replace(None);
            tx.send_replace(step(P::LoadingWeights));
            assert_eq!(seen_rx.recv().await, Some(P::LoadingWeights));
            drop(tx);
            seen_rx
        };
        let ((), mut seen_rx) = tokio::join!(follower, driver);
        assert_eq!(seen_rx.recv().await, None);
    }

    #[tokio::test]
    async fn follow_stops_when_cancelled() {
        let (_tx, rx) = watch::channel(None);
        let cancel = CancellationToken::new();
        cancel.cancel();
        follow(rx, cancel, |_| {}).await;
    }
}
