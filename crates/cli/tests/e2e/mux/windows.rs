//! The real topology of `--via`: a Linux-native `pipegate serve` reaches a named pipe on
//! the Windows side through one `pipegate.exe mux` helper run under Wine, which dials the
//! pipe where a Windows Node.js HTTP server listens (`js/pipe_http_server.js`). And the
//! Windows side of helper supervision: a `pipegate.exe serve` killed hard takes its
//! helper's whole process tree along (a Job object).
//!
//! Needs what `scripts/test` exports: `PIPEGATE_WIN_EXE`, `PIPEGATE_WIN_NODE` and
//! `PIPEGATE_WIN_NODE_MODULES`. Without them the test is skipped loudly, or fails when
//! `CI=true`. Its name matches scripts/test's Windows e2e filter
//! (`windows::windows_pipegate_under_wine`), so it runs in that section, after
//! pipegate.exe is built.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::UnixStream;
use tokio::process::{Child, Command};

use super::{alive, wait_dead};
use crate::support::process::processes_with;
use crate::support::{payload, sha256, within, Proc, TestEnv};
use crate::windows::{tools, unique_pipe_name, windows_path, wine_run, WinTools};

/// A Wine process's first start in a fresh prefix takes ~10 s; allow for a loaded machine.
const WINE_STARTUP: Duration = Duration::from_secs(90);
/// One HTTP exchange through the helper.
const EXCHANGE: Duration = Duration::from_secs(60);
/// Concurrent client connections, each with its own request.
const CONCURRENT: usize = 50;
const POST_BYTES: usize = 1024 * 1024;

/// The Windows Node.js HTTP server on `\\.\pipe\NAME`, killed when dropped.
struct NodeServer {
    child: Child,
    err: PathBuf,
}

impl NodeServer {
    async fn start(tools: &WinTools, env: &TestEnv, pipe: &str) -> NodeServer {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2e/js/pipe_http_server.js");
        let ready = env.path("server-ready.json");
        let err = env.path("node.err");
        let mut cmd = Command::new(wine_run());
        cmd.arg(&tools.node)
            .arg(windows_path(&script))
            .arg(pipe)
            .arg(windows_path(&ready))
            .arg("300000")
            .env("WINEDEBUG", "-all")
            .env("NODE_SKIP_PLATFORM_CHECK", "1")
            .env("NODE_PATH", windows_path(&tools.node_modules))
            .stdin(Stdio::null())
            // Node under Wine cannot use a Linux pipe: files.
            .stdout(std::fs::File::create(env.path("node.out")).expect("node stdout file"))
            .stderr(std::fs::File::create(&err).expect("node stderr file"))
            .kill_on_drop(true);
        let mut child = cmd.spawn().expect("spawn node.exe under Wine");
        let deadline = Instant::now() + WINE_STARTUP;
        loop {
            if let Ok(text) = std::fs::read_to_string(&ready) {
                let info: Value = serde_json::from_str(text.trim()).expect("ready JSON");
                assert_eq!(info["platform"], "win32", "{info}");
                break;
            }
            if let Some(status) = child.try_wait().expect("poll node.exe") {
                panic!(
                    "node.exe exited ({status}) before it was ready: {}",
                    std::fs::read_to_string(&err).unwrap_or_default()
                );
            }
            assert!(Instant::now() < deadline, "node.exe was not ready in time");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        NodeServer { child, err }
    }
}

impl Drop for NodeServer {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "----- node.exe stderr -----\n{}",
                std::fs::read_to_string(&self.err).unwrap_or_default()
            );
        }
        let _ = self.child.start_kill();
    }
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

async fn http1(endpoint: &str) -> Sender {
    let path = endpoint.strip_prefix("unix://").expect("a unix endpoint");
    let stream = UnixStream::connect(path).await.expect("connect to serve");
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("HTTP/1.1 handshake");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    sender
}

