//! Start-up refusals, stale sockets and shutdown of `serve`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::http1::{metric, metrics};
use crate::support::{
    after_shell, dial, echo_bytes, payload, pipegate, run, serve, tcp_upstream, within, Behavior,
    Proc, TestEnv, Upstream, STARTUP,
};

async fn ping(endpoint: &str, seed: u64) {
    let data = payload(seed, 4096);
    let back = within(
        Duration::from_secs(10),
        "a round trip",
        echo_bytes(dial(endpoint).await, &data),
    )
    .await
    .expect("round trip");
    assert!(back == data, "echo differs");
}

/// A Unix socket `in.sock` in a fresh test directory, and an echo upstream: what a raw
/// bridge between them needs.
struct Raw {
    _env: TestEnv,
    upstream: Upstream,
    sock: PathBuf,
    listen: String,
}

impl Raw {
    async fn new() -> Raw {
        let env = TestEnv::new();
        let upstream = tcp_upstream(Behavior::Echo).await;
        let sock = env.sock("in.sock");
        let listen = format!("unix://{}", sock.display());
        Raw {
            _env: env,
            upstream,
            sock,
            listen,
        }
    }

    /// `serve`'s arguments for the bridge, then `extra`.
    fn args<'a>(&'a self, extra: &[&'a str]) -> Vec<&'a str> {
        let mut args = vec![
            "--mode",
            "raw",
            "--listen",
            &self.listen,
            "--upstream",
            &self.upstream.endpoint,
        ];
        args.extend_from_slice(extra);
        args
    }
}

/// SIGTERM with a connection open: the socket goes at once, the open connection may
/// finish within the grace period, and the process exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_open_connection_then_exits_zero() {
    let raw = Raw::new().await;
    let sock = &raw.sock;
    let (mut serve, endpoint) = serve(&raw.args(&["--shutdown-grace", "10s"])).await;
    let mut client = dial(&endpoint).await;
    client.write_all(b"before").await.expect("send");
    let mut buf = [0u8; 6];
    within(
        Duration::from_secs(5),
        "echo before SIGTERM",
        client.read_exact(&mut buf),
    )
    .await
    .expect("echo");
    assert_eq!(&buf, b"before");

    serve.signal("TERM");
    // The listener is released at once: the socket file disappears well before the grace ends.
    let deadline = Instant::now() + Duration::from_secs(5);
    while sock.exists() {
        assert!(
            Instant::now() < deadline,
            "socket file still there 5 s after SIGTERM\n{}",
            serve.dump()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The open connection still works while draining.
    client
        .write_all(b"during")
        .await
        .expect("send while draining");
    within(
        Duration::from_secs(5),
        "echo while draining",
        client.read_exact(&mut buf),
    )
    .await
    .expect("echo while draining");
    assert_eq!(&buf, b"during");
    // Closing it lets the process finish long before the 10 s grace.
    client.shutdown().await.expect("half-close");
    let mut rest = Vec::new();
    within(Duration::from_secs(5), "EOF", client.read_to_end(&mut rest))
        .await
        .expect("read to EOF");
    drop(client);
    let status = serve.wait_exit(Duration::from_secs(5)).await;
    assert_eq!(status.code(), Some(0), "exit status\n{}", serve.dump());
    assert!(!sock.exists(), "socket file removed");
}

/// SIGHUP (the terminal `serve` ran in went away) shuts it down like SIGTERM: exit 0,
/// socket removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_shuts_down_cleanly() {
    let raw = Raw::new().await;
    let (mut serve, endpoint) = serve(&raw.args(&[])).await;
    ping(&endpoint, 7).await;
    serve.signal("HUP");
    let status = serve.wait_exit(Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(0), "exit status\n{}", serve.dump());
    assert!(
        serve.dump().contains("signal=\"SIGHUP\""),
        "{}",
        serve.dump()
    );
    assert!(!raw.sock.exists(), "socket file removed");
}

/// Under `nohup` (SIGHUP ignored at start) SIGHUP stays ignored: `serve` keeps serving,
/// and SIGTERM still ends it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_ignored_at_start_stays_ignored() {
    let raw = Raw::new().await;
    let mut args = vec!["serve"];
    args.extend(raw.args(&[]));
    let cmd = after_shell("trap '' HUP", &pipegate(&args));
    let mut serve = Proc::spawn("pipegate serve (under nohup)", cmd, true);
    let endpoint = serve.wait_listening(STARTUP).await;
    serve.signal("HUP");
    // A shutdown would start within milliseconds; give it ample time to show.
    tokio::time::sleep(Duration::from_millis(300)).await;
    ping(&endpoint, 8).await;
    assert!(
        !serve.dump().contains("shutting down"),
        "SIGHUP was not ignored\n{}",
        serve.dump()
    );
    serve.signal("TERM");
    let status = serve.wait_exit(Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(0), "exit status\n{}", serve.dump());
}

