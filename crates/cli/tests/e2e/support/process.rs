//! Real upstream processes the tests kill and restart (`py/upstream.py`), and what /proc
//! says about a process: liveness, children, open descriptors, threads, memory.

use std::path::Path;
use std::time::{Duration, Instant};

use tokio::process::Command;

use super::{Proc, STARTUP};

/// `tests/e2e/py/upstream.py`: an HTTP/1.1 upstream (hello, echo, slow streams, uploads,
/// a WebSocket-style echo after `101`) that reports what happens on its stderr.
pub(crate) const UPSTREAM_PY: &str =
    concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e/py/upstream.py");

/// The Python upstream, running. Killed when dropped.
#[derive(Debug)]
pub(crate) struct PyUpstream {
    /// The process, for its pid, events and dumps.
    pub(crate) proc: Proc,
    /// As pipegate spells it: `unix:///path` or `tcp://127.0.0.1:PORT`.
    pub(crate) endpoint: String,
    /// The address it was started with (`unix:PATH` or `tcp:HOST:PORT`), to restart it.
    address: String,
}

impl PyUpstream {
    /// Starts it on a Unix socket at `path` (a stale socket file there is replaced).
    pub(crate) async fn unix(path: &Path) -> PyUpstream {
        PyUpstream::start(format!("unix:{}", path.display())).await
    }

    /// Starts it on loopback TCP, on a port the OS picks.
    pub(crate) async fn tcp() -> PyUpstream {
        PyUpstream::start("tcp:127.0.0.1:0".to_owned()).await
    }

    async fn start(address: String) -> PyUpstream {
        let mut cmd = Command::new("python3");
        cmd.arg(UPSTREAM_PY)
            .arg(&address)
            .stdin(std::process::Stdio::null());
        let proc = Proc::spawn("upstream.py", cmd, true);
        let line = proc
            .wait_stderr(STARTUP, "the upstream's 'listening' line", |l| {
                l.starts_with("listening ")
            })
            .await;
        let bound = line["listening ".len()..].trim();
        let endpoint = match bound.split_once(':') {
            Some(("unix", path)) => format!("unix://{path}"),
            Some(("tcp", addr)) => format!("tcp://{addr}"),
            _ => panic!("unexpected line from upstream.py: {line}"),
        };
        // A restart on TCP keeps the port the first start got.
        let address = if address.starts_with("tcp:") {
            format!("tcp:{}", &endpoint["tcp://".len()..])
        } else {
            address
        };
        PyUpstream {
            proc,
            endpoint,
            address,
        }
    }

    /// SIGKILL, and waits until the process is gone: its sockets are closed by the kernel,
    /// mid-response or not. Nothing to do if it is gone already.
    pub(crate) async fn kill(&mut self) {
        if self.proc.child.id().is_none() {
            return;
        }
        self.proc.signal("KILL");
        self.proc.wait_exit(Duration::from_secs(10)).await;
    }

    /// Kills it (unless it is dead already) and starts a new one on the same address.
    pub(crate) async fn restart(&mut self) {
        self.kill().await;
        *self = PyUpstream::start(self.address.clone()).await;
    }

    /// Waits for an event line starting with `prefix` and returns it.
    pub(crate) async fn event(&self, prefix: &str) -> String {
        self.proc
            .wait_stderr(Duration::from_secs(30), prefix, |l| l.starts_with(prefix))
            .await
    }
}

/// Whether `pid` is a live process (a zombie nobody reaped yet counts as dead).
pub(crate) fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// Waits (bounded) until `pid` is dead.
pub(crate) async fn wait_dead(pid: u32, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while alive(pid) {
        assert!(
            Instant::now() < deadline,
            "{what} (pid {pid}) is still running"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The pid of every process, from /proc.
fn pids() -> impl Iterator<Item = u32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse().ok())
}

/// The fields of a `/proc/PID/stat` line after the command name (`state ppid pgrp
/// session tty_nr …`), and the command name.
pub(crate) fn stat_fields(stat: &str) -> Option<(&str, Vec<&str>)> {
    let (comm, rest) = stat.split_once(" (")?.1.rsplit_once(')')?;
    Some((comm, rest.split_whitespace().collect()))
}

/// A child of `parent` whose command name is `name`, from /proc.
pub(crate) fn child_named(parent: u32, name: &str) -> Option<u32> {
    pids().find(|pid| {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|stat| {
                let (comm, fields) = stat_fields(&stat)?;
                let ppid: u32 = fields.get(1)?.parse().ok()?;
                Some(ppid == parent && comm == name)
            })
            .unwrap_or(false)
    })
}

/// The pid of the live (not zombie) process whose argv is exactly `argv`, from /proc.
pub(crate) fn find_process(argv: &[&str]) -> Option<u32> {
    let want: Vec<u8> = argv
        .iter()
        .flat_map(|a| [a.as_bytes(), b"\0"].concat())
        .collect();
    // A zombie's cmdline is empty.
    pids().find(|pid| std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == want))
}

/// Field 5 of /proc/PID/stat: the process group.
pub(crate) fn process_group(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat_fields(&stat)?.1.get(2)?.parse().ok()
}

/// How many descriptors `pid` has open.
pub(crate) fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/fd: {e}"))
        .count()
}

/// The value on the line of `text` that starts with `key` (`/proc/PID/status` and
/// `/proc/PID/limits` style: `key`, an optional colon, the value), trimmed.
pub(crate) fn line_value<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines()
        .find_map(|line| line.strip_prefix(key))
        .map(|value| value.strip_prefix(':').unwrap_or(value).trim())
}

/// A `/proc/PID/status` field's number (`VmRSS` in KiB, `Threads`).
pub(crate) fn status_field(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/status: {e}"));
    line_value(&status, &format!("{field}:"))
        .and_then(|value| value.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// Raises this process's soft limit on open files towards `want` (bounded by the hard
/// limit; children inherit it) and returns the soft limit now in force.
pub(crate) fn raise_fd_limit(want: u64) -> u64 {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut limit = getrlimit(Resource::Nofile);
    let target = limit.maximum.map_or(want, |max| max.min(want));
    if limit.current.is_some_and(|cur| cur < target) {
        limit.current = Some(target);
        let _ = setrlimit(Resource::Nofile, limit);
    }
    getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX)
}

/// Processes whose command line contains `needle` (a Wine process shows its Windows
/// command line), by pid.
pub(crate) fn processes_with(needle: &str) -> Vec<u32> {
    pids()
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|raw| {
                String::from_utf8_lossy(&raw)
                    .replace('\0', " ")
                    .contains(needle)
            })
        })
        .collect()
}
