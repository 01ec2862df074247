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

// ---- `pipegate shell`: the local terminal ----

/// Whether stdin is a console (then `pipegate shell` would be interactive).
pub(crate) fn stdin_is_terminal() -> bool {
    std::io::IsTerminal::is_terminal(&std::io::stdin())
}

/// Not read on Windows yet (interactive sessions are not supported there).
pub(crate) fn terminal_size() -> Option<pipegate_agent::protocol::TerminalSize> {
    None
}

/// Raw console mode is not implemented on Windows yet.
#[derive(Debug)]
pub(crate) struct RawMode(());

impl RawMode {
    /// Always fails on Windows for now.
    ///
    /// # Errors
    ///
    /// Always `Unsupported`.
    pub(crate) fn enable() -> std::io::Result<RawMode> {
        Err(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            "interactive `pipegate shell` is not supported on Windows yet \
             (the console's raw mode is not implemented); pipe input to run a command \
             without a terminal, e.g. `echo ls | pipegate shell EP -- sh`",
        ))
    }
}

/// Windows has no SIGWINCH; no resize events.
#[derive(Debug)]
pub(crate) struct ResizeEvents(());

impl ResizeEvents {
    pub(crate) fn new() -> ResizeEvents {
        ResizeEvents(())
    }

    /// Never completes.
    pub(crate) async fn recv(&mut self) {
        std::future::pending::<()>().await;
    }
}

/// Completes on Ctrl-C (as SIGINT, 2) or Ctrl-Break (as SIGTERM, 15).
pub(crate) async fn terminate_signal() -> u8 {
    let Ok(mut brk) = tokio::signal::windows::ctrl_break() else {
        let _ = tokio::signal::ctrl_c().await;
        return 2;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => 2,
        _ = brk.recv() => 15,
    }
}
