//! [`Server`]: the far side, what `pipegate mux` runs.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pipegate_transport::relay::{relay, CloseReason, RelayOptions};
use pipegate_transport::{connect, ConnectOptions, Endpoint, Listener};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;

use crate::error::{chain, Error, ErrorKind, Result};
use crate::protocol::{self, Answer, ReadError, Request, Status};
use crate::session::{self, StreamIo};

/// How long a new stream may take to send its header.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a closing session may take to say goodbye, and its streams to stop.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// What a [`Server`] allows and how it dials.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ServerConfig {
    /// The endpoints streams may ask for, compared in canonical form
    /// ([`Endpoint`]'s equality). Empty (the default) allows nothing.
    pub allow: Vec<Endpoint>,
    /// How endpoints are dialed. A stream's header may ask for a shorter deadline, never a
    /// longer one.
    pub connect_options: ConnectOptions,
}

impl ServerConfig {
    /// Allows exactly `allow`; dials with the default 5 s deadline.
    pub fn new(allow: Vec<Endpoint>) -> ServerConfig {
        ServerConfig {
            allow,
            connect_options: ConnectOptions::new(),
        }
    }

    /// Sets [`connect_options`](ServerConfig::connect_options).
    pub fn connect_options(mut self, options: ConnectOptions) -> ServerConfig {
        self.connect_options = options;
        self
    }
}

/// What one finished session did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SessionSummary {
    /// Streams opened (hellos included).
    pub streams: u64,
    /// Streams refused: not allowed, unreachable or malformed.
    pub refused: u64,
    /// Bytes from the client side to upstreams.
    pub bytes_to_upstream: u64,
    /// Bytes from upstreams to the client side.
    pub bytes_from_upstream: u64,
}

#[derive(Debug, Default)]
struct Counters {
    streams: AtomicU64,
    refused: AtomicU64,
    to_upstream: AtomicU64,
    from_upstream: AtomicU64,
}

/// Serves multiplexed sessions: every stream names an endpoint; allowed ones are dialed
/// and relayed, the rest refused with a reason the client logs.
///
/// Each stream is logged once when it ends (endpoint, bytes each way, duration, close
/// reason); refusals at warn level.
#[derive(Debug, Clone)]
pub struct Server {
    config: Arc<ServerConfig>,
}

impl Server {
    /// A server with `config`.
    pub fn new(config: ServerConfig) -> Server {
        Server {
            config: Arc::new(config),
        }
    }

