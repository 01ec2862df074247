//! Discovery end to end: the single-instance guard across real processes, instance
//! records, `pipegate status`, `pipegate request` and `pipegate doctor`.

use std::convert::Infallible;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpListener;

use tokio::process::Command;

use crate::support::{Proc, TestEnv, LISTENING, PIPEGATE, STARTUP};

const RUN: Duration = Duration::from_secs(30);

/// Runs `pipegate ARGS…` in `env` to completion: exit status, stdout, stderr.
async fn run(env: &TestEnv, args: &[&str]) -> (ExitStatus, String, String) {
    let mut cmd = env.pipegate(args);
    cmd.stdout(std::process::Stdio::piped());
    finish(cmd, args).await
}

/// Runs `cmd` (`pipegate ARGS…`, its stdout set up) to completion, capturing stderr.
async fn finish(mut cmd: Command, args: &[&str]) -> (ExitStatus, String, String) {
    cmd.stderr(std::process::Stdio::piped()).kill_on_drop(true);
    let child = cmd.spawn().expect("spawn pipegate");
    let out = match tokio::time::timeout(RUN, child.wait_with_output()).await {
        Ok(out) => out.expect("wait for pipegate"),
        Err(_) => panic!("pipegate {args:?} did not finish within {RUN:?}"),
    };
    (
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn records_dir(env: &TestEnv) -> PathBuf {
    env.state_home().join("pipegate/instances")
}

fn read_record(env: &TestEnv, name: &str) -> Value {
    let path = records_dir(env).join(format!("{name}.json"));
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}\n{text}", path.display()))
}

/// A pid that has exited and been reaped.
fn dead_pid() -> u32 {
    let mut child = std::process::Command::new("true")
        .spawn()
        .expect("spawn true");
    let pid = child.id();
    child.wait().expect("wait for true");
    pid
}

/// Writes a record by hand, as another (maybe dead) instance would have.
fn write_record(env: &TestEnv, name: &str, url: &str, pid: u32, nonce: &str) {
    let dir = records_dir(env);
    std::fs::create_dir_all(&dir).expect("create the records dir");
    let json = serde_json::json!({
        "url": url, "pid": pid, "nonce": nonce,
        "started_at": "2026-01-01T00:00:00Z", "mode": "agent", "listeners": [url],
    });
    std::fs::write(dir.join(format!("{name}.json")), json.to_string()).expect("write record");
}

enum Outcome {
    Listening(String),
    Exited(ExitStatus),
}

/// Waits until `proc` either prints its listening line or exits.
async fn settle(proc: &mut Proc) -> Outcome {
    let deadline = Instant::now() + STARTUP;
    loop {
        if let Some(line) = proc
            .stderr_lines()
            .into_iter()
            .find(|l| l.starts_with(LISTENING))
        {
            return Outcome::Listening(line[LISTENING.len()..].trim().to_owned());
        }
        if let Some(status) = proc.child.try_wait().expect("try_wait") {
            // Let stderr drain before anyone reads it.
            let status_again = proc.wait_exit(Duration::from_secs(5)).await;
            assert_eq!(status, status_again);
            return Outcome::Exited(status);
        }
        assert!(
            Instant::now() < deadline,
            "neither listening nor exited after {STARTUP:?}\n{}",
            proc.dump()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Ten `pipegate serve` at the same moment, one name, one Unix socket: one runs, nine
/// exit 3 naming it, and the winner's socket and record are intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_simultaneous_serves_leave_exactly_one_running() {
    let env = TestEnv::new();
    let sock = env.sock("race.sock");
    let listen = format!("unix://{}", sock.display());
    // Each start waits in a shell until the gate file appears, then execs pipegate (same
    // pid): the ten are released within a few milliseconds of each other.
    let gate = env.path("go");
    let mut procs: Vec<Proc> = (0..10)
        .map(|i| {
            let mut cmd = Command::new("sh");
            cmd.arg("-c")
                .arg(r#"while [ ! -e "$0" ]; do sleep 0.005; done; exec "$@""#)
                .arg(&gate)
                .args([PIPEGATE, "serve", "--name", "race", "--listen", &listen])
                .env("XDG_STATE_HOME", env.state_home())
                .env("XDG_RUNTIME_DIR", env.runtime_dir())
                .env_remove("PIPEGATE_LOG")
                .env_remove("PIPEGATE_LOG_FORMAT")
                .env("NO_COLOR", "1")
                .stdin(std::process::Stdio::null());
            Proc::spawn(&format!("pipegate serve #{i}"), cmd, true)
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    std::fs::write(&gate, "").expect("open the gate");
    let mut winners = Vec::new();
    let mut losers = Vec::new();
    for (i, proc) in procs.iter_mut().enumerate() {
        match settle(proc).await {
            Outcome::Listening(ep) => winners.push((i, ep)),
            Outcome::Exited(status) => losers.push((i, status)),
        }
    }
    let dumps = || procs.iter().map(Proc::dump).collect::<Vec<_>>().join("\n");
    assert_eq!(winners.len(), 1, "exactly one winner\n{}", dumps());
    let (w, endpoint) = winners[0].clone();
    assert_eq!(endpoint, listen);
    let winner_pid = procs[w].pid();
    let expected = format!("pipegate is already running at {listen} (PID {winner_pid})");
    for (i, status) in &losers {
        assert_eq!(status.code(), Some(3), "{}", procs[*i].dump());
        let stderr = procs[*i].stderr_text();
        assert!(
            stderr.contains(&format!("pipegate: error: {expected}")),
            "#{i} stderr:\n{stderr}"
        );
        assert!(
            !stderr.contains(LISTENING),
            "#{i} must not listen:\n{stderr}"
        );
    }
    assert_eq!(losers.len(), 9);

    assert!(sock.exists(), "the winner's socket is intact");
    let record = read_record(&env, "race");
    assert_eq!(record["pid"], winner_pid);
    assert_eq!(record["url"], listen.as_str());
    assert_eq!(record["mode"], "agent");
    let (status, out, err) = run(&env, &["request", "--name", "race", "/v1/info"]).await;
    assert!(status.success(), "request failed: {err}");
    let info: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(info["pid"], winner_pid, "the winner answers: {out}");

    // Shutdown removes the winner's record and socket.
    procs[w].signal("TERM");
    let status = procs[w].wait_exit(Duration::from_secs(15)).await;
    assert_eq!(status.code(), Some(0), "{}", procs[w].dump());
    assert!(!sock.exists(), "socket removed at shutdown");
    assert!(
        !records_dir(&env).join("race.json").exists(),
        "record removed at shutdown"
    );
}

/// An in-test HTTP upstream that answers every request with a JSON echo of it.
async fn echo_http_upstream() -> (String, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = service_fn(|req: http::Request<hyper::body::Incoming>| async move {
                    let method = req.method().to_string();
                    let path = req
                        .uri()
                        .path_and_query()
                        .map(|p| p.to_string())
                        .unwrap_or_default();
                    let test_header = req
                        .headers()
                        .get("x-test")
                        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
                    let body = req.into_body().collect().await.map(|b| b.to_bytes());
                    let body = String::from_utf8_lossy(&body.unwrap_or_default()).into_owned();
                    let echo = serde_json::json!({
                        "method": method, "path": path, "x_test": test_header, "body": body,
                    });
                    let status = if path.starts_with("/missing") {
                        404
                    } else {
                        200
                    };
                    let resp = http::Response::builder()
                        .status(status)
                        .header("content-type", "application/json")
                        .header("x-upstream", "echo")
                        .body(Full::new(Bytes::from(echo.to_string())))
                        .expect("response");
                    Ok::<_, Infallible>(resp)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (format!("tcp://{addr}"), task)
}

/// `pipegate request` against the agent (by endpoint and discovered by name) and through
/// HTTP bridges listening on a Unix socket and on TCP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_reaches_the_agent_directly_and_through_bridges() {
    let env = TestEnv::new();
    let agent_listen = format!("unix://{}", env.sock("agent.sock").display());
    let (agent, agent_ep) = env
        .serve(&["--name", "agent", "--listen", &agent_listen])
        .await;
    let agent_pid = agent.pid();

    let (status, out, err) = run(&env, &["request", &agent_ep, "/v1/info"]).await;
    assert!(status.success(), "{err}");
    let info: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(info["pid"], agent_pid);
    assert_eq!(info["transport"], "unix");

    let (status, out, err) = run(&env, &["request", "--name", "agent", "/v1/info"]).await;
    assert!(status.success(), "discovered: {err}");
    assert!(out.contains(&format!("\"pid\":{agent_pid}")), "{out}");

    let bridge_unix = format!("unix://{}", env.sock("bridge.sock").display());
    let (_bridge_unix, bridge_unix_ep) = env
        .serve(&[
            "--name",
            "bu",
            "--listen",
            &bridge_unix,
            "--upstream",
            &agent_ep,
        ])
        .await;
    let (_bridge_tcp, bridge_tcp_ep) = env
        .serve(&[
            "--name",
            "bt",
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            &agent_ep,
        ])
        .await;
    assert!(
        bridge_tcp_ep.starts_with("tcp://127.0.0.1:"),
        "{bridge_tcp_ep}"
    );
    for ep in [&bridge_unix_ep, &bridge_tcp_ep] {
        let (status, out, err) = run(&env, &["request", "-i", ep, "/v1/info"]).await;
        assert!(status.success(), "{ep}: {err}");
        assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{ep}: {out}");
        assert!(
            out.to_ascii_lowercase().contains("\r\nvia: "),
            "the bridge adds Via: {out}"
        );
        let body = out.split("\r\n\r\n").nth(1).unwrap_or_default();
        let info: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {out}"));
        assert_eq!(info["pid"], agent_pid, "{ep} reaches the agent");
    }

    // -f: a status outside 2xx prints no body and exits 22; without -f, the body and 0.
    let (status, out, err) = run(&env, &["request", "-f", &agent_ep, "/no/such/route"]).await;
    assert_eq!(status.code(), Some(22), "{out}{err}");
    assert!(out.is_empty(), "no body with -f: {out}");
    assert!(err.contains("404"), "{err}");
    let (status, out, _) = run(&env, &["request", &agent_ep, "/no/such/route"]).await;
    assert_eq!(status.code(), Some(0));
    assert!(!out.is_empty(), "the error body is printed without -f");
}

/// Method, headers and a body from a file go through a bridge to an HTTP upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_sends_method_headers_and_body() {
    let env = TestEnv::new();
    let (upstream, _task) = echo_http_upstream().await;
    let listen = format!("unix://{}", env.sock("b.sock").display());
    let (_bridge, ep) = env
        .serve(&["--name", "b", "--listen", &listen, "--upstream", &upstream])
        .await;
    let body_file = env.path("body.json");
    std::fs::write(&body_file, "{\"hello\":\"world\"}").expect("write body");
    let data = format!("@{}", body_file.display());
    let (status, out, err) = run(
        &env,
        &[
            "request",
            "-X",
            "PUT",
            "-H",
            "X-Test: yes",
            "-d",
            &data,
            &ep,
            "/things/1?x=2",
        ],
    )
    .await;
    assert!(status.success(), "{err}");
    let echo: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(echo["method"], "PUT");
    assert_eq!(echo["path"], "/things/1?x=2");
    assert_eq!(echo["x_test"], "yes");
    assert_eq!(echo["body"], "{\"hello\":\"world\"}");

    let (status, out, _) = run(&env, &["request", "-d", "plain", &ep, "/p"]).await;
    assert!(status.success());
    let echo: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(echo["method"], "POST", "-d implies POST");
    assert_eq!(echo["body"], "plain");

    let (status, _, err) = run(&env, &["request", "-f", &ep, "/missing"]).await;
    assert_eq!(status.code(), Some(22), "{err}");

    // Without EP and without a running instance of that name: a clear error, exit 1.
    let (status, _, err) = run(&env, &["request", "--name", "nobody", "/v1/info"]).await;
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(
        err.contains("no pipegate instance named \"nobody\" is running"),
        "{err}"
    );
}

/// `pipegate status | head -1` and the like: output to a reader that is gone is neither
/// a panic nor an error, and the exit code is what it would have been.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_to_a_reader_that_left_is_not_an_error() {
    let env = TestEnv::new();
    let listen = format!("unix://{}", env.sock("alive.sock").display());
    let (_alive, _) = env.serve(&["--name", "alive", "--listen", &listen]).await;
    for args in [&["status"][..], &["status", "--json"], &["doctor"]] {
        let (expected, out, _) = run(&env, args).await;
        assert!(!out.is_empty(), "{args:?} printed nothing to compare with");
        // A socket whose peer is closed: every write fails with EPIPE.
        let (stdout, reader) = std::os::unix::net::UnixStream::pair().expect("socket pair");
        drop(reader);
        let mut cmd = env.pipegate(args);
        cmd.stdout(std::os::fd::OwnedFd::from(stdout));
        let (status, _, err) = finish(cmd, args).await;
        assert_eq!(status.code(), expected.code(), "{args:?}: {err}");
        assert!(err.is_empty(), "{args:?} complained: {err}");
    }
}

/// `status`, `status --json` and `status --prune` over a running instance, a stale
/// record and a corrupt one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_lists_states_and_prune_removes_only_stale() {
    let env = TestEnv::new();
    let listen = format!("unix://{}", env.sock("alive.sock").display());
    let (alive, _) = env.serve(&["--name", "alive", "--listen", &listen]).await;
    let gone = dead_pid();
    write_record(
        &env,
        "gone",
        &format!("unix://{}", env.sock("gone.sock").display()),
        gone,
        "00000000000000000000000000000000",
    );
    std::fs::write(records_dir(&env).join("broken.json"), "{ nope").expect("write");

    let (status, out, err) = run(&env, &["status"]).await;
    assert!(status.success(), "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("NAME"), "{out}");
    let row = |name: &str| {
        lines
            .iter()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no row for {name}:\n{out}"))
            .split_whitespace()
            .collect::<Vec<_>>()
    };
    assert_eq!(row("alive")[1], "running");
    assert_eq!(row("alive")[2], alive.pid().to_string());
    assert_eq!(row("alive")[4], "agent");
    assert_eq!(row("alive")[5], listen);
    assert_eq!(row("gone")[1], "stale");
    assert_eq!(row("gone")[2], gone.to_string());
    assert_eq!(row("broken")[1], "error");

    let (status, out, err) = run(&env, &["status", "--json"]).await;
    assert!(status.success(), "{err}");
    let all: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    let states: Vec<(String, String)> = all
        .as_array()
        .expect("an array")
        .iter()
        .map(|i| {
            (
                i["name"].as_str().unwrap_or_default().to_owned(),
                i["state"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        states,
        [
            ("alive".to_owned(), "running".to_owned()),
            ("broken".to_owned(), "error".to_owned()),
            ("gone".to_owned(), "stale".to_owned()),
        ]
    );
    assert_eq!(all[0]["pid"], alive.pid());
    assert_eq!(all[0]["url"], listen.as_str());
    assert!(all[0]["nonce"].is_null(), "the nonce is not printed");
    assert!(all[1]["error"]
        .as_str()
        .unwrap_or_default()
        .contains("broken.json"));

    let (status, out, err) = run(&env, &["status", "--json", "--name", "gone"]).await;
    assert!(status.success(), "{err}");
    let one: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(one.as_array().map(Vec::len), Some(1));
    assert_eq!(one[0]["state"], "stale");
    assert!(
        records_dir(&env).join("gone.json").exists(),
        "status alone cleans nothing"
    );

    let (status, _, err) = run(&env, &["status", "--prune"]).await;
    assert!(status.success(), "{err}");
    assert!(
        err.contains("removed the stale record of \"gone\""),
        "{err}"
    );
    assert!(!records_dir(&env).join("gone.json").exists());
    assert!(records_dir(&env).join("alive.json").exists());
    assert!(records_dir(&env).join("broken.json").exists());

    let (status, out, _) = run(&env, &["status", "--name", "nothing"]).await;
    assert!(status.success());
    assert!(out.contains("not_found"), "{out}");
}

/// A stale record is taken over; an unhealthy one (alive pid, no answer) is refused with
/// exit 3 unless --replace; --no-discovery neither checks nor writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_is_taken_over_unhealthy_needs_replace() {
    let env = TestEnv::new();
    let stale_sock = env.sock("stale.sock");
    // A leftover socket file from the dead instance, too.
    drop(std::os::unix::net::UnixListener::bind(&stale_sock).expect("bind"));
    let stale_listen = format!("unix://{}", stale_sock.display());
    write_record(
        &env,
        "st",
        &stale_listen,
        dead_pid(),
        "11111111111111111111111111111111",
    );
    let (serve, ep) = env
        .serve(&["--name", "st", "--listen", &stale_listen])
        .await;
    assert_eq!(ep, stale_listen);
    assert_eq!(read_record(&env, "st")["pid"], serve.pid());

    // This test process is alive and answers nothing on that socket: unhealthy.
    let sick_listen = format!("unix://{}", env.sock("sick.sock").display());
    write_record(
        &env,
        "sick",
        &sick_listen,
        std::process::id(),
        "22222222222222222222222222222222",
    );
    let (status, _, err) = run(&env, &["serve", "--name", "sick", "--listen", &sick_listen]).await;
    assert_eq!(status.code(), Some(3), "{err}");
    assert!(err.contains("is still alive"), "{err}");
    assert!(
        err.contains("--replace"),
        "the hint names the way out: {err}"
    );
    assert_eq!(
        read_record(&env, "sick")["pid"],
        std::process::id(),
        "left alone"
    );

    let (replaced, _) = env
        .serve(&["--name", "sick", "--replace", "--listen", &sick_listen])
        .await;
    assert_eq!(read_record(&env, "sick")["pid"], replaced.pid());

    // --no-discovery: no check against the running "st", no record.
    let free = format!("unix://{}", env.sock("free.sock").display());
    let (free_serve, _) = env
        .serve(&["--name", "st", "--no-discovery", "--listen", &free])
        .await;
    assert_eq!(
        read_record(&env, "st")["pid"],
        serve.pid(),
        "record untouched"
    );
    drop(free_serve);
}

/// At shutdown the record is removed only if it still holds this instance's nonce.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_leaves_a_replaced_record_alone() {
    let env = TestEnv::new();
    let listen = format!("unix://{}", env.sock("r.sock").display());
    let (mut serve, _) = env.serve(&["--name", "r", "--listen", &listen]).await;
    let newcomer = format!("unix://{}", env.sock("other.sock").display());
    write_record(
        &env,
        "r",
        &newcomer,
        4242,
        "33333333333333333333333333333333",
    );
    serve.signal("TERM");
    let status = serve.wait_exit(Duration::from_secs(15)).await;
    assert_eq!(status.code(), Some(0), "{}", serve.dump());
    let record = read_record(&env, "r");
    assert_eq!(
        record["nonce"], "33333333333333333333333333333333",
        "the newcomer's record survives"
    );
}

/// `doctor` reports records, probes, socket modes, stale and corrupt records, the
/// runtime directory and an unreachable upstream, each problem with a fix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_reports_findings_with_fixes() {
    let env = TestEnv::new();
    // A bridge whose upstream nothing listens on.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let upstream = format!("tcp://127.0.0.1:{closed}");
    let listen = format!("unix://{}", env.sock("d.sock").display());
    let (serve, _) = env
        .serve(&["--name", "d", "--listen", &listen, "--upstream", &upstream])
        .await;
    write_record(
        &env,
        "old",
        &format!("unix://{}", env.sock("old.sock").display()),
        dead_pid(),
        "44444444444444444444444444444444",
    );
    std::fs::write(records_dir(&env).join("junk.json"), "[]").expect("write");

    let (status, out, err) = run(&env, &["doctor"]).await;
    assert_eq!(
        status.code(),
        Some(1),
        "an error finding exits 1\n{out}{err}"
    );
    let find = |needle: &str| {
        let i = out
            .lines()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no finding with {needle:?}:\n{out}"));
        let lines: Vec<&str> = out.lines().collect();
        (
            lines[i].to_owned(),
            lines.get(i + 1).map(|l| l.to_string()).unwrap_or_default(),
        )
    };
    let (line, _) = find(&format!("\"d\" is running: PID {}", serve.pid()));
    assert!(line.trim_start().starts_with("ok"), "{line}");
    let (line, _) = find(&format!("socket {}", env.sock("d.sock").display()));
    assert!(line.contains("mode 0600"), "{line}");
    let (line, fix) = find(&format!("upstream {upstream} is unreachable"));
    assert!(line.trim_start().starts_with("warn"), "{line}");
    assert!(fix.contains("fix:") && fix.contains("--upstream"), "{fix}");
    let (line, fix) = find("\"old\" has a stale record");
    assert!(line.trim_start().starts_with("warn"), "{line}");
    assert!(fix.contains("pipegate status --prune"), "{fix}");
    let (line, fix) = find("unreadable record");
    assert!(
        line.trim_start().starts_with("error") && line.contains("junk.json"),
        "{line}"
    );
    assert!(fix.contains("remove"), "{fix}");
    let (line, _) = find("records directory");
    assert!(line.contains("mode 0700"), "{line}");
    let (line, _) = find("XDG_RUNTIME_DIR=");
    assert!(line.trim_start().starts_with("ok"), "{line}");
    assert!(out.trim_end().ends_with("1 errors"), "{out}");

    // Without XDG_RUNTIME_DIR, doctor says where the default socket goes and how to fix it.
    let mut cmd = env.pipegate(&["doctor"]);
    cmd.env_remove("XDG_RUNTIME_DIR");
    let out = tokio::time::timeout(RUN, cmd.output())
        .await
        .expect("doctor finishes")
        .expect("run doctor");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("XDG_RUNTIME_DIR is not set"), "{text}");
    assert!(
        text.contains("export XDG_RUNTIME_DIR=/run/user/$(id -u)"),
        "{text}"
    );
}
