//! The operations endpoints: `/livez` (the process runs), `/readyz` (engine ready and MQTT connected and
//! subscribed, else 503 naming the failing component), `/status` (what the service is doing, as JSON: model,
//! projects, engine, queue, GPUs, broker), `/metrics` (Prometheus text). Handlers only read state.

use std::net::SocketAddr;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::engine::EngineState;
use crate::observe::Board;

/// What the handlers read.
#[derive(Debug, Clone)]
pub struct HttpState {
    pub engine: watch::Receiver<EngineState>,
    pub mqtt_ready: watch::Receiver<bool>,
    pub metrics: PrometheusHandle,
    pub board: Board,
}

pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/livez", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/status", get(status))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn readyz(State(state): State<HttpState>) -> impl IntoResponse {
    let engine = state.engine.borrow().clone();
    let mqtt = *state.mqtt_ready.borrow();
    let ready = engine.is_ready() && mqtt;
    let reason = match &engine {
        EngineState::Unhealthy { reason } | EngineState::Failed { reason } => Some(reason.clone()),
        _ => None,
    };
    let body = json!({
        "status": if ready { "ready" } else { "not_ready" },
        "engine": { "ready": engine.is_ready(), "state": engine.name(), "reason": reason },
        "mqtt": { "ready": mqtt },
        "broker": state.board.broker_summary(),
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body))
}

async fn status(State(state): State<HttpState>) -> impl IntoResponse {
    Json(state.board.status())
}

async fn metrics(State(state): State<HttpState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        state.metrics.render(),
    )
}

/// Serve on `listener` (already bound) on `tracker` until `cancel`. Returns the address it listens on.
pub fn serve(
    listener: TcpListener,
    state: HttpState,
    tracker: &TaskTracker,
    cancel: CancellationToken,
) -> std::io::Result<SocketAddr> {
    let local = listener.local_addr()?;
    let app = router(state);
    tracker.spawn(async move {
        let server = axum::serve(listener, app).with_graceful_shutdown(cancel.cancelled_owned());
        if let Err(e) = server.await {
            tracing::error!(error = %e, "HTTP server failed");
        }
    });
    Ok(local)
}
