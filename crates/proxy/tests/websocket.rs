//! WebSocket through the bridge: a real tokio-tungstenite client and a real
//! tokio-tungstenite upstream (`accept_hdr_async`), the tunnel spliced by the bridge.
#![cfg(unix)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{Request, StatusCode};
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use support::*;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

/// `count` messages of random kind and size, deterministic for `seed`: most under 1 KiB,
/// about 2% up to 64 KiB, and every 1250th (plus the very last) between 256 KiB and
/// exactly 1 MiB, so a 10 000-message run moves roughly 15-20 MB each way.
fn messages(seed: u64, count: usize) -> Vec<Message> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..count)
        .map(|i| {
            let size = if i == count - 1 {
                1 << 20
            } else if i % 1250 == 7 {
                rng.random_range(256 * 1024..=1 << 20)
            } else if rng.random_bool(0.02) {
                rng.random_range(1024..64 * 1024)
            } else {
                rng.random_range(0..1024)
            };
            if rng.random_bool(0.5) {
                // ASCII with a multi-byte character somewhere; `size` is bytes.
                let mut ascii = vec![0u8; size];
                rng.fill_bytes(&mut ascii);
                for b in &mut ascii {
                    *b = b'a' + *b % 26;
                }
                let mut text = String::from_utf8(ascii).expect("ASCII");
                if size >= 3 {
                    text.truncate(size - 3);
                    let at = rng.random_range(0..=text.len());
                    text.insert(at, '✓');
                }
                Message::Text(text.into())
            } else {
                let mut data = vec![0u8; size];
                rng.fill_bytes(&mut data);
                Message::Binary(Bytes::from(data))
            }
        })
        .collect()
}

fn describe(msg: &Message) -> String {
    match msg {
        Message::Text(t) => format!("text of {} bytes", t.len()),
        Message::Binary(b) => format!("binary of {} bytes", b.len()),
        other => format!("{other:?}"),
    }
}

/// Echoes `count` messages through the bridge at `endpoint`, sending and receiving
/// concurrently, and checks each reply against what was sent, in order.
async fn echo_run(endpoint: &pipegate_transport::Endpoint, seed: u64, count: usize) {
    let msgs = messages(seed, count);
    let total: usize = msgs.iter().map(Message::len).sum();
    let (ws, _) = ws_connect(endpoint, "/echo", None)
        .await
        .expect("WebSocket handshake through the bridge");
    let (mut sink, mut stream) = ws.split();
    let started = Instant::now();
    let sender = async {
        for (i, msg) in msgs.iter().enumerate() {
            sink.feed(msg.clone()).await.expect("send");
            if i % 32 == 31 {
                sink.flush().await.expect("flush");
            }
        }
        sink.flush().await.expect("flush");
    };
    let receiver = async {
        for (i, want) in msgs.iter().enumerate() {
            let got = stream
                .next()
                .await
                .unwrap_or_else(|| panic!("stream ended before message {i}"))
                .unwrap_or_else(|e| panic!("error before message {i}: {e}"));
            if &got != want {
                panic!(
                    "message {i} differs: got {}, sent {}",
                    describe(&got),
                    describe(want)
                );
            }
        }
    };
    within(
        Duration::from_secs(60),
        async { tokio::join!(sender, receiver) },
        "the echo run",
    )
    .await;
    eprintln!(
        "{count} messages ({total} bytes) echoed via {endpoint} in {:?}",
        started.elapsed()
    );
    sink.send(Message::Close(None)).await.expect("send close");
    let end = within(STEP, stream.next(), "the close reply").await;
    assert!(
        matches!(end, Some(Ok(Message::Close(_))) | None),
        "after close: {end:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_echoes_10000_messages_intact_and_in_order() {
    let dir = private_dir();
    let upstream = WsUpstream::start(&sock(&dir, "ws.sock")).await;
    let bridge = Running::start(http_config(
        vec![tcp_any(), sock(&dir, "in.sock")],
        upstream.endpoint.clone(),
    ))
    .await;
    echo_run(bridge.tcp(), 1, 10_000).await;
    echo_run(bridge.unix(), 2, 500).await;
    assert_eq!(bridge.stop().await.aborted, 0);
}

#[tokio::test]
async fn websocket_to_a_tcp_upstream() {
    let upstream = WsUpstream::start(&tcp_any()).await;
    let dir = private_dir();
    let bridge = Running::start(http_config(
        vec![sock(&dir, "in.sock")],
        upstream.endpoint.clone(),
    ))
    .await;
    echo_run(bridge.unix(), 3, 300).await;
    assert_eq!(bridge.stop().await.aborted, 0);
}

#[tokio::test]
async fn close_code_from_the_upstream_reaches_the_client() {
    let dir = private_dir();
    let upstream = WsUpstream::start(&sock(&dir, "ws.sock")).await;
    let bridge = Running::start(http_config(vec![tcp_any()], upstream.endpoint.clone())).await;
    let (mut ws, _) = ws_connect(bridge.tcp(), "/close4001", None)
        .await
        .expect("handshake");
    let msg = within(STEP, ws.next(), "the close frame")
        .await
        .expect("a message")
        .expect("a close frame, not an error");
    let expected = CloseFrame {
        code: CloseCode::from(CLOSE_CODE),
        reason: CLOSE_REASON.into(),
    };
    assert_eq!(msg, Message::Close(Some(expected)));
    // tungstenite answers the close; then the stream ends cleanly.
    let end = within(STEP, ws.next(), "the end of the stream").await;
    assert!(end.is_none(), "after close: {end:?}");
    // The client's socket closes too, which ends the tunnel (and lets serve return
    // without waiting out the grace period).
    drop(ws);
    assert_eq!(bridge.stop().await.aborted, 0);
}

#[tokio::test]
async fn subprotocol_offer_reaches_the_upstream_and_its_choice_comes_back() {
    let dir = private_dir();
    let upstream = WsUpstream::start(&sock(&dir, "ws.sock")).await;
    let bridge = Running::start(http_config(vec![tcp_any()], upstream.endpoint.clone())).await;
    let offer = "chat.v2, pipegate.pty.v1";
    let (mut ws, resp) = ws_connect(bridge.tcp(), "/proto", Some(offer))
        .await
        .expect("handshake");
    assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
    assert_eq!(resp.headers()["sec-websocket-protocol"], CHOSEN_PROTOCOL);
    assert!(
        resp.headers()
            .get_all("via")
            .iter()
            .any(|v| v == "1.1 pipegate"),
        "{resp:?}"
    );

    let seen = upstream.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path, "/proto");
    let h = &seen[0].headers;
    assert_eq!(h["sec-websocket-protocol"], offer);
    assert!(h.contains_key("sec-websocket-key"));
    assert_eq!(
        h["upgrade"].to_str().unwrap().to_ascii_lowercase(),
        "websocket"
    );
    assert_eq!(h["host"], "pipegate.test");
    assert!(
        h.get_all("via").iter().any(|v| v == "1.1 pipegate"),
        "{h:?}"
    );

    ws.send(Message::text("over the chosen protocol"))
        .await
        .unwrap();
    let back = within(STEP, ws.next(), "echo").await.unwrap().unwrap();
    assert_eq!(back, Message::text("over the chosen protocol"));
    ws.close(None).await.unwrap();
    while let Some(Ok(_)) = within(STEP, ws.next(), "close reply").await {}
    drop(ws);
    assert_eq!(bridge.stop().await.aborted, 0);
}

