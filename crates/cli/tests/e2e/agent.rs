//! The built-in agent's limits and shutdown, through a real `pipegate serve`:
//! `--max-sessions`, `--ping-timeout`, and SIGTERM ending every process group of every
//! session (background jobs in groups of their own included).

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::process::{find_process, line_value, process_group, stat_fields};
use crate::support::{
    after_shell, dial, in_a_terminal, pipegate, serve, within, Proc, TestEnv, PIPEGATE, STARTUP,
};

/// One HTTP/1.1 request on a fresh connection (`Connection: close`): status and body.
async fn http(endpoint: &str, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut stream = dial(endpoint).await;
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    within(
        STARTUP,
        "the agent's answer",
        stream.read_to_end(&mut answer),
    )
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// `POST /v1/sessions`, expecting 201; the session id.
async fn create(endpoint: &str, body: serde_json::Value) -> String {
    let (status, answer) = http(endpoint, "POST", "/v1/sessions", &body.to_string()).await;
    assert_eq!(status, 201, "{answer}");
    let json: serde_json::Value = serde_json::from_str(&answer).unwrap();
    json["id"].as_str().unwrap().to_owned()
}

/// The agent alone on a Unix socket of this test, with `extra` options.
async fn agent(env: &TestEnv, extra: &[&str]) -> (Proc, String) {
    let listen = format!("unix://{}", env.sock("agent.sock").display());
    let mut args = vec!["--no-discovery", "--listen", &listen];
    args.extend_from_slice(extra);
    serve(&args).await
}

/// Polls `check` every 50 ms until it is true; fails with `what` after `limit`.
async fn wait_until(limit: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check() {
        assert!(Instant::now() < deadline, "not within {limit:?}: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `--max-sessions 1`: a second session gets 429 (and `pipegate shell` says so), and
/// one can start again once the first is deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_max_sessions_refuses_the_second_with_429() {
    let env = TestEnv::new();
    let (_serve, endpoint) = agent(&env, &["--max-sessions", "1"]).await;
    let first = create(&endpoint, serde_json::json!({"argv": ["sleep", "1000"]})).await;

    let (status, answer) = http(
        &endpoint,
        "POST",
        "/v1/sessions",
        r#"{"argv": ["sleep", "1000"]}"#,
    )
    .await;
    assert_eq!(status, 429, "{answer}");
    assert!(
        answer.contains("too many sessions running (limit 1)"),
        "{answer}"
    );

    let mut shell = Proc::spawn(
        "pipegate shell",
        pipegate(&["shell", &endpoint, "--", "true"]),
        true,
    );
    let exit = shell.wait_exit(STARTUP).await;
    assert_eq!(exit.code(), Some(1), "{}", shell.dump());
    assert!(
        shell.stderr_text().contains("429"),
        "pipegate shell did not report the 429:\n{}",
        shell.dump()
    );

    let (status, answer) = http(&endpoint, "DELETE", &format!("/v1/sessions/{first}"), "").await;
    assert_eq!(status, 204, "{answer}");
    create(&endpoint, serde_json::json!({"argv": ["true"]})).await;
}

/// `--ping-timeout 1s`: a client that completes the handshake and then goes silent is
/// disconnected with Close 1001 (after at least one Ping).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_ping_timeout_disconnects_a_silent_client() {
    let env = TestEnv::new();
    let (_serve, endpoint) = agent(&env, &["--ping-timeout", "1s"]).await;
    let id = create(&endpoint, serde_json::json!({"argv": ["sleep", "1000"]})).await;
    let mut stream = dial(&endpoint).await;
    let request = format!(
        "GET /v1/sessions/{id}/attach HTTP/1.1\r\nHost: localhost\r\n\
         Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Protocol: pipegate.pty.v1\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    // Say nothing more (not even Pongs); the agent hangs up (the bound is a hang guard).
    let mut wire = Vec::new();
    within(
        STARTUP,
        "the agent to drop the silent client",
        stream.read_to_end(&mut wire),
    )
    .await
    .unwrap();
    let head_end = wire
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head")
        + 4;
    assert!(wire.starts_with(b"HTTP/1.1 101"), "{wire:?}");
    // Server frames are unmasked: [opcode byte][length < 126][payload] for these.
    let mut frames = Vec::new();
    let mut rest = &wire[head_end..];
    while rest.len() >= 2 {
        let len = usize::from(rest[1] & 0x7F);
        assert!(
            len < 126 && rest.len() >= 2 + len,
            "unexpected frame: {rest:?}"
        );
        frames.push((rest[0] & 0x0F, rest[2..2 + len].to_vec()));
        rest = &rest[2 + len..];
    }
    assert!(
        frames.iter().any(|(op, _)| *op == 0x9),
        "no Ping: {frames:?}"
    );
    let (op, payload) = frames.last().expect("frames");
    assert_eq!(*op, 0x8, "the last frame is not a Close: {frames:?}");
    assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), 1001);
    // The session is still there (detached), for another client.
    let (status, info) = http(&endpoint, "GET", &format!("/v1/sessions/{id}"), "").await;
    assert_eq!(status, 200, "{info}");
    let info: serde_json::Value = serde_json::from_str(&info).unwrap();
    assert_eq!(info["state"], "running");
    assert_eq!(info["attached"], false);
}

/// SIGTERM to `pipegate serve`: every session's process groups are ended before it
/// exits: a background job a job-control shell put in a group of its own, the
/// foreground job, and the program of an attached `pipegate shell`, which gets the exit
/// status (SIGHUP: 129).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_sigterm_ends_the_sessions_process_groups() {
    let env = TestEnv::new();
    let (mut serve, endpoint) = agent(&env, &["--kill-grace", "500ms"]).await;
    // Unique arguments, to find exactly these processes.
    let tag = std::process::id();
    let background = format!("1001.{tag}");
    let foreground = format!("1002.{tag}");
    let attached = format!("1003.{tag}");
    let script = format!("set -m; sleep {background} & sleep {foreground}");
    create(&endpoint, serde_json::json!({"argv": ["sh", "-c", script]})).await;
    let mut shell = Proc::spawn(
        "pipegate shell",
        pipegate(&["shell", &endpoint, "--", "sleep", &attached]),
        true,
    );

    let deadline = Instant::now() + STARTUP;
    let (bg, fg) = loop {
        let found = (
            find_process(&["sleep", &background]),
            find_process(&["sleep", &foreground]),
            find_process(&["sleep", &attached]),
        );
        if let (Some(bg), Some(fg), Some(_)) = found {
            break (bg, fg);
        }
        assert!(
            Instant::now() < deadline,
            "the sleeps did not all start: {found:?}\n{}",
            serve.dump()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // The case at hand: the background job has a process group of its own.
    assert_eq!(process_group(bg), Some(bg));
    assert_ne!(process_group(fg), Some(bg));

    serve.signal("TERM");
    let status = serve.wait_exit(STARTUP).await;
    assert_eq!(status.code(), Some(0), "{}", serve.dump());
    for arg in [&background, &foreground, &attached] {
        wait_until(STARTUP, &format!("`sleep {arg}` to be gone"), || {
            find_process(&["sleep", arg]).is_none()
        })
        .await;
    }
    let exit = shell.wait_exit(STARTUP).await;
    assert_eq!(exit.code(), Some(129), "{}", shell.dump());
}

/// The value after `key` on its line of `text`; the test fails without one.
#[cfg(target_os = "linux")]
fn field<'a>(text: &'a str, key: &str) -> &'a str {
    line_value(text, key).unwrap_or_else(|| panic!("no {key} line in {text:?}"))
}

