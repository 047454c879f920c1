//! Every default of `mqtt-llm up`, once: [`super::RawSettings::default`] and the clap arguments (so `--help`
//! shows them) both read these.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

/// A default duration: the text `--help` shows and the value it stands for, parsed at compile time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DefaultDuration {
    pub text: &'static str,
    pub value: Duration,
}

impl DefaultDuration {
    /// `text` is whole seconds, minutes or hours (`10s`, `5m`, `1h`); anything else fails the build.
    pub const fn new(text: &'static str) -> Self {
        let bytes = text.as_bytes();
        assert!(bytes.len() >= 2, "a default duration is digits and a unit");
        let mut n: u64 = 0;
        let mut i = 0;
        while i + 1 < bytes.len() {
            assert!(bytes[i].is_ascii_digit(), "a default duration is digits and a unit");
            n = n * 10 + (bytes[i] - b'0') as u64;
            i += 1;
        }
        let unit = match bytes[i] {
            b's' => 1,
            b'm' => 60,
            b'h' => 3600,
            _ => panic!("a default duration's unit is s, m or h"),
        };
        Self {
            text,
            value: Duration::from_secs(n * unit),
        }
    }
}

// ---- engine ----
pub const DEFAULT_PYTHON: &str = "python3";
pub const DEFAULT_GPU_MEMORY_UTILIZATION: f32 = 0.85;
pub const DEFAULT_ENGINE_START_TIMEOUT: DefaultDuration = DefaultDuration::new("20m");
pub const DEFAULT_ENGINE_GRACE: DefaultDuration = DefaultDuration::new("10s");
pub const DEFAULT_ENGINE_PROBE_INTERVAL: DefaultDuration = DefaultDuration::new("5s");
pub const DEFAULT_ENGINE_STALL_TIMEOUT: DefaultDuration = DefaultDuration::new("60s");
pub const DEFAULT_ENGINE_WAIT: DefaultDuration = DefaultDuration::new("60s");
pub const DEFAULT_MAX_QUEUE_WAIT: DefaultDuration = DefaultDuration::new("30s");
pub const DEFAULT_MAX_RESTARTS: u32 = 5;
pub const DEFAULT_RESTART_WINDOW: DefaultDuration = DefaultDuration::new("10m");

// ---- MQTT ----
pub const DEFAULT_BROKER: &str = "mqtt://127.0.0.1:1883";
/// 3 (3.1.1) or 5.
pub const DEFAULT_MQTT_VERSION: u8 = 5;
pub const DEFAULT_MAX_PACKET_SIZE: u32 = 1024 * 1024;
pub const DEFAULT_MQTT_KEEP_ALIVE: DefaultDuration = DefaultDuration::new("30s");
/// `{prefix}/status` carries the retained online/offline status.
pub const DEFAULT_STATUS_PREFIX: &str = "mqtt-llm";
pub const DEFAULT_PROJECTS: &str = super::GENERAL;
/// The successor server's heartbeat on `{first project}/status` is on by default (its tools watch it).
pub const DEFAULT_LEGACY_STATUS: bool = true;
/// The successor's heartbeat period.
pub const DEFAULT_LEGACY_STATUS_INTERVAL: DefaultDuration = DefaultDuration::new("30s");

// ---- requests ----
pub const DEFAULT_MAX_INFLIGHT: usize = 64;
pub const DEFAULT_SESSION_QUEUE: usize = 8;
pub const DEFAULT_MAX_QUEUED: usize = 1000;
pub const DEFAULT_STREAM_INTERVAL_MS: u64 = 50;
pub const DEFAULT_TEMPERATURE: f32 = 0.6;
pub const DEFAULT_TOP_P: f32 = 0.9;
pub const DEFAULT_MAX_TOKENS: u32 = 512;
pub const DEFAULT_MAX_TOKENS_LIMIT: u32 = 32768;
pub const DEFAULT_SKIP_THINKING: bool = true;
pub const DEFAULT_MAX_HISTORY_TOKENS: u32 = 3000;
pub const DEFAULT_SESSION_IDLE_TIMEOUT: DefaultDuration = DefaultDuration::new("1h");
pub const DEFAULT_MAX_SESSIONS: usize = 10_000;
/// `--trim-low-water`: after a `stable` trim the prompt holds at most this share of the budget.
pub const DEFAULT_TRIM_LOW_WATER: f32 = 0.6;
/// `--max-history-turns`: 0 = no limit but the tokens.
pub const DEFAULT_MAX_HISTORY_TURNS: u32 = 0;
/// `--max-history-bytes`: history text (and cached JSON) held in memory, all sessions together.
pub const DEFAULT_MAX_HISTORY_BYTES: usize = 256 * 1024 * 1024;
/// `--persist-interval`: a completed turn is on disk within this long.
pub const DEFAULT_PERSIST_INTERVAL: DefaultDuration = DefaultDuration::new("1s");
pub const DEFAULT_REQUEST_TIMEOUT: DefaultDuration = DefaultDuration::new("5m");
pub const DEFAULT_MAX_PAYLOAD_BYTES: usize = 64 * 1024;
pub const DEFAULT_MAX_IMAGES: usize = mqtt_llm_protocol::wire::DEFAULT_MAX_IMAGES;
pub const DEFAULT_MAX_IMAGE_BYTES: usize = mqtt_llm_protocol::wire::DEFAULT_MAX_IMAGE_BYTES;

// ---- operations ----
pub const DEFAULT_HTTP: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9090);
pub const DEFAULT_DRAIN_TIMEOUT: DefaultDuration = DefaultDuration::new("30s");
/// The original server's stats line came every 60 s.
pub const DEFAULT_STATS_INTERVAL: DefaultDuration = DefaultDuration::new("60s");
/// `{prefix}/capacity` is published on change and at least this often.
pub const DEFAULT_CAPACITY_INTERVAL: DefaultDuration = DefaultDuration::new("5s");

// ---- GPUs ----
pub const DEFAULT_GPU_SAMPLE_INTERVAL: DefaultDuration = DefaultDuration::new("5s");
pub const DEFAULT_GPU_LOW_FREE_MIB: u64 = 1024;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_as_humantime_does() {
        for d in [
            DEFAULT_ENGINE_START_TIMEOUT,
            DEFAULT_ENGINE_STALL_TIMEOUT,
            DEFAULT_SESSION_IDLE_TIMEOUT,
            DEFAULT_GPU_SAMPLE_INTERVAL,
        ] {
            assert_eq!(humantime::parse_duration(d.text).unwrap(), d.value, "{}", d.text);
        }
        assert_eq!(DEFAULT_ENGINE_START_TIMEOUT.value, Duration::from_secs(1200));
        assert_eq!(DEFAULT_HTTP.to_string(), "127.0.0.1:9090");
    }
}