#[tokio::test]
async fn refused_upgrade_is_relayed_as_an_ordinary_response() {
    let dir = private_dir();
    let upstream = WsUpstream::start(&sock(&dir, "ws.sock")).await;
    let bridge = Running::start(http_config(vec![tcp_any()], upstream.endpoint.clone())).await;

    // A real WebSocket client sees the upstream's 403.
    match ws_connect(bridge.tcp(), "/forbidden", None).await {
        Err(WsError::Http(resp)) => assert_eq!(resp.status(), StatusCode::FORBIDDEN),
        Ok(_) => panic!("the upgrade should have been refused"),
        Err(e) => panic!("expected an HTTP 403, got {e}"),
    }

    // The same answer seen by a plain HTTP client: status, body and headers intact,
    // not a pipegate error.
    let req = Request::get("/forbidden")
        .header("host", "pipegate.test")
        .header("connection", "Upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .body(empty())
        .unwrap();
    let resp = send(bridge.tcp(), req).await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert!(!resp.headers().contains_key("x-pipegate-error"));
    assert!(!resp.headers().contains_key("upgrade"));
    assert!(resp
        .headers()
        .get_all("via")
        .iter()
        .any(|v| v == "1.1 pipegate"));
    assert_eq!(body_bytes(resp.into_body()).await, FORBIDDEN_BODY);

    assert_eq!(
        upstream.seen().len(),
        2,
        "both requests reached the upstream"
    );
    let text = metrics(bridge.tcp()).await;
    assert_eq!(metric(&text, "pipegate_tunnels_total"), 0, "{text}");
    assert_eq!(
        metric(&text, "pipegate_requests_total{class=\"4xx\"}"),
        2,
        "{text}"
    );
    bridge.stop().await;
}

#[tokio::test]
async fn tunnels_are_counted_in_metrics() {
    let dir = private_dir();
    let upstream = WsUpstream::start(&sock(&dir, "ws.sock")).await;
    let bridge = Running::start(http_config(vec![tcp_any()], upstream.endpoint.clone())).await;
    let ep = bridge.tcp().clone();
    let before = metrics(&ep).await;
    assert_eq!(metric(&before, "pipegate_tunnels_open"), 0);
    let total_before = metric(&before, "pipegate_tunnels_total");

    let mut open = Vec::new();
    for i in 0..2 {
        let (mut ws, _) = ws_connect(&ep, "/echo", None).await.expect("handshake");
        ws.send(Message::text(format!("hi {i}"))).await.unwrap();
        let back = within(STEP, ws.next(), "echo").await.unwrap().unwrap();
        assert_eq!(back, Message::text(format!("hi {i}")));
        open.push(ws);
    }
    eventually(STEP, "two tunnels open", || async {
        let text = metrics(&ep).await;
        (metric(&text, "pipegate_tunnels_open") == 2
            && metric(&text, "pipegate_tunnels_total") == total_before + 2)
            .then_some(())
    })
    .await;

    for mut ws in open {
        ws.close(None).await.unwrap();
        // Wait for the close reply so the tunnel has really ended on both sides.
        while let Some(Ok(_)) = within(STEP, ws.next(), "close reply").await {}
    }
    let text = eventually(STEP, "no tunnel open after close", || async {
        let text = metrics(&ep).await;
        (metric(&text, "pipegate_tunnels_open") == 0).then_some(text)
    })
    .await;
    assert_eq!(metric(&text, "pipegate_tunnels_total"), total_before + 2);
    assert!(
        metric(
            &text,
            "pipegate_bytes_total{direction=\"client_to_upstream\"}"
        ) > 0,
        "tunnel bytes are counted: {text}"
    );
    assert_eq!(bridge.stop().await.aborted, 0);
}
