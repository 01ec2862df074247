//! The keepalive of attached clients, and the agent's shutdown.
//!
//! * A client that sends nothing, not even the Pong to the agent's Ping, is disconnected
//!   after the ping timeout (Close 1001); its session stays and can be re-attached.
//! * A client that is quiet but answers pings stays attached.
//! * `Agent::shutdown` ends every process group of every session, background jobs in
//!   groups of their own included, and refuses new sessions.
//! * Jobs a session's program left running when it exited are ended too (DELETE and
//!   shutdown).
// Real PTYs, Unix sockets and /proc.
#![cfg(target_os = "linux")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use http_body_util::Full;
use pipegate_agent::{Agent, Limits};
use pipegate_transport::Mode;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use support::{eventually, exit_code, normal, within, Server, STEP};

/// Reads an HTTP response head byte by byte (nothing after it), as text.
async fn read_head(stream: &mut UnixStream) -> String {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let byte = within(STEP, "the response head", stream.read_u8())
            .await
            .expect("read the response head");
        head.push(byte);
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// Server-to-client WebSocket frames (unmasked) as `(opcode, payload)`.
fn frames(mut wire: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    while wire.len() >= 2 {
        let opcode = wire[0] & 0x0F;
        let (len, head) = match wire[1] & 0x7F {
            126 => (usize::from(u16::from_be_bytes([wire[2], wire[3]])), 4),
            127 => (
                usize::try_from(u64::from_be_bytes(wire[2..10].try_into().unwrap())).unwrap(),
                10,
            ),
            n => (usize::from(n), 2),
        };
        assert!(wire.len() >= head + len, "truncated frame");
        out.push((opcode, wire[head..head + len].to_vec()));
        wire = &wire[head + len..];
    }
    assert!(wire.is_empty(), "trailing bytes: {wire:?}");
    out
}

async fn attached(server: &Server, id: &str) -> bool {
    let (status, info) = server.session(id).await;
    assert_eq!(status, StatusCode::OK, "{info}");
    info["attached"].as_bool().expect("attached")
}

/// A client that completes the handshake and then neither reads nor writes: pinged,
/// then disconnected with 1001 after the ping timeout; the session carries on for the
/// next client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_client_is_disconnected_and_the_session_stays() {
    let server = Server::start_with(Limits::default().ping_timeout(Duration::from_secs(1))).await;
    let id = server
        .create(json!({"argv": ["sh", "-c", "echo started; read line; echo got-$line"]}))
        .await;

    let mut raw = UnixStream::connect(&server.sock).await.unwrap();
    let request = format!(
        "GET /v1/sessions/{id}/attach HTTP/1.1\r\nHost: localhost\r\n\
         Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Protocol: pipegate.pty.v1\r\n\r\n"
    );
    raw.write_all(request.as_bytes()).await.unwrap();
    let head = read_head(&mut raw).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(attached(&server, &id).await);

    // Nothing from the client: detached after the timeout (the bound is a hang guard).
    eventually(STEP, "the silent client to be detached", || async {
        (!attached(&server, &id).await).then_some(())
    })
    .await;
    let mut wire = Vec::new();
    within(
        STEP,
        "the agent to drop the connection",
        raw.read_to_end(&mut wire),
    )
    .await
    .unwrap();
    let frames = frames(&wire);
    assert!(
        frames.iter().any(|(op, _)| *op == 0x9),
        "no Ping before the close: {frames:?}"
    );
    let (op, payload) = frames.last().unwrap();
    assert_eq!(*op, 0x8, "the last frame is not a Close: {frames:?}");
    assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), 1001);

    let mut client = server.attach(&id).await;
    client.stdin(b"again\n").await;
    client.wait_stdout("got-again").await;
    let (status, close) = client.finish().await;
    assert_eq!(exit_code(&status), 0, "{status}");
    assert_eq!(close, normal());
}

/// A client that sends nothing of its own but reads (so its WebSocket library answers
/// the pings) stays attached through several ping timeouts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_client_that_answers_pings_stays_attached() {
    let timeout = Duration::from_millis(1500);
    let server = Server::start_with(Limits::default().ping_timeout(timeout)).await;
    let id = server
        .create(json!({"argv": ["sh", "-c", "echo started; read line; echo got-$line"]}))
        .await;
    let mut client = server.attach(&id).await;
    client.wait_stdout("started").await;

    // Reading answers the pings; nothing else may arrive meanwhile.
    if let Ok(frame) = tokio::time::timeout(timeout * 3 + timeout / 2, client.next()).await {
        panic!("{frame:?} while quiet; stdout: {}", client.stdout_text());
    }
    assert!(attached(&server, &id).await);
    client.stdin(b"still-here\n").await;
    client.wait_stdout("got-still-here").await;
    let (status, close) = client.finish().await;
    assert_eq!(exit_code(&status), 0, "{status}");
    assert_eq!(close, normal());
}

