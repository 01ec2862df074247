//! One yamux session: the task that drives it, the bookkeeping of a client's session, and
//! the byte streams opened on it.

use std::future::{poll_fn, Future as _};
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use tokio::io::{AsyncRead, AsyncWrite, BufStream, ReadBuf};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
use tokio_util::compat::{Compat, FuturesAsyncReadCompatExt as _, TokioAsyncReadCompatExt as _};
use tokio_util::sync::CancellationToken;

use crate::error::{Error, ErrorKind, Result};
use crate::protocol;

/// Most streams yamux keeps per session. The default 1 GiB connection receive window is
/// exactly 256 KiB (the initial per-stream window) times this.
pub(crate) const MAX_STREAMS: usize = 4096;

/// Streams a client keeps open at once: half of [`MAX_STREAMS`], so streams that were
/// dropped but not yet collected by the driver never push a session over yamux's limit
/// (which ends the whole session, not just the stream).
pub(crate) const MAX_OPEN_STREAMS: usize = MAX_STREAMS / 2;

/// Buffer each way on the wire: a yamux frame (12-byte header + up to 16 KiB) goes out in
/// one write.
const WIRE_BUFFER: usize = 64 * 1024;

/// Most bytes of an optimistic stream's first write sent with its header: within yamux's
/// 16 KiB frames, so header and data always share the first one.
const FIRST_FRAME: usize = 8 * 1024;

/// Anything a session can run over: a child's stdio, stdin/stdout, a socket.
pub(crate) trait WireIo: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> WireIo for T {}

/// The socket type yamux sees.
pub(crate) type Wire = Compat<BufStream<Box<dyn WireIo>>>;

/// Where a new outbound stream is delivered.
pub(crate) type OpenReply = oneshot::Sender<Result<yamux::Stream, yamux::ConnectionError>>;

/// A yamux connection over `io` with pipegate's limits.
pub(crate) fn connection(io: Box<dyn WireIo>, mode: yamux::Mode) -> yamux::Connection<Wire> {
    let mut config = yamux::Config::default();
    config.set_max_num_streams(MAX_STREAMS);
    let wire = BufStream::with_capacity(WIRE_BUFFER, WIRE_BUFFER, io).compat();
    yamux::Connection::new(wire, config, mode)
}

/// Drives `conn` until the peer closes it, it fails, or `close` fires (then closes it
/// gracefully): opens an outbound stream for each request, hands inbound streams to
/// `inbound`. Returns `Ok` for a clean end.
pub(crate) async fn drive(
    mut conn: yamux::Connection<Wire>,
    mut requests: Option<mpsc::Receiver<OpenReply>>,
    mut inbound: impl FnMut(yamux::Stream),
    close: CancellationToken,
) -> Result<(), yamux::ConnectionError> {
    let closed = close.cancelled();
    tokio::pin!(closed);
    let mut closing = false;
    let mut pending: Option<OpenReply> = None;
    poll_fn(|cx| {
        if !closing && closed.as_mut().poll(cx).is_ready() {
            closing = true;
        }
        if closing {
            // Requests still queued fail with their sender dropped.
            pending = None;
            if let Some(rx) = requests.as_mut() {
                rx.close();
                while let Poll::Ready(Some(_)) = rx.poll_recv(cx) {}
            }
            return match conn.poll_close(cx) {
                Poll::Ready(Err(yamux::ConnectionError::Closed)) => Poll::Ready(Ok(())),
                other => other,
            };
        }
        // Outbound streams, one request at a time.
        if let Some(rx) = requests.as_mut() {
            loop {
                if pending.is_none() {
                    match rx.poll_recv(cx) {
                        Poll::Ready(Some(reply)) => pending = Some(reply),
                        Poll::Ready(None) => {
                            // Every handle is gone: nobody can open streams any more.
                            closing = true;
                            cx.waker().wake_by_ref();
                            return Poll::Pending;
                        }
                        Poll::Pending => break,
                    }
                }
                match conn.poll_new_outbound(cx) {
                    Poll::Ready(result) => {
                        let failed = result.is_err();
                        if let Some(reply) = pending.take() {
                            let _ = reply.send(result);
                        }
                        if failed {
                            // The connection is failing; polling it below says how.
                            break;
                        }
                    }
                    // Too many streams await the peer's acknowledgement; woken when one comes.
                    Poll::Pending => break,
                }
            }
        }
        // Everything else: reading frames, writing frames, inbound streams.
        loop {
            match conn.poll_next_inbound(cx) {
                Poll::Ready(Some(Ok(stream))) => inbound(stream),
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(e)),
                Poll::Ready(None) => return Poll::Ready(Ok(())),
                Poll::Pending => return Poll::Pending,
            }
        }
    })
    .await
}

