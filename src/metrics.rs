//! Every metric of the service, declared once, with typed record functions.
//!
//! Names follow `mqtt_llm_<subsystem>_<name>_{total,seconds,bytes}`; labels are of low cardinality: project
//! (configured), outcome, reason/error code. Never a session id. The Prometheus text is rendered by
//! `metrics-exporter-prometheus` (default features off; `/metrics` is served by our own HTTP server).

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use Group::{Broker, Gpu, Service};
use Kind::{Counter, Gauge, Histogram};
use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub const REQUESTS_RECEIVED: &str = "mqtt_llm_requests_received_total";
pub const REQUESTS_REJECTED: &str = "mqtt_llm_requests_rejected_total";
pub const REPLIES: &str = "mqtt_llm_replies_total";
pub const REQUEST_ERRORS: &str = "mqtt_llm_request_errors_total";
pub const REPLY_TOPIC_FALLBACKS: &str = "mqtt_llm_reply_topic_fallbacks_total";
pub const STATE_SUPERSEDED: &str = "mqtt_llm_state_superseded_total";
pub const CONTROL_MESSAGES: &str = "mqtt_llm_control_messages_total";
pub const REQUEST_DURATION: &str = "mqtt_llm_request_duration_seconds";
pub const TTFT: &str = "mqtt_llm_time_to_first_token_seconds";
pub const TOKENS: &str = "mqtt_llm_tokens_total";
pub const STREAM_FRAMES: &str = "mqtt_llm_stream_frames_total";
pub const REQUESTS_QUEUED: &str = "mqtt_llm_requests_queued";
pub const REQUESTS_INFLIGHT: &str = "mqtt_llm_requests_inflight";
pub const SESSIONS: &str = "mqtt_llm_sessions";
pub const HISTORY_TRIMMED: &str = "mqtt_llm_history_trimmed_turns_total";
pub const HISTORY_TRIMS: &str = "mqtt_llm_history_trims_total";
pub const SESSION_BYTES: &str = "mqtt_llm_session_bytes";
pub const SESSION_EVICTIONS: &str = "mqtt_llm_session_evictions_total";
pub const STORE_WRITES: &str = "mqtt_llm_store_writes_total";
pub const STORE_WRITE_SECONDS: &str = "mqtt_llm_store_write_seconds";
pub const STORE_SESSIONS_WRITTEN: &str = "mqtt_llm_store_sessions_written_total";
pub const STORE_SESSIONS_RESTORED: &str = "mqtt_llm_store_sessions_restored";
pub const STORE_PENDING: &str = "mqtt_llm_store_pending_sessions";
pub const TOKENIZE_CALLS: &str = "mqtt_llm_tokenize_calls_total";
pub const MQTT_CONNECTED: &str = "mqtt_llm_mqtt_connected";
pub const MQTT_CONNECTIONS: &str = "mqtt_llm_mqtt_connections_total";
pub const MQTT_CONNECTION_ERRORS: &str = "mqtt_llm_mqtt_connection_errors_total";
pub const MQTT_PUBLISH_ERRORS: &str = "mqtt_llm_mqtt_publish_errors_total";
pub const MQTT_UNACKED_AT_SHUTDOWN: &str = "mqtt_llm_mqtt_unacked_at_shutdown_total";
pub const MQTT_PUBLISHES_DROPPED: &str = "mqtt_llm_mqtt_publishes_dropped_total";
pub const ENGINE_READY: &str = "mqtt_llm_engine_ready";
pub const ENGINE_RESTARTS: &str = "mqtt_llm_engine_restarts_total";
pub const ENGINE_STATE: &str = "mqtt_llm_engine_state";
pub const INTER_TOKEN_LATENCY: &str = "mqtt_llm_inter_token_latency_seconds";
pub const QUEUE_WAIT: &str = "mqtt_llm_queue_wait_seconds";
pub const BROKER_CLIENTS: &str = "mqtt_llm_broker_clients";
pub const BROKER_SUBSCRIPTIONS: &str = "mqtt_llm_broker_subscriptions";
pub const BROKER_MESSAGES: &str = "mqtt_llm_broker_messages_total";

