//! The security checks of HTTP mode over real sockets: the bearer token, `Host` and
//! `Origin` on guarded TCP listeners (and their absence on Unix sockets), request
//! smuggling shapes refused before anything is forwarded, the upstream token, and
//! secrets kept out of the logs.
//!
//! Every check here fails if its protection is removed: the recording upstream must see
//! none of the refused requests, and refusals must carry pipegate's `x-pipegate-error`.
#![cfg(unix)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::convert::Infallible;
use std::io;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use pipegate_proxy::{Bridge, Config, Error, ForwardMode, TcpAccess};
use pipegate_transport::Endpoint;
use support::*;
use tokio::io::AsyncWriteExt;
use tokio::net::UnixListener;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

/// The token the guarded bridges require.
const TOKEN: &str = "5f0c1a7e9b3d42e8a6c4f1d0b2e9a7c3-test-token";

/// A bridge config whose TCP listeners are guarded (token, Host, Origin), with one extra
/// allowed origin.
fn guarded(listen: Vec<Endpoint>, upstream: Endpoint) -> Config {
    http_config(listen, upstream).tcp_access(
        TcpAccess::guarded(Some(TOKEN.to_owned()))
            .allow_origins(vec!["https://app.example".to_owned()]),
    )
}

/// `host:port` of a TCP endpoint, as a client would put it in `Host`.
fn authority(endpoint: &Endpoint) -> String {
    match endpoint {
        Endpoint::Tcp { host, port } => format!("{host}:{port}"),
        other => panic!("not TCP: {other}"),
    }
}

/// One request written as raw bytes; everything the bridge sends back until it closes.
async fn raw(endpoint: &Endpoint, request: &[u8]) -> String {
    let mut io = within(STEP, dial(endpoint), "dial the bridge")
        .await
        .expect("dial the bridge");
    io.write_all(request).await.expect("send the request");
    let answer = within(
        STEP,
        read_to_close(&mut io),
        "the bridge to answer and close",
    )
    .await;
    String::from_utf8_lossy(&answer).into_owned()
}

/// `GET path` with `Connection: close` and these extra header lines.
fn get_with(path: &str, host: &str, extra: &[&str]) -> Vec<u8> {
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n");
    for line in extra {
        req.push_str(line);
        req.push_str("\r\n");
    }
    req.push_str("Connection: close\r\n\r\n");
    req.into_bytes()
}

/// The status codes of every response in a raw answer, in order (each framed by its
/// `Content-Length`, as all of these are).
fn statuses(answer: &str) -> Vec<u16> {
    let mut out = Vec::new();
    let mut rest = answer;
    while let Some(end) = rest.find("\r\n\r\n") {
        let head = &rest[..end];
        out.push(head_status(head));
        let len: usize = head_values(head, "content-length")
            .first()
            .map_or(0, |v| v.parse().expect("numeric length"));
        rest = &rest[(end + 4 + len).min(rest.len())..];
    }
    out
}

