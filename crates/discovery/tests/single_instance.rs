//! The single-instance guard: claim under the lock, refuse a running instance, take
//! over a stale one, and ten simultaneous starts on the native transport (a Unix socket,
//! or a named pipe under Windows/Wine) ending with exactly one winner.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use pipegate_discovery::{
    check_health, new_nonce, ClaimOptions, ErrorKind, InstanceMode, Record, State,
};
use pipegate_transport::{Endpoint, ListenOptions, Listener};
use support::{
    dead_pid, native_endpoint, registry, serve, serve_on, temp_dir, within, Behavior, LiveProcess,
    Server, STEP,
};
use tokio::sync::Barrier;

fn quick() -> ClaimOptions {
    ClaimOptions::new()
        .health_timeout(Duration::from_secs(3))
        .lock_timeout(Duration::from_secs(30))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_instance_is_refused_with_its_url_and_pid() {
    let dir = temp_dir();
    let reg = registry(&dir);
    let claim = within(STEP, reg.claim("app", &quick()), "claim")
        .await
        .unwrap();
    assert!(claim.replaced().is_none());
    let server = serve(
        &native_endpoint(&dir, "app"),
        Behavior::Nonce(claim.nonce().into()),
    )
    .await;
    let registration = claim
        .register(vec![server.endpoint.clone()], InstanceMode::Agent, None)
        .unwrap();

    let err = within(
        STEP,
        reg.claim("app", &quick().replace(true)),
        "second claim",
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AlreadyRunning);
    assert_eq!(
        err.to_string(),
        format!(
            "pipegate is already running at {} (PID {})",
            server.endpoint,
            std::process::id()
        )
    );
    assert_eq!(err.instance(), Some(registration.record()));
    assert_eq!(
        reg.read("app").unwrap().as_ref(),
        Some(registration.record())
    );

    // Another name is independent.
    let other = within(STEP, reg.claim("other", &quick()), "other claim").await;
    assert!(other.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_record_is_taken_over() {
    let dir = temp_dir();
    let reg = registry(&dir);
    let ep = native_endpoint(&dir, "st");
    let mut old = Record::new(
        vec![ep.clone()],
        InstanceMode::Agent,
        None,
        new_nonce().unwrap(),
    );
    old.pid = dead_pid();
    reg.write("app", &old).unwrap();

    let claim = within(STEP, reg.claim("app", &quick()), "claim")
        .await
        .unwrap();
    let replaced = claim.replaced().expect("it took something over");
    assert_eq!(replaced.state, State::Stale);
    assert_eq!(replaced.record.as_ref(), Some(&old));
    assert!(
        reg.read("app").unwrap().is_none(),
        "the stale record is gone at once"
    );
    assert_ne!(claim.nonce(), old.nonce);

    let listener = Listener::bind(&ep, &ListenOptions::new()).await.unwrap();
    let server = serve_on(listener, Behavior::Nonce(claim.nonce().into()));
    let registration = claim
        .register(vec![server.endpoint.clone()], InstanceMode::Agent, None)
        .unwrap();
    let now = reg.read("app").unwrap().unwrap();
    assert_eq!(&now, registration.record());
    assert_eq!(now.pid, std::process::id());
    within(
        STEP,
        check_health(&now.url, &now.nonce, Duration::from_secs(5)),
        "health of the new instance",
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unhealthy_instance_is_refused_unless_replace() {
    let dir = temp_dir();
    let reg = registry(&dir);
    // Alive (another process), but its endpoint answers with someone else's nonce.
    let live = LiveProcess::spawn();
    let server = serve(
        &native_endpoint(&dir, "sick"),
        Behavior::Nonce(new_nonce().unwrap()),
    )
    .await;
    let mut old = Record::new(
        vec![server.endpoint.clone()],
        InstanceMode::Http,
        Some(Endpoint::loopback(9)),
        new_nonce().unwrap(),
    );
    old.pid = live.pid();
    reg.write("app", &old).unwrap();

    let err = within(STEP, reg.claim("app", &quick()), "claim")
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unhealthy, "{err}");
    assert!(
        err.to_string().contains(&format!("PID {}", old.pid)),
        "{err}"
    );
    let cause = std::error::Error::source(&err).expect("the failed probe is the source");
    assert!(cause.to_string().contains("different nonce"), "{cause}");
    assert_eq!(reg.read("app").unwrap().unwrap(), old, "left alone");

    let claim = within(
        STEP,
        reg.claim("app", &quick().replace(true)),
        "claim --replace",
    )
    .await
    .unwrap();
    assert_eq!(claim.replaced().map(|s| s.state), Some(State::Unhealthy));
    let registration = claim
        .register(vec![Endpoint::loopback(1)], InstanceMode::Agent, None)
        .unwrap();
    assert_eq!(
        reg.read("app").unwrap().as_ref(),
        Some(registration.record())
    );
}

/// A failing record naming this very process is a dead instance whose pid we reused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_record_with_our_own_pid_is_stale() {
    let dir = temp_dir();
    let reg = registry(&dir);
    let old = Record::new(
        vec![native_endpoint(&dir, "nobody")],
        InstanceMode::Agent,
        None,
        new_nonce().unwrap(),
    );
    assert_eq!(old.pid, std::process::id());
    reg.write("app", &old).unwrap();
    let claim = within(STEP, reg.claim("app", &quick()), "claim")
        .await
        .unwrap();
    assert_eq!(claim.replaced().map(|s| s.state), Some(State::Stale));
    assert!(reg.read("app").unwrap().is_none(), "the old record is gone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_record_is_refused_unless_replace() {
    let dir = temp_dir();
    let reg = registry(&dir);
    reg.write(
        "app",
        &Record::new(
            vec![Endpoint::loopback(1)],
            InstanceMode::Agent,
            None,
            new_nonce().unwrap(),
        ),
    )
    .unwrap();
    std::fs::write(reg.record_path("app").unwrap(), "{ not json").unwrap();
    let err = within(STEP, reg.claim("app", &quick()), "claim")
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Corrupt);
    let claim = within(
        STEP,
        reg.claim("app", &quick().replace(true)),
        "claim --replace",
    )
    .await
    .unwrap();
    let registration = claim
        .register(vec![Endpoint::loopback(1)], InstanceMode::Agent, None)
        .unwrap();
    assert_eq!(
        reg.read("app").unwrap().as_ref(),
        Some(registration.record())
    );
}

/// The lock is held from claim to register: a second claim waits, and gets the name only
/// after the first is dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lock_is_held_until_register_or_drop() {
    let dir = temp_dir();
    let reg = registry(&dir);
    let first = within(STEP, reg.claim("app", &quick()), "claim")
        .await
        .unwrap();
    let short = quick().lock_timeout(Duration::from_millis(300));
    let err = within(STEP, reg.claim("app", &short), "blocked claim")
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::LockTimeout, "{err}");
    drop(first);
    let second = within(STEP, reg.claim("app", &short), "claim after drop").await;
    assert!(second.is_ok(), "{:?}", second.err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_removes_only_our_own_record() {
    let dir = temp_dir();
    let reg = registry(&dir);

    // Plain shutdown: the record goes.
    let claim = within(STEP, reg.claim("a", &quick()), "claim")
        .await
        .unwrap();
    let registration = claim
        .register(vec![Endpoint::loopback(1)], InstanceMode::Agent, None)
        .unwrap();
    assert!(registration.deregister().unwrap());
    assert!(reg.read("a").unwrap().is_none());

    // Dropping a registration removes it too.
    let claim = within(STEP, reg.claim("b", &quick()), "claim")
        .await
        .unwrap();
    drop(
        claim
            .register(vec![Endpoint::loopback(1)], InstanceMode::Agent, None)
            .unwrap(),
    );
    assert!(reg.read("b").unwrap().is_none());

    // Replaced meanwhile (another instance took the name over): the newcomer's record
    // survives the old instance's shutdown, explicit or by drop.
    for (name, explicit) in [("c", true), ("d", false)] {
        let claim = within(STEP, reg.claim(name, &quick()), "claim")
            .await
            .unwrap();
        let old = claim
            .register(vec![Endpoint::loopback(1)], InstanceMode::Agent, None)
            .unwrap();
        let newcomer = Record::new(
            vec![Endpoint::loopback(2)],
            InstanceMode::Http,
            Some(Endpoint::loopback(3)),
            new_nonce().unwrap(),
        );
        reg.write(name, &newcomer).unwrap();
        if explicit {
            assert!(
                !old.deregister().unwrap(),
                "reports that it left the record alone"
            );
        } else {
            drop(old);
        }
        assert_eq!(
            reg.read(name).unwrap().unwrap(),
            newcomer,
            "explicit: {explicit}"
        );
    }
}

enum Outcome {
    Won(Server, pipegate_discovery::Registration),
    Refused(pipegate_discovery::Error),
}

/// Ten starts at the same moment, same name, same endpoint: exactly one binds and
/// registers; nine are refused by the guard without ever binding; the winner's endpoint
/// and record are intact afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_simultaneous_starts_end_with_one_winner() {
    const STARTS: usize = 10;
    let dir = temp_dir();
    let reg = registry(&dir);
    let ep = native_endpoint(&dir, "ten");
    let barrier = Arc::new(Barrier::new(STARTS));
    let binds = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..STARTS {
        let (reg, ep, barrier, binds) = (reg.clone(), ep.clone(), barrier.clone(), binds.clone());
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let claim = match reg.claim("pipegate", &quick()).await {
                Ok(claim) => claim,
                Err(e) => return Outcome::Refused(e),
            };
            binds.fetch_add(1, Ordering::SeqCst);
            let listener = Listener::bind(&ep, &ListenOptions::new())
                .await
                .unwrap_or_else(|e| panic!("the winner must be able to bind {ep}: {e}"));
            let server = serve_on(listener, Behavior::Nonce(claim.nonce().into()));
            let registration = claim
                .register(vec![server.endpoint.clone()], InstanceMode::Agent, None)
                .unwrap();
            Outcome::Won(server, registration)
        }));
    }
    let mut winners = Vec::new();
    let mut refusals = Vec::new();
    for task in tasks {
        match within(Duration::from_secs(60), task, "a start")
            .await
            .unwrap()
        {
            Outcome::Won(server, registration) => winners.push((server, registration)),
            Outcome::Refused(e) => refusals.push(e),
        }
    }
    assert_eq!(
        winners.len(),
        1,
        "exactly one winner; refusals: {refusals:?}"
    );
    assert_eq!(binds.load(Ordering::SeqCst), 1, "losers never bind");
    assert_eq!(refusals.len(), STARTS - 1);
    let (server, registration) = &winners[0];
    let expected = format!(
        "pipegate is already running at {} (PID {})",
        server.endpoint,
        std::process::id()
    );
    for e in &refusals {
        assert_eq!(e.kind(), ErrorKind::AlreadyRunning, "{e}");
        assert_eq!(e.to_string(), expected);
    }
    let record = reg.read("pipegate").unwrap().expect("the winner's record");
    assert_eq!(&record, registration.record());
    if let Some(path) = server.endpoint.unix_path() {
        assert!(path.exists(), "the winner's socket file is intact");
    }
    within(
        STEP,
        check_health(&record.url, &record.nonce, Duration::from_secs(5)),
        "the winner answers",
    )
    .await
    .unwrap();
}
