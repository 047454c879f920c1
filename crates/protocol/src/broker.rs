//! Broker URLs: `mqtt://host[:port]` (1883) or `mqtts://host[:port]` (8883), as `--broker` takes them.

use std::fmt;

use url::Url;

/// Why a broker URL was refused.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum BrokerUrlError {
    #[error("{url:?}: {reason}")]
    Syntax { url: String, reason: String },
    #[error("unsupported scheme {0:?} (use mqtt:// or mqtts://)")]
    Scheme(String),
    #[error("missing host")]
    MissingHost,
}

/// A parsed broker address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    pub host: String,
    pub port: u16,
    /// `mqtts://`: TLS to the broker.
    pub tls: bool,
}

impl BrokerUrl {
    /// Parse `mqtt://host[:port]` (also `tcp://`) or `mqtts://host[:port]` (also `ssl://`).
    pub fn parse(s: &str) -> Result<Self, BrokerUrlError> {
        let url = Url::parse(s).map_err(|e| BrokerUrlError::Syntax {
            url: s.to_owned(),
            reason: e.to_string(),
        })?;
        let tls = match url.scheme() {
            "mqtt" | "tcp" => false,
            "mqtts" | "ssl" => true,
            other => return Err(BrokerUrlError::Scheme(other.to_owned())),
        };
        let host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or(BrokerUrlError::MissingHost)?;
        let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
        let port = url.port().unwrap_or(if tls { 8883 } else { 1883 });
        Ok(Self { host, port, tls })
    }
}

impl fmt::Display for BrokerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "mqtts" } else { "mqtt" };
        if self.host.contains(':') {
            write!(f, "{scheme}://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{scheme}://{}:{}", self.host, self.port)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_ports_follow_the_scheme() {
        assert_eq!(
            BrokerUrl::parse("mqtts://h").unwrap(),
            BrokerUrl {
                host: "h".into(),
                port: 8883,
                tls: true
            }
        );
        assert_eq!(BrokerUrl::parse("mqtt://h").unwrap().port, 1883);
        assert_eq!(BrokerUrl::parse("tcp://h:1999").unwrap().port, 1999);
        assert_eq!(BrokerUrl::parse("mqtt://[::1]:1884").unwrap().host, "::1");
    }

    #[test]
    fn other_schemes_and_hostless_urls_are_refused() {
        assert_eq!(BrokerUrl::parse("http://h"), Err(BrokerUrlError::Scheme("http".into())));
        assert!(BrokerUrl::parse("not a url").is_err());
    }

    #[test]
    fn display_round_trips() {
        for s in ["mqtt://h:1883", "mqtts://[::1]:8883"] {
            assert_eq!(BrokerUrl::parse(s).unwrap().to_string(), s);
        }
    }
}
