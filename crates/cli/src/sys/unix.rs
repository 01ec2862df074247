//! Unix: SIGINT/SIGTERM end `serve`; the default endpoint is a user-only socket.

use std::path::PathBuf;

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
    Endpoint::Unix(default_socket_path(name).to_string_lossy().into_owned())
}

/// Where the default Unix socket goes: `$XDG_RUNTIME_DIR/pipegate/NAME.sock` when that
/// is an absolute path, else a 0700 directory under the state dir.
fn default_socket_path(name: &str) -> PathBuf {
    let runtime = std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute());
    let base = runtime.unwrap_or_else(state_dir);
    base.join("pipegate").join(format!("{name}.sock"))
}

/// `$XDG_STATE_HOME` if absolute, else `~/.local/state`.
fn state_dir() -> PathBuf {
    std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
        .unwrap_or_else(std::env::temp_dir)
}
