//! HTTP mode end to end: a real hyper upstream (Unix socket or TCP) behind a bridge
//! listening on TCP and on a Unix socket, with real clients (hyper HTTP/1.1, hyper h2c,
//! raw sockets).
#![cfg(unix)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{Request, StatusCode, Version};
use http_body_util::BodyExt;
use hyper_util::rt::{TokioExecutor, TokioIo};
use pipegate_proxy::HttpOptions;
use sha2::{Digest, Sha256};
use support::*;
use tokio::io::AsyncWriteExt;

fn sha_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

#[tokio::test]
async fn get_and_post_round_trip_on_every_listener_and_upstream_transport() {
    let dir = private_dir();
    for (i, upstream_at) in [sock(&dir, "up.sock"), tcp_any()].into_iter().enumerate() {
        let upstream = Upstream::start(&upstream_at).await;
        let listen = vec![tcp_any(), sock(&dir, &format!("in{i}.sock"))];
        let bridge = Running::start(http_config(listen, upstream.endpoint.clone())).await;
        for listener in &bridge.endpoints {
            let what = format!("{listener} -> {}", upstream.endpoint);
            let (status, headers, body) = get(listener, "/hello?x=1").await;
            assert_eq!(status, StatusCode::OK, "{what}");
            assert_eq!(body, "hello from /hello", "{what}");
            assert_eq!(headers["x-upstream"], "yes", "{what}");
            assert!(
                headers.get_all("via").iter().any(|v| v == "1.1 pipegate"),
                "{what}: {headers:?}"
            );

            let form = format!("name=pipegate&listener={listener}").into_bytes();
            let req = Request::post("/upload")
                .header("host", "pipegate.test")
                .header("content-type", "application/x-www-form-urlencoded")
                .body(full(form.clone()))
                .unwrap();
            let resp = send(listener, req).await;
            assert_eq!(resp.status(), StatusCode::OK, "{what}");
            let body = body_bytes(resp.into_body()).await;
            assert_eq!(body, format!("{} {}", form.len(), sha_hex(&form)), "{what}");
        }
        let seen = upstream.seen();
        assert_eq!(seen.len(), 4, "{seen:?}");
        for pair in seen.chunks(2) {
            assert_eq!(pair[0].method, http::Method::GET);
            assert_eq!(pair[0].uri.path_and_query().unwrap(), "/hello?x=1");
            assert_eq!(pair[0].headers["host"], "pipegate.test");
            assert_eq!(pair[1].method, http::Method::POST);
            assert_eq!(
                pair[1].headers["content-type"],
                "application/x-www-form-urlencoded"
            );
        }
        let summary = bridge.stop().await;
        assert_eq!(summary.accepted, 4);
        assert_eq!(summary.aborted, 0);
    }
}

