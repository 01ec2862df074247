//! `pipegate relay EP`: stdin/stdout ⇄ EP, one process per connection (for `socat
//! EXEC:` and SSH `ProxyCommand`), like npiperelay.

use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context as _;
use pipegate_transport::relay::{relay, CloseReason, RelayOptions};
use pipegate_transport::{connect, ConnectOptions, ErrorKind};

use crate::cli::RelayArgs;

pub(crate) async fn run(args: RelayArgs) -> anyhow::Result<ExitCode> {
    let options = ConnectOptions::new().timeout(args.connect_timeout);
    let deadline = args.wait.map(|wait| Instant::now() + wait);
    let mut upstream = loop {
        match connect(&args.endpoint, &options).await {
            Ok(stream) => break stream,
            Err(e)
                if e.kind() == ErrorKind::NotFound
                    && deadline.is_some_and(|d| Instant::now() < d) =>
            {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e).context("relay cannot connect"),
        }
    };
    let mut stdio = tokio::io::join(tokio::io::stdin(), tokio::io::stdout());
    let policy = RelayOptions {
        end_on_client_eof: args.exit_on_stdin_eof,
        end_on_upstream_eof: !args.keep_open,
    };
    let outcome = relay(&mut stdio, &mut upstream, policy).await;
    tracing::debug!(
        bytes.client_to_upstream = outcome.client_to_upstream,
        bytes.upstream_to_client = outcome.upstream_to_client,
        close.reason = outcome.reason.label(),
        "relay ended"
    );
    match outcome.reason {
        CloseReason::Error(side, e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(anyhow::Error::new(e).context(format!(
                "relay to {} failed on the {side} side",
                args.endpoint
            )))
        }
        _ => Ok(ExitCode::SUCCESS),
    }
}
