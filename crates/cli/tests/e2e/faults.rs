//! Faults around a running `pipegate serve`, against real upstream processes
//! (`py/upstream.py`) that the tests kill with SIGKILL and start again: responses cut
//! mid-body reach the client as errors (never as a complete-looking body), the bridge
//! keeps serving and reaches a restarted upstream without being restarted itself; a
//! client that vanishes mid-upload cancels the upstream request; SIGTERM with an open
//! WebSocket tunnel, or with an attached PTY session of the agent, ends them within the
//! grace period and removes the socket file and the instance record.
//!
//! A panic in a connection's task is contained and logged: proven in-process, where a
//! service can be made to panic (`crates/proxy/tests/logging.rs`), since the binary has no
//! way to panic on purpose.

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt as _;
use http::StatusCode;
use http_body_util::BodyExt as _;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

use crate::support::http1::{connect, get, metric, metrics, request, send, RawConn};
use crate::support::process::{alive, child_named, wait_dead, PyUpstream};
use crate::support::{dial, eventually, within, Proc, TestEnv};

const STEP: Duration = Duration::from_secs(30);

/// The instance record `serve --name NAME` writes in `env`.
fn record(env: &TestEnv, name: &str) -> PathBuf {
    env.state_home()
        .join("pipegate/instances")
        .join(format!("{name}.json"))
}

/// Reads a response body to its end: `Ok(bytes)` when it ended cleanly, `Err` when the
/// connection broke first.
async fn read_body(body: hyper::body::Incoming) -> Result<usize, hyper::Error> {
    let mut body = body;
    let mut total = 0;
    while let Some(frame) = within(STEP, "a body frame", body.frame()).await {
        if let Some(data) = frame?.data_ref() {
            total += data.len();
        }
    }
    Ok(total)
}

/// SIGTERM, then a clean exit (bounded by `limit`, a hang guard).
async fn terminate(serve: &mut Proc, limit: Duration) {
    serve.signal("TERM");
    let status = serve.wait_exit(limit).await;
    assert_eq!(status.code(), Some(0), "exit status\n{}", serve.dump());
}

