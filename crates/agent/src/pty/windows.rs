//! Windows: sessions without a terminal, on pipes. Terminal sessions need ConPTY, which
//! this build does not use yet: they are refused with a clear message (HTTP 501).
//!
//! The program gets a console of its own, without a window (it shares neither the
//! console `serve` may run in, with its Ctrl-C, nor pops one up), and its process tree is
//! a Job object: ending the session ends what the program started too.

use std::ffi::OsStr;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};

use pipegate_transport::ProcessTree;
use tokio::io::AsyncWriteExt;
use tokio::process::{Child, ChildStdin};
use tokio::sync::Notify;

use super::{ControlError, Process, SpawnError, Spec};
use crate::protocol::{ExitInfo, Signal, TerminalSize};

/// `CREATE_NO_WINDOW` from `winbase.h`: a console of its own, without a window.
const CREATE_NO_WINDOW: u32 = 0x0800_0000;

/// Starts `spec` on pipes; terminal sessions are unsupported.
pub(crate) fn spawn(spec: Spec) -> Result<Process, SpawnError> {
    if spec.tty.is_some() {
        return Err(SpawnError::Unsupported(
            "terminal sessions (\"tty\": true) need ConPTY, which pipegate does not support \
             on Windows yet; create the session with \"tty\": false",
        ));
    }
    // Windows has no separate argv[0]: the command line starts with the program.
    let _ = &spec.arg0;
    let mut cmd = tokio::process::Command::new(&spec.program);
    cmd.args(&spec.args)
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&spec.cwd)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .creation_flags(CREATE_NO_WINDOW)
        .kill_on_drop(true);
    let mut child = cmd.spawn()?;
    let pid = child
        .id()
        .ok_or_else(|| io::Error::other("the child exited before its pid was read"))?;
    let tree = match ProcessTree::new(&child) {
        Ok(tree) => Some(tree),
        Err(e) => {
            tracing::warn!(
                pid,
                error = %e,
                "cannot hold on to the session program's process tree: processes it starts \
                 may outlive the session"
            );
            None
        }
    };
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
        stdin: Stdin(Some(stdin)),
        control: Control {
            kill: Notify::new(),
            tree,
        },
    })
}

/// Waits for the program to exit, terminating it when [`Control`] asks to.
pub(crate) async fn wait(child: &mut Child, control: &Control) -> io::Result<ExitStatus> {
    tokio::select! {
        status = child.wait() => status,
        _ = control.kill.notified() => {
            let _ = child.start_kill();
            child.wait().await
        }
    }
}

/// The program's input pipe.
#[derive(Debug)]
pub(crate) struct Stdin(Option<ChildStdin>);

impl Stdin {
    /// Writes all of `data`.
    ///
    /// # Errors
    ///
    /// The pipe is closed.
    pub(crate) async fn write(&mut self, data: &[u8]) -> io::Result<()> {
        match &mut self.0 {
            Some(pipe) => pipe.write_all(data).await,
            None => Err(io::Error::new(io::ErrorKind::BrokenPipe, "input is closed")),
        }
    }

    /// Closes the pipe.
    ///
    /// # Errors
    ///
    /// Flushing failed.
    pub(crate) async fn close(&mut self) -> io::Result<()> {
        if let Some(mut pipe) = self.0.take() {
            pipe.shutdown().await?;
        }
        Ok(())
    }

    /// Drops the pipe.
    pub(crate) fn release(&mut self) {
        self.0 = None;
    }
}

/// Termination for one session (Windows has no signals to deliver).
#[derive(Debug)]
pub(crate) struct Control {
    /// Asks [`wait`] to terminate the program (when there is no tree to kill).
    kill: Notify,
    /// The program and what it started; `None` if the job could not be made.
    tree: Option<ProcessTree>,
}

/// Windows sessions have no process groups; termination applies to the program's tree.
#[derive(Debug, Default)]
pub(crate) struct Groups;

impl Control {
    /// Windows sessions have no terminal.
    ///
    /// # Errors
    ///
    /// Always [`ControlError::NoTerminal`].
    pub(crate) fn resize(&self, _size: TerminalSize) -> Result<(), ControlError> {
        Err(ControlError::NoTerminal)
    }

    /// SIGTERM and SIGKILL terminate the program; other signals are unsupported.
    ///
    /// # Errors
    ///
    /// [`ControlError::Unsupported`] for other signals.
    pub(crate) fn signal(&self, signal: Signal) -> Result<(), ControlError> {
        match signal {
            Signal::Term | Signal::Kill => {
                self.terminate();
                Ok(())
            }
            other => Err(ControlError::Unsupported(other)),
        }
    }

    /// Ends the program and everything in its tree.
    fn terminate(&self) {
        if let Some(tree) = &self.tree {
            tree.kill();
        }
        self.kill.notify_one();
    }

    /// The session's process groups (none on Windows).
    pub(crate) fn groups(&self) -> Groups {
        Groups
    }

    /// Whether the program's tree still has a process (what it started may outlive it).
    pub(crate) fn any_alive(&self, _groups: &Groups) -> bool {
        self.tree.as_ref().is_some_and(|tree| !tree.is_empty())
    }

    /// Terminates the program and its tree for SIGHUP, SIGTERM and SIGKILL.
    pub(crate) fn signal_groups(&self, _groups: &Groups, signal: Signal) {
        if matches!(signal, Signal::Hup | Signal::Term | Signal::Kill) {
            self.terminate();
        }
    }

    /// Nothing to close without a terminal.
    pub(crate) fn close_terminal(&self) {}
}

/// How the program ended (exit codes above 255 become 255).
pub(crate) fn exit_info(status: ExitStatus) -> ExitInfo {
    ExitInfo {
        code: status
            .code()
            .and_then(|c| u8::try_from(c).ok())
            .unwrap_or(u8::MAX),
        signal: None,
    }
}

/// Looks `name` up in `path`, trying each `PATHEXT` extension when it has none.
pub(crate) fn find_program(name: &str, path: Option<&OsStr>) -> Option<PathBuf> {
    let path = path?;
    let exts: Vec<String> = std::env::var("PATHEXT")
        .unwrap_or_else(|_| ".COM;.EXE;.BAT;.CMD".to_owned())
        .split(';')
        .filter(|e| !e.is_empty())
        .map(str::to_owned)
        .collect();
    let has_ext = Path::new(name).extension().is_some();
    for dir in std::env::split_paths(path).filter(|d| d.is_absolute()) {
        let base = dir.join(name);
        if has_ext && base.is_file() {
            return Some(base);
        }
        for ext in &exts {
            let candidate = dir.join(format!("{name}{ext}"));
            if candidate.is_file() {
                return Some(candidate);
            }
        }
    }
    None
}

/// `%COMSPEC%` (cmd.exe).
pub(crate) fn login_shell() -> (PathBuf, String) {
    let shell = std::env::var_os("COMSPEC")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(r"C:\Windows\System32\cmd.exe"));
    let base = shell
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "cmd.exe".to_owned());
    (shell, base)
}

/// `%USERPROFILE%`.
pub(crate) fn home_dir() -> Option<PathBuf> {
    std::env::var_os("USERPROFILE")
        .map(PathBuf::from)
        .filter(|p| p.is_dir())
}
