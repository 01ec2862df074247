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

/// Raises the open-files limit of a server (`serve`, `mux`) to the most it may have, and
/// warns when that still leaves fewer descriptors than `connections` proxied
/// connections take (two each, plus some for listeners, logs and the runtime).
fn raise_open_files_limit(connections: Option<usize>) {
    let limit = match pipegate_transport::raise_open_files_limit() {
        Ok(limit) => limit,
        Err(e) => {
            tracing::warn!(error = %e, "cannot raise the open-files limit");
            return;
        }
    };
    if limit.after != limit.before {
        tracing::debug!(
            before = limit.before,
            after = limit.after,
            "raised the open-files limit"
        );
    }
    let (Some(after), Some(connections)) = (limit.after, connections) else {
        return;
    };
    let needed = u64::try_from(connections)
        .unwrap_or(u64::MAX)
        .saturating_mul(2)
        .saturating_add(64);
    if after < needed {
        tracing::warn!(
            open_files_limit = after,
            max_connections = connections,
            "the open-files limit allows only about {} connections, fewer than \
             --max-connections; raise the hard limit (`ulimit -Hn`, `LimitNOFILE=` for a \
             systemd service) or lower --max-connections",
            after.saturating_sub(64) / 2
        );
    }
}