/// The upstream dies mid-response (a chunked body, a Content-Length body and a tunnel in
/// flight): each client sees its response break, not end; the bridge answers 502 while
/// nothing listens and reaches the restarted upstream on the same connection afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_upstream_breaks_its_responses_and_a_restarted_one_serves_again() {
    let env = TestEnv::new();
    let mut upstream = PyUpstream::unix(&env.sock("up.sock")).await;
    let listen = format!("unix://{}", env.sock("in.sock").display());
    let (serve, endpoint) = env
        .serve(&[
            "--name",
            "faults",
            "--listen",
            &listen,
            "--upstream",
            &upstream.endpoint,
        ])
        .await;

    let mut kept = connect(&endpoint).await;
    let resp = send(&mut kept, request("GET", "/hello", Bytes::new())).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(read_body(resp.into_body()).await.expect("hello"), 20);

    // In flight when the upstream dies: two slow bodies (first bytes read) and a tunnel.
    let mut chunked = connect(&endpoint).await;
    let chunked = send(&mut chunked, request("GET", "/stream", Bytes::new())).await;
    assert_eq!(chunked.status(), StatusCode::OK);
    let mut chunked = chunked.into_body();
    within(STEP, "the first chunk", chunked.frame())
        .await
        .expect("a frame")
        .expect("the first chunk");
    let mut sized = connect(&endpoint).await;
    let sized = send(
        &mut sized,
        request("GET", "/stream?length=10000000", Bytes::new()),
    )
    .await;
    assert_eq!(sized.status(), StatusCode::OK);
    let mut sized = sized.into_body();
    within(STEP, "the first bytes", sized.frame())
        .await
        .expect("a frame")
        .expect("the first bytes");
    let mut tunnel = RawConn::open(&endpoint).await;
    within(STEP, "the upgrade", tunnel.upgrade("/ws"))
        .await
        .expect("upgrade");
    let back = within(STEP, "an echo", tunnel.echo(b"ping")).await;
    assert_eq!(back.expect("echo"), b"ping");

    upstream.kill().await;

    let chunked = read_body(chunked).await;
    assert!(
        chunked.is_err(),
        "the chunked body ended cleanly ({chunked:?} bytes) though the upstream died mid-way"
    );
    let sized = read_body(sized).await;
    assert!(
        sized.is_err(),
        "the Content-Length body ended cleanly ({sized:?} bytes) though the upstream died"
    );
    let closed = within(STEP, "the tunnel to close", tunnel.read_to_close()).await;
    assert!(
        matches!(closed, Ok(0) | Err(_)),
        "bytes after the upstream died: {closed:?}"
    );

    // Still serving: its own endpoints, and a 502 naming the upstream while it is down.
    let (status, _) = get(&endpoint, "/_pipegate/health").await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let resp = send(&mut kept, request("GET", "/hello", Bytes::new())).await;
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
    let body = resp
        .into_body()
        .collect()
        .await
        .expect("502 body")
        .to_bytes();
    let text = String::from_utf8_lossy(&body);
    assert!(text.contains(&upstream.endpoint), "{text}");

    // Restarted: the same kept-alive client connection, and a new one, get through.
    upstream.restart().await;
    let resp = send(&mut kept, request("GET", "/hello", Bytes::new())).await;
    assert_eq!(resp.status(), StatusCode::OK, "{}", serve.dump());
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    assert_eq!(&body[..], b"hello from upstream\n");
    let (status, body) = get(&endpoint, "/hello").await;
    assert_eq!(
        (status, &body[..]),
        (StatusCode::OK, &b"hello from upstream\n"[..])
    );

    // Nothing left behind once the clients have gone: no tunnel, and no connection but
    // the metrics request's own.
    drop(kept);
    eventually(STEP, "the connections to close", || async {
        let text = metrics(&endpoint).await;
        let open = metric(&text, "pipegate_connections_open{transport=\"unix\"}");
        (open == 1 && metric(&text, "pipegate_tunnels_open") == 0)
            .then_some(())
            .ok_or(text)
    })
    .await;
    assert!(alive(serve.pid()), "the same pipegate served throughout");
}

/// A client that disappears halfway through a request body: the upstream sees its
/// request end early (the bridge drops the upstream request), not a request left hanging.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_vanishing_mid_upload_cancels_the_upstream_request() {
    const DECLARED: usize = 1_000_000;
    let env = TestEnv::new();
    let upstream = PyUpstream::unix(&env.sock("up.sock")).await;
    let listen = format!("unix://{}", env.sock("in.sock").display());
    let (_serve, endpoint) = env
        .serve(&["--listen", &listen, "--upstream", &upstream.endpoint])
        .await;

    let mut client = RawConn::open(&endpoint).await;
    let head = format!(
        "POST /upload HTTP/1.1\r\nHost: pipegate.test\r\nContent-Length: {DECLARED}\r\n\r\n"
    );
    client.send(head.as_bytes()).await.expect("send the head");
    client
        .send(&vec![b'u'; 64 * 1024])
        .await
        .expect("send a part of the body");
    let progress = upstream.event("upload-progress ").await;
    drop(client);

    let aborted = upstream.event("upload-aborted ").await;
    let received: usize = aborted["upload-aborted ".len()..]
        .split(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unexpected event: {aborted}"));
    assert!(
        received < DECLARED,
        "{progress}; then {aborted}: the upstream got the whole body?"
    );
    assert!(
        !upstream.proc.stderr_text().contains("upload-complete"),
        "{}",
        upstream.proc.dump()
    );
    // And the bridge carries on.
    let (status, body) = get(&endpoint, "/hello").await;
    assert_eq!(
        (status, &body[..]),
        (StatusCode::OK, &b"hello from upstream\n"[..])
    );
}

