//! The `vllm serve` lifecycle: log the banner, bind the port *without listening* (so a port
//! conflict fails at once and clients get "connection refused" while the model "loads"), start the
//! EngineCore process and simulate the engine start-up (`startup`), start the engine core
//! task, listen, serve, and on shutdown drain in-flight requests for up to `--shutdown-timeout`
//! before cutting them off and killing the EngineCore.
//!
//! # Engine death
//! When the EngineCore dies at runtime (`--sim-crash-after-requests`, or the process exits or is
//! killed), the API server does what vLLM's does: logs `AsyncLLM output_handler failed.` with an
//! `EngineDeadError` (after `Engine core proc EngineCore died unexpectedly, shutting down client.`
//! when the death was not a logged fatal error), answers `/health` with 503, ends every running
//! stream with the in-stream error `{"error":{"message":"The server had an error while processing
//! your request.","type":"InternalServerError","param":null,"code":500}}` and `[DONE]` (a
//! non-streaming request gets that body with HTTP 500), then stops the HTTP server and exits with
//! status 1. vLLM's watchdog notices the dead engine within 5 s; the simulator waits
//! [`ENGINE_DEATH_EXIT_DELAY`] (100 ms) before shutting down.
//!
//! A process-group-wide SIGTERM reaches the EngineCore too and kills it; an EngineCore exit seen
//! within [`SIGNAL_RACE_GRACE`] of our own SIGTERM counts as part of the shutdown, not as a death.

use std::future::{Future, IntoFuture};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::serve::ListenerExt;
use futures_util::FutureExt as _;
use tokio::net::TcpSocket;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::app::{AppState, unix_now};
use super::cli::{FailStart, VLLM_VERSION};
use super::config::{BLOCK_SIZE, EngineShape, SimConfig};
use super::engine_core::{CoreFailure, EngineCore};
use super::error::{SimError, SimExit};
use super::failure;
use super::http::{ROUTES, router};
use super::log;
use super::metrics::{EngineStats, Exposition};
use super::pyfmt::py_bool;
use super::reply::LOREM_WORDS;
use super::scheduler::{EngineConfig, spawn_engine};
use super::startup::start_engine;
use super::tokenizer::Vocab;

/// Extra time, beyond `--shutdown-timeout`, that open connections get to close.
const CONNECTION_GRACE: Duration = Duration::from_secs(2);
/// Pending connections the listening socket queues (uvicorn's default).
const BACKLOG: u32 = 2048;
/// From engine death to the start of the server's shutdown (vLLM's watchdog: up to 5 s).
pub const ENGINE_DEATH_EXIT_DELAY: Duration = Duration::from_millis(100);
pub use super::engine_core::SIGNAL_RACE_GRACE;

/// A simulator whose port is bound but not yet listening.
#[derive(Debug)]
pub struct SimServer {
    config: SimConfig,
    socket: TcpSocket,
    addr: SocketAddr,
}

/// How serving ended.
enum Outcome {
    Shutdown,
    EngineDied,
}

