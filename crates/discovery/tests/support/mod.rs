//! Helpers for the discovery tests: deadlines, temp registries, the native local endpoint
//! of this OS, a dead pid, and a real health server with a chosen behaviour.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use pipegate_discovery::Registry;
use pipegate_transport::{Endpoint, ListenOptions, Listener};
use tokio::task::JoinHandle;

/// The budget for one ordinary step.
pub(crate) const STEP: Duration = Duration::from_secs(20);

/// Runs `fut`, panicking with `what` if it takes longer than `limit`.
pub(crate) async fn within<F: Future>(limit: Duration, fut: F, what: &str) -> F::Output {
    match tokio::time::timeout(limit, fut).await {
        Ok(out) => out,
        Err(_) => panic!("timed out after {limit:?}: {what}"),
    }
}

/// A fresh temporary directory with a short path (socket paths stay short).
pub(crate) fn temp_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("pgd")
        .tempdir()
        .expect("create a temp dir")
}

/// A registry rooted in `dir` (records in `dir/pipegate/instances`).
pub(crate) fn registry(dir: &tempfile::TempDir) -> Registry {
    Registry::new(dir.path().join("pipegate"))
}

/// A name no other test in this process uses.
pub(crate) fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// The local transport of this OS: a Unix socket in `dir`, or a named pipe.
#[cfg(unix)]
pub(crate) fn native_endpoint(dir: &tempfile::TempDir, tag: &str) -> Endpoint {
    let path = dir.path().join(format!("{tag}.sock"));
    Endpoint::parse(path.to_str().expect("UTF-8 temp path")).expect("valid socket path")
}

/// The local transport of this OS: a Unix socket in `dir`, or a named pipe.
#[cfg(windows)]
pub(crate) fn native_endpoint(_dir: &tempfile::TempDir, tag: &str) -> Endpoint {
    Endpoint::parse(&format!("npipe://{}", unique(&format!("pgd-{tag}")))).expect("valid pipe")
}

/// The pid of a process that has exited and been reaped: this test binary run with
/// `--list`, which prints the test names and exits.
pub(crate) fn dead_pid() -> u32 {
    let mut child = std::process::Command::new(std::env::current_exe().expect("current exe"))
        .arg("--list")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn the test binary");
    let pid = child.id();
    child.wait().expect("wait for it");
    pid
}

/// A live process that is not this one (it waits on its stdin); killed when dropped.
#[derive(Debug)]
pub(crate) struct LiveProcess(std::process::Child);

impl LiveProcess {
    pub(crate) fn spawn() -> LiveProcess {
        let mut cmd = if cfg!(windows) {
            let mut cmd = std::process::Command::new("cmd");
            cmd.args(["/c", "set /p x="]);
            cmd
        } else {
            std::process::Command::new("cat")
        };
        let child = cmd
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn a waiting process");
        LiveProcess(child)
    }

    pub(crate) fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for LiveProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What a test health server does with each connection.
#[derive(Debug, Clone)]
pub(crate) enum Behavior {
    /// `GET /_pipegate/health` → 204 with this nonce.
    Nonce(String),
    /// Every request → this status, no nonce.
    Status(u16),
    /// Accept, read nothing, answer nothing, keep the connection open.
    Hang,
    /// Accept and close at once.
    Close,
}

/// A server on a real listener; stops when dropped.
#[derive(Debug)]
pub(crate) struct Server {
    pub(crate) endpoint: Endpoint,
    task: JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Binds `endpoint` and serves `behavior` on it.
pub(crate) async fn serve(endpoint: &Endpoint, behavior: Behavior) -> Server {
    let listener = Listener::bind(endpoint, &ListenOptions::new())
        .await
        .unwrap_or_else(|e| panic!("bind {endpoint}: {e}"));
    serve_on(listener, behavior)
}

/// Serves `behavior` on an already bound listener.
pub(crate) fn serve_on(mut listener: Listener, behavior: Behavior) -> Server {
    let endpoint = listener.local_endpoint().clone();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok(stream) = listener.accept().await {
            match behavior.clone() {
                Behavior::Hang => held.push(stream),
                Behavior::Close => drop(stream),
                Behavior::Nonce(nonce) => {
                    tokio::spawn(answer(stream, Some(nonce), 204));
                }
                Behavior::Status(code) => {
                    tokio::spawn(answer(stream, None, code));
                }
            }
        }
    });
    Server { endpoint, task }
}

async fn answer(stream: pipegate_transport::Stream, nonce: Option<String>, status: u16) {
    let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
        let nonce = nonce.clone();
        async move {
            let mut resp = http::Response::new(Empty::<Bytes>::new());
            if req.uri().path() == "/_pipegate/health" {
                *resp.status_mut() = http::StatusCode::from_u16(status).expect("status");
                if let Some(nonce) = nonce {
                    resp.headers_mut()
                        .insert("x-pipegate-nonce", nonce.parse().expect("header value"));
                }
            } else {
                *resp.status_mut() = http::StatusCode::NOT_FOUND;
            }
            Ok::<_, Infallible>(resp)
        }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .await;
}
