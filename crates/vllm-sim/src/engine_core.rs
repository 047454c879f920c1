//! The EngineCore process. vLLM (tp=1, dp=1) runs its engine core in a `multiprocessing` child,
//! `VLLM::EngineCore`, whose log lines carry `(EngineCore pid=N)`; the simulator does the same so
//! that supervisors see the real process tree:
//!
//! - [`EngineCore::spawn`] starts `vllm-sim __engine-core --parent-pid P
//!   --sim-engine-core-max-lifetime-s S` in the API server's process group (no `setsid`, no
//!   `setpgid`, like vLLM) with stdout and stderr inherited and stdin a pipe from the parent.
//!   The scheduling itself stays in the API server process; the child only exists, holding "the
//!   GPU", and prints what vLLM's EngineCore prints when it fails.
//! - The pipe is the control channel: `oom` makes the child log vLLM's `EngineCore failed to
//!   start.` block and exit 1, `fatal` makes it log `EngineCore encountered a fatal error.` and
//!   exit 1. The API server learns of either (or of any other death) by reaping the child.
//! - Like vLLM's EngineCore the child has no parent-death watchdog: if the API server is
//!   SIGKILLed the pipe closes and the child carries on, orphaned, until whoever owns the process
//!   group kills it. So that test runs cannot leak it forever, it exits by itself after
//!   `--sim-engine-core-max-lifetime-s` (default 3600 s), logging a warning.
//! - SIGTERM and SIGINT kill it (vLLM's EngineCore exits on both).
//!
//! Library use without a child ([`SimConfig::engine_core_exe`](super::SimConfig) `None`) keeps
//! the engine core in-process: the same lines, with this process's pid.

use std::ffi::OsString;
use std::io::BufRead as _;
use std::path::Path;
use std::process::{ExitCode, ExitStatus, Stdio};
use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::io::AsyncWriteExt as _;
use tokio::process::{Child, ChildStdin, Command};

use super::failure;
use super::log;

/// The hidden subcommand that runs the EngineCore child.
pub const SUBCOMMAND: &str = "__engine-core";
/// The child's lifetime when no `--sim-engine-core-max-lifetime-s` is given.
pub const DEFAULT_MAX_LIFETIME: Duration = Duration::from_secs(3600);
/// How long an EngineCore exit waits for our own SIGTERM before it counts as a death (a
/// group-wide SIGTERM reaches both processes; the API server's own shutdown wins the race).
pub const SIGNAL_RACE_GRACE: Duration = Duration::from_millis(50);

/// The `__engine-core` command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoreArgs {
    /// The API server that started it (informational: nothing watches it).
    pub parent_pid: Option<u32>,
    pub max_lifetime: Duration,
}

/// A bad `__engine-core` command line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CoreArgsError {
    #[error("{flag} needs a value")]
    MissingValue { flag: &'static str },
    #[error("bad {flag} {value:?}")]
    BadValue { flag: &'static str, value: String },
    #[error("unrecognized argument {0:?}")]
    Unrecognized(String),
}

/// `--parent-pid P --sim-engine-core-max-lifetime-s S` (both optional, `--flag=value` too).
pub fn parse_args(args: &[OsString]) -> Result<CoreArgs, CoreArgsError> {
    let mut parsed = CoreArgs {
        parent_pid: None,
        max_lifetime: DEFAULT_MAX_LIFETIME,
    };
    let mut it = args.iter().map(|a| a.to_string_lossy().into_owned());
    while let Some(arg) = it.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) => (n.to_owned(), Some(v.to_owned())),
            None => (arg.clone(), None),
        };
        let mut value = |flag: &'static str| {
            inline
                .clone()
                .or_else(|| it.next())
                .ok_or(CoreArgsError::MissingValue { flag })
        };
        match name.as_str() {
            "--parent-pid" => {
                let flag = "--parent-pid";
                let v = value(flag)?;
                parsed.parent_pid = Some(v.parse().map_err(|_| CoreArgsError::BadValue { flag, value: v })?);
            }
            "--sim-engine-core-max-lifetime-s" => {
                let flag = "--sim-engine-core-max-lifetime-s";
                let v = value(flag)?;
                let secs: u64 = v.parse().map_err(|_| CoreArgsError::BadValue { flag, value: v })?;
                parsed.max_lifetime = Duration::from_secs(secs);
            }
            _ => return Err(CoreArgsError::Unrecognized(name)),
        }
    }
    Ok(parsed)
}

