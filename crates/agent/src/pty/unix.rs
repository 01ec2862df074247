//! Unix: pseudo-terminals with `pty-process`, termios and signals with `rustix`.
//!
//! The agent's `unsafe` code is here: `TIOCSIG`, which neither crate wraps, and the
//! reset between fork and exec (`libc`'s `sigaction`: rustix has none for programs).

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};

use rustix::process::{Pid, Signal as OsSignal};
use rustix::termios::{SpecialCodeIndex, Winsize};
use tokio::io::AsyncWriteExt;
use tokio::process::{Child, ChildStdin};

use super::{ControlError, Process, SpawnError, Spec};
use crate::protocol::{ExitInfo, Signal, TerminalSize};

/// The master side of a pseudo-terminal, for ioctls; `None` once the session closed it.
type Master = Arc<Mutex<Option<OwnedFd>>>;

fn lock(master: &Master) -> MutexGuard<'_, Option<OwnedFd>> {
    master
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Starts `spec` on a new pseudo-terminal, or on pipes in a new process group.
pub(crate) fn spawn(spec: Spec) -> Result<Process, SpawnError> {
    match spec.tty {
        Some(size) => spawn_pty(spec, size),
        None => spawn_pipes(spec),
    }
}

fn pty_error(e: pty_process::Error) -> io::Error {
    match e {
        pty_process::Error::Io(e) => e,
        pty_process::Error::Rustix(errno) => io::Error::from(errno),
        other => io::Error::other(other.to_string()),
    }
}

fn winsize(size: TerminalSize) -> Winsize {
    Winsize {
        ws_row: size.height.min(u32::from(u16::MAX)) as u16,
        ws_col: size.width.min(u32::from(u16::MAX)) as u16,
        ws_xpixel: 0,
        ws_ypixel: 0,
    }
}

fn spawn_pty(spec: Spec, size: TerminalSize) -> Result<Process, SpawnError> {
    let (pty, pts) = pty_process::open().map_err(pty_error)?;
    rustix::termios::tcsetwinsize(&pty, winsize(size)).map_err(io::Error::from)?;
    // pty-process makes the child a session leader (setsid) with the pts as its
    // controlling terminal (TIOCSCTTY), and closes our copy of the pts after the spawn,
    // so the master reads EIO once the last process on the terminal closes it.
    let child = pty_process::Command::new(&spec.program)
        .arg0(&spec.arg0)
        .args(&spec.args)
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&spec.cwd)
        // Only matters when the agent's runtime shuts down with the session running.
        .kill_on_drop(true);
    // SAFETY: `as_started` only makes async-signal-safe calls.
    #[allow(unsafe_code)]
    let child = unsafe { child.pre_exec(as_started) }
        .spawn(pts)
        .map_err(pty_error)?;
    let pid = child
        .id()
        .ok_or_else(|| io::Error::other("the child exited before its pid was read"))?;
    let master: Master = Arc::new(Mutex::new(Some(pty.as_fd().try_clone_to_owned()?)));
    let (reader, writer) = pty.into_split();
    Ok(Process {
        pid,
        child,
        stdout: Box::new(reader),
        stderr: None,
        stdin: Stdin::Pty {
            writer: Some(writer),
            master: Arc::clone(&master),
            last: b'\n',
        },
        control: Control::new(pid, Some(master)),
    })
}

fn spawn_pipes(spec: Spec) -> Result<Process, SpawnError> {
    let mut cmd = tokio::process::Command::new(&spec.program);
    cmd.arg0(&spec.arg0)
        .args(&spec.args)
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&spec.cwd)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    // A session of its own (so a process group of its own too: signals reach it and its
    // children but not the agent), without a controlling terminal: the terminal the
    // agent may run in is not the session's, and a program that opens /dev/tty (a
    // password prompt) must fail as it does under `ssh` without `-t`, not ask there.
    // SAFETY: `setsid` is a plain system call, and `as_started` only makes
    // async-signal-safe calls.
    #[allow(unsafe_code)]
    unsafe {
        cmd.pre_exec(|| {
            rustix::process::setsid()?;
            as_started()
        })
    };
    let mut child = cmd.spawn()?;
    let pid = child
        .id()
        .ok_or_else(|| io::Error::other("the child exited before its pid was read"))?;
    let (Some(stdin), Some(stdout), Some(stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return Err(io::Error::other("the child's pipes were not set up").into());
    };
    Ok(Process {
        pid,
        child,
        stdout: Box::new(stdout),
        stderr: Some(Box::new(stderr)),
        stdin: Stdin::Pipe(Some(stdin)),
        control: Control::new(pid, None),
    })
}

