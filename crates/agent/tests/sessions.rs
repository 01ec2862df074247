//! Sessions end to end: real pseudo-terminals and processes, a real WebSocket client,
//! the agent served through the bridge on a Unix socket.
#![cfg(unix)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use http::StatusCode;
use pipegate_agent::Limits;
use serde_json::json;
use support::{exit_code, exit_signal, normal, within, Frame, Server, STEP};

/// The issue's first scenario: size, resize + newline, SIGINT on channel 5.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stty_size_follows_resize_and_sigint_ends_it() {
    let server = Server::start().await;
    let id = server
        .create(json!({
            "argv": ["sh", "-c", "stty size; read x; stty size; sleep 1000"],
            "size": {"Width": 80, "Height": 24},
        }))
        .await;
    let mut client = server.attach(&id).await;
    assert_eq!(client.protocol, "pipegate.pty.v1");
    client.wait_stdout("24 80").await;

    client.resize(100, 40).await;
    client.stdin(b"\n").await;
    client.wait_stdout("40 100").await;

    // Once sleep runs, SIGINT goes to the foreground group (sh -c and sleep). (Sent
    // earlier, dash may defer it while it sets up the next command, and then wait for
    // sleep first, as with a Ctrl-C typed at that moment.)
    let (_, info) = server.session(&id).await;
    wait_for_child(info["pid"].as_u64().unwrap(), "sleep").await;
    client.signal("SIGINT").await;
    let (status, close) = client.finish().await;
    assert_eq!(close, normal());
    assert_eq!(status["status"], "Failure", "{status}");
    assert_eq!(exit_code(&status), 130, "{status}");
    assert_eq!(exit_signal(&status).as_deref(), Some("SIGINT"), "{status}");

    let exit = server.wait_exited(&id).await;
    assert_eq!(exit, json!({"code": 130, "signal": "SIGINT"}));
}

/// Waits until `parent` has a child process named `name` (Linux: from /proc; elsewhere
/// a fixed pause).
async fn wait_for_child(parent: u64, name: &str) {
    if !std::path::Path::new("/proc/self/stat").exists() {
        tokio::time::sleep(Duration::from_millis(500)).await;
        return;
    }
    support::eventually(STEP, "the child process to start", || async move {
        std::fs::read_dir("/proc")
            .ok()?
            .flatten()
            .find_map(|entry| {
                let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
                let (comm, rest) = stat.split_once(" (")?.1.rsplit_once(") ")?;
                let ppid: u64 = rest.split_whitespace().nth(1)?.parse().ok()?;
                (ppid == parent && comm == name).then_some(())
            })
    })
    .await;
}

/// SIGINT hits the terminal's foreground job, not the shell: an interactive shell with
/// job control survives it, and its own exit code comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_interrupts_the_foreground_job_not_the_shell() {
    let server = Server::start().await;
    let id = server
        .create(json!({
            "argv": ["bash", "--norc", "--noprofile", "-i"],
            "env": {"PS1": "prompt$ "},
        }))
        .await;
    let mut client = server.attach(&id).await;
    client.wait_stdout("prompt$ ").await;
    client.stdin(b"sleep 1000; echo after-sleep-$?\n").await;
    let (_, info) = server.session(&id).await;
    wait_for_child(info["pid"].as_u64().unwrap(), "sleep").await;
    client.signal("SIGINT").await;
    client.stdin(b"echo alive-$((6*7))\n").await;
    client.wait_stdout("alive-42").await;
    assert!(
        !client.stdout_text().contains("after-sleep-1"),
        "SIGINT must end the whole `sleep; echo` list as Ctrl-C does:\n{}",
        client.stdout_text()
    );
    client.stdin(b"exit 3\n").await;
    let (status, close) = client.finish().await;
    assert_eq!(close, normal());
    assert_eq!(exit_code(&status), 3, "{status}");
    assert_eq!(exit_signal(&status), None);
}

