//! llama.cpp as the launched engine (`up --engine llamacpp`): the launcher mqtt-llm embeds, where it is written,
//! and the pure command builder.
//!
//! The server is llama.cpp's own OpenAI-compatible HTTP server, embedded in the `xllamacpp` Python wheel (no
//! compiler, no system packages). `launcher/serve_llamacpp.py` starts it in the foreground until SIGTERM; it is
//! compiled into the binary and written to `$XDG_DATA_HOME/mqtt-llm/serve_llamacpp.py` (else
//! `~/.local/share/mqtt-llm/serve_llamacpp.py`, beside the default vLLM virtualenv) before each launch, so that
//! the command an operator sees (`--dry-run`, the logs) is one they can run:
//! `PYTHON LAUNCHER MODEL.gguf --host 127.0.0.1 --port P --threads N --ctx N --parallel N --alias NAME`.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};

use super::command::EngineCommand;
use super::settings::{LaunchSettings, LlamaCppSettings};

/// The launcher's source, as shipped in `launcher/serve_llamacpp.py`.
pub const LAUNCHER_SOURCE: &str = include_str!("../../launcher/serve_llamacpp.py");

/// The launcher's file name.
pub const LAUNCHER_NAME: &str = "serve_llamacpp.py";

/// llama.cpp's CPU threads unless told otherwise: one. On a small machine a second thread makes decoding collapse
/// whenever anything else runs (see `shared/engines/README.md`).
pub const DEFAULT_THREADS: u32 = 1;

/// Concurrent slots unless `--max-num-seqs` says otherwise.
pub const DEFAULT_PARALLEL: u32 = 2;

/// Context of one slot unless `--max-model-len` says otherwise (tokens).
pub const DEFAULT_SLOT_CONTEXT: u32 = 2048;

/// `$XDG_DATA_HOME/mqtt-llm/serve_llamacpp.py`, else `~/.local/share/mqtt-llm/serve_llamacpp.py`; `None` without
/// a usable `HOME`.
pub fn default_launcher(xdg_data_home: Option<&OsStr>, home: Option<&OsStr>) -> Option<PathBuf> {
    Some(
        super::locate::xdg_dir(xdg_data_home, home, ".local/share")?
            .join("mqtt-llm")
            .join(LAUNCHER_NAME),
    )
}

/// Write the embedded launcher to `path` unless it already holds exactly that (through a temporary file and a
/// rename, so a concurrent launch never runs half a file).
pub fn install_launcher(path: &Path) -> std::io::Result<()> {
    if std::fs::read(path).is_ok_and(|have| have == LAUNCHER_SOURCE.as_bytes()) {
        return Ok(());
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".{LAUNCHER_NAME}.{}.tmp", std::process::id()));
    std::fs::write(&tmp, LAUNCHER_SOURCE)?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// `PYTHON LAUNCHER MODEL.gguf --host 127.0.0.1 --port PORT --threads N --ctx N --parallel N --alias NAME
/// [pass-through args]`, with `PYTHONUNBUFFERED=1` (its lines reach the log as they are printed).
///
/// `--ctx` is llama.cpp's total context: `--max-model-len` (one slot's) × `--max-num-seqs` (the slots). The
/// pass-through arguments come last: the launcher's argparse lets a later flag win.
pub fn build_command(
    cfg: &LaunchSettings,
    llama: &LlamaCppSettings,
    port: u16,
    served_model_name: &str,
) -> EngineCommand {
    let mut args: Vec<String> = vec![
        llama.launcher.display().to_string(),
        cfg.model.clone(),
        "--host".into(),
        "127.0.0.1".into(),
        "--port".into(),
        port.to_string(),
        "--threads".into(),
        llama.threads.to_string(),
        "--ctx".into(),
        llama.total_context().to_string(),
        "--parallel".into(),
        llama.parallel.to_string(),
        "--alias".into(),
        served_model_name.to_owned(),
    ];
    args.extend(cfg.extra_args.iter().cloned());
    let env: Vec<(OsString, OsString)> = vec![("PYTHONUNBUFFERED".into(), "1".into())];
    EngineCommand {
        program: llama.python.clone(),
        args,
        env,
        log_file: cfg.engine_log.clone(),
    }
}