/// Waits for the program to exit. (On Unix, killing goes through [`Control`] signals.)
pub(crate) async fn wait(child: &mut Child, _control: &Control) -> io::Result<ExitStatus> {
    child.wait().await
}

/// The program's input.
#[derive(Debug)]
pub(crate) enum Stdin {
    /// The terminal: bytes are typed; end of input is the terminal's EOF character.
    Pty {
        writer: Option<pty_process::OwnedWritePty>,
        master: Master,
        /// The last byte written, to know whether a partial line is pending.
        last: u8,
    },
    /// A pipe: end of input closes it.
    Pipe(Option<ChildStdin>),
}

impl Stdin {
    /// Writes all of `data`.
    ///
    /// # Errors
    ///
    /// The program's end is closed (it exited), or input was already closed.
    pub(crate) async fn write(&mut self, data: &[u8]) -> io::Result<()> {
        match self {
            Stdin::Pty { writer, last, .. } => {
                let writer = writer.as_mut().ok_or_else(closed)?;
                writer.write_all(data).await?;
                if let Some(&byte) = data.last() {
                    *last = byte;
                }
                Ok(())
            }
            Stdin::Pipe(pipe) => pipe.as_mut().ok_or_else(closed)?.write_all(data).await,
        }
    }

    /// Ends the input: closes the pipe, or types the terminal's EOF character (`VEOF`,
    /// usually Ctrl-D), twice when a partial line is pending (the first only submits
    /// the line). A terminal cannot be half-closed, so a program that does not read
    /// its terminal in canonical mode sees the character as data.
    ///
    /// # Errors
    ///
    /// The terminal is gone.
    pub(crate) async fn close(&mut self) -> io::Result<()> {
        match self {
            Stdin::Pty {
                writer,
                master,
                last,
            } => {
                let veof = {
                    let guard = lock(master);
                    let fd = guard.as_ref().ok_or_else(closed)?;
                    let termios = rustix::termios::tcgetattr(fd)?;
                    termios.special_codes[SpecialCodeIndex::VEOF]
                };
                let writer = writer.as_mut().ok_or_else(closed)?;
                if *last != b'\n' && *last != veof {
                    writer.write_all(&[veof]).await?;
                }
                writer.write_all(&[veof]).await?;
                *last = veof;
                Ok(())
            }
            Stdin::Pipe(pipe) => {
                if let Some(mut pipe) = pipe.take() {
                    pipe.shutdown().await?;
                }
                Ok(())
            }
        }
    }

    /// Drops this side's handle on the terminal or pipe.
    pub(crate) fn release(&mut self) {
        match self {
            Stdin::Pty { writer, .. } => *writer = None,
            Stdin::Pipe(pipe) => *pipe = None,
        }
    }
}

fn closed() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "input is closed")
}

/// Resize and signals for one session.
#[derive(Debug)]
pub(crate) struct Control {
    pid: Pid,
    master: Option<Master>,
}

/// The process groups of a session, found once so a later SIGKILL hits the same ones.
#[derive(Debug, Default)]
pub(crate) struct Groups(BTreeSet<i32>);

impl Control {
    fn new(pid: u32, master: Option<Master>) -> Control {
        // A child's pid is positive and fits an i32 on every Unix.
        let pid = Pid::from_raw(pid as i32).unwrap_or(Pid::INIT);
        Control { pid, master }
    }

    /// Sets the terminal size (`TIOCSWINSZ`); the foreground job gets SIGWINCH when the
    /// size changes.
    ///
    /// # Errors
    ///
    /// [`ControlError::NoTerminal`] without a TTY, [`ControlError::Exited`] after the
    /// terminal was closed.
    pub(crate) fn resize(&self, size: TerminalSize) -> Result<(), ControlError> {
        let master = self.master.as_ref().ok_or(ControlError::NoTerminal)?;
        let guard = lock(master);
        let fd = guard.as_ref().ok_or(ControlError::Exited)?;
        rustix::termios::tcsetwinsize(fd, winsize(size)).map_err(io::Error::from)?;
        Ok(())
    }