    /// Serves one session over `io` (stdin/stdout, an accepted connection) until the
    /// client closes it or `shutdown` completes (then the session is closed); streams still
    /// open then are ended.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Protocol`] when the peer does not speak yamux (or breaks it), or
    /// [`ErrorKind::Io`] when the byte stream fails. A client that closes the session,
    /// or simply its end of `io`, is a clean end.
    pub async fn serve<T>(
        &self,
        io: T,
        shutdown: impl Future<Output = ()>,
    ) -> Result<SessionSummary>
    where
        T: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let conn = session::connection(Box::new(io), yamux::Mode::Server);
        let close = CancellationToken::new();
        let abort = CancellationToken::new();
        let tracker = TaskTracker::new();
        let counters = Arc::new(Counters::default());
        let inbound = {
            let config = Arc::clone(&self.config);
            let tracker = tracker.clone();
            let abort = abort.clone();
            let counters = Arc::clone(&counters);
            move |stream: yamux::Stream| {
                counters.streams.fetch_add(1, Ordering::Relaxed);
                let io = StreamIo::new(stream);
                let span = tracing::info_span!("stream", mux.stream = io.id());
                tracker.spawn(
                    handle(
                        io,
                        Arc::clone(&config),
                        abort.clone(),
                        Arc::clone(&counters),
                    )
                    .instrument(span),
                );
            }
        };
        let drive = session::drive(conn, None, inbound, close.clone());
        tokio::pin!(drive);
        let result = tokio::select! {
            result = &mut drive => result,
            () = shutdown => {
                close.cancel();
                tokio::time::timeout(CLOSE_GRACE, &mut drive).await.unwrap_or(Ok(()))
            }
        };
        // The session is gone: so are its streams, whatever their upstreams are doing.
        abort.cancel();
        tracker.close();
        let _ = tokio::time::timeout(CLOSE_GRACE, tracker.wait()).await;
        let summary = SessionSummary {
            streams: counters.streams.load(Ordering::Relaxed),
            refused: counters.refused.load(Ordering::Relaxed),
            bytes_to_upstream: counters.to_upstream.load(Ordering::Relaxed),
            bytes_from_upstream: counters.from_upstream.load(Ordering::Relaxed),
        };
        match result {
            Ok(()) | Err(yamux::ConnectionError::Closed) => Ok(summary),
            Err(yamux::ConnectionError::Io(e)) => Err(Error::new(
                ErrorKind::Io,
                "the mux session's byte stream failed",
            )
            .with_source(e)),
            Err(e) => Err(Error::new(
                ErrorKind::Protocol,
                "the peer broke the mux protocol (is it `pipegate serve --via`?)",
            )
            .with_source(e)),
        }
    }

    /// Accepts connections on `listener` and serves a session on each until `shutdown`
    /// completes; then closes them all. Each session is logged when it ends.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future ends every session at once, without a goodbye.
    pub async fn serve_listener(&self, mut listener: Listener, shutdown: impl Future<Output = ()>) {
        let stop = CancellationToken::new();
        // A JoinSet, not a tracker: its sessions end with this future.
        let mut sessions = tokio::task::JoinSet::new();
        let local = listener.local_endpoint().clone();
        tokio::pin!(shutdown);
        let mut id = 0u64;
        loop {
            let stream = tokio::select! {
                () = &mut shutdown => break,
                Some(_) = sessions.join_next() => continue,
                accepted = listener.accept() => match accepted {
                    Ok(stream) => stream,
                    Err(e) => {
                        tracing::warn!(transport.endpoint = %local, error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            id += 1;
            let peer = stream.peer().clone();
            let span = tracing::info_span!(
                "session",
                id,
                transport.mode = %peer.mode,
                transport.endpoint = %local,
                peer.pid = peer.pid,
                peer.uid = peer.uid,
                peer.addr = peer.addr.map(tracing::field::display),
            );
            let server = self.clone();
            let stop = stop.clone();
            sessions.spawn(
                async move {
                    let started = Instant::now();
                    match server.serve(stream, stop.cancelled_owned()).await {
                        Ok(summary) => tracing::info!(
                            streams = summary.streams,
                            refused = summary.refused,
                            bytes.to_upstream = summary.bytes_to_upstream,
                            bytes.from_upstream = summary.bytes_from_upstream,
                            duration_ms = started.elapsed().as_millis() as u64,
                            "mux session closed"
                        ),
                        Err(e) => tracing::warn!(
                            error = %chain(&e),
                            duration_ms = started.elapsed().as_millis() as u64,
                            "mux session failed"
                        ),
                    }
                }
                .instrument(span),
            );
        }
        drop(listener);
        stop.cancel();
        let _ = tokio::time::timeout(CLOSE_GRACE * 2, async {
            while sessions.join_next().await.is_some() {}
        })
        .await;
    }
}

/// The refusal for an endpoint that is not on the allow-list.
fn not_allowed(endpoint: &Endpoint, allow: &[Endpoint]) -> String {
    if allow.is_empty() {
        format!(
            "{endpoint} is not allowed (this `pipegate mux` allows no endpoint): start \
             `pipegate mux` with --allow {endpoint}"
        )
    } else {
        format!("{endpoint} is not allowed: start `pipegate mux` with --allow {endpoint}")
    }
}

/// One stream: header, verdict, dial, relay.
async fn handle(
    mut io: StreamIo,
    config: Arc<ServerConfig>,
    abort: CancellationToken,
    counters: Arc<Counters>,
) {
    let started = Instant::now();
    let refuse = |status: Status, message: String| Answer {
        status,
        half_close: false,
        message,
    };
    let request = tokio::select! {
        request = tokio::time::timeout(HEADER_TIMEOUT, protocol::read_request(&mut io)) => request,
        () = abort.cancelled() => return,
    };
    let (endpoint_text, timeout) = match request {
        Ok(Ok(Request::Hello)) => {
            let answer = Answer {
                status: Status::Ok,
                half_close: false,
                message: crate::version(),
            };
            let _ = protocol::write_answer(&mut io, &answer).await;
            let _ = tokio::io::AsyncWriteExt::shutdown(&mut io).await;
            tracing::debug!("hello answered");
            return;
        }
        Ok(Ok(Request::Open { endpoint, timeout })) => (endpoint, timeout),
        Ok(Err(ReadError::Version(v))) => {
            let message = format!(
                "mux protocol version {v} is not supported (this is {})",
                crate::version()
            );
            counters.refused.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(error = %message, "stream refused");
            let _ = protocol::write_answer(&mut io, &refuse(Status::BadRequest, message)).await;
            return;
        }
        Ok(Err(ReadError::Malformed(what))) => {
            counters.refused.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(error = what, "stream refused: malformed header");
            let answer = refuse(
                Status::BadRequest,
                format!("malformed stream header: {what}"),
            );
            let _ = protocol::write_answer(&mut io, &answer).await;
            return;
        }
        Ok(Err(ReadError::Io(e))) => {
            tracing::debug!(error = %e, "stream ended before its header");
            return;
        }
        Err(_) => {
            tracing::debug!("stream sent no header in time");
            return;
        }
    };
    let endpoint = match Endpoint::parse(&endpoint_text) {
        Ok(endpoint) => endpoint,
        Err(e) => {
            counters.refused.fetch_add(1, Ordering::Relaxed);
            let message = format!("{e}");
            tracing::warn!(upstream.endpoint = %endpoint_text, error = %message, "stream refused");
            let _ = protocol::write_answer(&mut io, &refuse(Status::BadRequest, message)).await;
            return;
        }
    };
    if !config.allow.contains(&endpoint) {
        counters.refused.fetch_add(1, Ordering::Relaxed);
        let message = not_allowed(&endpoint, &config.allow);
        tracing::warn!(upstream.endpoint = %endpoint, error = %message, "stream refused");
        let _ = protocol::write_answer(&mut io, &refuse(Status::NotAllowed, message)).await;
        return;
    }
    let mut options = config.connect_options.clone();
    if let Some(asked) = timeout {
        options.timeout = options.timeout.min(asked);
    }
    let dialed = tokio::select! {
        dialed = connect(&endpoint, &options) => dialed,
        () = abort.cancelled() => return,
    };
    let mut upstream = match dialed {
        Ok(upstream) => upstream,
        Err(e) => {
            counters.refused.fetch_add(1, Ordering::Relaxed);
            let message = chain(&e);
            tracing::warn!(
                upstream.endpoint = %endpoint,
                error = %message,
                close.reason = "upstream_unavailable",
                "stream refused: upstream unavailable"
            );
            let _ = protocol::write_answer(&mut io, &refuse(Status::Unreachable, message)).await;
            return;
        }
    };
    let half_close = upstream.supports_half_close();
    let ok = Answer {
        status: Status::Ok,
        half_close,
        message: String::new(),
    };
    if let Err(e) = protocol::write_answer(&mut io, &ok).await {
        tracing::debug!(error = %e, "stream ended before its answer");
        return;
    }
    // The mux stream forwards half-close; the upstream's own kind decides the policy.
    let policy = RelayOptions::for_streams(true, half_close);
    tokio::select! {
        outcome = relay(&mut io, &mut upstream, policy) => {
            counters.to_upstream.fetch_add(outcome.client_to_upstream, Ordering::Relaxed);
            counters.from_upstream.fetch_add(outcome.upstream_to_client, Ordering::Relaxed);
            let error = match &outcome.reason {
                CloseReason::Error(_, e) => Some(e.to_string()),
                _ => None,
            };
            tracing::info!(
                upstream.endpoint = %endpoint,
                bytes.to_upstream = outcome.client_to_upstream,
                bytes.from_upstream = outcome.upstream_to_client,
                duration_ms = started.elapsed().as_millis() as u64,
                close.reason = outcome.reason.label(),
                error,
                "stream closed"
            );
        }
        () = abort.cancelled() => {
            tracing::info!(
                upstream.endpoint = %endpoint,
                duration_ms = started.elapsed().as_millis() as u64,
                close.reason = "session_closed",
                "stream closed: the mux session ended"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn refusals_name_the_flag_to_add() {
        let ep = Endpoint::parse("npipe://x").unwrap();
        assert_eq!(
            not_allowed(&ep, &[Endpoint::parse("npipe://y").unwrap()]),
            "npipe://x is not allowed: start `pipegate mux` with --allow npipe://x"
        );
        let none = not_allowed(&ep, &[]);
        assert!(none.contains("allows no endpoint"), "{none}");
        assert!(none.ends_with("--allow npipe://x"), "{none}");
    }
}
