//! Helpers for the agent's integration tests: the agent served in-process through
//! `pipegate-proxy`'s [`Bridge`] on a private Unix socket (as `pipegate serve` does), a
//! plain hyper HTTP client, and a tokio-tungstenite WebSocket client that speaks the
//! channel protocol. Clients use plain tokio sockets, independent of the code under test.
//!
//! Every wait is bounded; a failing wait prints what the client had received.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use pipegate_agent::{Agent, Limits};
use pipegate_proxy::{Bridge, Config, LocalService, ResBody};
use pipegate_transport::{Endpoint, Mode};
use tokio::net::UnixStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// The budget for one ordinary step.
pub const STEP: Duration = Duration::from_secs(15);

/// Runs `fut`, panicking with `what` if it takes longer than `limit`.
pub async fn within<F: Future>(limit: Duration, what: &str, fut: F) -> F::Output {
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
        assert!(
            Instant::now() < deadline,
            "not true within {limit:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The agent as `pipegate serve` mounts it.
struct AgentService(Agent);

impl LocalService for AgentService {
    fn call(
        &self,
        request: Request<hyper::body::Incoming>,
        transport: Mode,
    ) -> Pin<Box<dyn Future<Output = http::Response<ResBody>> + Send>> {
        let agent = self.0.clone();
        Box::pin(async move {
            agent
                .handle(request, transport)
                .await
                .map(|body| Full::new(body).map_err(|never| match never {}).boxed())
        })
    }
}

/// An agent behind a bridge on `unix://DIR/agent.sock`; stopped when dropped.
pub struct Server {
    pub dir: tempfile::TempDir,
    pub sock: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.abort();
    }
}

impl Server {
    pub async fn start() -> Server {
        Server::start_with(Limits::default()).await
    }

    pub async fn start_with(limits: Limits) -> Server {
        let dir = tempfile::Builder::new()
            .prefix("pga")
            .tempdir_in("/tmp")
            .expect("temp dir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        let sock = dir.path().join("agent.sock");
        let endpoint = Endpoint::Unix(sock.to_string_lossy().into_owned());
        let service = Arc::new(AgentService(Agent::with_limits(limits)));
        let bridge = Bridge::bind(Config::local(vec![endpoint], service))
            .await
            .expect("bind the bridge");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = bridge
                .serve(async {
                    let _ = stopped.await;
                })
                .await;
        });
        Server {
            dir,
            sock,
            stop: Some(stop),
            task,
        }
    }

    /// A file path inside the server's private directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// One HTTP/1.1 request on a fresh connection; the body as JSON (`Null` if empty).
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> (StatusCode, serde_json::Value) {
        let stream = within(STEP, "connect", UnixStream::connect(&self.sock))
            .await
            .expect("connect to the agent socket");
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("http handshake");
        tokio::spawn(conn);
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "localhost")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.unwrap_or("").to_owned())))
            .unwrap();
        let resp = within(STEP, "response", sender.send_request(req))
            .await
            .expect("request");
        let status = resp.status();
        let bytes = within(STEP, "body", resp.into_body().collect())
            .await
            .expect("body")
            .to_bytes();
        let json = if bytes.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&bytes)))
        };
        (status, json)
    }

    /// `POST /v1/sessions`, expecting 201; returns the id.
    pub async fn create(&self, body: serde_json::Value) -> String {
        let (status, json) = self
            .request("POST", "/v1/sessions", Some(&body.to_string()))
            .await;
        assert_eq!(status, StatusCode::CREATED, "create {body}: {json}");
        json["id"].as_str().expect("id").to_owned()
    }

    /// `GET /v1/sessions/{id}`.
    pub async fn session(&self, id: &str) -> (StatusCode, serde_json::Value) {
        self.request("GET", &format!("/v1/sessions/{id}"), None)
            .await
    }

    /// Waits until the session reports `exited`; returns its `exit`.
    pub async fn wait_exited(&self, id: &str) -> serde_json::Value {
        eventually(STEP, "the session to report exited", || async {
            let (status, json) = self.session(id).await;
            assert_eq!(status, StatusCode::OK, "{json}");
            (json["state"] == "exited").then(|| json["exit"].clone())
        })
        .await
    }

    /// Attaches with `pipegate.pty.v1`.
    pub async fn attach(&self, id: &str) -> Client {
        self.attach_with(id, &["pipegate.pty.v1"])
            .await
            .unwrap_or_else(|e| panic!("attach {id}: {e}"))
    }

    /// Attaches offering `protocols`; the handshake error on refusal.
    pub async fn attach_with(
        &self,
        id: &str,
        protocols: &[&str],
    ) -> Result<Client, tokio_tungstenite::tungstenite::Error> {
        let stream = UnixStream::connect(&self.sock).await.expect("connect");
        let mut req = format!("ws://localhost/v1/sessions/{id}/attach")
            .into_client_request()
            .unwrap();
        if !protocols.is_empty() {
            req.headers_mut().insert(
                "sec-websocket-protocol",
                protocols.join(", ").parse().unwrap(),
            );
        }
        // Big enough to receive anything the agent sends, and to send oversized messages.
        let mut config = WebSocketConfig::default();
        config.max_message_size = Some(64 << 20);
        config.max_frame_size = Some(64 << 20);
        let (ws, resp) = within(
            STEP,
            "websocket handshake",
            tokio_tungstenite::client_async_with_config(req, stream, Some(config)),
        )
        .await?;
        let protocol = resp
            .headers()
            .get("sec-websocket-protocol")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        Ok(Client {
            ws,
            protocol,
            stdout: Vec::new(),
            stderr: Vec::new(),
            status: None,
            close: None,
        })
    }
}

