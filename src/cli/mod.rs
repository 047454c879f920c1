//! Command-line definitions (clap derive): every subcommand's arguments, and the one mapping of `up`'s arguments
//! to the library's raw settings. No behaviour; `cmd` runs what these parse to. Every flag of `up` is documented
//! in the README, and its defaults are the library's (`mqtt_llm::config::defaults`).

mod client;
mod up;
#[cfg(test)]
mod up_tests;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use mqtt_llm::config::{DEFAULT_BROKER, DEFAULT_PYTHON};

pub use client::{BenchArgs, ChatArgs};
pub use up::{EngineArg, UpArgs};

/// Serve a local LLM (vLLM) to many devices over MQTT.
#[derive(Debug, Parser)]
#[command(name = "mqtt-llm", version, about, propagate_version = true)]
pub struct Cli {
    /// Log output format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "MQTT_LLM_LOG_FORMAT")]
    pub log_format: LogFormat,
    /// Log filter (tracing-subscriber EnvFilter syntax), e.g. `info,engine=warn`.
    #[arg(long, global = true, default_value = "info", env = "MQTT_LLM_LOG")]
    pub log: String,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Launch (or attach to) the engine and bridge MQTT requests to it until SIGINT/SIGTERM.
    Up(Box<UpArgs>),
    /// Install the pinned vLLM into a virtualenv (what `up` does on first run).
    Setup(SetupArgs),
    /// List the GPUs (NVML): memory, utilization and the processes holding memory.
    Gpus(GpusArgs),
    /// Chat with a running mqtt-llm over MQTT (interactive, or one message per stdin line).
    Chat(ChatArgs),
    /// Load-test a running mqtt-llm over the wire protocol (optionally against the engine directly).
    Bench(Box<BenchArgs>),
}

/// Where the engine is installed, shared by `setup` and `up`.
#[derive(Debug, Clone, Args)]
pub struct InstallArgs {
    /// The virtualenv vLLM is installed into and found in [default: $XDG_DATA_HOME/mqtt-llm/venv, else
    /// ~/.local/share/mqtt-llm/venv].
    #[arg(long, env = "MQTT_LLM_VENV")]
    pub venv: Option<PathBuf>,
    /// The Python that creates the virtualenv (`PYTHON -m venv`).
    #[arg(long, env = "MQTT_LLM_PYTHON", default_value = DEFAULT_PYTHON)]
    pub python: PathBuf,
    /// A pip requirements file to install instead of the built-in pins (python-req.txt of this release).
    #[arg(long, env = "MQTT_LLM_REQUIREMENTS")]
    pub requirements: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct SetupArgs {
    /// The engine to install: `vllm` (GPUs) or `llamacpp` (CPU: xllamacpp and the built-in SmolLM2 model, into
    /// their own virtualenv; --requirements does not apply).
    #[arg(long, value_enum, default_value_t = up::EngineArg::Vllm)]
    pub engine: up::EngineArg,
    #[command(flatten)]
    pub install: InstallArgs,
    /// `--engine llamacpp`: the virtualenv to install into (`--venv` given on the command line is taken too)
    /// [default: $XDG_DATA_HOME/mqtt-llm/llamacpp-venv, else ~/.local/share/mqtt-llm/llamacpp-venv].
    #[arg(long, env = "MQTT_LLM_LLAMACPP_VENV", value_name = "DIR")]
    pub llamacpp_venv: Option<PathBuf>,
    /// Reinstall even when the virtualenv already has the pinned engine (and model).
    #[arg(long)]
    pub force: bool,
}

impl Cli {
    /// Parse the command line ([`Self::check`] included); on an error print it and exit (2).
    pub fn parse_checked() -> Self {
        Self::parse().check().unwrap_or_else(|e| e.exit())
    }

