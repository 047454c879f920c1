//! The engine start-up between binding the port and listening: vLLM's phases and their log lines,
//! with `--sim-startup-ms` spread across them (fractions of the total, in order):
//!
//! | at | lines (all `(EngineCore pid=N) INFO ...`) |
//! |---|---|
//! | 0 | `Initializing a V1 LLM engine (v0.33.0) with config: ...`, `Starting to load model M...` |
//! | 0.35 | `Loading weights took X seconds` |
//! | 0.40 | `Model loading took 1.1164 GiB memory and X seconds` |
//! | 0.45 | `Using cache directory: ... for vLLM's torch.compile`, `Dynamo bytecode transform time: X s` |
//! | 0.60 | `Compiling a graph for compile range (1, B) takes X s`, `torch.compile takes X s in total` |
//! | 0.70 | `Available KV cache memory: X GiB`, `GPU KV cache size: N tokens`, `Maximum concurrency for L tokens per request: Cx` |
//! | 0.95 | `Graph capturing finished in X secs, took 0.50 GiB` |
//! | 1 | `init engine (profile, create kv cache, warmup model) took X seconds` |
//!
//! The order is vLLM's own: torch.compile runs inside the profiling pass, before the KV cache is
//! sized; CUDA graphs are captured after. `--enforce-eager` skips the torch.compile and CUDA-graph
//! lines. `--sim-fail-start oom` fails at 0.70, where vLLM's profiling run runs out of memory.
//! The API server's own lines (`Starting vLLM server on ...`, routes, uvicorn) follow in
//! [`super::server`].
//!
//! Two things interrupt the timeline, as in vLLM: the EngineCore process exiting (the API server
//! raises `RuntimeError: Engine core initialization failed. ... {'EngineCore': CODE}`, exit 1) and
//! SIGTERM/SIGINT (`KeyboardInterrupt: terminated`: the EngineCore gets SIGTERM, then SIGKILL
//! after 5 s, and the process exits 130).

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use tokio::time::Instant;

use super::cli::{FailStart, VLLM_VERSION};
use super::config::{BLOCK_SIZE, SimConfig};
use super::engine_core::{CoreExit, CoreFailure, EngineCore, SIGNAL_RACE_GRACE};
use super::error::SimExit;
use super::failure;
use super::log;
use super::pyfmt::{py_bool, thousands};
use super::tokenizer::fnv1a;

/// How long the EngineCore gets between SIGTERM and SIGKILL when start-up is interrupted.
const TERMINATE_GRACE: Duration = Duration::from_secs(5);
/// KV-cache bytes per token of the simulated model (Qwen3-0.6B: 28 layers x 8 KV heads x 128 x
/// K and V x bf16).
const KV_BYTES_PER_TOKEN: u64 = 28 * 8 * 128 * 2 * 2;

enum Interrupt {
    Shutdown,
    CoreExited(CoreExit),
}

/// The clock of the start-up and what can cut it short.
struct Timeline<'a, S> {
    start: Instant,
    total: Duration,
    core: &'a mut EngineCore,
    shutdown: Pin<&'a mut S>,
}

impl<S: Future<Output = ()>> Timeline<'_, S> {
    /// Wait until `fraction` of the start-up time has passed; the seconds since the start.
    async fn reach(&mut self, fraction: f64) -> Result<f64, Interrupt> {
        let deadline = self.start + self.total.mul_f64(fraction);
        tokio::select! {
            () = tokio::time::sleep_until(deadline) => Ok(self.start.elapsed().as_secs_f64()),
            () = self.shutdown.as_mut() => Err(Interrupt::Shutdown),
            exit = self.core.exited() => {
                // A group-wide SIGTERM kills the EngineCore too: that is an interruption.
                if tokio::time::timeout(SIGNAL_RACE_GRACE, self.shutdown.as_mut()).await.is_ok() {
                    Err(Interrupt::Shutdown)
                } else {
                    Err(Interrupt::CoreExited(exit))
                }
            }
        }
    }

    /// Have the EngineCore fail and wait for it to exit.
    async fn fail(&mut self, failure: CoreFailure) -> Interrupt {
        self.core.fail(failure).await;
        tokio::select! {
            () = self.shutdown.as_mut() => Interrupt::Shutdown,
            exit = self.core.exited() => Interrupt::CoreExited(exit),
        }
    }
}

