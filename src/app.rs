//! The composition root: build every component from the [`Config`], run until a shutdown signal (or the engine
//! dies), then shut down in order: stop intake, drain requests, disconnect MQTT, stop the engine, wait for every
//! task. One root [`CancellationToken`] and one [`TaskTracker`] own all tasks.
//!
//! Two entries: [`run`] binds `config.http_addr` itself; [`run_on`] serves on a listener the caller already holds
//! (tests bind port 0 and keep the socket, so no other process can take the port between choosing and serving).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use url::Url;

use crate::admission::Admission;
use crate::bridge::{Bridge, BridgeParts, overflow_handler};
use crate::config::Config;
use crate::engine::{EngineError, EngineHandle, EngineMode, EngineState, spawn_engine};
use crate::http::{self, HttpState};
use crate::llm::{LlmClient, LlmError};
use crate::metrics;
use crate::mqtt::client::MqttError;
use crate::mqtt::eventloop::{Inbound, spawn_mqtt};
use crate::mqtt::status::Presence;
use crate::observe::{Board, BoardParts, BrokerView};
use crate::store::{Recovered, Store, StoreError};

/// Messages from the event loop waiting for the intake.
const INBOUND_QUEUE: usize = 4096;
/// How long MQTT may take to flush the last replies and disconnect.
const MQTT_STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// Milestones, for the command that runs the app to report (the app itself never prints).
#[derive(Debug, Clone, PartialEq)]
pub enum AppEvent {
    HttpListening(SocketAddr),
    /// The embedded broker listens (without `--broker`): its MQTT and WebSocket addresses, each `None` when off.
    BrokerListening {
        tcp: Option<SocketAddr>,
        ws: Option<SocketAddr>,
        tls: bool,
    },
    EngineLaunched {
        command: String,
    },
    /// A start-up phase of the engine was reached (read from its log), `elapsed` since launch.
    EnginePhase {
        phase: String,
        elapsed: Duration,
    },
    EngineReady {
        url: Url,
        model: String,
    },
    MqttReady,
    Draining,
    Stopped,
}

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The HTTP listener could not be bound (by [`run`]) or taken over (by [`run_on`]).
    #[error("cannot serve HTTP on {addr}: {source}")]
    Http {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("cannot learn the engine's model name: {}", .0.user_message())]
    Model(#[source] LlmError),
    #[error("cannot learn the engine's model name: {0}")]
    LlmSetup(#[source] LlmError),
    #[error("MQTT: {0}")]
    Mqtt(#[from] MqttError),
    #[error("{0}")]
    Gpu(#[from] crate::gpu::PreflightError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Broker(#[from] crate::broker::BrokerError),
    #[error("the engine failed while serving: {reason}")]
    EngineDied { reason: String, tail: Vec<String> },
}

/// Run the service until `shutdown` resolves, serving HTTP on `config.http_addr` (port 0 picks one; the
/// [`AppEvent::HttpListening`] event names it). `events` receives milestones, [`AppEvent::Stopped`] last. The
/// address is bound before anything starts, so a taken port fails fast with [`AppError::Http`].
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()>,
    events: mpsc::UnboundedSender<AppEvent>,
) -> Result<(), AppError> {
    let http = match std::net::TcpListener::bind(config.http_addr) {
        Ok(l) => l,
        Err(source) => {
            let _ = events.send(AppEvent::Stopped);
            return Err(AppError::Http {
                addr: config.http_addr,
                source,
            });
        }
    };
    run_on(config, http, shutdown, events).await
}

/// [`run`] on an HTTP listener the caller already holds (`config.http_addr` is not used). Needs a Tokio runtime
/// with I/O enabled; the listener is made non-blocking and handed to the server.
pub async fn run_on(
    config: Config,
    http: std::net::TcpListener,
    shutdown: impl Future<Output = ()>,
    events: mpsc::UnboundedSender<AppEvent>,
) -> Result<(), AppError> {
    mqtt_llm_client::tls::ensure_crypto_provider();
    let result = match adopt_listener(http, config.http_addr) {
        Ok(http) => {
            let prometheus = metrics::install();
            let tracker = TaskTracker::new();
            let root = CancellationToken::new();
            let result = run_inner(&config, http, shutdown, &events, &tracker, &root, prometheus).await;
            root.cancel();
            tracker.close();
            tracker.wait().await;
            result
        }
        Err(e) => Err(e),
    };
    let _ = events.send(AppEvent::Stopped);
    result
}

/// Take over a bound std listener for Tokio. `fallback` names it in the error if it cannot say its own address.
fn adopt_listener(listener: std::net::TcpListener, fallback: SocketAddr) -> Result<TcpListener, AppError> {
    let addr = listener.local_addr().unwrap_or(fallback);
    listener
        .set_nonblocking(true)
        .and_then(|()| TcpListener::from_std(listener))
        .map_err(|source| AppError::Http { addr, source })
}

async fn run_inner(
    config: &Config,
    http: TcpListener,
    shutdown: impl Future<Output = ()>,
    events: &mpsc::UnboundedSender<AppEvent>,
    tracker: &TaskTracker,
    root: &CancellationToken,
    prometheus: metrics_exporter_prometheus::PrometheusHandle,
) -> Result<(), AppError> {
    tokio::pin!(shutdown);
    // The session store first: a corrupt or locked store is a start-up error before anything is launched.
    let store = open_store(config).await?;
    let gpus = gpu_preflight(config)?;
    // Then the embedded broker (without --broker): a taken port fails before the engine is launched.
    let broker = match &config.embedded_broker {
        Some(settings) => {
            let broker = crate::broker::EmbeddedBroker::start(settings.clone()).await?;
            let public = [broker.tcp_addr(), broker.ws_addr()]
                .into_iter()
                .flatten()
                .any(|a| !a.ip().is_loopback());
            if public && settings.auth.is_none() {
                tracing::warn!(
                    "the embedded MQTT broker listens beyond this host and lets anyone connect: give it users with \
                     --broker-auth FILE, or listen on 127.0.0.1 only"
                );
            }
            let _ = events.send(AppEvent::BrokerListening {
                tcp: broker.tcp_addr(),
                ws: broker.ws_addr(),
                tls: settings.tls.is_some(),
            });
            Some(Arc::new(broker))
        }
        None => None,
    };
    let mut mqtt_settings = config.mqtt.clone();
    if let Some(broker) = &broker {
        mqtt_settings.host = broker.bridge_addr().ip().to_string();
        mqtt_settings.port = broker.bridge_addr().port();
        if let Some((user, password)) = broker.bridge_credentials() {
            mqtt_settings.username = Some(user.to_owned());
            mqtt_settings.password = Some(crate::secret::Secret::new(password));
        }
    }
    let engine = spawn_engine(&config.engine, tracker)?;
    if let Some(command) = engine.command() {
        let _ = events.send(AppEvent::EngineLaunched {
            command: command.display(),
        });
    }
    track_engine_metric(&engine, tracker);
    for project in &config.mqtt.projects {
        metrics::register_project(project.as_str());
    }
    let (mqtt_ready_tx, mqtt_ready_rx) = watch::channel(false);
    let board = Board::new(BoardParts {
        projects: config.mqtt.projects.iter().map(|p| p.as_str().to_owned()).collect(),
        model: configured_model(config),
        engine: engine.clone(),
        launched: matches!(config.engine.mode, EngineMode::Launch(_)),
        mqtt_ready: mqtt_ready_rx.clone(),
    });
    match &broker {
        Some(broker) => board.set_broker(BrokerView::Embedded {
            tcp: broker.tcp_addr(),
            ws: broker.ws_addr(),
            probe: spawn_broker_sampler(Arc::downgrade(broker), tracker, root.child_token()),
        }),
        None => board.set_broker(BrokerView::External {
            url: format!(
                "{}://{}:{}",
                if config.mqtt.tls { "mqtts" } else { "mqtt" },
                config.mqtt.host,
                config.mqtt.port
            ),
        }),
    }
    tracker.spawn(crate::engine::progress::follow(
        engine.startup_progress(),
        root.child_token(),
        {
            let events = events.clone();
            move |p| {
                let _ = events.send(AppEvent::EnginePhase {
                    phase: p.phase.to_string(),
                    elapsed: p.elapsed,
                });
            }
        },
    ));
    if let Some(source) = gpus {
        let sampler = crate::gpu::SamplerConfig {
            interval: config.gpu.sample_interval,
            low_free_bytes: config.gpu.low_free_bytes,
        };
        let monitor = crate::gpu::spawn_sampler(source, engine.process_group(), sampler, tracker, root.child_token());
        board.set_gpus(monitor);
    }
    if let Some(interval) = config.observe.stats_interval {
        crate::observe::stats::spawn_stats(board.clone(), interval, tracker, root.child_token());
    }
    let http_state = HttpState {
        engine: engine.subscribe(),
        mqtt_ready: mqtt_ready_rx.clone(),
        metrics: prometheus,
        board: board.clone(),
    };
    let held = http.local_addr().unwrap_or(config.http_addr);
    let http_addr = match http::serve(http, http_state, tracker, root.child_token()) {
        Ok(a) => a,
        Err(source) => {
            engine.shutdown().await;
            return Err(AppError::Http { addr: held, source });
        }
    };
    let _ = events.send(AppEvent::HttpListening(http_addr));

    // Start-up: wait for the engine, or a signal.
    let started = tokio::select! {
        r = engine.wait_ready() => r,
        _ = &mut shutdown => {
            tracing::info!("shutdown requested during engine start-up");
            engine.shutdown().await;
            return Ok(());
        }
    };
    if let Err(e) = started {
        engine.shutdown().await;
        return Err(e.into());
    }
    let model = match &config.engine.served_model_name {
        Some(m) => m.clone(),
        None => match LlmClient::discover_model(engine.base_url(), config.engine.connect_timeout).await {
            Ok(m) => m,
            Err(e) => {
                engine.shutdown().await;
                return Err(AppError::Model(e));
            }
        },
    };
    let llm = LlmClient::new(engine.base_url().clone(), model.clone(), config.engine.connect_timeout)
        .map_err(AppError::LlmSetup)?;
    let presence = Presence {
        topic: config.mqtt.status_topic.clone(),
        model: model.clone(),
        projects: config.mqtt.projects.iter().map(|p| p.as_str().to_owned()).collect(),
        version: env!("CARGO_PKG_VERSION"),
    };
    board.set_model(&model);
    let _ = events.send(AppEvent::EngineReady {
        url: engine.base_url().clone(),
        model,
    });

    // MQTT, its publisher, and the bridge.
    let (inbound_tx, inbound_rx) = mpsc::channel::<Inbound>(INBOUND_QUEUE);
    let admission = Admission::new(config.bridge.admission, engine.clone());
    let overflow = overflow_handler(
        config.mqtt.projects.clone(),
        config.bridge.limits.clone(),
        config.projects.clone(),
        admission.clone(),
    );
    board.set_admission(admission.clone());
    let (mqtt, publisher) = match spawn_mqtt(
        &mqtt_settings,
        presence,
        inbound_tx,
        overflow,
        mqtt_ready_tx,
        tracker,
        root.child_token(),
    ) {
        Ok(m) => m,
        Err(e) => {
            engine.shutdown().await;
            return Err(e.into());
        }
    };
    crate::observe::capacity::spawn_capacity(
        board.clone(),
        publisher.clone(),
        mqtt_ready_rx.clone(),
        config.observe.capacity.clone(),
        tracker,
        root.child_token(),
    );
    let closing = publisher.clone();
    let parts = BridgeParts {
        admission,
        projects: config.mqtt.projects.clone(),
        catalog: config.projects.clone(),
        llm,
        engine: engine.clone(),
        publisher,
        store,
    };
    let (bridge, intake) = Bridge::new(&config.bridge, parts);
    bridge.spawn_session_sweeper(tracker, root.child_token());
    bridge.spawn_persister(tracker, root.child_token());
    bridge.spawn_queue_expiry(tracker, root.child_token());
    let intake_cancel = root.child_token();
    intake.spawn(inbound_rx, tracker, intake_cancel.clone());
    {
        let mut ready = mqtt_ready_rx.clone();
        let events = events.clone();
        let cancel = root.child_token();
        tracker.spawn(async move {
            tokio::select! {
                r = ready.wait_for(|r| *r) => if r.is_ok() { let _ = events.send(AppEvent::MqttReady); },
                _ = cancel.cancelled() => {}
            }
        });
    }

    // Serve until a signal or the engine's death.
    let mut engine_state = engine.subscribe();
    let died = tokio::select! {
        _ = &mut shutdown => None,
        s = engine_state.wait_for(EngineState::is_terminal) => Some(match s {
            Ok(s) => s.clone(),
            Err(_) => EngineState::Failed { reason: "engine task ended".into() },
        }),
    };
    let _ = events.send(AppEvent::Draining);
    tracing::info!("shutting down");
    let drain_deadline = tokio::time::Instant::now() + config.drain_timeout;
    if *mqtt_ready_rx.borrow() {
        crate::observe::capacity::publish_closing(&board, &closing, &config.observe.capacity);
    }
    bridge.drain(config.drain_timeout).await;
    bridge.persist_final().await;
    intake_cancel.cancel();
    // The replies' PUBACKs may take what is left of the drain timeout; the DISCONNECT then MQTT_STOP_TIMEOUT.
    mqtt.shutdown(drain_deadline, MQTT_STOP_TIMEOUT).await;
    engine.shutdown().await;
    if let Some(broker) = broker {
        stop_broker(broker).await;
    }
    match died {
        Some(EngineState::Failed { reason }) => Err(AppError::EngineDied {
            reason,
            tail: engine.log_tail(),
        }),
        _ => Ok(()),
    }
}

/// How long the embedded broker may take, at shutdown, to pass the last replies on to their subscribers.
const BROKER_FLUSH: Duration = Duration::from_secs(2);
/// How often the embedded broker's figures are read into the metrics and `/status`.
const BROKER_SAMPLE: Duration = Duration::from_secs(2);

/// Read the embedded broker's figures every [`BROKER_SAMPLE`] into the metrics; the probe returns the last read.
fn spawn_broker_sampler(
    broker: std::sync::Weak<crate::broker::EmbeddedBroker>,
    tracker: &TaskTracker,
    cancel: CancellationToken,
) -> crate::observe::BrokerProbe {
    metrics::describe_broker();
    let last = Arc::new(std::sync::Mutex::new(crate::observe::BrokerFigures::default()));
    let probe = Arc::clone(&last);
    tracker.spawn(async move {
        let mut tick = tokio::time::interval(BROKER_SAMPLE);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tick.tick() => {}
            }
            let Some(broker) = broker.upgrade() else { break };
            let s = broker.stats().await;
            drop(broker);
            let figures = crate::observe::BrokerFigures {
                clients: usize::try_from(s.clients_connected).unwrap_or(0),
                subscriptions: usize::try_from(s.subscriptions).unwrap_or(0),
                messages_in: s.messages_received,
                messages_out: s.messages_sent,
            };
            metrics::broker(
                figures.clients,
                figures.subscriptions,
                figures.messages_in,
                figures.messages_out,
            );
            if let Ok(mut l) = last.lock() {
                *l = figures;
            }
        }
    });
    Arc::new(move || probe.lock().map(|f| *f).unwrap_or_default())
}