/// A hard limit on open files below what `--max-connections` needs is said at start-up,
/// with the number of connections it does allow ((256 - 64) / 2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_low_open_files_limit_is_reported() {
    let raw = Raw::new().await;
    let mut args = vec!["serve"];
    args.extend(raw.args(&["--max-connections", "1000"]));
    let cmd = after_shell("ulimit -n 256", &pipegate(&args));
    let serve = Proc::spawn("pipegate serve (ulimit -n 256)", cmd, true);
    let endpoint = serve.wait_listening(STARTUP).await;
    ping(&endpoint, 9).await;
    let log = serve.dump();
    assert!(
        log.contains("the open-files limit allows only about 96 connections"),
        "{log}"
    );
}

/// A connection that stays open past the grace period is cut, and the process still
/// exits 0, within the grace (plus a margin).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_a_stuck_connection_exits_zero_after_the_grace() {
    let raw = Raw::new().await;
    let sock = &raw.sock;
    let (mut serve, endpoint) = serve(&raw.args(&["--shutdown-grace", "1s"])).await;
    let mut client = dial(&endpoint).await;
    client.write_all(b"x").await.expect("send");
    let mut one = [0u8; 1];
    within(Duration::from_secs(5), "echo", client.read_exact(&mut one))
        .await
        .expect("echo");

    let signalled = Instant::now();
    serve.signal("TERM");
    let status = serve.wait_exit(Duration::from_secs(6)).await;
    let took = signalled.elapsed();
    assert_eq!(status.code(), Some(0), "exit status\n{}", serve.dump());
    assert!(
        took >= Duration::from_millis(900),
        "exited after {took:?}, before the 1 s grace, though a connection was open"
    );
    assert!(!sock.exists(), "socket file removed");
    // The server closed the connection: the client's read ends (EOF or reset).
    let mut rest = Vec::new();
    let _ = within(
        Duration::from_secs(5),
        "EOF after the abort",
        client.read_to_end(&mut rest),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_serve_on_a_live_socket_is_refused_and_the_first_keeps_serving() {
    let raw = Raw::new().await;
    let (_first, endpoint) = serve(&raw.args(&[])).await;

    let mut second = vec!["serve"];
    second.extend(raw.args(&[]));
    let (status, stderr) = run(&second, Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(1), "exit status; stderr:\n{stderr}");
    assert!(
        stderr.contains("already in use by another process"),
        "stderr:\n{stderr}"
    );
    assert!(raw.sock.exists(), "the live socket was left alone");
    ping(&endpoint, 7).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_socket_file_is_replaced() {
    let raw = Raw::new().await;
    // A socket file nobody listens on: bound, then closed without removing the file.
    drop(std::os::unix::net::UnixListener::bind(&raw.sock).expect("bind stale socket"));
    assert!(raw.sock.exists());
    let (_serve, endpoint) = serve(&raw.args(&[])).await;
    ping(&endpoint, 8).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_loopback_tcp_listener_is_refused_without_allow_remote() {
    let (status, stderr) = run(
        &[
            "serve",
            "--mode",
            "raw",
            "--listen",
            "0.0.0.0:0",
            "--upstream",
            "tcp://127.0.0.1:9",
        ],
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(status.code(), Some(1), "exit status; stderr:\n{stderr}");
    assert!(stderr.contains("--allow-remote"), "stderr:\n{stderr}");
    assert!(
        !stderr.contains("pipegate: listening on"),
        "it must not listen:\n{stderr}"
    );
}

/// `--threads N` sizes the async runtime (here after the subcommand: it is global), and
/// the metrics say so; without it, one worker per CPU.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn threads_option_sizes_the_runtime() {
    let upstream = tcp_upstream(Behavior::Echo).await;
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    for threads in [Some(1), Some(cpus + 1), None] {
        let env = TestEnv::new();
        let listen = format!("unix://{}", env.sock("in.sock").display());
        let n = threads.map(|n: usize| n.to_string());
        let mut args = vec!["--listen", &listen, "--upstream", &upstream.endpoint];
        if let Some(n) = &n {
            args.extend(["--threads", n]);
        }
        let (_serve, endpoint) = serve(&args).await;
        let text = metrics(&endpoint).await;
        let want = threads.unwrap_or(cpus);
        assert_eq!(
            metric(&text, "pipegate_runtime_workers"),
            want as i64,
            "--threads {n:?}"
        );
    }
}