    /// Delivers `signal` to what a user at the terminal would hit: the terminal's
    /// foreground process group (`TIOCSIG` for SIGINT/SIGQUIT/SIGTSTP where available,
    /// else `kill(-tcgetpgrp)`), or the program's process group without a TTY.
    ///
    /// # Errors
    ///
    /// [`ControlError::Exited`] after the session ended; the OS error otherwise.
    pub(crate) fn signal(&self, signal: Signal) -> Result<(), ControlError> {
        let os = os_signal(signal);
        let Some(master) = &self.master else {
            return rustix::process::kill_process_group(self.pid, os).map_err(|e| {
                if e == rustix::io::Errno::SRCH {
                    ControlError::Exited
                } else {
                    ControlError::Io(e.into())
                }
            });
        };
        let guard = lock(master);
        let fd = guard.as_ref().ok_or(ControlError::Exited)?;
        if matches!(signal, Signal::Int | Signal::Quit | Signal::Tstp) && tiocsig(fd, os).is_ok() {
            return Ok(());
        }
        let group = rustix::termios::tcgetpgrp(fd).unwrap_or(self.pid);
        match rustix::process::kill_process_group(group, os) {
            Err(rustix::io::Errno::SRCH) if group != self.pid => {
                rustix::process::kill_process_group(self.pid, os)
                    .map_err(|e| io::Error::from(e).into())
            }
            other => other.map_err(|e| io::Error::from(e).into()),
        }
    }

    /// Every process group of the session: the program's own, the terminal's
    /// foreground group and (on Linux) every group of the terminal's session.
    pub(crate) fn groups(&self) -> Groups {
        let mut groups = BTreeSet::new();
        groups.insert(self.pid.as_raw_pid());
        if let Some(master) = &self.master {
            if let Some(fd) = lock(master).as_ref() {
                if let Ok(group) = rustix::termios::tcgetpgrp(fd) {
                    groups.insert(group.as_raw_pid());
                }
            }
        }
        // The program leads a session of its own (sid = its pid), on a terminal or not.
        groups.extend(session_groups(self.pid.as_raw_pid()));
        Groups(groups)
    }

    /// Whether any of `groups` (the agent's own never counts) still has a process.
    pub(crate) fn any_alive(&self, groups: &Groups) -> bool {
        let own = rustix::process::getpgrp().as_raw_pid();
        groups
            .0
            .iter()
            .filter(|&&g| g > 1 && g != own)
            .filter_map(|&g| Pid::from_raw(g))
            // Signal 0 checks without delivering: ESRCH once the group is empty.
            .any(|pid| rustix::process::test_kill_process_group(pid).is_ok())
    }

    /// Sends `signal` to each of `groups` (best effort: groups may be gone already).
    pub(crate) fn signal_groups(&self, groups: &Groups, signal: Signal) {
        let os = os_signal(signal);
        // Never the agent's own group, whatever a session's process did with setpgid.
        let own = rustix::process::getpgrp().as_raw_pid();
        for &group in groups.0.iter().filter(|&&g| g > 1 && g != own) {
            if let Some(pid) = Pid::from_raw(group) {
                let _ = rustix::process::kill_process_group(pid, os);
            }
        }
    }

    /// Closes the agent's handle on the terminal: once the readers and the writer are
    /// gone too, processes still on it get the hangup a closed terminal gives.
    pub(crate) fn close_terminal(&self) {
        if let Some(master) = &self.master {
            lock(master).take();
        }
    }
}

