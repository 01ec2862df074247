//! `GET /v1/sessions/{id}/attach`: the WebSocket handshake and the channel protocol
//! (see [`crate::protocol`]).
//!
//! Two tasks per attached client. The *writer* moves the session's output queue onto
//! the socket (awaiting each send, so a slow client back-pressures the program) and ends
//! with the status and Close 1000. The *reader* never waits for the program: input goes
//! into the session's budgeted input queue, and resize and signal act at once, so they
//! work even while input is backed up.
//!
//! Keepalive ([`Limits::ping_timeout`](crate::Limits::ping_timeout)): the writer pings
//! every third of the timeout, and every wait of the writer (for output, or for a send
//! to get through) ends when the client has sent nothing at all for the timeout; the
//! session is then detached and the connection closed with 1001. A client that stopped
//! reading stops answering too, so a hung client cannot hold a session forever.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use http::{header, HeaderMap, HeaderValue, Request, Response, StatusCode, Version};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

use crate::error::ApiError;
use crate::protocol::{
    channel, Signal, SignalRequest, TerminalSize, K8S_SUBPROTOCOL, MAX_MESSAGE_SIZE, SUBPROTOCOL,
};
use crate::session::{Event, InputError, Session};

/// How long to wait for the client's Close after ours, or for a stuck send to finish
/// before giving up on the connection.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// The negotiated subprotocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Proto {
    Pipegate,
    K8s,
}

impl Proto {
    fn token(self) -> &'static str {
        match self {
            Proto::Pipegate => SUBPROTOCOL,
            Proto::K8s => K8S_SUBPROTOCOL,
        }
    }
}

fn has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Checks the upgrade request and picks the subprotocol; returns the accept key too.
fn check_handshake<B>(req: &Request<B>) -> Result<(Proto, String), ApiError> {
    let headers = req.headers();
    if req.version() != Version::HTTP_11 {
        return Err(ApiError::BadRequest(
            "attach is a WebSocket upgrade and needs HTTP/1.1".into(),
        ));
    }
    if !has_token(headers, header::UPGRADE, "websocket")
        || !has_token(headers, header::CONNECTION, "upgrade")
    {
        return Err(ApiError::BadRequest(
            "attach needs a WebSocket upgrade (Connection: Upgrade, Upgrade: websocket)".into(),
        ));
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_none_or(|v| v.as_bytes() != b"13")
    {
        return Err(ApiError::BadRequest(
            "Sec-WebSocket-Version: only version 13 is supported".into(),
        ));
    }
    let key = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .ok_or_else(|| ApiError::BadRequest("Sec-WebSocket-Key: missing".into()))?;
    let proto = if has_token(headers, header::SEC_WEBSOCKET_PROTOCOL, SUBPROTOCOL) {
        Proto::Pipegate
    } else if has_token(headers, header::SEC_WEBSOCKET_PROTOCOL, K8S_SUBPROTOCOL) {
        Proto::K8s
    } else {
        return Err(ApiError::BadRequest(format!(
            "Sec-WebSocket-Protocol: offer {SUBPROTOCOL} or {K8S_SUBPROTOCOL}"
        )));
    };
    Ok((proto, derive_accept_key(key.as_bytes())))
}

/// Answers an attach request: `101` and a task serving the WebSocket, or the error.
///
/// # Errors
///
/// `400` for a malformed upgrade, `409` while another client is attached, `410` after
/// the status was delivered.
pub(crate) fn attach<B>(
    session: Arc<Session>,
    mut req: Request<B>,
) -> Result<Response<Bytes>, ApiError> {
    let (proto, accept) = check_handshake(&req)?;
    let output = session.take_output()?;
    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        match upgrade.await {
            Ok(upgraded) => serve(TokioIo::new(upgraded), session, output, proto).await,
            Err(e) => {
                tracing::debug!(error = %e, "attach upgrade failed");
                session.detach(output);
            }
        }
    });
    let mut resp = Response::new(Bytes::new());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = resp.headers_mut();
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(
        header::SEC_WEBSOCKET_PROTOCOL,
        HeaderValue::from_static(proto.token()),
    );
    if let Ok(accept) = HeaderValue::from_str(&accept) {
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    }
    Ok(resp)
}

