//! Username/password authentication for the embedded broker.
//!
//! The password file is mosquitto's: one `user:hash` per line, `#` comments and blank lines ignored, so a site can
//! reuse the file `mosquitto_passwd` writes. Two hash formats are verified:
//! - `$7$<iterations>$<salt, base64>$<hash, base64>`: PBKDF2-HMAC-SHA512, `mosquitto_passwd`'s default;
//! - `$6$<salt, base64>$<hash, base64>`: SHA-512 over `password ‖ salt`, `mosquitto_passwd -H sha512`.
//!
//! Passwords and hashes never reach a log or an error message; errors name the line number only.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use sha2::{Digest, Sha512};

/// Why a password file (or its env form) was refused.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("cannot read the broker password file {}: {source}", .path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("broker password file{origin}, line {line}: {reason}")]
    Line {
        origin: Origin,
        line: usize,
        reason: &'static str,
    },
    #[error("broker password file{origin} holds no user")]
    Empty { origin: Origin },
}

/// Where credentials came from, for error messages: a file (named) or a string (the env variable).
#[derive(Debug, Clone, Default)]
pub struct Origin(Option<PathBuf>);

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Some(path) => write!(f, " {}", path.display()),
            None => Ok(()),
        }
    }
}

/// A verified-on-connect password hash.
#[derive(Clone, PartialEq, Eq)]
enum PasswordHash {
    /// `$7$`: PBKDF2-HMAC-SHA512.
    Pbkdf2Sha512 {
        iterations: u32,
        salt: Vec<u8>,
        hash: Vec<u8>,
    },
    /// `$6$`: SHA-512(password ‖ salt).
    Sha512 { salt: Vec<u8>, hash: Vec<u8> },
}

/// Kept out of logs: a hash is an offline-guessing target.
impl fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PasswordHash::Pbkdf2Sha512 { iterations, .. } => write!(f, "$7$ (PBKDF2-SHA512, {iterations} iterations)"),
            PasswordHash::Sha512 { .. } => f.write_str("$6$ (SHA-512)"),
        }
    }
}

/// The most PBKDF2 iterations accepted: verification runs on the broker's worker threads at every CONNECT.
const MAX_ITERATIONS: u32 = 1_000_000;

impl PasswordHash {
    fn parse(text: &str) -> Result<Self, &'static str> {
        let mut parts = text.split('$');
        if parts.next() != Some("") {
            return Err("the hash must start with $7$ or $6$ (write it with mosquitto_passwd)");
        }
        let decode = |part: Option<&str>, what: &'static str| -> Result<Vec<u8>, &'static str> {
            let part = part.ok_or(what)?;
            STANDARD.decode(part).map_err(|_| what)
        };
        let parsed = match parts.next() {
            Some("7") => {
                let iterations = parts
                    .next()
                    .and_then(|n| n.parse::<u32>().ok())
                    .filter(|n| (1..=MAX_ITERATIONS).contains(n))
                    .ok_or("the $7$ iteration count must be a number from 1 to 1000000")?;
                let salt = decode(parts.next(), "the $7$ salt is not base64")?;
                let hash = decode(parts.next(), "the $7$ hash is not base64")?;
                PasswordHash::Pbkdf2Sha512 { iterations, salt, hash }
            }
            Some("6") => {
                let salt = decode(parts.next(), "the $6$ salt is not base64")?;
                let hash = decode(parts.next(), "the $6$ hash is not base64")?;
                PasswordHash::Sha512 { salt, hash }
            }
            _ => {
                return Err(
                    "unknown hash format: expected $7$ (PBKDF2-SHA512) or $6$ (SHA-512), as mosquitto_passwd writes",
                );
            }
        };
        if parts.next().is_some() {
            return Err("the hash has too many $-separated fields");
        }
        let hash_len = match &parsed {
            PasswordHash::Pbkdf2Sha512 { hash, .. } | PasswordHash::Sha512 { hash, .. } => hash.len(),
        };
        if hash_len != 64 {
            return Err("the hash must decode to 64 bytes (SHA-512)");
        }
        Ok(parsed)
    }

    fn verify(&self, password: &[u8]) -> bool {
        match self {
            PasswordHash::Pbkdf2Sha512 { iterations, salt, hash } => {
                let mut out = [0u8; 64];
                pbkdf2::pbkdf2_hmac::<Sha512>(password, salt, *iterations, &mut out);
                constant_time_eq(&out, hash)
            }
            PasswordHash::Sha512 { salt, hash } => {
                let mut digest = Sha512::new();
                digest.update(password);
                digest.update(salt);
                constant_time_eq(&digest.finalize(), hash)
            }
        }
    }
}

/// Compares without an early exit, so the time taken does not tell how many leading bytes matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The users allowed to connect to the embedded broker, with their password hashes.
#[derive(Debug, Clone)]
pub struct Credentials {
    users: HashMap<String, PasswordHash>,
}

