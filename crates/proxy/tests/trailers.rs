//! HTTP/1.1 trailers pass through the bridge in both directions (RFC 9110 §6.5), with raw
//! peers on each side so the bytes on the wire are what is checked.
#![cfg(unix)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use pipegate_transport::Endpoint;
use support::{dial_tcp, http_config, tcp_any, within, Running, STEP};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Reads until `needle` has been seen (or the peer closes), returning everything read.
async fn read_until<R: AsyncReadExt + Unpin>(reader: &mut R, needle: &[u8]) -> Vec<u8> {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !seen.windows(needle.len()).any(|w| w == needle) {
        let n = reader.read(&mut buf).await.expect("read");
        if n == 0 {
            break;
        }
        seen.extend_from_slice(&buf[..n]);
    }
    seen
}

#[tokio::test]
async fn trailers_pass_both_ways() {
    // A raw upstream: records the request bytes up to the end of its trailer section,
    // then answers with a chunked body and a declared trailer.
    let upstream = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = upstream.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        let (mut sock, _) = upstream.accept().await.unwrap();
        let request = read_until(&mut sock, b"x-req-sum: r1\r\n\r\n").await;
        sock.write_all(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ntrailer: x-checksum\r\n\r\n\
              5\r\nhello\r\n0\r\nx-checksum: abc123\r\n\r\n",
        )
        .await
        .unwrap();
        String::from_utf8_lossy(&request).into_owned()
    });
    let bridge = Running::start(http_config(vec![tcp_any()], Endpoint::loopback(port))).await;

    let mut client = dial_tcp(bridge.tcp()).await;
    client
        .write_all(
            b"POST /t HTTP/1.1\r\nhost: example\r\nte: trailers\r\ntrailer: x-req-sum\r\n\
              transfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nx-req-sum: r1\r\n\r\n",
        )
        .await
        .unwrap();
    let response = within(
        STEP,
        read_until(&mut client, b"x-checksum: abc123\r\n\r\n"),
        "the response with its trailer",
    )
    .await;
    let response = String::from_utf8_lossy(&response).to_lowercase();
    let request = within(STEP, server, "the upstream")
        .await
        .unwrap()
        .to_lowercase();

    assert!(
        request.contains("abc\r\n"),
        "request body reached the upstream:\n{request}"
    );
    assert!(
        request.contains("x-req-sum: r1\r\n"),
        "the request trailer reached the upstream:\n{request}"
    );
    assert!(
        request.contains("te: trailers"),
        "the bridge asked the upstream for trailers:\n{request}"
    );
    assert!(response.contains("hello"), "response body:\n{response}");
    assert!(
        response.contains("x-checksum: abc123"),
        "the response trailer reached the client:\n{response}"
    );
    drop(client);
    within(Duration::from_secs(10), bridge.stop(), "shutdown").await;
}
