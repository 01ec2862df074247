//! Request framing checked at the edge, before hyper parses it: the shapes that let two
//! HTTP parsers disagree about where a request ends (request smuggling).
//!
//! hyper accepts or silently normalises some of them: `Content-Length` together with
//! `Transfer-Encoding` (it drops the length and reads chunked; RFC 9112 §6.3 allows a
//! server to reject instead, and a proxy should, because it forwards), a repeated
//! identical `Content-Length` (it keeps one), and bare LF line endings (httparse accepts
//! them, RFC 9112 §2.2 only *allows* that). None of those is visible in the parsed request,
//! so [`Inspected`] reads the client's bytes first and holds each request head back until
//! it is complete and checked:
//!
//! | shape | why it is refused |
//! |---|---|
//! | `Content-Length` and `Transfer-Encoding` | RFC 9112 §6.1: "ought to be handled as an error" |
//! | more than one `Content-Length` line, or a list value | RFC 9112 §6.3 (4) |
//! | a `Content-Length` that is not a number | RFC 9112 §6.3 (5) |
//! | `Transfer-Encoding` not ending in `chunked`, or in HTTP/1.0 | RFC 9112 §6.3 (4), §6.1 |
//! | obs-fold: a header line starting with space or tab | RFC 9112 §5.2 |
//! | a bare LF line ending in the head | RFC 9112 §2.2 |
//!
//! A refused head never reaches hyper: in its place hyper reads a synthetic
//! `GET /_pipegate/rejected` with `Connection: close`, and the request handler, told by
//! [`Verdicts`] which request that is, answers `400` through the usual response path.
//! Nothing more is handed to hyper (no EOF either: hyper drops a request in flight when
//! its client half-closes); what the client sends after the refused head is read and
//! discarded, up to a limit, so closing the socket sends a FIN rather than a reset that
//! could destroy the `400` before the client reads it. Requests before it on the same
//! connection (pipelining) are served normally. Nothing of a refused request is
//! forwarded.
//!
//! Bodies are followed (fixed length, or chunked framing) so the next head is found;
//! body bytes go to hyper as they arrive, without copying. After an upgrade request
//! (`Upgrade`, `CONNECT`) or the HTTP/2 preface the stream is passed through untouched:
//! the handler closes the connection after an upgrade that is refused, so no HTTP/1
//! request can follow one unchecked. A head larger than the server's limit is handed to
//! hyper, which answers `431`.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::task::{ready, Context, Poll};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// What hyper reads instead of a refused head.
pub(crate) const REJECTED_HEAD: &[u8] =
    b"GET /_pipegate/rejected HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n";

/// How much a client may send after a refused head that is still read (and discarded).
const DRAIN_LIMIT: usize = 1 << 20;

/// The HTTP/2 connection preface's request line.
const H2_PREFACE_LINE: &[u8] = b"PRI * HTTP/2.0";

/// The whole HTTP/2 connection preface (RFC 9113 §3.4).
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Why a request was refused before parsing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Violation {
    ContentLengthWithTransferEncoding,
    DuplicateContentLength,
    InvalidContentLength,
    TransferEncodingNotChunked,
    TransferEncodingInHttp10,
    ObsFold,
    BareLf,
    DuplicateHost,
}

