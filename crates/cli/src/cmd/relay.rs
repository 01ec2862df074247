//! `pipegate relay EP`: stdin/stdout ⇄ EP, one process per connection (for `socat
//! EXEC:` and SSH `ProxyCommand`), like npiperelay; with `--via`, through a `pipegate mux`.

use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context as _;
use pipegate_transport::relay::{relay, CloseReason, RelayOptions};
use pipegate_transport::{connect, ConnectOptions, Dialer as _, ErrorKind};

use super::via;
use crate::cli::RelayArgs;

pub(crate) async fn run(args: RelayArgs) -> anyhow::Result<ExitCode> {
    let options = ConnectOptions::new().timeout(args.connect_timeout);
    let deadline = args.wait.map(|wait| Instant::now() + wait);
    let connector = args.via.clone().map(|v| via::connector(v, false));
    if let Some(connector) = &connector {
        via::start(connector).await?;
    }
    let mut upstream = if let Some(connector) = &connector {
        loop {
            match connector.dial(&args.endpoint, &options).await {
                Ok(stream) => break stream,
                // The mux found nothing listening there (yet).
                Err(e)
                    if e.kind() == std::io::ErrorKind::ConnectionRefused
                        && deadline.is_some_and(|d| Instant::now() < d) =>
                {
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                Err(e) => {
                    connector.shutdown().await;
                    return Err(e).context(format!("relay cannot connect through {connector}"));
                }
            }
        }
    } else {
        loop {
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
        }
    };
    let mut stdio = tokio::io::join(tokio::io::stdin(), tokio::io::stdout());
    let policy = RelayOptions {
        end_on_client_eof: args.exit_on_stdin_eof,
        end_on_upstream_eof: !args.keep_open,
    };
    let outcome = relay(&mut stdio, &mut upstream, policy).await;
    drop(upstream);
    if let Some(connector) = connector {
        connector.shutdown().await;
    }
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