#[tokio::test]
async fn chunked_request_body_reaches_the_upstream_intact() {
    let dir = private_dir();
    let upstream = Upstream::start(&tcp_any()).await;
    let bridge = Running::start(http_config(
        vec![sock(&dir, "in.sock")],
        upstream.endpoint.clone(),
    ))
    .await;
    let mut io = dial(bridge.unix()).await.unwrap();
    io.write_all(
        b"POST /upload HTTP/1.1\r\nHost: pipegate.test\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    let mut sent = Vec::new();
    for i in 0..20u32 {
        let chunk: Vec<u8> = (0..(i * 97 + 1)).map(|b| (b * 31 + i) as u8).collect();
        io.write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
            .await
            .unwrap();
        io.write_all(&chunk).await.unwrap();
        io.write_all(b"\r\n").await.unwrap();
        io.flush().await.unwrap();
        sent.extend_from_slice(&chunk);
        // Make the body really arrive in pieces.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    io.write_all(b"0\r\n\r\n").await.unwrap();
    let response = within(STEP, read_to_close(&mut io), "the response").await;
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let expected = format!("{} {}", sent.len(), sha_hex(&sent));
    assert!(
        response.ends_with(&expected),
        "{response}\nwanted {expected}"
    );
    let seen = upstream.wait_for("/upload").await;
    assert!(!seen.headers.contains_key("content-length"), "{seen:?}");
    bridge.stop().await;
}

/// 64 MiB each way, generated chunk by chunk and hashed on the far side. The download
/// uses the upload's seed, so the digest the client computed while sending is also the
/// expected digest of the download (one SHA-256 pass fewer in a debug build). Both run at
/// once on two worker threads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_bodies_stream_intact_both_ways() {
    const LEN: u64 = 64 << 20;
    const SEED: u64 = 7;
    let dir = private_dir();
    let upstream = Upstream::start(&sock(&dir, "up.sock")).await;
    let bridge = Running::start(http_config(
        vec![tcp_any(), sock(&dir, "in.sock")],
        upstream.endpoint.clone(),
    ))
    .await;
    let started = Instant::now();

    // Upload through the Unix listener: a streamed (chunked) body.
    let sent_digest = Arc::new(Mutex::new(None));
    let body = GenBody::new(SEED, LEN, Some(Arc::clone(&sent_digest))).boxed();
    let req = Request::post("/upload")
        .header("host", "pipegate.test")
        .body(body)
        .unwrap();
    let upload = async {
        let resp = send(bridge.unix(), req).await;
        assert_eq!(resp.status(), StatusCode::OK);
        let answer = body_bytes(resp.into_body()).await;
        eprintln!("64 MiB up in {:?}", started.elapsed());
        answer
    };

    // Download through the TCP listener: a streamed response.
    let download = async {
        let path = format!("/download?len={LEN}&seed={SEED}");
        let resp = send(bridge.tcp(), get_request(&path)).await;
        assert_eq!(resp.status(), StatusCode::OK);
        assert!(
            !resp.headers().contains_key("content-length"),
            "the response should be streamed: {:?}",
            resp.headers()
        );
        let out = hash_body(resp.into_body()).await;
        eprintln!("64 MiB down in {:?}", started.elapsed());
        out
    };
    let (answer, (len, digest)) = within(
        Duration::from_secs(90),
        async { tokio::join!(upload, download) },
        "64 MiB each way",
    )
    .await;

    let sent = sent_digest
        .lock()
        .unwrap()
        .expect("the whole upload was produced");
    assert_eq!(answer, format!("{LEN} {}", hex(&sent)), "upload");
    assert_eq!((len, digest), (LEN, sent), "download");
    let text = metrics(bridge.tcp()).await;
    assert!(
        metric(
            &text,
            "pipegate_bytes_total{direction=\"client_to_upstream\"}"
        ) >= LEN as i64,
        "{text}"
    );
    assert!(
        metric(
            &text,
            "pipegate_bytes_total{direction=\"upstream_to_client\"}"
        ) >= LEN as i64,
        "{text}"
    );
    bridge.stop().await;
}

#[tokio::test]
async fn expect_100_continue_is_answered_before_the_body_is_sent() {
    let upstream = Upstream::start(&tcp_any()).await;
    let bridge = Running::start(http_config(vec![tcp_any()], upstream.endpoint.clone())).await;
    let mut tcp = dial_tcp(bridge.tcp()).await;
    let body = b"hello, continue";
    tcp.write_all(
        format!(
            "POST /upload HTTP/1.1\r\nHost: pipegate.test\r\nContent-Length: {}\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let (head, rest) = within(STEP, read_head(&mut tcp), "100 Continue")
        .await
        .unwrap()
        .expect("an interim response before EOF");
    assert!(head.starts_with("HTTP/1.1 100 Continue\r\n"), "{head}");
    assert!(rest.is_empty(), "nothing may follow 100 before the body");
    tcp.write_all(body).await.unwrap();
    let response = within(STEP, read_to_close(&mut tcp), "the final response").await;
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
    assert!(
        response.ends_with(&format!("{} {}", body.len(), sha_hex(body))),
        "{response}"
    );
    bridge.stop().await;
}

#[tokio::test]
async fn hop_by_hop_headers_are_removed_and_via_added() {
    let dir = private_dir();
    let upstream = Upstream::start(&sock(&dir, "up.sock")).await;
    let bridge = Running::start(http_config(vec![tcp_any()], upstream.endpoint.clone())).await;

    let mut tcp = dial_tcp(bridge.tcp()).await;
    tcp.write_all(
        b"GET /hop HTTP/1.1\r\n\
          Host: original.example:8443\r\n\
          Connection: close, X-Hop\r\n\
          X-Hop: 1\r\n\
          Keep-Alive: timeout=5\r\n\
          Proxy-Connection: keep-alive\r\n\
          TE: deflate, trailers\r\n\
          X-End-To-End: kept\r\n\
          \r\n",
    )
    .await
    .unwrap();
    let (head, _) = within(STEP, read_head(&mut tcp), "response")
        .await
        .unwrap()
        .expect("a response");
    assert_eq!(head_status(&head), 200, "{head}");
    assert!(
        head_values(&head, "via")
            .iter()
            .any(|v| v.contains("1.1 pipegate")),
        "{head}"
    );

    let seen = upstream.wait_for("/hop").await;
    let h = &seen.headers;
    for gone in ["x-hop", "keep-alive", "proxy-connection"] {
        assert!(!h.contains_key(gone), "{gone} reached the upstream: {h:?}");
    }
    // The client's TE is hop-by-hop; the bridge asks for trailers itself, nothing more.
    let te: Vec<_> = h.get_all("te").iter().collect();
    assert_eq!(te, ["trailers"], "{h:?}");
    for value in h.get_all("connection") {
        let value = value.to_str().unwrap().to_ascii_lowercase();
        assert!(
            !value.contains("close") && !value.contains("x-hop"),
            "the client's Connection tokens reached the upstream: {h:?}"
        );
    }
    assert_eq!(h["host"], "original.example:8443");
    assert_eq!(h["x-end-to-end"], "kept");
    let via: Vec<_> = h.get_all("via").iter().collect();
    assert_eq!(via, ["1.1 pipegate"], "{h:?}");

    // A header the upstream names in its own Connection header stays on that hop.
    let mut tcp = dial_tcp(bridge.tcp()).await;
    tcp.write_all(b"GET /conn-hdr HTTP/1.1\r\nHost: pipegate.test\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let response = within(STEP, read_to_close(&mut tcp), "response").await;
    let response = String::from_utf8_lossy(&response).into_owned();
    assert_eq!(head_status(&response), 200, "{response}");
    assert!(head_values(&response, "x-secret").is_empty(), "{response}");
    assert_eq!(head_values(&response, "x-kept"), ["yes"], "{response}");
    assert!(
        !head_values(&response, "connection")
            .iter()
            .any(|v| v.to_ascii_lowercase().contains("x-secret")),
        "{response}"
    );
    assert!(
        head_values(&response, "via")
            .iter()
            .any(|v| v.contains("1.1 pipegate")),
        "{response}"
    );
    bridge.stop().await;
}

#[tokio::test]
async fn h2c_prior_knowledge_is_forwarded_as_http1_with_authority_as_host() {
    let dir = private_dir();
    let upstream = Upstream::start(&sock(&dir, "up.sock")).await;
    let bridge = Running::start(http_config(vec![tcp_any()], upstream.endpoint.clone())).await;
    let tcp = dial_tcp(bridge.tcp()).await;
    let (mut sender, conn) = within(
        STEP,
        hyper::client::conn::http2::handshake::<_, _, ReqBody>(
            TokioExecutor::new(),
            TokioIo::new(tcp),
        ),
        "h2 handshake",
    )
    .await
    .expect("h2c handshake with the bridge");
    tokio::spawn(conn);

    let req = Request::get("http://h2.example:8080/h2?q=1")
        .body(empty())
        .unwrap();
    let resp = within(STEP, sender.send_request(req), "h2 response")
        .await
        .expect("an h2 response");
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.version(), Version::HTTP_2);
    assert!(resp
        .headers()
        .get_all("via")
        .iter()
        .any(|v| v == "1.1 pipegate"));
    assert_eq!(body_bytes(resp.into_body()).await, "hello from /h2");

    let seen = upstream.wait_for("/h2").await;
    assert_eq!(seen.version, Version::HTTP_11);
    assert_eq!(seen.uri.path_and_query().unwrap(), "/h2?q=1");
    assert_eq!(seen.headers["host"], "h2.example:8080");

    // A body over h2 arrives intact over HTTP/1.1 on the same h2 connection.
    let data = vec![0x5au8; 300_000];
    let req = Request::post("http://h2.example:8080/upload")
        .body(full(data.clone()))
        .unwrap();
    let resp = within(STEP, sender.send_request(req), "h2 upload")
        .await
        .expect("an h2 response");
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        body_bytes(resp.into_body()).await,
        format!("{} {}", data.len(), sha_hex(&data))
    );
    drop(sender);
    bridge.stop().await;
}

#[tokio::test]
async fn own_endpoints_are_answered_locally_and_never_forwarded() {
    let upstream = Upstream::start(&tcp_any()).await;
    let config = http_config(vec![tcp_any()], upstream.endpoint.clone())
        .nonce(Some("n0nce-4711".to_owned()));
    let bridge = Running::start(config).await;
    let ep = bridge.tcp().clone();

    let (status, headers, body) = get(&ep, "/_pipegate/health").await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(headers["x-pipegate-nonce"], "n0nce-4711");
    assert!(body.is_empty());

    let before = metrics(&ep).await;
    for _ in 0..3 {
        let (status, _, _) = get(&ep, "/hello").await;
        assert_eq!(status, StatusCode::OK);
    }
    let (status, headers, _) = get(&ep, "/_pipegate/anything").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(headers["x-pipegate-error"], "not_found");
    let after = metrics(&ep).await;
    let two = "pipegate_requests_total{class=\"2xx\"}";
    let four = "pipegate_requests_total{class=\"4xx\"}";
    // The first metrics request and the three forwarded ones.
    assert_eq!(metric(&after, two), metric(&before, two) + 4, "{after}");
    assert_eq!(metric(&after, four), metric(&before, four) + 1, "{after}");
    assert!(metric(&after, "pipegate_connections_total{transport=\"tcp\"}") >= 7);

    let paths: Vec<String> = upstream.seen().iter().map(|s| s.uri.to_string()).collect();
    assert_eq!(paths, ["/hello", "/hello", "/hello"]);
    bridge.stop().await;
}

#[tokio::test]
async fn unreachable_upstream_is_502_and_the_bridge_recovers() {
    let dir = private_dir();
    let upstream_at = sock(&dir, "absent.sock");
    let bridge = Running::start(http_config(vec![tcp_any()], upstream_at.clone())).await;

    let (status, headers, body) = get(bridge.tcp(), "/hello").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(headers["x-pipegate-error"], "upstream_unavailable");
    assert_eq!(headers["content-type"], "application/json");
    let json: serde_json::Value = serde_json::from_slice(&body).expect("a JSON body");
    assert_eq!(json["upstream"], upstream_at.to_string(), "{json}");
    let detail = json["detail"].as_str().unwrap();
    assert!(detail.contains("nothing is listening"), "{json}");

    // Once the upstream exists, the same bridge forwards to it.
    let upstream = Upstream::start(&upstream_at).await;
    let (status, _, body) = get(bridge.tcp(), "/hello").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "hello from /hello");
    assert_eq!(upstream.seen().len(), 1);
    let text = metrics(bridge.tcp()).await;
    assert_eq!(metric(&text, "pipegate_upstream_errors_total"), 1);
    bridge.stop().await;
}

#[tokio::test]
async fn silent_upstream_is_504_and_the_bridge_keeps_serving() {
    let upstream = Upstream::start(&tcp_any()).await;
    let mut http = HttpOptions::default();
    http.upstream_timeout = Duration::from_millis(300);
    let bridge =
        Running::start(http_config(vec![tcp_any()], upstream.endpoint.clone()).http(http)).await;

    let started = Instant::now();
    let (status, headers, body) = get(bridge.tcp(), "/hang").await;
    let elapsed = started.elapsed();
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(headers["x-pipegate-error"], "upstream_timeout");
    let json: serde_json::Value = serde_json::from_slice(&body).expect("a JSON body");
    assert_eq!(json["upstream"], upstream.endpoint.to_string(), "{json}");
    assert!(
        elapsed >= Duration::from_millis(290) && elapsed < Duration::from_secs(3),
        "504 after {elapsed:?}"
    );
    upstream.wait_for("/hang").await;

    let (status, _, body) = get(bridge.tcp(), "/hello").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "hello from /hello");
    bridge.stop().await;
}
