//! Helpers shared by the HTTP-mode integration tests: bounded waits, private temp dirs,
//! the bridge run in-process, a recording hyper upstream (Unix socket or TCP), a
//! tokio-tungstenite WebSocket upstream, clients, and checksummed bulk bodies.
//!
//! Every test file uses a different subset.
// `result_large_err`: tungstenite's handshake callback type is fixed by its API.
#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::result_large_err
)]

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Body, Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use pipegate_proxy::{Bridge, Config, ForwardMode, ServeSummary};
use pipegate_transport::Endpoint;
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::handshake::server::Response as WsResponse;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request as WsRequest};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

/// The budget for one ordinary step (a bind, a connect, a small exchange).
pub const STEP: Duration = Duration::from_secs(10);

/// Runs `fut`, panicking with `what` if it takes longer than `limit`: no test can hang.
pub async fn within<F: Future>(limit: Duration, fut: F, what: &str) -> F::Output {
    match tokio::time::timeout(limit, fut).await {
        Ok(out) => out,
        Err(_) => panic!("timed out after {limit:?}: {what}"),
    }
}

/// Polls `check` every 20 ms until it returns `Some`, panicking after `limit`.
pub async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if Instant::now() >= deadline {
            panic!("not true within {limit:?}: {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A fresh 0700 directory directly under /tmp (short, so socket paths stay far below
/// the 108-byte limit), removed when dropped.
pub fn private_dir() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("pgh")
        .tempdir_in("/tmp")
        .expect("create a temp dir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))
        .expect("chmod 0700");
    dir
}

/// A Unix socket endpoint named `name` inside `dir`.
pub fn sock(dir: &tempfile::TempDir, name: &str) -> Endpoint {
    let path = dir.path().join(name);
    Endpoint::parse(path.to_str().expect("UTF-8 temp path")).expect("valid socket endpoint")
}

/// `127.0.0.1:0`.
pub fn tcp_any() -> Endpoint {
    Endpoint::parse("127.0.0.1:0").expect("valid endpoint")
}

// ---------------------------------------------------------------------------------------
// Byte streams

/// Any bidirectional byte stream.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A boxed byte stream (TCP or Unix).
pub type BoxIo = Box<dyn Io>;

/// Connects to a TCP or Unix endpoint with plain tokio sockets (not the crate's
/// transport), so the client side is independent of the code under test.
pub async fn dial(endpoint: &Endpoint) -> io::Result<BoxIo> {
    match endpoint {
        Endpoint::Tcp { host, port } => {
            let stream = TcpStream::connect((host.as_str(), *port)).await?;
            stream.set_nodelay(true)?;
            Ok(Box::new(stream))
        }
        Endpoint::Unix(path) => Ok(Box::new(UnixStream::connect(path).await?)),
        other => Err(io::Error::other(format!("cannot dial {other} here"))),
    }
}

/// A raw TCP connection to a TCP endpoint.
pub async fn dial_tcp(endpoint: &Endpoint) -> TcpStream {
    let Endpoint::Tcp { host, port } = endpoint else {
        panic!("not a TCP endpoint: {endpoint}");
    };
    let stream = within(
        STEP,
        TcpStream::connect((host.as_str(), *port)),
        "TCP connect",
    )
    .await
    .expect("connect to the bridge");
    stream.set_nodelay(true).expect("nodelay");
    stream
}

// ---------------------------------------------------------------------------------------
// The bridge

/// A bridge serving in a background task until [`Running::stop`].
#[derive(Debug)]
pub struct Running {
    /// Where it listens, in the order configured (ports filled in).
    pub endpoints: Vec<Endpoint>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<pipegate_proxy::Result<ServeSummary>>>,
}

/// An HTTP-mode config.
pub fn http_config(listen: Vec<Endpoint>, upstream: Endpoint) -> Config {
    Config::new(listen, upstream, ForwardMode::Http)
}

impl Running {
    /// Binds `config` and serves it until stopped; the shutdown future is a oneshot.
    pub async fn start(config: Config) -> Running {
        let bridge = within(STEP, Bridge::bind(config), "bind the bridge")
            .await
            .expect("bind the bridge");
        let endpoints = bridge.local_endpoints();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(bridge.serve(async move {
            let _ = stopped.await;
        }));
        Running {
            endpoints,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// The first TCP listen endpoint.
    pub fn tcp(&self) -> &Endpoint {
        self.endpoints
            .iter()
            .find(|e| matches!(e, Endpoint::Tcp { .. }))
            .expect("the bridge listens on TCP")
    }

    /// The first Unix listen endpoint.
    pub fn unix(&self) -> &Endpoint {
        self.endpoints
            .iter()
            .find(|e| matches!(e, Endpoint::Unix(_)))
            .expect("the bridge listens on a Unix socket")
    }

    /// Fires the shutdown future (once).
    pub fn trigger_shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Waits (at most `limit`) for `serve` to return.
    pub async fn finished(&mut self, limit: Duration) -> ServeSummary {
        let task = self.task.take().expect("serve still running");
        within(limit, task, "serve() to return")
            .await
            .expect("serve task panicked")
            .expect("serve failed")
    }

    /// Shuts down and waits for `serve` to return.
    pub async fn stop(mut self) -> ServeSummary {
        self.trigger_shutdown();
        self.finished(STEP).await
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

// ---------------------------------------------------------------------------------------
// HTTP clients

/// The body type tests send.
pub type ReqBody = BoxBody<Bytes, Infallible>;

/// An empty request body.
pub fn empty() -> ReqBody {
    Empty::<Bytes>::new().boxed()
}

/// A request body with these bytes (sent with a content-length).
pub fn full(bytes: impl Into<Bytes>) -> ReqBody {
    Full::new(bytes.into()).boxed()
}

/// Sends `req` on a fresh HTTP/1.1 connection to `endpoint`.
pub async fn send(endpoint: &Endpoint, req: Request<ReqBody>) -> Response<Incoming> {
    let io = within(STEP, dial(endpoint), "dial the bridge")
        .await
        .expect("dial the bridge");
    let (mut sender, conn) = within(
        STEP,
        hyper::client::conn::http1::handshake(TokioIo::new(io)),
        "client handshake",
    )
    .await
    .expect("client handshake");
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    within(STEP, sender.send_request(req), "response head")
        .await
        .expect("a response from the bridge")
}

/// A `GET path` with `Host: pipegate.test`.
pub fn get_request(path: &str) -> Request<ReqBody> {
    Request::get(path)
        .header(http::header::HOST, "pipegate.test")
        .body(empty())
        .expect("valid request")
}

/// Collects a whole (small) body.
pub async fn body_bytes(body: Incoming) -> Bytes {
    within(STEP, body.collect(), "response body")
        .await
        .expect("read the body")
        .to_bytes()
}

/// `GET path` → status, headers, body.
pub async fn get(endpoint: &Endpoint, path: &str) -> (StatusCode, HeaderMap, Bytes) {
    let resp = send(endpoint, get_request(path)).await;
    let (parts, body) = resp.into_parts();
    (parts.status, parts.headers, body_bytes(body).await)
}

/// The text of `GET /_pipegate/metrics`.
pub async fn metrics(endpoint: &Endpoint) -> String {
    let (status, headers, body) = get(endpoint, "/_pipegate/metrics").await;
    assert_eq!(status, StatusCode::OK, "metrics status");
    assert!(
        headers[http::header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/plain"),
        "metrics content type: {headers:?}"
    );
    String::from_utf8(body.to_vec()).expect("UTF-8 metrics")
}

/// The value of the sample line `series` (name with labels) in a metrics text.
pub fn metric(text: &str, series: &str) -> i64 {
    text.lines()
        .find_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            (name == series).then(|| value.parse().expect("numeric sample"))
        })
        .unwrap_or_else(|| panic!("no sample {series} in:\n{text}"))
}

/// Reads a response head (through the blank line) from a raw stream; returns the head
/// text and whatever body bytes were read with it. `None` on EOF before a full head.
pub async fn read_head<R: AsyncRead + Unpin>(
    reader: &mut R,
) -> io::Result<Option<(String, Vec<u8>)>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = find(&buf, b"\r\n\r\n") {
            let rest = buf.split_off(end + 4);
            return Ok(Some((String::from_utf8_lossy(&buf).into_owned(), rest)));
        }
        let n = reader.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// The status code of a raw response head.
pub fn head_status(head: &str) -> u16 {
    head.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not a status line: {head}"))
}

/// Every value of header `name` (case-insensitive) in a raw head.
pub fn head_values(head: &str, name: &str) -> Vec<String> {
    head.lines()
        .skip(1)
        .filter_map(|line| line.split_once(':'))
        .filter(|(k, _)| k.trim().eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim().to_owned())
        .collect()
}

/// Reads until EOF (or a reset), returning what arrived.
pub async fn read_to_close<R: AsyncRead + Unpin>(reader: &mut R) -> Vec<u8> {
    let mut out = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match reader.read(&mut chunk).await {
            Ok(0) | Err(_) => return out,
            Ok(n) => out.extend_from_slice(&chunk[..n]),
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

// ---------------------------------------------------------------------------------------
// Bulk data

pub type Sha = [u8; 32];

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Size of the chunks [`Generator`] yields.
pub const CHUNK: usize = 64 * 1024;
const BLOCK: usize = 1 << 20;

/// Deterministic bulk data, made chunk by chunk: a window of a seeded random 1 MiB
/// block at an offset that moves with the chunk index, stamped with that index, so a
/// dropped, repeated or reordered chunk changes the hash.
#[derive(Debug)]
pub struct Generator {
    block: Vec<u8>,
    index: u64,
}

impl Generator {
    pub fn new(seed: u64) -> Generator {
        let mut block = vec![0; BLOCK + CHUNK];
        StdRng::seed_from_u64(seed).fill_bytes(&mut block);
        Generator { block, index: 0 }
    }

    /// The next `len` (≤ [`CHUNK`]) bytes.
    pub fn next_chunk(&mut self, len: usize) -> Bytes {
        assert!(len <= CHUNK);
        let offset = (self.index as usize).wrapping_mul(4099) % BLOCK;
        let mut chunk = BytesMut::from(&self.block[offset..offset + len]);
        let stamp = self.index.to_le_bytes();
        let n = stamp.len().min(len);
        chunk[..n].copy_from_slice(&stamp[..n]);
        self.index += 1;
        chunk.freeze()
    }
}

/// A streamed body of `len` generated bytes with no declared length (so it goes
/// chunked). With a `digest` slot it hashes what it produced and stores the SHA-256 there
/// when it ends (hashing is the slow part in a debug build, so only when asked).
#[derive(Debug)]
pub struct GenBody {
    generator: Generator,
    left: u64,
    hasher: Option<Sha256>,
    digest: Option<Arc<Mutex<Option<Sha>>>>,
}

impl GenBody {
    pub fn new(seed: u64, len: u64, digest: Option<Arc<Mutex<Option<Sha>>>>) -> GenBody {
        GenBody {
            generator: Generator::new(seed),
            left: len,
            hasher: digest.as_ref().map(|_| Sha256::new()),
            digest,
        }
    }
}

impl Body for GenBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.left == 0 {
            if let (Some(hasher), Some(slot)) = (self.hasher.take(), &self.digest) {
                *slot.lock().unwrap() = Some(hasher.finalize().into());
            }
            return Poll::Ready(None);
        }
        let n = self.left.min(CHUNK as u64) as usize;
        let chunk = self.generator.next_chunk(n);
        if let Some(hasher) = &mut self.hasher {
            hasher.update(&chunk);
        }
        self.left -= n as u64;
        Poll::Ready(Some(Ok(Frame::data(chunk))))
    }
}

/// Reads a body to its end, returning its length and SHA-256.
pub async fn hash_body<B>(mut body: B) -> (u64, Sha)
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Debug,
{
    let mut hasher = Sha256::new();
    let mut total = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame.expect("body frame");
        if let Ok(data) = frame.into_data() {
            total += data.len() as u64;
            hasher.update(&data);
        }
    }
    (total, hasher.finalize().into())
}

// ---------------------------------------------------------------------------------------
// The HTTP upstream

/// One request as the upstream saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: Method,
    pub uri: Uri,
    pub version: Version,
    pub headers: HeaderMap,
}

#[derive(Debug, Default)]
struct UpState {
    seen: Mutex<Vec<Seen>>,
}

/// Aborts a task when dropped.
#[derive(Debug)]
pub struct AbortOnDrop(pub JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

enum AnyListener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

impl AnyListener {
    /// Binds `endpoint` with plain tokio (a Unix path, or TCP `127.0.0.1:0`).
    async fn bind(endpoint: &Endpoint) -> (AnyListener, Endpoint) {
        match endpoint {
            Endpoint::Tcp { host, port } => {
                let listener = TcpListener::bind((host.as_str(), *port))
                    .await
                    .expect("bind the TCP upstream");
                let port = listener.local_addr().expect("local addr").port();
                (AnyListener::Tcp(listener), Endpoint::loopback(port))
            }
            Endpoint::Unix(path) => {
                let listener = UnixListener::bind(path).expect("bind the Unix upstream");
                (AnyListener::Unix(listener), endpoint.clone())
            }
            other => panic!("unsupported upstream endpoint {other}"),
        }
    }

    async fn accept(&self) -> io::Result<BoxIo> {
        match self {
            AnyListener::Tcp(l) => Ok(Box::new(l.accept().await?.0)),
            AnyListener::Unix(l) => Ok(Box::new(l.accept().await?.0)),
        }
    }
}

/// A real HTTP/1.1-only hyper server that records every request it gets.
///
/// Routes: `/upload` answers `"<len> <sha256>"` of the body; `/download?len=N&seed=S`
/// streams N bytes of `Generator::new(S)`; `/slow?ms=N` answers after N ms; `/hang` never answers;
/// `/conn-hdr` answers with `Connection: x-secret` and an `x-secret` header; anything
/// else answers `hello from <path>` with `x-upstream: yes`.
#[derive(Debug)]
pub struct Upstream {
    pub endpoint: Endpoint,
    state: Arc<UpState>,
    _task: AbortOnDrop,
}

impl Upstream {
    /// Serves on `endpoint` (a Unix socket path, or `127.0.0.1:0`).
    pub async fn start(endpoint: &Endpoint) -> Upstream {
        let (listener, endpoint) = AnyListener::bind(endpoint).await;
        let state = Arc::new(UpState::default());
        let accept_state = Arc::clone(&state);
        let task = tokio::spawn(async move {
            loop {
                let Ok(io) = listener.accept().await else {
                    continue;
                };
                let state = Arc::clone(&accept_state);
                tokio::spawn(async move {
                    let service = service_fn(move |req| upstream_handle(Arc::clone(&state), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(io), service)
                        .await;
                });
            }
        });
        Upstream {
            endpoint,
            state,
            _task: AbortOnDrop(task),
        }
    }

    /// Every request received so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }

    /// The first recorded request for `path`, waiting (bounded) for it to arrive.
    pub async fn wait_for(&self, path: &str) -> Seen {
        eventually(STEP, &format!("the upstream to receive {path}"), || async {
            self.seen().into_iter().find(|s| s.uri.path() == path)
        })
        .await
    }
}

type UpBody = BoxBody<Bytes, Infallible>;

fn query_param(uri: &Uri, key: &str) -> Option<u64> {
    uri.query()?
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .and_then(|(_, v)| v.parse().ok())
}

async fn upstream_handle(
    state: Arc<UpState>,
    req: Request<Incoming>,
) -> Result<Response<UpBody>, Infallible> {
    state.seen.lock().unwrap().push(Seen {
        method: req.method().clone(),
        uri: req.uri().clone(),
        version: req.version(),
        headers: req.headers().clone(),
    });
    let text = |s: String| Full::new(Bytes::from(s)).boxed();
    let uri = req.uri().clone();
    let resp = match uri.path() {
        "/upload" => {
            let (len, sha) = hash_body(req.into_body()).await;
            Response::new(text(format!("{len} {}", hex(&sha))))
        }
        "/download" => {
            let len = query_param(&uri, "len").unwrap_or(0);
            let seed = query_param(&uri, "seed").unwrap_or(0);
            Response::new(GenBody::new(seed, len, None).boxed())
        }
        "/slow" => {
            let ms = query_param(&uri, "ms").unwrap_or(300);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Response::new(text("slow done".into()))
        }
        "/hang" => std::future::pending().await,
        "/conn-hdr" => {
            let mut resp = Response::new(text("ok".into()));
            let h = resp.headers_mut();
            h.insert("connection", HeaderValue::from_static("x-secret"));
            h.insert("x-secret", HeaderValue::from_static("leaked"));
            h.insert("x-kept", HeaderValue::from_static("yes"));
            resp
        }
        path => {
            let mut resp = Response::new(text(format!("hello from {path}")));
            resp.headers_mut()
                .insert("x-upstream", HeaderValue::from_static("yes"));
            resp
        }
    };
    Ok(resp)
}

// ---------------------------------------------------------------------------------------
// The WebSocket upstream

/// The subprotocol the WebSocket upstream picks when a client offers it.
pub const CHOSEN_PROTOCOL: &str = "pipegate.pty.v1";
/// The close code the upstream sends on `/close4001`.
pub const CLOSE_CODE: u16 = 4001;
/// The close reason the upstream sends on `/close4001`.
pub const CLOSE_REASON: &str = "upstream says bye";
/// The body of the upstream's `403` for `/forbidden`.
pub const FORBIDDEN_BODY: &str = "no websocket for you";

/// One upgrade request as the WebSocket upstream saw it.
#[derive(Debug, Clone)]
pub struct WsSeen {
    pub path: String,
    pub headers: HeaderMap,
}

/// A real tokio-tungstenite server (`accept_hdr_async`): echoes text and binary
/// messages; on `/close4001` closes with [`CLOSE_CODE`]; refuses `/forbidden` with `403`;
/// picks [`CHOSEN_PROTOCOL`] when the client offers it.
#[derive(Debug)]
pub struct WsUpstream {
    pub endpoint: Endpoint,
    seen: Arc<Mutex<Vec<WsSeen>>>,
    _task: AbortOnDrop,
}

impl WsUpstream {
    pub async fn start(endpoint: &Endpoint) -> WsUpstream {
        let (listener, endpoint) = AnyListener::bind(endpoint).await;
        let seen = Arc::new(Mutex::new(Vec::new()));
        let accept_seen = Arc::clone(&seen);
        let task = tokio::spawn(async move {
            loop {
                let Ok(io) = listener.accept().await else {
                    continue;
                };
                tokio::spawn(ws_session(io, Arc::clone(&accept_seen)));
            }
        });
        WsUpstream {
            endpoint,
            seen,
            _task: AbortOnDrop(task),
        }
    }

    /// Every upgrade request received so far.
    pub fn seen(&self) -> Vec<WsSeen> {
        self.seen.lock().unwrap().clone()
    }
}

async fn ws_session(io: BoxIo, seen: Arc<Mutex<Vec<WsSeen>>>) {
    let mut path = String::new();
    let callback = |req: &WsRequest, mut resp: WsResponse| -> Result<WsResponse, ErrorResponse> {
        path = req.uri().path().to_owned();
        seen.lock().unwrap().push(WsSeen {
            path: path.clone(),
            headers: req.headers().clone(),
        });
        if path == "/forbidden" {
            let mut err = ErrorResponse::new(Some(FORBIDDEN_BODY.to_owned()));
            *err.status_mut() = StatusCode::FORBIDDEN;
            err.headers_mut().insert(
                http::header::CONTENT_LENGTH,
                HeaderValue::from(FORBIDDEN_BODY.len()),
            );
            return Err(err);
        }
        let offered = req
            .headers()
            .get_all("sec-websocket-protocol")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|p| p.trim() == CHOSEN_PROTOCOL);
        if offered {
            resp.headers_mut().insert(
                "sec-websocket-protocol",
                HeaderValue::from_static(CHOSEN_PROTOCOL),
            );
        }
        Ok(resp)
    };
    let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(io, callback).await else {
        return;
    };
    if path == "/close4001" {
        let frame = CloseFrame {
            code: CloseCode::from(CLOSE_CODE),
            reason: CLOSE_REASON.into(),
        };
        let _ = ws.close(Some(frame)).await;
        // Wait for the client's close reply (or the connection to go).
        while let Some(Ok(_)) = ws.next().await {}
        return;
    }
    while let Some(Ok(msg)) = ws.next().await {
        let echo = match msg {
            Message::Text(_) | Message::Binary(_) => msg,
            Message::Close(_) => {
                // tungstenite queues the close reply; flush it.
                let _ = ws.flush().await;
                return;
            }
            _ => continue,
        };
        if ws.send(echo).await.is_err() {
            return;
        }
    }
}

/// A WebSocket client handshake through the bridge at `endpoint` to `path`, offering
/// `protocols` if given.
pub async fn ws_connect(
    endpoint: &Endpoint,
    path: &str,
    protocols: Option<&str>,
) -> Result<
    (
        tokio_tungstenite::WebSocketStream<BoxIo>,
        tokio_tungstenite::tungstenite::handshake::client::Response,
    ),
    tokio_tungstenite::tungstenite::Error,
> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let io = within(STEP, dial(endpoint), "dial the bridge")
        .await
        .expect("dial the bridge");
    let mut req = format!("ws://pipegate.test{path}")
        .into_client_request()
        .expect("valid ws request");
    if let Some(p) = protocols {
        req.headers_mut().insert(
            "sec-websocket-protocol",
            HeaderValue::from_str(p).expect("valid protocol list"),
        );
    }
    within(
        STEP,
        tokio_tungstenite::client_async(req, io),
        "WebSocket handshake",
    )
    .await
}
