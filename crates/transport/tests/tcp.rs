//! Loopback TCP: bind, accept, connect, peer info, the loopback-only default, errors,
//! concurrency, half-close and bulk transfer through the relay. Runs on every OS.
// Helpers outside the #[test] functions are test code too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::{IpAddr, Ipv4Addr};

use pipegate_transport::{
    connect, ConnectOptions, Endpoint, ErrorKind, ListenOptions, Listener, Mode,
};
use support::{bind, within, STEP};

#[tokio::test]
async fn round_trip_and_peer_info() {
    let listener = bind(&support::tcp_any()).await;
    let endpoint = listener.local_endpoint().clone();
    let Endpoint::Tcp { host, port } = &endpoint else {
        panic!("a TCP listener reports a TCP endpoint, not {endpoint}");
    };
    assert_eq!(host, "127.0.0.1");
    assert_ne!(*port, 0, "local_endpoint has the port the OS picked");
    let port = *port;

    let (server_peer, _, client, _server) = support::hello_world(listener, &endpoint).await;

    // The accepting side: its own endpoint, and the client's address.
    assert_eq!(server_peer.mode, Mode::Tcp);
    assert_eq!(server_peer.endpoint, endpoint);
    let addr = server_peer
        .addr
        .expect("accepted TCP stream has the peer address");
    assert_eq!(addr.ip(), IpAddr::V4(Ipv4Addr::LOCALHOST));
    assert_ne!(
        addr.port(),
        port,
        "the peer is the client, not the listener"
    );
    assert_eq!((server_peer.pid, server_peer.uid), (None, None));

    // The dialing side: the endpoint dialed and the listener's address.
    let client_peer = client.peer();
    assert_eq!(client.mode(), Mode::Tcp);
    assert_eq!(client_peer.mode, Mode::Tcp);
    assert_eq!(client_peer.endpoint, endpoint);
    let addr = client_peer
        .addr
        .expect("dialed TCP stream has the peer address");
    assert_eq!(addr.ip(), IpAddr::V4(Ipv4Addr::LOCALHOST));
    assert_eq!(addr.port(), port);
    assert!(client.supports_half_close());
}

#[tokio::test]
async fn accepted_peer_addr_is_the_clients_local_addr() {
    let mut listener = bind(&support::tcp_any()).await;
    let Endpoint::Tcp { port, .. } = listener.local_endpoint().clone() else {
        unreachable!()
    };
    let raw = within(
        STEP,
        tokio::net::TcpStream::connect(("127.0.0.1", port)),
        "raw connect",
    )
    .await
    .expect("raw connect");
    let accepted = within(STEP, listener.accept(), "accept")
        .await
        .expect("accept");
    assert_eq!(
        accepted.peer().addr,
        Some(raw.local_addr().expect("local addr"))
    );
}

#[tokio::test]
async fn non_loopback_bind_needs_allow_remote() {
    let wildcard = Endpoint::parse("0.0.0.0:0").expect("endpoint");
    let err = Listener::bind(&wildcard, &ListenOptions::new())
        .await
        .expect_err("0.0.0.0 must be refused by default");
    assert_eq!(err.kind(), ErrorKind::NotLoopback);
    let msg = err.to_string();
    assert!(msg.contains("--allow-remote"), "{msg}");
    assert!(msg.contains("0.0.0.0"), "{msg}");
    assert_eq!(err.endpoint(), Some(&wildcard));

    let listener = within(
        STEP,
        Listener::bind(&wildcard, &ListenOptions::new().allow_remote(true)),
        "bind with allow_remote",
    )
    .await
    .expect("allow_remote permits 0.0.0.0");
    let Endpoint::Tcp { host, port } = listener.local_endpoint().clone() else {
        unreachable!()
    };
    assert_eq!(host, "0.0.0.0");
    assert_ne!(port, 0);
    // It really listens: a loopback client reaches the wildcard listener.
    support::spawn_echo_server(listener);
    support::echo_once(&Endpoint::loopback(port), b"via the wildcard").await;
}

#[tokio::test]
async fn connect_to_closed_port_is_not_found() {
    // Bind and close a port, so nothing listens there.
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("probe bind");
        probe.local_addr().expect("probe addr").port()
    };
    let endpoint = Endpoint::loopback(port);
    let err = within(STEP, connect(&endpoint, &ConnectOptions::new()), "connect")
        .await
        .expect_err("nothing listens on a closed port");
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    assert_eq!(
        err.to_string(),
        format!("nothing is listening on tcp://127.0.0.1:{port}")
    );
    assert_eq!(err.endpoint(), Some(&endpoint));
    assert!(
        err.io_error().is_some(),
        "the OS error is kept as the source"
    );
    assert_eq!(err.into_io().kind(), std::io::ErrorKind::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_connections() {
    let listener = bind(&support::tcp_any()).await;
    let endpoint = listener.local_endpoint().clone();
    support::spawn_echo_server(listener);
    support::concurrent_echo(&endpoint, 200, ConnectOptions::new()).await;
}

#[tokio::test]
async fn half_close_direct() {
    support::half_close_direct(bind(&support::tcp_any()).await).await;
}

#[tokio::test]
async fn half_close_through_relay() {
    let front = bind(&support::tcp_any()).await;
    let upstream = bind(&support::tcp_any()).await;
    support::half_close_through_relay(front, upstream).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_64_mib_with_checksum() {
    let front = bind(&support::tcp_any()).await;
    let upstream = bind(&support::tcp_any()).await;
    // 64 MiB up while 4 MiB comes back (SHA-256 in a debug build is the slow part).
    support::bulk_through_relay(front, upstream, 64 << 20, 4 << 20).await;
}
