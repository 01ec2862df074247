//! Connection limits, slow or hostile clients, and graceful shutdown, in HTTP mode.
#![cfg(unix)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use http::StatusCode;
use pipegate_proxy::HttpOptions;
use support::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

fn header_timeout(ms: u64) -> HttpOptions {
    let mut http = HttpOptions::default();
    http.header_timeout = Duration::from_millis(ms);
    http
}

/// Whether the peer has closed `tcp`: a read returns EOF or an error (bounded).
async fn closed_within(tcp: &mut TcpStream, limit: Duration) -> bool {
    tokio::time::timeout(limit, read_to_close(tcp))
        .await
        .is_ok()
}

#[tokio::test]
async fn slowloris_request_head_is_cut_off() {
    let upstream = Upstream::start(&tcp_any()).await;
    let config = http_config(vec![tcp_any()], upstream.endpoint.clone()).http(header_timeout(500));
    let bridge = Running::start(config).await;
    let tcp = dial_tcp(bridge.tcp()).await;
    let (mut rd, mut wr) = tcp.into_split();
    // 200 bytes at one per 100 ms would take 20 s.
    let head = format!(
        "GET /slowloris HTTP/1.1\r\nHost: pipegate.test\r\nX-Padding: {}\r\n\r\n",
        "a".repeat(150)
    );
    let started = Instant::now();
    let writer = async {
        for byte in head.bytes() {
            if wr.write_all(&[byte]).await.is_err() {
                return "write failed";
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        "the whole head was sent"
    };
    let reader = async {
        read_to_close(&mut rd).await;
        "closed by the bridge"
    };
    let outcome = within(
        Duration::from_secs(5),
        async {
            tokio::select! {
                r = reader => r,
                w = writer => w,
            }
        },
        "the bridge to cut off a slowloris client",
    )
    .await;
    let elapsed = started.elapsed();
    assert_ne!(outcome, "the whole head was sent");
    assert!(
        elapsed >= Duration::from_millis(400) && elapsed < Duration::from_secs(2),
        "cut off after {elapsed:?} ({outcome})"
    );
    assert!(
        upstream.seen().is_empty(),
        "the partial request was forwarded"
    );
    bridge.stop().await;
}

/// A client that connects and never sends a byte must not hold a connection (and a
/// connection slot) forever: the header timeout covers the first byte too.
#[tokio::test]
async fn silent_client_is_cut_off() {
    let upstream = Upstream::start(&tcp_any()).await;
    let config = http_config(vec![tcp_any()], upstream.endpoint.clone()).http(header_timeout(500));
    let bridge = Running::start(config).await;
    let mut tcp = dial_tcp(bridge.tcp()).await;
    let started = Instant::now();
    assert!(
        closed_within(&mut tcp, Duration::from_secs(3)).await,
        "a silent connection was still open after 3 s (header timeout 500 ms)"
    );
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(400),
        "closed after {elapsed:?}"
    );
    bridge.stop().await;
}

/// An h2c connection with no request in flight for the header timeout is closed (GOAWAY),
/// as an idle HTTP/1 keep-alive connection is; one whose response is still streaming is not.
#[tokio::test]
async fn idle_h2c_connection_is_closed_but_not_while_a_request_is_in_flight() {
    let upstream = Upstream::start(&tcp_any()).await;
    let config = http_config(vec![tcp_any()], upstream.endpoint.clone()).http(header_timeout(500));
    let bridge = Running::start(config).await;
    let tcp = dial_tcp(bridge.tcp()).await;
    let (mut sender, conn) = within(
        STEP,
        hyper::client::conn::http2::handshake::<_, _, ReqBody>(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(tcp),
        ),
        "h2 handshake",
    )
    .await
    .expect("h2c handshake with the bridge");
    let mut conn = tokio::spawn(conn);

    // The upstream takes 1.5 s (three idle limits) to answer: the request is in flight, so
    // the connection stays open and the answer arrives.
    let req = http::Request::get("http://h2.example/slow?ms=1500")
        .body(empty())
        .unwrap();
    let resp = within(STEP, sender.send_request(req), "the slow h2 response")
        .await
        .expect("the slow request was answered on the open connection");
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(body_bytes(resp.into_body()).await, "slow done");
    assert!(!conn.is_finished(), "closed while a request was in flight");

    // Then nothing: the bridge closes the connection after the idle limit.
    let started = Instant::now();
    let ended = within(
        Duration::from_secs(5),
        &mut conn,
        "the idle h2c connection to close",
    )
    .await
    .expect("the h2 connection task");
    assert!(
        ended.is_ok(),
        "the connection ended with an error: {ended:?}"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "closed after {:?}",
        started.elapsed()
    );
    bridge.stop().await;
}

#[tokio::test]
async fn oversized_request_head_gets_431() {
    let upstream = Upstream::start(&tcp_any()).await;
    let mut http = HttpOptions::default();
    http.max_header_size = 64 * 1024;
    let bridge =
        Running::start(http_config(vec![tcp_any()], upstream.endpoint.clone()).http(http)).await;
    let tcp = dial_tcp(bridge.tcp()).await;
    let (mut rd, mut wr) = tcp.into_split();
    let request = format!(
        "GET /big HTTP/1.1\r\nHost: pipegate.test\r\nX-Big: {}\r\n\r\n",
        "b".repeat(100 * 1024)
    );
    // The bridge may stop reading (and close) before all of it is written.
    let writer = tokio::spawn(async move {
        let _ = wr.write_all(request.as_bytes()).await;
        wr
    });
    let (head, _) = within(STEP, read_head(&mut rd), "the 431 response")
        .await
        .expect("read the response")
        .expect("a response before the connection closed");
    assert_eq!(head_status(&head), 431, "{head}");
    let _ = within(STEP, writer, "the writer").await;

    // Smaller heads still pass.
    let mut tcp = dial_tcp(bridge.tcp()).await;
    let request = format!(
        "GET /fits HTTP/1.1\r\nHost: pipegate.test\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
        "b".repeat(32 * 1024)
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    let (head, _) = within(STEP, read_head(&mut tcp), "a response")
        .await
        .unwrap()
        .expect("a response");
    assert_eq!(head_status(&head), 200, "{head}");
    let paths: Vec<_> = upstream.seen().iter().map(|s| s.uri.to_string()).collect();
    assert_eq!(paths, ["/fits"]);
    bridge.stop().await;
}

#[tokio::test]
async fn shutdown_finishes_the_request_in_flight_and_releases_the_listeners() {
    let dir = private_dir();
    let upstream = Upstream::start(&sock(&dir, "up.sock")).await;
    let mut bridge = Running::start(http_config(
        vec![tcp_any(), sock(&dir, "in.sock")],
        upstream.endpoint.clone(),
    ))
    .await;
    let tcp_ep = bridge.tcp().clone();
    let unix_ep = bridge.unix().clone();
    let unix_path = unix_ep.unix_path().unwrap().to_owned();
    assert!(unix_path.exists());

    let in_flight = {
        let ep = tcp_ep.clone();
        tokio::spawn(async move { get(&ep, "/slow?ms=300").await })
    };
    upstream.wait_for("/slow").await;
    let fired = Instant::now();
    bridge.trigger_shutdown();

    let (status, _, body) = within(STEP, in_flight, "the in-flight request")
        .await
        .expect("request task");
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "slow done");

    // The Unix socket file is removed and nothing accepts on either endpoint.
    eventually(STEP, "the Unix socket file to be removed", || async {
        (!unix_path.exists()).then_some(())
    })
    .await;
    assert!(tokio::net::UnixStream::connect(&unix_path).await.is_err());
    let pipegate_transport::Endpoint::Tcp { host, port } = &tcp_ep else {
        unreachable!()
    };
    eventually(STEP, "the TCP listener to stop accepting", || async {
        TcpStream::connect((host.as_str(), *port))
            .await
            .is_err()
            .then_some(())
    })
    .await;

    let summary = bridge.finished(STEP).await;
    assert_eq!(summary.aborted, 0);
    assert_eq!(summary.accepted, 1);
    // Finished with the request, well before the default 10 s grace.
    assert!(
        fired.elapsed() < Duration::from_secs(5),
        "{:?}",
        fired.elapsed()
    );
}

#[tokio::test]
async fn shutdown_closes_an_open_tunnel_after_the_grace_period() {
    const GRACE: Duration = Duration::from_millis(300);
    let dir = private_dir();
    let upstream = WsUpstream::start(&sock(&dir, "ws.sock")).await;
    let config = http_config(vec![tcp_any()], upstream.endpoint.clone()).shutdown_grace(GRACE);
    let mut bridge = Running::start(config).await;
    let (mut ws, _) = ws_connect(bridge.tcp(), "/echo", None)
        .await
        .expect("handshake");
    ws.send(Message::text("before")).await.unwrap();
    assert_eq!(
        within(STEP, ws.next(), "echo").await.unwrap().unwrap(),
        Message::text("before")
    );

    let fired = Instant::now();
    bridge.trigger_shutdown();
    // During the grace period the tunnel still works.
    ws.send(Message::text("during grace")).await.unwrap();
    assert_eq!(
        within(STEP, ws.next(), "echo during grace")
            .await
            .unwrap()
            .unwrap(),
        Message::text("during grace")
    );
    // Then it is closed from the bridge's side.
    match within(Duration::from_secs(5), ws.next(), "the tunnel to be closed").await {
        None | Some(Err(_)) | Some(Ok(Message::Close(_))) => {}
        Some(Ok(other)) => panic!("unexpected message {other:?}"),
    }
    let closed_after = fired.elapsed();
    assert!(
        closed_after >= GRACE - Duration::from_millis(50),
        "closed after {closed_after:?}, before the {GRACE:?} grace"
    );
    assert!(
        closed_after < Duration::from_secs(3),
        "closed after {closed_after:?}"
    );
    let summary = bridge.finished(Duration::from_secs(5)).await;
    assert_eq!(summary.aborted, 1);
}

#[tokio::test]
async fn connections_over_max_connections_get_503() {
    let upstream = Upstream::start(&tcp_any()).await;
    let config = http_config(vec![tcp_any()], upstream.endpoint.clone()).max_connections(2);
    let bridge = Running::start(config).await;
    let ep = bridge.tcp().clone();
    let request = b"GET /hello HTTP/1.1\r\nHost: pipegate.test\r\n\r\n";

    // Two kept-alive connections, each proven to be served.
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut tcp = dial_tcp(&ep).await;
        tcp.write_all(request).await.unwrap();
        let (head, _) = within(STEP, read_head(&mut tcp), "a response")
            .await
            .unwrap()
            .expect("a response");
        assert_eq!(head_status(&head), 200, "{head}");
        held.push(tcp);
    }

    // The third is refused politely.
    let mut third = dial_tcp(&ep).await;
    let (head, _) = within(STEP, read_head(&mut third), "the 503")
        .await
        .unwrap()
        .expect("a response before the close");
    assert_eq!(head_status(&head), 503, "{head}");
    assert!(closed_within(&mut third, STEP).await);

    // Once a slot frees up, new connections are served again.
    drop(held.pop());
    eventually(STEP, "a free connection slot", || async {
        let mut tcp = dial_tcp(&ep).await;
        tcp.write_all(b"GET /hello HTTP/1.1\r\nHost: pipegate.test\r\nConnection: close\r\n\r\n")
            .await
            .ok()?;
        let (head, _) = read_head(&mut tcp).await.ok()??;
        (head_status(&head) == 200).then_some(())
    })
    .await;
    drop(held);
    let text = eventually(STEP, "the held connection to close", || async {
        // Not `metrics()`: until the bridge notices the close, this may get a 503.
        let (status, _, body) = get(&ep, "/_pipegate/metrics").await;
        let text = String::from_utf8(body.to_vec())
            .ok()
            .filter(|_| status == 200)?;
        // Only the metrics connection itself is open.
        (metric(&text, "pipegate_connections_open{transport=\"tcp\"}") == 1).then_some(text)
    })
    .await;
    assert!(
        metric(&text, "pipegate_connections_refused_total") >= 1,
        "{text}"
    );
    bridge.stop().await;
}
