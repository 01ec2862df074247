//! Leaks: 20 000 connections through a bridge to a real upstream process — kept-alive
//! HTTP, WebSocket upgrades and clients that give up mid-head or mid-body — and then
//! pipegate's open descriptors and async tasks are back at their baseline, its connection
//! and tunnel gauges at zero, and its RSS within 10% of what it was after the warm-up.
//!
//! The upstream (`py/upstream.py`) is killed and restarted before each measurement, so
//! the bridge's pool of idle upstream connections is empty both times: what is compared
//! is what the client connections left behind, not how many upstream connections the
//! pool happened to keep.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use bytes::Bytes;
use http_body_util::BodyExt as _;

use crate::support::http1::{connect, metric, metrics, request, send, Client, RawConn};
use crate::support::process::{open_fds, status_field, PyUpstream};
use crate::support::{within, TestEnv};

/// Connections measured, after a warm-up of `WARM_UP` of the same mix.
const CONNECTIONS: usize = 20_000;
const WARM_UP: usize = 2_000;
/// Client connections in flight at once.
const CONCURRENCY: usize = 64;
/// The whole run's hang guard, and the settling's.
const RUN_LIMIT: Duration = Duration::from_secs(300);
const SETTLE: Duration = Duration::from_secs(30);

const HELLO: &[u8] = b"GET /hello HTTP/1.1\r\nHost: pipegate.test\r\n\r\n";

/// Connection `i` of the mix: half kept-alive HTTP (three requests), a quarter upgrades
/// (an echo through the tunnel), an eighth abandoned mid-head, an eighth mid-body.
async fn one_connection(endpoint: &str, i: usize) -> Result<(), String> {
    let mut conn = RawConn::open(endpoint).await;
    match i % 8 {
        0..=3 => {
            let body = format!("echo {i}");
            let echo = format!(
                "POST /echo HTTP/1.1\r\nHost: pipegate.test\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            for (request, expected) in [
                (HELLO, &b"hello from upstream\n"[..]),
                (echo.as_bytes(), body.as_bytes()),
                (HELLO, &b"hello from upstream\n"[..]),
            ] {
                match conn.exchange(request).await {
                    Ok((200, got)) if got == expected => {}
                    other => return Err(format!("connection {i}: {other:?}")),
                }
            }
        }
        4 | 5 => {
            conn.upgrade("/ws")
                .await
                .map_err(|e| format!("connection {i}: upgrade: {e}"))?;
            let data = format!("tunnel {i:>10}");
            match conn.echo(data.as_bytes()).await {
                Ok(back) if back == data.as_bytes() => {}
                other => return Err(format!("connection {i}: echo: {other:?}")),
            }
        }
        6 => {
            // Gone in the middle of the request head.
            let _ = conn.send(&HELLO[..20]).await;
        }
        _ => {
            // Gone after the head and a part of the body.
            let _ = conn
                .send(b"POST /upload HTTP/1.1\r\nHost: pipegate.test\r\nContent-Length: 100000\r\n\r\n")
                .await;
            let _ = conn.send(&[b'b'; 1000]).await;
        }
    }
    Ok(())
}

/// Runs connections `range` of the mix, `CONCURRENCY` at a time; returns the failures.
pub(crate) async fn run_mix(endpoint: &str, range: std::ops::Range<usize>) -> Vec<String> {
    let permits = Arc::new(Semaphore::new(CONCURRENCY));
    let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut tasks = Vec::with_capacity(range.len());
    for i in range {
        let permit = Arc::clone(&permits)
            .acquire_owned()
            .await
            .expect("semaphore");
        let endpoint = endpoint.to_owned();
        let failures = Arc::clone(&failures);
        tasks.push(tokio::spawn(async move {
            if let Err(e) = one_connection(&endpoint, i).await {
                failures.lock().expect("failures").push(e);
            }
            drop(permit);
        }));
    }
    for task in tasks {
        task.await.expect("client task");
    }
    let failures = failures.lock().expect("failures").clone();
    failures
}

/// Fails the test if any connection of a [`run_mix`] run failed, showing the first few
/// failures and `context` (the server's output).
pub(crate) fn assert_none_failed(failures: &[String], total: usize, context: &str) {
    assert!(
        failures.is_empty(),
        "{} of {total} connections failed, e.g. {:#?}\n{context}",
        failures.len(),
        &failures[..failures.len().min(10)]
    );
}

/// What pipegate holds: from its metrics (the same on every platform) and, for a
/// Linux-native process, from /proc.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Held {
    /// `process_open_fds`: descriptors, or handles on Windows.
    pub(crate) fds: i64,
    pub(crate) tasks: i64,
    pub(crate) connections: i64,
    pub(crate) tunnels: i64,
    /// /proc/PID/fd and the thread count, when the process is Linux-native.
    pub(crate) proc_fds: Option<usize>,
    pub(crate) threads: Option<u64>,
}