/// Run the engine start-up; `Ok` once `init engine ... took` is logged. `shutdown` must be fused
/// (it may be polled again after it resolved).
pub(super) async fn start_engine<S: Future<Output = ()>>(
    config: &SimConfig,
    core: &mut EngineCore,
    shutdown: Pin<&mut S>,
) -> Result<(), SimExit> {
    let mut timeline = Timeline {
        start: Instant::now(),
        total: config.timing.startup,
        core,
        shutdown,
    };
    match phases(config, &mut timeline).await {
        Ok(()) => Ok(()),
        Err(Interrupt::Shutdown) => {
            timeline.core.terminate(TERMINATE_GRACE).await;
            log::stderr_raw(&failure::interrupted_during_startup());
            Err(SimExit::Interrupted)
        }
        Err(Interrupt::CoreExited(CoreExit(code))) => Err(SimExit::Traceback(failure::engine_core_init_failed(code))),
    }
}

async fn phases<S: Future<Output = ()>>(config: &SimConfig, t: &mut Timeline<'_, S>) -> Result<(), Interrupt> {
    let m = &config.model;
    let engine = &config.engine;
    log::engine_info(
        "core.py:93",
        format_args!(
            "Initializing a V1 LLM engine (v{VLLM_VERSION}) with config: model='{m}', tokenizer='{m}', dtype=auto, max_seq_len={}, tensor_parallel_size={}, enforce_eager={}, served_model_name={}, enable_prefix_caching={}",
            engine.max_model_len,
            engine.tensor_parallel_size,
            py_bool(engine.enforce_eager),
            config.model_name(),
            py_bool(engine.prefix_caching),
        ),
    );
    log::engine_info(
        "gpu_model_runner.py:4080",
        format_args!("Starting to load model {m}..."),
    );
    let secs = t.reach(0.35).await?;
    log::engine_info(
        "default_loader.py:384",
        format_args!("Loading weights took {secs:.2} seconds"),
    );
    let loaded = t.reach(0.40).await?;
    log::engine_info(
        "gpu_model_runner.py:4130",
        format_args!("Model loading took 1.1164 GiB memory and {loaded:.6} seconds"),
    );
    if !engine.enforce_eager {
        let secs = t.reach(0.45).await?;
        let hash = fnv1a(format!("{m}|{}", engine.max_model_len).as_bytes()) & 0xff_ffff_ffff;
        log::engine_info(
            "backends.py:812",
            format_args!(
                "Using cache directory: /root/.cache/vllm/torch_compile_cache/{hash:010x}/rank_0_0/backbone for vLLM's torch.compile"
            ),
        );
        log::engine_info(
            "backends.py:872",
            format_args!("Dynamo bytecode transform time: {:.2} s", secs - loaded),
        );
        let secs = t.reach(0.60).await?;
        log::engine_info(
            "backends.py:319",
            format_args!(
                "Compiling a graph for compile range (1, {}) takes {:.2} s",
                engine.max_num_batched_tokens,
                (secs - loaded) * 0.75
            ),
        );
        log::engine_info(
            "monitor.py:34",
            format_args!("torch.compile takes {:.2} s in total", secs - loaded),
        );
    }
    t.reach(0.70).await?;
    if config.faults.fail_start == Some(FailStart::Oom) {
        return Err(t.fail(CoreFailure::Oom).await);
    }
    let kv_tokens = u64::from(engine.kv_blocks) * u64::from(BLOCK_SIZE);
    log::engine_info(
        "gpu_worker.py:356",
        format_args!(
            "Available KV cache memory: {:.2} GiB",
            (kv_tokens * KV_BYTES_PER_TOKEN) as f64 / f64::from(1u32 << 30)
        ),
    );
    log::engine_info(
        "kv_cache_utils.py:1307",
        format_args!("GPU KV cache size: {} tokens", thousands(kv_tokens)),
    );
    log::engine_info(
        "kv_cache_utils.py:1312",
        format_args!(
            "Maximum concurrency for {} tokens per request: {:.2}x",
            thousands(u64::from(engine.max_model_len)),
            kv_tokens as f64 / f64::from(engine.max_model_len)
        ),
    );
    if !engine.enforce_eager {
        let before = t.start.elapsed().as_secs_f64();
        let secs = t.reach(0.95).await?;
        log::engine_info(
            "gpu_model_runner.py:5063",
            format_args!(
                "Graph capturing finished in {:.0} secs, took 0.50 GiB",
                (secs - before).round()
            ),
        );
    }
    let secs = t.reach(1.0).await?;
    log::engine_info(
        "core.py:272",
        format_args!("init engine (profile, create kv cache, warmup model) took {secs:.2} seconds"),
    );
    Ok(())
}
