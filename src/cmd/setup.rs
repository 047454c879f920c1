//! `mqtt-llm setup`: install the pinned vLLM into a virtualenv, and the same step `up` runs on first start.
//!
//! Steps: `PYTHON -m venv VENV`, `VENV/bin/python -m pip install -r REQUIREMENTS` (pip's own output streams
//! through, to stderr), `VENV/bin/vllm --version` (must print the pinned version). The requirements are the
//! repository's `python-req.txt`, built into the binary so that setup works from any directory; `--requirements`
//! installs another file. An installation that already reports the pinned version is left alone.

use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};

use tokio::process::Command;

use super::output;
use crate::cli::SetupArgs;
use mqtt_llm::engine::InstallSettings;
use mqtt_llm::engine::locate::venv_vllm;

/// `python-req.txt` of this release.
pub const PINNED_REQUIREMENTS: &str = include_str!("../../python-req.txt");

/// Where the installed requirements are written inside the virtualenv (a record of what it holds).
const REQUIREMENTS_COPY: &str = "mqtt-llm-requirements.txt";

/// Why setup failed; [`SetupError::hint`] says what to do.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("no directory for the virtualenv (HOME is not set)")]
    NoVenv,
    #[error("cannot read {}: {source}", path.display())]
    Requirements {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot run {program}: {source}")]
    Run {
        step: Step,
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{step} failed ({status})")]
    Failed { step: Step, status: String },
    #[error("the installed vllm reports version {found:?}, but {expected} is pinned")]
    Version { found: String, expected: String },
}

/// One step of the installation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    CreateVenv,
    PipInstall,
    Verify,
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::CreateVenv => "creating the virtualenv",
            Self::PipInstall => "pip install",
            Self::Verify => "`vllm --version`",
        })
    }
}

impl SetupError {
    /// One line: what to do about it.
    pub fn hint(&self) -> &'static str {
        match self {
            Self::NoVenv => "pass --venv DIR (or set MQTT_LLM_VENV)",
            Self::Requirements { .. } => "check the --requirements path",
            Self::Write { .. } => "check that the --venv directory is writable",
            Self::Run {
                step: Step::CreateVenv, ..
            } => "install Python 3 (3.11 to 3.14) with its venv module, or point --python at one",
            Self::Run { .. } => "the virtualenv is incomplete: run `mqtt-llm setup --force` to rebuild it",
            Self::Failed {
                step: Step::CreateVenv, ..
            } => "on Debian and Ubuntu install the python3-venv package; see the message above",
            Self::Failed {
                step: Step::PipInstall, ..
            } => {
                "pip's output above says why: usually no network (set HTTPS_PROXY), no disk space, or a Python \
                  that vLLM does not support"
            }
            Self::Failed { .. } => "the virtualenv is broken: run `mqtt-llm setup --force` to rebuild it",
            Self::Version { .. } => "run `mqtt-llm setup --force` to reinstall the pinned version",
        }
    }
}

/// The version `vllm==X` pins, if the requirements pin one.
pub fn pinned_vllm_version(requirements: &str) -> Option<&str> {
    requirements
        .lines()
        .map(|line| line.split('#').next().unwrap_or_default().trim())
        .find_map(|line| line.strip_prefix("vllm==").map(str::trim))
}

/// The last non-empty line a `vllm --version` printed.
fn version_line(stdout: &[u8]) -> String {
    String::from_utf8_lossy(stdout)
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or_default()
        .to_owned()
}

/// What `VENV/bin/vllm --version` prints, or `None` when it does not run.
async fn installed_version(vllm: &Path) -> Option<String> {
    let out = Command::new(vllm)
        .arg("--version")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .ok()?;
    out.status.success().then(|| version_line(&out.stdout))
}

/// Our stderr for a child's stdout, so that pip's chatter never mixes with the lines `up` prints on stdout.
pub(super) fn stderr_for_child() -> Stdio {
    use std::os::fd::AsFd;
    match std::io::stderr().as_fd().try_clone_to_owned() {
        Ok(fd) => Stdio::from(fd),
        Err(_) => Stdio::inherit(),
    }
}

/// Run one installation command with pip's chatter on our stderr; its exit status.
pub(super) async fn run_child(program: &Path, args: &[&std::ffi::OsStr]) -> std::io::Result<std::process::ExitStatus> {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(stderr_for_child())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .status()
        .await
}

