//! [`Presence`]: the retained status topic that tells devices whether the assistant is there.
//!
//! - once subscribed (after every (re)connect): `{"status":"online","model",...,"since"}`, retained;
//! - the connection's Last Will, which the broker publishes when the connection dies without a DISCONNECT:
//!   `{"status":"offline","reason":"connection lost"}`, retained;
//! - on a clean shutdown, after the last reply is acknowledged and before the DISCONNECT (which discards the Will):
//!   `{"status":"offline","reason":"shutdown","since"}`, retained.
//!
//! The topic is `{--status-prefix}/status` (default `mqtt-llm/status`): one of the few topics mqtt-llm publishes
//! outside its projects' reply prefixes, and the operator's choice.

use std::time::SystemTime;

use bytes::Bytes;
use serde::Serialize;

/// What the status messages say about this instance.
#[derive(Debug, Clone, PartialEq)]
pub struct Presence {
    /// `{prefix}/status`.
    pub topic: String,
    /// The served model name.
    pub model: String,
    pub projects: Vec<String>,
    /// mqtt-llm's version.
    pub version: &'static str,
}

#[derive(Serialize)]
struct Online<'a> {
    status: &'static str,
    model: &'a str,
    projects: &'a [String],
    version: &'a str,
    since: String,
}

#[derive(Serialize)]
struct Offline<'a> {
    status: &'static str,
    reason: &'a str,
    version: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    since: Option<String>,
}

/// Why the status went offline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OfflineReason {
    /// A clean shutdown (published by mqtt-llm).
    Shutdown,
    /// The connection died (the Last Will, published by the broker).
    ConnectionLost,
}

impl OfflineReason {
    fn as_str(self) -> &'static str {
        match self {
            Self::Shutdown => "shutdown",
            Self::ConnectionLost => "connection lost",
        }
    }
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

fn json(value: &impl Serialize) -> Bytes {
    Bytes::from(serde_json::to_vec(value).expect("status payloads always serialise"))
}

impl Presence {
    /// `{prefix}/status`.
    pub fn topic_for(prefix: &str) -> String {
        format!("{prefix}/status")
    }

    /// The retained "online" message, `since` now.
    pub fn online(&self) -> Bytes {
        json(&Online {
            status: "online",
            model: &self.model,
            projects: &self.projects,
            version: self.version,
            since: now_rfc3339(),
        })
    }

    /// The retained "offline" message: the Will (no time: it is written at connect, published at death) or the
    /// shutdown notice (`since` now).
    pub fn offline(&self, reason: OfflineReason) -> Bytes {
        json(&Offline {
            status: "offline",
            reason: reason.as_str(),
            version: self.version,
            since: (reason == OfflineReason::Shutdown).then(now_rfc3339),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn presence() -> Presence {
        Presence {
            topic: Presence::topic_for("mqtt-llm"),
            model: "qwen".into(),
            projects: vec!["general".into(), "maze".into()],
            version: "1.2.3",
        }
    }

    #[test]
    fn payloads_say_who_is_there_and_since_when() {
        let p = presence();
        assert_eq!(p.topic, "mqtt-llm/status");
        let online: serde_json::Value = serde_json::from_slice(&p.online()).unwrap();
        assert_eq!(online["status"], "online");
        assert_eq!(online["model"], "qwen");
        assert_eq!(online["projects"], serde_json::json!(["general", "maze"]));
        assert_eq!(online["version"], "1.2.3");
        assert!(online["since"].as_str().unwrap().ends_with('Z'), "{online}");
        let will: serde_json::Value = serde_json::from_slice(&p.offline(OfflineReason::ConnectionLost)).unwrap();
        assert_eq!(
            will,
            serde_json::json!({"status":"offline","reason":"connection lost","version":"1.2.3"})
        );
        let bye: serde_json::Value = serde_json::from_slice(&p.offline(OfflineReason::Shutdown)).unwrap();
        assert_eq!(bye["status"], "offline");
        assert_eq!(bye["reason"], "shutdown");
        assert!(bye["since"].is_string());
    }
}
