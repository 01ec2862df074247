//! Shared machinery for the end-to-end tests: spawning the real `pipegate` binary,
//! reading its stderr, temp directories for sockets, echo upstreams, payloads.
//!
//! Every wait here is bounded; a process that misbehaves fails the test with its
//! captured stdout and stderr printed (they are dumped when a test panics while a
//! [`Proc`] is alive).

pub(crate) mod http1;
pub(crate) mod process;

use std::fmt::Write as _;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;

/// The binary under test, built by cargo for this test run.
pub(crate) const PIPEGATE: &str = env!("CARGO_BIN_EXE_pipegate");

/// The stable line `serve` prints once a listener is bound.
pub(crate) const LISTENING: &str = "pipegate: listening on ";

/// How long a native `pipegate` may take to start listening.
pub(crate) const STARTUP: Duration = Duration::from_secs(20);

/// Runs `fut`, failing the test if it takes longer than `limit`.
pub(crate) async fn within<T>(limit: Duration, what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(limit, fut).await {
        Ok(value) => value,
        Err(_) => panic!("timed out after {limit:?}: {what}"),
    }
}

/// Polls `check` every 50 ms until it returns `Ok`, failing after `limit` with `what` and
/// the last `Err` (a description of the state seen).
pub(crate) async fn eventually<T, Fut>(
    limit: Duration,
    what: &str,
    mut check: impl FnMut() -> Fut,
) -> T
where
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + limit;
    loop {
        match check().await {
            Ok(value) => return value,
            Err(state) if Instant::now() >= deadline => {
                panic!("timed out after {limit:?} waiting for {what}; last seen:\n{state}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// A private scratch directory for one test: under /tmp so socket paths stay far below
/// the ~107-byte limit, mode 0700 as pipegate requires of a socket's directory.
#[derive(Debug)]
pub(crate) struct TestEnv {
    dir: tempfile::TempDir,
}

impl TestEnv {
    pub(crate) fn new() -> TestEnv {
        let dir = tempfile::Builder::new()
            .prefix("pge2e-")
            .tempdir_in("/tmp")
            .expect("create a temp dir under /tmp");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))
            .expect("chmod 0700 the temp dir");
        TestEnv { dir }
    }

    /// A path inside the scratch directory.
    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `XDG_STATE_HOME` for this test's `pipegate` processes (discovery records go under
    /// it), so instances of different tests never meet.
    pub(crate) fn state_home(&self) -> PathBuf {
        self.path("state")
    }

    /// `XDG_RUNTIME_DIR` for this test's processes (default sockets), created 0700.
    pub(crate) fn runtime_dir(&self) -> PathBuf {
        let dir = self.path("run");
        if !dir.exists() {
            std::fs::create_dir(&dir).expect("create the runtime dir");
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
                .expect("chmod 0700 the runtime dir");
        }
        dir
    }

    /// `pipegate ARGS…` with discovery and the default socket inside this test's directory.
    pub(crate) fn pipegate(&self, args: &[&str]) -> Command {
        let mut cmd = pipegate(args);
        cmd.env("XDG_STATE_HOME", self.state_home())
            .env("XDG_RUNTIME_DIR", self.runtime_dir());
        cmd
    }

    /// [`serve`] with this test's discovery directory.
    pub(crate) async fn serve(&self, args: &[&str]) -> (Proc, String) {
        let mut full = vec!["serve"];
        full.extend_from_slice(args);
        let proc = Proc::spawn("pipegate serve", self.pipegate(&full), true);
        let endpoint = proc.wait_listening(STARTUP).await;
        (proc, endpoint)
    }

    /// A socket path inside the scratch directory, checked to be short enough to bind.
    pub(crate) fn sock(&self, name: &str) -> PathBuf {
        let path = self.path(name);
        assert!(
            path.as_os_str().len() < 100,
            "socket path too long: {}",
            path.display()
        );
        path
    }
}

/// Lines read from one of a child's output streams, kept for assertions and dumps.
#[derive(Debug, Default)]
pub(crate) struct Lines {
    lines: Mutex<Vec<String>>,
    eof: Mutex<bool>,
}

impl Lines {
    fn collect(reader: impl AsyncRead + Unpin + Send + 'static) -> Arc<Lines> {
        let lines = Arc::new(Lines::default());
        let sink = Arc::clone(&lines);
        tokio::spawn(async move {
            let mut reader = BufReader::new(reader);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match reader.read_until(b'\n', &mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let line = String::from_utf8_lossy(&buf)
                            .trim_end_matches(['\r', '\n'])
                            .to_owned();
                        sink.lines.lock().expect("lines lock").push(line);
                    }
                }
            }
            *sink.eof.lock().expect("eof lock") = true;
        });
        lines
    }

    pub(crate) fn snapshot(&self) -> Vec<String> {
        self.lines.lock().expect("lines lock").clone()
    }

    fn is_eof(&self) -> bool {
        *self.eof.lock().expect("eof lock")
    }

    fn find(&self, pred: &dyn Fn(&str) -> bool) -> Option<String> {
        self.lines
            .lock()
            .expect("lines lock")
            .iter()
            .find(|l| pred(l))
            .cloned()
    }
}

