//! The engine's output. Every line goes to tracing (target `engine`), to the last-lines tail kept for diagnosis,
//! to the start-up phase tracker, and to the engine log file (rotated) when there is one.
//!
//! One [`LogTail`] serves the engine's whole life: [`LogTail::start_run`] marks each launch (a fresh phase
//! tracker, a header line in the file), and the stdout and stderr readers ([`forward_lines`]) feed it. Lines end
//! at `\n` or `\r`, so a progress bar (tqdm redraws with `\r`) shows up as it moves rather than when it ends.

use std::collections::VecDeque;
use std::ffi::OsStr;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Instant, SystemTime};

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::watch;

use super::command::EngineCommand;
use super::locate::xdg_dir;
use super::progress::{PhaseTracker, StartupProgress};

/// How many lines a failed start reports.
pub const TAIL_LINES: usize = 40;
/// The engine log file is rotated when it would grow past this.
pub const ENGINE_LOG_MAX_BYTES: u64 = 50 * 1024 * 1024;
/// Rotated engine logs kept: `engine.log.1` (newest) to `engine.log.3`.
pub const ENGINE_LOG_KEEP: usize = 3;
/// A line longer than this (a runaway progress bar) is cut into pieces.
const MAX_LINE_BYTES: usize = 64 * 1024;

/// `$XDG_STATE_HOME/mqtt-llm/engine.log`, else `~/.local/state/mqtt-llm/engine.log` (relative XDG paths are
/// ignored, as the XDG spec says).
pub fn default_engine_log(xdg_state_home: Option<&OsStr>, home: Option<&OsStr>) -> Option<PathBuf> {
    Some(
        xdg_dir(xdg_state_home, home, ".local/state")?
            .join("mqtt-llm")
            .join("engine.log"),
    )
}

/// The engine's output as the rest of the program sees it: the last [`TAIL_LINES`] lines (stdout and stderr
/// interleaved as they came), the start-up phase, and the log file.
#[derive(Debug, Clone)]
pub struct LogTail {
    inner: Arc<Mutex<Inner>>,
    progress: Arc<watch::Sender<Option<StartupProgress>>>,
}

#[derive(Debug)]
struct Inner {
    lines: VecDeque<String>,
    phases: PhaseTracker,
    /// When the current run was launched; phases report the time since.
    launched: Instant,
    file: Option<RotatingFile>,
    /// The secrets of the current run's command (`--api-key` values): masked in every line (vLLM logs its
    /// arguments).
    secrets: Vec<String>,
}

impl Default for LogTail {
    fn default() -> Self {
        Self {
            inner: Arc::new(Mutex::new(Inner {
                lines: VecDeque::with_capacity(TAIL_LINES),
                phases: PhaseTracker::default(),
                launched: Instant::now(),
                file: None,
                secrets: Vec::new(),
            })),
            progress: Arc::new(watch::channel(None).0),
        }
    }
}

impl LogTail {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A launch of `command` begins: start-up phases start over, and its output goes to its log file (opened
    /// once, kept across restarts) after a header line.
    pub fn start_run(&self, command: &EngineCommand) {
        let mut inner = self.lock();
        inner.phases = PhaseTracker::default();
        inner.launched = Instant::now();
        inner.secrets = command.secrets();
        self.progress.send_replace(None);
        let wanted = command.log_file.as_deref();
        if inner.file.as_ref().map(|f| f.path.as_path()) != wanted {
            inner.file = wanted.and_then(|path| match RotatingFile::open(path, ENGINE_LOG_MAX_BYTES, ENGINE_LOG_KEEP) {
                Ok(f) => Some(f),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "cannot open the engine log file; not keeping one");
                    None
                }
            });
        }
        let header = format!(
            "===== {} mqtt-llm launches: {}",
            humantime::format_rfc3339_seconds(SystemTime::now()),
            command.display_with_env()
        );
        inner.write_file(&header);
    }

    /// Keep one line of output: tail, phase, file.
    pub fn push(&self, line: String) {
        let mut inner = self.lock();
        if let Some(phase) = inner.phases.observe(&line) {
            let elapsed = inner.launched.elapsed();
            self.progress.send_replace(Some(StartupProgress { phase, elapsed }));
        }
        inner.write_file(&line);
        if inner.lines.len() == TAIL_LINES {
            inner.lines.pop_front();
        }
        inner.lines.push_back(line);
    }

    /// `line` with the current run's secrets masked (see [`super::command::redact::mask`]).
    pub fn masked(&self, line: String) -> String {
        let inner = self.lock();
        match super::command::redact::mask(&line, &inner.secrets) {
            std::borrow::Cow::Borrowed(_) => line,
            std::borrow::Cow::Owned(masked) => masked,
        }
    }

    pub fn snapshot(&self) -> Vec<String> {
        self.lock().lines.iter().cloned().collect()
    }

    /// The furthest start-up phase of the current run and when it was reached; `None` until the first.
    pub fn progress(&self) -> watch::Receiver<Option<StartupProgress>> {
        self.progress.subscribe()
    }

    /// The file the engine's output is kept in, when there is one.
    pub fn log_file(&self) -> Option<PathBuf> {
        self.lock().file.as_ref().map(|f| f.path.clone())
    }
}

