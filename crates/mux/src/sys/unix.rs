//! Unix: the helper leads a process group of its own, so that everything it starts can be
//! killed with it, and so that a Ctrl-C in the terminal reaches only pipegate (which then
//! stops the helper itself).

use rustix::process::{kill_process_group, Pid, Signal};

/// Puts the helper in a new process group (its pid is the group id).
pub(crate) fn configure(cmd: &mut tokio::process::Command) {
    cmd.process_group(0);
}

/// SIGKILLs every process left in the group the helper `pid` leads. Called once the
/// helper itself has exited or been killed: the group id stays reserved while any member
/// is alive, so this reaches only the helper's own descendants (none left: `ESRCH`,
/// ignored).
pub(crate) fn kill_tree(pid: u32) {
    if let Some(pgid) = i32::try_from(pid).ok().and_then(Pid::from_raw) {
        let _ = kill_process_group(pgid, Signal::KILL);
    }
}
