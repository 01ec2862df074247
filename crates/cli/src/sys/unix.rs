//! Unix: SIGINT/SIGTERM end `serve`; the default endpoint is a user-only socket.

use pipegate_transport::Endpoint;
use tokio::signal::unix::{signal, SignalKind};

/// Completes on the first SIGINT or SIGTERM.
pub(crate) async fn shutdown_signal() {
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C will stop");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    let name = tokio::select! {
        _ = tokio::signal::ctrl_c() => "SIGINT",
        _ = term.recv() => "SIGTERM",
    };
    tracing::info!(signal = name, "shutting down");
}

/// `unix://$XDG_RUNTIME_DIR/pipegate/NAME.sock` (or under the state dir).
pub(crate) fn default_endpoint(name: &str) -> Endpoint {
    Endpoint::Unix(
        crate::cli::default_socket_path(name)
            .to_string_lossy()
            .into_owned(),
    )
}
