//! The built-in agent's limits and shutdown, through a real `pipegate serve`:
//! `--max-sessions`, `--ping-timeout`, and SIGTERM ending every process group of every
//! session (background jobs in groups of their own included).

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::process::{find_process, process_group};
use crate::support::{dial, ignoring_signals, pipegate, serve, within, Proc, TestEnv, STARTUP};

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

/// The signals ignored by process `pid` (`SigIgn` of `/proc/PID/status`, bit N-1 for
/// signal N).
#[cfg(target_os = "linux")]
fn ignored_signals(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    parse_sig_ign(&status)
}

#[cfg(target_os = "linux")]
fn parse_sig_ign(status: &str) -> u64 {
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix("SigIgn:"))
        .unwrap_or_else(|| panic!("no SigIgn line in {status:?}"));
    u64::from_str_radix(line.trim(), 16).unwrap()
}

/// `pipegate serve` started the way `nohup pipegate serve` or `pipegate serve &` in a
/// script starts it, ignoring SIGHUP, SIGINT and SIGQUIT: its sessions' programs still
/// start with every signal at its default, on a terminal and on pipes, so Ctrl-C
/// reaches them and the agent's SIGHUP ends them.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_programs_do_not_inherit_ignored_signals() {
    const HUP_INT_QUIT: u64 = 0b111;
    let env = TestEnv::new();
    let listen = format!("unix://{}", env.sock("agent.sock").display());
    let cmd = ignoring_signals(
        &pipegate(&["serve", "--no-discovery", "--listen", &listen]),
        "HUP INT QUIT",
    );
    let serve = Proc::spawn("pipegate serve (signals ignored)", cmd, true);
    let endpoint = serve.wait_listening(STARTUP).await;
    // pipegate handles SIGINT itself (a handler replaces the ignoring); the other two
    // stay ignored in it, or this test would prove nothing.
    const HUP_QUIT: u64 = 0b101;
    assert_eq!(ignored_signals(serve.pid()) & HUP_QUIT, HUP_QUIT);

    for tty in [true, false] {
        let out = env.path(&format!("status-{tty}"));
        let script = format!(
            "cat /proc/self/status > {}.part && mv {0}.part {0}",
            out.display()
        );
        create(
            &endpoint,
            serde_json::json!({"argv": ["sh", "-c", script], "tty": tty}),
        )
        .await;
        wait_until(STARTUP, "the session program's status", || out.exists()).await;
        let ignored = parse_sig_ign(&std::fs::read_to_string(&out).unwrap());
        assert_eq!(
            ignored & HUP_INT_QUIT,
            0,
            "tty {tty}: the program inherited ignored signals (SigIgn {ignored:#x})\n{}",
            serve.dump()
        );
    }
}