/// Every value of [`ENGINE_STATE`]'s `state` label (the engine's state names).
pub const ENGINE_STATES: &[&str] = &[
    "starting",
    "ready",
    "unhealthy",
    "restarting",
    "failed",
    "stopping",
    "stopped",
];

/// Default buckets of every `_seconds` histogram without buckets of its own.
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];
/// Accept → reply: a short answer takes a fraction of a second, a long one on a busy engine minutes.
const REQUEST_BUCKETS: &[f64] = &[
    0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 45.0, 60.0, 90.0, 120.0, 180.0, 300.0, 600.0,
];
/// Accept → first token: prefill of a cached prompt is tens of ms, a long uncached one or a queue seconds.
const TTFT_BUCKETS: &[f64] = &[
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 7.5, 10.0, 20.0, 30.0, 60.0,
    120.0,
];
/// Between stream deltas: a decode step is 5 to 100 ms; longer gaps are a preempted or overloaded engine.
const INTER_TOKEN_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75,
    1.0, 2.5, 5.0,
];
/// Accept → engine slot: zero on an idle server; seconds under load, up to `--max-queue-wait` (30 s).
const QUEUE_WAIT_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 60.0, 120.0,
];

/// Install the Prometheus recorder (once per process) and return the handle that renders it.
pub fn install() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
                .and_then(|b| b.set_buckets_for_metric(Matcher::Full(REQUEST_DURATION.into()), REQUEST_BUCKETS))
                .and_then(|b| b.set_buckets_for_metric(Matcher::Full(TTFT.into()), TTFT_BUCKETS))
                .and_then(|b| b.set_buckets_for_metric(Matcher::Full(INTER_TOKEN_LATENCY.into()), INTER_TOKEN_BUCKETS))
                .and_then(|b| b.set_buckets_for_metric(Matcher::Full(QUEUE_WAIT.into()), QUEUE_WAIT_BUCKETS))
                .map(PrometheusBuilder::build_recorder);
            match recorder {
                Ok(recorder) => {
                    let handle = recorder.handle();
                    if metrics::set_global_recorder(recorder).is_err() {
                        tracing::warn!("a metrics recorder was already installed; /metrics will be empty");
                    }
                    describe();
                    register_fixed();
                    handle
                }
                Err(e) => {
                    tracing::warn!(error = %e, "metrics recorder not installed");
                    PrometheusBuilder::new().build_recorder().handle()
                }
            }
        })
        .clone()
}