impl Credentials {
    /// Parses password-file lines (`user:hash`, `#` comments, blank lines); the env form holds the same lines.
    pub fn parse(text: &str) -> Result<Self, CredentialsError> {
        Self::parse_from(text, Origin::default())
    }

    /// Reads and parses a password file, as `mosquitto_passwd` writes it.
    pub fn from_file(path: &Path) -> Result<Self, CredentialsError> {
        let text = std::fs::read_to_string(path).map_err(|source| CredentialsError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse_from(&text, Origin(Some(path.to_path_buf())))
    }

    fn parse_from(text: &str, origin: Origin) -> Result<Self, CredentialsError> {
        let mut users = HashMap::new();
        for (index, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let fail = |reason| CredentialsError::Line {
                origin: origin.clone(),
                line: index + 1,
                reason,
            };
            let (user, hash) = line.split_once(':').ok_or_else(|| fail("expected user:hash"))?;
            if user.is_empty() {
                return Err(fail("the user name is empty"));
            }
            let hash = PasswordHash::parse(hash).map_err(fail)?;
            if users.insert(user.to_string(), hash).is_some() {
                return Err(fail("this user is listed twice"));
            }
        }
        if users.is_empty() {
            return Err(CredentialsError::Empty { origin });
        }
        Ok(Self { users })
    }

    /// How many users may connect.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// Never true for parsed credentials (an empty file is refused); here for clippy's `len_without_is_empty`.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// Whether `user` may connect with `password`. An unknown user costs a verification too, so the answer's timing
    /// does not tell which users exist.
    pub fn verify(&self, user: &str, password: &[u8]) -> bool {
        match self.users.get(user) {
            Some(hash) => hash.verify(password),
            None => {
                if let Some(any) = self.users.values().next() {
                    let _ = any.verify(password);
                }
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Written by `mosquitto_passwd -b -c FILE alice secret` (mosquitto 2.x, default $7$ with 101 iterations) and
    // `mosquitto_passwd -H sha512 -b FILE bob hunter2`.
    const ALICE: &str = "alice:$7$101$c2MgsWmgQpXuRaAW$811deHVaX5p599EQnR7i6WgarbSvgYt6BhJBQlcIo2j3RUMFbTXroVNiumM6qdGdHJLRueKPrw0uQIUQZVlmuw==";

    #[test]
    fn verifies_a_mosquitto_passwd_pbkdf2_line() {
        let creds = Credentials::parse(&format!("# site users\n\n{ALICE}\n")).unwrap();
        assert_eq!(creds.len(), 1);
        assert!(creds.verify("alice", b"secret"));
        assert!(!creds.verify("alice", b"Secret"));
        assert!(!creds.verify("alice", b""));
        assert!(!creds.verify("mallory", b"secret"));
    }

    #[test]
    fn verifies_a_sha512_line() {
        let salt = b"0123456789ab";
        let mut digest = Sha512::new();
        digest.update(b"hunter2");
        digest.update(salt);
        let line = format!(
            "bob:$6${}${}",
            STANDARD.encode(salt),
            STANDARD.encode(digest.finalize())
        );
        let creds = Credentials::parse(&line).unwrap();
        assert!(creds.verify("bob", b"hunter2"));
        assert!(!creds.verify("bob", b"hunter3"));
    }

    #[test]
    fn refuses_malformed_lines_by_line_number_without_echoing_them() {
        for (text, reason) in [
            ("alice", "expected user:hash"),
            (":$7$101$AAAA$AAAA", "the user name is empty"),
            ("alice:secret", "must start with $7$ or $6$"),
            ("alice:$1$abc$def", "unknown hash format"),
            ("alice:$7$0$AAAA$AAAA", "iteration count"),
            ("alice:$7$101$!!$AAAA", "salt is not base64"),
            ("alice:$7$101$AAAA$AAAA", "64 bytes"),
        ] {
            let err = Credentials::parse(&format!("# header\n{text}"))
                .unwrap_err()
                .to_string();
            assert!(err.contains("line 2") && err.contains(reason), "{text}: {err}");
            assert!(!err.contains("secret") && !err.contains("AAAA"), "{err}");
        }
        let twice = format!("{ALICE}\n{ALICE}");
        assert!(
            Credentials::parse(&twice)
                .unwrap_err()
                .to_string()
                .contains("listed twice")
        );
        assert!(
            Credentials::parse("# nobody\n")
                .unwrap_err()
                .to_string()
                .contains("holds no user")
        );
    }

    #[test]
    fn from_file_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("passwd");
        std::fs::write(&path, "alice:nope\n").unwrap();
        let err = Credentials::from_file(&path).unwrap_err().to_string();
        assert!(err.contains("passwd, line 1"), "{err}");
        let err = Credentials::from_file(&dir.path().join("missing"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("cannot read the broker password file"), "{err}");
    }

    #[test]
    fn debug_never_shows_a_hash() {
        let creds = Credentials::parse(ALICE).unwrap();
        let shown = format!("{creds:?}");
        assert!(!shown.contains("c2MgsWmg") && shown.contains("PBKDF2"), "{shown}");
    }
}
