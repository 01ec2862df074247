//! `--via exec:CMD` and `pipegate mux`: one helper process carries every connection as a
//! multiplexed stream. The helper here is the Linux `pipegate mux` itself, started through
//! a wrapper script that logs each start (so the tests can count helper processes and
//! find their pids).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixListener;
use tokio::task::JoinHandle;

// The same through a Windows helper under Wine (the WSL topology).
mod windows;

use crate::support::process::{alive, raise_fd_limit, wait_dead};
use crate::support::{
    after_shell, dial, echo_digest, in_a_terminal, payload, pipegate, sha256, unix_upstream,
    within, Behavior, Proc, TestEnv, LISTENING, PIPEGATE, STARTUP,
};

/// Concurrent streams and bytes each carries both ways in the big test.
const STREAMS: u64 = 500;
const STREAM_BYTES: usize = 1024 * 1024;
/// The big test moves STREAMS × STREAM_BYTES each way through a debug build.
const BIG_LIMIT: Duration = Duration::from_secs(300);
const LIMIT: Duration = Duration::from_secs(30);

/// A wrapper around `pipegate mux --allow …` that appends its pid to a file when it
/// starts, and to another what it started with (its open-files limit, and `tty` or
/// `no-tty`: whether it could open /dev/tty), then execs the real thing (same pid).
struct Helper {
    script: PathBuf,
    starts: PathBuf,
    conditions: PathBuf,
}

impl Helper {
    fn new(env: &TestEnv, allow: &[&str]) -> Helper {
        let script = env.path("helper.sh");
        let starts = env.path("helper.starts");
        let conditions = env.path("helper.conditions");
        let mut body = format!(
            "#!/bin/sh\necho \"$$\" >> '{}'\n\
             tty=no-tty; if (exec </dev/tty) 2>/dev/null; then tty=tty; fi\n\
             echo \"$(ulimit -n) $tty\" >> '{}'\nexec '{PIPEGATE}' mux",
            starts.display(),
            conditions.display()
        );
        for endpoint in allow {
            body.push_str(&format!(" --allow '{endpoint}'"));
        }
        body.push('\n');
        std::fs::write(&script, body).expect("write the helper script");
        Helper {
            script,
            starts,
            conditions,
        }
    }

    /// What every helper started so far started with (`LIMIT tty|no-tty`), in order.
    fn conditions(&self) -> Vec<String> {
        std::fs::read_to_string(&self.conditions)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// The `--via` value.
    fn via(&self) -> String {
        format!("exec:/bin/sh {}", self.script.display())
    }

    /// The pid of every helper started so far, in order.
    fn pids(&self) -> Vec<u32> {
        std::fs::read_to_string(&self.starts)
            .unwrap_or_default()
            .lines()
            .map(|l| l.trim().parse().expect("a pid"))
            .collect()
    }
}

/// `serve`'s arguments for a raw bridge from `listen` to `upstream` through `via`.
fn raw_via<'a>(listen: &'a str, upstream: &'a str, via: &'a str) -> [&'a str; 8] {
    [
        "--mode",
        "raw",
        "--listen",
        listen,
        "--upstream",
        upstream,
        "--via",
        via,
    ]
}

