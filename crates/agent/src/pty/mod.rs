//! Starting a session's program, on a pseudo-terminal or on pipes: the platform layer.
//!
//! Everything OS-specific about sessions lives in `unix.rs` and `windows.rs`; this module
//! names what both provide:
//!
//! * [`spawn`] starts a [`Spec`] and returns a [`Process`]: the child, its output
//!   streams, its input ([`Stdin`]) and a [`Control`] for resize and signals.
//! * [`find_program`], [`login_shell`] and [`home_dir`] implement the environment and
//!   `PATH` policy documented on [`CreateSession`](crate::protocol::CreateSession).
//! * [`exit_info`] turns an exit status into [`ExitInfo`], keeping the signal.
//!
//! # Platform-specific behavior
//!
//! * Unix: a TTY session's program is a session leader with the pseudo-terminal as its
//!   controlling terminal (`setsid` + `TIOCSCTTY`); resize is `TIOCSWINSZ`; signals go
//!   to the terminal's foreground process group (`TIOCSIG` for SIGINT, SIGQUIT and
//!   SIGTSTP on Linux, `kill(-tcgetpgrp)` otherwise). Without a TTY the program leads
//!   a session of its own with no controlling terminal (`setsid`), on pipes.
//! * Windows: TTY sessions are not supported yet (they need ConPTY); sessions without a
//!   TTY use pipes, and only SIGTERM and SIGKILL (which end the program and what it
//!   started: its Job object) can be delivered.

#[cfg(unix)]
#[path = "unix.rs"]
mod imp;

#[cfg(windows)]
#[path = "windows.rs"]
mod imp;

use std::ffi::OsString;
use std::io;
use std::path::PathBuf;

use tokio::io::AsyncRead;

use crate::protocol::{Signal, TerminalSize};

pub(crate) use imp::{exit_info, find_program, home_dir, login_shell, spawn, wait, Control, Stdin};

/// A boxed output stream of the program. Reads end with EOF (or an error, such as EIO
/// from a pseudo-terminal whose last writer closed it), both meaning "no more output".
pub(crate) type Reader = Box<dyn AsyncRead + Send + Unpin>;

/// What to start.
#[derive(Debug, Clone)]
pub(crate) struct Spec {
    /// The resolved program path.
    pub(crate) program: PathBuf,
    /// `argv[0]` as the program sees it.
    pub(crate) arg0: String,
    /// `argv[1..]`.
    pub(crate) args: Vec<String>,
    /// The complete environment.
    pub(crate) env: Vec<(OsString, OsString)>,
    /// The working directory.
    pub(crate) cwd: PathBuf,
    /// `Some(size)`: on a pseudo-terminal of this size; `None`: on pipes.
    pub(crate) tty: Option<TerminalSize>,
}

/// A started program.
pub(crate) struct Process {
    pub(crate) pid: u32,
    pub(crate) child: tokio::process::Child,
    /// The terminal's output, or the stdout pipe.
    pub(crate) stdout: Reader,
    /// The stderr pipe (sessions without a TTY).
    pub(crate) stderr: Option<Reader>,
    pub(crate) stdin: Stdin,
    pub(crate) control: Control,
}

/// Why a program could not be started.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SpawnError {
    /// This platform cannot run such a session.
    #[cfg_attr(unix, allow(dead_code))] // Windows: terminal sessions
    #[error("{0}")]
    Unsupported(&'static str),
    /// The OS refused.
    #[error("cannot start the program")]
    Io(#[from] io::Error),
}

/// Why a resize or signal was not delivered.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ControlError {
    /// Resize of a session without a terminal.
    #[error("the session has no terminal (it was created with tty: false)")]
    NoTerminal,
    /// The program (and its terminal) are gone.
    #[error("the session's program has exited")]
    Exited,
    /// This platform cannot deliver this signal.
    #[cfg_attr(unix, allow(dead_code))] // Windows: most signals
    #[error("{0} cannot be delivered on this platform")]
    Unsupported(Signal),
    /// The OS refused.
    #[error("the OS refused")]
    Io(#[from] io::Error),
}
