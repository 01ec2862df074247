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
}

impl PeerInfo {
    pub(crate) fn new(endpoint: &Endpoint) -> PeerInfo {
        PeerInfo {
            mode: endpoint.mode(),
            endpoint: endpoint.clone(),
            pid: None,
            uid: None,
            addr: None,
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
}

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
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.inner {
            Inner::Tcp(s) => s.is_write_vectored(),
            Inner::Local(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().inner {
            Inner::Tcp(s) => Pin::new(s).poll_flush(cx),
            Inner::Local(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().inner {
            Inner::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Inner::Local(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}
