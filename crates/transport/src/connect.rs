//! [`connect`]: dial any [`Endpoint`]; [`Dialer`]: dial some other way.

use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::time::Duration;

use tokio::net::TcpStream;

use crate::error::{connect_error, Error, ErrorKind, Result};
use crate::stream::{PeerInfo, Stream};
use crate::sys;
use crate::Endpoint;

/// How to dial.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ConnectOptions {
    /// How long connecting may take in total, including waiting for a busy named pipe.
    pub timeout: Duration,
}

impl Default for ConnectOptions {
    fn default() -> ConnectOptions {
        ConnectOptions {
            timeout: Duration::from_secs(5),
        }
    }
}

impl ConnectOptions {
    /// The defaults: a 5 s deadline.
    pub fn new() -> ConnectOptions {
        ConnectOptions::default()
    }

    /// Sets [`timeout`](ConnectOptions::timeout).
    pub fn timeout(mut self, timeout: Duration) -> ConnectOptions {
        self.timeout = timeout;
        self
    }
}

/// Connects to `endpoint`.
///
/// Named pipes are opened with `SECURITY_SQOS_PRESENT | SECURITY_IDENTIFICATION` (a
/// server can identify the client but not impersonate it). When every instance of the
/// pipe is busy (`ERROR_PIPE_BUSY`, 231) the open is retried with short jittered sleeps
/// until the deadline.
///
/// # Errors
///
/// [`ErrorKind::NotFound`] when nothing listens, [`ErrorKind::PermissionDenied`],
/// [`ErrorKind::PipeBusy`] or [`ErrorKind::TimedOut`] at the deadline, or
/// [`ErrorKind::Unsupported`] for a transport this OS lacks.
///
/// # Cancel safety
///
/// Cancel-safe: dropping the future drops any half-made connection.
pub async fn connect(endpoint: &Endpoint, options: &ConnectOptions) -> Result<Stream> {
    let peer = PeerInfo::new(endpoint);
    match endpoint {
        Endpoint::Tcp { host, port } => {
            let dial = TcpStream::connect((host.as_str(), *port));
            match tokio::time::timeout(options.timeout, dial).await {
                Ok(Ok(stream)) => {
                    let mut peer = peer;
                    peer.addr = stream.peer_addr().ok();
                    Ok(Stream::tcp(stream, peer))
                }
                Ok(Err(e)) => Err(connect_error(endpoint, e)),
                Err(_) => Err(timed_out(endpoint, options.timeout)),
            }
        }
        _ => {
            let dial = sys::connect_local(endpoint, options);
            match tokio::time::timeout(options.timeout, dial).await {
                Ok(Ok(stream)) => Ok(Stream::local(stream, peer)),
                Ok(Err(e)) => Err(e),
                Err(_) => Err(timed_out(endpoint, options.timeout)),
            }
        }
    }
}

fn timed_out(endpoint: &Endpoint, timeout: Duration) -> Error {
    Error::new(
        ErrorKind::TimedOut,
        format!("timed out after {timeout:?} connecting to {endpoint}"),
    )
    .with_endpoint(endpoint)
}

/// The future a [`Dialer`] returns.
pub type Dialing<'a> = Pin<Box<dyn Future<Output = io::Result<Stream>> + Send + 'a>>;

/// Opens streams to endpoints some other way than [`connect`]: through a tunnel, such as
/// one multiplexed session to a helper process that dials on this side's behalf.
///
/// A bridge or a [`HyperConnector`](crate::hyper::HyperConnector) given a dialer uses it
/// for every upstream connection. `Display` names the route for telemetry (the `via`
/// field), e.g. `exec:pipegate mux --allow npipe://docker_engine`.
pub trait Dialer: fmt::Debug + fmt::Display + Send + Sync + 'static {
    /// Opens a stream to `endpoint`, within `options.timeout`.
    ///
    /// # Errors
    ///
    /// Whatever stops the stream from opening, as an `io::Error` whose inner error (when
    /// there is one) is the dialer's own typed error.
    fn dial<'a>(&'a self, endpoint: &'a Endpoint, options: &'a ConnectOptions) -> Dialing<'a>;
}
