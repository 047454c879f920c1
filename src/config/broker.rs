//! Which broker the bridge uses: an external one (`--broker URL`), or, without `--broker`, the embedded one with
//! its listeners, users and TLS (`--mqtt-listen`, `--mqtt-ws-listen`, `--broker-auth`, `--mqtt-tls-cert/-key`).
//! The embedded broker's flags are refused beside `--broker` (they would silently do nothing), and the external
//! broker's client flags are refused without it.

use std::net::SocketAddr;

use super::error::{ConfigError, Problem, invalid};
use super::raw::RawMqtt;
use crate::broker::{BrokerSettings, Credentials, DEFAULT_TCP_LISTEN, DEFAULT_WS_LISTEN, TlsFiles};

/// The embedded broker's settings, or `None` with `--broker`.
pub(super) fn embedded_broker(raw: &RawMqtt) -> Result<Option<BrokerSettings>, ConfigError> {
    let embedded_flags = [
        ("--mqtt-listen", raw.mqtt_listen.is_some()),
        ("--mqtt-ws-listen", raw.mqtt_ws_listen.is_some()),
        (
            "--broker-auth",
            raw.broker_auth.is_some() || raw.broker_auth_lines.is_some(),
        ),
        (
            "--mqtt-tls-cert",
            raw.mqtt_tls_cert.is_some() || raw.mqtt_tls_key.is_some(),
        ),
    ];
    if raw.broker.is_some() {
        if let Some((flag, _)) = embedded_flags.iter().find(|(_, given)| *given) {
            return Err(invalid(
                flag,
                "configures the embedded broker, which does not run with --broker: drop one of them",
            ));
        }
        return Ok(None);
    }
    let external_flags = [
        ("--mqtt-ca", raw.mqtt_ca.is_some()),
        (
            "--mqtt-client-cert",
            raw.mqtt_client_cert.is_some() || raw.mqtt_client_key.is_some(),
        ),
        ("--mqtt-username", raw.mqtt_username.is_some()),
        (
            "--mqtt-password",
            raw.mqtt_password.is_some() || raw.mqtt_password_file.is_some(),
        ),
    ];
    if let Some((flag, _)) = external_flags.iter().find(|(_, given)| *given) {
        return Err(invalid(
            flag,
            "applies to an external broker (--broker URL); the embedded broker's users are in --broker-auth",
        ));
    }
    let tcp = listen("--mqtt-listen", raw.mqtt_listen.as_deref(), DEFAULT_TCP_LISTEN)?;
    let ws = listen("--mqtt-ws-listen", raw.mqtt_ws_listen.as_deref(), DEFAULT_WS_LISTEN)?;
    if let (Some(t), Some(w)) = (tcp, ws)
        && t.port() == w.port()
        && t.port() != 0
    {
        return Err(invalid("--mqtt-ws-listen", "must not use --mqtt-listen's port"));
    }
    let tls = match (&raw.mqtt_tls_cert, &raw.mqtt_tls_key) {
        (None, None) => None,
        (Some(_), None) => return Err(invalid("--mqtt-tls-cert", "needs --mqtt-tls-key too")),
        (None, Some(_)) => return Err(invalid("--mqtt-tls-key", "needs --mqtt-tls-cert too")),
        (Some(cert), Some(key)) => {
            if tcp.is_none() {
                return Err(invalid("--mqtt-tls-cert", "secures --mqtt-listen, which is off"));
            }
            Some(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
            })
        }
    };
    let auth = match (&raw.broker_auth, &raw.broker_auth_lines) {
        (Some(_), Some(_)) => {
            return Err(invalid(
                "--broker-auth",
                "conflicts with MQTT_LLM_BROKER_AUTH: give the users one way",
            ));
        }
        (Some(path), None) => {
            Some(Credentials::from_file(path).map_err(|e| invalid("--broker-auth", Problem::Detail(e.to_string())))?)
        }
        (None, Some(lines)) => Some(
            Credentials::parse(lines.expose())
                .map_err(|e| invalid("--broker-auth", Problem::Detail(format!("MQTT_LLM_BROKER_AUTH: {e}"))))?,
        ),
        (None, None) => None,
    };
    Ok(Some(BrokerSettings {
        tcp,
        ws,
        tls,
        auth,
        max_packet_size: raw.max_packet_size,
    }))
}

/// A listener flag: an address, `off`, or (not given) `default`.
fn listen(flag: &'static str, given: Option<&str>, default: SocketAddr) -> Result<Option<SocketAddr>, ConfigError> {
    match given.map(str::trim) {
        None => Ok(Some(default)),
        Some("off" | "none" | "") => Ok(None),
        Some(text) => text.parse().map(Some).map_err(|_| {
            invalid(
                flag,
                Problem::Detail(format!("{text:?} is not an address such as 0.0.0.0:1883, or `off`")),
            )
        }),
    }
}