/// Stop the embedded broker once it has passed on what it was given: the bridge's last replies are acknowledged
/// to the bridge when the broker has them, not when the devices do, so its deliveries are waited for (until the
/// delivered count stops moving for a moment, at most [`BROKER_FLUSH`]).
async fn stop_broker(broker: Arc<crate::broker::EmbeddedBroker>) {
    let deadline = tokio::time::Instant::now() + BROKER_FLUSH;
    let mut sent = broker.stats().await.messages_sent;
    while tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = broker.stats().await.messages_sent;
        if now == sent {
            break;
        }
        sent = now;
    }
    match Arc::try_unwrap(broker) {
        Ok(broker) => broker.shutdown().await,
        // The sampler is reading it this moment: dropping ours stops it when the sampler lets go.
        Err(broker) => drop(broker),
    }
}

/// The model's name before the engine tells it: `--served-model-name`, else the launched `--model`.
fn configured_model(config: &Config) -> Option<String> {
    if let Some(name) = &config.engine.served_model_name {
        return Some(name.clone());
    }
    match &config.engine.mode {
        EngineMode::Launch(launch) => Some(launch.model.clone()),
        EngineMode::Attach { .. } => None,
    }
}

/// Open the session store under `--state-dir` and read it back (off the async workers), unless `--no-persist`.
async fn open_store(config: &Config) -> Result<Option<(Store, Recovered)>, AppError> {
    let Some(persist) = &config.bridge.sessions.persist else {
        return Ok(None);
    };
    let dir = persist.dir.clone();
    let opened = tokio::task::spawn_blocking(move || Store::open(&dir))
        .await
        .map_err(|e| {
            AppError::Store(StoreError::Io {
                path: Store::file_in(&persist.dir),
                detail: e.to_string(),
            })
        })?;
    Ok(Some(opened?))
}

