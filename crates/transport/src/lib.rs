//! Secure listeners and connectors for Windows named pipes, Unix domain sockets and
//! loopback TCP, behind one [`Endpoint`] type.
//!
//! # Brief overview
//!
//! * [`Endpoint`] parses and prints every spelling of an address (`npipe://NAME`,
//!   `\\.\pipe\NAME`, `unix:///path`, `/path`, `tcp://host:port`, `host:port`).
//! * [`Listener::bind`] binds one with secure defaults (user-only pipe DACL on every
//!   instance, 0600 sockets in private directories, loopback-only TCP) and
//!   [`Listener::accept`] yields [`Stream`]s that carry their [`PeerInfo`].
//! * [`connect`] dials any endpoint, retrying busy named pipes until a deadline; a
//!   [`Dialer`] dials some other way (through a tunnel, as `pipegate-mux` does), and
//!   [`Stream::tunneled`] presents such a stream as a [`Stream`].
//! * [`relay`] copies bytes both ways between two streams, forwarding half-close where
//!   the transport has it.
//! * [`hyper::HyperConnector`] lets `hyper_util`'s pooled client dial all three.
//!
//! Named pipes exist only on Windows and Unix sockets only on Unix (in this crate):
//! endpoints of either kind parse everywhere, and binding or dialing one where the OS
//! lacks it fails with [`ErrorKind::Unsupported`].
//!
//! # Examples
//!
//! An echo round trip over loopback TCP:
//!
//! ```
//! use pipegate_transport::{connect, ConnectOptions, Endpoint, ListenOptions, Listener};
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//!
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut listener = Listener::bind(&Endpoint::parse("127.0.0.1:0")?, &ListenOptions::new()).await?;
//! let endpoint = listener.local_endpoint().clone();
//! tokio::spawn(async move {
//!     let mut conn = listener.accept().await?;
//!     let mut buf = [0; 5];
//!     conn.read_exact(&mut buf).await?;
//!     conn.write_all(&buf).await?;
//!     Ok::<_, std::io::Error>(())
//! });
//! let mut stream = connect(&endpoint, &ConnectOptions::new()).await?;
//! stream.write_all(b"hello").await?;
//! let mut back = [0; 5];
//! stream.read_exact(&mut back).await?;
//! assert_eq!(&back, b"hello");
//! # Ok(()) }
//! ```
//!
//! `examples/echo.rs` serves an echo on any endpoint given on the command line.
#![warn(missing_docs)]
#![doc(test(attr(deny(warnings))))]

mod connect;
mod endpoint;
mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod hyper;
mod listener;
pub mod relay;
mod stream;
mod sys;

pub use connect::{connect, ConnectOptions, Dialer, Dialing};
pub use endpoint::{Endpoint, Mode, ParseError, Rule, ACCEPTED_FORMS, MAX_PIPE_NAME_LEN};
pub use error::{Error, ErrorKind, Result};
pub use listener::{ListenOptions, Listener};
pub use stream::{PeerInfo, Stream, Tunnel};

/// The identity a listener's peer check compares peers with, by default: the effective
/// uid in decimal on Unix, the user's SID (`S-1-5-21-…`, from the process token's
/// `TokenUser`, not its owner) on Windows.
///
/// ```
/// let me = pipegate_transport::current_user_id()?;
/// assert!(!me.is_empty());
/// # Ok::<(), std::io::Error>(())
/// ```
///
/// # Errors
///
/// The OS error if the process token cannot be read (Windows).
pub fn current_user_id() -> std::io::Result<String> {
    sys::current_user_id()
}

/// The process tree of a child program, to end it whole: the child and whatever it
/// started.
///
/// On Unix, the process group the child leads: start it in a group of its own
/// (`Command::process_group(0)`, or `setsid`). On Windows, a Job object with
/// `JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE` the child joins when the tree is made (std cannot
/// start a process inside a job, so a process the child starts in that first instant
/// escapes); what it starts later joins too, and dropping the tree (or this process
/// ending, however hard) kills them all.
///
/// ```no_run
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> std::io::Result<()> {
/// let mut cmd = tokio::process::Command::new("worker");
/// // On Unix the tree is the child's process group: give it one of its own
/// // (`cmd.process_group(0)`). On Windows it is a Job object.
/// let child = cmd.spawn()?;
/// let tree = pipegate_transport::ProcessTree::new(&child)?;
/// tree.kill();
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct ProcessTree(sys::Tree);

impl ProcessTree {
    /// The tree of `child`, which must not have been waited for yet.
    ///
    /// # Errors
    ///
    /// Windows: the job cannot be made, or `child` cannot join it (it has exited, or it
    /// runs in a job that forbids nested jobs: Windows 7 and older).
    pub fn new(child: &tokio::process::Child) -> std::io::Result<ProcessTree> {
        sys::Tree::new(child).map(ProcessTree)
    }

    /// Kills every process left in the tree.
    pub fn kill(&self) {
        self.0.kill();
    }

    /// Whether no process is left in the tree.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The limit on open files (file descriptors) of this process before and after
/// [`raise_open_files_limit`]; `None` where there is no such limit (Windows) or it is
/// unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenFilesLimit {
    /// The soft limit the process had.
    pub before: Option<u64>,
    /// The soft limit it has now.
    pub after: Option<u64>,
}

/// Raises this process's soft limit on open files to its hard limit, as a server that
/// holds many connections needs (each proxied connection takes two descriptors, and
/// many systems start programs with a soft limit of 1024). Windows has no such limit:
/// nothing changes there.
///
/// Programs started afterwards should get the old limit back (some misbehave with a
/// large one): call [`restore_open_files_limit`] in the child before `exec`.
///
/// ```
/// let limit = pipegate_transport::raise_open_files_limit()?;
/// assert!(limit.after >= limit.before || limit.after.is_none());
/// # Ok::<(), std::io::Error>(())
/// ```
///
/// # Errors
///
/// The OS refused the new limit.
pub fn raise_open_files_limit() -> std::io::Result<OpenFilesLimit> {
    sys::raise_open_files_limit()
}

/// Puts back the open-files limit the process had before [`raise_open_files_limit`]
/// (nothing if it was not raised). Meant for a child between fork and exec
/// (`Command::pre_exec`): it only reads an atomic and makes two system calls, so it is
/// async-signal-safe.
///
/// # Errors
///
/// The OS refused the limit.
pub fn restore_open_files_limit() -> std::io::Result<()> {
    sys::restore_open_files_limit()
}
