//! `serve --mode raw`: bytes through the bridge, Unix ⇄ TCP both ways.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixListener;

use crate::support::{
    dial, echo_bytes, echo_digest, payload, serve, sha256, tcp_upstream, unix_upstream, within,
    Behavior, TestEnv,
};

const BIG: usize = 64 * 1024 * 1024;

async fn big_transfer(endpoint: &str, seed: u64) {
    let data = payload(seed, BIG);
    let expected = sha256(&data);
    let stream = dial(endpoint).await;
    let (digest, len) = within(
        Duration::from_secs(120),
        "64 MiB round trip",
        echo_digest(stream, &data),
    )
    .await
    .expect("round trip");
    assert_eq!(len, BIG as u64, "echoed length");
    assert_eq!(digest, expected, "echoed SHA-256");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unix_to_tcp_64_mib() {
    let env = TestEnv::new();
    let upstream = tcp_upstream(Behavior::Echo).await;
    let listen = format!("unix://{}", env.sock("in.sock").display());
    let (_serve, endpoint) = serve(&[
        "--mode",
        "raw",
        "--listen",
        &listen,
        "--upstream",
        &upstream.endpoint,
    ])
    .await;
    assert_eq!(endpoint, listen);
    big_transfer(&endpoint, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_to_unix_64_mib() {
    let env = TestEnv::new();
    let upstream = unix_upstream(&env.sock("up.sock"), Behavior::Echo);
    let (_serve, endpoint) = serve(&[
        "--mode",
        "raw",
        "--listen",
        "tcp://127.0.0.1:0",
        "--upstream",
        &upstream.endpoint,
    ])
    .await;
    assert!(endpoint.starts_with("tcp://127.0.0.1:"), "{endpoint}");
    assert!(
        !endpoint.ends_with(":0"),
        "the real port is printed: {endpoint}"
    );
    big_transfer(&endpoint, 2).await;
}

/// The client shuts down its write side: the upstream sees EOF, answers after it, and the
/// client still receives the whole answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_close_reaches_the_upstream_and_the_reply_still_flows() {
    let env = TestEnv::new();
    let up_path = env.sock("up.sock");
    let listener = UnixListener::bind(&up_path).expect("bind upstream");
    let (seen_tx, seen_rx) = tokio::sync::oneshot::channel::<Vec<u8>>();
    let upstream = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.expect("accept");
        let mut request = Vec::new();
        // Completes only at EOF: the bridge must forward the client's shutdown.
        stream
            .read_to_end(&mut request)
            .await
            .expect("read request");
        let _ = seen_tx.send(request.clone());
        // Answer after EOF, in pieces with pauses, then close.
        stream.write_all(b"after-eof:").await.expect("reply");
        for chunk in request.chunks(1000) {
            stream.write_all(chunk).await.expect("reply");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        stream.shutdown().await.expect("shutdown");
    });
    let (_serve, endpoint) = serve(&[
        "--mode",
        "raw",
        "--listen",
        "tcp://127.0.0.1:0",
        "--upstream",
        &format!("unix://{}", up_path.display()),
    ])
    .await;

    let request = payload(3, 50_000);
    let mut client = dial(&endpoint).await;
    client.write_all(&request).await.expect("send");
    client.shutdown().await.expect("half-close");
    let seen = within(Duration::from_secs(10), "upstream to see EOF", seen_rx)
        .await
        .expect("upstream saw EOF");
    assert_eq!(
        seen.len(),
        request.len(),
        "upstream got every byte before EOF"
    );
    let mut reply = Vec::new();
    within(
        Duration::from_secs(10),
        "the reply after EOF",
        client.read_to_end(&mut reply),
    )
    .await
    .expect("read reply");
    let mut expected = b"after-eof:".to_vec();
    expected.extend_from_slice(&request);
    assert!(
        reply == expected,
        "reply after half-close differs ({} bytes)",
        reply.len()
    );
    within(Duration::from_secs(5), "upstream task", upstream)
        .await
        .expect("upstream task");
}

/// 200 clients at once, each with its own payload, each echoed intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_connections() {
    const CLIENTS: u64 = 200;
    const SIZE: usize = 64 * 1024;
    let env = TestEnv::new();
    let upstream = tcp_upstream(Behavior::Echo).await;
    let listen = format!("unix://{}", env.sock("in.sock").display());
    let (_serve, endpoint) = serve(&[
        "--mode",
        "raw",
        "--listen",
        &listen,
        "--upstream",
        &upstream.endpoint,
    ])
    .await;

    let mut tasks = Vec::new();
    for i in 0..CLIENTS {
        let endpoint = endpoint.clone();
        tasks.push(tokio::spawn(async move {
            let data = payload(1000 + i, SIZE);
            let stream = dial(&endpoint).await;
            let back = echo_bytes(stream, &data).await.expect("round trip");
            assert!(
                back == data,
                "client {i}: echo differs ({} bytes back)",
                back.len()
            );
        }));
    }
    within(
        Duration::from_secs(60),
        "200 concurrent round trips",
        async {
            for task in tasks {
                task.await.expect("client task");
            }
        },
    )
    .await;
}
