//! `pipegate doctor`: what is listening where (records plus live probes), permissions of
//! the records directory and the sockets, stale records, `XDG_RUNTIME_DIR` problems and
//! bridge upstreams — each finding with a fix. Exits 1 if any finding is an error.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use pipegate_discovery::{
    check_health_with_token, inspect, path_security, InstanceMode, Record, Registry, State,
    DEFAULT_NAME,
};
use pipegate_transport::{connect, ConnectOptions, Endpoint};

use crate::cli::DoctorArgs;
use crate::sys;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Level {
    Ok,
    Warn,
    Error,
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `pad`, not `write_str`, so `{:<5}` aligns the column.
        f.pad(match self {
            Level::Ok => "ok",
            Level::Warn => "warn",
            Level::Error => "error",
        })
    }
}

/// One line of the report, with what to do about it.
struct Finding {
    level: Level,
    what: String,
    fix: Option<String>,
}

#[derive(Default)]
struct Report(Vec<Finding>);

impl Report {
    fn ok(&mut self, what: impl Into<String>) {
        self.push(Level::Ok, what.into(), None);
    }

    fn warn(&mut self, what: impl Into<String>, fix: impl Into<String>) {
        self.push(Level::Warn, what.into(), Some(fix.into()));
    }

    fn error(&mut self, what: impl Into<String>, fix: impl Into<String>) {
        self.push(Level::Error, what.into(), Some(fix.into()));
    }

    fn push(&mut self, level: Level, what: String, fix: Option<String>) {
        self.0.push(Finding { level, what, fix });
    }
}