/// SIGTERM while a WebSocket tunnel is open and busy: the socket file goes at once, the
/// tunnel is closed when the grace period ends, the process exits 0 and its instance
/// record is removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_an_open_tunnel_and_removes_socket_and_record() {
    let env = TestEnv::new();
    let upstream = PyUpstream::unix(&env.sock("up.sock")).await;
    let sock = env.sock("in.sock");
    let listen = format!("unix://{}", sock.display());
    let (mut serve, endpoint) = env
        .serve(&[
            "--name",
            "tunnel",
            "--listen",
            &listen,
            "--upstream",
            &upstream.endpoint,
            "--shutdown-grace",
            "1s",
        ])
        .await;
    assert!(record(&env, "tunnel").exists());
    let mut tunnel = RawConn::open(&endpoint).await;
    within(STEP, "the upgrade", tunnel.upgrade("/ws"))
        .await
        .expect("upgrade");
    assert_eq!(tunnel.echo(b"before").await.expect("echo"), b"before");

    serve.signal("TERM");
    // Draining: the tunnel still carries bytes until the grace period is over.
    assert_eq!(tunnel.echo(b"during").await.expect("echo"), b"during");
    let status = serve.wait_exit(Duration::from_secs(15)).await;
    assert_eq!(status.code(), Some(0), "exit status\n{}", serve.dump());
    let closed = within(STEP, "the tunnel to close", tunnel.read_to_close()).await;
    assert!(matches!(closed, Ok(0) | Err(_)), "{closed:?}");
    assert!(!sock.exists(), "socket file removed");
    assert!(!record(&env, "tunnel").exists(), "instance record removed");
    let log = serve.stderr_text();
    assert!(log.contains("draining open connections"), "{log}");
    assert!(log.contains("closing the remaining connections"), "{log}");
}

/// SIGTERM to the agent while a client is attached to a PTY session whose shell waits
/// on a child: the process exits 0 (the grace period bounds how long it may take), the
/// attached client's WebSocket ends, the session's processes are gone, and the socket
/// file and the instance record are removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_an_attached_pty_session_and_removes_socket_and_record() {
    let env = TestEnv::new();
    let sock = env.sock("agent.sock");
    let listen = format!("unix://{}", sock.display());
    let (mut serve, endpoint) = env
        .serve(&[
            "--name",
            "agent",
            "--listen",
            &listen,
            "--shutdown-grace",
            "2s",
        ])
        .await;
    assert!(record(&env, "agent").exists());

    let mut client = connect(&endpoint).await;
    let create = br#"{"argv":["sh","-c","sleep 300; echo never"],"tty":true}"#;
    let mut req = request("POST", "/v1/sessions", &create[..]);
    req.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    let resp = send(&mut client, req).await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    let created: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
    let id = created["id"].as_str().expect("id").to_owned();
    let shell = u32::try_from(created["pid"].as_u64().expect("pid")).expect("a pid");

    let mut ws_req = format!("ws://pipegate.test/v1/sessions/{id}/attach")
        .into_client_request()
        .expect("a WebSocket request");
    ws_req.headers_mut().insert(
        http::header::SEC_WEBSOCKET_PROTOCOL,
        http::HeaderValue::from_static("pipegate.pty.v1"),
    );
    let (mut ws, _) = within(
        STEP,
        "the attach handshake",
        tokio_tungstenite::client_async(ws_req, dial(&endpoint).await),
    )
    .await
    .expect("attach");
    // The shell has started its child: the session is really running.
    let sleeper = eventually(STEP, "a `sleep` under the session's shell", || async {
        child_named(shell, "sleep").ok_or_else(|| serve.dump())
    })
    .await;

    terminate(&mut serve, Duration::from_secs(15)).await;
    // The attached client's stream ends (a close frame, an error or EOF).
    within(STEP, "the attached WebSocket to end", async {
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
    wait_dead(shell, "the session's shell").await;
    wait_dead(sleeper, "the shell's child").await;
    assert!(!sock.exists(), "socket file removed");
    assert!(!record(&env, "agent").exists(), "instance record removed");
}