impl Inner {
    fn write_file(&mut self, line: &str) {
        let Some(file) = &mut self.file else { return };
        if let Err(e) = file.write_line(line) {
            tracing::warn!(path = %file.path.display(), error = %e, "cannot write the engine log file; not keeping one");
            self.file = None;
        }
    }
}

/// An append-only file renamed to `.1` (and `.1` to `.2`, ...) when it reaches its size.
#[derive(Debug)]
struct RotatingFile {
    path: PathBuf,
    file: File,
    len: u64,
    max_bytes: u64,
    keep: usize,
}

impl RotatingFile {
    fn open(path: &Path, max_bytes: u64, keep: usize) -> std::io::Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let len = file.metadata()?.len();
        Ok(Self {
            path: path.to_owned(),
            file,
            len,
            max_bytes,
            keep,
        })
    }

    fn rotated(&self, n: usize) -> PathBuf {
        let mut name = self.path.clone().into_os_string();
        name.push(format!(".{n}"));
        PathBuf::from(name)
    }

    fn write_line(&mut self, line: &str) -> std::io::Result<()> {
        let size = line.len() as u64 + 1;
        if self.len > 0 && self.len + size > self.max_bytes {
            self.rotate()?;
        }
        let mut bytes = Vec::with_capacity(line.len() + 1);
        bytes.extend_from_slice(line.as_bytes());
        bytes.push(b'\n');
        self.file.write_all(&bytes)?;
        self.len += size;
        Ok(())
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        for n in (1..self.keep).rev() {
            match std::fs::rename(self.rotated(n), self.rotated(n + 1)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        if self.keep > 0 {
            std::fs::rename(&self.path, self.rotated(1))?;
        } else {
            std::fs::remove_file(&self.path)?;
        }
        self.file = OpenOptions::new().create(true).append(true).open(&self.path)?;
        self.len = 0;
        Ok(())
    }
}

/// Read `reader` until EOF, logging each line (ended by `\n` or `\r`; invalid UTF-8 replaced; the run's secrets
/// masked) and keeping it in `tail`. Never stops early on odd bytes: a reader that stopped would leave the engine
/// blocked on a full pipe.
pub async fn forward_lines(reader: impl AsyncRead + Unpin, stream: &'static str, tail: LogTail) {
    let emit = |pending: &mut Vec<u8>| {
        if !pending.is_empty() {
            let line = tail.masked(String::from_utf8_lossy(pending).into_owned());
            tracing::info!(target: "engine", stream, "{line}");
            tail.push(line);
            pending.clear();
        }
    };
    let mut reader = BufReader::new(reader);
    let mut pending = Vec::new();
    loop {
        let buf = match reader.fill_buf().await {
            Ok(buf) => buf,
            Err(e) => {
                tracing::warn!(target: "engine", stream, error = %e, "engine output unreadable");
                break;
            }
        };
        if buf.is_empty() {
            break;
        }
        let mut start = 0;
        for (i, &byte) in buf.iter().enumerate() {
            if byte == b'\n' || byte == b'\r' {
                pending.extend_from_slice(&buf[start..i]);
                emit(&mut pending);
                start = i + 1;
            }
        }
        pending.extend_from_slice(&buf[start..]);
        let read = buf.len();
        reader.consume(read);
        if pending.len() > MAX_LINE_BYTES {
            emit(&mut pending);
        }
    }
    emit(&mut pending);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::progress::StartupPhase;

    fn command(log_file: Option<PathBuf>) -> EngineCommand {
        EngineCommand {
            program: "vllm".into(),
            args: vec!["serve".into(), "m".into()],
            env: vec![],
            log_file,
        }
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        let tail = LogTail::default();
        for i in 0..100 {
            tail.push(format!("line {i}"));
        }
        let snap = tail.snapshot();
        assert_eq!(snap.len(), TAIL_LINES);
        assert_eq!(snap.first().map(String::as_str), Some("line 60"));
        assert_eq!(snap.last().map(String::as_str), Some("line 99"));
    }

    #[tokio::test]
    async fn forwards_every_line() {
        let tail = LogTail::default();
        forward_lines(&b"a\nb\nlast without newline"[..], "stdout", tail.clone()).await;
        assert_eq!(tail.snapshot(), ["a", "b", "last without newline"]);
    }

    #[tokio::test]
    async fn carriage_returns_and_invalid_utf8_do_not_stop_the_reader() {
        let tail = LogTail::default();
        let out = b"bar  0%\rbar 50%\rbar 100%\r\nbad \xff byte\n\nafter\n";
        forward_lines(&out[..], "stderr", tail.clone()).await;
        assert_eq!(
            tail.snapshot(),
            ["bar  0%", "bar 50%", "bar 100%", "bad \u{fffd} byte", "after"]
        );
    }

    #[tokio::test]
    async fn phases_are_published_and_reset_at_each_launch() {
        let tail = LogTail::default();
        let progress = tail.progress();
        tail.start_run(&command(None));
        assert_eq!(*progress.borrow(), None);
        tail.push(
            "(EngineCore pid=1) INFO 04-07 02:44:26 [default_loader.py:384] Loading weights took 26.10 seconds".into(),
        );
        assert_eq!(progress.borrow().map(|p| p.phase), Some(StartupPhase::LoadingWeights));
        tail.push("INFO 04-07 [utils.py:233] non-default args: {}".into());
        assert_eq!(progress.borrow().map(|p| p.phase), Some(StartupPhase::LoadingWeights));
        tail.start_run(&command(None));
        assert_eq!(*progress.borrow(), None);
        tail.push("INFO 04-07 [utils.py:233] non-default args: {}".into());
        assert_eq!(progress.borrow().map(|p| p.phase), Some(StartupPhase::Initializing));
    }

    #[test]
    fn log_file_gets_a_header_per_launch_and_every_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/mqtt-llm/engine.log");
        let tail = LogTail::default();
        tail.start_run(&command(Some(path.clone())));
        tail.push("one".into());
        tail.start_run(&command(Some(path.clone())));
        tail.push("two".into());
        assert_eq!(tail.log_file(), Some(path.clone()));
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert!(lines[0].starts_with("===== ") && lines[0].ends_with("mqtt-llm launches: vllm serve m"));
        assert_eq!((lines[1], lines[3]), ("one", "two"));
    }

    #[test]
    fn log_file_rotates_and_keeps_three() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("engine.log");
        let mut file = RotatingFile::open(&path, 9, 3).unwrap();
        for line in ["aaaa", "bbbb", "cccc", "dddd", "eeee", "ffff"] {
            file.write_line(line).unwrap();
        }
        let read = |p: &Path| std::fs::read_to_string(p).unwrap();
        assert_eq!(read(&path), "ffff\n");
        assert_eq!(read(&file.rotated(1)), "eeee\n");
        assert_eq!(read(&file.rotated(2)), "dddd\n");
        assert_eq!(read(&file.rotated(3)), "cccc\n");
        assert!(!file.rotated(4).exists());
        let mut reopened = RotatingFile::open(&path, 9, 3).unwrap();
        assert_eq!(reopened.len, 5);
        reopened.write_line("gg").unwrap();
        assert_eq!(read(&path), "ffff\ngg\n");
    }

    #[test]
    fn unwritable_log_file_is_dropped_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("file");
        std::fs::write(&blocker, "").unwrap();
        let tail = LogTail::default();
        tail.start_run(&command(Some(blocker.join("engine.log"))));
        tail.push("still kept".into());
        assert_eq!(tail.log_file(), None);
        assert_eq!(tail.snapshot(), ["still kept"]);
    }

    #[test]
    fn default_engine_log_follows_xdg_state_home() {
        let p = |x: Option<&str>, h: Option<&str>| default_engine_log(x.map(OsStr::new), h.map(OsStr::new));
        assert_eq!(
            p(Some("/xdg"), Some("/home/u")),
            Some("/xdg/mqtt-llm/engine.log".into())
        );
        assert_eq!(
            p(None, Some("/home/u")),
            Some("/home/u/.local/state/mqtt-llm/engine.log".into())
        );
        assert_eq!(p(None, None), None);
    }
}