/// A failure the API server can order the EngineCore to have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CoreFailure {
    /// CUDA OOM while profiling, during start-up.
    Oom,
    /// A step fails at runtime.
    Fatal,
}

impl CoreFailure {
    fn command(self) -> &'static str {
        match self {
            CoreFailure::Oom => "oom\n",
            CoreFailure::Fatal => "fatal\n",
        }
    }

    fn from_command(line: &str) -> Option<Self> {
        match line.trim() {
            "oom" => Some(CoreFailure::Oom),
            "fatal" => Some(CoreFailure::Fatal),
            _ => None,
        }
    }

    /// Log what vLLM's `run_engine_core` logs for this failure (the process then exits 1).
    fn report(self) {
        let (message, traceback) = match self {
            CoreFailure::Oom => ("EngineCore failed to start.", failure::engine_core_oom()),
            CoreFailure::Fatal => ("EngineCore encountered a fatal error.", failure::engine_core_fatal()),
        };
        log::engine_error_block("core.py:1117", &format!("{message}\n{traceback}"));
        // multiprocessing's own report of the uncaught exception, on stderr.
        let last = traceback
            .lines()
            .filter(|l| !l.starts_with(' '))
            .nth(1)
            .unwrap_or_default();
        log::engine_stderr_block(&format!(
            "Process EngineCore:\nTraceback (most recent call last):\n  \
             File \"/usr/lib/python3.12/multiprocessing/process.py\", line 314, in _bootstrap\n    \
             self.run()\n  \
             File \"/usr/lib/python3.12/multiprocessing/process.py\", line 108, in run\n    \
             self._target(*self._args, **self._kwargs)\n  \
             File \"/usr/local/lib/python3.12/dist-packages/vllm/v1/engine/core.py\", line 1121, in run_engine_core\n    \
             raise e\n{last}\n"
        ));
    }
}

/// The body of `vllm-sim __engine-core`: wait for orders on stdin until the lifetime is over.
pub fn child_main(args: &CoreArgs) -> ExitCode {
    log::set_engine_core_pid(std::process::id());
    let (tx, orders) = std::sync::mpsc::channel();
    // A plain thread: the blocking read is abandoned when the process exits.
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
        // EOF: the API server is gone or let go of us. Nothing watches for that (like vLLM).
    });
    let deadline = Instant::now() + args.max_lifetime;
    let mut listening = true;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            log::engine_warning(
                "vllm_sim",
                format_args!(
                    "exiting after --sim-engine-core-max-lifetime-s={} (parent pid {})",
                    args.max_lifetime.as_secs(),
                    args.parent_pid.map_or_else(|| "?".to_owned(), |p| p.to_string())
                ),
            );
            return ExitCode::SUCCESS;
        }
        if !listening {
            std::thread::sleep(left);
            continue;
        }
        match orders.recv_timeout(left) {
            Ok(line) => {
                if let Some(failure) = CoreFailure::from_command(&line) {
                    failure.report();
                    return ExitCode::FAILURE;
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => listening = false,
        }
    }
}

/// How the EngineCore process ended, as Python's `Process.exitcode`: the exit status, or minus
/// the number of the signal that killed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CoreExit(pub i32);

impl CoreExit {
    fn from_status(status: ExitStatus) -> Self {
        use std::os::unix::process::ExitStatusExt as _;
        match (status.code(), status.signal()) {
            (Some(code), _) => CoreExit(code),
            (None, Some(signal)) => CoreExit(-signal),
            (None, None) => CoreExit(-1),
        }
    }
}

/// The API server's handle on its EngineCore.
#[derive(Debug)]
pub struct EngineCore {
    pid: u32,
    child: Option<Child>,
    orders: Option<ChildStdin>,
    /// Set once the process was reaped (or, in-process, once it "failed").
    exit: Option<CoreExit>,
}

impl EngineCore {
    /// Start the EngineCore child running `exe`, or an in-process stand-in when `exe` is `None`.
    pub fn spawn(exe: Option<&Path>, max_lifetime: Duration) -> std::io::Result<Self> {
        let Some(exe) = exe else {
            return Ok(Self {
                pid: std::process::id(),
                child: None,
                orders: None,
                exit: None,
            });
        };
        let mut child = Command::new(exe)
            .arg(SUBCOMMAND)
            .arg("--parent-pid")
            .arg(std::process::id().to_string())
            .arg("--sim-engine-core-max-lifetime-s")
            .arg(max_lifetime.as_secs().max(1).to_string())
            .stdin(Stdio::piped())
            // Inherited, like a multiprocessing child: after a SIGKILL of the API server the
            // orphan still holds the supervisor's pipes.
            .stdout(Stdio::inherit())
            .stderr(Stdio::inherit())
            // Only for error paths that drop the handle; every normal path reaps it.
            .kill_on_drop(true)
            .spawn()?;
        let pid = child
            .id()
            .ok_or_else(|| std::io::Error::other("the EngineCore exited at once"))?;
        let orders = child.stdin.take();
        Ok(Self {
            pid,
            child: Some(child),
            orders,
            exit: None,
        })
    }

