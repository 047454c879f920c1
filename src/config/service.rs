//! The settings of the service's other subsystems from the raw ones: MQTT, the request path (bridge), the
//! session store and the GPU monitoring.

use std::num::{NonZeroU32, NonZeroUsize};
use std::time::Duration;

use mqtt_llm_protocol::broker::BrokerUrl;
use mqtt_llm_protocol::topics::{ProjectName, parse_project_list};
use mqtt_llm_protocol::wire::WireLimits;

use super::credentials::{client_identity, mqtt_password};
use super::error::{ConfigError, Problem, invalid};
use super::projects::owner_mode;
use super::raw::{RawGpu, RawMqtt, RawRequests};
use super::{BridgeConfig, SamplingDefaults};
use crate::admission::AdmissionSettings;
use crate::gpu::GpuSettings;
use crate::mqtt::legacy_status::LegacyStatusSettings;
use crate::mqtt::settings::{DEFAULT_RECONNECT_MAX, DEFAULT_RECONNECT_MIN};
use crate::mqtt::{MqttSettings, MqttVersion};
use crate::session::settings::PersistSettings;
use crate::session::{OwnerMode, SessionSettings, TrimSettings};

pub(super) fn mqtt_settings(raw: &RawMqtt) -> Result<MqttSettings, ConfigError> {
    // Without --broker, the embedded broker's loopback listener: its port is known once it listens.
    let BrokerUrl { host, port, tls } = match &raw.broker {
        Some(url) => BrokerUrl::parse(url).map_err(|e| invalid("--broker", Problem::Broker(e)))?,
        None => BrokerUrl {
            host: "127.0.0.1".to_owned(),
            port: 0,
            tls: false,
        },
    };
    if raw.mqtt_ca.is_some() && !tls {
        return Err(invalid("--mqtt-ca", "only applies to an mqtts:// broker"));
    }
    let projects = parse_project_list(&raw.projects).map_err(|e| invalid("--projects", Problem::Topic(e)))?;
    if raw.max_packet_size < 1024 {
        return Err(invalid("--max-packet-size", "must be at least 1024 bytes"));
    }
    let version = match raw.mqtt_version {
        3 => MqttVersion::V311,
        5 => MqttVersion::V5,
        _ => return Err(invalid("--mqtt-version", "must be 3 or 5")),
    };
    let client_id = raw
        .mqtt_client_id
        .clone()
        .unwrap_or_else(|| format!("mqtt-llm-{:08x}", rand::random::<u32>()));
    let status_topic = status_topic(&raw.status_prefix)?;
    let legacy_status = legacy_status(raw, &projects, &status_topic)?;
    Ok(MqttSettings {
        host,
        port,
        tls,
        ca_file: raw.mqtt_ca.clone(),
        client_identity: client_identity(raw, tls)?,
        username: raw.mqtt_username.clone(),
        password: mqtt_password(raw)?,
        version,
        client_id,
        keep_alive: keep_alive(raw.mqtt_keep_alive)?,
        max_packet_size: raw.max_packet_size,
        projects,
        state_projects: Vec::new(),
        status_topic,
        legacy_status,
        reconnect_min: DEFAULT_RECONNECT_MIN,
        reconnect_max: DEFAULT_RECONNECT_MAX,
    })
}

/// `--mqtt-keep-alive`: whole seconds (the protocol's unit), from 5 s (the MQTT client's minimum) to 65535 s.
pub(super) fn keep_alive(d: Duration) -> Result<Duration, ConfigError> {
    if d.subsec_nanos() != 0 || d < Duration::from_secs(5) || d > Duration::from_secs(u64::from(u16::MAX)) {
        return Err(invalid(
            "--mqtt-keep-alive",
            "must be whole seconds between 5s and 65535s",
        ));
    }
    Ok(d)
}

/// Shortest `--legacy-status-interval`: a heartbeat, not a flood.
const MIN_LEGACY_STATUS_INTERVAL: Duration = Duration::from_millis(100);