/// Every metric: group, kind, name, help.
#[rustfmt::skip]
const DESCRIPTIONS: &[(Group, Kind, &str, &str)] = &[
    (Service, Counter, REQUESTS_RECEIVED, "Messages received on {project}/user_input (and a state project's {project}/state)."),
    (Service, Counter, REQUESTS_REJECTED, "Requests refused before reaching the engine, by reason."),
    (Service, Counter, REPLIES, "Final replies published, by outcome (ok or error)."),
    (Service, Counter, REQUEST_ERRORS, "Accepted requests answered with an error, by error code."),
    (Service, Counter, REPLY_TOPIC_FALLBACKS, "Client reply/stream topics not used (default used), by reason."),
    (Service, Counter, STATE_SUPERSEDED, "State messages replaced, unanswered, by a newer state of their session while waiting."),
    (Service, Counter, CONTROL_MESSAGES, "Messages on the control topics (template, clear_history, delete_session), by action and outcome (ok, or why refused)."),
    (Service, Histogram, REQUEST_DURATION, "From accepting a request to publishing its reply."),
    (Service, Histogram, TTFT, "From accepting a request to the engine's first token."),
    (Service, Counter, TOKENS, "Engine tokens by kind (prompt, completion, cached)."),
    (Service, Counter, STREAM_FRAMES, "Stream frames published."),
    (Service, Gauge, REQUESTS_QUEUED, "Accepted requests not yet answered (waiting or running)."),
    (Service, Gauge, REQUESTS_INFLIGHT, "Requests the engine is working on."),
    (Service, Gauge, SESSIONS, "Conversations held in memory."),
    (Service, Counter, HISTORY_TRIMMED, "Oldest turns dropped to keep histories within the token budget."),
    (Service, Counter, HISTORY_TRIMS, "Trims of a history (each drops one or more whole oldest turns)."),
    (Service, Gauge, SESSION_BYTES, "Bytes of conversation history held in memory (turn text and cached JSON)."),
    (Service, Counter, SESSION_EVICTIONS, "Conversations forgotten: idle expiry, the session cap (lru) or the byte cap."),
    (Service, Counter, STORE_WRITES, "Write transactions of the session store, by outcome."),
    (Service, Histogram, STORE_WRITE_SECONDS, "Time of one session-store write transaction (with its fsync)."),
    (Service, Counter, STORE_SESSIONS_WRITTEN, "Conversation records written to the session store."),
    (Service, Gauge, STORE_SESSIONS_RESTORED, "Conversations restored from the session store at start-up."),
    (Service, Gauge, STORE_PENDING, "Conversations changed in memory and not yet written to the session store."),
    (Service, Counter, TOKENIZE_CALLS, "Prompts counted with the engine's /tokenize near the budget, by outcome."),
    (Service, Gauge, MQTT_CONNECTED, "1 while connected to the broker."),
    (Service, Counter, MQTT_CONNECTIONS, "Successful broker connections (ConnAck)."),
    (Service, Counter, MQTT_CONNECTION_ERRORS, "Broker connection errors (each followed by a reconnect attempt)."),
    (Service, Counter, MQTT_PUBLISH_ERRORS, "Publishes that could not be handed to the MQTT client."),
    (Service, Counter, MQTT_UNACKED_AT_SHUTDOWN, "Publishes the broker had not acknowledged when the drain deadline passed."),
    (Service, Counter, MQTT_PUBLISHES_DROPPED, "Publishes dropped with a broken broker connection, by kind (frame; reply: beyond the held replies' bound)."),
    (Service, Gauge, ENGINE_READY, "1 while the engine is ready."),
    (Service, Counter, ENGINE_RESTARTS, "Engine restarts, by cause (crash, hang, start_timeout)."),
    (Service, Gauge, ENGINE_STATE, "The engine's state: 1 for the current one, 0 for the others."),
    (Service, Histogram, INTER_TOKEN_LATENCY, "Time between two stream deltas of the engine (per delta after the first)."),
    (Service, Histogram, QUEUE_WAIT, "From accepting a request to its engine slot (session lane, engine start, in-flight limit)."),
    (Broker, Gauge, BROKER_CLIENTS, "Clients connected to the embedded broker."),
    (Broker, Gauge, BROKER_SUBSCRIPTIONS, "Subscriptions held by the embedded broker."),
    (Broker, Counter, BROKER_MESSAGES, "Messages through the embedded broker, by direction (in: published to it, out: delivered by it)."),
    (Gpu, Gauge, GPU_MEMORY_USED, "GPU memory in use, by any process, per GPU."),
    (Gpu, Gauge, GPU_MEMORY_FREE, "GPU memory free per GPU, as CUDA (and vLLM's start-up check) sees it."),
    (Gpu, Gauge, GPU_MEMORY_TOTAL, "GPU memory installed per GPU."),
    (Gpu, Gauge, GPU_UTILIZATION, "Share of the last sample period a kernel ran, per GPU (0 to 1)."),
    (Gpu, Gauge, GPU_ENGINE_MEMORY, "GPU memory held by the launched engine's process group (EngineCore and workers), per GPU."),
    (Gpu, Counter, GPU_LOW_FREE_WARNINGS, "Times a GPU's free memory fell under the warning threshold."),
    (Gpu, Counter, GPU_SAMPLE_ERRORS, "GPU samples that failed (NVML errors)."),
];

