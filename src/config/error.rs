//! What can be wrong with the settings: each error names the flag (or the file and key) at fault.

use std::num::NonZeroU32;
use std::path::PathBuf;

use mqtt_llm_client::tls::TlsError;
use mqtt_llm_protocol::broker::BrokerUrlError;
use mqtt_llm_protocol::topics::{ReplyPrefixError, TopicError};

use crate::secret::SecretFileError;

/// A configuration error.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A flag's value is wrong; `flag` is spelled as on the command line.
    #[error("invalid {flag}: {problem}")]
    Invalid { flag: &'static str, problem: Problem },
    /// A per-project setting of the TOML file is wrong.
    #[error("invalid projects.{project}.{key}: {problem}")]
    Project {
        project: String,
        key: &'static str,
        problem: Problem,
    },
    #[error("config file {}: {source}", path.display())]
    FileRead {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {}: {source}", path.display())]
    FileSyntax {
        path: PathBuf,
        #[source]
        source: Box<toml::de::Error>,
    },
}

/// What is wrong with one value.
#[derive(Debug, thiserror::Error)]
pub enum Problem {
    #[error("must not be empty")]
    Empty,
    #[error("must be at least 1")]
    Zero,
    /// A fixed rule the value breaks, e.g. "must be between 0 and 2".
    #[error("{0}")]
    Rule(&'static str),
    #[error("{entry:?} is not a GPU number or GPU-/MIG- UUID (e.g. --gpus 0,1)")]
    NotAGpu { entry: String },
    #[error("GPU {entry} is listed twice")]
    GpuTwice { entry: String },
    #[error("{shards} shards need at least {shards} GPUs, but --gpus lists {gpus}")]
    TooFewGpus { shards: NonZeroU32, gpus: usize },
    #[error("{given:?}: {source}")]
    Url {
        given: String,
        #[source]
        source: url::ParseError,
    },
    #[error(transparent)]
    Broker(#[from] BrokerUrlError),
    #[error(transparent)]
    Topic(#[from] TopicError),
    #[error(transparent)]
    ReplyPrefix(#[from] ReplyPrefixError),
    #[error(transparent)]
    SecretFile(#[from] SecretFileError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// A finding that names the value, e.g. a malformed line of a file.
    #[error("{0}")]
    Detail(String),
}

/// `flag` is wrong: `problem`.
pub(super) fn invalid(flag: &'static str, problem: impl Into<Problem>) -> ConfigError {
    ConfigError::Invalid {
        flag,
        problem: problem.into(),
    }
}

impl From<&'static str> for Problem {
    fn from(rule: &'static str) -> Self {
        Self::Rule(rule)
    }
}