/// Launch mode: check that the chosen GPUs have the memory vLLM will ask for (unless `--skip-gpu-check`), and
/// return the NVML source for the sampler when there is a driver.
fn gpu_preflight(config: &Config) -> Result<Option<Arc<dyn crate::gpu::GpuSource>>, AppError> {
    use crate::gpu::{self, GpuSource, LaunchGpuCheck, LaunchGpuRequest, NvmlSource};
    let EngineMode::Launch(launch) = &config.engine.mode else {
        return Ok(None);
    };
    if let crate::engine::LaunchedServer::LlamaCpp(_) = launch.server {
        // llama.cpp runs on the CPU: no GPU to check or sample.
        return Ok(None);
    }
    // A missing engine is the first thing to say, before anything about GPUs.
    crate::engine::check_executable(&launch.vllm_bin).map_err(|source| {
        AppError::Engine(crate::engine::EngineError::Spawn {
            program: launch.vllm_bin.display().to_string(),
            source,
        })
    })?;
    let nvml = NvmlSource::init();
    if !config.gpu.skip_check {
        let snapshot = nvml.as_ref().map_err(Clone::clone).and_then(|s| s.snapshot());
        let visible = match &launch.gpu.devices {
            Some(devices) => Some(devices.join(",")),
            None => std::env::var("CUDA_VISIBLE_DEVICES").ok(),
        };
        let request = LaunchGpuRequest {
            utilization: launch.gpu.memory_utilization,
            cuda_visible_devices: visible.as_deref(),
            world_size: launch
                .gpu
                .tensor_parallel_size()
                .unwrap_or_else(|| gpu::preflight::world_size(&launch.extra_args)),
            real_vllm: gpu::preflight::is_real_vllm(&launch.vllm_bin),
        };
        match gpu::check_launch(snapshot, &request)? {
            LaunchGpuCheck::Passed { chosen } => tracing::info!(?chosen, "GPU pre-flight passed"),
            LaunchGpuCheck::Skipped { why } => tracing::warn!("{why}"),
        }
    }
    Ok(nvml.ok().map(|s| Arc::new(s) as Arc<dyn gpu::GpuSource>))
}

fn track_engine_metric(engine: &EngineHandle, tracker: &TaskTracker) {
    let mut rx = engine.subscribe();
    tracker.spawn(async move {
        loop {
            {
                let state = rx.borrow_and_update();
                metrics::engine_ready(state.is_ready());
                metrics::engine_state(state.name());
            }
            if rx.borrow().is_terminal() || rx.changed().await.is_err() {
                metrics::engine_ready(false);
                metrics::engine_state(rx.borrow().name());
                break;
            }
        }
    });
}
