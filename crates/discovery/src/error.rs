//! The discovery error type.

use std::io;
use std::path::{Path, PathBuf};

use crate::Record;

/// A discovery result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong, coarse enough to match on, pick an exit code and a hint for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// No state directory: `$XDG_STATE_HOME` is not absolute and the platform default
    /// (`$HOME`, `%LOCALAPPDATA%`) is not set either.
    NoStateDir,
    /// An instance name outside `[A-Za-z0-9._-]{1,64}` (or starting with `.`).
    InvalidName,
    /// The records directory is owned by someone else, is not a directory, or is a
    /// symbolic link.
    InsecureDirectory,
    /// A symbolic link sits where a record should be; it is never followed or replaced.
    Symlink,
    /// A record that is not valid JSON of the expected shape.
    Corrupt,
    /// An instance with this name answers its health check with its nonce.
    AlreadyRunning,
    /// An instance with this name is alive but fails its health check.
    Unhealthy,
    /// Another process held the instance lock for longer than allowed.
    LockTimeout,
    /// Health check: nothing could be reached at the endpoint.
    Unreachable,
    /// Health check: no complete answer before the deadline.
    TimedOut,
    /// Health check: an answer that is not `204` (or not HTTP at all).
    BadResponse,
    /// Health check: `204`, but `X-Pipegate-Nonce` is missing or different.
    NonceMismatch,
    /// Any other I/O failure; see the source.
    Io,
}

/// A discovery failure: what was being done, to which file or instance, and the cause.
///
/// `Display` describes this layer only; the underlying error, when there is one, is the
/// [`source`](std::error::Error::source).
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Error {
    kind: ErrorKind,
    message: String,
    path: Option<PathBuf>,
    instance: Option<Box<Record>>,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl Error {
    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> Error {
        Error {
            kind,
            message: message.into(),
            path: None,
            instance: None,
            source: None,
        }
    }

    pub(crate) fn with_path(mut self, path: &Path) -> Error {
        self.path = Some(path.to_owned());
        self
    }

    pub(crate) fn with_instance(mut self, record: &Record) -> Error {
        self.instance = Some(Box::new(record.clone()));
        self
    }

    pub(crate) fn with_source(
        mut self,
        source: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> Error {
        self.source = Some(source.into());
        self
    }

    /// An I/O failure on `path` while doing `what` ("cannot read", "cannot create", …).
    pub(crate) fn io(what: &str, path: &Path, err: io::Error) -> Error {
        Error::new(ErrorKind::Io, format!("{what} {}", path.display()))
            .with_path(path)
            .with_source(err)
    }

    /// The coarse kind, for matching, exit codes and hints.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The file or directory this error is about, if any.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// For [`ErrorKind::AlreadyRunning`] and [`ErrorKind::Unhealthy`]: the record of the
    /// instance that is in the way.
    pub fn instance(&self) -> Option<&Record> {
        self.instance.as_deref()
    }
}
