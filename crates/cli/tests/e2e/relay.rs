//! `pipegate relay EP`: stdin/stdout ⇄ an endpoint.

use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{payload, pipegate, run, unix_upstream, within, Behavior, Proc, TestEnv};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_round_trips_stdin_to_a_unix_echo_and_exits_zero() {
    let env = TestEnv::new();
    let upstream = unix_upstream(&env.sock("echo.sock"), Behavior::Echo);
    let mut cmd = pipegate(&["relay", &upstream.endpoint]);
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped());
    let mut relay = Proc::spawn("pipegate relay", cmd, false);
    let mut stdin = relay.child.stdin.take().expect("stdin");
    let mut stdout = relay.child.stdout.take().expect("stdout");

    let data = payload(11, 3 * 1024 * 1024 + 17);
    let writer = {
        let data = data.clone();
        tokio::spawn(async move {
            stdin.write_all(&data).await.expect("write stdin");
            // Closing stdin is the relay's EOF: it half-closes the socket, the echo
            // server finishes, and the relay exits.
            drop(stdin);
        })
    };
    let mut back = Vec::new();
    within(
        Duration::from_secs(30),
        "relay output",
        stdout.read_to_end(&mut back),
    )
    .await
    .expect("read stdout");
    within(Duration::from_secs(5), "stdin writer", writer)
        .await
        .expect("writer");
    assert!(
        back == data,
        "relay output differs ({} of {} bytes)",
        back.len(),
        data.len()
    );
    let status = relay.wait_exit(Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(0), "exit status\n{}", relay.dump());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_to_a_named_pipe_fails_fast_off_windows() {
    let started = Instant::now();
    let (status, stderr) = run(&["relay", "npipe://x"], Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(1), "exit status; stderr:\n{stderr}");
    assert!(
        stderr.contains("named pipe endpoints are only supported on Windows: npipe://x"),
        "stderr:\n{stderr}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}: it must fail fast",
        started.elapsed()
    );
}
