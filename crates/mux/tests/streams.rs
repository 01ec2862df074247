//! A connector and a mux server in-process over loopback TCP: the stream header, the
//! allow-list, half-close and back-pressure per stream, and a session that dies.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io;
use std::time::Duration;

use pipegate_mux::{Connector, ConnectorOptions, ErrorKind, Via};
use pipegate_transport::{ConnectOptions, Dialer as _, Endpoint};
use support::{connector, echo_digest, payload, sha256, upstream, within, Behavior, Mux};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const LIMIT: Duration = Duration::from_secs(60);
const OPEN: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_streams_arrive_intact_over_one_session() {
    let echo = upstream(Behavior::Echo).await;
    let mux = Mux::start(vec![echo.endpoint.clone()]).await;
    let connector = connector(&mux);
    let mut tasks = Vec::new();
    for i in 0..64u64 {
        let connector = connector.clone();
        let endpoint = echo.endpoint.clone();
        tasks.push(tokio::spawn(async move {
            let data = payload(i, 256 * 1024 + i as usize);
            let stream = connector.open(&endpoint, OPEN).await.expect("open");
            assert_eq!(stream.session(), 1, "every stream shares the first session");
            let digest = echo_digest(stream, &data).await.expect("echo");
            assert_eq!(digest, sha256(&data), "stream {i} corrupted");
        }));
    }
    within(LIMIT, "64 echo streams", async {
        for task in tasks {
            task.await.unwrap();
        }
    })
    .await;
    connector.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_off_the_allow_list_are_refused_with_the_flag_to_add() {
    let echo = upstream(Behavior::Echo).await;
    let other = upstream(Behavior::Echo).await;
    let mux = Mux::start(vec![echo.endpoint.clone()]).await;
    let connector = connector(&mux);
    let err = connector.open(&other.endpoint, OPEN).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotAllowed);
    assert_eq!(
        err.to_string(),
        format!(
            "{0} is not allowed: start `pipegate mux` with --allow {0}",
            other.endpoint
        )
    );
    // The session survives a refusal.
    let ok = connector.open(&echo.endpoint, OPEN).await.expect("allowed");
    assert_eq!(ok.session(), 1);

    // With no --allow at all, the refusal says that nothing is allowed.
    let closed = Mux::start(Vec::new()).await;
    let err = connector_for(&closed)
        .open(&echo.endpoint, OPEN)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotAllowed);
    assert!(err.to_string().contains("allows no endpoint"), "{err}");

    // As a dialer the refusal is an io::Error that carries it.
    let io_err = connector
        .dial(&other.endpoint, &ConnectOptions::new())
        .await
        .unwrap_err();
    assert_eq!(io_err.kind(), io::ErrorKind::PermissionDenied);
    assert!(io_err.to_string().contains("--allow"), "{io_err}");
}

