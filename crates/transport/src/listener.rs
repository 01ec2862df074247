//! [`Listener`]: bind an [`Endpoint`] with secure defaults and accept [`Stream`]s.

use std::io;
use std::net::SocketAddr;

use tokio::net::TcpListener;

use crate::endpoint::is_loopback_ip;
use crate::error::{Error, ErrorKind, Result};
use crate::stream::{PeerInfo, Stream};
use crate::sys;
use crate::Endpoint;

/// How to bind. The defaults are the secure ones; each field loosens one of them.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct ListenOptions {
    /// Allow a TCP listener on a non-loopback address.
    pub allow_remote: bool,
    /// Replace the named pipe's DACL with this SDDL string (default: a protected DACL
    /// granting only the current user's SID and SYSTEM).
    pub pipe_sddl: Option<String>,
    /// Other user ids whose processes may connect to a Unix socket (default: only ours).
    pub allow_uids: Vec<u32>,
    /// Other user SIDs (`S-1-5-…`) whose processes may connect to a named pipe (default:
    /// only ours).
    pub allow_sids: Vec<String>,
}

impl ListenOptions {
    /// The secure defaults.
    pub fn new() -> ListenOptions {
        ListenOptions::default()
    }

    /// Sets [`allow_remote`](ListenOptions::allow_remote).
    pub fn allow_remote(mut self, allow: bool) -> ListenOptions {
        self.allow_remote = allow;
        self
    }

    /// Sets [`allow_uids`](ListenOptions::allow_uids).
    pub fn allow_uids(mut self, uids: Vec<u32>) -> ListenOptions {
        self.allow_uids = uids;
        self
    }

    /// Sets [`allow_sids`](ListenOptions::allow_sids).
    pub fn allow_sids(mut self, sids: Vec<String>) -> ListenOptions {
        self.allow_sids = sids;
        self
    }

    /// Sets [`pipe_sddl`](ListenOptions::pipe_sddl).
    pub fn pipe_sddl(mut self, sddl: Option<String>) -> ListenOptions {
        self.pipe_sddl = sddl;
        self
    }
}

/// A bound endpoint that accepts connections.
///
/// # Secure defaults
///
/// * **Named pipe** (Windows): every instance gets the same protected DACL (the current
///   user's SID and SYSTEM, or [`ListenOptions::pipe_sddl`]); remote clients are rejected;
///   the first instance is created with `FILE_FLAG_FIRST_PIPE_INSTANCE`, so binding a name
///   someone else holds fails with [`ErrorKind::AddrInUse`]; byte mode, 64 KiB buffers.
///   Several instances wait for clients at all times and a new one is created *before* a
///   connected one is handed out, so a burst of clients never finds the pipe busy because
///   the server was slow to re-arm. If creating instances fails, `accept` returns the error
///   rather than silently stopping.
/// * **Unix socket**: the parent directory is created with mode 0700 if missing; an
///   existing parent that is group- or world-writable, or owned by another user, is
///   refused. The socket gets mode 0600 with no window in which it is more open. An
///   existing socket file is replaced only if nothing answers on it; a live one fails with
///   [`ErrorKind::AddrInUse`]; a file that is not a socket is never deleted. On drop the
///   socket file is removed only if it is still the one this listener created.
/// * **TCP**: loopback addresses only unless [`ListenOptions::allow_remote`].
///
/// # Peer identity
///
/// Behind the file modes and the DACL, every accepted local connection is checked: a Unix
/// socket peer's uid (`SO_PEERCRED` / `getpeereid`) must be ours or in
/// [`ListenOptions::allow_uids`]; a named-pipe client's process (its pid from
/// `GetNamedPipeClientProcessId`, then its token's user SID) must run as our user or a SID in
/// [`ListenOptions::allow_sids`]. A refused peer is logged with its pid and uid/SID and closed
/// before any byte is read; `accept` never returns it. When the identity cannot be
/// determined the connection is refused. (A pid can be reused, so this is a second line
/// behind the permissions, not a replacement for them.)
#[derive(Debug)]
pub struct Listener {
    endpoint: Endpoint,
    inner: Inner,
}

#[derive(Debug)]
enum Inner {
    Tcp(TcpListener),
    Local(sys::LocalListener),
}