/// The signals ignored by process `pid` (`SigIgn`, bit N-1 for signal N).
#[cfg(target_os = "linux")]
fn ignored_signals(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    u64::from_str_radix(field(&status, "SigIgn:"), 16).unwrap()
}

/// The soft and hard limits on open files of process `pid`.
#[cfg(target_os = "linux")]
fn open_files_limits(pid: u32) -> (u64, u64) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let mut values = field(&limits, "Max open files")
        .split_whitespace()
        .map(|v| v.parse::<u64>().unwrap());
    (values.next().unwrap(), values.next().unwrap())
}

/// `pipegate serve` started the way `nohup pipegate serve` or `pipegate serve &` in a
/// script starts it (SIGHUP, SIGINT and SIGQUIT ignored), with a soft limit of 512 open
/// files. It raises its own limit to the hard one (it holds two descriptors per
/// connection), and its sessions' programs still start as at a terminal, on a PTY and
/// on pipes: every signal at its default (so Ctrl-C reaches them and the agent's SIGHUP
/// ends them) and the open-files limit it was started with.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_programs_start_as_they_would_at_a_terminal() {
    const HUP_INT_QUIT: u64 = 0b111;
    let env = TestEnv::new();
    let listen = format!("unix://{}", env.sock("agent.sock").display());
    let cmd = after_shell(
        "trap '' HUP INT QUIT; ulimit -S -n 512",
        &pipegate(&["serve", "--no-discovery", "--listen", &listen]),
    );
    let serve = Proc::spawn("pipegate serve (nohup, ulimit -S -n 512)", cmd, true);
    let endpoint = serve.wait_listening(STARTUP).await;
    // pipegate handles SIGINT itself (a handler replaces the ignoring); the other two
    // stay ignored in it, or this test would prove nothing.
    const HUP_QUIT: u64 = 0b101;
    assert_eq!(ignored_signals(serve.pid()) & HUP_QUIT, HUP_QUIT);
    let (soft, hard) = open_files_limits(serve.pid());
    assert!(hard > 512, "a hard limit of {hard} leaves nothing to raise");
    assert_eq!(soft, hard, "serve did not raise its open-files limit");

    for tty in [true, false] {
        let out = env.path(&format!("status-{tty}"));
        let script = format!(
            "{{ cat /proc/self/status; echo \"NoFile: $(ulimit -n)\"; }} > {}.part && \
             mv {0}.part {0}",
            out.display()
        );
        create(
            &endpoint,
            serde_json::json!({"argv": ["sh", "-c", script], "tty": tty}),
        )
        .await;
        wait_until(STARTUP, "the session program's status", || out.exists()).await;
        let status = std::fs::read_to_string(&out).unwrap();
        let ignored = u64::from_str_radix(field(&status, "SigIgn:"), 16).unwrap();
        assert_eq!(
            ignored & HUP_INT_QUIT,
            0,
            "tty {tty}: the program inherited ignored signals (SigIgn {ignored:#x})\n{}",
            serve.dump()
        );
        assert_eq!(
            field(&status, "NoFile:"),
            "512",
            "tty {tty}: the program did not get the open-files limit serve started with"
        );
    }
}