fn describe() {
    describe_group(Service);
}

/// Every declared metric: name, and its Prometheus type (`counter`, `gauge` or `histogram`).
pub fn declared() -> impl Iterator<Item = (&'static str, &'static str)> {
    DESCRIPTIONS.iter().map(|&(_, kind, name, _)| {
        let kind = match kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        };
        (name, kind)
    })
}

/// Export the metrics whose label values are known in advance at zero from the start, so that a dashboard or an
/// alert sees `0`, not "no data", before the first event (Prometheus' advice: initialise what you can).
fn register_fixed() {
    for name in [
        MQTT_CONNECTIONS,
        MQTT_CONNECTION_ERRORS,
        MQTT_PUBLISH_ERRORS,
        MQTT_UNACKED_AT_SHUTDOWN,
        STORE_SESSIONS_WRITTEN,
    ] {
        counter!(name).absolute(0);
    }
    for kind in ["frame", "reply"] {
        counter!(MQTT_PUBLISHES_DROPPED, "kind" => kind).absolute(0);
    }
    for reason in ["crash", "hang", "start_timeout"] {
        counter!(ENGINE_RESTARTS, "reason" => reason).absolute(0);
    }
    for reason in ["idle", "lru", "bytes"] {
        counter!(SESSION_EVICTIONS, "reason" => reason).absolute(0);
    }
    for policy in ["stable", "sliding"] {
        counter!(HISTORY_TRIMMED, "policy" => policy).absolute(0);
        counter!(HISTORY_TRIMS, "policy" => policy).absolute(0);
    }
    for outcome in ["fits", "over", "unsupported", "error"] {
        counter!(TOKENIZE_CALLS, "outcome" => outcome).absolute(0);
    }
    for outcome in ["ok", "error"] {
        counter!(STORE_WRITES, "outcome" => outcome).absolute(0);
    }
    for name in [
        REQUESTS_QUEUED,
        REQUESTS_INFLIGHT,
        SESSIONS,
        SESSION_BYTES,
        STORE_PENDING,
        STORE_SESSIONS_RESTORED,
        MQTT_CONNECTED,
        ENGINE_READY,
    ] {
        gauge!(name).increment(0.0);
    }
    engine_state("starting");
}

/// Export a configured project's per-project counters at zero (requests, replies by outcome, frames, tokens).
pub fn register_project(project: &str) {
    counter!(REQUESTS_RECEIVED, "project" => project.to_owned()).absolute(0);
    for outcome in ["ok", "error"] {
        counter!(REPLIES, "project" => project.to_owned(), "outcome" => outcome).absolute(0);
    }
    counter!(STREAM_FRAMES, "project" => project.to_owned()).absolute(0);
    for kind in ["prompt", "completion", "cached"] {
        counter!(TOKENS, "project" => project.to_owned(), "kind" => kind).absolute(0);
    }
}

/// Metrics described together.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Group {
    Service,
    /// Described when the GPU sampler starts.
    Gpu,
    /// Described when the embedded broker starts.
    Broker,
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

fn describe_group(group: Group) {
    for &(_, kind, name, help) in DESCRIPTIONS.iter().filter(|row| row.0 == group) {
        match kind {
            Kind::Counter => describe_counter!(name, help),
            Kind::Gauge => describe_gauge!(name, help),
            Kind::Histogram => describe_histogram!(name, help),
        }
    }
}

/// A gauge that goes up on creation and down on drop.
#[derive(Debug)]
pub struct GaugeGuard {
    name: &'static str,
}

impl GaugeGuard {
    pub fn new(name: &'static str) -> Self {
        gauge!(name).increment(1.0);
        Self { name }
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        gauge!(self.name).decrement(1.0);
    }
}

/// Running totals for the stats log line and `/status` (the original's fields), beside the Prometheus series.
#[derive(Debug, Default)]
struct Totals {
    processed: AtomicU64,
    errors: AtomicU64,
    rejected: AtomicU64,
    latency_micros: AtomicU64,
    timed: AtomicU64,
}

