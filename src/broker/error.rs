//! The embedded broker's errors: each one is a sentence a user can act on.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Which of the broker's listeners an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerKind {
    /// MQTT over TCP (or TLS when certificates are given): `--mqtt-listen`.
    Tcp,
    /// MQTT over WebSocket: `--mqtt-ws-listen`.
    Ws,
}

impl ListenerKind {
    /// The flag that sets this listener's address.
    pub fn flag(self) -> &'static str {
        match self {
            ListenerKind::Tcp => "--mqtt-listen",
            ListenerKind::Ws => "--mqtt-ws-listen",
        }
    }
}

impl fmt::Display for ListenerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ListenerKind::Tcp => "MQTT",
            ListenerKind::Ws => "MQTT-over-WebSocket",
        })
    }
}

/// Why the embedded broker could not start.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The port is held by another process (often a broker already running).
    #[error("{}", addr_in_use(*.addr, *.which))]
    AddrInUse { addr: SocketAddr, which: ListenerKind },
    /// Any other failure to bind a listener (permission denied for a port under 1024, no such address, ...).
    #[error("cannot listen for {which} on {addr} ({flag}): {source}", flag = .which.flag())]
    Bind {
        addr: SocketAddr,
        which: ListenerKind,
        source: std::io::Error,
    },
    /// The TLS certificate or key could not be read or used.
    #[error("the MQTT TLS certificate {cert} or key {key} cannot be used: {reason}", cert = .cert.display(), key = .key.display())]
    Tls {
        cert: PathBuf,
        key: PathBuf,
        reason: String,
    },
    /// The password file (or `MQTT_LLM_BROKER_AUTH`) is unreadable or malformed.
    #[error(transparent)]
    Auth(#[from] super::auth::CredentialsError),
    /// The broker's own runtime or thread could not be created, or it stopped while starting.
    #[error("the embedded MQTT broker could not start: {0}")]
    Runtime(String),
}

/// One sentence: what holds the port and the ways out. Only the TCP listener suggests `--broker` (a broker already
/// on that port is one the bridge can use instead).
fn addr_in_use(addr: SocketAddr, which: ListenerKind) -> String {
    let (port, ip, flag) = (addr.port(), addr.ip(), which.flag());
    match which {
        ListenerKind::Tcp => format!(
            "port {port} on {ip} is taken (another MQTT broker?): stop it, connect to it with --broker mqtt://{}, \
             or choose another port with {flag}",
            connect_addr(addr)
        ),
        ListenerKind::Ws => format!(
            "port {port} on {ip} is taken (another MQTT broker or web server?): stop it, or choose another port with \
             {flag} (or turn the WebSocket listener off)"
        ),
    }
}

/// The address a local client would dial for a listener bound to `addr` (a wildcard becomes loopback).
fn connect_addr(addr: SocketAddr) -> SocketAddr {
    let mut addr = addr;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    addr
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addr_in_use_is_one_sentence_that_names_the_way_out() {
        let e = BrokerError::AddrInUse {
            addr: "0.0.0.0:1883".parse().unwrap(),
            which: ListenerKind::Tcp,
        };
        assert_eq!(
            e.to_string(),
            "port 1883 on 0.0.0.0 is taken (another MQTT broker?): stop it, connect to it with --broker \
             mqtt://127.0.0.1:1883, or choose another port with --mqtt-listen"
        );
        let e = BrokerError::AddrInUse {
            addr: "[::]:9001".parse().unwrap(),
            which: ListenerKind::Ws,
        };
        assert!(e.to_string().contains("port 9001 on :: is taken"), "{e}");
        assert!(e.to_string().contains("--mqtt-ws-listen"), "{e}");
        assert!(!e.to_string().contains("--broker"), "{e}");
        let e = BrokerError::AddrInUse {
            addr: "[::]:1883".parse().unwrap(),
            which: ListenerKind::Tcp,
        };
        assert!(e.to_string().contains("mqtt://[::1]:1883"), "{e}");
    }
}