/// How a client session ended.
#[derive(Debug, Clone)]
pub(crate) struct End {
    pub(crate) at: Instant,
    pub(crate) reason: String,
}

/// A client's session: where streams are requested, and what happened on it.
#[derive(Debug)]
pub(crate) struct Session {
    /// 1 for the first session of a connector, one more for each restart.
    pub(crate) generation: u64,
    pub(crate) started: Instant,
    requests: mpsc::Sender<OpenReply>,
    permits: Arc<Semaphore>,
    end: Mutex<Option<End>>,
    ended: CancellationToken,
    /// Fires once the reason is final (say, with the helper's exit status).
    settled: CancellationToken,
    /// The far side answered a stream header (so it speaks the protocol).
    proven: AtomicBool,
    pub(crate) stats: Stats,
}

/// Counters of one session.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub(crate) opened: AtomicU64,
    pub(crate) open: AtomicU64,
    pub(crate) bytes_out: AtomicU64,
    pub(crate) bytes_in: AtomicU64,
}

impl Session {
    /// A session and the receiving end of its open requests (for [`drive`]).
    pub(crate) fn new(generation: u64) -> (Arc<Session>, mpsc::Receiver<OpenReply>) {
        let (tx, rx) = mpsc::channel(64);
        let session = Session {
            generation,
            started: Instant::now(),
            requests: tx,
            permits: Arc::new(Semaphore::new(MAX_OPEN_STREAMS)),
            end: Mutex::new(None),
            ended: CancellationToken::new(),
            settled: CancellationToken::new(),
            proven: AtomicBool::new(false),
            stats: Stats::default(),
        };
        (Arc::new(session), rx)
    }

    fn end_slot(&self) -> std::sync::MutexGuard<'_, Option<End>> {
        self.end.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether streams may still be opened: no end recorded, and the task driving the
    /// connection still takes requests (it stops taking them a moment before the task
    /// that owns it records why it ended).
    pub(crate) fn is_alive(&self) -> bool {
        self.end_slot().is_none() && !self.requests.is_closed()
    }

    pub(crate) fn end(&self) -> Option<End> {
        self.end_slot().clone()
    }

    /// Records why the session ended. A later call refines the reason (say, with the
    /// helper's exit status) and keeps the time of the first.
    pub(crate) fn set_ended(&self, reason: String) {
        {
            let mut end = self.end_slot();
            match end.as_mut() {
                Some(end) => end.reason = reason,
                None => {
                    *end = Some(End {
                        at: Instant::now(),
                        reason,
                    })
                }
            }
        }
        self.ended.cancel();
    }

    /// Records the final reason the session ended.
    pub(crate) fn set_final(&self, reason: String) {
        self.set_ended(reason);
        self.settled.cancel();
    }

    /// Waits up to `limit` for the final reason the session ended (a stream that failed
    /// may have seen the end before the session's task did, and that task learns the
    /// helper's exit status last).
    pub(crate) async fn settle(&self, limit: std::time::Duration) {
        let _ = tokio::time::timeout(limit, self.settled.cancelled()).await;
    }

    pub(crate) fn is_proven(&self) -> bool {
        self.proven.load(Ordering::Relaxed)
    }

    pub(crate) fn set_proven(&self) {
        self.proven.store(true, Ordering::Relaxed);
    }

    /// The error for a stream whose session is gone.
    pub(crate) fn closed_error(&self) -> Error {
        match self.end() {
            Some(end) => Error::new(ErrorKind::SessionClosed, end.reason),
            None => Error::new(ErrorKind::SessionClosed, "the mux session is closing"),
        }
    }