impl Violation {
    /// A short machine-readable name (logs).
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Violation::ContentLengthWithTransferEncoding => "content_length_with_transfer_encoding",
            Violation::DuplicateContentLength => "duplicate_content_length",
            Violation::InvalidContentLength => "invalid_content_length",
            Violation::TransferEncodingNotChunked => "transfer_encoding_not_chunked",
            Violation::TransferEncodingInHttp10 => "transfer_encoding_in_http10",
            Violation::ObsFold => "obs_fold",
            Violation::BareLf => "bare_lf",
            Violation::DuplicateHost => "duplicate_host",
        }
    }

    /// One sentence for the response body.
    pub(crate) fn describe(self) -> &'static str {
        match self {
            Violation::ContentLengthWithTransferEncoding => {
                "the request has both Content-Length and Transfer-Encoding (RFC 9112 §6.1)"
            }
            Violation::DuplicateContentLength => {
                "the request has more than one Content-Length (RFC 9112 §6.3)"
            }
            Violation::InvalidContentLength => "the request's Content-Length is not a number",
            Violation::TransferEncodingNotChunked => {
                "the request's Transfer-Encoding does not end in chunked (RFC 9112 §6.3)"
            }
            Violation::TransferEncodingInHttp10 => {
                "an HTTP/1.0 request cannot use Transfer-Encoding (RFC 9112 §6.1)"
            }
            Violation::ObsFold => {
                "a header line starts with a space or tab (obsolete line folding, RFC 9112 §5.2)"
            }
            Violation::BareLf => "a line of the request head ends in LF without CR (RFC 9112 §2.2)",
            Violation::DuplicateHost => "the request has more than one Host (RFC 9112 §3.2)",
        }
    }
}

/// Tells the request handler which request of a connection replaced a refused head.
#[derive(Debug, Default)]
pub(crate) struct Verdicts {
    /// (index of the head among those hyper read on this connection, why).
    refused: Mutex<Option<(u64, Violation)>>,
    /// Requests handed to the service so far.
    served: AtomicU64,
}

impl Verdicts {
    fn refuse(&self, head: u64, why: Violation) {
        if let Ok(mut refused) = self.refused.lock() {
            *refused = Some((head, why));
        }
    }

    /// Call once per request, in order (HTTP/1 hands requests to the service one at a
    /// time): the violation whose placeholder this request is, if it is one.
    pub(crate) fn next_request(&self) -> Option<Violation> {
        let index = self.served.fetch_add(1, Ordering::Relaxed);
        let refused = self.refused.lock().ok()?;
        refused.and_then(|(head, why)| (head == index).then_some(why))
    }
}

/// Where the reader is in the client's byte stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Collecting a request head.
    Head,
    /// This many body bytes left.
    Fixed(u64),
    /// Inside a chunked body.
    Chunked(Chunk),
    /// Not HTTP/1 requests any more (HTTP/2, an upgrade) or a head too big to check.
    Passthrough,
    /// A head was refused: nothing more is read.
    Closed,
}

/// The chunked-body grammar (RFC 9112 §7.1), as far as finding its end needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Hex digits of a chunk size (`digits` so far).
    Size { value: u64, digits: u8 },
    /// After the size: extensions (or whitespace) up to CR.
    Ext { value: u64 },
    /// CR seen after a size line; LF next.
    SizeLf { value: u64 },
    /// Chunk data left.
    Data(u64),
    /// CR after the data.
    DataCr,
    /// LF after the data.
    DataLf,
    /// At the start of a trailer line, or of the final empty line.
    TrailerStart,
    /// Inside a trailer field line.
    TrailerLine,
    /// CR seen in a trailer line; LF next.
    TrailerLf,
    /// CR of the final empty line seen; LF next.
    EndLf,
}

/// The byte-stream state machine. Pure: no I/O.
#[derive(Debug)]
pub(crate) struct Framer {
    state: State,
    /// The head being collected.
    head: Vec<u8>,
    /// Where the current line of `head` starts.
    line_start: usize,
    /// Whether the request line has been seen (empty lines before it are skipped).
    request_line: bool,
    /// Heads handed on so far.
    heads: u64,
    /// Largest head held back; a bigger one is handed to hyper, which answers 431.
    limit: usize,
}

/// What a finished head says about the message after it.
#[derive(Debug, Default)]
struct HeadFacts {
    content_lengths: u32,
    content_length: Option<u64>,
    content_length_list: bool,
    content_length_invalid: bool,
    transfer_encoding: Vec<u8>,
    has_transfer_encoding: bool,
    upgrade: bool,
    hosts: u32,
    /// A line without a colon: hyper refuses the head itself.
    malformed: bool,
}

