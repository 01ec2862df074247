//! The proxy error type.

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
    /// Binding a listen endpoint failed.
    #[error(transparent)]
    Listen(#[from] pipegate_transport::Error),
}

impl Error {
    /// The transport error underneath, if any (for hints keyed on its kind).
    pub fn transport(&self) -> Option<&pipegate_transport::Error> {
        match self {
            Error::Listen(e) => Some(e),
            Error::NoListener | Error::RawNeedsUpstream => None,
        }
    }
}