/// A spawned child process with its stderr (and optionally stdout) captured line by line.
/// Killed when dropped; if the test is panicking, its output is printed first.
#[derive(Debug)]
pub(crate) struct Proc {
    label: String,
    pub(crate) child: Child,
    stderr: Arc<Lines>,
    stdout: Option<Arc<Lines>>,
}

impl Proc {
    /// Spawns `cmd` with stderr captured. stdout is captured too when `capture_stdout`;
    /// otherwise the caller's own stdio settings on `cmd` stand (take `child.stdout`).
    pub(crate) fn spawn(label: &str, mut cmd: Command, capture_stdout: bool) -> Proc {
        cmd.stderr(Stdio::piped()).kill_on_drop(true);
        if capture_stdout {
            cmd.stdout(Stdio::piped());
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {label}: {e}"));
        let stderr = Lines::collect(child.stderr.take().expect("stderr piped"));
        let stdout = if capture_stdout {
            Some(Lines::collect(child.stdout.take().expect("stdout piped")))
        } else {
            None
        };
        Proc {
            label: label.to_owned(),
            child,
            stderr,
            stdout,
        }
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id().expect("the child is still running")
    }

    pub(crate) fn stderr_lines(&self) -> Vec<String> {
        self.stderr.snapshot()
    }

    pub(crate) fn stderr_text(&self) -> String {
        self.stderr_lines().join("\n")
    }

    /// Everything captured so far, for failure messages.
    pub(crate) fn dump(&self) -> String {
        let mut out = format!("----- {} stderr -----\n", self.label);
        for line in self.stderr.snapshot() {
            let _ = writeln!(out, "{line}");
        }
        if let Some(stdout) = &self.stdout {
            let _ = writeln!(out, "----- {} stdout -----", self.label);
            for line in stdout.snapshot() {
                let _ = writeln!(out, "{line}");
            }
        }
        let _ = writeln!(out, "----- end of {} -----", self.label);
        out
    }

    /// Waits for a stderr line matching `pred`; fails with a dump after `limit`, or
    /// as soon as stderr ends without one.
    pub(crate) async fn wait_stderr(
        &self,
        limit: Duration,
        what: &str,
        pred: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(line) = self.stderr.find(&pred) {
                return line;
            }
            if self.stderr.is_eof() {
                // Give the reader a moment: the line may have raced the EOF flag.
                if let Some(line) = self.stderr.find(&pred) {
                    return line;
                }
                panic!(
                    "{} ended its stderr without {what}\n{}",
                    self.label,
                    self.dump()
                );
            }
            if Instant::now() >= deadline {
                panic!(
                    "timed out after {limit:?} waiting for {what}\n{}",
                    self.dump()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits for `pipegate: listening on EP` and returns EP.
    pub(crate) async fn wait_listening(&self, limit: Duration) -> String {
        let line = self
            .wait_stderr(limit, "the 'listening on' line", |l| {
                l.starts_with(LISTENING)
            })
            .await;
        line[LISTENING.len()..].trim().to_owned()
    }

    /// Waits for the process to exit; fails with a dump after `limit`.
    pub(crate) async fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        match tokio::time::timeout(limit, self.child.wait()).await {
            Ok(Ok(status)) => {
                // Let the readers drain what the process wrote last.
                let settle = Instant::now() + Duration::from_secs(2);
                while !self.stderr.is_eof() && Instant::now() < settle {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                status
            }
            Ok(Err(e)) => panic!("waiting for {} failed: {e}\n{}", self.label, self.dump()),
            Err(_) => panic!(
                "{} did not exit within {limit:?}\n{}",
                self.label,
                self.dump()
            ),
        }
    }

    /// Sends a signal by name (`TERM`, `INT`) with kill(1).
    pub(crate) fn signal(&self, name: &str) {
        let status = std::process::Command::new("kill")
            .arg("-s")
            .arg(name)
            .arg(self.pid().to_string())
            .status()
            .expect("run kill(1)");
        assert!(status.success(), "kill -s {name} failed");
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.dump());
        }
        let _ = self.child.start_kill();
    }
}

/// `pipegate ARGS…` with a clean logging environment and no stdin, and discovery records
/// in a directory of its own (so the single-instance guard never sees another test's
/// `serve`; [`TestEnv::pipegate`] shares one directory among a test's processes).
pub(crate) fn pipegate(args: &[&str]) -> Command {
    let mut cmd = Command::new(PIPEGATE);
    cmd.args(args)
        .env_remove("PIPEGATE_LOG")
        .env_remove("PIPEGATE_LOG_FORMAT")
        .env("NO_COLOR", "1")
        .env("XDG_STATE_HOME", private_state_home())
        .stdin(Stdio::null());
    cmd
}

/// `cmd` run through `sh` after `setup` (shell commands whose effect exec keeps, such
/// as `trap '' HUP`, the way `nohup` starts a program, or `ulimit -S -n 512`).
pub(crate) fn after_shell(setup: &str, cmd: &Command) -> Command {
    let inner = cmd.as_std();
    let mut outer = Command::new("sh");
    outer
        .arg("-c")
        .arg(format!("{setup}; exec \"$0\" \"$@\""))
        .arg(inner.get_program())
        .args(inner.get_args());
    with_environment_of(outer, inner)
}

/// `cmd` run on a new pseudo-terminal that is its controlling terminal, as in a terminal
/// window: `script -qec CMD /dev/null` (util-linux). Its stdout and stderr both come out
/// of `script`'s stdout. Arguments must not contain `'`.
pub(crate) fn in_a_terminal(cmd: &Command) -> Command {
    let inner = cmd.as_std();
    let mut line = String::from("exec");
    for word in std::iter::once(inner.get_program()).chain(inner.get_args()) {
        let word = word.to_str().expect("UTF-8 argument");
        assert!(!word.contains('\''), "cannot quote {word:?}");
        line.push_str(&format!(" '{word}'"));
    }
    let mut outer = Command::new("script");
    outer.args(["-qec", &line, "/dev/null"]);
    with_environment_of(outer, inner)
}

/// `outer` with the environment changes of `inner` and no stdin.
fn with_environment_of(mut outer: Command, inner: &std::process::Command) -> Command {
    outer.stdin(Stdio::null());
    for (key, value) in inner.get_envs() {
        match value {
            Some(value) => outer.env(key, value),
            None => outer.env_remove(key),
        };
    }
    outer
}

/// A fresh state directory under cargo's per-target scratch space (left there for
/// post-mortems; `cargo clean` removes it).
fn private_state_home() -> PathBuf {
    static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "e2e-state/{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ))
}

/// Starts `pipegate serve ARGS…` and waits until it listens; returns it and the endpoint.
pub(crate) async fn serve(args: &[&str]) -> (Proc, String) {
    let mut full = vec!["serve"];
    full.extend_from_slice(args);
    let proc = Proc::spawn("pipegate serve", pipegate(&full), true);
    let endpoint = proc.wait_listening(STARTUP).await;
    (proc, endpoint)
}

/// Runs `pipegate ARGS…` to completion (bounded) and returns its exit status and stderr.
pub(crate) async fn run(args: &[&str], limit: Duration) -> (ExitStatus, String) {
    let mut proc = Proc::spawn("pipegate", pipegate(args), true);
    let status = proc.wait_exit(limit).await;
    let stderr = proc.stderr_text();
    (status, stderr)
}

/// Something to read from and write to, whatever the transport.
pub(crate) trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Dials an endpoint as `pipegate` prints it (`unix:///path` or `tcp://host:port`) with
/// plain tokio sockets, independent of the code under test.
pub(crate) async fn dial(endpoint: &str) -> Box<dyn Io> {
    if let Some(path) = endpoint.strip_prefix("unix://") {
        let stream = UnixStream::connect(path)
            .await
            .unwrap_or_else(|e| panic!("connect to {endpoint}: {e}"));
        Box::new(stream)
    } else if let Some(addr) = endpoint.strip_prefix("tcp://") {
        let stream = TcpStream::connect(addr)
            .await
            .unwrap_or_else(|e| panic!("connect to {endpoint}: {e}"));
        Box::new(stream)
    } else {
        panic!("cannot dial {endpoint:?} from a test")
    }
}

/// An in-test upstream server; its accept loop stops when dropped.
#[derive(Debug)]
pub(crate) struct Upstream {
    /// As pipegate spells it: `unix:///path` or `tcp://127.0.0.1:PORT`.
    pub(crate) endpoint: String,
    task: JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What an upstream does with each connection.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Behavior {
    /// Copy everything back; after the client's EOF, shut down the write side.
    Echo,
}

async fn handle<S: AsyncRead + AsyncWrite + Unpin>(stream: S, behavior: Behavior) {
    match behavior {
        Behavior::Echo => {
            let (mut reader, mut writer) = tokio::io::split(stream);
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match reader.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if writer.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                }
            }
            let _ = writer.shutdown().await;
        }
    }
}

/// A loopback TCP upstream on an OS-picked port.
pub(crate) async fn tcp_upstream(behavior: Behavior) -> Upstream {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind tcp");
    let addr: SocketAddr = listener.local_addr().expect("local addr");
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(handle(stream, behavior));
        }
    });
    Upstream {
        endpoint: format!("tcp://{addr}"),
        task,
    }
}

