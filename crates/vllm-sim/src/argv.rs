//! From raw argv to [`SimArgs`] the way vLLM's argparse front end behaves: `_` and `-` are
//! interchangeable in flag names, `-tp`/`-dp` are long-ish short flags, errors are argparse-shaped
//! (usage line, `vllm serve: error: ...`, exit code 2), and the explicitly given flags can be
//! dumped as vLLM's `non-default args: {...}` Python dict.

use std::ffi::OsString;

use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches, error::ContextKind, error::ErrorKind};

use super::cli::{Cli, Command, SimArgs, VLLM_VERSION};
use super::engine_core::{self, CoreArgs};
use super::pyfmt::{py_float, py_str};

const SERVE_USAGE: &str = "usage: vllm serve [model_tag] [options]";

/// What the command line asks for.
#[derive(Debug)]
pub enum Invocation {
    /// `serve`: the parsed flags and the `non-default args` dict as vLLM logs it.
    Serve { args: Box<SimArgs>, non_default: String },
    /// `--version`: print [`VLLM_VERSION`] and exit 0.
    Version,
    /// The hidden `__engine-core` subcommand: run as the EngineCore child of a simulator.
    EngineCore(CoreArgs),
}

/// A command line that does not start the server: print `message`, exit with `exit_code`.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct CliError {
    pub message: String,
    pub exit_code: u8,
    /// Help goes to stdout, errors to stderr.
    pub to_stdout: bool,
}

/// Parse a full argv (program name first).
pub fn parse_argv<I, T>(argv: I) -> Result<Invocation, CliError>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString>,
{
    let argv: Vec<OsString> = argv.into_iter().map(Into::into).collect();
    if argv.get(1).is_some_and(|a| a == engine_core::SUBCOMMAND) {
        return engine_core::parse_args(&argv[2..])
            .map(Invocation::EngineCore)
            .map_err(|err| CliError {
                message: format!("vllm-sim {}: {err}", engine_core::SUBCOMMAND),
                exit_code: 2,
                to_stdout: false,
            });
    }
    let argv = normalize_argv(argv.into_iter());
    let command = Cli::command();
    let matches = command.clone().try_get_matches_from(&argv).map_err(argparse_error)?;
    let cli = Cli::from_arg_matches(&matches).map_err(argparse_error)?;
    if cli.version {
        return Ok(Invocation::Version);
    }
    match cli.command {
        Some(Command::Serve(args)) => {
            let serve_matches = matches.subcommand_matches("serve");
            let non_default = serve_matches
                .map(|m| non_default_args(&command, m))
                .unwrap_or_else(|| "{}".to_owned());
            Ok(Invocation::Serve { args, non_default })
        }
        None => Err(CliError {
            message: "usage: vllm [-h] [-v] {serve} ...\nvllm: error: the following arguments are required: subparser"
                .to_owned(),
            exit_code: 2,
            to_stdout: false,
        }),
    }
}

/// The version string `vllm --version` prints.
pub fn version_line() -> &'static str {
    VLLM_VERSION
}

/// `--max_model_len=5` → `--max-model-len=5`; `-tp 2` → `--tensor-parallel-size 2`.
pub fn normalize_argv(argv: impl Iterator<Item = OsString>) -> Vec<OsString> {
    let mut out = Vec::new();
    let mut literal = false;
    for arg in argv {
        let Some(text) = arg.to_str() else {
            out.push(arg);
            continue;
        };
        if literal || !text.starts_with('-') {
            out.push(arg);
            continue;
        }
        if text == "--" {
            literal = true;
            out.push(arg);
            continue;
        }
        let (name, value) = match text.split_once('=') {
            Some((name, value)) => (name, Some(value)),
            None => (text, None),
        };
        let name = match name {
            "-tp" => "--tensor-parallel-size".to_owned(),
            "-dp" => "--data-parallel-size".to_owned(),
            n if n.starts_with("--") => format!("--{}", n[2..].replace('_', "-")),
            n => n.to_owned(),
        };
        out.push(match value {
            Some(value) => OsString::from(format!("{name}={value}")),
            None => OsString::from(name),
        });
    }
    out
}

fn argparse_error(err: clap::Error) -> CliError {
    match err.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => CliError {
            message: err.render().to_string(),
            exit_code: 0,
            to_stdout: true,
        },
        ErrorKind::UnknownArgument => {
            let arg = err
                .get(ContextKind::InvalidArg)
                .map(ToString::to_string)
                .unwrap_or_default();
            CliError {
                message: format!("{SERVE_USAGE}\nvllm serve: error: unrecognized arguments: {arg}"),
                exit_code: 2,
                to_stdout: false,
            }
        }
        _ => {
            let rendered = err.render().to_string();
            let first = rendered.lines().next().unwrap_or_default();
            let reason = first.strip_prefix("error: ").unwrap_or(first);
            CliError {
                message: format!("{SERVE_USAGE}\nvllm serve: error: {reason}"),
                exit_code: 2,
                to_stdout: false,
            }
        }
    }
}