/// How the writer's loop ended.
enum End {
    /// The status was sent.
    Delivered,
    /// The reader found a protocol violation; close with this frame.
    Violation(CloseFrame),
    /// The client closed or vanished, or a send failed.
    Gone,
    /// The client sent nothing, not even a Pong, for the ping timeout.
    Silent,
}

/// When the client last sent anything (any frame, Pong included), for the keepalive.
#[derive(Debug, Clone)]
struct Seen(Arc<Mutex<Instant>>);

impl Seen {
    fn new() -> Seen {
        Seen(Arc::new(Mutex::new(Instant::now())))
    }

    fn touch(&self) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
    }

    fn last(&self) -> Instant {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Completes once nothing has arrived for `timeout`; never when `timeout` is zero.
    async fn expired(&self, timeout: Duration) {
        if timeout.is_zero() {
            return std::future::pending().await;
        }
        loop {
            let at = self.last() + timeout;
            if at <= Instant::now() {
                return;
            }
            tokio::time::sleep_until(at).await;
        }
    }
}

/// Ticks every third of the ping timeout (never when it is zero).
struct Pinger(Option<tokio::time::Interval>);

impl Pinger {
    fn new(timeout: Duration) -> Pinger {
        Pinger((!timeout.is_zero()).then(|| {
            let period = (timeout / 3).max(Duration::from_millis(1));
            let mut interval = tokio::time::interval_at(Instant::now() + period, period);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            interval
        }))
    }

    async fn tick(&mut self) {
        match &mut self.0 {
            Some(interval) => {
                interval.tick().await;
            }
            None => std::future::pending().await,
        }
    }
}

/// The WebSocket limits of an attached client.
pub(crate) fn config() -> WebSocketConfig {
    let mut config = WebSocketConfig::default();
    config.max_message_size = Some(MAX_MESSAGE_SIZE);
    config.max_frame_size = Some(MAX_MESSAGE_SIZE);
    // Bounded: a client that stops reading stalls the writer instead of growing this.
    config.max_write_buffer_size = 4 * MAX_MESSAGE_SIZE;
    config
}

