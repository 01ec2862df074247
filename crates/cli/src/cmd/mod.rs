//! One module per subcommand.

mod relay;
mod serve;

use std::process::ExitCode;

use crate::cli::Command;

pub(crate) async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Serve(args) => serve::run(args).await,
        Command::Relay(args) => relay::run(args).await,
    }
}
