//! HTTP/1.1 clients for the tests: hyper's client connection over any endpoint
//! pipegate prints, a raw one for abandoned requests, upgrades and bulk, and
//! `/_pipegate/metrics` read into numbers.

use std::io;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};

use super::{dial, within, Io};

/// One HTTP/1.1 exchange's budget.
const EXCHANGE: Duration = Duration::from_secs(30);

/// A client connection: requests go out one at a time, kept alive in between.
pub(crate) type Client = SendRequest<Full<Bytes>>;

/// A fresh HTTP/1.1 connection (hyper's client) to `endpoint` (`unix://…`, `tcp://…`).
pub(crate) async fn connect(endpoint: &str) -> Client {
    let io = dial(endpoint).await;
    let (sender, conn) = within(
        EXCHANGE,
        "HTTP/1.1 handshake",
        hyper::client::conn::http1::handshake(TokioIo::new(io)),
    )
    .await
    .expect("HTTP/1.1 handshake");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    sender
}

/// `METHOD PATH` with `Host: pipegate.test` and `body`.
pub(crate) fn request(method: &str, path: &str, body: impl Into<Bytes>) -> Request<Full<Bytes>> {
    Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::HOST, "pipegate.test")
        .body(Full::new(body.into()))
        .expect("a valid request")
}

/// Sends `req` on `client` and returns the response head (the body still to read).
pub(crate) async fn send(client: &mut Client, req: Request<Full<Bytes>>) -> Response<Incoming> {
    let what = format!("{} {}", req.method(), req.uri());
    within(EXCHANGE, &what, async {
        client
            .ready()
            .await
            .unwrap_or_else(|e| panic!("{what}: connection not ready: {e}"));
        client
            .send_request(req)
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"))
    })
    .await
}

/// `GET path` on a fresh connection: the status and the whole body.
pub(crate) async fn get(endpoint: &str, path: &str) -> (StatusCode, Bytes) {
    let mut client = connect(endpoint).await;
    let resp = send(&mut client, request("GET", path, Bytes::new())).await;
    let status = resp.status();
    let body = within(EXCHANGE, "the body", resp.into_body().collect())
        .await
        .unwrap_or_else(|e| panic!("GET {path}: reading the body: {e}"))
        .to_bytes();
    (status, body)
}

/// The text of `GET /_pipegate/metrics`.
pub(crate) async fn metrics(endpoint: &str) -> String {
    let (status, body) = get(endpoint, "/_pipegate/metrics").await;
    assert_eq!(status, StatusCode::OK, "metrics: {body:?}");
    String::from_utf8(body.to_vec()).expect("UTF-8 metrics")
}

/// The value of the sample `series` (name with labels) in a metrics text.
pub(crate) fn metric(text: &str, series: &str) -> i64 {
    text.lines()
        .find_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            (name == series).then(|| value.parse().expect("numeric sample"))
        })
        .unwrap_or_else(|| panic!("no sample {series} in:\n{text}"))
}

/// A raw HTTP/1.1 connection for what hyper's client will not do on purpose (abandon a
/// request mid-head or mid-body) or would slow down in bulk: requests as bytes, answers
/// framed by `Content-Length` (as the bridge's and upstream.py's are).
pub(crate) struct RawConn {
    io: BufReader<Box<dyn Io>>,
}

impl RawConn {
    pub(crate) async fn open(endpoint: &str) -> RawConn {
        RawConn {
            io: BufReader::new(dial(endpoint).await),
        }
    }

    pub(crate) async fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.io.get_mut().write_all(bytes).await
    }

    /// Reads one response head: the status and the `Content-Length` (0 when absent).
    pub(crate) async fn read_head(&mut self) -> io::Result<(u16, usize)> {
        let mut line = String::new();
        let mut status = None;
        let mut length = 0;
        loop {
            line.clear();
            if self.io.read_line(&mut line).await? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            let text = line.trim_end();
            if text.is_empty() {
                break;
            }
            if status.is_none() {
                status = text.split(' ').nth(1).and_then(|s| s.parse().ok());
                continue;
            }
            if let Some((name, value)) = text.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().unwrap_or(0);
                }
            }
        }
        let status = status.ok_or_else(|| io::Error::other(format!("no status line: {line}")))?;
        Ok((status, length))
    }

    /// Sends `request` and reads the whole answer: status and body.
    pub(crate) async fn exchange(&mut self, request: &[u8]) -> io::Result<(u16, Vec<u8>)> {
        self.send(request).await?;
        let (status, length) = self.read_head().await?;
        let mut body = vec![0u8; length];
        self.io.read_exact(&mut body).await?;
        Ok((status, body))
    }

    /// Asks for a WebSocket upgrade of `path`; `Ok` once the `101` has arrived, after
    /// which bytes go through the tunnel unparsed ([`RawConn::echo`]).
    pub(crate) async fn upgrade(&mut self, path: &str) -> io::Result<()> {
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: pipegate.test\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        );
        self.send(request.as_bytes()).await?;
        match self.read_head().await? {
            (101, _) => Ok(()),
            (status, _) => Err(io::Error::other(format!("upgrade answered {status}"))),
        }
    }

    /// Sends `data` through an upgraded tunnel and reads the same number of bytes back.
    pub(crate) async fn echo(&mut self, data: &[u8]) -> io::Result<Vec<u8>> {
        self.send(data).await?;
        let mut back = vec![0u8; data.len()];
        self.io.read_exact(&mut back).await?;
        Ok(back)
    }

    /// Reads until the peer closes: `Ok(bytes)` on EOF, or the error that ended it.
    pub(crate) async fn read_to_close(&mut self) -> io::Result<usize> {
        let mut rest = Vec::new();
        self.io.read_to_end(&mut rest).await
    }
}