async fn run_step(step: Step, program: &Path, args: &[&std::ffi::OsStr]) -> Result<(), SetupError> {
    let status = run_child(program, args).await.map_err(|source| SetupError::Run {
        step,
        program: program.display().to_string(),
        source,
    })?;
    if status.success() {
        Ok(())
    } else {
        Err(SetupError::Failed {
            step,
            status: status.to_string(),
        })
    }
}

/// Install (or confirm) vLLM in the virtualenv; returns its `vllm`. `force` rebuilds the virtualenv.
pub async fn install(cfg: &InstallSettings, force: bool) -> Result<PathBuf, SetupError> {
    let venv = cfg.venv.as_deref().ok_or(SetupError::NoVenv)?;
    let requirements = match &cfg.requirements {
        Some(path) => std::fs::read_to_string(path).map_err(|source| SetupError::Requirements {
            path: path.clone(),
            source,
        })?,
        None => PINNED_REQUIREMENTS.to_owned(),
    };
    let pinned = pinned_vllm_version(&requirements);
    let vllm = venv_vllm(venv);
    if !force
        && let Some(found) = installed_version(&vllm).await
        && pinned.is_none_or(|p| p == found)
    {
        output::setup_step(&format!("vLLM {found} is already installed in {}", venv.display()));
        return Ok(vllm);
    }

    output::setup_step(&format!(
        "creating the virtualenv {} with {}",
        venv.display(),
        cfg.python.display()
    ));
    let mut venv_args: Vec<&std::ffi::OsStr> = vec!["-m".as_ref(), "venv".as_ref()];
    if force {
        venv_args.push("--clear".as_ref());
    }
    venv_args.push(venv.as_os_str());
    run_step(Step::CreateVenv, &cfg.python, &venv_args).await?;

    let copy = venv.join(REQUIREMENTS_COPY);
    std::fs::write(&copy, &requirements).map_err(|source| SetupError::Write {
        path: copy.clone(),
        source,
    })?;
    let packages: Vec<&str> = requirements
        .lines()
        .map(|l| l.split('#').next().unwrap_or_default().trim())
        .filter(|l| !l.is_empty())
        .collect();
    output::setup_step(&format!(
        "installing {} (vLLM and its dependencies are several GB; pip's progress follows)",
        packages.join(" ")
    ));
    let python = venv.join("bin").join("python");
    run_step(
        Step::PipInstall,
        &python,
        &[
            "-m".as_ref(),
            "pip".as_ref(),
            "install".as_ref(),
            "-r".as_ref(),
            copy.as_os_str(),
        ],
    )
    .await?;

    output::setup_step(&format!("checking {} --version", vllm.display()));
    let found = installed_version(&vllm).await.ok_or_else(|| SetupError::Failed {
        step: Step::Verify,
        status: "it did not run".to_owned(),
    })?;
    if let Some(expected) = pinned
        && expected != found
    {
        return Err(SetupError::Version {
            found,
            expected: expected.to_owned(),
        });
    }
    output::setup_step(&format!("vLLM {found} installed"));
    Ok(vllm)
}

/// `mqtt-llm setup`.
pub async fn run(args: &SetupArgs) -> ExitCode {
    if args.engine == crate::cli::EngineArg::Llamacpp {
        return super::setup_llamacpp::run(args).await;
    }
    let given = &args.install;
    let cfg = InstallSettings::new(
        given.venv.clone(),
        given.python.clone(),
        given.requirements.clone(),
        None,
    );
    match install(&cfg, args.force).await {
        Ok(vllm) => {
            output::setup_done(&vllm);
            ExitCode::SUCCESS
        }
        Err(e) => {
            output::error_with_hint(&e.to_string(), e.hint());
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_requirements_pin_vllm() {
        assert_eq!(pinned_vllm_version(PINNED_REQUIREMENTS), Some("0.26.0"));
    }

    #[test]
    fn pins_are_read_from_requirement_lines_only() {
        assert_eq!(
            pinned_vllm_version("# vllm==9\nvllm==0.27.1  # newer\n"),
            Some("0.27.1")
        );
        assert_eq!(pinned_vllm_version("vllm>=0.26\n"), None);
        assert_eq!(pinned_vllm_version(""), None);
    }

    #[test]
    fn version_is_the_last_printed_line() {
        assert_eq!(
            version_line(b"INFO 11-22 [__init__.py:1] Automatically detected platform cuda.\n0.26.0\n\n"),
            "0.26.0"
        );
        assert_eq!(version_line(b""), "");
    }
}
