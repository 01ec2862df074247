//! How errors reach the user: the whole chain on one line, then a hint keyed on the
//! error's kind (never on its text).
//!
//! Exit codes: 0 success (including Ctrl-C/SIGTERM), 1 runtime failure, 2 usage error
//! (clap), 3 another instance is already running (or alive and unhealthy) under the same
//! name, 22 `request -f` got a status outside 2xx (returned by that command itself).

use std::process::ExitCode;

use pipegate_transport::{Endpoint, ErrorKind};

/// Exit code: another instance holds the name.
pub(crate) const EXIT_ALREADY_RUNNING: u8 = 3;

/// What writing a command's output to stdout came to: a reader that went away first
/// (`pipegate status | head -1`) is not an error, anything else is.
pub(crate) fn stdout_written(written: std::io::Result<()>) -> anyhow::Result<()> {
    match written {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(anyhow::Error::new(e).context("cannot write to stdout"))
        }
        _ => Ok(()),
    }
}

/// Prints `pipegate: error: …` and a hint; returns exit code 3 when another instance
/// holds the name, else 1.
pub(crate) fn error(err: &anyhow::Error) -> ExitCode {
    eprintln!("pipegate: error: {err:#}");
    if let Some(hint) = hint(err) {
        eprintln!("\nhint: {hint}");
    }
    match discovery_error(err).map(pipegate_discovery::Error::kind) {
        Some(
            pipegate_discovery::ErrorKind::AlreadyRunning
            | pipegate_discovery::ErrorKind::Unhealthy,
        ) => ExitCode::from(EXIT_ALREADY_RUNNING),
        _ => ExitCode::FAILURE,
    }
}

fn discovery_error(err: &anyhow::Error) -> Option<&pipegate_discovery::Error> {
    err.chain()
        .find_map(|cause| cause.downcast_ref::<pipegate_discovery::Error>())
}

fn discovery_hint(err: &pipegate_discovery::Error) -> Option<String> {
    use pipegate_discovery::ErrorKind as K;
    let pid = err.instance().map(|r| r.pid).unwrap_or_default();
    let hint = match err.kind() {
        K::AlreadyRunning => "use the running instance (`pipegate status` shows it), stop it \
            first, or start this one with another --name"
            .to_owned(),
        K::Unhealthy => format!(
            "stop the stuck instance (PID {pid}), or pass --replace to take the name over \
             (its listeners are still not touched while something answers on them)"
        ),
        K::Corrupt => "remove the file named above, or pass --replace to overwrite it".to_owned(),
        K::Symlink => {
            "pipegate never follows links in its records directory; remove the link".to_owned()
        }
        K::InsecureDirectory => "remove the directory named above (pipegate recreates it, 0700) \
            or restore its ownership; `pipegate doctor` checks it"
            .to_owned(),
        K::NoStateDir => {
            "set XDG_STATE_HOME to an absolute path, or pass --no-discovery".to_owned()
        }
        K::LockTimeout => "another pipegate is stuck starting up under this name; check \
            `pipegate status`"
            .to_owned(),
        _ => return None,
    };
    Some(hint)
}

/// A mux error in the chain, also inside an `io::Error` (how a dialer returns it).
fn mux_error(err: &anyhow::Error) -> Option<&pipegate_mux::Error> {
    err.chain().find_map(|cause| {
        cause.downcast_ref::<pipegate_mux::Error>().or_else(|| {
            cause
                .downcast_ref::<std::io::Error>()
                .and_then(std::io::Error::get_ref)
                .and_then(|inner| inner.downcast_ref::<pipegate_mux::Error>())
        })
    })
}

fn mux_hint(err: &pipegate_mux::Error) -> Option<String> {
    use pipegate_mux::ErrorKind as K;
    let hint = match err.kind() {
        K::HelperFailed | K::SessionClosed => "run the command after exec: by hand to see why it \
            fails; it must run `pipegate mux --allow EP` (its stderr tail is in the log)"
            .to_owned(),
        K::Protocol => "the command after exec: (or the --via endpoint) must be a `pipegate \
            mux` of the same protocol version"
            .to_owned(),
        K::InvalidVia => "write --via exec:\"CMD ARGS\" (split like a shell: quote Windows \
            paths with backslashes, or use forward slashes) or --via tcp://HOST:PORT"
            .to_owned(),
        _ => return None,
    };
    Some(hint)
}

fn hint(err: &anyhow::Error) -> Option<String> {
    if let Some(discovery) = discovery_error(err) {
        return discovery_hint(discovery);
    }
    if let Some(mux) = mux_error(err) {
        return mux_hint(mux);
    }
    let transport = err.chain().find_map(|cause| {
        cause
            .downcast_ref::<pipegate_transport::Error>()
            .or_else(|| {
                cause
                    .downcast_ref::<pipegate_proxy::Error>()
                    .and_then(|e| e.transport())
            })
    })?;
    let endpoint = transport.endpoint();
    let hint = match transport.kind() {
        ErrorKind::AddrInUse => "another process is listening there; stop it or choose another endpoint".to_owned(),
        ErrorKind::NotFound => "start the server first (`pipegate serve …`), or check the endpoint for typos".to_owned(),
        ErrorKind::Unsupported => match endpoint {
            Some(Endpoint::NamedPipe(_)) => "named pipes exist only on Windows; on Linux and macOS use unix:///PATH or tcp://127.0.0.1:PORT (from WSL, reach a Windows pipe through a Windows pipegate.exe)".to_owned(),
            _ => "Unix sockets are not supported on this OS; use npipe://NAME or tcp://127.0.0.1:PORT".to_owned(),
        },
        ErrorKind::InsecureDirectory => "use a directory only you can write, such as $XDG_RUNTIME_DIR (/run/user/UID)".to_owned(),
        ErrorKind::NotASocket => "pipegate never deletes files that are not sockets; move the file or pick another path".to_owned(),
        ErrorKind::PathTooLong => "Unix socket paths are limited to about 100 bytes; use a shorter path".to_owned(),
        ErrorKind::NotLoopback => "listen on 127.0.0.1 or [::1], or pass --allow-remote if you really mean to expose it".to_owned(),
        ErrorKind::PipeBusy => "the pipe server is overloaded; raise --connect-timeout or check the server".to_owned(),
        ErrorKind::PermissionDenied => "run as the user who owns the endpoint, or check its permissions".to_owned(),
        ErrorKind::TimedOut => "the peer did not answer in time; check it is healthy or raise --connect-timeout".to_owned(),
        _ => return None,
    };
    Some(hint)
}