/// Serves one attached client until the status is delivered or the client leaves.
async fn serve<S>(io: S, session: Arc<Session>, output: mpsc::Receiver<Event>, proto: Proto)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let ws = WebSocketStream::from_raw_socket(io, Role::Server, Some(config())).await;
    let (mut sink, stream) = ws.split();
    let (close_tx, mut close_rx) = mpsc::channel::<CloseFrame>(1);
    let seen = Seen::new();
    let mut reader = tokio::spawn(read_loop(
        stream,
        Arc::clone(&session),
        proto,
        close_tx,
        seen.clone(),
    ));
    let mut output = output;
    // Keepalive: pings, and a deadline for hearing anything from the client that also
    // bounds every send (a client that stops reading stops answering too).
    let timeout = session.ping_timeout;
    let mut pinger = Pinger::new(timeout);
    tracing::debug!(session.id = %session.id, proto = proto.token(), "client attached");

    // The Kubernetes "ready" message: empty, on the lowest channel we write.
    let ready = Message::Binary(Bytes::from_static(&[channel::STDOUT]));
    let end = if sink.send(ready).await.is_err() {
        End::Gone
    } else {
        loop {
            tokio::select! {
                biased;
                close = close_rx.recv() => break closed(close, &mut sink).await,
                () = seen.expired(timeout) => break End::Silent,
                () = pinger.tick() => {
                    tokio::select! {
                        biased;
                        close = close_rx.recv() => break closed(close, &mut sink).await,
                        () = seen.expired(timeout) => break End::Silent,
                        sent = sink.send(Message::Ping(Bytes::new())) => {
                            if sent.is_err() {
                                break End::Gone;
                            }
                        }
                    }
                }
                event = output.recv() => match event {
                    Some(Event::Output(frame)) => {
                        // A slow client makes this wait (back-pressure); a violation
                        // found meanwhile must not wait behind it.
                        tokio::select! {
                            biased;
                            close = close_rx.recv() => break closed(close, &mut sink).await,
                            () = seen.expired(timeout) => break End::Silent,
                            sent = sink.send(Message::Binary(frame)) => {
                                if sent.is_err() {
                                    break End::Gone;
                                }
                            }
                        }
                    }
                    Some(Event::Exit(status)) => {
                        let mut frame = BytesMut::with_capacity(256);
                        frame.put_u8(channel::STATUS);
                        frame.extend_from_slice(&serde_json::to_vec(&status).unwrap_or_default());
                        break tokio::select! {
                            biased;
                            () = seen.expired(timeout) => End::Silent,
                            sent = sink.send(Message::Binary(frame.freeze())) => {
                                if sent.is_ok() { End::Delivered } else { End::Gone }
                            }
                        };
                    }
                    None => break End::Gone,
                },
            }
        }
    };
    match end {
        End::Delivered => {
            session.delivered();
            tracing::debug!(session.id = %session.id, "status delivered");
            let close = close_frame(CloseCode::Normal, "");
            let _ = tokio::time::timeout(CLOSE_WAIT, sink.send(Message::Close(Some(close)))).await;
            // The client's Close ends the reader; do not wait forever for it.
            if tokio::time::timeout(CLOSE_WAIT, &mut reader).await.is_err() {
                reader.abort();
            }
        }
        End::Violation(frame) => {
            session.detach(output);
            tracing::debug!(session.id = %session.id, code = u16::from(frame.code), "closing on a protocol violation");
            let _ = tokio::time::timeout(CLOSE_WAIT, sink.send(Message::Close(Some(frame)))).await;
            // The reader stopped at the violation, possibly in the middle of a frame:
            // discard what the client still sends (so it can finish writing and read
            // our Close) until it hangs up, for a bounded time.
            if let Ok(Ok(stream)) = tokio::time::timeout(CLOSE_WAIT, &mut reader).await {
                if let Ok(mut ws) = stream.reunite(sink) {
                    let _ = tokio::time::timeout(CLOSE_WAIT, drain(ws.get_mut())).await;
                }
            } else {
                reader.abort();
            }
        }
        End::Gone => {
            reader.abort();
            session.detach(output);
            tracing::debug!(session.id = %session.id, "client detached");
        }
        End::Silent => {
            reader.abort();
            session.detach(output);
            tracing::info!(
                session.id = %session.id,
                timeout_ms = timeout.as_millis() as u64,
                "client detached: it answered nothing, not even pings"
            );
            // Likely unread, and the send may not get through: bounded.
            let close = close_frame(
                CloseCode::Away,
                "no answer to pings; the session stays and may be re-attached",
            );
            let _ = tokio::time::timeout(CLOSE_WAIT, sink.send(Message::Close(Some(close)))).await;
        }
    }
}

/// What the reader's close request (or its end, `None`) means for the writer.
async fn closed<S>(close: Option<CloseFrame>, sink: &mut Sink<S>) -> End
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    match close {
        Some(frame) => End::Violation(frame),
        // The client closed (tungstenite queued our reply) or vanished.
        None => {
            let _ = tokio::time::timeout(CLOSE_WAIT, sink.close()).await;
            End::Gone
        }
    }
}

type Sink<S> = futures_util::stream::SplitSink<WebSocketStream<S>, Message>;

/// Reads and discards until EOF or an error.
async fn drain<S: tokio::io::AsyncRead + Unpin>(io: &mut S) {
    use tokio::io::AsyncReadExt;
    let mut buf = vec![0u8; 64 * 1024];
    while let Ok(n) = io.read(&mut buf).await {
        if n == 0 {
            break;
        }
    }
}

type Reader<S> = futures_util::stream::SplitStream<WebSocketStream<S>>;