fn connector_for(mux: &Mux) -> pipegate_mux::Connector {
    connector(mux)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allowed_endpoint_with_nothing_listening_is_reported_unreachable() {
    let gone = {
        let up = upstream(Behavior::Echo).await;
        up.endpoint.clone()
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mux = Mux::start(vec![gone.clone()]).await;
    let err = connector(&mux).open(&gone, OPEN).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unreachable);
    let text = err.to_string();
    assert!(text.contains(&format!("cannot reach {gone}")), "{text}");
    assert!(text.contains("nothing is listening"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_close_is_per_stream() {
    let counter = upstream(Behavior::CountThenReply).await;
    let echo = upstream(Behavior::Echo).await;
    let mux = Mux::start(vec![counter.endpoint.clone(), echo.endpoint.clone()]).await;
    let connector = connector(&mux);
    let mut open = connector.open(&echo.endpoint, OPEN).await.unwrap();
    let mut counted = connector.open(&counter.endpoint, OPEN).await.unwrap();
    assert!(
        counted.upstream_half_close(),
        "TCP upstreams forward half-close"
    );

    counted.write_all(&payload(1, 100_000)).await.unwrap();
    counted.shutdown().await.unwrap();
    let mut reply = String::new();
    within(
        LIMIT,
        "the reply after EOF",
        counted.read_to_string(&mut reply),
    )
    .await
    .unwrap();
    assert_eq!(
        reply, "got 100000 bytes",
        "the upstream saw EOF and still answered"
    );

    // The other stream is still open both ways.
    open.write_all(b"still here").await.unwrap();
    let mut back = [0u8; 10];
    within(
        LIMIT,
        "the echo on the other stream",
        open.read_exact(&mut back),
    )
    .await
    .unwrap();
    assert_eq!(&back, b"still here");
    open.shutdown().await.unwrap();
    let mut rest = Vec::new();
    within(
        LIMIT,
        "EOF on the other stream",
        open.read_to_end(&mut rest),
    )
    .await
    .unwrap();
    assert!(rest.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_nobody_reads_does_not_stall_the_others() {
    let firehose = upstream(Behavior::Firehose(64 * 1024 * 1024)).await;
    let echo = upstream(Behavior::Echo).await;
    let mux = Mux::start(vec![firehose.endpoint.clone(), echo.endpoint.clone()]).await;
    let connector = connector(&mux);
    // Opened and never read: its window fills and its sender stops.
    let _stalled = connector.open(&firehose.endpoint, OPEN).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let data = payload(9, 4 * 1024 * 1024);
    let stream = connector.open(&echo.endpoint, OPEN).await.unwrap();
    let digest = within(
        Duration::from_secs(20),
        "4 MiB echo next to a stalled stream",
        echo_digest(stream, &data),
    )
    .await
    .unwrap();
    assert_eq!(digest, sha256(&data));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_fail_when_the_session_dies_and_the_next_open_reconnects() {
    let echo = upstream(Behavior::Echo).await;
    let mux = Mux::start(vec![echo.endpoint.clone()]).await;
    let endpoint = mux.endpoint.clone();
    let connector = connector(&mux);
    let mut stream = connector.open(&echo.endpoint, OPEN).await.unwrap();
    stream.write_all(b"ping").await.unwrap();
    let mut back = [0u8; 4];
    stream.read_exact(&mut back).await.unwrap();

    mux.kill().await;
    // In flight: reading fails (not a clean EOF that would pass for the end of the data).
    let mut buf = [0u8; 16];
    let read = within(LIMIT, "the read to fail", stream.read(&mut buf)).await;
    let err = read.expect_err("a dead session must not look like EOF");
    assert!(
        matches!(
            err.kind(),
            io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
        ),
        "{err:?}"
    );

    // Back up on the same port: the next open starts session 2.
    let _mux = Mux::start_on(&endpoint, vec![echo.endpoint.clone()]).await;
    let again = within(LIMIT, "reopening", async {
        loop {
            match connector.open(&echo.endpoint, OPEN).await {
                Ok(stream) => break stream,
                // The first try may land in the back-off window.
                Err(e) if e.kind() == ErrorKind::HelperFailed || e.kind() == ErrorKind::Io => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("reopening failed: {e}"),
            }
        }
    })
    .await;
    assert_eq!(again.session(), 2);
    let data = payload(3, 100_000);
    assert_eq!(echo_digest(again, &data).await.unwrap(), sha256(&data));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dialer_returns_a_tunneled_transport_stream() {
    let echo = upstream(Behavior::Echo).await;
    let mux = Mux::start(vec![echo.endpoint.clone()]).await;
    let connector = connector(&mux);
    let stream = connector
        .dial(&echo.endpoint, &ConnectOptions::new())
        .await
        .unwrap();
    let peer = stream.peer();
    assert_eq!(peer.endpoint, echo.endpoint);
    assert!(stream.supports_half_close());
    let tunnel = peer.tunnel.as_ref().expect("tunnel info");
    assert_eq!(tunnel.via, mux.endpoint.to_string());
    assert_eq!((tunnel.session, tunnel.open_streams), (1, 1));
    let data = payload(5, 10_000);
    assert_eq!(echo_digest(stream, &data).await.unwrap(), sha256(&data));
    assert_eq!(connector.to_string(), mux.endpoint.to_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_says_hello_and_a_closed_connector_refuses() {
    let mux = Mux::start(Vec::new()).await;
    let connector = connector(&mux);
    let version = connector.start().await.unwrap();
    assert!(version.starts_with("pipegate-mux/1 "), "{version}");
    connector.shutdown().await;
    let err = connector
        .open(&Endpoint::loopback(1), OPEN)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::SessionClosed);
}

/// A connector whose session is up and proven (a hello answered), as after `serve` starts.
async fn started(mux: &Mux, options: ConnectorOptions) -> Connector {
    let connector = Connector::new(Via::Endpoint(mux.endpoint.clone()), options);
    within(LIMIT, "the hello", connector.start()).await.unwrap();
    connector
}

/// The mux error inside an `io::Error` from an optimistic stream.
fn mux_error(err: &io::Error) -> &pipegate_mux::Error {
    err.get_ref()
        .and_then(|inner| inner.downcast_ref::<pipegate_mux::Error>())
        .unwrap_or_else(|| panic!("not a mux error inside: {err:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn optimistic_streams_carry_data_and_a_refusal_fails_the_first_read() {
    let echo = upstream(Behavior::Echo).await;
    let other = upstream(Behavior::Echo).await;
    let mux = Mux::start(vec![echo.endpoint.clone()]).await;
    let connector = started(&mux, ConnectorOptions::new()).await;
    let stream = connector
        .open_optimistic(&echo.endpoint, OPEN)
        .await
        .unwrap();
    let data = payload(11, 300_000);
    assert_eq!(echo_digest(stream, &data).await.unwrap(), sha256(&data));

    // Refused: the open itself succeeds; bytes written go nowhere; reads say why.
    let mut refused = connector
        .open_optimistic(&other.endpoint, OPEN)
        .await
        .unwrap();
    refused.write_all(b"never delivered").await.unwrap();
    let mut buf = [0u8; 16];
    let err = within(LIMIT, "the refusal", refused.read(&mut buf))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::PermissionDenied);
    assert_eq!(mux_error(&err).kind(), ErrorKind::NotAllowed);
    assert_eq!(
        err.to_string(),
        format!(
            "{0} is not allowed: start `pipegate mux` with --allow {0}",
            other.endpoint
        )
    );
    let again = refused.read(&mut buf).await.unwrap_err();
    assert_eq!(again.kind(), io::ErrorKind::PermissionDenied, "{again}");
    let write = refused.write_all(b"more").await.unwrap_err();
    assert_eq!(write.kind(), io::ErrorKind::PermissionDenied, "{write}");

    // The session goes on.
    let next = connector
        .open_optimistic(&echo.endpoint, OPEN)
        .await
        .unwrap();
    assert_eq!(next.session(), 1);
    let data = payload(12, 1000);
    assert_eq!(echo_digest(next, &data).await.unwrap(), sha256(&data));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_optimistic_stream_to_an_unreachable_endpoint_fails_its_first_read() {
    let gone = {
        let up = upstream(Behavior::Echo).await;
        up.endpoint.clone()
    };
    let mux = Mux::start(vec![gone.clone()]).await;
    let connector = started(&mux, ConnectorOptions::new()).await;
    let mut stream = connector.open_optimistic(&gone, OPEN).await.unwrap();
    let mut buf = Vec::new();
    let err = within(LIMIT, "the dial failure", stream.read_to_end(&mut buf))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
    assert_eq!(mux_error(&err).kind(), ErrorKind::Unreachable);
    assert!(
        err.to_string().contains(&format!("cannot reach {gone}")),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_optimistic_stream_sends_its_header_on_first_read_or_shutdown() {
    // The upstream talks first: the header goes out with the first read.
    let firehose = upstream(Behavior::Firehose(100_000)).await;
    let counter = upstream(Behavior::CountThenReply).await;
    let mux = Mux::start(vec![firehose.endpoint.clone(), counter.endpoint.clone()]).await;
    let connector = started(&mux, ConnectorOptions::new()).await;
    let mut stream = connector
        .open_optimistic(&firehose.endpoint, OPEN)
        .await
        .unwrap();
    let mut got = Vec::new();
    within(LIMIT, "the firehose", stream.read_to_end(&mut got))
        .await
        .unwrap();
    assert_eq!(got.len(), 100_000);

    // Nothing to send at all: the header goes out with the shutdown, then the FIN.
    let mut stream = connector
        .open_optimistic(&counter.endpoint, OPEN)
        .await
        .unwrap();
    stream.shutdown().await.unwrap();
    let mut reply = String::new();
    within(LIMIT, "the count", stream.read_to_string(&mut reply))
        .await
        .unwrap();
    assert_eq!(reply, "got 0 bytes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn optimistic_open_waits_for_the_answer_until_the_session_is_proven() {
    let echo = upstream(Behavior::Echo).await;
    let other = upstream(Behavior::Echo).await;
    let mux = Mux::start(vec![echo.endpoint.clone()]).await;
    // No hello yet: the far side might not even be a mux, so this open waits.
    let connector = connector(&mux);
    let err = connector
        .open_optimistic(&other.endpoint, OPEN)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotAllowed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_optimistic_dialer_hands_out_streams_before_the_answer() {
    let echo = upstream(Behavior::Echo).await;
    let other = upstream(Behavior::Echo).await;
    let mux = Mux::start(vec![echo.endpoint.clone()]).await;
    let connector = started(&mux, ConnectorOptions::new().optimistic_open(true)).await;
    let stream = connector
        .dial(&echo.endpoint, &ConnectOptions::new())
        .await
        .unwrap();
    assert!(stream.supports_half_close(), "TCP upstreams half-close");
    let data = payload(13, 50_000);
    assert_eq!(echo_digest(stream, &data).await.unwrap(), sha256(&data));

    let mut refused = connector
        .dial(&other.endpoint, &ConnectOptions::new())
        .await
        .expect("the refusal comes with the first read");
    let mut buf = [0u8; 1];
    let err = within(LIMIT, "the refusal", refused.read(&mut buf))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::PermissionDenied);
    assert!(err.to_string().contains("--allow"), "{err}");
}
