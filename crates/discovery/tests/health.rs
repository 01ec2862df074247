//! The nonce health check and the states, against real servers on real endpoints.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant};

use pipegate_discovery::{
    check_health, inspect, new_nonce, ErrorKind, InstanceMode, Record, State,
};
use pipegate_transport::Endpoint;
use support::{dead_pid, native_endpoint, serve, temp_dir, within, Behavior, STEP};

fn tcp_any() -> Endpoint {
    Endpoint::parse("127.0.0.1:0").unwrap()
}

/// A loopback port nothing listens on (bound, then released).
fn closed_tcp_port() -> Endpoint {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    Endpoint::loopback(port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_right_nonce_passes_on_tcp_and_the_native_transport() {
    let dir = temp_dir();
    let nonce = new_nonce().unwrap();
    for ep in [tcp_any(), native_endpoint(&dir, "ok")] {
        let server = serve(&ep, Behavior::Nonce(nonce.clone())).await;
        within(
            STEP,
            check_health(&server.endpoint, &nonce, Duration::from_secs(5)),
            "health",
        )
        .await
        .unwrap_or_else(|e| panic!("{}: {e}", server.endpoint));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_different_or_missing_nonce_fails() {
    let dir = temp_dir();
    let server = serve(
        &native_endpoint(&dir, "other"),
        Behavior::Nonce(new_nonce().unwrap()),
    )
    .await;
    let ours = new_nonce().unwrap();
    let err = within(
        STEP,
        check_health(&server.endpoint, &ours, Duration::from_secs(5)),
        "health",
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NonceMismatch, "{err}");
    // The other instance's nonce is not leaked into the message.
    assert!(err.to_string().contains("different nonce"), "{err}");

    let bare = serve(&tcp_any(), Behavior::Status(204)).await;
    let err = within(
        STEP,
        check_health(&bare.endpoint, &ours, Duration::from_secs(5)),
        "health",
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NonceMismatch, "{err}");
    assert!(err.to_string().contains("no nonce"), "{err}");

    // An empty expected nonce matches nothing, not even an empty answer.
    let err = within(
        STEP,
        check_health(&bare.endpoint, "", Duration::from_secs(5)),
        "health",
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NonceMismatch, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_status_other_than_204_fails() {
    let server = serve(&tcp_any(), Behavior::Status(200)).await;
    let err = within(
        STEP,
        check_health(&server.endpoint, "x", Duration::from_secs(5)),
        "health",
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BadResponse, "{err}");
    assert!(err.to_string().contains("200 OK instead of 204"), "{err}");

    let closer = serve(&tcp_any(), Behavior::Close).await;
    let err = within(
        STEP,
        check_health(&closer.endpoint, "x", Duration::from_secs(5)),
        "health",
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BadResponse, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_listening_is_unreachable() {
    let err = within(
        STEP,
        check_health(&closed_tcp_port(), "x", Duration::from_secs(5)),
        "health",
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unreachable, "{err}");
}

/// A peer that accepts and never answers cannot hang the check past its bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_peer_times_out_within_the_bound() {
    let dir = temp_dir();
    let bound = Duration::from_millis(600);
    for ep in [tcp_any(), native_endpoint(&dir, "hang")] {
        let server = serve(&ep, Behavior::Hang).await;
        let started = Instant::now();
        let err = within(STEP, check_health(&server.endpoint, "x", bound), "health")
            .await
            .unwrap_err();
        let took = started.elapsed();
        assert_eq!(
            err.kind(),
            ErrorKind::TimedOut,
            "{}: {err}",
            server.endpoint
        );
        assert!(took >= bound, "gave up early, after {took:?}");
        assert!(
            took < bound + Duration::from_secs(2),
            "{}: took {took:?} for a {bound:?} bound",
            server.endpoint
        );
    }
}

#[test]
fn the_default_timeout_is_five_seconds() {
    assert_eq!(pipegate_discovery::HEALTH_TIMEOUT, Duration::from_secs(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn states_from_health_and_pid() {
    let dir = temp_dir();
    let nonce = new_nonce().unwrap();
    let server = serve(&native_endpoint(&dir, "st"), Behavior::Nonce(nonce.clone())).await;
    let timeout = Duration::from_secs(3);

    let mut rec = Record::new(
        vec![server.endpoint.clone()],
        InstanceMode::Agent,
        None,
        nonce,
    );
    let status = within(STEP, inspect(&rec, timeout), "inspect").await;
    assert_eq!(status.state, State::Running);
    assert!(status.reason.is_none());

    // A live pid (ours) whose endpoint answers with another nonce: PID reuse, or another
    // instance on the endpoint. Unhealthy, never running.
    rec.nonce = new_nonce().unwrap();
    let status = within(STEP, inspect(&rec, timeout), "inspect").await;
    assert_eq!(status.state, State::Unhealthy);
    assert_eq!(
        status.reason.as_ref().map(|e| e.kind()),
        Some(ErrorKind::NonceMismatch)
    );

    // The same with a dead pid: stale.
    rec.pid = dead_pid();
    let status = within(STEP, inspect(&rec, timeout), "inspect").await;
    assert_eq!(status.state, State::Stale);

    // pid 0 cannot be an instance: stale.
    rec.pid = 0;
    let status = within(STEP, inspect(&rec, timeout), "inspect").await;
    assert_eq!(status.state, State::Stale);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_records_are_judged_by_connect_and_pid() {
    let dir = temp_dir();
    let timeout = Duration::from_secs(3);
    let server = serve(&native_endpoint(&dir, "raw"), Behavior::Close).await;
    let mut rec = Record::new(
        vec![server.endpoint.clone()],
        InstanceMode::Raw,
        Some(Endpoint::loopback(9)),
        new_nonce().unwrap(),
    );
    let status = within(STEP, inspect(&rec, timeout), "inspect").await;
    assert_eq!(status.state, State::Running, "{:?}", status.reason);

    rec.url = closed_tcp_port();
    let status = within(STEP, inspect(&rec, timeout), "inspect").await;
    assert_eq!(status.state, State::Unhealthy);

    rec.url = server.endpoint.clone();
    rec.pid = dead_pid();
    let status = within(STEP, inspect(&rec, timeout), "inspect").await;
    assert_eq!(status.state, State::Stale);
}
