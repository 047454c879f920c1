//! The MQTT credentials from the raw settings: the password (given, or read from `--mqtt-password-file`) and
//! the client certificate of mutual TLS, each read and checked here so that a wrong file stops `up` at once,
//! naming its flag.

use mqtt_llm_client::tls::{ClientCertFiles, ClientIdentity, TlsError};

use super::error::{ConfigError, Problem, invalid};
use super::raw::RawMqtt;
use crate::secret::Secret;

/// The password of `--mqtt-password` or `--mqtt-password-file` (at most one of them), if any.
pub(super) fn mqtt_password(raw: &RawMqtt) -> Result<Option<Secret>, ConfigError> {
    let (password, flag) = match (&raw.mqtt_password, &raw.mqtt_password_file) {
        (Some(_), Some(_)) => {
            return Err(invalid(
                "--mqtt-password-file",
                "conflicts with --mqtt-password (MQTT_LLM_MQTT_PASSWORD): give one",
            ));
        }
        (Some(password), None) => (password.clone(), "--mqtt-password"),
        (None, Some(path)) => (
            Secret::from_file(path).map_err(|e| invalid("--mqtt-password-file", Problem::SecretFile(e)))?,
            "--mqtt-password-file",
        ),
        (None, None) => return Ok(None),
    };
    // MQTT 3.1.1 has no password without a user name, and rumqttc sends none: refuse rather than connect
    // anonymously while the operator believes otherwise.
    if raw.mqtt_username.is_none() {
        return Err(invalid(flag, "needs --mqtt-username"));
    }
    Ok(Some(password))
}

/// The client certificate and key of mutual TLS (both or neither; `mqtts://` only), loaded and checked.
pub(super) fn client_identity(raw: &RawMqtt, tls: bool) -> Result<Option<ClientIdentity>, ConfigError> {
    let files = match (&raw.mqtt_client_cert, &raw.mqtt_client_key) {
        (None, None) => return Ok(None),
        (Some(_), None) => return Err(invalid("--mqtt-client-cert", "needs --mqtt-client-key too")),
        (None, Some(_)) => return Err(invalid("--mqtt-client-key", "needs --mqtt-client-cert too")),
        (Some(cert), Some(key)) => ClientCertFiles {
            cert: cert.clone(),
            key: key.clone(),
        },
    };
    if !tls {
        return Err(invalid("--mqtt-client-cert", "only applies to an mqtts:// broker"));
    }
    ClientIdentity::from_pem_files(&files).map(Some).map_err(|e| {
        let flag = match e {
            TlsError::ClientKey { .. } => "--mqtt-client-key",
            _ => "--mqtt-client-cert",
        };
        invalid(flag, Problem::Tls(e))
    })
}