static TOTALS: Totals = Totals {
    processed: AtomicU64::new(0),
    errors: AtomicU64::new(0),
    rejected: AtomicU64::new(0),
    latency_micros: AtomicU64::new(0),
    timed: AtomicU64::new(0),
};

/// The process's totals so far (all apps of the process together, like the metrics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct TotalsSnapshot {
    /// Requests answered with a reply.
    pub processed: u64,
    /// Accepted requests answered with an error.
    pub errors: u64,
    /// Requests refused before they were accepted.
    pub rejected: u64,
    /// Sum of accept → reply times of `processed` and `errors`, in microseconds.
    #[serde(skip)]
    pub latency_micros: u64,
    /// How many times `latency_micros` sums.
    #[serde(skip)]
    pub timed: u64,
}

impl TotalsSnapshot {
    /// The average accept → reply time of the requests answered between `earlier` and `self`.
    pub fn average_latency_since(&self, earlier: &Self) -> Option<Duration> {
        let n = self.timed.checked_sub(earlier.timed).filter(|n| *n > 0)?;
        let micros = self.latency_micros.saturating_sub(earlier.latency_micros);
        Some(Duration::from_micros(micros / n))
    }
}

pub fn totals() -> TotalsSnapshot {
    TotalsSnapshot {
        processed: TOTALS.processed.load(Ordering::Relaxed),
        errors: TOTALS.errors.load(Ordering::Relaxed),
        rejected: TOTALS.rejected.load(Ordering::Relaxed),
        latency_micros: TOTALS.latency_micros.load(Ordering::Relaxed),
        timed: TOTALS.timed.load(Ordering::Relaxed),
    }
}

pub fn request_received(project: &str) {
    counter!(REQUESTS_RECEIVED, "project" => project.to_owned()).increment(1);
}

/// A request refused before the engine saw it; `reason` is a stable code.
pub fn request_rejected(project: &str, reason: &'static str) {
    TOTALS.rejected.fetch_add(1, Ordering::Relaxed);
    counter!(REQUESTS_REJECTED, "project" => project.to_owned(), "reason" => reason).increment(1);
}

/// A message on a control topic; `outcome` is `ok` or the stable code of its refusal.
pub fn control_message(project: &str, action: &'static str, outcome: &'static str) {
    counter!(CONTROL_MESSAGES, "project" => project.to_owned(), "action" => action, "outcome" => outcome).increment(1);
}

pub fn reply_topic_fallback(project: &str, reason: &'static str) {
    counter!(REPLY_TOPIC_FALLBACKS, "project" => project.to_owned(), "reason" => reason).increment(1);
}

/// `count` waiting state messages were replaced by a newer state of their session (dropped, never answered).
pub fn state_superseded(project: &str, count: usize) {
    counter!(STATE_SUPERSEDED, "project" => project.to_owned()).increment(count as u64);
}

/// A final reply was published (`error_code` = None for a successful one).
pub fn reply_published(project: &str, error_code: Option<&'static str>) {
    let outcome = if error_code.is_some() { "error" } else { "ok" };
    let total = if error_code.is_some() {
        &TOTALS.errors
    } else {
        &TOTALS.processed
    };
    total.fetch_add(1, Ordering::Relaxed);
    counter!(REPLIES, "project" => project.to_owned(), "outcome" => outcome).increment(1);
    if let Some(code) = error_code {
        counter!(REQUEST_ERRORS, "project" => project.to_owned(), "code" => code).increment(1);
    }
}

pub fn request_timing(project: &str, total: Duration, ttft: Option<Duration>) {
    let micros = u64::try_from(total.as_micros()).unwrap_or(u64::MAX);
    TOTALS.latency_micros.fetch_add(micros, Ordering::Relaxed);
    TOTALS.timed.fetch_add(1, Ordering::Relaxed);
    histogram!(REQUEST_DURATION, "project" => project.to_owned()).record(total.as_secs_f64());
    if let Some(ttft) = ttft {
        histogram!(TTFT, "project" => project.to_owned()).record(ttft.as_secs_f64());
    }
}