    /// Opens a raw yamux stream, waiting for a free stream slot until `deadline`.
    pub(crate) async fn open_raw(
        self: &Arc<Self>,
        deadline: tokio::time::Instant,
    ) -> Result<(yamux::Stream, OwnedSemaphorePermit)> {
        if !self.is_alive() {
            return Err(self.closed_error());
        }
        let permit = tokio::select! {
            permit = Arc::clone(&self.permits).acquire_owned() => {
                permit.map_err(|_| self.closed_error())?
            }
            _ = self.ended.cancelled() => return Err(self.closed_error()),
            _ = tokio::time::sleep_until(deadline) => {
                return Err(Error::new(
                    ErrorKind::TooManyStreams,
                    format!("all {MAX_OPEN_STREAMS} streams of the mux session stayed in use"),
                ))
            }
        };
        let (tx, rx) = oneshot::channel();
        self.requests
            .send(tx)
            .await
            .map_err(|_| self.closed_error())?;
        let stream = tokio::select! {
            reply = rx => match reply {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => return Err(self.closed_error().with_source(e)),
                Err(_) => return Err(self.closed_error()),
            },
            _ = tokio::time::sleep_until(deadline) => {
                return Err(Error::new(
                    ErrorKind::TimedOut,
                    "timed out opening a stream on the mux session",
                ))
            }
        };
        Ok((stream, permit))
    }
}

/// A yamux stream as a tokio byte stream that tells a reset from an EOF.
///
/// yamux reports a stream reset by the peer, and a session that died under the stream,
/// as a plain EOF; a relay would take that for the far side finishing cleanly. A stream
/// that reaches "closed" without this side having shut its write half was reset (or
/// lost its session): reading it then fails with `ConnectionReset`.
#[derive(Debug)]
pub(crate) struct StreamIo {
    io: Compat<yamux::Stream>,
    shut_down: bool,
}

impl StreamIo {
    pub(crate) fn new(stream: yamux::Stream) -> StreamIo {
        StreamIo {
            io: stream.compat(),
            shut_down: false,
        }
    }

    /// The stream's id within its session.
    pub(crate) fn id(&self) -> u64 {
        u64::from(self.io.get_ref().id().val())
    }

    fn was_reset(&self) -> bool {
        !self.shut_down && self.io.get_ref().is_closed()
    }
}

fn reset_error() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionReset,
        "the mux stream was reset (the far side failed, or the session ended)",
    )
}

impl AsyncRead for StreamIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let result = std::task::ready!(Pin::new(&mut this.io).poll_read(cx, buf));
        if result.is_ok() && buf.filled().len() == before && buf.remaining() > 0 && this.was_reset()
        {
            return Poll::Ready(Err(reset_error()));
        }
        Poll::Ready(result)
    }
}

impl AsyncWrite for StreamIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match std::task::ready!(Pin::new(&mut this.io).poll_write(cx, buf)) {
            Err(_) if this.was_reset() => Poll::Ready(Err(reset_error())),
            other => Poll::Ready(other),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // Set first: once the FIN is queued, the stream may close under us at any moment.
        this.shut_down = true;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

/// An optimistically opened stream's header, until it is sent, and the far side's answer,
/// until it has come.
#[derive(Debug)]
pub(crate) struct Pending {
    /// The encoded request; sent with the first write (or read, flush, shutdown).
    header: Vec<u8>,
    /// How much of `header` is sent.
    sent: usize,
    /// The answer's bytes so far.
    buf: Vec<u8>,
    /// For the error, as `open` words it.
    label: String,
    endpoint: String,
    deadline: Pin<Box<tokio::time::Sleep>>,
}

impl Pending {
    pub(crate) fn new(
        header: Vec<u8>,
        label: String,
        endpoint: String,
        deadline: tokio::time::Instant,
    ) -> Pending {
        Pending {
            header,
            sent: 0,
            buf: Vec::new(),
            label,
            endpoint,
            deadline: Box::pin(tokio::time::sleep_until(deadline)),
        }
    }
}

/// One stream of a client's session, to the endpoint its header named: bytes both ways,
/// half-close forwarded (a write shutdown arrives as EOF on the far side, which keeps
/// sending).
///
/// Reading or writing fails with `ConnectionAborted` (its inner error a
/// [`crate::Error`] of kind [`ErrorKind::SessionClosed`] saying why) once the session is
/// gone, for example when the helper process exited, and with `ConnectionReset` when the
/// far side reset the stream. A stream from
/// [`Connector::open_optimistic`](crate::Connector::open_optimistic) fails its reads with
/// the far side's refusal, if that is its answer.
#[derive(Debug)]
pub struct MuxStream {
    io: StreamIo,
    session: Arc<Session>,
    half_close: bool,
    open_streams: u64,
    /// Optimistic open: the answer not read yet.
    pending: Option<Box<Pending>>,
    /// The answer was a refusal (or never came): every read fails with this.
    refused: Option<(ErrorKind, String)>,
    _permit: OwnedSemaphorePermit,
}

impl MuxStream {
    pub(crate) fn new(
        io: StreamIo,
        session: Arc<Session>,
        half_close: bool,
        permit: OwnedSemaphorePermit,
    ) -> MuxStream {
        session.stats.opened.fetch_add(1, Ordering::Relaxed);
        let open_streams = session.stats.open.fetch_add(1, Ordering::Relaxed) + 1;
        MuxStream {
            io,
            session,
            half_close,
            open_streams,
            pending: None,
            refused: None,
            _permit: permit,
        }
    }

