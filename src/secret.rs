//! Secrets (the MQTT password today; keys of other doors later): [`Secret`], a string that never prints its
//! value, and [`Secret::from_file`], the one way a secret is read from a file.
//!
//! A secret given as a flag is visible to every local user in `/proc/PID/cmdline`, and one given in the
//! environment is inherited by every child unless removed (the engine launcher removes it, see
//! `engine::command::passes_to_child`); a file readable only by the service's user is the way to hand one over.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// What [`Secret`]'s `Debug` and `Display` print instead of the value.
pub const REDACTED: &str = "***";

/// A secret string. `Debug` and `Display` print `***`, so a settings struct that holds one can be logged or
/// printed whole; [`Secret::expose`] is the only way to the value, for the code that hands it to its protocol.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value, for the one place that must send it (the MQTT CONNECT, an `Authorization` header).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The content of `path` without its final line ending (`\n` or `\r\n`): a file written by `echo` or an
    /// editor holds the secret alone. Everything else is kept, leading and trailing spaces included.
    pub fn from_file(path: &Path) -> Result<Self, SecretFileError> {
        let bytes = std::fs::read(path).map_err(|source| SecretFileError::Read {
            path: path.to_owned(),
            source,
        })?;
        let text = String::from_utf8(bytes).map_err(|_| SecretFileError::NotText { path: path.to_owned() })?;
        let value = text
            .strip_suffix('\n')
            .map_or(text.as_str(), |t| t.strip_suffix('\r').unwrap_or(t));
        if value.is_empty() {
            return Err(SecretFileError::Empty { path: path.to_owned() });
        }
        Ok(Self(value.to_owned()))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

/// Any string is a secret (clap parses flags through this).
impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_owned()))
    }
}

/// Why a secret file gave no secret. The messages name the file, never its content.
#[derive(Debug, thiserror::Error)]
pub enum SecretFileError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is empty", path.display())]
    Empty { path: PathBuf },
    #[error("{} is not UTF-8 text", path.display())]
    NotText { path: PathBuf },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_never_show_the_value() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "***");
        assert_eq!(format!("{s}"), "***");
        assert_eq!(format!("{:?}", Some(s.clone())), "Some(***)");
        assert_eq!(s.expose(), "hunter2");
        let parsed: Secret = "p w".parse().unwrap();
        assert_eq!(parsed.expose(), "p w");
    }

    #[test]
    fn a_file_gives_its_content_less_one_line_ending() {
        let dir = tempfile::tempdir().unwrap();
        let file = |name: &str, content: &[u8]| {
            let path = dir.path().join(name);
            std::fs::write(&path, content).unwrap();
            path
        };
        let cases: &[(&[u8], &str)] = &[
            (b"s3cret\n", "s3cret"),
            (b"s3cret", "s3cret"),
            (b"s3cret\r\n", "s3cret"),
            (b" s3 cret \n\n", " s3 cret \n"),
        ];
        for (i, (content, want)) in cases.iter().enumerate() {
            let got = Secret::from_file(&file(&format!("ok{i}"), content)).unwrap();
            assert_eq!(got.expose(), *want, "{content:?}");
        }
        for content in [&b""[..], b"\n", b"\r\n"] {
            let err = Secret::from_file(&file("empty", content)).unwrap_err();
            assert!(matches!(err, SecretFileError::Empty { .. }), "{content:?}: {err}");
        }
        let err = Secret::from_file(&file("binary", b"\xff\xfe\n")).unwrap_err();
        assert!(matches!(err, SecretFileError::NotText { .. }), "{err}");
        let missing = dir.path().join("missing");
        let err = Secret::from_file(&missing).unwrap_err();
        assert!(matches!(err, SecretFileError::Read { .. }), "{err}");
        assert!(
            err.to_string()
                .starts_with(&format!("cannot read {}: ", missing.display())),
            "{err}"
        );
    }
}