pub fn tokens(project: &str, prompt: u32, completion: u32, cached: u32) {
    counter!(TOKENS, "project" => project.to_owned(), "kind" => "prompt").increment(u64::from(prompt));
    counter!(TOKENS, "project" => project.to_owned(), "kind" => "completion").increment(u64::from(completion));
    counter!(TOKENS, "project" => project.to_owned(), "kind" => "cached").increment(u64::from(cached));
}

pub fn stream_frame(project: &str) {
    counter!(STREAM_FRAMES, "project" => project.to_owned()).increment(1);
}

pub fn sessions(n: usize) {
    gauge!(SESSIONS).set(n as f64);
}

pub fn history_trimmed(policy: &'static str, turns: usize) {
    counter!(HISTORY_TRIMMED, "policy" => policy).increment(turns as u64);
    counter!(HISTORY_TRIMS, "policy" => policy).increment(1);
}

pub fn session_bytes(bytes: usize) {
    gauge!(SESSION_BYTES).set(bytes as f64);
}

/// `reason`: `idle`, `lru` or `bytes`.
pub fn session_evictions(reason: &'static str, n: usize) {
    if n > 0 {
        counter!(SESSION_EVICTIONS, "reason" => reason).increment(n as u64);
    }
}

/// One store write transaction: `ok` or `error`, its duration and the records it wrote.
pub fn store_write(ok: bool, seconds: f64, sessions: usize) {
    counter!(STORE_WRITES, "outcome" => if ok { "ok" } else { "error" }).increment(1);
    histogram!(STORE_WRITE_SECONDS).record(seconds);
    counter!(STORE_SESSIONS_WRITTEN).increment(sessions as u64);
}

pub fn store_pending(sessions: usize) {
    gauge!(STORE_PENDING).set(sessions as f64);
}

pub fn store_restored(sessions: usize) {
    gauge!(STORE_SESSIONS_RESTORED).set(sessions as f64);
}

/// `outcome`: `fits`, `over` (the prompt was trimmed further), `unsupported` (the engine has no chat /tokenize) or
/// `error`.
pub fn tokenize_call(outcome: &'static str) {
    counter!(TOKENIZE_CALLS, "outcome" => outcome).increment(1);
}

pub fn mqtt_connected(up: bool) {
    gauge!(MQTT_CONNECTED).set(if up { 1.0 } else { 0.0 });
    if up {
        counter!(MQTT_CONNECTIONS).increment(1);
    }
}

pub fn mqtt_connection_error() {
    counter!(MQTT_CONNECTION_ERRORS).increment(1);
}

pub fn mqtt_publish_error() {
    counter!(MQTT_PUBLISH_ERRORS).increment(1);
}

/// `count` publishes were still unacknowledged when the shutdown's drain deadline passed.
pub fn mqtt_unacked_at_shutdown(count: usize) {
    counter!(MQTT_UNACKED_AT_SHUTDOWN).increment(count as u64);
}

/// `count` publishes of `kind` (`frame` or `reply`) dropped with a broken broker connection.
pub fn mqtt_publishes_dropped(kind: &'static str, count: usize) {
    if count > 0 {
        counter!(MQTT_PUBLISHES_DROPPED, "kind" => kind).increment(count as u64);
    }
}

pub fn engine_restart(kind: &'static str) {
    counter!(ENGINE_RESTARTS, "reason" => kind).increment(1);
}

pub fn engine_ready(ready: bool) {
    gauge!(ENGINE_READY).set(if ready { 1.0 } else { 0.0 });
}

/// The engine is in `state` (one of [`ENGINE_STATES`]): its series 1, the others 0.
pub fn engine_state(state: &str) {
    for &s in ENGINE_STATES {
        gauge!(ENGINE_STATE, "state" => s).set(if s == state { 1.0 } else { 0.0 });
    }
}

