//! One module per subcommand; [`output`] is the only place that prints for humans.

pub mod bench;
pub mod chat;
mod direct;
pub mod gpus;
pub mod output;
pub mod setup;
pub mod setup_llamacpp;
mod systemd;
pub mod up;
