//! The transport error type.

use std::borrow::Cow;
use std::fmt;
use std::io;

use crate::Endpoint;

/// A transport result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong, coarse enough to match on and to pick a hint for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The endpoint text did not parse.
    InvalidEndpoint,
    /// This OS cannot bind or dial this kind of endpoint (named pipes off Windows).
    Unsupported,
    /// Something else already listens there.
    AddrInUse,
    /// Nothing listens there.
    NotFound,
    /// Every instance of the named pipe stayed busy until the deadline.
    PipeBusy,
    /// The OS refused access.
    PermissionDenied,
    /// A Unix socket path longer than the OS allows.
    PathTooLong,
    /// The operation did not finish before its deadline.
    TimedOut,
    /// A socket directory that other users could write to, or that someone else owns.
    InsecureDirectory,
    /// A non-loopback TCP address without `allow_remote`.
    NotLoopback,
    /// A file that is not a socket sits at the socket path.
    NotASocket,
    /// Any other I/O failure; see the source.
    Io,
}

/// A transport failure: what was being done, to which endpoint, and the OS cause.
///
/// `Display` describes this layer only (and names the endpoint); the OS error, when
/// there is one, is the [`source`](std::error::Error::source), so `raw_os_error()`
/// stays reachable.
#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
    endpoint: Option<Endpoint>,
    message: Cow<'static, str>,
    source: Option<io::Error>,
}

impl Error {
    pub(crate) fn new(kind: ErrorKind, message: impl Into<Cow<'static, str>>) -> Error {
        Error {
            kind,
            endpoint: None,
            message: message.into(),
            source: None,
        }
    }

    pub(crate) fn with_endpoint(mut self, endpoint: &Endpoint) -> Error {
        self.endpoint = Some(endpoint.clone());
        self
    }

    pub(crate) fn with_source(mut self, source: io::Error) -> Error {
        self.source = Some(source);
        self
    }

    /// The coarse kind, for matching and hints.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The endpoint this error is about, if any.
    pub fn endpoint(&self) -> Option<&Endpoint> {
        self.endpoint.as_ref()
    }

    /// The underlying OS error, if any.
    pub fn io_error(&self) -> Option<&io::Error> {
        self.source.as_ref()
    }

    /// Converts into an `io::Error` whose kind follows [`ErrorKind`], keeping this error as
    /// the inner error (for APIs such as hyper's connector that want `io::Error`).
    pub fn into_io(self) -> io::Error {
        let kind = match self.kind {
            ErrorKind::NotFound => io::ErrorKind::NotFound,
            ErrorKind::PermissionDenied | ErrorKind::InsecureDirectory => {
                io::ErrorKind::PermissionDenied
            }
            ErrorKind::AddrInUse => io::ErrorKind::AddrInUse,
            ErrorKind::TimedOut | ErrorKind::PipeBusy => io::ErrorKind::TimedOut,
            ErrorKind::Unsupported => io::ErrorKind::Unsupported,
            ErrorKind::InvalidEndpoint | ErrorKind::PathTooLong | ErrorKind::NotLoopback => {
                io::ErrorKind::InvalidInput
            }
            ErrorKind::NotASocket | ErrorKind::Io => self
                .source
                .as_ref()
                .map(io::Error::kind)
                .unwrap_or(io::ErrorKind::Other),
        };
        io::Error::new(kind, self)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_ref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl From<crate::ParseError> for Error {
    fn from(err: crate::ParseError) -> Error {
        Error::new(ErrorKind::InvalidEndpoint, err.to_string())
    }
}

/// The error for binding or dialing a named pipe on an OS without them (or a Unix socket
/// on one without those).
pub(crate) fn unsupported(endpoint: &Endpoint) -> Error {
    let message = match endpoint {
        Endpoint::NamedPipe(_) => {
            format!("named pipe endpoints are only supported on Windows: {endpoint}")
        }
        _ => format!(
            "{} endpoints are not supported on this OS: {endpoint}",
            endpoint.mode()
        ),
    };
    Error::new(ErrorKind::Unsupported, message).with_endpoint(endpoint)
}

/// Maps a failed dial to an error a user can act on.
pub(crate) fn connect_error(endpoint: &Endpoint, err: io::Error) -> Error {
    match err.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => Error::new(
            ErrorKind::NotFound,
            format!("nothing is listening on {endpoint}"),
        ),
        io::ErrorKind::PermissionDenied => Error::new(
            ErrorKind::PermissionDenied,
            format!(
                "permission denied on {endpoint}{}",
                crate::sys::owner_note(endpoint)
            ),
        ),
        io::ErrorKind::TimedOut => Error::new(
            ErrorKind::TimedOut,
            format!("timed out connecting to {endpoint}"),
        ),
        _ => Error::new(ErrorKind::Io, format!("cannot connect to {endpoint}")),
    }
    .with_endpoint(endpoint)
    .with_source(err)
}
