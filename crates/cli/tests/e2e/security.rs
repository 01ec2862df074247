//! Security of `pipegate serve` end to end: TCP listeners need the bearer token kept
//! next to the instance record (and `pipegate request`/`status` find it), `Host` and
//! `Origin` are checked, `--no-auth` is never offered to remote clients, bridges present
//! a token upstream, and no secret reaches the log, whatever its format.

use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{dial, within, Proc, TestEnv};

const RUN: Duration = Duration::from_secs(30);

/// Runs `pipegate ARGS…` in `env` to completion: exit status, stdout, stderr.
async fn run(env: &TestEnv, args: &[&str]) -> (ExitStatus, String, String) {
    let mut cmd = env.pipegate(args);
    cmd.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
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

fn instance_file(env: &TestEnv, name: &str) -> PathBuf {
    env.state_home().join("pipegate/instances").join(name)
}

/// `host:port` of a printed `tcp://host:port` endpoint.
fn authority(endpoint: &str) -> &str {
    endpoint
        .strip_prefix("tcp://")
        .unwrap_or_else(|| panic!("not TCP: {endpoint}"))
}

/// `GET path` with `Connection: close` and these header lines, as raw bytes; the status
/// and the whole answer.
async fn get(endpoint: &str, path: &str, host: &str, extra: &[&str]) -> (u16, String) {
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n");
    for line in extra {
        req.push_str(line);
        req.push_str("\r\n");
    }
    req.push_str("Connection: close\r\n\r\n");
    let mut io = dial(endpoint).await;
    io.write_all(req.as_bytes()).await.expect("send");
    let mut answer = Vec::new();
    within(RUN, "the answer", io.read_to_end(&mut answer))
        .await
        .expect("read the answer");
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {answer:?}"));
    (status, answer)
}

/// Stops `serve` with SIGTERM and waits for a clean exit.
async fn stop(mut serve: Proc) {
    serve.signal("TERM");
    let status = serve.wait_exit(RUN).await;
    assert!(status.success(), "{}", serve.dump());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tcp_agent_needs_its_token_which_only_its_file_and_request_know() {
    let env = TestEnv::new();
    let unix = format!("unix://{}", env.sock("agent.sock").display());
    let (serve, tcp) = env
        .serve(&[
            "--name",
            "tcp-agent",
            "--listen",
            "127.0.0.1:0",
            "--listen",
            &unix,
            "--allow-origin",
            "https://app.example",
            "--log",
            "trace",
            "--log-format",
            "json",
        ])
        .await;
    let host = authority(&tcp).to_owned();

    // The token: in <name>.token, mode 0600, 256 bits; not in the record.
    let token_path = instance_file(&env, "tcp-agent.token");
    let token = std::fs::read_to_string(&token_path)
        .unwrap_or_else(|e| panic!("{}: {e}", token_path.display()))
        .trim()
        .to_owned();
    assert_eq!(token.len(), 64, "{token}");
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&token_path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    let record_path = instance_file(&env, "tcp-agent.json");
    let record = std::fs::read_to_string(&record_path).expect("the record");
    assert!(!record.contains(&token), "{record}");
    let nonce = serde_json::from_str::<Value>(&record).expect("json")["nonce"]
        .as_str()
        .expect("a nonce")
        .to_owned();

    // Without it: 401 on TCP, fine on the Unix socket (the OS checked the peer).
    let (status, answer) = get(&tcp, "/v1/info", &host, &[]).await;
    assert_eq!(status, 401, "{answer}");
    assert!(answer.contains("www-authenticate: Bearer"), "{answer}");
    let (status, _) = get(&tcp, "/v1/info", &host, &["Authorization: Bearer wrong"]).await;
    assert_eq!(status, 401);
    let (status, answer) = get(&unix, "/v1/info", "localhost", &[]).await;
    assert_eq!(status, 200, "{answer}");
    // With it: 200; a foreign Host (DNS rebinding) or Origin (a cross-site page) is
    // refused even with it; the allowed origin passes.
    let bearer = format!("Authorization: Bearer {token}");
    let (status, answer) = get(
        &tcp,
        "/v1/info",
        &host,
        &[&bearer, "Cookie: c=COOKIE-SECRET"],
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let (status, _) = get(&tcp, "/v1/info", "rebound.example", &[&bearer]).await;
    assert_eq!(status, 421);
    let (status, _) = get(
        &tcp,
        "/v1/info",
        &host,
        &[&bearer, "Origin: https://evil.example"],
    )
    .await;
    assert_eq!(status, 403);
    let (status, _) = get(
        &tcp,
        "/v1/info",
        &host,
        &[&bearer, "Origin: https://app.example"],
    )
    .await;
    assert_eq!(status, 200);

    // `pipegate request` presents the token itself: by name, and by endpoint.
    let (status, out, err) = run(&env, &["request", "-f", "--name", "tcp-agent", "/v1/info"]).await;
    assert!(status.success(), "{err}");
    assert_eq!(
        serde_json::from_str::<Value>(&out).expect("json")["pid"],
        serve.pid()
    );
    let (status, out, err) = run(&env, &["request", "-f", &tcp, "/v1/info"]).await;
    assert!(status.success(), "{err}");
    assert!(out.contains("\"pid\""), "{out}");
    // `status` probes health through the token; it prints neither token nor nonce.
    let (status, out, err) = run(&env, &["status", "--json", "--name", "tcp-agent"]).await;
    assert!(status.success(), "{err}");
    let rows: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(rows[0]["state"], "running", "{out}");
    assert!(!out.contains(&token) && !out.contains(&nonce), "{out}");

    let token_in_log = serve.stderr_text().contains(&token);
    stop(serve).await;
    assert!(
        !token_path.exists(),
        "the token file is removed at shutdown"
    );
    assert!(!record_path.exists(), "with the record");
    assert!(!token_in_log, "the token was printed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_the_log_in_any_format() {
    for format in ["json", "text"] {
        let env = TestEnv::new();
        let (serve, tcp) = env
            .serve(&[
                "--name",
                "logged",
                "--listen",
                "127.0.0.1:0",
                "--log",
                "trace",
                "--log-format",
                format,
            ])
            .await;
        let host = authority(&tcp).to_owned();
        let token = std::fs::read_to_string(instance_file(&env, "logged.token"))
            .expect("token")
            .trim()
            .to_owned();
        let record = std::fs::read_to_string(instance_file(&env, "logged.json")).expect("record");
        let nonce = serde_json::from_str::<Value>(&record).expect("json")["nonce"]
            .as_str()
            .expect("nonce")
            .to_owned();
        let bearer = format!("Authorization: Bearer {token}");
        let secrets = [
            bearer.as_str(),
            "Cookie: session=COOKIE-SECRET-1",
            "Proxy-Authorization: Basic PROXY-SECRET-2",
        ];
        let (status, _) = get(&tcp, "/v1/info", &host, &secrets).await;
        assert_eq!(status, 200);
        let (status, answer) = get(&tcp, "/_pipegate/health", &host, &secrets).await;
        assert_eq!(status, 204);
        assert!(answer.contains(&nonce), "{answer}");
        let (status, _) = get(
            &tcp,
            "/v1/info",
            &host,
            &["Authorization: Bearer WRONG-SECRET-3"],
        )
        .await;
        assert_eq!(status, 401);
        let (status, _, err) = run(&env, &["status", "--name", "logged"]).await;
        assert!(status.success(), "{err}");
        let (status, _, err) =
            run(&env, &["request", "-f", "--log", "trace", &tcp, "/v1/info"]).await;
        assert!(status.success(), "{err}");
        assert!(
            !err.contains(&token),
            "`request --log trace` printed the token:\n{err}"
        );

        let mut serve = serve;
        serve.signal("TERM");
        assert!(serve.wait_exit(RUN).await.success(), "{}", serve.dump());
        let log = serve.stderr_text();
        assert!(
            log.lines().count() > 5,
            "{format}: the log is there:\n{log}"
        );
        for secret in [
            token.as_str(),
            nonce.as_str(),
            "COOKIE-SECRET-1",
            "PROXY-SECRET-2",
            "WRONG-SECRET-3",
        ] {
            assert!(
                !log.contains(secret),
                "{format}: {secret} was logged:\n{log}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_auth_is_for_loopback_only() {
    let env = TestEnv::new();
    let (status, _, err) = run(
        &env,
        &[
            "serve",
            "--no-auth",
            "--allow-remote",
            "--listen",
            "0.0.0.0:0",
        ],
    )
    .await;
    assert_eq!(status.code(), Some(2), "a usage error: {err}");
    assert!(
        err.contains("--no-auth") && err.contains("--allow-remote"),
        "{err}"
    );
    assert!(
        !env.state_home().join("pipegate/instances").exists()
            || std::fs::read_dir(env.state_home().join("pipegate/instances"))
                .unwrap()
                .next()
                .is_none(),
        "nothing was registered"
    );

    // On loopback: no token file, requests need no token, Host is still checked.
    let (serve, tcp) = env
        .serve(&["--name", "open", "--no-auth", "--listen", "127.0.0.1:0"])
        .await;
    assert!(!instance_file(&env, "open.token").exists());
    let (status, answer) = get(&tcp, "/v1/info", authority(&tcp), &[]).await;
    assert_eq!(status, 200, "{answer}");
    let (status, _) = get(&tcp, "/v1/info", "rebound.example", &[]).await;
    assert_eq!(status, 421);
    stop(serve).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_discovery_the_token_goes_to_token_file() {
    let env = TestEnv::new();
    let (status, _, err) = run(
        &env,
        &["serve", "--no-discovery", "--listen", "127.0.0.1:0"],
    )
    .await;
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("--token-file"), "the way out is named: {err}");

    let file = env.path("agent.token");
    let file_arg = file.display().to_string();
    let (serve, tcp) = env
        .serve(&[
            "--no-discovery",
            "--listen",
            "127.0.0.1:0",
            "--token-file",
            &file_arg,
        ])
        .await;
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    // No record to find it through: -f turns the 401 into exit 22; --token-file works.
    let (status, _, err) = run(&env, &["request", "-f", &tcp, "/v1/info"]).await;
    assert_eq!(status.code(), Some(22), "{err}");
    assert!(err.contains("401"), "{err}");
    let (status, out, err) = run(
        &env,
        &["request", "-f", "--token-file", &file_arg, &tcp, "/v1/info"],
    )
    .await;
    assert!(status.success(), "{err}");
    assert!(out.contains("\"pid\""), "{out}");
    stop(serve).await;
    assert!(!file.exists(), "removed at shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bridge_presents_the_upstream_token() {
    let env = TestEnv::new();
    let (agent, agent_tcp) = env
        .serve(&["--name", "up", "--listen", "127.0.0.1:0"])
        .await;
    let token_file = instance_file(&env, "up.token").display().to_string();

    let with = format!("unix://{}", env.sock("with.sock").display());
    let (bridge, with) = env
        .serve(&[
            "--name",
            "with",
            "--listen",
            &with,
            "--upstream",
            &agent_tcp,
            "--upstream-token-file",
            &token_file,
        ])
        .await;
    let (status, answer) = get(&with, "/v1/info", "localhost", &[]).await;
    assert_eq!(status, 200, "{answer}");
    assert!(
        answer.contains(&format!("\"pid\":{}", agent.pid())),
        "{answer}"
    );

    // Without it the agent refuses the bridge's requests.
    let without = format!("unix://{}", env.sock("without.sock").display());
    let (plain, without) = env
        .serve(&[
            "--name",
            "without",
            "--listen",
            &without,
            "--upstream",
            &agent_tcp,
        ])
        .await;
    let (status, answer) = get(&without, "/v1/info", "localhost", &[]).await;
    assert_eq!(status, 401, "{answer}");

    // Raw mode relays bytes: it cannot present a token, and says so.
    let (status, _, err) = run(
        &env,
        &[
            "serve",
            "--no-discovery",
            "--mode",
            "raw",
            "--listen",
            &format!("unix://{}", env.sock("raw.sock").display()),
            "--upstream",
            &agent_tcp,
            "--upstream-token-file",
            &token_file,
        ],
    )
    .await;
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(
        err.contains("--upstream-token-file works in http mode only"),
        "{err}"
    );

    stop(bridge).await;
    stop(plain).await;
    stop(agent).await;
}
