//! The engine guard: a tiny process between mqtt-llm and `vllm serve` that makes sure the engine dies with us.
//!
//! # Theory of operation
//! vLLM has no parent-death watchdog: if mqtt-llm were SIGKILLed, `vllm serve` and its `EngineCore` child (which
//! holds the GPU memory) would live on. Linux can signal a process when its parent dies (`PR_SET_PDEATHSIG`), but
//! setting it in the child between fork and exec needs `unsafe`. So mqtt-llm launches itself as
//! `mqtt-llm __engine-guard --parent PID --grace MS -- vllm serve ...` in a new process group. The guard asks for
//! SIGTERM on its parent's death (a safe `prctl` on itself), starts the engine as its child in the same group, and
//! then mirrors the engine: it exits with the engine's status, and on SIGTERM (from mqtt-llm's shutdown or from
//! the parent-death signal) it passes SIGTERM to the whole group, waits `grace`, and SIGKILLs the group (itself
//! included). mqtt-llm still signals the group itself on shutdown; the guard only adds the parent-death path.

use std::ffi::OsString;
use std::process::ExitCode;
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::{Pid, getpgrp, getppid};

use super::command::{EngineCommand, withheld_from_child};

/// What starts each line the guard itself prints (the supervisor looks for it in the engine's output).
pub const LOG_PREFIX: &str = "mqtt-llm engine guard: ";

/// The hidden first argument that turns the `mqtt-llm` binary into the guard.
pub const GUARD_ARG: &str = "__engine-guard";

/// Wrap `engine` so that it runs under the guard (`exe` is the mqtt-llm binary).
pub fn guarded(engine: &EngineCommand, exe: std::path::PathBuf, grace: Duration) -> EngineCommand {
    let mut args = vec![
        GUARD_ARG.to_owned(),
        "--parent".to_owned(),
        std::process::id().to_string(),
        "--grace-ms".to_owned(),
        grace.as_millis().to_string(),
        "--".to_owned(),
        engine.program.display().to_string(),
    ];
    args.extend(engine.args.iter().cloned());
    EngineCommand {
        program: exe,
        args,
        env: engine.env.clone(),
        log_file: engine.log_file.clone(),
    }
}

/// The guard's arguments.
#[derive(Debug, PartialEq)]
struct GuardArgs {
    parent: i32,
    grace: Duration,
    program: OsString,
    args: Vec<OsString>,
}

