//! Connection settings shared by every MQTT client we build, the bridge (`up`) and the protocol client (`chat`,
//! `bench`): the process-wide rustls crypto provider (ring, the only C dependency we allow, installed once so that
//! `rustls` never has to guess), the client settings of `mqtts://` connections (the CAs trusted and, for mutual
//! TLS, the [`ClientIdentity`] presented), and the socket options.

use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Why TLS client settings could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {reason}")]
    CaFile { path: PathBuf, reason: String },
    #[error("no CA certificates to trust (see --mqtt-ca)")]
    NoTrustedCa,
    /// The client certificate file (`--mqtt-client-cert`) holds no usable certificate.
    #[error("{path}: {reason}")]
    ClientCert { path: PathBuf, reason: String },
    /// The client key file (`--mqtt-client-key`) holds no usable key, or not the certificate's.
    #[error("{path}: {reason}")]
    ClientKey { path: PathBuf, reason: String },
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

/// The PEM files of a client certificate and its key, for mutual TLS (`--mqtt-client-cert`, `--mqtt-client-key`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The certificate chain and private key this client proves itself with (mutual TLS): read, parsed and checked
/// to belong together, so that a wrong file is reported at start-up rather than as a failed handshake.
#[derive(Clone)]
pub struct ClientIdentity(Arc<rustls::sign::CertifiedKey>);

impl std::fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientIdentity")
            .field("certificates", &self.0.cert.len())
            .field("key", &"***")
            .finish()
    }
}

impl ClientIdentity {
    /// Read the certificate chain (PEM `CERTIFICATE` blocks, the client's own first) and its private key (PEM
    /// PKCS#8, PKCS#1 or SEC1).
    pub fn from_pem_files(files: &ClientCertFiles) -> Result<Self, TlsError> {
        use rustls::pki_types::pem::{self, PemObject};
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let cert_error = |reason: String| TlsError::ClientCert {
            path: files.cert.clone(),
            reason,
        };
        let key_error = |reason: String| TlsError::ClientKey {
            path: files.key.clone(),
            reason,
        };
        let certs = CertificateDer::pem_file_iter(&files.cert)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|e| cert_error(pem_reason(e)))?;
        if certs.is_empty() {
            return Err(cert_error("no certificate (PEM CERTIFICATE block) in it".to_owned()));
        }
        let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| match e {
            pem::Error::NoItemsFound => key_error("no private key (PEM PRIVATE KEY block) in it".to_owned()),
            e => key_error(pem_reason(e)),
        })?;
        let provider = rustls::crypto::ring::default_provider();
        let certified = rustls::sign::CertifiedKey::from_der(certs, key, &provider).map_err(|e| match e {
            rustls::Error::InconsistentKeys(_) => {
                key_error(format!("is not the key of the certificate in {}", files.cert.display()))
            }
            e => key_error(e.to_string()),
        })?;
        Ok(Self(Arc::new(certified)))
    }
}

/// A PEM reading error in words (an I/O error as the OS says it).
fn pem_reason(e: rustls::pki_types::pem::Error) -> String {
    match e {
        rustls::pki_types::pem::Error::Io(io) => format!("cannot read: {io}"),
        e => format!("not PEM: {e}"),
    }
}

/// Client settings trusting the CA certificates of `ca_file` (PEM), or the system's when `None`, and presenting
/// `identity` when the broker asks for a client certificate (mutual TLS).
pub fn client_config(
    ca_file: Option<&Path>,
    identity: Option<&ClientIdentity>,
) -> Result<Arc<rustls::ClientConfig>, TlsError> {
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
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let config = match identity {
        Some(identity) => {
            builder.with_client_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(identity.0.clone())))
        }
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// TCP_NODELAY on every MQTT socket: a streamed token is a small publish that must not wait for Nagle's algorithm
/// (85 ms less time to first token at one stream, BENCHMARKS.md).
pub fn network_options() -> rumqttc::NetworkOptions {
    let mut options = rumqttc::NetworkOptions::new();
    options.set_tcp_nodelay(true);
    options
}