/// A Unix socket upstream at `path`.
pub(crate) fn unix_upstream(path: &Path, behavior: Behavior) -> Upstream {
    let listener = UnixListener::bind(path).expect("bind unix");
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(handle(stream, behavior));
        }
    });
    Upstream {
        endpoint: format!("unix://{}", path.display()),
        task,
    }
}

/// `len` pseudo-random bytes from `seed` (xorshift64*): distinct per seed, cheap to make.
pub(crate) fn payload(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        out.extend_from_slice(&state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

pub(crate) fn sha256(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Sends `data`, shuts down the write side, and reads until EOF, concurrently; returns
/// the SHA-256 of what came back and its length.
pub(crate) async fn echo_digest(stream: Box<dyn Io>, data: &[u8]) -> io::Result<(String, u64)> {
    let (mut reader, mut writer) = tokio::io::split(stream);
    let write = async {
        for chunk in data.chunks(256 * 1024) {
            writer.write_all(chunk).await?;
        }
        writer.shutdown().await
    };
    let read = async {
        let mut hasher = Sha256::new();
        let mut total = 0u64;
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = reader.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            total += n as u64;
        }
        Ok::<_, io::Error>((hex(&hasher.finalize()), total))
    };
    let (written, read) = tokio::join!(write, read);
    written?;
    read
}

/// Sends `data`, shuts down the write side, and returns everything read until EOF.
pub(crate) async fn echo_bytes(stream: Box<dyn Io>, data: &[u8]) -> io::Result<Vec<u8>> {
    let (mut reader, mut writer) = tokio::io::split(stream);
    let write = async {
        writer.write_all(data).await?;
        writer.shutdown().await
    };
    let read = async {
        let mut out = Vec::with_capacity(data.len());
        reader.read_to_end(&mut out).await?;
        Ok::<_, io::Error>(out)
    };
    let (written, read) = tokio::join!(write, read);
    written?;
    read
}
