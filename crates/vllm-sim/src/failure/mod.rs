//! How a simulated `vllm serve` fails, in vLLM's words: the Python tracebacks it prints on a
//! failed start (`--sim-fail-start`, a port already taken, an EngineCore that exits during
//! start-up, SIGTERM while loading: `startup`) and on engine death at runtime (`runtime`),
//! built with [`Traceback`]. The exit statuses they lead to are [`SimExit`](crate::SimExit)'s.
//!
//! The frames name vLLM 0.33's real call chain (`entrypoints/launchers/api_server/entry.py`,
//! `v1/engine/utils.py:1473`, `transformers_utils/config.py:923`, ...); their line numbers are
//! illustrative. Only the last line of each block (`RuntimeError: ...`, `ValueError: ...`,
//! `OSError: [Errno 98] Address already in use`) and the `EngineCore failed to start.` /
//! `EngineCore encountered a fatal error.` lines are what a supervisor should match on.

mod runtime;
mod startup;

use std::fmt::Write as _;

pub use runtime::{engine_core_fatal, output_handler_failed, stream_generator_failed};
pub use startup::{
    bind_failed, engine_core_init_failed, engine_core_oom, interrupted_during_startup, model_not_found, port_in_use,
};

/// Where vLLM's Python packages live in the official container image.
const SITE: &str = "/usr/local/lib/python3.12/dist-packages";

/// The message of vLLM's `EngineDeadError`.
pub const ENGINE_DEAD: &str = "vllm.v1.engine.exceptions.EngineDeadError: EngineCore encountered an issue. See stack trace (above) for the root cause.";

/// A Python traceback under construction.
#[derive(Debug, Default)]
pub struct Traceback {
    text: String,
}

impl Traceback {
    pub fn new() -> Self {
        let mut text = String::new();
        text.push_str("Traceback (most recent call last):\n");
        Self { text }
    }

    /// `  File "PATH", line N, in FUNC` and the source line under it.
    pub fn frame(mut self, path: &str, line: u32, func: &str, code: &str) -> Self {
        let path = if path.starts_with('/') || path.ends_with(".pyx") {
            path.to_owned()
        } else {
            format!("{SITE}/{path}")
        };
        let _ = writeln!(self.text, "  File \"{path}\", line {line}, in {func}");
        if !code.is_empty() {
            let _ = writeln!(self.text, "    {code}");
        }
        self
    }

    /// The frames from the `vllm` console script down to the API server's `run_server`.
    pub fn cli(self) -> Self {
        self.frame("/usr/local/bin/vllm", 10, "<module>", "sys.exit(main())")
            .frame(
                "vllm/entrypoints/cli/main.py",
                75,
                "main",
                "args.dispatch_function(args)",
            )
            .frame(
                "vllm/entrypoints/cli/serve.py",
                120,
                "cmd",
                "uvloop.run(run_server(args))",
            )
            .frame("uvloop/__init__.py", 96, "run", "return __asyncio.run(")
            .frame(
                "/usr/lib/python3.12/asyncio/runners.py",
                195,
                "run",
                "return runner.run(main)",
            )
            .frame(
                "/usr/lib/python3.12/asyncio/runners.py",
                118,
                "run",
                "return self._loop.run_until_complete(task)",
            )
            .frame("uvloop/loop.pyx", 1518, "uvloop.loop.Loop.run_until_complete", "")
    }

    /// The last line(s): `Type: message`; closes the traceback.
    pub fn error(mut self, exception: &str) -> String {
        self.text.push_str(exception);
        if !exception.ends_with('\n') {
            self.text.push('\n');
        }
        self.text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracebacks_end_with_the_exception() {
        let text = port_in_use();
        assert!(text.starts_with("Traceback (most recent call last):\n"));
        assert!(text.ends_with("\nOSError: [Errno 98] Address already in use\n"));
        assert!(text.contains(&format!(
            "  File \"{SITE}/vllm/entrypoints/launchers/api_server/entry.py\""
        )));
        let text = engine_core_init_failed(-9);
        assert!(text.ends_with("Failed core proc(s): {'EngineCore': -9}\n"), "{text}");
    }

    #[test]
    fn model_not_found_chains_the_hub_error() {
        let text = model_not_found("nope/nope", false);
        assert_eq!(text.matches("Traceback (most recent call last):").count(), 3);
        assert!(text.contains("huggingface_hub.errors.RepositoryNotFoundError: 401 Client Error."));
        assert!(text.contains("\nValueError: Invalid repository ID or local directory specified: 'nope/nope'.\n"));
        let text = model_not_found("m", true);
        assert!(text.contains("OSError: We couldn't connect to 'https://huggingface.co'"));
    }
}
