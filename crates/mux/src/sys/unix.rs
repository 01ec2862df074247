//! Unix: the helper leads a process group of its own, so that everything it starts can be
//! killed with it, and so that a Ctrl-C in the terminal reaches only pipegate (which then
//! stops the helper itself).

use std::io;

use rustix::process::{kill_process_group, Pid, Signal};

/// Puts the helper in a new process group (its pid is the group id), with the
/// open-files limit pipegate started with (a server raises its own).
#[allow(unsafe_code)]
pub(crate) fn configure(cmd: &mut tokio::process::Command) {
    cmd.process_group(0);
    // SAFETY: `restore_open_files_limit` is async-signal-safe (an atomic load and two
    // system calls). Best effort: lowering a soft limit is always allowed.
    unsafe {
        cmd.pre_exec(|| {
            let _ = pipegate_transport::restore_open_files_limit();
            Ok(())
        })
    };
}

/// The helper's process group.
#[derive(Debug)]
pub(crate) struct Tree {
    group: Option<Pid>,
}

impl Tree {
    /// The group `child` leads (see [`configure`]).
    pub(crate) fn new(child: &tokio::process::Child) -> io::Result<Tree> {
        let group = child
            .id()
            .and_then(|pid| i32::try_from(pid).ok())
            .and_then(Pid::from_raw);
        Ok(Tree { group })
    }

    /// SIGKILLs every process left in the group. Called once the helper itself has exited
    /// or been killed: the group id stays reserved while any member is alive, so this
    /// reaches only the helper's own descendants (none left: `ESRCH`, ignored).
    pub(crate) fn kill(&self) {
        if let Some(group) = self.group {
            let _ = kill_process_group(group, Signal::KILL);
        }
    }
}
