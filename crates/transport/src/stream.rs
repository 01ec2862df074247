//! [`Stream`]: one connected byte stream over any transport, with its peer's identity.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::sys;
use crate::{Endpoint, Mode};

/// Who is on the other end of a [`Stream`], as far as the OS tells.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PeerInfo {
    /// The transport.
    pub mode: Mode,
    /// The local endpoint a listener accepted on, or the endpoint a connector dialed.
    pub endpoint: Endpoint,
    /// The peer's process id, where the OS gives it (Unix sockets on Linux, named pipes).
    pub pid: Option<u32>,
    /// The peer's user id (Unix sockets).
    pub uid: Option<u32>,
    /// The peer's socket address (TCP).
    pub addr: Option<SocketAddr>,
    /// The tunnel the stream travels through, for a [`Stream::tunneled`] stream.
    pub tunnel: Option<Tunnel>,
}

/// What a [`Stream::tunneled`] stream travels through: one stream of a multiplexed
/// session (for telemetry).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Tunnel {
    /// The route, as configured (`exec:pipegate mux …`, `tcp://127.0.0.1:PORT`).
    pub via: String,
    /// Which session of that route: 1 for the first, one more after every restart.
    pub session: u64,
    /// The stream's id within its session.
    pub stream: u64,
    /// Streams open on the session when this one opened, itself included.
    pub open_streams: u64,
}

impl Tunnel {
    /// Describes stream `stream` of session `session` of the route `via`.
    pub fn new(via: impl Into<String>, session: u64, stream: u64, open_streams: u64) -> Tunnel {
        Tunnel {
            via: via.into(),
            session,
            stream,
            open_streams,
        }
    }
}

impl PeerInfo {
    pub(crate) fn new(endpoint: &Endpoint) -> PeerInfo {
        PeerInfo {
            mode: endpoint.mode(),
            endpoint: endpoint.clone(),
            pid: None,
            uid: None,
            addr: None,
            tunnel: None,
        }
    }
}

/// A connected byte stream: accepted by a [`Listener`](crate::Listener) or returned by
/// [`connect`](crate::connect()).
///
/// # Platform-specific behavior
///
/// Named pipes have no half-close: [`AsyncWriteExt::shutdown`](tokio::io::AsyncWriteExt::shutdown)
/// is a no-op on them and the peer sees EOF only when the stream is dropped.
/// [`Stream::supports_half_close`] says which kind this is.
#[derive(Debug)]
pub struct Stream {
    inner: Inner,
    peer: PeerInfo,
}

#[derive(Debug)]
enum Inner {
    Tcp(TcpStream),
    Local(sys::LocalStream),
    Tunneled {
        io: Box<dyn TunnelIo>,
        half_close: bool,
    },
}

/// The byte stream under a [`Stream::tunneled`].
trait TunnelIo: AsyncRead + AsyncWrite + Send + Unpin + std::fmt::Debug {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + std::fmt::Debug> TunnelIo for T {}

impl Stream {
    pub(crate) fn tcp(stream: TcpStream, peer: PeerInfo) -> Stream {
        // Small writes (a keystroke, an HTTP head) must not wait for Nagle.
        let _ = stream.set_nodelay(true);
        Stream {
            inner: Inner::Tcp(stream),
            peer,
        }
    }

    pub(crate) fn local(stream: sys::LocalStream, peer: PeerInfo) -> Stream {
        Stream {
            inner: Inner::Local(stream),
            peer,
        }
    }

    /// A stream to `endpoint` that travels through something else, such as one stream of a
    /// multiplexed session to a helper process that dialed `endpoint`.
    ///
    /// `half_close` says whether the far end forwards a write shutdown as EOF while still
    /// sending (what [`Stream::supports_half_close`] reports), and `tunnel` describes the
    /// route for telemetry ([`PeerInfo::tunnel`]).
    pub fn tunneled<T>(io: T, endpoint: &Endpoint, half_close: bool, tunnel: Tunnel) -> Stream
    where
        T: AsyncRead + AsyncWrite + Send + Unpin + std::fmt::Debug + 'static,
    {
        let mut peer = PeerInfo::new(endpoint);
        peer.tunnel = Some(tunnel);
        Stream {
            inner: Inner::Tunneled {
                io: Box::new(io),
                half_close,
            },
            peer,
        }
    }

    /// The peer's identity.
    pub fn peer(&self) -> &PeerInfo {
        &self.peer
    }

    /// The transport.
    pub fn mode(&self) -> Mode {
        self.peer.mode
    }

    /// Whether shutting down the write side sends an EOF the peer can see while this
    /// side keeps reading (TCP and Unix sockets: yes; named pipes: no).
    pub fn supports_half_close(&self) -> bool {
        match self.inner {
            Inner::Tcp(_) => true,
            Inner::Local(_) => sys::LOCAL_HALF_CLOSE,
            Inner::Tunneled { half_close, .. } => half_close,
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match &mut self.get_mut().inner {
            Inner::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Inner::Local(s) => Pin::new(s).poll_read(cx, buf),
            Inner::Tunneled { io, .. } => Pin::new(io).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().inner {
            Inner::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Inner::Local(s) => Pin::new(s).poll_write(cx, buf),
            Inner::Tunneled { io, .. } => Pin::new(io).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().inner {
            Inner::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Inner::Local(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Inner::Tunneled { io, .. } => Pin::new(io).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.inner {
            Inner::Tcp(s) => s.is_write_vectored(),
            Inner::Local(s) => s.is_write_vectored(),
            Inner::Tunneled { io, .. } => io.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().inner {
            Inner::Tcp(s) => Pin::new(s).poll_flush(cx),
            Inner::Local(s) => Pin::new(s).poll_flush(cx),
            Inner::Tunneled { io, .. } => Pin::new(io).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().inner {
            Inner::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Inner::Local(s) => Pin::new(s).poll_shutdown(cx),
            Inner::Tunneled { io, .. } => Pin::new(io).poll_shutdown(cx),
        }
    }
}
