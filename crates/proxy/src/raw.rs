//! Raw mode: one upstream connection per client, bytes relayed both ways. The upstream
//! is dialed directly, or through the configured [`Dialer`](pipegate_transport::Dialer)
//! (`--via`: one stream of a multiplexed session per connection).

use std::time::Instant;

use pipegate_transport::relay::{relay, CloseReason, RelayOptions, RelayOutcome, Side};
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
    let dialed = match &config.dialer {
        // Through a tunnel (`--via`): its errors come as io::Errors wrapping its own.
        Some(dialer) => dialer.dial(target, &config.connect_options).await,
        None => connect(target, &config.connect_options)
            .await
            .map_err(pipegate_transport::Error::into_io),
    };
    let mut upstream = match dialed {
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
    // Through a tunnel: which stream of which session (the span has `via` itself).
    let tunnel = upstream.peer().tunnel.clone();
    let via_session = tunnel.as_ref().map(|t| t.session);
    let via_stream = tunnel.as_ref().map(|t| t.stream);
    let via_streams = tunnel.as_ref().map(|t| t.open_streams);
    tokio::select! {
        outcome = relay(&mut client, &mut upstream, options) => {
            if let Some(e) = refused_late(&outcome) {
                tracing::warn!(
                    error = %e,
                    close.reason = "upstream_unavailable",
                    duration_ms = started.elapsed().as_millis() as u64,
                    via.session = via_session,
                    via.stream = via_stream,
                    "connection closed: upstream unavailable"
                );
                return;
            }
            let error = match &outcome.reason {
                CloseReason::Error(_, e) => Some(e.to_string()),
                _ => None,
            };
            tracing::info!(
                bytes.client_to_upstream = outcome.client_to_upstream,
                bytes.upstream_to_client = outcome.upstream_to_client,
                duration_ms = started.elapsed().as_millis() as u64,
                close.reason = outcome.reason.label(),
                error,
                via.session = via_session,
                via.stream = via_stream,
                via.streams = via_streams,
                "connection closed"
            );
        }
        _ = abort.cancelled() => {
            tracing::info!(
                duration_ms = started.elapsed().as_millis() as u64,
                close.reason = "shutdown",
                via.session = via_session,
                via.stream = via_stream,
                "connection closed: shutdown grace period over"
            );
        }
    }
}

/// The far side's refusal or failed dial, when a tunnel reported it with the stream's
/// first read (a `--via` mux stream opened without waiting for its answer): the upstream
/// was never there. A connected stream's read never fails with these kinds otherwise.
fn refused_late(outcome: &RelayOutcome) -> Option<&std::io::Error> {
    match &outcome.reason {
        CloseReason::Error(Side::Upstream, e)
            if outcome.upstream_to_client == 0
                && matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::PermissionDenied
                ) =>
        {
            Some(e)
        }
        _ => None,
    }
}