/// `--legacy-status`: the successor's heartbeat on `{first project}/status`, unless turned off.
fn legacy_status(
    raw: &RawMqtt,
    projects: &[ProjectName],
    status_topic: &str,
) -> Result<Option<LegacyStatusSettings>, ConfigError> {
    if !raw.legacy_status {
        return Ok(None);
    }
    if raw.legacy_status_interval < MIN_LEGACY_STATUS_INTERVAL {
        return Err(invalid("--legacy-status-interval", "must be at least 100ms"));
    }
    let Some(first) = projects.first() else {
        return Ok(None);
    };
    let topic = LegacyStatusSettings::topic_for(first);
    if topic == status_topic {
        return Err(invalid(
            "--legacy-status",
            "the first project's status topic is mqtt-llm's own (`--status-prefix`): change one, or turn the legacy \
             status off",
        ));
    }
    Ok(Some(LegacyStatusSettings {
        topic,
        interval: raw.legacy_status_interval,
    }))
}

/// The capacity topic beside the status topic, and the stats line.
pub(super) fn observe_settings(mqtt: &RawMqtt, ops: &super::RawOps) -> Result<super::ObserveSettings, ConfigError> {
    if mqtt.capacity_interval < std::time::Duration::from_secs(1) {
        return Err(invalid("--capacity-interval", "must be at least 1s"));
    }
    Ok(super::ObserveSettings {
        capacity: crate::observe::capacity::CapacitySettings {
            topic: crate::observe::capacity::CapacitySettings::topic_for(&mqtt.status_prefix),
            interval: mqtt.capacity_interval,
        },
        stats_interval: (!ops.stats_interval.is_zero()).then_some(ops.stats_interval),
    })
}

/// `{prefix}/status`; the prefix is a plain topic (no wildcard, NUL or leading `$`, no empty level at either end).
fn status_topic(prefix: &str) -> Result<String, ConfigError> {
    let bad = |why: &'static str| Err(invalid("--status-prefix", why));
    if prefix.is_empty() || prefix.starts_with('/') || prefix.ends_with('/') {
        return bad("must be a topic such as `mqtt-llm` or `site/ai` (not empty, no leading or trailing `/`)");
    }
    if prefix.contains(['+', '#', '\0']) {
        return bad("must not contain the wildcards `+`, `#` or NUL");
    }
    if prefix.starts_with('$') {
        return bad("must not start with `$` (broker topics)");
    }
    Ok(crate::mqtt::status::Presence::topic_for(prefix))
}

pub(super) fn session_settings(raw: &RawRequests) -> Result<SessionSettings, ConfigError> {
    if !(raw.trim_low_water > 0.0 && raw.trim_low_water < 1.0) {
        return Err(invalid("--trim-low-water", "must be greater than 0 and less than 1"));
    }
    let persist = if raw.no_persist {
        None
    } else {
        let dir = match &raw.state_dir {
            Some(dir) if dir.as_os_str().is_empty() => return Err(invalid("--state-dir", Problem::Empty)),
            Some(dir) => dir.clone(),
            None => default_state_dir().ok_or_else(|| {
                invalid(
                    "--state-dir",
                    "has no default here (neither XDG_STATE_HOME nor HOME is set): give one, or --no-persist",
                )
            })?,
        };
        Some(PersistSettings {
            dir,
            interval: non_zero_duration("--persist-interval", raw.persist_interval)?,
        })
    };
    Ok(SessionSettings {
        max_history_tokens: NonZeroU32::new(raw.max_history_tokens)
            .ok_or_else(|| invalid("--max-history-tokens", Problem::Zero))?,
        trim: TrimSettings {
            policy: raw.trim_policy,
            low_water: raw.trim_low_water,
            max_turns: NonZeroU32::new(raw.max_history_turns),
        },
        idle_timeout: raw.session_idle_timeout,
        max_sessions: non_zero("--max-sessions", raw.max_sessions)?,
        max_bytes: non_zero("--max-history-bytes", raw.max_history_bytes)?,
        persist,
    })
}

