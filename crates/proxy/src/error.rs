//! The proxy error type.

use std::path::PathBuf;

/// A proxy result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a bridge could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No listen endpoint was given.
    #[error("no endpoint to listen on")]
    NoListener,
    /// Raw mode needs an upstream endpoint to relay to.
    #[error("raw mode needs an upstream endpoint")]
    RawNeedsUpstream,
    /// Token, `Host` and `Origin` checks need HTTP; raw mode relays bytes it cannot read.
    #[error(
        "raw mode cannot check a bearer token, Host or Origin; guard TCP listeners in http mode"
    )]
    AccessNeedsHttp,
    /// An upstream token is sent as an HTTP header, to an upstream.
    #[error("an upstream token needs http mode and an upstream endpoint (raw mode relays bytes it does not read)")]
    UpstreamTokenNeedsHttp,
    /// The upstream token file could not be read, or holds no usable token.
    #[error("cannot use the upstream token file {}", path.display())]
    UpstreamToken {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Binding a listen endpoint failed.
    #[error(transparent)]
    Listen(#[from] pipegate_transport::Error),
}

impl Error {
    /// The transport error underneath, if any (for hints keyed on its kind).
    pub fn transport(&self) -> Option<&pipegate_transport::Error> {
        match self {
            Error::Listen(e) => Some(e),
            _ => None,
        }
    }
}