impl Listener {
    /// Binds `endpoint`.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::AddrInUse`], [`ErrorKind::PermissionDenied`],
    /// [`ErrorKind::InsecureDirectory`], [`ErrorKind::NotASocket`],
    /// [`ErrorKind::PathTooLong`], [`ErrorKind::NotLoopback`], or
    /// [`ErrorKind::Unsupported`] for a transport this OS lacks.
    pub async fn bind(endpoint: &Endpoint, options: &ListenOptions) -> Result<Listener> {
        match endpoint {
            Endpoint::Tcp { host, port } => {
                let addrs = resolve(endpoint, host, *port).await?;
                if !options.allow_remote {
                    if let Some(remote) = addrs.iter().find(|a| !is_loopback_ip(&a.ip())) {
                        return Err(Error::new(
                            ErrorKind::NotLoopback,
                            format!(
                                "refusing to listen on {endpoint}: {} is not a loopback address, \
                                 and a TCP listener is reachable by anyone who can route to it \
                                 (use 127.0.0.1 or [::1], or pass --allow-remote)",
                                remote.ip()
                            ),
                        )
                        .with_endpoint(endpoint));
                    }
                }
                let mut last = None;
                for addr in addrs {
                    match TcpListener::bind(addr).await {
                        Ok(listener) => {
                            let local =
                                listener.local_addr().map_err(|e| bind_error(endpoint, e))?;
                            return Ok(Listener {
                                endpoint: Endpoint::Tcp {
                                    host: local.ip().to_string(),
                                    port: local.port(),
                                },
                                inner: Inner::Tcp(listener),
                            });
                        }
                        Err(e) => last = Some(e),
                    }
                }
                Err(bind_error(
                    endpoint,
                    last.unwrap_or_else(|| io::Error::other("no address to bind")),
                ))
            }
            _ => {
                let local = sys::LocalListener::bind(endpoint, options)?;
                Ok(Listener {
                    endpoint: endpoint.clone(),
                    inner: Inner::Local(local),
                })
            }
        }
    }

    /// The bound endpoint; for TCP, with the port the OS picked when binding port 0.
    pub fn local_endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// Waits for the next connection.
    ///
    /// # Errors
    ///
    /// An accept error is usually about one connection (`EMFILE`, a client that went
    /// away): log it, back off briefly and call `accept` again.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: if the future is dropped, no connection is lost.
    pub async fn accept(&mut self) -> io::Result<Stream> {
        match &mut self.inner {
            Inner::Tcp(listener) => {
                let (stream, addr) = listener.accept().await?;
                let mut peer = PeerInfo::new(&self.endpoint);
                peer.addr = Some(addr);
                Ok(Stream::tcp(stream, peer))
            }
            Inner::Local(listener) => {
                let (stream, pid, uid) = listener.accept().await?;
                let mut peer = PeerInfo::new(&self.endpoint);
                peer.pid = pid;
                peer.uid = uid;
                Ok(Stream::local(stream, peer))
            }
        }
    }
}

async fn resolve(endpoint: &Endpoint, host: &str, port: u16) -> Result<Vec<SocketAddr>> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| {
            Error::new(
                ErrorKind::Io,
                format!("cannot resolve the host of {endpoint}"),
            )
            .with_endpoint(endpoint)
            .with_source(e)
        })?
        .collect();
    if addrs.is_empty() {
        return Err(Error::new(
            ErrorKind::Io,
            format!("the host of {endpoint} resolves to no address"),
        )
        .with_endpoint(endpoint));
    }
    Ok(addrs)
}

/// Maps a failed bind to an error naming the endpoint.
pub(crate) fn bind_error(endpoint: &Endpoint, err: io::Error) -> Error {
    let (kind, message) = match err.kind() {
        io::ErrorKind::AddrInUse => (
            ErrorKind::AddrInUse,
            format!("{endpoint} is already in use by another process"),
        ),
        io::ErrorKind::PermissionDenied => (
            ErrorKind::PermissionDenied,
            format!("permission denied binding {endpoint}"),
        ),
        _ => (ErrorKind::Io, format!("cannot bind {endpoint}")),
    };
    Error::new(kind, message)
        .with_endpoint(endpoint)
        .with_source(err)
}