impl SimServer {
    /// Log the banner and `non-default args` (a Python dict literal), then bind. A port that is
    /// taken (or `--sim-fail-start port-in-use`) fails like vLLM: [`SimExit::Traceback`] with
    /// `OSError: [Errno 98] Address already in use`.
    pub async fn bind(config: SimConfig, non_default: &str) -> Result<Self, SimError> {
        log::info(
            "api_server.py:1",
            format_args!("vLLM server version {VLLM_VERSION}, serving model {}", config.model),
        );
        log::info("utils.py:253", format_args!("non-default args: {non_default}"));
        if config.faults.fail_start == Some(FailStart::PortInUse) {
            return Err(SimExit::Traceback(failure::port_in_use()).into());
        }
        let addr = resolve(config.server.host.as_deref(), config.server.port).await?;
        let socket_error = |op| move |source| SimError::Socket { op, addr, source };
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()
        } else {
            TcpSocket::new_v6()
        }
        .map_err(socket_error("socket"))?;
        socket.set_reuseaddr(true).map_err(socket_error("SO_REUSEADDR"))?;
        if let Err(err) = socket.bind(addr) {
            return Err(SimExit::Traceback(bind_error(&err)).into());
        }
        let addr = socket.local_addr().map_err(socket_error("local_addr"))?;
        Ok(Self { config, socket, addr })
    }

    /// The bound address (the real port when `--port 0`).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Start the engine, serve until `shutdown` resolves, then drain and stop. Failures are
    /// [`SimError`]s (see [`SimError::exit_code`]).
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> Result<(), SimError> {
        let Self { config, socket, addr } = self;
        let mut shutdown = std::pin::pin!(shutdown.fuse());
        if config.faults.fail_start == Some(FailStart::ModelNotFound) {
            let offline = std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| matches!(v.as_str(), "1" | "true" | "TRUE"));
            return Err(SimExit::Traceback(failure::model_not_found(&config.model, offline)).into());
        }
        let mut core = EngineCore::spawn(
            config.engine_core_exe.as_deref(),
            config.faults.engine_core_max_lifetime,
        )
        .map_err(SimError::EngineCoreSpawn)?;
        log::set_engine_core_pid(core.pid());
        start_engine(&config, &mut core, shutdown.as_mut()).await?;

        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        let stats = Arc::new(Mutex::new(EngineStats::new(config.engine.max_model_len)));
        let engine_config = EngineConfig::from_sim(&config);
        let faults = engine_config.faults.clone();
        let engine = spawn_engine(engine_config, stats.clone(), cancel.child_token(), &tracker);
        if config.logging.log_stats {
            tracker.spawn(log_stats_periodically(stats.clone(), cancel.clone()));
        }
        let app = Arc::new(AppState {
            exposition: Exposition {
                model_name: config.model_name().to_owned(),
                created: unix_now() as f64,
                cache_config: cache_config_labels(&config.engine),
            },
            vocab: Vocab::with_pieces(LOREM_WORDS.iter().copied().chain([".", ","])),
            fingerprint: Arc::from(config.replies.fingerprint.as_str()),
            response_role: Arc::from(config.replies.response_role.as_str()),
            engine,
            stats,
            dead: faults.dead.clone(),
            config,
        });
        let cfg = &app.config;
        log::info("api_server.py:1634", "Supported tasks: ['generate']");
        let host = match cfg.server.host.as_deref() {
            None | Some("") => "0.0.0.0".to_owned(),
            Some(h) if h.contains(':') => format!("[{h}]"),
            Some(h) => h.to_owned(),
        };
        log::info(
            "api_server.py:1912",
            format_args!("Starting vLLM server on http://{host}:{}", addr.port()),
        );
        log::info("launcher.py:34", "Available routes are:");
        for (path, methods) in ROUTES {
            log::info("launcher.py:42", format_args!("Route: {path}, Methods: {methods}"));
        }
        let uvicorn_info = cfg.logging.uvicorn_info;
        let drain = cfg.server.shutdown_timeout;
        if uvicorn_info {
            log::uvicorn(format_args!("Started server process [{}]", std::process::id()));
            log::uvicorn("Waiting for application startup.");
        }
        // Listening first makes "startup complete" a safe readiness signal for whoever reads it.
        let listener = match socket.listen(BACKLOG) {
            Ok(listener) => listener,
            Err(err) => {
                core.force_kill().await;
                return Err(SimError::Socket {
                    op: "listen",
                    addr,
                    source: err,
                });
            }
        };
        if uvicorn_info {
            log::uvicorn("Application startup complete.");
        }
        let listener = listener.tap_io(|tcp| {
            // Small SSE chunks must not wait for Nagle.
            let _ = tcp.set_nodelay(true);
        });
        let stop = cancel.clone();
        let server = axum::serve(
            listener,
            router(app).into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .into_future();
        let mut server = std::pin::pin!(server);
        let mut fatal_sent = false;
        let outcome = loop {
            tokio::select! {
                result = &mut server => {
                    cancel.cancel();
                    core.force_kill().await;
                    result.map_err(SimError::Http)?;
                    return Ok(());
                }
                () = &mut shutdown => break Outcome::Shutdown,
                () = faults.fatal.cancelled(), if !fatal_sent => {
                    fatal_sent = true;
                    core.fail(CoreFailure::Fatal).await;
                }
                _ = core.exited(), if core.is_running() => {
                    if fatal_sent {
                        break Outcome::EngineDied;
                    }
                    if tokio::time::timeout(SIGNAL_RACE_GRACE, &mut shutdown).await.is_ok() {
                        break Outcome::Shutdown;
                    }
                    log::error_block(
                        "core_client.py:564",
                        "Engine core proc EngineCore died unexpectedly, shutting down client.",
                    );
                    break Outcome::EngineDied;
                }
            }
        };
        let grace = match outcome {
            Outcome::Shutdown => {
                log::info("launcher.py:251", "[shutdown] API server: shutdown triggered");
                drain + CONNECTION_GRACE
            }
            Outcome::EngineDied => {
                log::error_block(
                    "async_llm.py:480",
                    &format!("AsyncLLM output_handler failed.\n{}", failure::output_handler_failed()),
                );
                // /health turns 503; the core drops every request, whose streams end with the
                // EngineDeadError event.
                faults.dead.cancel();
                let _ = tokio::time::timeout(ENGINE_DEATH_EXIT_DELAY, &mut shutdown).await;
                CONNECTION_GRACE
            }
        };
        if uvicorn_info {
            log::uvicorn("Shutting down");
        }
        cancel.cancel();
        if tokio::time::timeout(grace, &mut server).await.is_err() {
            log::warning(
                "launcher.py:290",
                "[shutdown] connections still open after the grace period; closing them",
            );
        }
        tracker.close();
        if tokio::time::timeout(CONNECTION_GRACE, tracker.wait()).await.is_err() {
            log::warning("launcher.py:291", "[shutdown] engine core did not stop in time");
        }
        core.force_kill().await;
        if uvicorn_info {
            log::uvicorn("Waiting for application shutdown.");
            log::uvicorn("Application shutdown complete.");
            log::uvicorn(format_args!("Finished server process [{}]", std::process::id()));
        }
        match outcome {
            Outcome::Shutdown => Ok(()),
            Outcome::EngineDied => Err(SimExit::EngineDied.into()),
        }
    }
}

