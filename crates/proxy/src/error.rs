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
    /// Binding a listen endpoint failed.
    #[error(transparent)]
    Listen(#[from] pipegate_transport::Error),
}

impl Error {
    /// The transport error underneath, if any (for hints keyed on its kind).
    pub fn transport(&self) -> Option<&pipegate_transport::Error> {
        match self {
            Error::Listen(e) => Some(e),
            Error::NoListener => None,
        }
    }
}
