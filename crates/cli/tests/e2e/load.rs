//! Load: 10 000 idle client connections held at once on one Unix socket listener of
//! `pipegate serve`, every one of them still answering afterwards, and all of them given
//! back when the clients go. (The 1 000 000-request soak is `bench/soak.sh`: a bounded
//! script, not a test.)

use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::UnixStream;
use tokio::sync::Semaphore;

use crate::leaks::Probe;
use crate::support::process::{open_fds, raise_fd_limit};
use crate::support::{eventually, within, TestEnv};

const IDLE: u64 = 10_000;
/// Descriptors this process and pipegate need beyond one per connection (other tests of
/// this binary run alongside).
const SPARE: u64 = 1_024;
/// Connects in flight at once: a Unix socket's accept backlog is finite, and a full one
/// makes a non-blocking connect fail with EAGAIN instead of waiting.
const CONNECTING: usize = 128;
const LIMIT: Duration = Duration::from_secs(120);

/// Connects to `path`, retrying while the listener's backlog is full.
async fn connect_unix(path: &str) -> UnixStream {
    loop {
        match UnixStream::connect(path).await {
            Ok(stream) => return stream,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Err(e) => panic!("connect to {path}: {e}"),
        }
    }
}

/// Polls the connection gauge (over the probe's kept-alive connection, counted too)
/// until it reads `want`.
async fn wait_open(probe: &mut Probe, want: i64, what: &str) -> i64 {
    let deadline = std::time::Instant::now() + LIMIT;
    loop {
        let open = probe.held().await.connections;
        if open == want {
            return open;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}: {open} connections open, not {want}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_idle_connections_are_held_then_released() {
    // pipegate inherits this process's limit.
    let limit = raise_fd_limit(IDLE + SPARE);
    let count = if limit >= IDLE + SPARE {
        IDLE
    } else {
        let scaled = limit.saturating_sub(SPARE).max(100);
        eprintln!(
            "\n{stars}\nSCALED DOWN: the open-file limit (hard limit) is {limit}, below the {} \
             that {IDLE} idle connections need; holding {scaled} instead\n{stars}\n",
            IDLE + SPARE,
            stars = "*".repeat(78)
        );
        scaled
    };
    let env = TestEnv::new();
    let sock = env.sock("in.sock");
    let listen = format!("unix://{}", sock.display());
    // Idle means no request yet: the header timeout must outlast the test.
    let (serve, endpoint) = env
        .serve(&[
            "--log",
            "warn",
            "--listen",
            &listen,
            "--header-timeout",
            "300s",
        ])
        .await;
    let pid = serve.pid();
    let mut probe = Probe::new(&endpoint, "unix", Some(pid)).await;
    // Counted from the probe's first answer on: its connection is accepted by then.
    wait_open(&mut probe, 1, "the probe's connection").await;
    let fds_before = open_fds(pid);

    let path = sock.to_str().expect("a UTF-8 path").to_owned();
    let permits = std::sync::Arc::new(Semaphore::new(CONNECTING));
    let mut connecting = Vec::new();
    for _ in 0..count {
        let permit = std::sync::Arc::clone(&permits)
            .acquire_owned()
            .await
            .expect("semaphore");
        let path = path.clone();
        connecting.push(tokio::spawn(async move {
            let stream = connect_unix(&path).await;
            drop(permit);
            stream
        }));
    }
    let mut streams = Vec::with_capacity(connecting.len());
    within(LIMIT, "the connects", async {
        for task in connecting {
            streams.push(task.await.expect("connect task"));
        }
    })
    .await;

    // All accepted and held (the probe is the one more), each with a descriptor.
    let held = wait_open(&mut probe, count as i64 + 1, "every connection accepted").await;
    let fds_held = open_fds(pid);
    assert!(
        fds_held >= fds_before + count as usize,
        "pipegate holds {fds_held} descriptors for {held} connections (it had {fds_before})"
    );

    // Each one still answers: a request on every connection, all written first.
    const HEALTH: &[u8] = b"GET /_pipegate/health HTTP/1.1\r\nHost: pipegate.test\r\n\r\n";
    within(LIMIT, "a request on every connection", async {
        for stream in &mut streams {
            stream.write_all(HEALTH).await.expect("send");
        }
        let mut head = [0u8; 12];
        for (i, stream) in streams.iter_mut().enumerate() {
            stream.read_exact(&mut head).await.expect("an answer");
            assert_eq!(&head, b"HTTP/1.1 204", "connection {i}");
        }
    })
    .await;

    // Released: the gauge and the descriptors come back down when the clients go.
    drop(streams);
    wait_open(&mut probe, 1, "every connection released").await;
    let fds_after = eventually(LIMIT, "pipegate's descriptors back down", || async {
        let fds = open_fds(pid);
        (fds == fds_before)
            .then_some(fds)
            .ok_or_else(|| format!("{fds} descriptors (had {fds_before})"))
    })
    .await;
    eprintln!(
        "load: {count} idle connections held (open-file limit {limit}); pipegate had \
         {fds_before} descriptors, {fds_held} while holding them, {fds_after} after"
    );
}