/// The traceback of a failed `bind`, with Python's `[Errno N] strerror`.
fn bind_error(err: &std::io::Error) -> String {
    let errno = err.raw_os_error().unwrap_or(0);
    let text = err.to_string();
    let strerror = text.strip_suffix(&format!(" (os error {errno})")).unwrap_or(&text);
    failure::bind_failed(errno, strerror)
}

/// `--host` to an address; none binds all IPv4 interfaces, like vLLM.
async fn resolve(host: Option<&str>, port: u16) -> Result<SocketAddr, SimError> {
    match host {
        None | Some("") => Ok(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port))),
        Some(host) => {
            let host = host.trim_start_matches('[').trim_end_matches(']');
            tokio::net::lookup_host((host, port))
                .await
                .map_err(|source| SimError::Resolve {
                    host: host.to_owned(),
                    source,
                })?
                .next()
                .ok_or_else(|| SimError::NoAddress { host: host.to_owned() })
        }
    }
}

fn cache_config_labels(engine: &EngineShape) -> Vec<(&'static str, String)> {
    vec![
        ("block_size", BLOCK_SIZE.to_string()),
        ("cache_dtype", "auto".to_owned()),
        ("enable_prefix_caching", py_bool(engine.prefix_caching).to_owned()),
        ("gpu_memory_utilization", "0.92".to_owned()),
        ("num_cpu_blocks", "None".to_owned()),
        ("num_gpu_blocks", engine.kv_blocks.to_string()),
    ]
}

/// vLLM's periodic `Engine 000: Avg prompt throughput ...` line, while there is activity.
async fn log_stats_periodically(stats: Arc<Mutex<EngineStats>>, cancel: CancellationToken) {
    let interval = std::env::var("VLLM_LOG_STATS_INTERVAL")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|v| v.is_finite() && *v > 0.0)
        .map_or(Duration::from_secs(10), Duration::from_secs_f64);
    let mut ticker = tokio::time::interval_at(Instant::now() + interval, interval);
    let mut last = (0u64, 0u64, 0u64, 0u64);
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let (line, now) = {
            let s = stats.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            let now = (
                s.prompt_tokens,
                s.generation_tokens,
                s.prefix_cache_queries,
                s.prefix_cache_hits,
            );
            let secs = interval.as_secs_f64();
            let queries = now.2 - last.2;
            let hit_rate = if queries == 0 {
                0.0
            } else {
                (now.3 - last.3) as f64 * 100.0 / queries as f64
            };
            let line = (now != last || s.running > 0 || s.waiting > 0).then(|| {
                format!(
                    "Engine 000: Avg prompt throughput: {:.1} tokens/s, Avg generation throughput: {:.1} tokens/s, Running: {} reqs, Waiting: {} reqs, GPU KV cache usage: {:.1}%, Prefix cache hit rate: {hit_rate:.1}%",
                    (now.0 - last.0) as f64 / secs,
                    (now.1 - last.1) as f64 / secs,
                    s.running,
                    s.waiting,
                    s.kv_cache_usage * 100.0,
                )
            });
            (line, now)
        };
        if let Some(line) = line {
            log::info("loggers.py:123", line);
        }
        last = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bind_errors_read_like_python() {
        let err = std::io::Error::from_raw_os_error(98);
        assert!(bind_error(&err).ends_with("\nOSError: [Errno 98] Address already in use\n"));
        assert_eq!(bind_error(&err), failure::port_in_use());
    }
}
