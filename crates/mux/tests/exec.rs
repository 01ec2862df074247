//! `exec:` helpers that are not a `pipegate mux` (the real one is tested end to end in
//! the `pipegate` package): start-up failures are reported with the helper's exit status,
//! restarts back off, and nothing the helper started outlives the connector.
#![cfg(unix)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;
use std::time::Duration;

use pipegate_mux::{Connector, ConnectorOptions, ErrorKind, Via};
use pipegate_transport::Endpoint;
use support::within;

fn exec(script: &str) -> Connector {
    let via = Via::Exec(vec!["sh".into(), "-c".into(), script.into()]);
    Connector::new(
        via,
        ConnectorOptions::new().startup_timeout(Duration::from_secs(2)),
    )
}

fn starts(path: &Path) -> usize {
    std::fs::read_to_string(path)
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

#[tokio::test]
async fn a_helper_that_exits_is_reported_with_its_status_and_restarts_back_off() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("starts");
    let connector = exec(&format!(
        "echo start >> '{}'; echo 'not a mux' >&2; exit 3",
        log.display()
    ));
    let err = within(Duration::from_secs(20), "start", connector.start())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::SessionClosed, "{err}");
    let text = err.to_string();
    assert!(text.contains("exited: exit status: 3"), "{text}");
    assert_eq!(starts(&log), 1);

    // Right away, with a deadline shorter than the back-off: refused without a start.
    let target = Endpoint::loopback(1);
    let err = connector
        .open(&target, Duration::from_millis(20))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::HelperFailed, "{err}");
    assert!(err.to_string().contains("next try is in"), "{err}");
    assert_eq!(starts(&log), 1, "no start inside the back-off");

    // A deadline past the back-off waits it out and starts the helper again.
    let _ = connector.open(&target, Duration::from_secs(2)).await;
    assert_eq!(starts(&log), 2);
    connector.shutdown().await;
}

#[tokio::test]
async fn a_helper_that_cannot_start_says_so() {
    let via = Via::Exec(vec!["/nonexistent/pipegate".into(), "mux".into()]);
    let connector = Connector::new(via, ConnectorOptions::new());
    let err = connector.start().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::HelperFailed);
    assert!(
        err.to_string()
            .starts_with("cannot start the mux helper (exec:/nonexistent/pipegate mux)"),
        "{err}"
    );
    let source = std::error::Error::source(&err).expect("the OS error");
    assert!(source.to_string().contains("No such file"), "{source}");
}

fn alive(pid: u32) -> bool {
    // A zombie (nobody reaped it yet) is dead for this purpose.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

#[tokio::test]
async fn shutdown_kills_the_helper_and_what_it_started() {
    let dir = tempfile::tempdir().unwrap();
    let pids = dir.path().join("pids");
    // Never answers, ignores its stdin closing, and leaves a grandchild behind.
    let connector = exec(&format!(
        "sleep 300 & echo $! > '{0}'; echo $$ >> '{0}'; exec sleep 301",
        pids.display()
    ));
    let err = within(Duration::from_secs(20), "start", connector.start())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::TimedOut, "{err}");
    let text = std::fs::read_to_string(&pids).unwrap();
    let pids: Vec<u32> = text.lines().map(|l| l.trim().parse().unwrap()).collect();
    assert_eq!(pids.len(), 2, "{text}");
    assert!(
        pids.iter().all(|&pid| alive(pid)),
        "both run before shutdown"
    );
    within(Duration::from_secs(20), "shutdown", connector.shutdown()).await;
    for _ in 0..100 {
        if pids.iter().all(|&pid| !alive(pid)) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("left behind after shutdown: {pids:?}");
}