    /// A stream whose header goes out with its first use and whose answer comes with its
    /// first read; `half_close` is the guess reported meanwhile (and after).
    pub(crate) fn optimistic(
        io: StreamIo,
        session: Arc<Session>,
        half_close: bool,
        permit: OwnedSemaphorePermit,
        pending: Pending,
    ) -> MuxStream {
        let mut stream = MuxStream::new(io, session, half_close, permit);
        stream.pending = Some(Box::new(pending));
        stream
    }

    fn refusal(&self) -> Option<io::Error> {
        self.refused
            .as_ref()
            .map(|(kind, message)| Error::new(*kind, message.clone()).into_io())
    }

    fn refuse(&mut self, err: Error) -> io::Error {
        self.pending = None;
        self.refused = Some((err.kind(), err.to_string()));
        err.into_io()
    }

    /// Sends what is left of an optimistic stream's header.
    fn poll_header(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some(pending) = self.pending.as_mut() {
            if pending.sent == pending.header.len() {
                break;
            }
            let n = match std::task::ready!(
                Pin::new(&mut self.io).poll_write(cx, &pending.header[pending.sent..])
            ) {
                Ok(0) => return Poll::Ready(Err(self.fail(io::ErrorKind::WriteZero.into()))),
                Ok(n) => n,
                Err(e) => return Poll::Ready(Err(self.fail(e))),
            };
            pending.sent += n;
        }
        Poll::Ready(Ok(()))
    }

    /// An optimistic stream's first write: the header and the start of `buf` in one
    /// frame. `None` once the header is sent.
    fn poll_write_with_header(
        &mut self,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Option<Poll<io::Result<usize>>> {
        let pending = self.pending.as_mut()?;
        if pending.sent > 0 || buf.is_empty() {
            return None;
        }
        let mut frame = Vec::with_capacity(pending.header.len() + buf.len().min(FIRST_FRAME));
        frame.extend_from_slice(&pending.header);
        frame.extend_from_slice(&buf[..buf.len().min(FIRST_FRAME)]);
        let written = match Pin::new(&mut self.io).poll_write(cx, &frame) {
            Poll::Pending => return Some(Poll::Pending),
            Poll::Ready(Ok(0)) => return Some(Poll::Ready(Err(io::ErrorKind::WriteZero.into()))),
            Poll::Ready(Ok(n)) => n,
            Poll::Ready(Err(e)) => return Some(Poll::Ready(Err(e))),
        };
        pending.sent = written.min(pending.header.len());
        // Only part of the header went (a small window): the rest goes on the next call.
        let data = written.saturating_sub(pending.header.len());
        if data == 0 {
            cx.waker().wake_by_ref();
            return Some(Poll::Pending);
        }
        Some(Poll::Ready(Ok(data)))
    }

    /// Reads the far side's answer, if it is still to come: `Ok` once it said yes, the
    /// refusal (or why no answer came) otherwise.
    fn poll_verdict(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Some(err) = self.refusal() {
            return Poll::Ready(Err(err));
        }
        std::task::ready!(self.poll_header(cx))?;
        loop {
            let Some(pending) = self.pending.as_mut() else {
                return Poll::Ready(Ok(()));
            };
            match protocol::parse_answer(&pending.buf) {
                Ok(Some(answer)) => {
                    let label = std::mem::take(&mut pending.label);
                    let endpoint = std::mem::take(&mut pending.endpoint);
                    self.pending = None;
                    if let Err(e) =
                        crate::client::verdict(&label, &endpoint, answer.message, answer.status)
                    {
                        return Poll::Ready(Err(self.refuse(e)));
                    }
                    if answer.half_close != self.half_close {
                        tracing::debug!(
                            upstream.endpoint = %endpoint,
                            "the mux reports half-close {} for this endpoint, not {}",
                            answer.half_close,
                            self.half_close
                        );
                    }
                    self.session.set_proven();
                    return Poll::Ready(Ok(()));
                }
                Ok(None) => {}
                Err(e) => {
                    let err = Error::new(
                        ErrorKind::Protocol,
                        format!("{} sent a malformed stream answer", pending.label),
                    )
                    .with_source(e);
                    return Poll::Ready(Err(self.refuse(err)));
                }
            }
            // Exactly the answer's bytes: what follows is the upstream's.
            let mut chunk = [0u8; 256];
            let want = (protocol::answer_len(&pending.buf) - pending.buf.len()).min(chunk.len());
            let mut buf = ReadBuf::new(&mut chunk[..want]);
            match Pin::new(&mut self.io).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) if buf.filled().is_empty() => {
                    let err = match self.session.is_alive() {
                        true => Error::new(
                            ErrorKind::Protocol,
                            format!("{} ended the stream before answering", pending.label),
                        ),
                        false => self.session.closed_error(),
                    };
                    return Poll::Ready(Err(self.refuse(err)));
                }
                Poll::Ready(Ok(())) => pending.buf.extend_from_slice(buf.filled()),
                Poll::Ready(Err(e)) => {
                    let err = match self.session.is_alive() {
                        true => Error::new(
                            ErrorKind::Protocol,
                            format!("{} broke off the stream before answering", pending.label),
                        )
                        .with_source(e),
                        false => self.session.closed_error(),
                    };
                    return Poll::Ready(Err(self.refuse(err)));
                }
                Poll::Pending => {
                    if pending.deadline.as_mut().poll(cx).is_ready() {
                        let err = Error::new(
                            ErrorKind::TimedOut,
                            format!("{} did not answer in time", pending.label),
                        );
                        return Poll::Ready(Err(self.refuse(err)));
                    }
                    return Poll::Pending;
                }
            }
        }
    }

