//! Which `vllm` to launch: `--vllm-bin` (or `MQTT_LLM_VLLM_BIN`) as given, else the virtualenv `mqtt-llm setup`
//! installs into, else `vllm` on `PATH`. The filesystem is only read; the environment comes in as arguments, so
//! tests point it at temporary directories.

use std::ffi::OsStr;
use std::fmt;
use std::path::{Path, PathBuf};

/// Where the engine executable was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineSource {
    /// `--vllm-bin` / `MQTT_LLM_VLLM_BIN`.
    Flag,
    /// `VENV/bin/vllm`.
    Venv,
    /// `vllm` on `PATH`.
    Path,
}

impl fmt::Display for EngineSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Flag => "--vllm-bin",
            Self::Venv => "the virtualenv",
            Self::Path => "PATH",
        })
    }
}

/// The engine executable to launch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    pub program: PathBuf,
    pub source: EngineSource,
}

/// `$XDG_DATA_HOME/mqtt-llm/venv`, else `~/.local/share/mqtt-llm/venv` (a relative `XDG_DATA_HOME` is ignored,
/// as the XDG spec says); `None` without a usable `HOME`.
pub fn default_venv(xdg_data_home: Option<&OsStr>, home: Option<&OsStr>) -> Option<PathBuf> {
    Some(
        xdg_dir(xdg_data_home, home, ".local/share")?
            .join("mqtt-llm")
            .join("venv"),
    )
}

/// An XDG base directory: the variable's value when it is an absolute path (a relative one is ignored, as the
/// XDG spec says), else `$HOME/{fallback}`; `None` without a usable `HOME`.
pub(super) fn xdg_dir(xdg_var: Option<&OsStr>, home: Option<&OsStr>, fallback: &str) -> Option<PathBuf> {
    match xdg_var.map(Path::new) {
        Some(dir) if dir.is_absolute() => Some(dir.to_owned()),
        _ => Some(Path::new(home.filter(|h| !h.is_empty())?).join(fallback)),
    }
}

/// The `vllm` a virtualenv provides.
pub fn venv_vllm(venv: &Path) -> PathBuf {
    venv.join("bin").join("vllm")
}

/// A regular file someone may execute.
pub fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The first executable `name` in the directories of `path_var` (a `PATH` value).
pub fn find_in_path(name: &str, path_var: Option<&OsStr>) -> Option<PathBuf> {
    std::env::split_paths(path_var?)
        .filter(|dir| !dir.as_os_str().is_empty())
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

/// Find the engine: `explicit` (always taken, as given: a missing one is reported when it fails to start; a bare
/// name is looked up on `PATH` first), else `VENV/bin/vllm`, else `vllm` on `PATH`. `None`: not installed.
pub fn locate(explicit: Option<&Path>, venv: Option<&Path>, path_var: Option<&OsStr>) -> Option<Located> {
    if let Some(program) = explicit {
        let bare_name = program.components().count() == 1 && !program.has_root();
        let program = bare_name
            .then(|| program.to_str().and_then(|name| find_in_path(name, path_var)))
            .flatten()
            .unwrap_or_else(|| program.to_owned());
        return Some(Located {
            program,
            source: EngineSource::Flag,
        });
    }
    if let Some(venv) = venv {
        let program = venv_vllm(venv);
        if is_executable(&program) {
            return Some(Located {
                program,
                source: EngineSource::Venv,
            });
        }
    }
    find_in_path("vllm", path_var).map(|program| Located {
        program,
        source: EngineSource::Path,
    })
}

#[cfg(test)]
mod tests {
    use std::ffi::OsString;

    use super::*;

    fn script(path: &Path, mode: u32) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, "#!/bin/sh\necho 0.26.0\n").unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    struct World {
        _dir: tempfile::TempDir,
        venv: PathBuf,
        path_dir: PathBuf,
        path_var: OsString,
    }

    fn world() -> World {
        let dir = tempfile::tempdir().unwrap();
        let venv = dir.path().join("venv");
        let path_dir = dir.path().join("bin");
        std::fs::create_dir_all(&path_dir).unwrap();
        let path_var = std::env::join_paths([dir.path().join("empty"), path_dir.clone()]).unwrap();
        World {
            _dir: dir,
            venv,
            path_dir,
            path_var,
        }
    }

    #[test]
    fn precedence_flag_then_venv_then_path() {
        let w = world();
        let find = |explicit: Option<&Path>| locate(explicit, Some(&w.venv), Some(&w.path_var));
        assert_eq!(find(None), None, "nothing installed");

        script(&w.path_dir.join("vllm"), 0o755);
        assert_eq!(
            find(None),
            Some(Located {
                program: w.path_dir.join("vllm"),
                source: EngineSource::Path
            })
        );

        script(&venv_vllm(&w.venv), 0o755);
        assert_eq!(
            find(None),
            Some(Located {
                program: venv_vllm(&w.venv),
                source: EngineSource::Venv
            })
        );

        let flag = Path::new("/opt/other/vllm");
        assert_eq!(
            find(Some(flag)),
            Some(Located {
                program: flag.to_owned(),
                source: EngineSource::Flag
            }),
            "--vllm-bin wins even when it does not exist (its start then fails with a diagnosis)"
        );
    }

    #[test]
    fn non_executable_files_do_not_count() {
        let w = world();
        script(&venv_vllm(&w.venv), 0o644);
        script(&w.path_dir.join("vllm"), 0o644);
        assert_eq!(locate(None, Some(&w.venv), Some(&w.path_var)), None);
        assert_eq!(locate(None, None, None), None);
    }

    #[test]
    fn bare_flag_names_are_looked_up_on_path() {
        let w = world();
        script(&w.path_dir.join("vllm-0.26"), 0o755);
        let found = locate(Some(Path::new("vllm-0.26")), None, Some(&w.path_var)).unwrap();
        assert_eq!(found.program, w.path_dir.join("vllm-0.26"));
        let missing = locate(Some(Path::new("no-such-vllm")), None, Some(&w.path_var)).unwrap();
        assert_eq!(missing.program, Path::new("no-such-vllm"));
        assert_eq!(missing.source.to_string(), "--vllm-bin");
    }

    #[test]
    fn xdg_dirs_take_an_absolute_variable_else_home() {
        let d = |x: Option<&str>, h: Option<&str>| xdg_dir(x.map(OsStr::new), h.map(OsStr::new), ".local/x");
        assert_eq!(d(Some("/xdg"), Some("/home/u")), Some("/xdg".into()));
        assert_eq!(d(Some("rel"), Some("/home/u")), Some("/home/u/.local/x".into()));
        assert_eq!(d(None, Some("/home/u")), Some("/home/u/.local/x".into()));
        assert_eq!(d(None, None), None);
        assert_eq!(d(Some(""), Some("")), None);
    }

    #[test]
    fn default_venv_follows_xdg_data_home() {
        let v = |x: Option<&str>, h: Option<&str>| default_venv(x.map(OsStr::new), h.map(OsStr::new));
        assert_eq!(v(Some("/data"), Some("/home/u")), Some("/data/mqtt-llm/venv".into()));
        assert_eq!(
            v(None, Some("/home/u")),
            Some("/home/u/.local/share/mqtt-llm/venv".into())
        );
        assert_eq!(v(None, None), None);
    }
}
