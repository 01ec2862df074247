//! The mux error type.

use std::borrow::Cow;
use std::fmt;
use std::io;

/// A mux result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong, coarse enough to match on and to pick a hint for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A `--via` value that is neither `exec:CMD` nor an endpoint.
    InvalidVia,
    /// The far side's allow-list does not contain the endpoint.
    NotAllowed,
    /// The far side could not dial the endpoint.
    Unreachable,
    /// The peer does not speak the pipegate mux protocol (or a different version).
    Protocol,
    /// The helper process could not be started, or exited.
    HelperFailed,
    /// The multiplexed session ended (or is shutting down) with the stream in flight.
    SessionClosed,
    /// Opening a stream did not finish before its deadline.
    TimedOut,
    /// The session has as many open streams as it allows.
    TooManyStreams,
    /// Any other I/O failure; see the source.
    Io,
}

/// A mux failure: what was being done, and the cause.
///
/// `Display` describes this layer only; the cause, when there is one, is the
/// [`source`](std::error::Error::source). Messages a peer sent (a refusal, the reason a
/// dial failed there) are part of the message: they are this layer's news.
#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
    message: Cow<'static, str>,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl Error {
    pub(crate) fn new(kind: ErrorKind, message: impl Into<Cow<'static, str>>) -> Error {
        Error {
            kind,
            message: message.into(),
            source: None,
        }
    }

    pub(crate) fn with_source(
        mut self,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Error {
        self.source = Some(source.into());
        self
    }

    /// The coarse kind, for matching and hints.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// Converts into an `io::Error` whose kind follows [`ErrorKind`], keeping this error as
    /// the inner error (for byte-stream APIs such as a hyper connector).
    pub fn into_io(self) -> io::Error {
        let kind = match self.kind {
            ErrorKind::NotAllowed => io::ErrorKind::PermissionDenied,
            ErrorKind::Unreachable => io::ErrorKind::ConnectionRefused,
            ErrorKind::TimedOut => io::ErrorKind::TimedOut,
            ErrorKind::InvalidVia => io::ErrorKind::InvalidInput,
            ErrorKind::Protocol => io::ErrorKind::InvalidData,
            ErrorKind::HelperFailed | ErrorKind::SessionClosed => io::ErrorKind::ConnectionAborted,
            ErrorKind::TooManyStreams | ErrorKind::Io => io::ErrorKind::Other,
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
            .map(|e| e.as_ref() as &(dyn std::error::Error + 'static))
    }
}

/// `err` and its causes on one line, `: `-separated (for messages sent to a peer, which
/// cannot walk a chain).
pub(crate) fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut cause = err.source();
    while let Some(e) = cause {
        let text = e.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = e.source();
    }
    out
}