/// Reads the client's messages and acts on them until the client closes, or a protocol
/// violation (then it asks the writer to close with the violation's code and stops
/// reading at once). Returns the stream for the writer to reunite.
async fn read_loop<S>(
    mut stream: Reader<S>,
    session: Arc<Session>,
    proto: Proto,
    close: mpsc::Sender<CloseFrame>,
    seen: Seen,
) -> Reader<S>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    while let Some(message) = stream.next().await {
        if message.is_ok() {
            seen.touch();
        }
        let violation = match message {
            Ok(Message::Binary(data)) => dispatch(&session, proto, data).err(),
            Ok(Message::Text(_)) => Some(close_frame(
                CloseCode::Unsupported,
                "text frames are not supported; send binary [channel][payload]",
            )),
            Ok(Message::Close(_)) => break,
            Ok(_) => None,
            Err(WsError::Capacity(_)) => {
                Some(close_frame(CloseCode::Size, "message larger than 1 MiB"))
            }
            Err(WsError::Protocol(_)) => {
                Some(close_frame(CloseCode::Protocol, "WebSocket protocol error"))
            }
            Err(WsError::Utf8(_)) => Some(close_frame(CloseCode::Invalid, "invalid UTF-8")),
            Err(_) => break,
        };
        if let Some(frame) = violation {
            let _ = close.send(frame).await;
            break;
        }
    }
    stream
}

fn close_frame(code: CloseCode, reason: &'static str) -> CloseFrame {
    CloseFrame {
        code,
        reason: reason.into(),
    }
}

/// A resize message, read leniently as Kubernetes does (extra fields ignored).
#[derive(Deserialize)]
pub(crate) struct ResizeMessage {
    #[serde(rename = "Width", alias = "width")]
    pub(crate) width: u32,
    #[serde(rename = "Height", alias = "height")]
    pub(crate) height: u32,
}

/// What one binary message from the client asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Command {
    /// Channel 0: bytes for the program's input.
    Input(Bytes),
    /// Channel 4: the last valid size in the message.
    Resize(TerminalSize),
    /// Channel 5 (`pipegate.pty.v1` only): a signal.
    Signal(Signal),
    /// `[255, 0]`: end of input.
    CloseInput,
    /// Empty, another channel, or a malformed resize or signal: ignored.
    Ignore,
}

/// Reads one binary message (`[channel][payload]`); no I/O.
pub(crate) fn decode(proto: Proto, data: Bytes) -> Command {
    let Some(&ch) = data.first() else {
        return Command::Ignore;
    };
    let payload = data.slice(1..);
    match ch {
        channel::STDIN => Command::Input(payload),
        channel::RESIZE => {
            // Several objects may be concatenated; the last valid one wins.
            let last = serde_json::Deserializer::from_slice(&payload)
                .into_iter::<ResizeMessage>()
                .map_while(Result::ok)
                .last();
            match last {
                Some(size) => {
                    let size = TerminalSize::new(size.width, size.height);
                    if size.invalid_field().is_none() {
                        Command::Resize(size)
                    } else {
                        Command::Ignore
                    }
                }
                None => Command::Ignore,
            }
        }
        channel::SIGNAL if proto == Proto::Pipegate => {
            match serde_json::from_slice::<SignalRequest>(&payload) {
                Ok(req) => Command::Signal(req.signal),
                Err(e) => {
                    tracing::debug!(error = %e, "malformed signal message ignored");
                    Command::Ignore
                }
            }
        }
        channel::CLOSE if payload.first() == Some(&channel::STDIN) => Command::CloseInput,
        _ => Command::Ignore,
    }
}

/// Acts on one binary message.
fn dispatch(session: &Session, proto: Proto, data: Bytes) -> Result<(), CloseFrame> {
    match decode(proto, data) {
        Command::Input(payload) => match session.write_input(payload) {
            Err(InputError::Overflow) => Err(close_frame(
                CloseCode::Policy,
                "stdin overflow: the program is not reading its input",
            )),
            Ok(()) | Err(InputError::Closed) => Ok(()),
        },
        Command::Resize(size) => {
            if let Err(e) = session.resize(size) {
                tracing::debug!(error = %e, "resize ignored");
            }
            Ok(())
        }
        Command::Signal(signal) => {
            if let Err(e) = session.signal(signal) {
                tracing::debug!(error = %e, signal = %signal, "signal not delivered");
            }
            Ok(())
        }
        Command::CloseInput => {
            session.close_input();
            Ok(())
        }
        Command::Ignore => Ok(()),
    }
}