/// The histogram of one request's gaps between stream deltas (taken once per request; recording is then cheap).
pub fn inter_token_histogram(project: &str) -> metrics::Histogram {
    histogram!(INTER_TOKEN_LATENCY, "project" => project.to_owned())
}

pub fn queue_wait(project: &str, wait: Duration) {
    histogram!(QUEUE_WAIT, "project" => project.to_owned()).record(wait.as_secs_f64());
}

// ---------------------------------------------------------------------------------------------------------------
// The embedded broker (sampled by the broker's stats task).
// ---------------------------------------------------------------------------------------------------------------

/// Describe the embedded broker's metrics (when it starts) and export them at zero.
pub fn describe_broker() {
    describe_group(Broker);
    gauge!(BROKER_CLIENTS).set(0.0);
    gauge!(BROKER_SUBSCRIPTIONS).set(0.0);
    for direction in ["in", "out"] {
        counter!(BROKER_MESSAGES, "direction" => direction).absolute(0);
    }
}

/// The embedded broker's figures: connected clients, subscriptions, and cumulative messages in and out.
pub fn broker(clients: usize, subscriptions: usize, messages_in: u64, messages_out: u64) {
    gauge!(BROKER_CLIENTS).set(clients as f64);
    gauge!(BROKER_SUBSCRIPTIONS).set(subscriptions as f64);
    counter!(BROKER_MESSAGES, "direction" => "in").absolute(messages_in);
    counter!(BROKER_MESSAGES, "direction" => "out").absolute(messages_out);
}

// ---------------------------------------------------------------------------------------------------------------
// GPUs (sampled by `gpu::sampler`). Label `gpu` is NVML's index: as many values as the machine has GPUs.
// ---------------------------------------------------------------------------------------------------------------

pub const GPU_MEMORY_USED: &str = "mqtt_llm_gpu_memory_used_bytes";
pub const GPU_MEMORY_FREE: &str = "mqtt_llm_gpu_memory_free_bytes";
pub const GPU_MEMORY_TOTAL: &str = "mqtt_llm_gpu_memory_total_bytes";
pub const GPU_UTILIZATION: &str = "mqtt_llm_gpu_utilization_ratio";
pub const GPU_ENGINE_MEMORY: &str = "mqtt_llm_gpu_engine_memory_bytes";
pub const GPU_LOW_FREE_WARNINGS: &str = "mqtt_llm_gpu_low_free_warnings_total";
pub const GPU_SAMPLE_ERRORS: &str = "mqtt_llm_gpu_sample_errors_total";

/// Describe the GPU metrics. Called when the sampler starts (after [`install`]); describing twice is harmless.
pub fn describe_gpu() {
    describe_group(Gpu);
}

fn gpu_label(index: u32) -> String {
    index.to_string()
}

pub fn gpu_memory(index: u32, used: u64, free: u64, total: u64) {
    gauge!(GPU_MEMORY_USED, "gpu" => gpu_label(index)).set(used as f64);
    gauge!(GPU_MEMORY_FREE, "gpu" => gpu_label(index)).set(free as f64);
    gauge!(GPU_MEMORY_TOTAL, "gpu" => gpu_label(index)).set(total as f64);
}

/// `percent` None (the device does not report it) leaves the gauge unset.
pub fn gpu_utilization(index: u32, percent: Option<u32>) {
    if let Some(p) = percent {
        gauge!(GPU_UTILIZATION, "gpu" => gpu_label(index)).set(f64::from(p) / 100.0);
    }
}

pub fn gpu_engine_memory(index: u32, bytes: u64) {
    gauge!(GPU_ENGINE_MEMORY, "gpu" => gpu_label(index)).set(bytes as f64);
}

pub fn gpu_low_free_warning(index: u32) {
    counter!(GPU_LOW_FREE_WARNINGS, "gpu" => gpu_label(index)).increment(1);
}

pub fn gpu_sample_error() {
    counter!(GPU_SAMPLE_ERRORS).increment(1);
}