/// In the child, between fork and exec: the state a program started at a terminal
/// has. Every signal at its default action, and the open-files limit pipegate started
/// with (a server raises its own; see `pipegate_transport::raise_open_files_limit`).
///
/// Handlers end at exec, but ignoring is inherited: `nohup pipegate serve` ignores SIGHUP,
/// and `pipegate serve &` in a script ignores SIGINT and SIGQUIT. A session's program
/// that inherited that could not be interrupted from its terminal, nor ended by the
/// SIGHUP the agent sends first. (The signal mask is already cleared by std.)
#[allow(unsafe_code)]
fn as_started() -> io::Result<()> {
    // Best effort: lowering a soft limit is always allowed.
    let _ = pipegate_transport::restore_open_files_limit();
    // SAFETY: `sigaction` is async-signal-safe (POSIX), and so is `sigemptyset` on a
    // local set; the struct is plain data, zeroed then filled in. Numbers that are not
    // signals, or cannot be changed (SIGKILL, SIGSTOP, the C library's own), fail with
    // EINVAL and are skipped.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = libc::SIG_DFL;
        libc::sigemptyset(&mut action.sa_mask);
        for signal in 1..SIGNAL_LIMIT {
            libc::sigaction(signal, &action, std::ptr::null_mut());
        }
    }
    Ok(())
}

/// One more than the highest signal number (Linux's `_NSIG` is 65; other systems have
/// fewer, and `sigaction` refuses the numbers past theirs).
const SIGNAL_LIMIT: std::ffi::c_int = 65;

/// `TIOCSIG`: the kernel signals the terminal's foreground process group, as if the key
/// had been typed, even when the input queue is full or the program turned ISIG off.
#[cfg(any(target_os = "linux", target_os = "android"))]
#[allow(unsafe_code)]
fn tiocsig(fd: &OwnedFd, signal: OsSignal) -> io::Result<()> {
    use rustix::ioctl::{ioctl, opcode, IntegerSetter, Opcode};
    // include/uapi/asm-generic/ioctls.h: #define TIOCSIG _IOW('T', 0x36, int); rustix
    // computes the per-architecture encoding of _IOW.
    const TIOCSIG: Opcode = opcode::write::<std::ffi::c_int>(b'T', 0x36);
    let signo = usize::try_from(signal.as_raw()).map_err(|_| io::ErrorKind::InvalidInput)?;
    // SAFETY: TIOCSIG takes its argument as an integer by value (the signal number, a
    // small positive int), not as a pointer, so nothing is read or written through it;
    // `fd` is a valid open descriptor for the duration of the call.
    let op = unsafe { IntegerSetter::<TIOCSIG>::new_usize(signo) };
    // SAFETY: as above: the opcode and argument match the kernel's definition.
    unsafe { ioctl(fd, op) }.map_err(io::Error::from)
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn tiocsig(_fd: &OwnedFd, _signal: OsSignal) -> io::Result<()> {
    Err(io::ErrorKind::Unsupported.into())
}

/// The process groups of the session's processes, from `/proc/*/stat` (Linux only;
/// elsewhere empty): every process in session `leader` (the program leads one, so its
/// own group is in it too), and every descendant of `leader` wherever it went.
fn session_groups(leader: i32) -> Vec<i32> {
    if !cfg!(any(target_os = "linux", target_os = "android")) {
        return Vec::new();
    }
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    // (pid, ppid, pgrp, session) of every process.
    let mut procs: Vec<(i32, i32, i32, i32)> = Vec::new();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid pgrp session …; comm may contain spaces and parens.
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            continue;
        };
        let fields: Vec<i32> = rest
            .split_whitespace()
            .skip(1)
            .take(3)
            .filter_map(|f| f.parse().ok())
            .collect();
        if let [ppid, pgrp, session] = fields[..] {
            procs.push((pid, ppid, pgrp, session));
        }
    }
    let mut members: BTreeSet<i32> = BTreeSet::from([leader]);
    // Descendants: grow the set until no process has a parent in it.
    loop {
        let before = members.len();
        for &(pid, ppid, _, _) in &procs {
            if members.contains(&ppid) {
                members.insert(pid);
            }
        }
        if members.len() == before {
            break;
        }
    }
    procs
        .iter()
        .filter(|&&(pid, _, _, session)| members.contains(&pid) || session == leader)
        .map(|&(_, _, pgrp, _)| pgrp)
        .collect()
}

fn os_signal(signal: Signal) -> OsSignal {
    match signal {
        Signal::Int => OsSignal::INT,
        Signal::Quit => OsSignal::QUIT,
        Signal::Tstp => OsSignal::TSTP,
        Signal::Cont => OsSignal::CONT,
        Signal::Hup => OsSignal::HUP,
        Signal::Term => OsSignal::TERM,
        Signal::Kill => OsSignal::KILL,
        Signal::Usr1 => OsSignal::USR1,
        Signal::Usr2 => OsSignal::USR2,
        Signal::Winch => OsSignal::WINCH,
    }
}

