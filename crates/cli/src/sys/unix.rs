//! Unix: SIGINT, SIGTERM and SIGHUP end `serve`; the default endpoint is a user-only
//! socket.

use std::path::PathBuf;

use pipegate_transport::Endpoint;
use tokio::signal::unix::{signal, Signal, SignalKind};

/// Completes on the first SIGINT or SIGTERM, or SIGHUP: the terminal `serve` ran in went
/// away, and it shuts down as cleanly as for the others (sessions ended, record
/// removed). SIGHUP that was ignored when pipegate started (`nohup pipegate serve`) stays
/// ignored.
pub(crate) async fn shutdown_signal() {
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C will stop");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    let mut hangup = match hangup_ignored() {
        true => None,
        false => signal(SignalKind::hangup()).ok(),
    };
    let name = tokio::select! {
        _ = tokio::signal::ctrl_c() => "SIGINT",
        _ = term.recv() => "SIGTERM",
        _ = recv(hangup.as_mut()) => "SIGHUP",
    };
    tracing::info!(signal = name, "shutting down");
}

/// The next delivery of `signal`; never, without one.
async fn recv(signal: Option<&mut Signal>) {
    match signal {
        Some(signal) => {
            signal.recv().await;
        }
        None => std::future::pending().await,
    }
}

/// Whether SIGHUP is ignored (inherited from `nohup`). A handler would undo that, so
/// none is installed then; tokio cannot say, so `sigaction` is asked (rustix has no
/// `sigaction` for programs).
#[allow(unsafe_code)]
fn hangup_ignored() -> bool {
    // SAFETY: a query: no new action is given, and `old` is plain data the call fills in.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        libc::sigaction(libc::SIGHUP, std::ptr::null(), &mut old) == 0
            && old.sa_sigaction == libc::SIG_IGN
    }
}

/// `unix://$XDG_RUNTIME_DIR/pipegate/NAME.sock` (or under the state dir).
pub(crate) fn default_endpoint(name: &str) -> Endpoint {
    Endpoint::Unix(default_socket_path(name).to_string_lossy().into_owned())
}

/// Where the default Unix socket goes: `$XDG_RUNTIME_DIR/pipegate/NAME.sock` when that
/// is an absolute path, else a 0700 directory under discovery's state dir (the same
/// place instance records live), else the temp dir.
fn default_socket_path(name: &str) -> PathBuf {
    let runtime = std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute());
    let base = runtime
        .or_else(|| pipegate_discovery::state_dir().ok())
        .unwrap_or_else(std::env::temp_dir);
    base.join("pipegate").join(format!("{name}.sock"))
}

// ---- `pipegate shell`: the local terminal ----

/// Whether stdin is a terminal (then `pipegate shell` is interactive).
pub(crate) fn stdin_is_terminal() -> bool {
    std::io::IsTerminal::is_terminal(&std::io::stdin())
}

/// The terminal's size in cells (from stdin), if it is a terminal with a size.
pub(crate) fn terminal_size() -> Option<pipegate_agent::protocol::TerminalSize> {
    use std::os::fd::AsFd as _;
    let stdin = std::io::stdin();
    let ws = rustix::termios::tcgetwinsize(stdin.as_fd()).ok()?;
    (ws.ws_col > 0 && ws.ws_row > 0).then(|| {
        pipegate_agent::protocol::TerminalSize::new(u32::from(ws.ws_col), u32::from(ws.ws_row))
    })
}

/// The terminal settings to restore, shared with the panic hook.
static SAVED_TERMIOS: std::sync::Mutex<Option<rustix::termios::Termios>> =
    std::sync::Mutex::new(None);

fn restore_terminal() {
    use std::os::fd::AsFd as _;
    let saved = SAVED_TERMIOS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take();
    if let Some(termios) = saved {
        let stdin = std::io::stdin();
        let _ = rustix::termios::tcsetattr(
            stdin.as_fd(),
            rustix::termios::OptionalActions::Now,
            &termios,
        );
    }
}