/// `$XDG_STATE_HOME/mqtt-llm` (an absolute `XDG_STATE_HOME` only, as the XDG spec says), else
/// `$HOME/.local/state/mqtt-llm`.
pub fn default_state_dir() -> Option<std::path::PathBuf> {
    let absolute = |v: std::ffi::OsString| {
        let p = std::path::PathBuf::from(v);
        p.is_absolute().then_some(p)
    };
    if let Some(state) = std::env::var_os("XDG_STATE_HOME").and_then(absolute) {
        return Some(state.join("mqtt-llm"));
    }
    std::env::var_os("HOME")
        .and_then(absolute)
        .map(|home| home.join(".local/state/mqtt-llm"))
}

/// `--session-owner`, the default of projects without their own `session_owner`.
pub(super) fn session_owner(raw: &RawRequests) -> Result<OwnerMode, ConfigError> {
    owner_mode(raw.session_owner).map_err(|rule| invalid("--session-owner", rule))
}

/// The request path's settings; `max_packet_size` is MQTT's (`--max-packet-size`), which a payload must fit in.
pub(super) fn bridge_config(
    raw: &RawRequests,
    max_packet_size: u32,
    session: SessionSettings,
) -> Result<BridgeConfig, ConfigError> {
    if !(0.0..=2.0).contains(&raw.temperature) {
        return Err(invalid("--temperature", "must be between 0 and 2"));
    }
    if !(raw.top_p > 0.0 && raw.top_p <= 1.0) {
        return Err(invalid("--top-p", "must be greater than 0 and at most 1"));
    }
    if raw.max_tokens == 0 || raw.max_tokens > raw.max_tokens_limit {
        return Err(invalid("--max-tokens", "must be between 1 and --max-tokens-limit"));
    }
    if raw.max_payload_bytes as u64 > u64::from(max_packet_size) {
        return Err(invalid("--max-payload-bytes", "must not exceed --max-packet-size"));
    }
    Ok(BridgeConfig {
        admission: AdmissionSettings {
            max_inflight: non_zero("--max-inflight", raw.max_inflight)?,
            session_queue: non_zero("--session-queue", raw.session_queue)?,
            max_queued: non_zero("--max-queued", raw.max_queued)?,
            engine_wait: raw.engine_wait,
            max_queue_wait: non_zero_duration("--max-queue-wait", raw.max_queue_wait)?,
        },
        sessions: session,
        stream_interval: Duration::from_millis(raw.stream_interval_ms),
        defaults: SamplingDefaults {
            temperature: raw.temperature,
            top_p: raw.top_p,
            max_tokens: raw.max_tokens,
        },
        skip_thinking: raw.skip_thinking,
        request_timeout: raw.request_timeout,
        limits: WireLimits {
            max_payload_bytes: raw.max_payload_bytes,
            max_tokens_limit: raw.max_tokens_limit,
            max_images: raw.max_images,
            max_image_bytes: raw.max_image_bytes,
            ..WireLimits::default()
        },
    })
}

pub(super) fn gpu_settings(raw: &RawGpu) -> GpuSettings {
    GpuSettings {
        skip_check: raw.skip_gpu_check,
        sample_interval: raw.gpu_sample_interval,
        low_free_bytes: raw.gpu_low_free_mib.saturating_mul(1024 * 1024),
    }
}

fn non_zero(flag: &'static str, v: usize) -> Result<NonZeroUsize, ConfigError> {
    NonZeroUsize::new(v).ok_or_else(|| invalid(flag, Problem::Zero))
}

fn non_zero_duration(flag: &'static str, v: Duration) -> Result<Duration, ConfigError> {
    if v.is_zero() {
        Err(invalid(flag, Problem::Zero))
    } else {
        Ok(v)
    }
}