/// The pid of the process whose argv is exactly `argv` (not a zombie), from /proc.
fn find_process(argv: &[&str]) -> Option<u32> {
    let want: Vec<u8> = argv
        .iter()
        .flat_map(|a| [a.as_bytes(), b"\0"].concat())
        .collect();
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            // A zombie has an empty cmdline.
            (cmdline == want).then_some(pid)
        })
}

/// Field 5 of /proc/PID/stat: the process group.
fn process_group(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(2)?
        .parse()
        .ok()
}

async fn call(agent: &Agent, method: &str, path: &str, body: &str) -> (StatusCode, Bytes) {
    let request = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "localhost")
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap();
    let resp = within(STEP, path, agent.handle(request, Mode::Unix)).await;
    (resp.status(), resp.into_body())
}

/// Shutdown reaches the jobs a job-control shell put in process groups of their own,
/// which killing the program alone would leave running; then no new sessions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_every_process_group_of_every_session() {
    let agent = Agent::with_limits(Limits::default().kill_grace(Duration::from_millis(300)));
    // Unique arguments, to find exactly these processes.
    let background = format!("1001.{}", std::process::id());
    let foreground = format!("1002.{}", std::process::id());
    let script = format!("set -m; sleep {background} & sleep {foreground}");
    let body = json!({"argv": ["sh", "-c", script]}).to_string();
    let (status, created) = call(&agent, "POST", "/v1/sessions", &body).await;
    assert_eq!(status, StatusCode::CREATED, "{created:?}");
    let session: serde_json::Value = serde_json::from_slice(&created).unwrap();
    let (_, info) = call(
        &agent,
        "GET",
        &format!("/v1/sessions/{}", session["id"].as_str().unwrap()),
        "",
    )
    .await;
    let info: serde_json::Value = serde_json::from_slice(&info).unwrap();
    let leader = u32::try_from(info["pid"].as_u64().unwrap()).unwrap();

    let (bg, fg) = eventually(STEP, "both sleeps to start", || async {
        Some((
            find_process(&["sleep", &background])?,
            find_process(&["sleep", &foreground])?,
        ))
    })
    .await;
    // The case at hand: the background job is in a process group of its own.
    let bg_group = process_group(bg).unwrap();
    assert_eq!(bg_group, bg);
    assert_ne!(bg_group, leader);
    assert_ne!(bg_group, process_group(fg).unwrap());

    within(STEP, "the shutdown", agent.shutdown()).await;
    for (what, arg) in [("background", &background), ("foreground", &foreground)] {
        eventually(STEP, &format!("the {what} sleep to be gone"), || async {
            find_process(&["sleep", arg]).is_none().then_some(())
        })
        .await;
    }
    let (status, answer) = call(&agent, "POST", "/v1/sessions", &body).await;
    assert_eq!(
        status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        String::from_utf8_lossy(&answer)
    );
}

/// A session whose program has exited still has its jobs ended: by `DELETE` a job a
/// job-control shell put in a group of its own (on a terminal), by shutdown a plain
/// `cmd &` left in the program's group (on pipes: on a terminal the hangup at the
/// shell's exit would end it). Both outlive their shell, which exits at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_left_by_an_exited_program_are_ended_too() {
    let agent = Agent::with_limits(Limits::default().kill_grace(Duration::from_millis(300)));
    let own_group = format!("1003.{}", std::process::id());
    let same_group = format!("1004.{}", std::process::id());
    let mut ids = Vec::new();
    for (script, tty) in [
        (format!("set -m; sleep {own_group} & exit 0"), true),
        (
            format!("sleep {same_group} >/dev/null 2>&1 & exit 0"),
            false,
        ),
    ] {
        let body = json!({"argv": ["sh", "-c", script], "tty": tty}).to_string();
        let (status, created) = call(&agent, "POST", "/v1/sessions", &body).await;
        assert_eq!(status, StatusCode::CREATED, "{created:?}");
        let session: serde_json::Value = serde_json::from_slice(&created).unwrap();
        ids.push(session["id"].as_str().unwrap().to_owned());
    }
    for id in &ids {
        eventually(STEP, "the shell to exit", || async {
            let (_, info) = call(&agent, "GET", &format!("/v1/sessions/{id}"), "").await;
            let info: serde_json::Value = serde_json::from_slice(&info).ok()?;
            (info["state"] == "exited").then_some(())
        })
        .await;
    }
    let own = find_process(&["sleep", &own_group]).expect("the job outlived its shell");
    let same = find_process(&["sleep", &same_group]).expect("the job outlived its shell");
    assert_eq!(process_group(own), Some(own));
    assert_ne!(process_group(same), Some(same));

    let (status, _) = call(&agent, "DELETE", &format!("/v1/sessions/{}", ids[0]), "").await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    eventually(STEP, "DELETE to end the job", || async {
        find_process(&["sleep", &own_group]).is_none().then_some(())
    })
    .await;
    assert!(find_process(&["sleep", &same_group]).is_some());

    within(STEP, "the shutdown", agent.shutdown()).await;
    eventually(STEP, "shutdown to end the job", || async {
        find_process(&["sleep", &same_group])
            .is_none()
            .then_some(())
    })
    .await;
}