#[cfg(test)]
mod tests {

    use super::*;
    use crate::engine::LaunchedServer;

    fn llama() -> LlamaCppSettings {
        LlamaCppSettings {
            python: "/venv/bin/python".into(),
            launcher: "/data/mqtt-llm/serve_llamacpp.py".into(),
            threads: DEFAULT_THREADS,
            parallel: DEFAULT_PARALLEL,
            slot_context: DEFAULT_SLOT_CONTEXT,
            venv: None,
            model_sha256: None,
        }
    }

    fn cfg(llama: LlamaCppSettings) -> LaunchSettings {
        LaunchSettings::for_tests(
            LaunchedServer::LlamaCpp(Box::new(llama)),
            "vllm",
            "/models/SmolLM2-135M-Instruct.Q4_1.gguf",
        )
    }

    const BASE: &str = "/venv/bin/python /data/mqtt-llm/serve_llamacpp.py /models/SmolLM2-135M-Instruct.Q4_1.gguf \
                        --host 127.0.0.1 --port 8000";

    /// Each case: what changes in llama.cpp's settings → the flags after the base.
    #[test]
    fn golden_argv() {
        type Edit = fn(&mut LaunchSettings, &mut LlamaCppSettings);
        let cases: &[(&str, Edit, &str)] = &[
            (
                "defaults: one thread, two slots of 2048",
                |_, _| {},
                " --threads 1 --ctx 4096 --parallel 2 --alias m",
            ),
            (
                "--threads 4 --max-model-len 1000 --max-num-seqs 3: ctx is per slot × slots",
                |_, l| {
                    l.threads = 4;
                    l.slot_context = 1000;
                    l.parallel = 3;
                },
                " --threads 4 --ctx 3000 --parallel 3 --alias m",
            ),
            (
                "pass-through last",
                |c, _| c.extra_args = vec!["--ctx".into(), "512".into()],
                " --threads 1 --ctx 4096 --parallel 2 --alias m --ctx 512",
            ),
        ];
        for (name, edit, flags) in cases {
            let mut l = llama();
            let mut c = cfg(llama());
            edit(&mut c, &mut l);
            c.server = LaunchedServer::LlamaCpp(Box::new(l));
            let got = crate::engine::command::build_command(&c, 8000, "m").display();
            assert_eq!(got, format!("{BASE}{flags}"), "{name}");
        }
    }

    #[test]
    fn golden_env_and_log() {
        let mut c = cfg(llama());
        c.engine_log = Some("/var/log/engine.log".into());
        let cmd = crate::engine::command::build_command(&c, 1, "m");
        assert_eq!(cmd.display_with_env().split(' ').next(), Some("PYTHONUNBUFFERED=1"));
        assert_eq!(cmd.env.len(), 1);
        assert_eq!(cmd.log_file.as_deref(), Some(Path::new("/var/log/engine.log")));
        assert_eq!(cmd.program, Path::new("/venv/bin/python"));
    }

    #[test]
    fn launcher_goes_under_xdg_data_home() {
        let l = |x: Option<&str>, h: Option<&str>| default_launcher(x.map(OsStr::new), h.map(OsStr::new));
        assert_eq!(
            l(Some("/data"), Some("/home/u")),
            Some("/data/mqtt-llm/serve_llamacpp.py".into())
        );
        assert_eq!(
            l(None, Some("/home/u")),
            Some("/home/u/.local/share/mqtt-llm/serve_llamacpp.py".into())
        );
        assert_eq!(l(Some("relative"), None), None);
    }

    #[test]
    fn the_launcher_is_written_once_and_rewritten_when_it_differs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a/b").join(LAUNCHER_NAME);
        install_launcher(&path).expect("written");
        assert_eq!(std::fs::read_to_string(&path).expect("read"), LAUNCHER_SOURCE);
        std::fs::write(&path, "stale").expect("overwrite");
        install_launcher(&path).expect("rewritten");
        assert_eq!(std::fs::read_to_string(&path).expect("read"), LAUNCHER_SOURCE);
        let names: Vec<_> = std::fs::read_dir(path.parent().expect("parent"))
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, [LAUNCHER_NAME], "no temporary file left");
        assert!(LAUNCHER_SOURCE.contains("import xllamacpp"));
    }
}