/// What the agent sent, one message at a time.
#[derive(Debug)]
pub enum Frame {
    Data(u8, Vec<u8>),
    Close(Option<(u16, String)>),
    /// The connection ended without a Close frame.
    Gone,
}

/// A WebSocket client of one session. Output is collected as it arrives.
pub struct Client {
    pub ws: WebSocketStream<UnixStream>,
    /// The subprotocol the agent selected.
    pub protocol: String,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// The channel-3 JSON, once received.
    pub status: Option<serde_json::Value>,
    /// The close code and reason, once received.
    pub close: Option<(u16, String)>,
}

impl Client {
    pub async fn send(&mut self, channel: u8, payload: &[u8]) {
        let mut msg = Vec::with_capacity(payload.len() + 1);
        msg.push(channel);
        msg.extend_from_slice(payload);
        within(STEP, "send", self.ws.send(Message::Binary(msg.into())))
            .await
            .expect("send a message");
    }

    pub async fn stdin(&mut self, data: &[u8]) {
        self.send(0, data).await;
    }

    pub async fn resize(&mut self, width: u32, height: u32) {
        let json = format!(r#"{{"Width":{width},"Height":{height}}}"#);
        self.send(4, json.as_bytes()).await;
    }

    pub async fn signal(&mut self, name: &str) {
        let json = format!(r#"{{"Signal":"{name}"}}"#);
        self.send(5, json.as_bytes()).await;
    }

    pub async fn eof(&mut self) {
        self.send(255, &[0]).await;
    }

    /// The next message (without a time limit; wrap it in `within`).
    pub async fn next(&mut self) -> Frame {
        loop {
            match self.ws.next().await {
                Some(Ok(Message::Binary(data))) => {
                    let Some((&ch, payload)) = data.split_first() else {
                        panic!("empty binary message");
                    };
                    match ch {
                        1 => self.stdout.extend_from_slice(payload),
                        2 => self.stderr.extend_from_slice(payload),
                        3 => self.status = Some(serde_json::from_slice(payload).expect("status")),
                        _ => {}
                    }
                    return Frame::Data(ch, payload.to_vec());
                }
                Some(Ok(Message::Close(frame))) => {
                    let close = frame.map(|f| (u16::from(f.code), f.reason.to_string()));
                    self.close = close.clone();
                    return Frame::Close(close);
                }
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return Frame::Gone,
            }
        }
    }

    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// Reads until stdout contains `needle`; fails on the status, a close, or time out.
    pub async fn wait_stdout(&mut self, needle: &str) {
        let deadline = Instant::now() + STEP;
        while !self.stdout_text().contains(needle) {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.next()).await {
                Ok(Frame::Data(3, _)) | Ok(Frame::Close(_)) | Ok(Frame::Gone) => panic!(
                    "the session ended before printing {needle:?}; stdout:\n{}\nstatus: {:?}",
                    self.stdout_text(),
                    self.status
                ),
                Ok(Frame::Data(..)) => {}
                Err(_) => panic!(
                    "no {needle:?} within {STEP:?}; stdout so far:\n{}",
                    self.stdout_text()
                ),
            }
        }
    }

    /// Reads to the end: returns the status JSON and the close code. Everything after
    /// the status must be the Close frame.
    pub async fn finish(&mut self) -> (serde_json::Value, u16) {
        let deadline = Instant::now() + STEP;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let had_status = self.status.is_some();
            let frame = tokio::time::timeout(left, self.next())
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "no status and close within {STEP:?}; stdout:\n{}",
                        self.stdout_text()
                    )
                });
            match frame {
                Frame::Data(ch, _) => {
                    assert!(!had_status, "channel {ch} message after the status");
                }
                Frame::Close(close) => {
                    let status = self.status.clone().unwrap_or_else(|| {
                        panic!(
                            "closed ({close:?}) without a status; stdout:\n{}",
                            self.stdout_text()
                        )
                    });
                    let (code, _) = close.expect("a close code");
                    return (status, code);
                }
                Frame::Gone => panic!(
                    "connection ended without a Close; status {:?}, stdout:\n{}",
                    self.status,
                    self.stdout_text()
                ),
            }
        }
    }

    /// Reads until the agent closes; returns the close code and reason (failing on a
    /// connection that ends without a Close frame).
    pub async fn wait_close(&mut self) -> (u16, String) {
        loop {
            match within(STEP, "the agent's close", self.next()).await {
                Frame::Close(Some(close)) => return close,
                Frame::Close(None) => panic!("close without a code"),
                Frame::Gone => panic!("connection ended without a Close frame"),
                Frame::Data(..) => {}
            }
        }
    }
}

/// The close code for a normal closure.
pub fn normal() -> u16 {
    u16::from(CloseCode::Normal)
}

/// The exit code in a status JSON (`0` for Success).
pub fn exit_code(status: &serde_json::Value) -> u8 {
    if status["status"] == "Success" {
        return 0;
    }
    let causes = status["details"]["causes"].as_array().expect("causes");
    causes
        .iter()
        .find(|c| c["reason"] == "ExitCode")
        .and_then(|c| c["message"].as_str())
        .and_then(|m| m.parse().ok())
        .unwrap_or_else(|| panic!("no exit code in {status}"))
}

/// The signal name in a status JSON, if any.
pub fn exit_signal(status: &serde_json::Value) -> Option<String> {
    status["details"]["causes"]
        .as_array()?
        .iter()
        .find(|c| c["reason"] == "Signal")
        .and_then(|c| c["message"].as_str())
        .map(str::to_owned)
}