    /// What clap cannot say: `up --engine vllm` (the default) needs `--model` unless `--engine-url`.
    pub fn check(self) -> Result<Self, clap::Error> {
        if let Command::Up(up) = &self.command
            && up.model_missing()
        {
            let mut cmd = <Self as clap::CommandFactory>::command();
            cmd.build();
            let mut up = match cmd.find_subcommand("up") {
                Some(up) => up.clone(),
                None => cmd,
            };
            return Err(up.error(
                clap::error::ErrorKind::MissingRequiredArgument,
                "the following required arguments were not provided:\n  --model <MODEL>\n\n\
                 (--model is required unless --engine-url attaches or --engine llamacpp uses its built-in model)",
            ));
        }
        Ok(self)
    }
}

#[derive(Debug, Clone, Default, Args)]
pub struct GpusArgs {
    /// Print one JSON object (`gpus`, `host`) instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// The broker a command connects to: `up`, `chat` and `bench` share these flags.
#[derive(Debug, Clone, Args)]
pub struct BrokerArgs {
    /// Broker URL: mqtt://host[:port] or mqtts://host[:port] (TLS, default port 8883) [chat, bench default:
    /// mqtt://127.0.0.1:1883; up default: none, its embedded broker].
    #[arg(id = "broker", long = "broker", value_name = "BROKER", env = "MQTT_LLM_BROKER")]
    pub url: Option<String>,
    /// PEM file of the CA certificate(s) to trust for `mqtts://` (default: the system's CA certificates).
    #[arg(id = "mqtt_ca", long = "mqtt-ca", value_name = "MQTT_CA", env = "MQTT_LLM_MQTT_CA")]
    pub ca: Option<PathBuf>,
    /// PEM file of the client certificate (chain) presented to an `mqtts://` broker that requires one (mutual
    /// TLS); needs --mqtt-client-key.
    #[arg(
        id = "mqtt_client_cert",
        long = "mqtt-client-cert",
        value_name = "FILE",
        env = "MQTT_LLM_MQTT_CLIENT_CERT",
        requires = "mqtt_client_key"
    )]
    pub client_cert: Option<PathBuf>,
    /// PEM file of the private key of --mqtt-client-cert.
    #[arg(
        id = "mqtt_client_key",
        long = "mqtt-client-key",
        value_name = "FILE",
        env = "MQTT_LLM_MQTT_CLIENT_KEY",
        requires = "mqtt_client_cert"
    )]
    pub client_key: Option<PathBuf>,
}

impl BrokerArgs {
    /// A protocol client's settings for this broker (`prefix-<8 hex>` as client id).
    pub fn client_config(&self, prefix: &str) -> mqtt_llm_client::ClientConfig {
        mqtt_llm_client::ClientConfig::new(&self.url(), prefix)
            .with_ca_file(self.ca.clone())
            .with_client_cert(self.client_cert_files())
    }

    /// The broker a client connects to: `--broker`, else the local one (`up`'s embedded broker by default).
    pub fn url(&self) -> String {
        self.url.clone().unwrap_or_else(|| DEFAULT_BROKER.to_owned())
    }

    /// The client certificate and key, when both are given (clap makes each require the other).
    pub fn client_cert_files(&self) -> Option<mqtt_llm_client::tls::ClientCertFiles> {
        Some(mqtt_llm_client::tls::ClientCertFiles {
            cert: self.client_cert.clone()?,
            key: self.client_key.clone()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[test]
    fn setup_parses() {
        let cli = Cli::try_parse_from(["mqtt-llm", "setup", "--venv", "/tmp/v", "--force"]).unwrap();
        let Command::Setup(s) = cli.command else {
            panic!("not setup")
        };
        assert!(s.force);
        assert_eq!(s.install.venv.as_deref(), Some(std::path::Path::new("/tmp/v")));
        assert_eq!(s.install.python, std::path::Path::new("python3"));
        assert_eq!(s.engine, EngineArg::Vllm);
        let cli =
            Cli::try_parse_from(["mqtt-llm", "setup", "--engine", "llamacpp", "--llamacpp-venv", "/tmp/l"]).unwrap();
        let Command::Setup(s) = cli.command else {
            panic!("not setup")
        };
        assert_eq!(s.engine, EngineArg::Llamacpp);
        assert_eq!(s.llamacpp_venv.as_deref(), Some(std::path::Path::new("/tmp/l")));
    }

    #[test]
    fn up_needs_a_model_under_vllm_only() {
        let parse = |args: &[&str]| Cli::try_parse_from(args.iter().copied()).unwrap().check();
        let err = parse(&["mqtt-llm", "up"]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::MissingRequiredArgument);
        assert!(err.to_string().contains("--model <MODEL>"), "{err}");
        assert!(parse(&["mqtt-llm", "up", "--engine", "vllm"]).is_err());
        assert!(parse(&["mqtt-llm", "up", "--model", "m"]).is_ok());
        assert!(parse(&["mqtt-llm", "up", "--engine-url", "http://127.0.0.1:1"]).is_ok());
        assert!(parse(&["mqtt-llm", "up", "--engine", "llamacpp"]).is_ok());
    }
}