pub(crate) async fn run(args: DoctorArgs) -> anyhow::Result<ExitCode> {
    let mut report = Report::default();
    let registry = match Registry::from_env() {
        Ok(registry) => Some(registry),
        Err(e) => {
            report.error(
                format!("no discovery directory: {e}"),
                "set XDG_STATE_HOME to an absolute path (or HOME / LOCALAPPDATA)",
            );
            None
        }
    };
    let mut default_recorded = false;
    if let Some(registry) = &registry {
        check_records_dir(&mut report, registry.dir());
        default_recorded = check_records(&mut report, registry, args.timeout).await;
    }
    check_runtime_dir(&mut report);
    if !default_recorded {
        check_default_endpoint(&mut report, args.timeout).await;
    }
    crate::report::stdout_written(print(&mut std::io::stdout().lock(), &report))?;
    Ok(if report.0.iter().any(|f| f.level == Level::Error) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn print(out: &mut impl std::io::Write, report: &Report) -> std::io::Result<()> {
    writeln!(out, "pipegate doctor")?;
    for finding in &report.0 {
        writeln!(out, "  {:<5}  {}", finding.level, finding.what)?;
        if let Some(fix) = &finding.fix {
            writeln!(out, "         fix: {fix}")?;
        }
    }
    let count = |level| report.0.iter().filter(|f| f.level == level).count();
    writeln!(
        out,
        "{} ok, {} warnings, {} errors",
        count(Level::Ok),
        count(Level::Warn),
        count(Level::Error)
    )
}

fn check_records_dir(report: &mut Report, dir: &Path) {
    match path_security(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => report.ok(format!(
            "records directory {} does not exist yet (the first `pipegate serve` creates it)",
            dir.display()
        )),
        Err(e) => report.error(
            format!(
                "cannot inspect the records directory {}: {e}",
                dir.display()
            ),
            "check that you own the state directory and can read it",
        ),
        Ok(s) if !s.owned_by_me => report.error(
            format!(
                "records directory {} belongs to someone else ({})",
                dir.display(),
                s.description
            ),
            format!(
                "remove {} (pipegate recreates it) or restore its ownership",
                dir.display()
            ),
        ),
        Ok(s) if !s.private => report.warn(
            format!(
                "records directory {} is open to other users ({})",
                dir.display(),
                s.description
            ),
            if s.mode.is_some() {
                format!(
                    "chmod 700 {} (the next `pipegate serve` also tightens it)",
                    dir.display()
                )
            } else {
                "the next `pipegate serve` restores its protected DACL (your user and SYSTEM \
                 only); under Wine, file DACLs are not stored at all"
                    .to_owned()
            },
        ),
        Ok(s) => report.ok(format!(
            "records directory {} ({})",
            dir.display(),
            s.description
        )),
    }
}

/// Reports every record; returns whether one names the default instance.
async fn check_records(report: &mut Report, registry: &Registry, timeout: Duration) -> bool {
    let entries = match registry.list() {
        Ok(entries) => entries,
        Err(e) => {
            report.error(
                format!("cannot list the instance records: {e}"),
                format!("check the permissions of {}", registry.dir().display()),
            );
            return false;
        }
    };
    if entries.is_empty() {
        report.ok("no instance records (nothing started with discovery is running)");
    }
    let mut default_recorded = false;
    for entry in entries {
        default_recorded |= entry.name == DEFAULT_NAME;
        let record = match entry.record {
            Ok(record) => record,
            Err(e) => {
                report.error(
                    format!("unreadable record {}: {e}", entry.path.display()),
                    format!(
                        "remove {} (or start `pipegate serve --name {} --replace`)",
                        entry.path.display(),
                        entry.name
                    ),
                );
                continue;
            }
        };
        let status = inspect(&record, timeout).await;
        let why = status
            .reason
            .map(|e| format!("{:#}", anyhow::Error::new(e)))
            .unwrap_or_default();
        match status.state {
            State::Running => {
                report.ok(format!(
                    "{:?} is running: PID {}, mode {}, at {}",
                    entry.name, record.pid, record.mode, record.url
                ));
                check_listeners(report, &entry.name, &record, timeout).await;
                if let Some(upstream) = &record.upstream {
                    check_upstream(report, &entry.name, upstream, timeout).await;
                }
            }
            State::Unhealthy => report.warn(
                format!(
                    "{:?} is alive (PID {}) but fails its health check at {}: {why}",
                    entry.name, record.pid, record.url
                ),
                format!(
                    "stop PID {} and restart it, or take the name over with \
                     `pipegate serve --name {} --replace`",
                    record.pid, entry.name
                ),
            ),
            State::Stale | State::NotFound => report.warn(
                format!(
                    "{:?} has a stale record: PID {} is gone ({} no longer answers)",
                    entry.name, record.pid, record.url
                ),
                "`pipegate status --prune` removes stale records (a new `pipegate serve` \
                 also takes the name over)",
            ),
        }
    }
    default_recorded
}

/// Probes every listener of a running instance; checks socket files' owners and modes.
async fn check_listeners(report: &mut Report, name: &str, record: &Record, timeout: Duration) {
    for listener in &record.listeners {
        let probe = if record.mode == InstanceMode::Raw {
            connect(listener, &ConnectOptions::new().timeout(timeout))
                .await
                .map(drop)
                .map_err(|e| e.to_string())
        } else {
            check_health_with_token(listener, &record.nonce, record.token(), timeout)
                .await
                .map_err(|e| format!("{:#}", anyhow::Error::new(e)))
        };
        match probe {
            Ok(()) => report.ok(format!("{name:?} answers on {listener}")),
            Err(e) => report.warn(
                format!("{name:?} does not answer on its listener {listener}: {e}"),
                "restart the instance; check for a firewall or another process on that endpoint",
            ),
        }
        if let Some(path) = listener.unix_path() {
            check_socket_file(report, path);
        }
    }
}

fn check_socket_file(report: &mut Report, path: &Path) {
    match path_security(path) {
        Err(e) => report.warn(
            format!("cannot inspect the socket file {}: {e}", path.display()),
            "restart the instance so it recreates its socket",
        ),
        Ok(s) if !s.owned_by_me => report.warn(
            format!(
                "socket {} belongs to someone else ({})",
                path.display(),
                s.description
            ),
            "run pipegate as the user who should own the socket",
        ),
        Ok(s) if !s.private => report.warn(
            format!(
                "socket {} is open to other users ({})",
                path.display(),
                s.description
            ),
            format!(
                "chmod 600 {} (pipegate creates sockets 0600)",
                path.display()
            ),
        ),
        Ok(s) => report.ok(format!("socket {} ({})", path.display(), s.description)),
    }
    if let Some(dir) = path.parent() {
        if let Ok(s) = path_security(dir) {
            if !s.owned_by_me || s.mode.is_some_and(|m| m & 0o022 != 0) {
                report.warn(
                    format!(
                        "the socket's directory {} can be changed by others ({})",
                        dir.display(),
                        s.description
                    ),
                    format!(
                        "chmod 700 {} or use $XDG_RUNTIME_DIR for sockets",
                        dir.display()
                    ),
                );
            }
        }
    }
}

async fn check_upstream(report: &mut Report, name: &str, upstream: &Endpoint, timeout: Duration) {
    match connect(upstream, &ConnectOptions::new().timeout(timeout)).await {
        Ok(_) => report.ok(format!(
            "{name:?}'s upstream {upstream} accepts connections"
        )),
        Err(e) => report.warn(
            format!("{name:?}'s upstream {upstream} is unreachable: {e}"),
            format!(
                "start the service behind {upstream}, or restart `pipegate serve --name {name}` \
                 with the right --upstream"
            ),
        ),
    }
}

/// Where the default socket goes depends on `XDG_RUNTIME_DIR` (Unix defaults only).
fn check_runtime_dir(report: &mut Report) {
    let default = sys::default_endpoint(DEFAULT_NAME);
    let Some(default_path) = default.unix_path() else {
        return;
    };
    let fix_unset = "log in through a session that sets it (systemd-logind/pam_systemd does), \
                     or export XDG_RUNTIME_DIR=/run/user/$(id -u) if that directory exists";
    match std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from) {
        None => report.warn(
            format!(
                "XDG_RUNTIME_DIR is not set, so the default socket is {} (under the state \
                 directory, which survives reboots and may be on a network home)",
                default_path.display()
            ),
            fix_unset,
        ),
        Some(dir) if !dir.is_absolute() => report.warn(
            format!(
                "XDG_RUNTIME_DIR={} is not an absolute path and is ignored; the default socket \
                 is {}",
                dir.display(),
                default_path.display()
            ),
            fix_unset,
        ),
        Some(dir) => match path_security(&dir) {
            Err(e) => report.error(
                format!("XDG_RUNTIME_DIR={} cannot be used: {e}", dir.display()),
                "unset it, or point it at your own 0700 runtime directory (/run/user/UID)",
            ),
            Ok(s) if !s.owned_by_me => report.error(
                format!(
                    "XDG_RUNTIME_DIR={} belongs to someone else ({}); pipegate refuses to put \
                     sockets there",
                    dir.display(),
                    s.description
                ),
                "point XDG_RUNTIME_DIR at your own runtime directory (/run/user/UID)",
            ),
            Ok(s) if !s.private => report.warn(
                format!(
                    "XDG_RUNTIME_DIR={} is open to other users ({})",
                    dir.display(),
                    s.description
                ),
                format!("chmod 700 {} (the XDG spec requires it)", dir.display()),
            ),
            Ok(s) => report.ok(format!(
                "XDG_RUNTIME_DIR={} ({}); default socket {}",
                dir.display(),
                s.description,
                default_path.display()
            )),
        },
    }
}

/// Something at the default endpoint without a record: a `--no-discovery` instance,
/// another program, or a leftover socket file.
async fn check_default_endpoint(report: &mut Report, timeout: Duration) {
    let default = sys::default_endpoint(DEFAULT_NAME);
    let live = connect(&default, &ConnectOptions::new().timeout(timeout))
        .await
        .is_ok();
    let leftover = default.unix_path().is_some_and(Path::exists);
    if live {
        report.warn(
            format!("something answers on the default endpoint {default} but has no record"),
            "if it is pipegate, it was started with --no-discovery; restart it without that \
             flag so `pipegate status` and `pipegate request` find it",
        );
    } else if leftover {
        report.warn(
            format!("{default} is a socket file nothing listens on (left by a crash?)"),
            "harmless: the next `pipegate serve` replaces it; or remove the file",
        );
    } else {
        report.ok(format!("the default endpoint {default} is free"));
    }
}