/// `[255, 0]` ends input: a terminal's cat sees EOF (after a newline-less line too), a
/// pipe's cat sees the pipe close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cat_ends_on_stdin_eof() {
    let server = Server::start().await;
    for tty in [true, false] {
        let id = server.create(json!({"argv": ["cat"], "tty": tty})).await;
        let mut client = server.attach(&id).await;
        client.stdin(b"hello\npartial").await;
        client.eof().await;
        let (status, close) = client.finish().await;
        assert_eq!(close, normal());
        assert_eq!(status["status"], "Success", "tty {tty}: {status}");
        if tty {
            // The terminal echoes the input and cat prints it again.
            let out = client.stdout_text();
            assert!(out.matches("hello").count() >= 2, "tty output: {out:?}");
            assert!(out.contains("partial"), "tty output: {out:?}");
        } else {
            assert_eq!(client.stdout, b"hello\npartial");
        }
    }
}

/// Without a terminal stdout and stderr stay apart, and the exit code arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipes_keep_stdout_and_stderr_apart() {
    let server = Server::start().await;
    let id = server
        .create(json!({
            "argv": ["sh", "-c", "echo out; echo err >&2; echo \"$FOO\"; exit 7"],
            "tty": false,
            "env": {"FOO": "from-env"},
        }))
        .await;
    let mut client = server.attach(&id).await;
    let (status, close) = client.finish().await;
    assert_eq!(close, normal());
    assert_eq!(client.stdout, b"out\nfrom-env\n");
    assert_eq!(client.stderr, b"err\n");
    assert_eq!(exit_code(&status), 7);
    assert_eq!(
        status["message"],
        "command terminated with non-zero exit code: 7"
    );
    let exit = server.wait_exited(&id).await;
    assert_eq!(exit, json!({"code": 7, "signal": null}));
}

/// 20 sessions at once, each with its own input and output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_concurrent_sessions() {
    let server = std::sync::Arc::new(Server::start().await);
    let mut tasks = Vec::new();
    for n in 0..20 {
        let server = std::sync::Arc::clone(&server);
        tasks.push(tokio::spawn(async move {
            let id = server
                .create(json!({
                    "argv": ["sh", "-c", "echo ready; read x; echo got-$x-$x; exit $x"],
                    "tty": n % 2 == 0,
                }))
                .await;
            let mut client = server.attach(&id).await;
            client.wait_stdout("ready").await;
            client.stdin(format!("{n}\n").as_bytes()).await;
            client.wait_stdout(&format!("got-{n}-{n}")).await;
            let (status, _) = client.finish().await;
            assert_eq!(exit_code(&status), n as u8, "{status}");
            let (_, info) = server.session(&id).await;
            info["pid"].as_u64().unwrap()
        }));
    }
    let mut pids = Vec::new();
    for task in tasks {
        pids.push(within(STEP * 2, "a session", task).await.unwrap());
    }
    pids.sort_unstable();
    pids.dedup();
    assert_eq!(pids.len(), 20, "every session is its own process");
}

/// The Kubernetes subprotocol: same channels, but channel 5 is not a signal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn k8s_subprotocol_works_without_channel_5() {
    let server = Server::start().await;
    let id = server
        .create(json!({"argv": ["sh", "-c", "read x; stty size; echo got-$x"]}))
        .await;
    let mut client = server
        .attach_with(&id, &["v5.channel.k8s.io"])
        .await
        .expect("attach");
    assert_eq!(client.protocol, "v5.channel.k8s.io");
    // Ignored under v5: the shell keeps reading.
    client.signal("SIGINT").await;
    client.resize(132, 50).await;
    client.stdin(b"k8s\n").await;
    client.wait_stdout("got-k8s").await;
    assert!(
        client.stdout_text().contains("50 132"),
        "{}",
        client.stdout_text()
    );
    let (status, close) = client.finish().await;
    assert_eq!(close, normal());
    assert_eq!(status["status"], "Success", "{status}");
}