impl Framer {
    pub(crate) fn new(limit: usize) -> Framer {
        Framer {
            state: State::Head,
            head: Vec::new(),
            line_start: 0,
            request_line: false,
            heads: 0,
            limit,
        }
    }

    pub(crate) fn is_passthrough(&self) -> bool {
        self.state == State::Passthrough
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    /// How many heads were checked and handed on.
    pub(crate) fn heads(&self) -> u64 {
        self.heads
    }

    /// How many leading bytes of `input` are body (or passthrough) bytes that may go on
    /// as they are; the rest, from the next head on, must go through [`feed`].
    ///
    /// # Errors
    ///
    /// Chunked framing that hyper's decoder would refuse as well (the connection ends).
    pub(crate) fn skip(&mut self, input: &[u8]) -> io::Result<usize> {
        match self.state {
            State::Head | State::Closed => Ok(0),
            State::Passthrough => Ok(input.len()),
            State::Fixed(left) => {
                let n = (input.len() as u64).min(left);
                self.state = if n == left {
                    State::Head
                } else {
                    State::Fixed(left - n)
                };
                Ok(n as usize)
            }
            State::Chunked(chunk) => self.skip_chunked(chunk, input),
        }
    }

    fn skip_chunked(&mut self, mut chunk: Chunk, input: &[u8]) -> io::Result<usize> {
        let bad = |what: &str| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("malformed chunked body: {what}"),
            )
        };
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            chunk = match chunk {
                Chunk::Size { value, digits } => match hex(b) {
                    Some(d) if digits < 16 => Chunk::Size {
                        value: value << 4 | u64::from(d),
                        digits: digits + 1,
                    },
                    Some(_) => return Err(bad("chunk size too large")),
                    None if digits == 0 => return Err(bad("no chunk size")),
                    None if b == b'\r' => Chunk::SizeLf { value },
                    None if matches!(b, b';' | b' ' | b'\t') => Chunk::Ext { value },
                    None => return Err(bad("invalid chunk size")),
                },
                Chunk::Ext { value } => match b {
                    b'\r' => Chunk::SizeLf { value },
                    b'\n' => return Err(bad("bare LF in a chunk extension")),
                    _ => Chunk::Ext { value },
                },
                Chunk::SizeLf { value } if b == b'\n' => {
                    if value == 0 {
                        Chunk::TrailerStart
                    } else {
                        Chunk::Data(value)
                    }
                }
                Chunk::Data(left) => {
                    let n = ((input.len() - i) as u64).min(left);
                    i += n as usize;
                    chunk = if n == left {
                        Chunk::DataCr
                    } else {
                        Chunk::Data(left - n)
                    };
                    continue;
                }
                Chunk::DataCr if b == b'\r' => Chunk::DataLf,
                Chunk::DataLf if b == b'\n' => Chunk::Size {
                    value: 0,
                    digits: 0,
                },
                Chunk::TrailerStart if b == b'\r' => Chunk::EndLf,
                Chunk::TrailerStart | Chunk::TrailerLine if b == b'\n' => {
                    return Err(bad("bare LF in the trailer section"))
                }
                Chunk::TrailerStart | Chunk::TrailerLine if b == b'\r' => Chunk::TrailerLf,
                Chunk::TrailerStart | Chunk::TrailerLine => Chunk::TrailerLine,
                Chunk::TrailerLf if b == b'\n' => Chunk::TrailerStart,
                Chunk::EndLf if b == b'\n' => {
                    self.state = State::Head;
                    return Ok(i + 1);
                }
                Chunk::SizeLf { .. }
                | Chunk::DataCr
                | Chunk::DataLf
                | Chunk::TrailerLf
                | Chunk::EndLf => return Err(bad("missing CRLF")),
            };
            i += 1;
        }
        self.state = State::Chunked(chunk);
        Ok(input.len())
    }

    /// Takes `input` (which starts where [`skip`] stopped) and appends to `out` what may
    /// go to hyper now, in order: checked heads, the body bytes after them, and in place of
    /// a refused head the placeholder request (then the framer is closed).
    pub(crate) fn feed(
        &mut self,
        mut input: &[u8],
        out: &mut BytesMut,
        verdicts: &Verdicts,
    ) -> io::Result<()> {
        while !input.is_empty() {
            match self.state {
                State::Closed => return Ok(()),
                State::Head => {
                    let used = self.feed_head(input, out, verdicts);
                    input = &input[used..];
                }
                _ => {
                    let n = self.skip(input)?;
                    out.extend_from_slice(&input[..n]);
                    input = &input[n..];
                }
            }
        }
        Ok(())
    }

    /// Collects head bytes from `input`; returns how many it used.
    fn feed_head(&mut self, input: &[u8], out: &mut BytesMut, verdicts: &Verdicts) -> usize {
        for (i, &b) in input.iter().enumerate() {
            if self.head.len() >= self.limit {
                // Too big to be a head we would accept: hyper refuses it with 431.
                out.extend_from_slice(&self.head);
                self.head.clear();
                self.state = State::Passthrough;
                return i;
            }
            self.head.push(b);
            if b != b'\n' {
                continue;
            }
            let end = self.head.len() - 1;
            if end == 0 || self.head[end - 1] != b'\r' {
                self.refuse(Violation::BareLf, out, verdicts);
                return input.len();
            }
            let line_start = std::mem::replace(&mut self.line_start, self.head.len());
            let line = &self.head[line_start..end - 1];
            if !self.request_line {
                if line.is_empty() {
                    // An empty line before the request line (RFC 9112 §2.2): skipped.
                    continue;
                }
                self.request_line = true;
                if line == H2_PREFACE_LINE {
                    out.extend_from_slice(&self.head);
                    self.head.clear();
                    self.state = State::Passthrough;
                    return i + 1;
                }
                continue;
            }
            if matches!(line.first(), Some(b' ' | b'\t')) {
                self.refuse(Violation::ObsFold, out, verdicts);
                return input.len();
            }
            if line.is_empty() {
                match self.finish_head() {
                    Ok(next) => {
                        out.extend_from_slice(&self.head);
                        self.head.clear();
                        self.line_start = 0;
                        self.request_line = false;
                        self.heads += 1;
                        self.state = next;
                    }
                    Err(why) => self.refuse(why, out, verdicts),
                }
                return i + 1;
            }
        }
        input.len()
    }

    /// Checks the complete head in `self.head`; the state for what follows it.
    fn finish_head(&self) -> Result<State, Violation> {
        let mut lines = self.head.split(|&b| b == b'\n').map(trim_cr);
        let request_line = lines.find(|l| !l.is_empty()).unwrap_or_default();
        let mut words = request_line.split(|&b| b == b' ');
        let method = words.next().unwrap_or_default();
        let version = words.next_back().unwrap_or_default();
        let http10 = version.eq_ignore_ascii_case(b"HTTP/1.0");
        let mut facts = HeadFacts::default();
        for line in lines.filter(|l| !l.is_empty()) {
            let Some(colon) = line.iter().position(|&b| b == b':') else {
                facts.malformed = true;
                continue;
            };
            let (name, value) = (&line[..colon], trim_ows(&line[colon + 1..]));
            if name.eq_ignore_ascii_case(b"content-length") {
                facts.content_lengths += 1;
                if value.contains(&b',') {
                    facts.content_length_list = true;
                } else {
                    facts.content_length = parse_decimal(value);
                    facts.content_length_invalid |= facts.content_length.is_none();
                }
            } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
                facts.has_transfer_encoding = true;
                if !facts.transfer_encoding.is_empty() {
                    facts.transfer_encoding.push(b',');
                }
                facts.transfer_encoding.extend_from_slice(value);
            } else if name.eq_ignore_ascii_case(b"upgrade") {
                facts.upgrade = true;
            } else if name.eq_ignore_ascii_case(b"host") {
                facts.hosts += 1;
            }
        }
        if facts.has_transfer_encoding && facts.content_lengths > 0 {
            return Err(Violation::ContentLengthWithTransferEncoding);
        }
        if facts.content_lengths > 1 || facts.content_length_list {
            return Err(Violation::DuplicateContentLength);
        }
        if facts.content_length_invalid {
            return Err(Violation::InvalidContentLength);
        }
        if facts.hosts > 1 {
            return Err(Violation::DuplicateHost);
        }
        if facts.has_transfer_encoding {
            if http10 {
                return Err(Violation::TransferEncodingInHttp10);
            }
            let last = facts
                .transfer_encoding
                .rsplit(|&b| b == b',')
                .map(trim_ows)
                .find(|c| !c.is_empty())
                .unwrap_or_default();
            if !last.eq_ignore_ascii_case(b"chunked") {
                return Err(Violation::TransferEncodingNotChunked);
            }
        }
        if facts.malformed {
            // hyper answers 400 and closes; no framing to follow.
            return Ok(State::Passthrough);
        }
        let upgrade = (facts.upgrade && !http10) || method == b"CONNECT";
        Ok(if upgrade {
            State::Passthrough
        } else if facts.has_transfer_encoding {
            State::Chunked(Chunk::Size {
                value: 0,
                digits: 0,
            })
        } else {
            match facts.content_length {
                Some(n) if n > 0 => State::Fixed(n),
                _ => State::Head,
            }
        })
    }

    fn refuse(&mut self, why: Violation, out: &mut BytesMut, verdicts: &Verdicts) {
        verdicts.refuse(self.heads, why);
        out.extend_from_slice(REJECTED_HEAD);
        self.head = Vec::new();
        self.state = State::Closed;
    }

    /// The client closed: a partial head is handed on as it is (hyper reports it).
    pub(crate) fn finish(&mut self, out: &mut BytesMut) {
        if self.state == State::Head {
            out.extend_from_slice(&self.head);
            self.head.clear();
        }
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn trim_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn trim_ows(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

fn parse_decimal(v: &[u8]) -> Option<u64> {
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// A client stream whose request heads are checked before hyper reads them.
#[derive(Debug)]
pub(crate) struct Inspected<S> {
    inner: S,
    framer: Framer,
    verdicts: std::sync::Arc<Verdicts>,
    /// Bytes checked and waiting for hyper, delivered before anything newer.
    ready: BytesMut,
    /// Whether the client's stream ended (EOF is reported once `ready` is delivered).
    ended: bool,
    /// Bytes discarded after a refused head.
    drained: usize,
}

impl<S> Inspected<S> {
    /// Wraps `inner`; heads larger than `max_head` are handed to hyper unchecked (it
    /// refuses them with 431 at the same size).
    pub(crate) fn new(inner: S, max_head: usize, verdicts: std::sync::Arc<Verdicts>) -> Self {
        Inspected {
            inner,
            framer: Framer::new(max_head),
            verdicts,
            ready: BytesMut::new(),
            ended: false,
            drained: 0,
        }
    }
}

impl<S: AsyncRead + Unpin> Inspected<S> {
    /// After a refused head: reads and discards what the client still sends, until it
    /// has nothing more for now, ends, or passes [`DRAIN_LIMIT`].
    fn drain(&mut self, cx: &mut Context<'_>) {
        let mut scratch = [0u8; 8192];
        while self.drained < DRAIN_LIMIT {
            let mut buf = ReadBuf::new(&mut scratch);
            match Pin::new(&mut self.inner).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) if !buf.filled().is_empty() => {
                    self.drained += buf.filled().len();
                }
                _ => return,
            }
        }
    }
}

impl<S: AsyncRead + Unpin> Inspected<S> {
    /// Whether the client opens with the HTTP/2 connection preface (prior knowledge).
    /// Reads, through the checks, only as far as it takes to tell; what it read is given
    /// back, first, to the next reads.
    pub(crate) async fn sniff_h2(&mut self) -> io::Result<bool> {
        let mut probe = [0u8; H2_PREFACE.len()];
        let mut n = 0;
        while n < probe.len() {
            let read = std::future::poll_fn(|cx| {
                let mut buf = ReadBuf::new(&mut probe[n..]);
                ready!(Pin::new(&mut *self).poll_read(cx, &mut buf))?;
                Poll::Ready(Ok::<_, io::Error>(buf.filled().len()))
            })
            .await?;
            let matches = probe[n..n + read] == H2_PREFACE[n..n + read];
            n += read;
            if read == 0 || !matches {
                break;
            }
        }
        if n > 0 {
            let mut again = BytesMut::with_capacity(n + self.ready.len());
            again.extend_from_slice(&probe[..n]);
            again.extend_from_slice(&self.ready);
            self.ready = again;
        }
        Ok(probe[..n] == *H2_PREFACE)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Inspected<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        loop {
            if !this.ready.is_empty() {
                let n = this.ready.len().min(buf.remaining());
                buf.put_slice(&this.ready[..n]);
                this.ready.advance(n);
                return Poll::Ready(Ok(()));
            }
            if this.framer.is_closed() {
                this.drain(cx);
                return Poll::Pending;
            }
            if this.ended {
                return Poll::Ready(Ok(()));
            }
            if this.framer.is_passthrough() {
                return Pin::new(&mut this.inner).poll_read(cx, buf);
            }
            // Read straight into hyper's buffer; body bytes stay there, a head is taken
            // back out and checked first.
            let start = buf.filled().len();
            ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
            let end = buf.filled().len();
            if end == start {
                this.framer.finish(&mut this.ready);
                this.ended = true;
                continue;
            }
            let kept = this.framer.skip(&buf.filled()[start..])?;
            if start + kept < end {
                let rest = buf.filled()[start + kept..].to_vec();
                buf.set_filled(start + kept);
                this.framer.feed(&rest, &mut this.ready, &this.verdicts)?;
            }
            if kept > 0 {
                return Poll::Ready(Ok(()));
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Inspected<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.framer.is_closed() {
            this.drain(cx);
        }
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `input` through a framer split into pieces of `step` bytes, the way reads
    /// would deliver it; what hyper would read, and the verdicts.
    fn run(input: &[u8], step: usize) -> (Vec<u8>, Verdicts, State) {
        let verdicts = Verdicts::default();
        let mut framer = Framer::new(64 * 1024);
        let mut out = BytesMut::new();
        for piece in input.chunks(step) {
            let kept = framer.skip(piece).expect("valid framing");
            out.extend_from_slice(&piece[..kept]);
            framer
                .feed(&piece[kept..], &mut out, &verdicts)
                .expect("valid framing");
        }
        let state = framer.state;
        (out.to_vec(), verdicts, state)
    }

    fn refused(input: &[u8]) -> Option<(u64, Violation)> {
        let mut seen = None;
        for step in [1, 7, input.len()] {
            let (out, verdicts, state) = run(input, step);
            let refused = *verdicts.refused.lock().unwrap();
            if refused.is_some() {
                assert_eq!(state, State::Closed);
                assert!(out.ends_with(REJECTED_HEAD), "placeholder last");
            } else {
                assert_eq!(out, input, "passed unchanged");
            }
            if let Some(prev) = seen {
                assert_eq!(prev, refused, "same verdict whatever the read sizes");
            }
            seen = Some(refused);
        }
        seen.flatten()
    }

    #[test]
    fn well_formed_requests_pass_unchanged() {
        let pipelined = b"\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n\
            POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello\
            POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n\
            5;ext=1\r\nhe\nlo\r\n0\r\nX-T: 1\r\n\r\n\
            GET /last HTTP/1.0\r\n\r\n";
        assert_eq!(refused(pipelined), None);
        let (_, _, state) = run(pipelined, 3);
        assert_eq!(state, State::Head);
    }

    #[test]
    fn smuggling_shapes_are_refused() {
        let cases: [(&[u8], Violation); 9] = [
            (
                b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n",
                Violation::ContentLengthWithTransferEncoding,
            ),
            (
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\ncontent-length: 4\r\n\r\n",
                Violation::ContentLengthWithTransferEncoding,
            ),
            (
                b"POST / HTTP/1.1\r\nContent-Length: 4\r\nContent-Length: 4\r\n\r\n",
                Violation::DuplicateContentLength,
            ),
            (
                b"POST / HTTP/1.1\r\nContent-Length: 4, 4\r\n\r\n",
                Violation::DuplicateContentLength,
            ),
            (
                b"POST / HTTP/1.1\r\nContent-Length: +4\r\n\r\n",
                Violation::InvalidContentLength,
            ),
            (
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
                Violation::TransferEncodingNotChunked,
            ),
            (
                b"GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n folded\r\n\r\n",
                Violation::ObsFold,
            ),
            (b"GET / HTTP/1.1\nHost: a\n\n", Violation::BareLf),
            (
                b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
                Violation::DuplicateHost,
            ),
        ];
        for (input, want) in cases {
            assert_eq!(
                refused(input),
                Some((0, want)),
                "{}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn a_refused_head_after_a_good_one_is_the_second_request() {
        let input =
            b"GET /ok HTTP/1.1\r\nHost: a\r\n\r\nGET /bad HTTP/1.1\r\nHost: a\r\nX: 1\n\r\n";
        assert_eq!(refused(input), Some((1, Violation::BareLf)));
        let (out, verdicts, _) = run(input, input.len());
        assert!(out.starts_with(b"GET /ok HTTP/1.1\r\nHost: a\r\n\r\nGET /_pipegate/rejected"));
        assert_eq!(verdicts.next_request(), None);
        assert_eq!(verdicts.next_request(), Some(Violation::BareLf));
    }

    #[test]
    fn a_smuggled_head_inside_a_body_is_body() {
        // The body is exactly what Content-Length says; what looks like a request in it is
        // data, and the real next head is checked.
        let input = b"POST / HTTP/1.1\r\nContent-Length: 27\r\n\r\nGET /x HTTP/1.1\nHost: a\n\n\nGET /y HTTP/1.1\r\nHost: a\r\n\r\n";
        assert_eq!(refused(input), None);
    }

    #[test]
    fn upgrades_and_h2_pass_through() {
        let upgrade =
            b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n\x81\x05hello\n\n";
        assert_eq!(refused(upgrade), None);
        assert_eq!(run(upgrade, 5).2, State::Passthrough);
        let h2 = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x12\x04";
        assert_eq!(refused(h2), None);
        assert_eq!(run(h2, 2).2, State::Passthrough);
    }

    #[test]
    fn bad_chunk_framing_is_an_error() {
        let mut framer = Framer::new(1024);
        let mut out = BytesMut::new();
        let verdicts = Verdicts::default();
        framer
            .feed(
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
                &mut out,
                &verdicts,
            )
            .unwrap();
        assert!(framer.skip(b"5\nhello").is_err());
    }

    #[test]
    fn an_oversized_head_goes_to_hyper() {
        let mut framer = Framer::new(16);
        let mut out = BytesMut::new();
        let input = b"GET / HTTP/1.1\r\nX-Long: aaaaaaaaaaaaaaaa\r\n\r\n";
        framer.feed(input, &mut out, &Verdicts::default()).unwrap();
        assert_eq!(&out[..], &input[..]);
        assert!(framer.is_passthrough());
    }
}