    /// The stream's id within its session.
    pub fn id(&self) -> u64 {
        self.io.id()
    }

    /// Which session of its connector the stream belongs to (1, then one more per restart).
    pub fn session(&self) -> u64 {
        self.session.generation
    }

    /// Streams open on the session when this one opened, itself included.
    pub fn open_streams(&self) -> u64 {
        self.open_streams
    }

    /// Whether the far side's upstream forwards half-close (a Unix socket or TCP does, a
    /// named pipe does not: its EOF means it is gone both ways).
    pub fn upstream_half_close(&self) -> bool {
        self.half_close
    }

    fn fail(&self, err: io::Error) -> io::Error {
        if self.session.is_alive() {
            err
        } else {
            self.session.closed_error().into_io()
        }
    }
}

impl Drop for MuxStream {
    fn drop(&mut self) {
        self.session.stats.open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl AsyncRead for MuxStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        std::task::ready!(this.poll_verdict(cx))?;
        let before = buf.filled().len();
        match std::task::ready!(Pin::new(&mut this.io).poll_read(cx, buf)) {
            Ok(()) => {
                let n = (buf.filled().len() - before) as u64;
                this.session.stats.bytes_in.fetch_add(n, Ordering::Relaxed);
                Poll::Ready(Ok(()))
            }
            Err(e) => Poll::Ready(Err(this.fail(e))),
        }
    }
}

impl AsyncWrite for MuxStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Some(err) = this.refusal() {
            return Poll::Ready(Err(err));
        }
        let written = match this.poll_write_with_header(cx, buf) {
            Some(written) => std::task::ready!(written),
            None => {
                std::task::ready!(this.poll_header(cx))?;
                std::task::ready!(Pin::new(&mut this.io).poll_write(cx, buf))
            }
        };
        match written {
            Ok(n) => {
                this.session
                    .stats
                    .bytes_out
                    .fetch_add(n as u64, Ordering::Relaxed);
                Poll::Ready(Ok(n))
            }
            // A refusal resets the stream: say why, if the answer is already here.
            Err(e) => match this.pending.is_some() {
                true => match this.poll_verdict(cx) {
                    Poll::Ready(Err(refused)) => Poll::Ready(Err(refused)),
                    _ => Poll::Ready(Err(this.fail(e))),
                },
                false => Poll::Ready(Err(this.fail(e))),
            },
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        std::task::ready!(this.poll_header(cx))?;
        match std::task::ready!(Pin::new(&mut this.io).poll_flush(cx)) {
            Ok(()) => Poll::Ready(Ok(())),
            Err(e) => Poll::Ready(Err(this.fail(e))),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        std::task::ready!(this.poll_header(cx))?;
        match std::task::ready!(Pin::new(&mut this.io).poll_shutdown(cx)) {
            Ok(()) => Poll::Ready(Ok(())),
            Err(e) => Poll::Ready(Err(this.fail(e))),
        }
    }
}