/// The flags given on the command line as a Python dict literal, in command order.
fn non_default_args(command: &clap::Command, matches: &ArgMatches) -> String {
    let Some(serve) = command.find_subcommand("serve") else {
        return "{}".to_owned();
    };
    let mut entries = Vec::new();
    for arg in serve.get_arguments() {
        let id = arg.get_id().as_str();
        if matches.value_source(id) != Some(ValueSource::CommandLine) {
            continue;
        }
        if !arg.get_action().takes_values() {
            let (key, value) = flag_entry(id);
            entries.push(format!("'{key}': {value}"));
            continue;
        }
        let Some(raw) = matches.get_raw(id) else {
            continue;
        };
        let values: Vec<String> = raw.map(|v| py_value(&v.to_string_lossy())).collect();
        let multiple = arg.get_num_args().is_some_and(|n| n.max_values() > 1);
        let rendered = if multiple {
            format!("[{}]", values.join(", "))
        } else {
            values.into_iter().next().unwrap_or_else(|| "None".to_owned())
        };
        entries.push(format!("'{id}': {rendered}"));
        if id == "model_tag" {
            entries.push(format!("'model': {rendered}"));
        }
    }
    format!("{{{}}}", entries.join(", "))
}

/// `disable_prefix_caching` → `('enable_prefix_caching', 'False')`.
fn flag_entry(id: &str) -> (String, &'static str) {
    if let Some(rest) = id.strip_prefix("disable_") {
        if rest == "log_stats" || rest.starts_with("uvicorn") || rest.starts_with("fastapi") {
            return (id.to_owned(), "True");
        }
        return (format!("enable_{rest}"), "False");
    }
    if let Some(rest) = id.strip_prefix("no_") {
        return (rest.to_owned(), "False");
    }
    (id.to_owned(), "True")
}

/// Python `repr` of a command-line value: ints and floats bare, everything else quoted.
fn py_value(raw: &str) -> String {
    if raw.parse::<i64>().is_ok() {
        return raw.to_owned();
    }
    if let Ok(f) = raw.parse::<f64>()
        && f.is_finite()
        && raw.chars().any(|c| c.is_ascii_digit())
    {
        return py_float(f);
    }
    py_str(raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serve(args: &[&str]) -> (SimArgs, String) {
        let argv = ["vllm-sim", "serve"].iter().chain(args.iter()).copied();
        match parse_argv(argv) {
            Ok(Invocation::Serve { args, non_default }) => (*args, non_default),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn underscores_equals_and_short_tp_are_normalised() {
        let (args, _) = serve(&["m", "--max_model_len=1K", "-tp", "2", "--max-num-seqs=3"]);
        assert_eq!(args.max_model_len.as_deref(), Some("1K"));
        assert_eq!(args.tensor_parallel_size, 2);
        assert_eq!(args.max_num_seqs, 3);
        assert_eq!(args.model_tag.as_deref(), Some("m"));
    }

    #[test]
    fn enable_disable_pairs_last_one_wins() {
        let (args, nd) = serve(&["m", "--enable-prefix-caching", "--disable-prefix-caching"]);
        assert!(args.disable_prefix_caching && !args.enable_prefix_caching);
        assert!(nd.contains("'enable_prefix_caching': False"), "{nd}");
        let (args, _) = serve(&["m", "--no-enable-prefix-caching", "--enable_prefix_caching"]);
        assert!(!args.disable_prefix_caching);
    }

    #[test]
    fn non_default_args_is_a_python_dict() {
        let (_, nd) = serve(&["Qwen/Qwen3-0.6B", "--port", "0", "--served-model-name", "a", "b"]);
        assert_eq!(
            nd,
            "{'model_tag': 'Qwen/Qwen3-0.6B', 'model': 'Qwen/Qwen3-0.6B', 'port': 0, 'served_model_name': ['a', 'b']}"
        );
    }

    #[test]
    fn unknown_flag_is_argparse_error_with_exit_2() {
        let err = parse_argv(["vllm-sim", "serve", "m", "--bogus-flag"]).unwrap_err();
        assert_eq!(err.exit_code, 2);
        assert!(err.message.ends_with("error: unrecognized arguments: --bogus-flag"));
        assert!(err.message.starts_with("usage: vllm serve"));
    }

    #[test]
    fn version_flag() {
        assert!(matches!(parse_argv(["vllm-sim", "--version"]), Ok(Invocation::Version)));
    }
}
