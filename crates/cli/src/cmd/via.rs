//! `--via` for `serve` and `relay` (not a subcommand): the mux connector, made before the
//! command's bridge or dial, started (its helper checked) once the command is ready, and
//! stopped with it.

use anyhow::Context as _;
use pipegate_mux::{Connector, ConnectorOptions, Via};

/// A connector for `via`; nothing runs yet. `optimistic`: dials hand out a stream without
/// waiting for the mux's answer (for a caller that reports a refusal from the first read).
pub(crate) fn connector(via: Via, optimistic: bool) -> Connector {
    Connector::new(via, ConnectorOptions::new().optimistic_open(optimistic))
}

/// Starts the session and checks the far side is a `pipegate mux`. An `exec:` helper that
/// fails is fatal (its command line is wrong); a `--listen` mux that is not up yet is only
/// a warning, since each connection tries again.
pub(crate) async fn start(connector: &Connector) -> anyhow::Result<()> {
    match connector.start().await {
        Ok(version) => {
            tracing::info!(via = %connector, mux.version = %version, "mux session ready");
            Ok(())
        }
        Err(e) if matches!(connector.via(), Via::Endpoint(_)) => {
            tracing::warn!(
                via = %connector,
                error = %anyhow::Error::new(e),
                "the mux is not reachable yet; every connection will try again"
            );
            Ok(())
        }
        Err(e) => {
            connector.shutdown().await;
            Err(e).with_context(|| format!("cannot start --via {connector}"))
        }
    }
}