/// Both protocols offered: pipegate.pty.v1 wins whatever the order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipegate_protocol_is_preferred() {
    let server = Server::start().await;
    let id = server.create(json!({"argv": ["true"]})).await;
    let client = server
        .attach_with(&id, &["v5.channel.k8s.io", "pipegate.pty.v1"])
        .await
        .expect("attach");
    assert_eq!(client.protocol, "pipegate.pty.v1");
}

/// Resize and signal act at once while input is backed up behind a program that does
/// not read it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signal_and_resize_act_while_stdin_is_backed_up() {
    let server = Server::start().await;
    let id = server
        .create(json!({
            "argv": ["sh", "-c", "trap 'stty size' WINCH; echo ready; while :; do sleep 0.05; done"],
        }))
        .await;
    let mut client = server.attach(&id).await;
    client.wait_stdout("ready").await;
    // Far more than the terminal's input queue holds; nobody reads it.
    let junk = vec![b'x'; 512 * 1024];
    for _ in 0..4 {
        client.stdin(&junk).await;
    }
    client.resize(91, 33).await;
    client.wait_stdout("33 91").await;
    client.signal("SIGTERM").await;
    let (status, _) = client.finish().await;
    assert_eq!(exit_signal(&status).as_deref(), Some("SIGTERM"), "{status}");
}

/// Input beyond the agent's budget (the program is not reading) closes with 1008.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdin_overflow_closes_with_1008() {
    let server = Server::start_with(Limits::default().stdin_buffer(64 * 1024)).await;
    let id = server.create(json!({"argv": ["sleep", "1000"]})).await;
    let mut client = server.attach(&id).await;
    let junk = vec![b'x'; 32 * 1024];
    let (code, reason) = within(STEP, "the overflow close", async {
        loop {
            if let Err(e) = futures_util::SinkExt::send(
                &mut client.ws,
                tokio_tungstenite::tungstenite::Message::Binary(
                    [&[0u8][..], &junk].concat().into(),
                ),
            )
            .await
            {
                panic!("send failed before the close: {e}");
            }
            if let Ok(Frame::Close(Some(close))) =
                tokio::time::timeout(Duration::from_millis(50), client.next()).await
            {
                break close;
            }
        }
    })
    .await;
    assert_eq!(code, 1008, "{reason}");
    assert!(reason.contains("stdin overflow"), "{reason}");
    // The session itself goes on; end it.
    let (status, _) = server
        .request("DELETE", &format!("/v1/sessions/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
}

/// Protocol violations: a text frame gets 1003, a message over 1 MiB gets 1009 and
/// never reaches the program; a message of exactly 1 MiB is fine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_frames_and_oversized_messages_are_closed() {
    let server = Server::start().await;
    let id = server
        .create(json!({"argv": ["wc", "-c"], "tty": false}))
        .await;
    let reattach = || async {
        // The agent may need a moment to notice the previous client is gone.
        support::eventually(STEP, "re-attach", || async {
            server.attach_with(&id, &["pipegate.pty.v1"]).await.ok()
        })
        .await
    };

    let mut client = server.attach(&id).await;
    futures_util::SinkExt::send(
        &mut client.ws,
        tokio_tungstenite::tungstenite::Message::Text("hello".into()),
    )
    .await
    .unwrap();
    let (code, _) = client.wait_close().await;
    assert_eq!(code, 1003);
    drop(client);

    // The session survived the client's mistake.
    let mut client = reattach().await;
    // Channel byte + (1 MiB - 1) = exactly 1 MiB.
    client.stdin(&vec![b'a'; (1 << 20) - 1]).await;
    client.stdin(&vec![b'b'; 1 << 20]).await;
    let (code, _) = client.wait_close().await;
    assert_eq!(code, 1009);
    drop(client);

    let mut client = reattach().await;
    client.eof().await;
    let (status, close) = client.finish().await;
    assert_eq!(close, normal());
    assert_eq!(status["status"], "Success");
    assert_eq!(
        client.stdout_text().trim(),
        ((1 << 20) - 1).to_string(),
        "exactly the 1 MiB message reached the program"
    );
}