    /// The pid of the EngineCore process (ours when in-process).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Whether it is (still) a separate process that has not been reaped.
    pub fn is_running(&self) -> bool {
        self.exit.is_none()
    }

    /// Resolves once the EngineCore has exited (at once if it already has; never for an
    /// in-process core that did not fail). Cancel-safe.
    pub async fn exited(&mut self) -> CoreExit {
        if let Some(exit) = self.exit {
            return exit;
        }
        let Some(child) = self.child.as_mut() else {
            return std::future::pending().await;
        };
        let exit = child.wait().await.map_or(CoreExit(-1), CoreExit::from_status);
        self.exit = Some(exit);
        self.orders = None;
        exit
    }

    /// Make the EngineCore fail: the child logs and exits 1 (see [`Self::exited`]); in-process
    /// the lines are logged here and the core counts as exited with 1.
    pub async fn fail(&mut self, failure: CoreFailure) {
        if self.exit.is_some() {
            return;
        }
        if self.child.is_none() {
            failure.report();
            self.exit = Some(CoreExit(1));
            return;
        }
        if let Some(orders) = self.orders.as_mut() {
            // A dead child makes this fail; its exit is reported by `exited` anyway.
            let _ = orders.write_all(failure.command().as_bytes()).await;
            let _ = orders.flush().await;
        }
    }

    /// SIGTERM, up to `grace` for it to exit, then SIGKILL; reaped either way.
    pub async fn terminate(&mut self, grace: Duration) {
        if self.exit.is_some() || self.child.is_none() {
            return;
        }
        self.signal(Signal::SIGTERM);
        if tokio::time::timeout(grace, self.exited()).await.is_err() {
            self.signal(Signal::SIGKILL);
            self.exited().await;
        }
    }

    /// vLLM's process manager with `--shutdown-timeout 0`: SIGKILL at once, logged; reaped.
    pub async fn force_kill(&mut self) {
        if self.exit.is_some() || self.child.is_none() {
            return;
        }
        log::info(
            "utils.py:652",
            format_args!(
                "[shutdown] Process manager: force killing remaining process EngineCore pid {}",
                self.pid
            ),
        );
        self.signal(Signal::SIGKILL);
        self.exited().await;
    }

    fn signal(&self, signal: Signal) {
        if let Ok(pid) = i32::try_from(self.pid) {
            // ESRCH: already gone (a zombie still accepts signals, so this is rare).
            let _ = kill(Pid::from_raw(pid), signal);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    #[test]
    fn parses_the_child_command_line() {
        assert_eq!(
            parse_args(&os(&["--parent-pid", "42", "--sim-engine-core-max-lifetime-s=5"])),
            Ok(CoreArgs {
                parent_pid: Some(42),
                max_lifetime: Duration::from_secs(5)
            })
        );
        assert_eq!(
            parse_args(&[]),
            Ok(CoreArgs {
                parent_pid: None,
                max_lifetime: DEFAULT_MAX_LIFETIME
            })
        );
        assert!(parse_args(&os(&["--bogus"])).is_err());
        assert!(parse_args(&os(&["--parent-pid"])).is_err());
    }

    #[test]
    fn commands_round_trip() {
        for f in [CoreFailure::Oom, CoreFailure::Fatal] {
            assert_eq!(CoreFailure::from_command(f.command()), Some(f));
        }
        assert_eq!(CoreFailure::from_command("nope"), None);
    }

    #[tokio::test]
    async fn in_process_core_fails_with_exit_code_one() {
        let mut core = EngineCore::spawn(None, DEFAULT_MAX_LIFETIME).unwrap();
        assert_eq!(core.pid(), std::process::id());
        assert!(core.is_running());
        core.fail(CoreFailure::Fatal).await;
        assert_eq!(core.exited().await, CoreExit(1));
        assert!(!core.is_running());
    }
}