/// Fields 6 and 7 of `/proc/PID/stat` text: session id and controlling terminal (0:
/// none).
#[cfg(target_os = "linux")]
fn session_and_tty(stat: &str) -> (u32, u64) {
    let (_, fields) = stat_fields(stat).unwrap_or_else(|| panic!("not a stat line: {stat:?}"));
    (fields[3].parse().unwrap(), fields[4].parse().unwrap())
}

/// `pipegate serve` run in a terminal: a session without a TTY does not share that
/// terminal. Its program leads a session of its own with no controlling terminal, so a
/// program that opens /dev/tty (a password prompt) fails, as under `ssh` without `-t`,
/// instead of asking on the terminal serve runs in.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_without_a_tty_does_not_get_the_terminal_serve_runs_in() {
    let env = TestEnv::new();
    let sock = env.sock("agent.sock");
    let listen = format!("unix://{}", sock.display());
    let argv = [PIPEGATE, "serve", "--no-discovery", "--listen", &listen];
    let serve = Proc::spawn(
        "pipegate serve (in a terminal)",
        in_a_terminal(&pipegate(&argv[1..])),
        true,
    );
    wait_until(STARTUP, "serve's socket", || sock.exists()).await;
    let pid = find_process(&argv).unwrap_or_else(|| panic!("no serve\n{}", serve.dump()));
    let own = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    assert_ne!(
        session_and_tty(&own).1,
        0,
        "serve has no terminal: this proves nothing"
    );

    let out = env.path("stat");
    let script = format!(
        "cat /proc/self/stat > {0}.part; \
         if (exec </dev/tty) 2>/dev/null; then echo opened >> {0}.part; fi; \
         mv {0}.part {0}",
        out.display()
    );
    let endpoint = format!("unix://{}", sock.display());
    let body = serde_json::json!({"argv": ["sh", "-c", script], "tty": false});
    let (status, answer) = http(&endpoint, "POST", "/v1/sessions", &body.to_string()).await;
    assert_eq!(status, 201, "{answer}");
    let created: serde_json::Value = serde_json::from_str(&answer).unwrap();
    wait_until(STARTUP, "the session program's report", || out.exists()).await;
    let report = std::fs::read_to_string(&out).unwrap();
    let (session, tty) = session_and_tty(report.lines().next().unwrap());
    assert_eq!(
        u64::from(session),
        created["pid"].as_u64().unwrap(),
        "not a session of its own: {report}"
    );
    assert_eq!(tty, 0, "the program has a controlling terminal: {report}");
    assert!(!report.contains("opened"), "/dev/tty opened: {report}");
}
