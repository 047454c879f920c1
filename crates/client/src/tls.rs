//! Connection settings shared by every MQTT client we build, the bridge (`up`) and the protocol client (`chat`,
//! `bench`): the process-wide rustls crypto provider (ring, the only C dependency we allow, installed once so that
//! `rustls` never has to guess), the client settings of `mqtts://` connections, and the socket options.

use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Why TLS client settings could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {reason}")]
    CaFile { path: PathBuf, reason: String },
    #[error("no CA certificates to trust (see --mqtt-ca)")]
    NoTrustedCa,
    #[error("{0}")]
    Rustls(#[from] rustls::Error),
}

/// Install ring as the default rustls crypto provider. Idempotent and cheap; call it before building
/// any TLS-capable client.
pub fn ensure_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // An error means another provider was installed first, which is fine for us.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// Client settings trusting the CA certificates of `ca_file` (PEM), or the system's when `None`.
pub fn client_config(ca_file: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    ensure_crypto_provider();
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let ca_error = |reason: String| TlsError::CaFile {
                path: path.to_owned(),
                reason,
            };
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|e| ca_error(e.to_string()))?;
            for cert in certs {
                roots.add(cert).map_err(|e| ca_error(e.to_string()))?;
            }
        }
        None => {
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
        }
    }
    if roots.is_empty() {
        return Err(TlsError::NoTrustedCa);
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// TCP_NODELAY on every MQTT socket: a streamed token is a small publish that must not wait for Nagle's algorithm
/// (85 ms less time to first token at one stream, BENCHMARKS.md).
pub fn network_options() -> rumqttc::NetworkOptions {
    let mut options = rumqttc::NetworkOptions::new();
    options.set_tcp_nodelay(true);
    options
}