/// The local terminal in raw mode (no echo, no line editing, no signals from keys, no
/// output processing) until dropped. A panic restores it too (a hook runs before the
/// panic message is printed); terminating signals are handled by `pipegate shell`,
/// which drops this before it exits. Only SIGKILL can leave the terminal raw (`reset`
/// repairs it).
#[derive(Debug)]
pub(crate) struct RawMode(());

impl RawMode {
    /// Saves the terminal settings of stdin and switches it to raw mode.
    ///
    /// # Errors
    ///
    /// stdin is not a terminal, or the settings cannot be read or changed.
    pub(crate) fn enable() -> std::io::Result<RawMode> {
        use std::os::fd::AsFd as _;
        static HOOK: std::sync::Once = std::sync::Once::new();
        let stdin = std::io::stdin();
        let saved = rustix::termios::tcgetattr(stdin.as_fd())?;
        let mut raw = saved.clone();
        raw.make_raw();
        *SAVED_TERMIOS.lock().unwrap_or_else(|p| p.into_inner()) = Some(saved);
        HOOK.call_once(|| {
            let previous = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                restore_terminal();
                previous(info);
            }));
        });
        if let Err(e) =
            rustix::termios::tcsetattr(stdin.as_fd(), rustix::termios::OptionalActions::Now, &raw)
        {
            restore_terminal();
            return Err(e.into());
        }
        Ok(RawMode(()))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        restore_terminal();
    }
}

/// What `pipegate shell` reads for the program's input: stdin, as it is.
pub(crate) fn stdin_reader() -> Box<dyn std::io::Read + Send> {
    Box::new(std::io::stdin())
}

/// stdout (or stderr) for the session's output: bytes pass as they are (the terminal
/// decodes them).
pub(crate) fn output_writer(stderr: bool) -> Box<dyn std::io::Write + Send> {
    if stderr {
        Box::new(std::io::stderr())
    } else {
        Box::new(std::io::stdout())
    }
}

/// SIGWINCH, as a stream of "the terminal was resized" events.
#[derive(Debug)]
pub(crate) struct ResizeEvents(Option<tokio::signal::unix::Signal>);

impl ResizeEvents {
    pub(crate) fn new() -> ResizeEvents {
        ResizeEvents(signal(SignalKind::window_change()).ok())
    }

    /// Completes at the next resize (never, if SIGWINCH cannot be watched).
    pub(crate) async fn recv(&mut self) {
        match &mut self.0 {
            Some(sig) => {
                sig.recv().await;
            }
            None => std::future::pending().await,
        }
    }
}

/// Ctrl-C as an event: never on Unix (in raw mode the key is a byte of input; a SIGINT
/// comes from `kill` and is a [`terminate_signal`]).
#[derive(Debug)]
pub(crate) struct Interrupts(());

impl Interrupts {
    pub(crate) fn new(_interactive: bool) -> Interrupts {
        Interrupts(())
    }

    /// Never completes.
    pub(crate) async fn recv(&mut self) {
        std::future::pending::<()>().await;
    }
}

/// Completes with the signal's number on the first SIGTERM, SIGHUP, SIGINT or SIGQUIT
/// (`interactive` makes no difference on Unix).
pub(crate) async fn terminate_signal(_interactive: bool) -> u8 {
    use rustix::process::Signal;
    async fn next(stream: &mut Option<tokio::signal::unix::Signal>, number: Signal) -> u8 {
        match stream {
            Some(stream) => {
                stream.recv().await;
                u8::try_from(number.as_raw()).unwrap_or(u8::MAX)
            }
            None => std::future::pending().await,
        }
    }
    let mut term = signal(SignalKind::terminate()).ok();
    let mut hup = signal(SignalKind::hangup()).ok();
    let mut int = signal(SignalKind::interrupt()).ok();
    let mut quit = signal(SignalKind::quit()).ok();
    tokio::select! {
        n = next(&mut term, Signal::TERM) => n,
        n = next(&mut hup, Signal::HUP) => n,
        n = next(&mut int, Signal::INT) => n,
        n = next(&mut quit, Signal::QUIT) => n,
    }
}