/// A field of a JSON log event: on the event itself, or on its span.
fn field<'a>(event: &'a Value, name: &str) -> Option<&'a Value> {
    event
        .get(name)
        .or_else(|| event.get("fields").and_then(|f| f.get(name)))
        .or_else(|| event.get("span").and_then(|s| s.get(name)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_via_carries_500_concurrent_streams_through_one_helper() {
    // 500 streams need ~1000 descriptors in this process (clients and the echo ends).
    raise_fd_limit(8192);
    let env = TestEnv::new();
    let upstream = unix_upstream(&env.sock("echo.sock"), Behavior::Echo);
    let helper = Helper::new(&env, &[&upstream.endpoint]);
    let listen = format!("unix://{}", env.sock("in.sock").display());
    let (mut serve, endpoint) = env
        .serve(&[
            "--mode",
            "raw",
            "--log-format",
            "json",
            "--listen",
            &listen,
            "--upstream",
            &upstream.endpoint,
            "--via",
            &helper.via(),
        ])
        .await;
    assert_eq!(helper.pids().len(), 1, "the helper starts with serve");

    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..STREAMS {
        let endpoint = endpoint.clone();
        tasks.push(tokio::spawn(async move {
            let data = payload(7000 + i, STREAM_BYTES);
            let (digest, len) = echo_digest(dial(&endpoint).await, &data)
                .await
                .unwrap_or_else(|e| panic!("stream {i}: {e}"));
            assert_eq!(len, STREAM_BYTES as u64, "stream {i}: bytes back");
            assert_eq!(digest, sha256(&data), "stream {i}: checksum");
        }));
    }
    within(BIG_LIMIT, "500 concurrent 1 MiB echoes", async {
        for task in tasks {
            task.await.expect("client task");
        }
    })
    .await;
    let elapsed = started.elapsed();
    eprintln!(
        "mux e2e: {STREAMS} streams x {} MiB echoed in {elapsed:?}",
        STREAM_BYTES / (1024 * 1024)
    );
    let pids = helper.pids();
    assert_eq!(pids.len(), 1, "one helper for every connection: {pids:?}");

    // Every connection logged its stream: the `via` route, the stream, the session.
    let closed = within(LIMIT, "500 'connection closed' events", async {
        loop {
            let events: Vec<Value> = serve
                .stderr_lines()
                .iter()
                .filter(|l| !l.starts_with(LISTENING))
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .filter(|v| {
                    field(v, "message").and_then(Value::as_str) == Some("connection closed")
                })
                .collect();
            if events.len() as u64 >= STREAMS {
                break events;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let mut streams = std::collections::HashSet::new();
    for event in &closed {
        assert_eq!(
            field(event, "via").and_then(Value::as_str),
            Some(helper.via().as_str()),
            "{event}"
        );
        assert_eq!(field(event, "via.session").and_then(Value::as_u64), Some(1));
        assert!(field(event, "via.streams")
            .and_then(Value::as_u64)
            .is_some());
        assert_eq!(
            field(event, "bytes.upstream_to_client").and_then(Value::as_u64),
            Some(STREAM_BYTES as u64)
        );
        streams.insert(
            field(event, "via.stream")
                .and_then(Value::as_u64)
                .expect("via.stream"),
        );
    }
    assert_eq!(
        streams.len() as u64,
        STREAMS,
        "one mux stream per connection"
    );

    // No orphan: SIGTERM stops serve, and serve stops its helper.
    serve.signal("TERM");
    let status = serve.wait_exit(LIMIT).await;
    assert_eq!(status.code(), Some(0), "exit status\n{}", serve.dump());
    wait_dead(pids[0], "the helper after serve exited").await;
}

/// Reads whatever the connection still delivers; `Ok(n)` for a clean EOF after n bytes.
async fn drain(stream: &mut Box<dyn crate::support::Io>) -> std::io::Result<usize> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0;
    loop {
        match stream.read(&mut buf).await? {
            0 => return Ok(total),
            n => total += n,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_helper_gets_the_open_files_limit_serve_was_started_with() {
    let env = TestEnv::new();
    let upstream = unix_upstream(&env.sock("echo.sock"), Behavior::Echo);
    let helper = Helper::new(&env, &[&upstream.endpoint]);
    let listen = format!("unix://{}", env.sock("in.sock").display());
    let via = helper.via();
    // serve raises its own limit (tests/e2e/agent.rs checks that); its helper must not
    // inherit the raise.
    let mut args = vec!["serve"];
    args.extend(raw_via(&listen, &upstream.endpoint, &via));
    let cmd = after_shell("ulimit -S -n 512", &env.pipegate(&args));
    let serve = Proc::spawn("pipegate serve (ulimit -S -n 512)", cmd, true);
    serve.wait_listening(STARTUP).await;
    assert_eq!(helper.conditions(), ["512 no-tty"], "{}", serve.dump());
}

/// `serve` run in a terminal: its helper does not get that terminal (a helper asking
/// for a password there would be stopped as a background process group).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_helper_does_not_get_the_terminal_serve_runs_in() {
    let env = TestEnv::new();
    let upstream = unix_upstream(&env.sock("echo.sock"), Behavior::Echo);
    let helper = Helper::new(&env, &[&upstream.endpoint]);
    let sock = env.sock("in.sock");
    let listen = format!("unix://{}", sock.display());
    let via = helper.via();
    let mut args = vec!["serve"];
    args.extend(raw_via(&listen, &upstream.endpoint, &via));
    let serve = Proc::spawn(
        "pipegate serve (in a terminal)",
        in_a_terminal(&env.pipegate(&args)),
        true,
    );
    // serve starts the helper once it listens: wait for the helper's record.
    let conditions = within(STARTUP, "the helper to start", async {
        loop {
            let conditions = helper.conditions();
            if !conditions.is_empty() {
                break conditions;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(
        conditions[0].ends_with(" no-tty"),
        "{conditions:?}\n{}",
        serve.dump()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_the_helper_does_not_allow_is_refused_with_the_flag_to_add() {
    let env = TestEnv::new();
    let allowed = unix_upstream(&env.sock("echo.sock"), Behavior::Echo);
    let other = unix_upstream(&env.sock("other.sock"), Behavior::Echo);
    let helper = Helper::new(&env, &[&allowed.endpoint]);
    let listen = format!("unix://{}", env.sock("in.sock").display());
    let (serve, endpoint) = env
        .serve(&[
            "--mode",
            "raw",
            "--listen",
            &listen,
            "--upstream",
            &other.endpoint,
            "--via",
            &helper.via(),
        ])
        .await;
    let mut client = dial(&endpoint).await;
    let _ = client.write_all(b"hello?").await;
    let got = within(LIMIT, "the refused connection to close", drain(&mut client)).await;
    assert!(
        matches!(got, Ok(0) | Err(_)),
        "no byte may come back: {got:?}"
    );
    let refusal = format!(
        "{0} is not allowed: start `pipegate mux` with --allow {0}",
        other.endpoint
    );
    serve
        .wait_stderr(LIMIT, "the refusal in serve's log", |l| {
            l.contains("connection closed: upstream unavailable") && l.contains(&refusal)
        })
        .await;

    // HTTP mode: the same refusal is the 502's detail.
    let http_listen = format!("unix://{}", env.sock("http.sock").display());
    let (_http, http_endpoint) = env
        .serve(&[
            "--name",
            "http",
            "--listen",
            &http_listen,
            "--upstream",
            &other.endpoint,
            "--via",
            &helper.via(),
        ])
        .await;
    let mut client = dial(&http_endpoint).await;
    client
        .write_all(b"GET /x HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .expect("send the request");
    let mut response = Vec::new();
    within(LIMIT, "the 502", client.read_to_end(&mut response))
        .await
        .expect("read the response");
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 502"), "{response}");
    assert!(response.contains(&refusal), "{response}");
    // Two serves, one helper each; neither restarted it for a refusal.
    assert_eq!(helper.pids().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_helper_fails_its_streams_and_the_next_connection_restarts_it() {
    const CLIENTS: u64 = 8;
    const HALF: usize = 256 * 1024;
    let env = TestEnv::new();
    let upstream = unix_upstream(&env.sock("echo.sock"), Behavior::Echo);
    let helper = Helper::new(&env, &[&upstream.endpoint]);
    let listen = format!("unix://{}", env.sock("in.sock").display());
    let via = helper.via();
    let (mut serve, endpoint) = env.serve(&raw_via(&listen, &upstream.endpoint, &via)).await;

    // Streams in flight: half of their data sent and echoed, the rest still to come.
    let mut clients = Vec::new();
    for i in 0..CLIENTS {
        let mut stream = dial(&endpoint).await;
        let data = payload(100 + i, HALF);
        stream.write_all(&data).await.expect("first half");
        let mut back = vec![0u8; HALF];
        within(LIMIT, "the first half's echo", stream.read_exact(&mut back))
            .await
            .expect("first half back");
        assert!(back == data, "client {i}: first half corrupted");
        clients.push(stream);
    }
    let first = helper.pids();
    assert_eq!(first.len(), 1);
    let kill = std::process::Command::new("kill")
        .args(["-s", "KILL", &first[0].to_string()])
        .status()
        .expect("run kill(1)");
    assert!(kill.success());

    // Each stream in flight ends: the rest of its data never comes back.
    for (i, mut stream) in clients.into_iter().enumerate() {
        let _ = stream.write_all(&payload(200 + i as u64, HALF)).await;
        let _ = stream.shutdown().await;
        let got = within(
            LIMIT,
            "a stream of the dead helper to end",
            drain(&mut stream),
        )
        .await;
        assert!(
            matches!(got, Ok(n) if n < HALF) || got.is_err(),
            "client {i}: a stream of the dead helper went on: {got:?}"
        );
    }
    let exited = serve
        .wait_stderr(LIMIT, "the helper's exit in serve's log", |l| {
            l.contains("mux helper exited")
        })
        .await;
    assert!(exited.contains("signal: 9"), "{exited}");
    assert!(
        exited.contains(&format!("helper.pid={}", first[0])),
        "{exited}"
    );
    assert!(exited.contains("stderr_tail="), "{exited}");
    let failed = serve
        .stderr_lines()
        .iter()
        .filter(|l| l.contains("connection closed") && l.contains("upstream_error"))
        .count();
    assert_eq!(
        failed as u64,
        CLIENTS,
        "every stream in flight failed\n{}",
        serve.dump()
    );

    // The next connection starts a new helper and goes through.
    let data = payload(300, 3 * HALF);
    let (digest, len) = within(LIMIT, "a connection after the restart", async {
        echo_digest(dial(&endpoint).await, &data).await
    })
    .await
    .expect("echo after the restart");
    assert_eq!((digest, len), (sha256(&data), data.len() as u64));
    let pids = helper.pids();
    assert_eq!(pids.len(), 2, "exactly one restart: {pids:?}");
    assert!(!alive(pids[0]));
    serve.signal("TERM");
    assert_eq!(serve.wait_exit(LIMIT).await.code(), Some(0));
    wait_dead(pids[1], "the second helper after serve exited").await;
}

/// An upstream that reads each connection to EOF, then answers `got N bytes` and closes:
/// it answers only if the client's half-close arrived as EOF.
fn count_then_reply_upstream(path: &Path) -> (String, JoinHandle<()>) {
    let listener = UnixListener::bind(path).expect("bind the counting upstream");
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut reader, mut writer) = stream.into_split();
                let mut sink = Vec::new();
                if reader.read_to_end(&mut sink).await.is_ok() {
                    let reply = format!("got {} bytes", sink.len());
                    let _ = writer.write_all(reply.as_bytes()).await;
                }
                let _ = writer.shutdown().await;
            });
        }
    });
    (format!("unix://{}", path.display()), task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_close_travels_per_stream() {
    let env = TestEnv::new();
    let (counter, task) = count_then_reply_upstream(&env.sock("count.sock"));
    let helper = Helper::new(&env, &[&counter]);
    let listen = format!("unix://{}", env.sock("in.sock").display());
    let (_serve, endpoint) = env
        .serve(&[
            "--mode",
            "raw",
            "--listen",
            &listen,
            "--upstream",
            &counter,
            "--via",
            &helper.via(),
        ])
        .await;
    // B stays open (not half-closed) the whole time A does its exchange.
    let mut b = dial(&endpoint).await;
    b.write_all(&payload(2, 70_000)).await.expect("B writes");
    let mut a = dial(&endpoint).await;
    a.write_all(&payload(1, 300_000)).await.expect("A writes");
    a.shutdown().await.expect("A half-closes");
    let mut reply = String::new();
    within(
        LIMIT,
        "A's reply after its EOF",
        a.read_to_string(&mut reply),
    )
    .await
    .expect("A reads");
    assert_eq!(reply, "got 300000 bytes");
    // B's upstream has not seen EOF: nothing came back yet.
    let mut early = [0u8; 1];
    let pending = tokio::time::timeout(Duration::from_millis(300), b.read(&mut early)).await;
    assert!(
        pending.is_err(),
        "B got an answer before it half-closed: {pending:?}"
    );
    b.write_all(&payload(3, 30_000))
        .await
        .expect("B writes more");
    b.shutdown().await.expect("B half-closes");
    let mut reply = String::new();
    within(
        LIMIT,
        "B's reply after its EOF",
        b.read_to_string(&mut reply),
    )
    .await
    .expect("B reads");
    assert_eq!(reply, "got 100000 bytes");
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_and_a_listening_mux_share_the_protocol() {
    let env = TestEnv::new();
    let upstream = unix_upstream(&env.sock("echo.sock"), Behavior::Echo);
    let mux_ep = format!("unix://{}", env.sock("mux.sock").display());
    let mux = Proc::spawn(
        "pipegate mux --listen",
        env.pipegate(&["mux", "--listen", &mux_ep, "--allow", &upstream.endpoint]),
        true,
    );
    assert_eq!(mux.wait_listening(Duration::from_secs(20)).await, mux_ep);

    // relay --via EP: stdin/stdout through the listening mux.
    let mut cmd = pipegate(&["relay", &upstream.endpoint, "--via", &mux_ep]);
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped());
    let mut relay = Proc::spawn("pipegate relay --via", cmd, false);
    let mut stdin = relay.child.stdin.take().expect("stdin");
    let mut stdout = relay.child.stdout.take().expect("stdout");
    let data = payload(42, 2 * 1024 * 1024 + 5);
    let writer = {
        let data = data.clone();
        tokio::spawn(async move {
            stdin.write_all(&data).await.expect("write stdin");
        })
    };
    let mut back = Vec::new();
    within(LIMIT, "relay output", stdout.read_to_end(&mut back))
        .await
        .expect("read stdout");
    writer.await.expect("writer");
    assert!(back == data, "relay output differs ({} bytes)", back.len());
    assert_eq!(
        relay.wait_exit(LIMIT).await.code(),
        Some(0),
        "{}",
        relay.dump()
    );
    mux.wait_stderr(LIMIT, "the session in the mux's log", |l| {
        l.contains("mux session closed") && l.contains("streams=2")
    })
    .await;

    // A disallowed endpoint: relay fails with the mux's refusal.
    let mut cmd = pipegate(&["relay", &mux_ep, "--via", &mux_ep]);
    cmd.stdin(Stdio::piped());
    let mut refused = Proc::spawn("pipegate relay --via (refused)", cmd, true);
    let status = refused.wait_exit(LIMIT).await;
    assert_eq!(status.code(), Some(1));
    let stderr = refused.stderr_text();
    assert!(
        stderr.contains(&format!(
            "{mux_ep} is not allowed: start `pipegate mux` with --allow {mux_ep}"
        )),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_helper_that_is_not_a_mux_fails_serve_at_start_up() {
    let env = TestEnv::new();
    let listen = format!("unix://{}", env.sock("in.sock").display());
    let mut proc = Proc::spawn(
        "pipegate serve --via (bad helper)",
        env.pipegate(&[
            "serve",
            "--mode",
            "raw",
            "--listen",
            &listen,
            "--upstream",
            "unix:///nonexistent.sock",
            "--via",
            "exec:sh -c 'echo this is not a mux >&2; exit 7'",
        ]),
        true,
    );
    let status = proc.wait_exit(LIMIT).await;
    assert_eq!(status.code(), Some(1), "{}", proc.dump());
    let stderr = proc.stderr_text();
    assert!(
        stderr.contains("pipegate: error: cannot start --via exec:sh -c"),
        "{stderr}"
    );
    assert!(stderr.contains("exited: exit status: 7"), "{stderr}");
    assert!(
        stderr.contains("this is not a mux"),
        "the stderr tail is logged: {stderr}"
    );
    assert!(
        stderr.contains("hint: run the command after exec: by hand"),
        "{stderr}"
    );
    assert!(!env.sock("in.sock").exists(), "the listener is released");
}
