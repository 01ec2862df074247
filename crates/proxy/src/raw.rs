//! Raw mode: one upstream connection per client, bytes relayed both ways.

use std::time::Instant;

use pipegate_transport::relay::{relay, RelayOptions};
use pipegate_transport::{connect, Stream};
use tokio_util::sync::CancellationToken;

use crate::config::Config;

/// Forwards one accepted connection until either side ends it or `abort` fires.
pub(crate) async fn forward(mut client: Stream, config: &Config, abort: CancellationToken) {
    let started = Instant::now();
    let Some(target) = config.target.upstream() else {
        // Bridge::bind refuses raw mode without an upstream.
        return;
    };
    let mut upstream = match connect(target, &config.connect_options).await {
        Ok(upstream) => upstream,
        Err(e) => {
            tracing::warn!(
                error = %e,
                close.reason = "upstream_unavailable",
                duration_ms = started.elapsed().as_millis() as u64,
                "connection closed: upstream unavailable"
            );
            return;
        }
    };
    let options =
        RelayOptions::for_streams(client.supports_half_close(), upstream.supports_half_close());
    tokio::select! {
        outcome = relay(&mut client, &mut upstream, options) => {
            let error = match &outcome.reason {
                pipegate_transport::relay::CloseReason::Error(_, e) => Some(e.to_string()),
                _ => None,
            };
            tracing::info!(
                bytes.client_to_upstream = outcome.client_to_upstream,
                bytes.upstream_to_client = outcome.upstream_to_client,
                duration_ms = started.elapsed().as_millis() as u64,
                close.reason = outcome.reason.label(),
                error,
                "connection closed"
            );
        }
        _ = abort.cancelled() => {
            tracing::info!(
                duration_ms = started.elapsed().as_millis() as u64,
                close.reason = "shutdown",
                "connection closed: shutdown grace period over"
            );
        }
    }
}
