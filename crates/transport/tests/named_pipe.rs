//! Windows named pipes: round trip, peer info, a burst of simultaneous clients, errors,
//! the lack of half-close, and bulk transfer through the relay. Runs under Wine on Linux
//! (`cargo test --target x86_64-pc-windows-gnu` with scripts/wine-run as the runner).
#![cfg(windows)]
// Helpers outside the #[test] functions are test code too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use pipegate_transport::{
    connect, ConnectOptions, Endpoint, ErrorKind, ListenOptions, Listener, Mode,
};
use support::{bind, within, STEP};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn round_trip_and_peer_info() {
    let ep = support::unique_pipe();
    let listener = bind(&ep).await;
    assert_eq!(listener.local_endpoint(), &ep);
    let (peer, half_close, client, _server) = support::hello_world(listener, &ep).await;

    assert_eq!(peer.mode, Mode::NamedPipe);
    assert_eq!(peer.endpoint, ep);
    assert_eq!(
        peer.pid,
        Some(std::process::id()),
        "GetNamedPipeClientProcessId names this process (client and server are the same)"
    );
    assert_eq!((peer.uid, peer.addr), (None, None));
    assert!(!half_close, "named pipes have no half-close");

    assert_eq!(client.mode(), Mode::NamedPipe);
    assert_eq!(client.peer().endpoint, ep);
    assert_eq!(client.peer().pid, None);
    assert!(!client.supports_half_close());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burst_of_256_simultaneous_clients_never_sees_pipe_busy() {
    let ep = support::unique_pipe();
    support::spawn_echo_server(bind(&ep).await);
    // Default options: the 5 s busy-retry deadline. Any PipeBusy would be listed.
    support::concurrent_echo(&ep, 256, ConnectOptions::default()).await;
}

#[tokio::test]
async fn connect_to_a_missing_pipe_is_not_found() {
    let ep = support::unique_pipe();
    assert!(ep.to_string().starts_with("npipe://"), "{ep}");
    support::assert_nothing_listens(&ep).await;
}

#[tokio::test]
async fn a_dropped_listener_no_longer_answers() {
    let ep = support::unique_pipe();
    let server = support::spawn_echo_server(bind(&ep).await);
    drop(support::echo_once(&ep, b"alive").await);
    // Stop serving: aborting the accept loop drops the listener and its waiting instances.
    server.abort();
    let _ = server.await;
    // Instances close as the runtime processes their cancelled connects (and the echo
    // task sees its client go), so poll until the name is gone. Bounded: a leaked
    // instance would keep the name answering and fail the test.
    let err = within(
        STEP,
        async {
            loop {
                match connect(&ep, &ConnectOptions::new()).await {
                    Err(err) => return err,
                    Ok(stream) => drop(stream),
                }
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        },
        "the pipe name to disappear",
    )
    .await;
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
}

#[tokio::test]
async fn unix_endpoints_are_unsupported_on_windows() {
    let ep = Endpoint::parse("unix:///tmp/x.sock").expect("endpoint");
    let expected = "unix endpoints are not supported on this OS: unix:///tmp/x.sock";
    let err = Listener::bind(&ep, &ListenOptions::new())
        .await
        .expect_err("no Unix sockets here");
    assert_eq!(err.kind(), ErrorKind::Unsupported);
    assert_eq!(err.to_string(), expected);
    let err = within(STEP, connect(&ep, &ConnectOptions::new()), "connect")
        .await
        .expect_err("no Unix sockets here");
    assert_eq!(err.kind(), ErrorKind::Unsupported);
    assert_eq!(err.to_string(), expected);
}

#[tokio::test]
async fn no_half_close_eof_comes_only_with_drop() {
    let ep = support::unique_pipe();
    let mut listener = bind(&ep).await;
    let mut client = within(STEP, connect(&ep, &ConnectOptions::new()), "connect")
        .await
        .expect("connect");
    let mut server = within(STEP, listener.accept(), "accept")
        .await
        .expect("accept");

    // shutdown is a no-op on a pipe: the client can still write, and the server reads it
    // rather than an EOF.
    client.write_all(b"before").await.expect("write");
    client.shutdown().await.expect("shutdown is a no-op");
    client
        .write_all(b" after")
        .await
        .expect("write after shutdown");
    let mut buf = [0; 12];
    within(STEP, server.read_exact(&mut buf), "server read")
        .await
        .expect("server reads both writes");
    assert_eq!(&buf, b"before after");

    // Dropping the client is what the server sees as EOF.
    drop(client);
    let n = within(STEP, server.read(&mut buf), "server read after drop")
        .await
        .expect("EOF, not an error");
    assert_eq!(
        n, 0,
        "the server's read returns EOF once the client is gone"
    );

    // And the other way round.
    let mut client = within(STEP, connect(&ep, &ConnectOptions::new()), "connect")
        .await
        .expect("connect");
    let mut server = within(STEP, listener.accept(), "accept")
        .await
        .expect("accept");
    server.write_all(b"last words").await.expect("server write");
    drop(server);
    let mut got = Vec::new();
    within(STEP, client.read_to_end(&mut got), "client read to EOF")
        .await
        .expect("client reads what was buffered, then EOF");
    assert_eq!(got, b"last words");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_8_mib_with_checksum() {
    let front = bind(&support::unique_pipe()).await;
    let upstream = bind(&support::unique_pipe()).await;
    support::bulk_through_relay(front, upstream, 8 << 20, 8 << 20).await;
}

/// The bridge topology: a pipe client, a TCP upstream. The pipe cannot be half-closed,
/// so the upstream finishing ends the relay, and the client sees the reply and then EOF.
#[tokio::test]
async fn pipe_client_relayed_to_tcp_upstream_sees_the_reply_then_eof() {
    let front = bind(&support::unique_pipe()).await;
    let front_ep = front.local_endpoint().clone();
    let mut upstream = bind(&support::tcp_any()).await;
    let upstream_ep = upstream.local_endpoint().clone();
    let upstream_task = tokio::spawn(async move {
        let mut stream = upstream.accept().await.expect("upstream accept");
        let mut request = [0; 7];
        stream
            .read_exact(&mut request)
            .await
            .expect("upstream read");
        stream.write_all(b"reply").await.expect("upstream write");
        stream.shutdown().await.expect("upstream shutdown");
        request
    });
    let relay_task = support::spawn_relay_once(front, upstream_ep);

    let mut client = within(STEP, connect(&front_ep, &ConnectOptions::new()), "connect")
        .await
        .expect("connect to the relay");
    client.write_all(b"request").await.expect("client write");
    let mut got = Vec::new();
    within(STEP, client.read_to_end(&mut got), "reply then EOF")
        .await
        .expect("client read");
    assert_eq!(got, b"reply");
    assert_eq!(
        &within(STEP, upstream_task, "upstream")
            .await
            .expect("upstream task"),
        b"request"
    );
    let outcome = within(STEP, relay_task, "relay").await.expect("relay task");
    assert_eq!(
        outcome.reason.label(),
        "upstream_closed",
        "{:?}",
        outcome.reason
    );
    assert_eq!(outcome.client_to_upstream, 7);
    assert_eq!(outcome.upstream_to_client, 5);
}

#[tokio::test]
#[ignore = "needs real Windows: Wine does not enforce FILE_FLAG_FIRST_PIPE_INSTANCE"]
async fn a_pipe_name_bound_twice_is_refused() {
    let ep = support::unique_pipe();
    let first = bind(&ep).await;
    let err = Listener::bind(&ep, &ListenOptions::new())
        .await
        .expect_err("the name is taken");
    assert_eq!(err.kind(), ErrorKind::AddrInUse, "{err}");
    assert!(
        err.to_string()
            .contains("is already in use by another process"),
        "{err}"
    );
    // The first listener keeps serving.
    support::spawn_echo_server(first);
    support::echo_once(&ep, b"still mine").await;
}
