//! One module per subcommand.

mod access;
mod doctor;
mod instance;
mod mux;
mod relay;
mod request;
mod serve;
mod shell;
mod status;
mod via;

use std::process::ExitCode;

use crate::cli::Command;

pub(crate) async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Serve(args) => serve::run(args).await,
        Command::Relay(args) => relay::run(args).await,
        Command::Mux(args) => mux::run(args).await,
        Command::Shell(args) => shell::run(args).await,
        Command::Status(args) => status::run(args).await,
        Command::Request(args) => request::run(args).await,
        Command::Doctor(args) => doctor::run(args).await,
    }
}