#[tokio::test]
async fn tcp_requests_need_the_bearer_token() {
    let dir = private_dir();
    let upstream = Upstream::start(&sock(&dir, "up.sock")).await;
    let bridge = Running::start(guarded(vec![tcp_any()], upstream.endpoint.clone())).await;
    let ep = bridge.tcp();
    let host = authority(ep);

    let answer = raw(ep, &get_with("/no-token", &host, &[])).await;
    assert_eq!(statuses(&answer), [401], "{answer}");
    assert_eq!(
        head_values(&answer, "www-authenticate"),
        [r#"Bearer realm="pipegate""#]
    );
    assert_eq!(head_values(&answer, "x-pipegate-error"), ["unauthorized"]);

    let answer = raw(
        ep,
        &get_with("/wrong-token", &host, &["Authorization: Bearer nope"]),
    )
    .await;
    assert_eq!(statuses(&answer), [401], "{answer}");
    assert_eq!(
        head_values(&answer, "www-authenticate"),
        [r#"Bearer realm="pipegate", error="invalid_token""#]
    );
    // One character off, same length: still refused.
    let almost = format!("Authorization: Bearer {}x", &TOKEN[..TOKEN.len() - 1]);
    let answer = raw(ep, &get_with("/almost", &host, &[&almost])).await;
    assert_eq!(statuses(&answer), [401], "{answer}");
    // pipegate's own endpoints are guarded too.
    let answer = raw(ep, &get_with("/_pipegate/health", &host, &[])).await;
    assert_eq!(statuses(&answer), [401], "{answer}");

    let bearer = format!("Authorization: Bearer {TOKEN}");
    let answer = raw(
        ep,
        &get_with(
            "/with-token",
            &host,
            &[&bearer, "Authorization: Basic dXBzdHJlYW0="],
        ),
    )
    .await;
    assert_eq!(statuses(&answer), [200], "{answer}");
    assert!(answer.ends_with("hello from /with-token"), "{answer}");
    let answer = raw(ep, &get_with("/_pipegate/health", &host, &[&bearer])).await;
    assert_eq!(statuses(&answer), [204], "{answer}");

    // Only the admitted request reached the upstream, without our token (the upstream's
    // own credential went through).
    let seen = upstream.seen();
    let paths: Vec<&str> = seen.iter().map(|s| s.uri.path()).collect();
    assert_eq!(paths, ["/with-token"]);
    let auth: Vec<_> = seen[0].headers.get_all("authorization").iter().collect();
    assert_eq!(auth, ["Basic dXBzdHJlYW0="]);
    bridge.stop().await;
}

#[tokio::test]
async fn a_foreign_host_is_misdirected() {
    let dir = private_dir();
    let upstream = Upstream::start(&sock(&dir, "up.sock")).await;
    let bridge = Running::start(guarded(vec![tcp_any()], upstream.endpoint.clone())).await;
    let ep = bridge.tcp();
    let bearer = format!("Authorization: Bearer {TOKEN}");
    let port = match ep {
        Endpoint::Tcp { port, .. } => *port,
        _ => unreachable!(),
    };

    // DNS rebinding: the attacker's name resolves to 127.0.0.1, the browser sends it as
    // Host. Refused even with the right token.
    for host in [
        format!("attacker.example:{port}"),
        "pipegate.test".to_owned(),
        "127.0.0.2".to_owned(),
    ] {
        let answer = raw(ep, &get_with("/rebound", &host, &[&bearer])).await;
        assert_eq!(statuses(&answer), [421], "{host}: {answer}");
        assert_eq!(
            head_values(&answer, "x-pipegate-error"),
            ["host_not_allowed"],
            "{host}"
        );
    }
    // An absolute-form target naming another host is refused as well.
    let answer = raw(
        ep,
        format!("GET http://attacker.example/rebound HTTP/1.1\r\nHost: localhost\r\n{bearer}\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .await;
    assert_eq!(statuses(&answer), [421], "{answer}");
    assert!(
        upstream.seen().is_empty(),
        "nothing forwarded: {:?}",
        upstream.seen()
    );

    for host in [
        format!("localhost:{port}"),
        "LOCALHOST".to_owned(),
        format!("127.0.0.1:{port}"),
        "[::1]".to_owned(),
    ] {
        let answer = raw(ep, &get_with("/loopback", &host, &[&bearer])).await;
        assert_eq!(statuses(&answer), [200], "{host}: {answer}");
    }
    let seen = upstream.seen();
    assert_eq!(seen.len(), 4);
    assert_eq!(
        seen[0].headers["host"],
        format!("localhost:{port}"),
        "Host is preserved"
    );
    bridge.stop().await;
}

#[tokio::test]
async fn a_foreign_origin_is_forbidden() {
    let dir = private_dir();
    let upstream = Upstream::start(&sock(&dir, "up.sock")).await;
    let bridge = Running::start(guarded(vec![tcp_any()], upstream.endpoint.clone())).await;
    let ep = bridge.tcp();
    let host = authority(ep);
    let bearer = format!("Authorization: Bearer {TOKEN}");

    for origin in [
        "https://evil.example",
        "null",
        "http://localhost.evil.example:80",
        "https://app.example:8443",
    ] {
        let line = format!("Origin: {origin}");
        let answer = raw(ep, &get_with("/cross-site", &host, &[&bearer, &line])).await;
        assert_eq!(statuses(&answer), [403], "{origin}: {answer}");
        assert_eq!(
            head_values(&answer, "x-pipegate-error"),
            ["origin_not_allowed"]
        );
    }
    assert!(
        upstream.seen().is_empty(),
        "nothing forwarded: {:?}",
        upstream.seen()
    );

    for origin in [
        "http://localhost:3000",
        "http://127.0.0.1:8080",
        "http://[::1]:1",
        "https://app.example",
    ] {
        let line = format!("Origin: {origin}");
        let answer = raw(ep, &get_with("/same-site", &host, &[&bearer, &line])).await;
        assert_eq!(statuses(&answer), [200], "{origin}: {answer}");
    }
    assert_eq!(upstream.seen().len(), 4);
    bridge.stop().await;
}

/// A WebSocket handshake to `ws://HOST/path` through the bridge, with these extra headers.
async fn ws_handshake(
    endpoint: &Endpoint,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<
    (
        tokio_tungstenite::WebSocketStream<BoxIo>,
        tokio_tungstenite::tungstenite::handshake::client::Response,
    ),
    tokio_tungstenite::tungstenite::Error,
> {
    let io = within(STEP, dial(endpoint), "dial the bridge")
        .await
        .expect("dial the bridge");
    let mut req = format!("ws://{}{path}", authority(endpoint))
        .into_client_request()
        .expect("valid ws request");
    for (name, value) in headers {
        req.headers_mut().insert(
            http::HeaderName::from_bytes(name.as_bytes()).expect("valid name"),
            HeaderValue::from_str(value).expect("valid header"),
        );
    }
    within(
        STEP,
        tokio_tungstenite::client_async(req, io),
        "WebSocket handshake",
    )
    .await
}

fn refused_with<T>(result: Result<T, tokio_tungstenite::tungstenite::Error>) -> StatusCode {
    match result {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => resp.status(),
        Err(other) => panic!("expected an HTTP refusal, got {other}"),
        Ok(_) => panic!("expected an HTTP refusal, the handshake succeeded"),
    }
}

#[tokio::test]
async fn browsers_present_the_token_as_a_websocket_subprotocol() {
    let dir = private_dir();
    let upstream = WsUpstream::start(&sock(&dir, "ws.sock")).await;
    let bridge = Running::start(guarded(vec![tcp_any()], upstream.endpoint.clone())).await;
    let ep = bridge.tcp();
    let offer = format!("{CHOSEN_PROTOCOL}, pipegate.bearer.{TOKEN}");

    let (mut ws, resp) = ws_handshake(
        ep,
        "/echo",
        &[
            ("sec-websocket-protocol", &offer),
            ("origin", "http://localhost:5173"),
        ],
    )
    .await
    .expect("the handshake with the subprotocol token succeeds");
    assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
    assert_eq!(resp.headers()["sec-websocket-protocol"], CHOSEN_PROTOCOL);
    ws.send(Message::text("through the guard"))
        .await
        .expect("send");
    let echo = within(STEP, ws.next(), "the echo")
        .await
        .expect("a message")
        .expect("ok");
    assert_eq!(echo, Message::text("through the guard"));
    ws.close(None).await.ok();
    // The upstream was offered the real subprotocol only: the token stopped at pipegate.
    let seen = upstream.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].headers["sec-websocket-protocol"], CHOSEN_PROTOCOL);

    // Without the token, with a wrong one, and cross-site (a page on another origin
    // holding the token still cannot open the socket: CSWSH).
    let status = refused_with(
        ws_handshake(ep, "/echo", &[("sec-websocket-protocol", CHOSEN_PROTOCOL)]).await,
    );
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let wrong = format!("{CHOSEN_PROTOCOL}, pipegate.bearer.wrong");
    let status =
        refused_with(ws_handshake(ep, "/echo", &[("sec-websocket-protocol", &wrong)]).await);
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let status = refused_with(
        ws_handshake(
            ep,
            "/echo",
            &[
                ("sec-websocket-protocol", &offer),
                ("origin", "https://evil.example"),
            ],
        )
        .await,
    );
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        upstream.seen().len(),
        1,
        "no refused handshake was forwarded"
    );

    // A refused upgrade closes the connection: no request can follow it unchecked.
    let host = authority(ep);
    let answer = raw(
        ep,
        format!(
            "GET /echo HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        )
        .as_bytes(),
    )
    .await;
    assert_eq!(statuses(&answer), [401], "{answer}");
    assert_eq!(head_values(&answer, "connection"), ["close"]);
    bridge.stop().await;
}

#[tokio::test]
async fn unix_socket_listeners_are_not_token_checked() {
    let dir = private_dir();
    let upstream = Upstream::start(&sock(&dir, "up.sock")).await;
    let bridge = Running::start(guarded(
        vec![sock(&dir, "in.sock"), tcp_any()],
        upstream.endpoint.clone(),
    ))
    .await;
    // The same request: fine over the Unix socket (the OS checked the peer), refused on TCP.
    let request = get_with("/local", "pipegate.test", &["Origin: https://evil.example"]);
    let answer = raw(bridge.unix(), &request).await;
    assert_eq!(statuses(&answer), [200], "{answer}");
    let answer = raw(bridge.tcp(), &request).await;
    assert_eq!(statuses(&answer), [421], "{answer}");
    let answer = raw(
        bridge.unix(),
        &get_with("/_pipegate/health", "localhost", &[]),
    )
    .await;
    assert_eq!(statuses(&answer), [204], "{answer}");
    assert_eq!(upstream.seen().len(), 1);
    bridge.stop().await;
}

#[tokio::test]
async fn smuggling_shapes_are_refused_and_never_forwarded() {
    let dir = private_dir();
    let upstream = Upstream::start(&sock(&dir, "up.sock")).await;
    // An unguarded TCP listener and a Unix socket: the framing checks apply to all.
    let bridge = Running::start(http_config(
        vec![tcp_any(), sock(&dir, "in.sock")],
        upstream.endpoint.clone(),
    ))
    .await;
    // Each is a complete request followed by what a second parser might take for another.
    let smuggled = "GET /smuggled HTTP/1.1\r\nHost: localhost\r\n\r\n";
    let shapes: [(&str, String); 6] = [
        (
            "content-length with transfer-encoding",
            format!(
                "POST /cl-te HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\n\
                 Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}"
            ),
        ),
        (
            "transfer-encoding with content-length",
            format!(
                "POST /te-cl HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\
                 Content-Length: 44\r\n\r\n0\r\n\r\n{smuggled}"
            ),
        ),
        (
            "duplicate identical content-length",
            format!(
                "POST /cl-cl HTTP/1.1\r\nHost: localhost\r\nContent-Length: 4\r\n\
                 Content-Length: 4\r\n\r\nbody{smuggled}"
            ),
        ),
        (
            "conflicting content-length",
            format!(
                "POST /cl-cl2 HTTP/1.1\r\nHost: localhost\r\nContent-Length: 4\r\n\
                 Content-Length: 45\r\n\r\nbody{smuggled}"
            ),
        ),
        (
            "obs-fold",
            format!(
                "GET /fold HTTP/1.1\r\nHost: localhost\r\nX-Folded: a\r\n \
                 Transfer-Encoding: chunked\r\n\r\n{smuggled}"
            ),
        ),
        (
            "bare LF",
            format!("GET /bare-lf HTTP/1.1\nHost: localhost\nContent-Length: 0\n\n{smuggled}"),
        ),
    ];
    for listener in [bridge.tcp(), bridge.unix()] {
        for (name, request) in &shapes {
            let answer = raw(listener, request.as_bytes()).await;
            assert_eq!(statuses(&answer), [400], "{name} on {listener}: {answer}");
            assert_eq!(
                head_values(&answer, "x-pipegate-error"),
                ["bad_request"],
                "{name}: pipegate's own 400, not hyper's"
            );
            assert_eq!(head_values(&answer, "connection"), ["close"], "{name}");
        }
    }
    assert!(
        upstream.seen().is_empty(),
        "the upstream received {:?}",
        upstream
            .seen()
            .iter()
            .map(|s| s.uri.path().to_owned())
            .collect::<Vec<_>>()
    );

    // Pipelined: the good request before a bad one is served; nothing after it is.
    let pipelined = format!(
        "GET /first HTTP/1.1\r\nHost: localhost\r\n\r\n\
         POST /second HTTP/1.1\r\nHost: localhost\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc{smuggled}"
    );
    let answer = raw(bridge.tcp(), pipelined.as_bytes()).await;
    assert_eq!(statuses(&answer), [200, 400], "{answer}");
    let paths: Vec<String> = upstream
        .seen()
        .iter()
        .map(|s| s.uri.path().to_owned())
        .collect();
    assert_eq!(paths, ["/first"]);

    // Bodies that merely contain such bytes are data, and chunked bodies still work.
    let answer = raw(
        bridge.tcp(),
        b"POST /upload HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
          6\r\na\nb\r\nc\r\n0\r\n\r\n",
    )
    .await;
    assert_eq!(statuses(&answer), [200], "{answer}");
    assert!(
        answer.ends_with(&format!("6 {}", hex(&sha256(b"a\nb\r\nc")))),
        "{answer}"
    );
    bridge.stop().await;
}

fn sha256(data: &[u8]) -> Sha {
    use sha2::Digest;
    sha2::Sha256::digest(data).into()
}

#[tokio::test]
async fn bridges_present_a_token_upstream() {
    let dir = private_dir();
    let upstream = Upstream::start(&sock(&dir, "up.sock")).await;
    // B: a guarded TCP bridge in front of the upstream. A: a Unix-socket bridge to B that
    // presents B's token from a file.
    let b = Running::start(guarded(vec![tcp_any()], upstream.endpoint.clone())).await;
    let token_file = dir.path().join("b.token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let a = Running::start(
        http_config(vec![sock(&dir, "a.sock")], b.tcp().clone())
            .upstream_token_file(Some(token_file.clone())),
    )
    .await;
    let answer = raw(
        a.unix(),
        &get_with(
            "/via-a",
            "localhost",
            &["Authorization: Bearer client-sent"],
        ),
    )
    .await;
    assert_eq!(statuses(&answer), [200], "{answer}");
    let seen = upstream.wait_for("/via-a").await;
    assert!(
        seen.headers.get("authorization").is_none(),
        "B consumed A's token: {:?}",
        seen.headers
    );

    // A re-reads the file when it changes (as when B restarts with a new token): a token
    // B does not know is refused, the right one works again, A never restarted.
    std::fs::write(&token_file, "a-token-b-does-not-know\n").unwrap();
    let answer = raw(a.unix(), &get_with("/stale", "localhost", &[])).await;
    assert_eq!(
        statuses(&answer),
        [401],
        "B refuses a token it does not know: {answer}"
    );
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let answer = raw(a.unix(), &get_with("/fresh", "localhost", &[])).await;
    assert_eq!(statuses(&answer), [200], "{answer}");
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn raw_mode_refuses_http_only_options() {
    let dir = private_dir();
    let token_file = dir.path().join("t");
    std::fs::write(&token_file, "x").unwrap();
    let upstream = Endpoint::parse("127.0.0.1:9").unwrap();
    let err = Bridge::bind(
        Config::new(vec![tcp_any()], upstream.clone(), ForwardMode::Raw)
            .upstream_token_file(Some(token_file.clone())),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, Error::UpstreamTokenNeedsHttp), "{err}");
    let err = Bridge::bind(
        Config::new(vec![tcp_any()], upstream.clone(), ForwardMode::Raw)
            .tcp_access(TcpAccess::guarded(Some("t".into()))),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, Error::AccessNeedsHttp), "{err}");
    let err = Bridge::bind(
        Config::new(vec![tcp_any()], upstream, ForwardMode::Http)
            .upstream_token_file(Some(dir.path().join("missing"))),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, Error::UpstreamToken { .. }), "{err}");
}

// ---------------------------------------------------------------------------------------
// Secrets in logs

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// An upstream that sets a cookie (so `Set-Cookie` crosses the bridge).
async fn cookie_upstream(path: &std::path::Path) -> AbortOnDrop {
    let listener = UnixListener::bind(path).unwrap();
    AbortOnDrop(tokio::spawn(async move {
        while let Ok((io, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = service_fn(|_req: Request<Incoming>| async {
                    let mut resp = Response::new(Full::new(Bytes::from_static(b"ok")));
                    resp.headers_mut().insert(
                        "set-cookie",
                        HeaderValue::from_static("session=SETCOOKIE-SECRET-5; HttpOnly"),
                    );
                    Ok::<_, Infallible>(resp)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(io), service)
                    .with_upgrades()
                    .await;
            });
        }
    }))
}

/// Every secret a request can carry goes through the bridge (HTTP/1.1 and h2c, a refused
/// wrong token, the health nonce, the upstream token) with JSON logging at TRACE for
/// every target, dependencies included; none of the values appears in the output.
#[tokio::test(flavor = "current_thread")]
async fn secrets_never_reach_the_logs() {
    let capture = Capture::default();
    let writer = capture.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_max_level(tracing::Level::TRACE)
        .with_current_span(true)
        .with_span_list(true)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    const NONCE: &str = "NONCE-SECRET-0";
    const WRONG: &str = "WRONG-TOKEN-SECRET-1";
    const COOKIE: &str = "COOKIE-SECRET-2";
    const PROXY_AUTH: &str = "PROXYAUTH-SECRET-3";
    const UPSTREAM_TOKEN: &str = "UPSTREAM-TOKEN-SECRET-4";
    const SET_COOKIE: &str = "SETCOOKIE-SECRET-5";

    let dir = private_dir();
    let up_path = dir.path().join("up.sock");
    let _upstream = cookie_upstream(&up_path).await;
    let token_file = dir.path().join("up.token");
    std::fs::write(&token_file, UPSTREAM_TOKEN).unwrap();
    let bridge = Running::start(
        guarded(
            vec![tcp_any()],
            Endpoint::parse(up_path.to_str().unwrap()).unwrap(),
        )
        .nonce(Some(NONCE.to_owned()))
        .upstream_token_file(Some(token_file)),
    )
    .await;
    let ep = bridge.tcp();
    let host = authority(ep);
    let secrets = [
        format!("Authorization: Bearer {TOKEN}"),
        format!("Cookie: session={COOKIE}"),
        format!("Proxy-Authorization: Basic {PROXY_AUTH}"),
    ];
    let lines: Vec<&str> = secrets.iter().map(String::as_str).collect();

    let answer = raw(ep, &get_with("/h1", &host, &lines)).await;
    assert_eq!(statuses(&answer), [200], "{answer}");
    assert!(
        answer.contains(SET_COOKIE),
        "the cookie reached the client: {answer}"
    );
    let answer = raw(ep, &get_with("/_pipegate/health", &host, &lines)).await;
    assert_eq!(statuses(&answer), [204], "{answer}");
    assert!(answer.contains(NONCE), "{answer}");
    let wrong = format!("Authorization: Bearer {WRONG}");
    let answer = raw(ep, &get_with("/wrong", &host, &[&wrong, lines[1]])).await;
    assert_eq!(statuses(&answer), [401], "{answer}");

    // HTTP/2 (h2c prior knowledge): its header codec logs at TRACE.
    let io = dial(ep).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io))
            .await
            .expect("h2c handshake");
    let conn = tokio::spawn(conn);
    let req = Request::get(format!("http://{host}/h2"))
        .header("authorization", format!("Bearer {TOKEN}"))
        .header("cookie", format!("session={COOKIE}"))
        .header("proxy-authorization", format!("Basic {PROXY_AUTH}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = within(STEP, sender.send_request(req), "h2 response")
        .await
        .expect("h2 response");
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.headers()["set-cookie"],
        format!("session={SET_COOKIE}; HttpOnly")
    );
    let _ = resp.into_body().collect().await;
    drop(sender);
    let _ = within(STEP, conn, "h2 connection to end").await;

    bridge.stop().await;
    let text = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    assert!(text.lines().count() > 10, "the capture works: {text}");
    for secret in [
        TOKEN,
        NONCE,
        WRONG,
        COOKIE,
        PROXY_AUTH,
        UPSTREAM_TOKEN,
        SET_COOKIE,
    ] {
        assert!(!text.contains(secret), "{secret} was logged:\n{text}");
    }
}