/// One request; returns the status, one header and the body.
async fn exchange(
    sender: &mut Sender,
    method: &str,
    path: &str,
    body: Bytes,
    header: &str,
) -> (StatusCode, String, Bytes) {
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "localhost")
        .body(Full::new(body))
        .expect("request");
    within(EXCHANGE, "an exchange through the Wine helper", async {
        let response = sender.send_request(request).await.expect("send");
        let status = response.status();
        let value = response
            .headers()
            .get(header)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        (status, value, body)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windows_pipegate_under_wine_mux_helper_carries_every_connection_to_a_named_pipe() {
    let Some(tools) = tools() else { return };
    let started = Instant::now();
    let env = TestEnv::new();
    let pipe = unique_pipe_name("mux");
    let _node = NodeServer::start(&tools, &env, &pipe).await;

    // The helper: pipegate.exe mux under Wine, through a script that logs each start.
    let starts = env.path("helper.starts");
    let script = env.path("helper.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho \"$$\" >> '{}'\nWINEDEBUG=-all; export WINEDEBUG\n\
             exec '{}' '{}' mux --allow 'npipe://{pipe}'\n",
            starts.display(),
            wine_run().display(),
            tools.exe.display()
        ),
    )
    .expect("write the helper script");
    let via = format!("exec:/bin/sh {}", script.display());
    let listen = format!("unix://{}", env.sock("in.sock").display());
    let upstream = format!("npipe://{pipe}");
    let (mut serve, endpoint) = env
        .serve(&[
            "--listen",
            &listen,
            "--upstream",
            &upstream,
            "--via",
            &via,
            "--connect-timeout",
            "20s",
        ])
        .await;
    let ready = started.elapsed();

    // GET, then 1 MiB POSTed and echoed on the same connection.
    let mut sender = http1(&endpoint).await;
    let (status, seen_via, body) =
        exchange(&mut sender, "GET", "/hello", Bytes::new(), "x-seen-via").await;
    assert_eq!(status, StatusCode::OK, "{}", serve.dump());
    assert_eq!(body, "hello from windows");
    assert_eq!(seen_via, "1.1 pipegate");
    let data = Bytes::from(payload(11, POST_BYTES));
    let (status, digest, body) =
        exchange(&mut sender, "POST", "/echo", data.clone(), "x-body-sha256").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(digest, sha256(&data), "the Windows server's checksum");
    assert_eq!(sha256(&body), sha256(&data), "the echo's checksum");

    // Many client connections at once, each its own request.
    let mut tasks = Vec::new();
    for i in 0..CONCURRENT {
        let endpoint = endpoint.clone();
        tasks.push(tokio::spawn(async move {
            let mut sender = http1(&endpoint).await;
            let path = format!("/item/{i}");
            let (status, _, body) = exchange(&mut sender, "GET", &path, Bytes::new(), "via").await;
            assert_eq!(status, StatusCode::OK, "request {i}");
            assert_eq!(body, format!("item {i} from windows"));
        }));
    }
    within(EXCHANGE * 2, "the concurrent requests", async {
        for task in tasks {
            task.await.expect("client task");
        }
    })
    .await;
    let (_, _, stats) = exchange(&mut sender, "GET", "/stats", Bytes::new(), "via").await;
    let stats: Value = serde_json::from_slice(&stats).expect("stats JSON");
    assert!(
        stats["requests"].as_u64() >= Some(2 + CONCURRENT as u64),
        "the Windows server saw every request: {stats}"
    );

    // One helper process carried all of it.
    let pids: Vec<u32> = std::fs::read_to_string(&starts)
        .expect("the helper's start log")
        .lines()
        .map(|l| l.trim().parse().expect("a pid"))
        .collect();
    assert_eq!(pids.len(), 1, "one helper for every connection: {pids:?}");
    assert!(alive(pids[0]), "the helper is still running");

    // And it goes away with serve.
    serve.signal("TERM");
    let status = serve.wait_exit(Duration::from_secs(30)).await;
    assert_eq!(status.code(), Some(0), "exit status\n{}", serve.dump());
    wait_dead(pids[0], "the Wine helper after serve exited").await;
    eprintln!(
        "windows mux: serve ready (helper answered) after {ready:.1?}; {} requests over one \
         helper; whole test {:.1?}",
        stats["requests"],
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windows_pipegate_under_wine_killed_hard_takes_its_helper_tree_along() {
    let Some(tools) = tools() else { return };
    let pipe = unique_pipe_name("mux");
    // A helper with a child of its own that ignores stdin: cmd starts a long ping in the
    // background, then runs the mux on its stdio. The ping count marks it as this test's.
    let count = 600 + std::process::id() % 1000;
    let ping = format!("ping.exe -n {count} 127.0.0.1");
    let via = format!(
        "exec:cmd.exe /c start /b ping -n {count} 127.0.0.1 <NUL >NUL & '{}' mux --allow \
         npipe://{pipe}",
        windows_path(&tools.exe)
    );
    let listen = format!("npipe://{pipe}-in");
    let upstream = format!("npipe://{pipe}");
    let mut cmd = Command::new(wine_run());
    cmd.arg(&tools.exe)
        .args([
            "serve",
            "--no-discovery",
            "--mode",
            "raw",
            "--listen",
            &listen,
        ])
        .args(["--upstream", &upstream, "--via", &via])
        .env("WINEDEBUG", "-all")
        .stdin(Stdio::null());
    let mut serve = Proc::spawn("pipegate.exe serve --via (Wine)", cmd, true);
    serve.wait_listening(WINE_STARTUP).await;
    let mux = format!("mux --allow npipe://{pipe}");
    let tree = within(WINE_STARTUP, "the helper's ping and mux", async {
        loop {
            let (pings, muxes) = (processes_with(&ping), processes_with(&mux));
            if !pings.is_empty() && !muxes.is_empty() {
                break [pings, muxes].concat();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;

    // No goodbye: the system closes serve's handles, the last one to the helper's job.
    serve.signal("KILL");
    serve.wait_exit(Duration::from_secs(30)).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while tree.iter().any(|&pid| alive(pid)) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let left: Vec<u32> = tree.iter().copied().filter(|&pid| alive(pid)).collect();
    for &pid in &left {
        let _ = std::process::Command::new("kill")
            .args(["-s", "KILL", &pid.to_string()])
            .status();
    }
    assert!(
        left.is_empty(),
        "the helper's tree outlived a hard-killed serve: {left:?} still running ({ping}, {mux})"
    );
}