/// Every bad input the issue lists gets 400 with the field named; unknown ids 404; a
/// second attach 409; the session limit 429.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_inputs_are_refused_with_the_field_named() {
    let server = Server::start_with(Limits::default().max_sessions(2)).await;
    let cases: &[(&str, &str)] = &[
        ("{\"argv\": [\"true\"", "body"),
        ("[1, 2]", "body"),
        (r#"{"argv": ["true"], "user": "root"}"#, "user"),
        (r#"{"argv": []}"#, "argv"),
        (r#"{"argv": "true"}"#, "argv"),
        (r#"{"argv": [""]}"#, "argv[0]"),
        (r#"{"argv": ["./relative"]}"#, "argv[0]"),
        (r#"{"argv": ["no-such-program-pipegate"]}"#, "argv[0]"),
        (r#"{"argv": ["/no/such/program"]}"#, "argv[0]"),
        (r#"{"argv": ["true"], "tty": "yes"}"#, "tty"),
        (
            r#"{"argv": ["true"], "size": {"Width": 0, "Height": 24}}"#,
            "size.Width",
        ),
        (
            r#"{"argv": ["true"], "size": {"Width": 80, "Height": 65536}}"#,
            "size.Height",
        ),
        (
            r#"{"argv": ["true"], "size": {"Width": -1, "Height": 24}}"#,
            "size.Width",
        ),
        (
            r#"{"argv": ["true"], "size": {"Width": 80, "Height": 24, "Depth": 1}}"#,
            "Depth",
        ),
        (r#"{"argv": ["true"], "cwd": "relative/dir"}"#, "cwd"),
        (r#"{"argv": ["true"], "cwd": "/no/such/dir"}"#, "cwd"),
        (r#"{"argv": ["true"], "env": {"A=B": "x"}}"#, "env.A=B"),
        (r#"{"argv": ["true"], "env": {"A": 1}}"#, "env.A"),
    ];
    for (body, field) in cases {
        let (status, json) = server.request("POST", "/v1/sessions", Some(body)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body} → {json}");
        let message = json["error"]["message"].as_str().unwrap();
        assert!(
            message.contains(field),
            "{body}: message {message:?} does not name {field}"
        );
        assert_eq!(json["error"]["kind"], "invalid_argument", "{json}");
    }

    let id = server.create(json!({"argv": ["sleep", "1000"]})).await;
    let signal_cases: &[(&str, &str)] = &[
        (r#"{"Signal": "SIGFOO"}"#, "SIGFOO"),
        (r#"{"Signal": 2}"#, "Signal"),
        (r#"{}"#, "Signal"),
        (r#"{"Signal": "SIGINT", "Pid": 1}"#, "Pid"),
    ];
    for (body, field) in signal_cases {
        let (status, json) = server
            .request("POST", &format!("/v1/sessions/{id}/signal"), Some(body))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body} → {json}");
        let message = json["error"]["message"].as_str().unwrap();
        assert!(
            message.contains(field),
            "{body}: {message:?} does not name {field}"
        );
    }
    for (body, field) in [
        (r#"{"Width": 80, "Height": 0}"#, "Height"),
        (r#"{"Width": 65536, "Height": 10}"#, "Width"),
        (r#"{"Width": 80}"#, "Height"),
    ] {
        let (status, json) = server
            .request("POST", &format!("/v1/sessions/{id}/resize"), Some(body))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body} → {json}");
        let message = json["error"]["message"].as_str().unwrap();
        assert!(
            message.contains(field),
            "{body}: {message:?} does not name {field}"
        );
    }

    // Unknown ids.
    for (method, path) in [
        ("GET", "/v1/sessions/nope"),
        ("DELETE", "/v1/sessions/nope"),
        ("POST", "/v1/sessions/nope/resize"),
        ("POST", "/v1/sessions/nope/signal"),
        ("GET", "/v1/sessions/nope/attach"),
    ] {
        let body = r#"{"Signal": "SIGINT"}"#;
        let (status, json) = server.request(method, path, Some(body)).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}: {json}");
    }
    assert!(matches!(
        server.attach_with("nope", &["pipegate.pty.v1"]).await,
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) if resp.status() == 404
    ));

    // No acceptable subprotocol: 400 before the upgrade.
    match server.attach_with(&id, &["chat"]).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status(), 400);
        }
        Err(e) => panic!("unexpected error: {e}"),
        Ok(_) => panic!("attach without an acceptable subprotocol succeeded"),
    }

    // A second attach while one is open.
    let first = server.attach(&id).await;
    match server.attach_with(&id, &["pipegate.pty.v1"]).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status(), 409);
        }
        Err(e) => panic!("unexpected error: {e}"),
        Ok(_) => panic!("a second attach succeeded"),
    }
    drop(first);

    // The limit: two running sessions; a third is refused, and allowed after one ends.
    let second = server.create(json!({"argv": ["sleep", "1000"]})).await;
    let (status, json) = server
        .request("POST", "/v1/sessions", Some(r#"{"argv": ["true"]}"#))
        .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{json}");
    assert_eq!(json["error"]["kind"], "too_many_sessions");
    let (status, _) = server
        .request("DELETE", &format!("/v1/sessions/{second}"), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    server.create(json!({"argv": ["true"]})).await;

    // Methods.
    let (status, _) = server.request("PUT", "/v1/sessions", None).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    let (status, _) = server.request("GET", "/v1/nothing", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

/// DELETE ends the session's process groups: SIGHUP first, SIGKILL after the grace for
/// a program that ignores SIGHUP; the session is gone afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_hangs_up_then_kills() {
    let server = Server::start_with(Limits::default().kill_grace(Duration::from_millis(300))).await;

    let polite = server.create(json!({"argv": ["sleep", "1000"]})).await;
    let mut client = server.attach(&polite).await;
    let (status, _) = server
        .request("DELETE", &format!("/v1/sessions/{polite}"), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status_json, close) = client.finish().await;
    assert_eq!(close, normal());
    assert_eq!(exit_signal(&status_json).as_deref(), Some("SIGHUP"));
    let (status, _) = server.session(&polite).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Ignores SIGHUP, and starts a background job in its own process group.
    let stubborn = server
        .create(json!({
            "argv": ["bash", "--norc", "--noprofile", "-c",
                     "trap '' HUP; set -m; sleep 1000 & echo bg=$!; wait"],
        }))
        .await;
    let mut client = server.attach(&stubborn).await;
    client.wait_stdout("bg=").await;
    let text = client.stdout_text();
    let bg: u32 = text
        .split("bg=")
        .nth(1)
        .and_then(|s| s.lines().next())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| panic!("no bg pid in {text:?}"));
    let (_, info) = server.session(&stubborn).await;
    let pid = info["pid"].as_u64().unwrap();
    let started = std::time::Instant::now();
    let (status, _) = server
        .request("DELETE", &format!("/v1/sessions/{stubborn}"), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "SIGKILL came before the grace"
    );
    let (status_json, _) = client.finish().await;
    assert_eq!(exit_signal(&status_json).as_deref(), Some("SIGKILL"));
    for p in [pid as u32, bg] {
        support::eventually(STEP, "the process to be gone", || async move {
            (!std::path::Path::new(&format!("/proc/{p}")).exists()
                || std::fs::read_to_string(format!("/proc/{p}/stat"))
                    .map(|s| s.contains(") Z"))
                    .unwrap_or(true))
            .then_some(())
        })
        .await;
    }
}

/// A client that leaves may come back and gets the rest; an abandoned session is ended
/// after the detach timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detach_reattach_and_detach_timeout() {
    let server = Server::start_with(
        Limits::default()
            .detach_timeout(Duration::from_secs(2))
            .kill_grace(Duration::from_millis(200)),
    )
    .await;
    let id = server
        .create(json!({"argv": ["sh", "-c", "read a; echo first-$a; read b; echo second-$b"]}))
        .await;
    let mut client = server.attach(&id).await;
    client.stdin(b"one\n").await;
    client.wait_stdout("first-one").await;
    client.ws.close(None).await.unwrap();
    drop(client);

    let mut client = support::eventually(STEP, "re-attach", || async {
        server.attach_with(&id, &["pipegate.pty.v1"]).await.ok()
    })
    .await;
    client.stdin(b"two\n").await;
    client.wait_stdout("second-two").await;
    let (status, _) = client.finish().await;
    assert_eq!(status["status"], "Success");
    // The status was delivered: no more attaches.
    match server.attach_with(&id, &["pipegate.pty.v1"]).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 410),
        _ => panic!("attach after the status should be refused"),
    }

    // Nobody ever attaches: ended and removed after the timeout.
    let abandoned = server.create(json!({"argv": ["sleep", "1000"]})).await;
    let (_, info) = server.session(&abandoned).await;
    let pid = info["pid"].as_u64().unwrap();
    support::eventually(
        Duration::from_secs(10),
        "the abandoned session to go",
        || async {
            let (status, _) = server.session(&abandoned).await;
            (status == StatusCode::NOT_FOUND).then_some(())
        },
    )
    .await;
    support::eventually(STEP, "its process to be gone", || async move {
        (!std::path::Path::new(&format!("/proc/{pid}")).exists()).then_some(())
    })
    .await;
}

/// `env.PATH` is what the program sees, not where the agent looks for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn env_path_does_not_change_program_lookup() {
    let server = Server::start().await;
    let id = server
        .create(json!({
            "argv": ["sh", "-c", "echo \"path=$PATH\"; echo \"term=$TERM\""],
            "env": {"PATH": "/nonexistent"},
            "cwd": "/",
        }))
        .await;
    let mut client = server.attach(&id).await;
    let (status, _) = client.finish().await;
    assert_eq!(status["status"], "Success");
    let out = client.stdout_text();
    assert!(out.contains("path=/nonexistent"), "{out}");
    assert!(out.contains("term="), "{out}");
    assert!(!out.contains("term=\r"), "a TTY session has a TERM: {out}");
}

/// The HTTP routes for resize and signal work without an attached client; a resize
/// of a pipes session is a conflict.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_resize_and_signal() {
    let server = Server::start().await;
    let id = server
        .create(json!({"argv": ["sh", "-c", "trap 'stty size; exit 5' WINCH; echo ready; while :; do sleep 0.05; done"]}))
        .await;
    let mut client = server.attach(&id).await;
    client.wait_stdout("ready").await;
    let (status, _) = server
        .request(
            "POST",
            &format!("/v1/sessions/{id}/resize"),
            Some(r#"{"Width": 120, "Height": 30}"#),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status_json, _) = client.finish().await;
    assert!(
        client.stdout_text().contains("30 120"),
        "{}",
        client.stdout_text()
    );
    assert_eq!(exit_code(&status_json), 5);

    let pipes = server
        .create(json!({"argv": ["sleep", "1000"], "tty": false}))
        .await;
    let (status, json) = server
        .request(
            "POST",
            &format!("/v1/sessions/{pipes}/resize"),
            Some(r#"{"Width": 120, "Height": 30}"#),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{json}");
    let (status, _) = server
        .request(
            "POST",
            &format!("/v1/sessions/{pipes}/signal"),
            Some(r#"{"Signal": "SIGUSR1"}"#),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let exit = server.wait_exited(&pipes).await;
    assert_eq!(exit["signal"], "SIGUSR1");
    assert_eq!(exit["code"], 128 + 10);
}
