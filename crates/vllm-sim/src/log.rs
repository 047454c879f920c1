//! vLLM-shaped log lines. vLLM's own loggers write to stdout
//! (`INFO 11-22 10:00:00 [file.py:N] message`, engine-core lines prefixed with
//! `(EngineCore pid=N) `); uvicorn's lifecycle lines go to stderr (`INFO:     message`) and its
//! access log to stdout. Every line is flushed at once: supervisors and tests read them live.
//! Timestamps are UTC. Write errors (a closed pipe) are ignored rather than fatal.

use std::fmt::Display;
use std::io::Write;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// The pid engine-core lines carry; 0 until an EngineCore process exists (then our own pid).
static ENGINE_CORE_PID: AtomicU32 = AtomicU32::new(0);

/// Engine-core lines from now on carry `(EngineCore pid=PID)`.
pub fn set_engine_core_pid(pid: u32) {
    ENGINE_CORE_PID.store(pid, Ordering::Relaxed);
}

/// The pid in the `(EngineCore pid=N)` prefix.
pub fn engine_core_pid() -> u32 {
    match ENGINE_CORE_PID.load(Ordering::Relaxed) {
        0 => std::process::id(),
        pid => pid,
    }
}

/// A vLLM logger line on stdout: `INFO MM-DD HH:MM:SS [source] message`.
pub fn info(source: &str, message: impl Display) {
    line(false, format_args!("INFO {} [{source}] {message}", timestamp()));
}

/// A warning line on stdout.
pub fn warning(source: &str, message: impl Display) {
    line(false, format_args!("WARNING {} [{source}] {message}", timestamp()));
}

/// An engine-core line on stdout: `(EngineCore pid=N) INFO MM-DD HH:MM:SS [source] message`.
pub fn engine_info(source: &str, message: impl Display) {
    line(
        false,
        format_args!(
            "(EngineCore pid={}) INFO {} [{source}] {message}",
            engine_core_pid(),
            timestamp()
        ),
    );
}

/// An engine-core warning on stdout.
pub fn engine_warning(source: &str, message: impl Display) {
    line(
        false,
        format_args!(
            "(EngineCore pid={}) WARNING {} [{source}] {message}",
            engine_core_pid(),
            timestamp()
        ),
    );
}

/// A multi-line `logger.exception` of the engine core on stdout: every line of `text` gets the
/// `(EngineCore pid=N) ERROR MM-DD HH:MM:SS [source] ` prefix, as vLLM's formatter does.
pub fn engine_error_block(source: &str, text: &str) {
    let prefix = format!(
        "(EngineCore pid={}) ERROR {} [{source}] ",
        engine_core_pid(),
        timestamp()
    );
    block(false, &prefix, text);
}

/// Raw engine-core output on stderr (Python's own traceback printing), `(EngineCore pid=N) `
/// before every line.
pub fn engine_stderr_block(text: &str) {
    block(true, &format!("(EngineCore pid={}) ", engine_core_pid()), text);
}

/// A multi-line ERROR record of the API server on stdout (`ERROR MM-DD HH:MM:SS [source] ` before
/// every line).
pub fn error_block(source: &str, text: &str) {
    block(false, &format!("ERROR {} [{source}] ", timestamp()), text);
}

/// Text printed as is on stderr (an uncaught exception's traceback).
pub fn stderr_raw(text: &str) {
    let mut err = std::io::stderr().lock();
    let _ = err.write_all(text.as_bytes());
    let _ = err.flush();
}

/// A uvicorn lifecycle line on stderr: `INFO:     message`.
pub fn uvicorn(message: impl Display) {
    line(true, format_args!("INFO:     {message}"));
}

/// A uvicorn access-log line on stdout.
pub fn access(message: impl Display) {
    line(false, format_args!("INFO:     {message}"));
}

/// An error line on stderr (startup failures).
pub fn error(message: impl Display) {
    line(true, format_args!("ERROR {} [launcher.py:99] {message}", timestamp()));
}

/// Every line of `text` with `prefix`, written at once.
fn block(to_stderr: bool, prefix: &str, text: &str) {
    let mut out = String::with_capacity(text.len() * 2);
    for l in text.lines() {
        out.push_str(prefix);
        out.push_str(l);
        out.push('\n');
    }
    if to_stderr {
        stderr_raw(&out);
    } else {
        let mut stdout = std::io::stdout().lock();
        let _ = stdout.write_all(out.as_bytes());
        let _ = stdout.flush();
    }
}

fn line(to_stderr: bool, text: std::fmt::Arguments<'_>) {
    if to_stderr {
        let mut err = std::io::stderr().lock();
        let _ = writeln!(err, "{text}");
        let _ = err.flush();
    } else {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{text}");
        let _ = out.flush();
    }
}

/// `MM-DD HH:MM:SS` in UTC.
fn timestamp() -> String {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    format_timestamp(secs)
}

fn format_timestamp(unix_secs: u64) -> String {
    let days = (unix_secs / 86_400) as i64;
    let rem = unix_secs % 86_400;
    let (_, month, day) = civil_from_days(days);
    format!(
        "{month:02}-{day:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_month_day_time() {
        // 2025-11-22 10:00:00 UTC
        assert_eq!(format_timestamp(1_763_805_600), "11-22 10:00:00");
        assert_eq!(format_timestamp(0), "01-01 00:00:00");
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
    }
}
