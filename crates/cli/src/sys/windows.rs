//! Windows: Ctrl-C or Ctrl-Break end `serve`; the default endpoint is `npipe://NAME`.

use pipegate_transport::Endpoint;

/// Completes on the first Ctrl-C or Ctrl-Break.
pub(crate) async fn shutdown_signal() {
    let mut brk = match tokio::signal::windows::ctrl_break() {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for Ctrl-Break; only Ctrl-C will stop");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    let name = tokio::select! {
        _ = tokio::signal::ctrl_c() => "Ctrl-C",
        _ = brk.recv() => "Ctrl-Break",
    };
    tracing::info!(signal = name, "shutting down");
}

/// `npipe://NAME` (the instance name is a valid pipe name by construction).
pub(crate) fn default_endpoint(name: &str) -> Endpoint {
    Endpoint::NamedPipe(name.to_ascii_lowercase())
}