/// Why the guard's own arguments were refused (mqtt-llm builds them, so this means a mismatched binary).
#[derive(Debug, PartialEq, thiserror::Error)]
enum GuardArgsError {
    #[error("missing {0}")]
    Missing(&'static str),
    #[error("bad --grace-ms")]
    BadGrace,
    #[error("unexpected argument {0:?}")]
    Unexpected(OsString),
}

fn parse(args: &[OsString]) -> Result<GuardArgs, GuardArgsError> {
    let mut it = args.iter();
    let (mut parent, mut grace) = (None, Duration::from_secs(10));
    loop {
        let arg = it.next().ok_or(GuardArgsError::Missing("-- PROGRAM"))?;
        match arg.to_str() {
            Some("--parent") => {
                parent = it.next().and_then(|v| v.to_str()?.parse().ok());
            }
            Some("--grace-ms") => {
                let ms = it
                    .next()
                    .and_then(|v| v.to_str()?.parse().ok())
                    .ok_or(GuardArgsError::BadGrace)?;
                grace = Duration::from_millis(ms);
            }
            Some("--") => break,
            _ => return Err(GuardArgsError::Unexpected(arg.clone())),
        }
    }
    let program = it.next().ok_or(GuardArgsError::Missing("PROGRAM"))?.clone();
    Ok(GuardArgs {
        parent: parent.ok_or(GuardArgsError::Missing("--parent"))?,
        grace,
        program,
        args: it.cloned().collect(),
    })
}

/// If this process was started as the guard (`argv[1] == GUARD_ARG`), run it and return its exit code.
pub fn run_if_guard() -> Option<ExitCode> {
    let argv: Vec<OsString> = std::env::args_os().collect();
    if argv.get(1).and_then(|a| a.to_str()) != Some(GUARD_ARG) {
        return None;
    }
    Some(match parse(&argv[2..]) {
        Ok(args) => run(args),
        Err(e) => {
            eprintln!("{LOG_PREFIX}{e}");
            ExitCode::from(2)
        }
    })
}

fn run(args: GuardArgs) -> ExitCode {
    // Asked first, then checked: if the parent died in between, we must not start the engine.
    if let Err(e) = nix::sys::prctl::set_pdeathsig(Signal::SIGTERM) {
        eprintln!("{LOG_PREFIX}cannot watch the parent: {e}");
    }
    if getppid().as_raw() != args.parent {
        eprintln!("{LOG_PREFIX}mqtt-llm is gone; not starting the engine");
        return ExitCode::from(1);
    }
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{LOG_PREFIX}{e}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(supervise(args))
}

async fn supervise(args: GuardArgs) -> ExitCode {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{LOG_PREFIX}{e}");
            return ExitCode::from(1);
        }
    };
    let mut engine = tokio::process::Command::new(&args.program);
    // mqtt-llm removed its own variables already; the guard makes sure, whoever started it.
    for name in withheld_from_child(std::env::vars_os()) {
        engine.env_remove(name);
    }
    let mut child = match engine.args(&args.args).spawn() {
        Ok(c) => c,
        Err(e) => {
            eprintln!(
                "mqtt-llm engine guard: cannot start {}: {e}",
                args.program.to_string_lossy()
            );
            // 127: the shell's "command not found", so the supervisor can tell it from an engine failure.
            return ExitCode::from(127);
        }
    };
    let group = getpgrp();
    tokio::select! {
        status = child.wait() => exit_code(status),
        _ = term.recv() => {
            signal_group(group, Signal::SIGTERM);
            let status = tokio::time::timeout(args.grace, child.wait()).await;
            // Whatever is left (EngineCore, workers, the guard itself) goes now.
            signal_group(group, Signal::SIGKILL);
            match status {
                Ok(status) => exit_code(status),
                Err(_) => ExitCode::from(137),
            }
        }
    }
}

fn signal_group(group: Pid, signal: Signal) {
    let _ = killpg(group, signal);
}

fn exit_code(status: std::io::Result<std::process::ExitStatus>) -> ExitCode {
    use std::os::unix::process::ExitStatusExt;
    match status {
        Ok(s) => match (s.code(), s.signal()) {
            (Some(code), _) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
            (None, Some(sig)) => ExitCode::from(u8::try_from(128 + sig).unwrap_or(1)),
            (None, None) => ExitCode::from(1),
        },
        Err(_) => ExitCode::from(1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wraps_and_parses_back() {
        let engine = EngineCommand {
            program: "/opt/vllm".into(),
            args: vec!["serve".into(), "m".into(), "--".into()],
            env: vec![("A".into(), "1".into())],
            log_file: None,
        };
        let g = guarded(&engine, "/bin/mqtt-llm".into(), Duration::from_millis(1500));
        assert_eq!(g.program, std::path::PathBuf::from("/bin/mqtt-llm"));
        assert_eq!(g.env, engine.env);
        let argv: Vec<OsString> = g.args[1..].iter().map(OsString::from).collect();
        let parsed = parse(&argv).unwrap();
        assert_eq!(parsed.parent, std::process::id() as i32);
        assert_eq!(parsed.grace, Duration::from_millis(1500));
        assert_eq!(parsed.program, OsString::from("/opt/vllm"));
        assert_eq!(parsed.args, [OsString::from("serve"), "m".into(), "--".into()]);
    }

    #[test]
    fn rejects_garbage() {
        assert!(parse(&[OsString::from("--bogus")]).is_err());
        assert!(parse(&[OsString::from("--parent"), "1".into()]).is_err());
    }
}