/// Names for the signal numbers of this platform (numbers differ between architectures).
const SIGNAL_NAMES: &[(OsSignal, &str)] = &[
    (OsSignal::HUP, "SIGHUP"),
    (OsSignal::INT, "SIGINT"),
    (OsSignal::QUIT, "SIGQUIT"),
    (OsSignal::ILL, "SIGILL"),
    (OsSignal::TRAP, "SIGTRAP"),
    (OsSignal::ABORT, "SIGABRT"),
    (OsSignal::BUS, "SIGBUS"),
    (OsSignal::FPE, "SIGFPE"),
    (OsSignal::KILL, "SIGKILL"),
    (OsSignal::USR1, "SIGUSR1"),
    (OsSignal::SEGV, "SIGSEGV"),
    (OsSignal::USR2, "SIGUSR2"),
    (OsSignal::PIPE, "SIGPIPE"),
    (OsSignal::ALARM, "SIGALRM"),
    (OsSignal::TERM, "SIGTERM"),
    (OsSignal::CHILD, "SIGCHLD"),
    (OsSignal::CONT, "SIGCONT"),
    (OsSignal::STOP, "SIGSTOP"),
    (OsSignal::TSTP, "SIGTSTP"),
    (OsSignal::TTIN, "SIGTTIN"),
    (OsSignal::TTOU, "SIGTTOU"),
    (OsSignal::URG, "SIGURG"),
    (OsSignal::XCPU, "SIGXCPU"),
    (OsSignal::XFSZ, "SIGXFSZ"),
    (OsSignal::VTALARM, "SIGVTALRM"),
    (OsSignal::PROF, "SIGPROF"),
    (OsSignal::WINCH, "SIGWINCH"),
    (OsSignal::IO, "SIGIO"),
    (OsSignal::SYS, "SIGSYS"),
];

/// How the program ended; a death by signal keeps the signal (code 128 + its number).
pub(crate) fn exit_info(status: ExitStatus) -> ExitInfo {
    if let Some(number) = status.signal() {
        let name = SIGNAL_NAMES
            .iter()
            .find(|(s, _)| s.as_raw() == number)
            .map(|(_, name)| (*name).to_owned())
            .unwrap_or_else(|| format!("SIG{number}"));
        return ExitInfo {
            code: u8::try_from(128 + number).unwrap_or(u8::MAX),
            signal: Some(name),
        };
    }
    ExitInfo {
        code: status
            .code()
            .and_then(|c| u8::try_from(c).ok())
            .unwrap_or(u8::MAX),
        signal: None,
    }
}

/// Looks `name` up in the directories of `path` (absolute entries only), as `execvp`
/// would, and returns the first executable regular file.
pub(crate) fn find_program(name: &str, path: Option<&OsStr>) -> Option<PathBuf> {
    let path = path?;
    std::env::split_paths(path)
        .filter(|dir| dir.is_absolute())
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// The agent user's login shell and the `argv[0]` that makes it one (`-bash`).
pub(crate) fn login_shell() -> (PathBuf, String) {
    let shell = std::env::var_os("SHELL")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute() && is_executable(p))
        .or_else(|| {
            passwd_field(6)
                .map(PathBuf::from)
                .filter(|p| is_executable(p))
        })
        .unwrap_or_else(|| PathBuf::from("/bin/sh"));
    let base = shell
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "sh".to_owned());
    (shell, format!("-{base}"))
}

/// The agent user's home directory: `$HOME`, else the password database.
pub(crate) fn home_dir() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| passwd_field(5).map(PathBuf::from))
        .filter(|p| p.is_dir())
}

/// Field `index` (0-based: 5 home, 6 shell) of this user's `/etc/passwd` line.
fn passwd_field(index: usize) -> Option<String> {
    let uid = rustix::process::getuid().as_raw().to_string();
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd
        .lines()
        .map(|line| line.split(':').collect::<Vec<_>>())
        .find(|fields| fields.get(2) == Some(&uid.as_str()))
        .and_then(|fields| fields.get(index).map(|f| (*f).to_owned()))
        .filter(|f| !f.is_empty())
}
