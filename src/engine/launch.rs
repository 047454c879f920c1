//! One launch of the engine (an incarnation): spawn `vllm serve` (under the guard) in its own process group with
//! its output forwarded to the log tail, and stop it: SIGTERM to the group, `grace`, SIGKILL to the group.

use std::process::Stdio;
use std::sync::atomic::Ordering;
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

use super::actor::Actor;
use super::command::{EngineCommand, withheld_from_child};
use super::handle::EngineError;
use super::logs::forward_lines;

/// Pick a free TCP port on 127.0.0.1 (bind port 0, read it back, release it).
pub(super) fn free_port() -> Result<u16, EngineError> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).map_err(EngineError::NoFreePort)?;
    Ok(listener.local_addr().map_err(EngineError::NoFreePort)?.port())
}

/// The mqtt-llm binary, when this process is it (the guard is this binary in another role). Tests that embed the
/// library run without the guard.
pub(super) fn guard_exe() -> Option<std::path::PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let name = exe.file_name()?.to_str()?;
    (name == "mqtt-llm").then_some(exe)
}

/// Fail early, with the OS error, when `program` cannot be run: a path must be an executable file, a bare name
/// must be one in a `PATH` directory. (Under the guard, a spawn failure would otherwise only show as an exit.)
pub fn check_executable(program: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let runnable =
        |p: &std::path::Path| std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
    let found = if program.components().count() > 1 {
        runnable(program)
    } else {
        std::env::var_os("PATH")
            .is_some_and(|path| std::env::split_paths(&path).any(|dir| runnable(&dir.join(program))))
    };
    if found {
        Ok(())
    } else if program.components().count() > 1 && program.exists() {
        Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            "not an executable file",
        ))
    } else if program.components().count() > 1 {
        Err(std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"))
    } else {
        Err(std::io::Error::new(std::io::ErrorKind::NotFound, "not found on PATH"))
    }
}

/// A running incarnation.
pub(super) struct Incarnation {
    pub(super) child: Child,
    pub(super) pgid: Option<Pid>,
    /// The tasks forwarding its stdout and stderr into the log tail; they end at end of output.
    pub(super) output: Vec<tokio::task::JoinHandle<()>>,
}

/// How long, after the engine's group is gone, its last output lines may take to reach the log tail.
pub(super) const OUTPUT_DRAIN: Duration = Duration::from_secs(2);

impl Actor {
    pub(super) fn launch(&mut self, command: &EngineCommand) -> Result<Incarnation, EngineError> {
        tracing::info!(command = %command.display(), "launching engine");
        // New phases and a header in the engine log file for this incarnation.
        self.tail.start_run(command);
        let mut child = Command::new(&command.program);
        // Nothing of mqtt-llm's own (`MQTT_LLM_*`, the password among them) reaches the guard or the engine.
        for name in withheld_from_child(std::env::vars_os()) {
            child.env_remove(name);
        }
        let mut child = child
            .args(&command.args)
            .envs(command.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group: signals reach vLLM's EngineCore and workers too, and a Ctrl-C in our
            // terminal does not hit the engine before we drain.
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| EngineError::Spawn {
                program: command.program.display().to_string(),
                source,
            })?;
        let mut output = Vec::with_capacity(2);
        if let Some(out) = child.stdout.take() {
            output.push(self.tracker.spawn(forward_lines(out, "stdout", self.tail.clone())));
        }
        if let Some(err) = child.stderr.take() {
            output.push(self.tracker.spawn(forward_lines(err, "stderr", self.tail.clone())));
        }
        let pgid = child.id().and_then(|id| i32::try_from(id).ok()).map(Pid::from_raw);
        self.incarnation.fetch_add(1, Ordering::SeqCst);
        self.pgid.send_replace(pgid.map(Pid::as_raw));
        Ok(Incarnation { child, pgid, output })
    }

    /// SIGTERM the group, wait `grace` for the leader, SIGKILL the group, reap the leader.
    pub(super) async fn stop_group(&self, inc: &mut Incarnation) {
        if let Some(pgid) = inc.pgid {
            tracing::info!(pgid = pgid.as_raw(), "stopping engine: SIGTERM to its process group");
            signal_group(pgid, Signal::SIGTERM);
            match tokio::time::timeout(self.cfg.grace, inc.child.wait()).await {
                Ok(status) => tracing::info!(status = %status_text(status), "engine exited"),
                Err(_) => tracing::warn!(grace = ?self.cfg.grace, "engine still running after grace; SIGKILL"),
            }
            // Whatever is left of the group (EngineCore, workers) goes now.
            signal_group(pgid, Signal::SIGKILL);
        }
        let _ = inc.child.start_kill();
        let _ = inc.child.wait().await;
    }
}

pub(super) fn signal_group(pgid: Pid, signal: Signal) {
    match killpg(pgid, signal) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
        Err(e) => tracing::warn!(pgid = pgid.as_raw(), %signal, error = %e, "cannot signal the engine's group"),
    }
}

pub(super) fn status_text(status: std::io::Result<std::process::ExitStatus>) -> String {
    match status {
        Ok(s) => s.to_string(),
        Err(e) => format!("unknown status: {e}"),
    }
}
