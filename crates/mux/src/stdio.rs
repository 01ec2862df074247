//! [`Stdio`]: this process's stdin and stdout as one async byte stream, for a `pipegate
//! mux` helper.
//!
//! tokio's `stdin()`/`stdout()` run every read, write and flush as a separate job on the
//! blocking pool: a frame written and flushed costs two thread hand-offs, and a read one
//! more before it even starts. Here one thread keeps a read pending on stdin and another
//! writes whatever it is handed, so a frame costs one hand-off each way; it matters where
//! hand-offs are slow (a Windows helper under WSL interop or Wine). The threads are plain
//! OS threads, so a process blocked reading stdin can still exit.

use std::future::Future as _;
use std::io::{self, Read as _, Write as _};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::PollSender;

/// Bytes per read from stdin.
const READ_CHUNK: usize = 64 * 1024;
/// Chunks queued each way before the other side waits.
const QUEUE: usize = 16;
/// Queued chunks are joined into one write up to this size.
const WRITE_BATCH: usize = 256 * 1024;

enum Out {
    Data(Vec<u8>),
    Close(oneshot::Sender<io::Result<()>>),
}

/// stdin (read side) and stdout (write side) of this process.
///
/// A write is handed to the writer thread and returns; `flush` does not wait for it to
/// reach the OS (the thread writes and flushes at once whatever is queued, in one write). `shutdown` waits until
/// everything handed over is written, then closes nothing: stdout stays open for the
/// process, but no more bytes go to it.
pub struct Stdio {
    rx: mpsc::Receiver<io::Result<Vec<u8>>>,
    chunk: Vec<u8>,
    pos: usize,
    eof: bool,
    tx: PollSender<Out>,
    closing: Option<oneshot::Receiver<io::Result<()>>>,
    closed: bool,
}

impl std::fmt::Debug for Stdio {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stdio").finish_non_exhaustive()
    }
}

/// This process's stdin and stdout as one async byte stream (see [`Stdio`]). Call it once:
/// a second `Stdio` would race the first for stdin.
///
/// # Errors
///
/// The reader or writer thread cannot be started.
pub fn stdio() -> io::Result<Stdio> {
    let (in_tx, in_rx) = mpsc::channel::<io::Result<Vec<u8>>>(QUEUE);
    std::thread::Builder::new()
        .name("pipegate-stdin".into())
        .spawn(move || {
            let stdin = io::stdin();
            let mut stdin = stdin.lock();
            loop {
                let mut buf = vec![0u8; READ_CHUNK];
                match stdin.read(&mut buf) {
                    Ok(n) => {
                        buf.truncate(n);
                        // An empty chunk is EOF; after it, or when nobody listens, stop.
                        if in_tx.blocking_send(Ok(buf)).is_err() || n == 0 {
                            return;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        let _ = in_tx.blocking_send(Err(e));
                        return;
                    }
                }
            }
        })?;
    let (out_tx, mut out_rx) = mpsc::channel::<Out>(QUEUE);
    std::thread::Builder::new()
        .name("pipegate-stdout".into())
        .spawn(move || {
            let stdout = io::stdout();
            let mut stdout = stdout.lock();
            let mut failed: Option<io::Error> = None;
            let mut next = None;
            while let Some(out) = next.take().or_else(|| out_rx.blocking_recv()) {
                match out {
                    Out::Data(mut data) => {
                        // Whatever else is queued goes in the same write: each write is a
                        // round trip to wineserver under Wine.
                        while data.len() < WRITE_BATCH {
                            match out_rx.try_recv() {
                                Ok(Out::Data(more)) => data.extend_from_slice(&more),
                                Ok(close) => {
                                    next = Some(close);
                                    break;
                                }
                                Err(_) => break,
                            }
                        }
                        if failed.is_none() {
                            if let Err(e) = stdout.write_all(&data).and_then(|()| stdout.flush()) {
                                failed = Some(e);
                            }
                        }
                    }
                    Out::Close(done) => {
                        let _ = done.send(match failed.take() {
                            Some(e) => Err(e),
                            None => Ok(()),
                        });
                        return;
                    }
                }
            }
        })?;
    Ok(Stdio {
        rx: in_rx,
        chunk: Vec::new(),
        pos: 0,
        eof: false,
        tx: PollSender::new(out_tx),
        closing: None,
        closed: false,
    })
}

fn writer_gone() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "the stdout writer stopped")
}

impl AsyncRead for Stdio {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        while this.pos == this.chunk.len() {
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            match std::task::ready!(this.rx.poll_recv(cx)) {
                Some(Ok(chunk)) if chunk.is_empty() => this.eof = true,
                Some(Ok(chunk)) => {
                    this.chunk = chunk;
                    this.pos = 0;
                }
                Some(Err(e)) => {
                    this.eof = true;
                    return Poll::Ready(Err(e));
                }
                None => this.eof = true,
            }
        }
        let n = buf.remaining().min(this.chunk.len() - this.pos);
        buf.put_slice(&this.chunk[this.pos..this.pos + n]);
        this.pos += n;
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Stdio {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.closing.is_some() || this.closed {
            return Poll::Ready(Err(writer_gone()));
        }
        std::task::ready!(this.tx.poll_reserve(cx)).map_err(|_| writer_gone())?;
        this.tx
            .send_item(Out::Data(buf.to_vec()))
            .map_err(|_| writer_gone())?;
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Handed over is as far as a flush goes here (see the type's docs).
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.closed {
            return Poll::Ready(Ok(()));
        }
        if this.closing.is_none() {
            std::task::ready!(this.tx.poll_reserve(cx)).map_err(|_| writer_gone())?;
            let (done, wait) = oneshot::channel();
            this.tx
                .send_item(Out::Close(done))
                .map_err(|_| writer_gone())?;
            this.closing = Some(wait);
        }
        let Some(wait) = this.closing.as_mut() else {
            return Poll::Ready(Ok(()));
        };
        let result = std::task::ready!(Pin::new(wait).poll(cx));
        this.closed = true;
        Poll::Ready(result.unwrap_or_else(|_| Err(writer_gone())))
    }
}
