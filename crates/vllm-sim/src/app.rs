//! What every handler shares: [`AppState`], the API server's read-mostly state, and the checks
//! each JSON endpoint makes (content type, body, model name). Used by [`super::http`] (routes and
//! small endpoints) and [`super::chat`] (chat completions), which do not depend on each other's
//! internals.

use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::http::{HeaderMap, header};
use tokio_util::sync::CancellationToken;

use super::config::SimConfig;
use super::errors::ApiError;
use super::metrics::{EngineStats, Exposition};
use super::scheduler::EngineHandle;
use super::tokenizer::Vocab;

/// Shared, read-mostly state of the API server.
#[derive(Debug)]
pub struct AppState {
    pub config: SimConfig,
    pub engine: EngineHandle,
    pub stats: Arc<Mutex<EngineStats>>,
    pub exposition: Exposition,
    pub vocab: Vocab,
    pub fingerprint: Arc<str>,
    pub response_role: Arc<str>,
    /// Cancelled once the engine core is dead (`/health` answers 503 from then on).
    pub dead: CancellationToken,
}

/// Seconds since the epoch.
pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The JSON body of a request to one of vLLM's JSON-only endpoints: any other content type is a
/// 400, and so is a body that does not parse as `T`.
pub fn json_body<T: serde::de::DeserializeOwned>(headers: &HeaderMap, body: &[u8]) -> Result<T, ApiError> {
    require_json(headers)?;
    serde_json::from_slice(body).map_err(|e| ApiError::from_json(&e))
}

/// vLLM's JSON-only endpoints answer 400 to any other content type.
fn require_json(headers: &HeaderMap) -> Result<(), ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let media = content_type.split(';').next().unwrap_or("").trim();
    if media.eq_ignore_ascii_case("application/json") {
        Ok(())
    } else {
        Err(ApiError::UnsupportedMediaType)
    }
}

/// An omitted model is fine; a name that is not served is a 404.
pub fn check_model(cfg: &SimConfig, model: Option<&str>) -> Result<(), ApiError> {
    match model {
        Some(name) if !cfg.served_names.iter().any(|n| n == name) => Err(ApiError::ModelNotFound {
            model: name.to_owned(),
            aliases: cfg.served_names.join(", "),
        }),
        _ => Ok(()),
    }
}