/// Reads [`Held`] over one kept-alive connection, which is therefore always counted
/// (one connection, its task and its descriptor), the same way every time.
pub(crate) struct Probe {
    client: Client,
    /// The `transport` label of the listener the probe and the clients use.
    transport: &'static str,
    /// A Linux-native pipegate's pid, for /proc.
    pid: Option<u32>,
}

impl Probe {
    pub(crate) async fn new(endpoint: &str, transport: &'static str, pid: Option<u32>) -> Probe {
        Probe {
            client: connect(endpoint).await,
            transport,
            pid,
        }
    }

    pub(crate) async fn held(&mut self) -> Held {
        let resp = send(
            &mut self.client,
            request("GET", "/_pipegate/metrics", Bytes::new()),
        )
        .await;
        let body = resp
            .into_body()
            .collect()
            .await
            .expect("metrics")
            .to_bytes();
        let text = String::from_utf8_lossy(&body);
        let connections = format!(
            "pipegate_connections_open{{transport=\"{}\"}}",
            self.transport
        );
        Held {
            fds: metric(&text, "process_open_fds"),
            tasks: metric(&text, "pipegate_tasks_alive"),
            connections: metric(&text, &connections),
            tunnels: metric(&text, "pipegate_tunnels_open"),
            proc_fds: self.pid.map(open_fds),
            threads: self.pid.map(|pid| status_field(pid, "Threads")),
        }
    }

    /// Waits until two readings a little apart agree, only the probe is connected, no
    /// tunnel is open and `done` holds; fails after `limit` showing the last readings.
    pub(crate) async fn settle(
        &mut self,
        limit: Duration,
        what: &str,
        done: impl Fn(&Held) -> bool,
    ) -> Held {
        let deadline = Instant::now() + limit;
        loop {
            let first = self.held().await;
            tokio::time::sleep(Duration::from_millis(300)).await;
            let second = self.held().await;
            if first == second && second.connections == 1 && second.tunnels == 0 && done(&second) {
                return second;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {limit:?} waiting for {what}; last readings:\n{first:?}\n{second:?}"
            );
        }
    }
}

/// Whether `now` holds what `baseline` did: descriptors (by both counts) and tasks, and
/// no more threads.
pub(crate) fn at_baseline(now: &Held, baseline: &Held) -> bool {
    now.fds == baseline.fds
        && now.proc_fds == baseline.proc_fds
        && now.tasks == baseline.tasks
        && now.threads <= baseline.threads
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_thousand_connections_leave_no_descriptors_tasks_or_memory_behind() {
    let env = TestEnv::new();
    let mut upstream = PyUpstream::unix(&env.sock("up.sock")).await;
    let listen = format!("unix://{}", env.sock("in.sock").display());
    let (serve, endpoint) = env
        .serve(&[
            "--log",
            "warn",
            // The probe's kept-alive connection waits between readings for as long as the
            // run takes.
            "--header-timeout",
            "300s",
            "--listen",
            &listen,
            "--upstream",
            &upstream.endpoint,
        ])
        .await;
    let pid = serve.pid();

    let failures = run_mix(&endpoint, 0..WARM_UP).await;
    assert_none_failed(&failures, WARM_UP, &serve.dump());
    upstream.restart().await;
    let mut probe = Probe::new(&endpoint, "unix", Some(pid)).await;
    let baseline = probe
        .settle(SETTLE, "pipegate to settle after the warm-up", |_| true)
        .await;
    let rss_warm = status_field(pid, "VmRSS");

    let started = Instant::now();
    let failures = within(
        RUN_LIMIT,
        "20 000 connections",
        run_mix(&endpoint, WARM_UP..WARM_UP + CONNECTIONS),
    )
    .await;
    let took = started.elapsed();
    let rss_peak = status_field(pid, "VmRSS");
    assert_none_failed(&failures, CONNECTIONS, &serve.dump());

    upstream.restart().await;
    let after = probe
        .settle(
            SETTLE,
            "descriptors, tasks and threads back at the baseline",
            |now| at_baseline(now, &baseline),
        )
        .await;
    let rss_after = status_field(pid, "VmRSS");
    eprintln!(
        "leaks: {CONNECTIONS} connections in {took:.1?} ({:.0}/s); baseline {baseline:?}, \
         after {after:?}; VmRSS {rss_warm} KiB after the warm-up, {rss_peak} KiB at the end \
         of the run, {rss_after} KiB settled",
        CONNECTIONS as f64 / took.as_secs_f64()
    );
    assert!(
        rss_after * 10 <= rss_warm * 11,
        "VmRSS {rss_after} KiB is more than 10% above the {rss_warm} KiB after the warm-up"
    );
    let text = metrics(&endpoint).await;
    assert!(
        metric(&text, "pipegate_tunnels_total") >= (CONNECTIONS / 4) as i64,
        "the upgrades went through tunnels:\n{text}"
    );
}
