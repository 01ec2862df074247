//! Unix: a child's process tree is the process group it leads (it must have been started
//! in a group of its own: `Command::process_group(0)`, or `setsid`).

use std::io;

use rustix::process::{kill_process_group, test_kill_process_group, Pid, Signal};

/// The process group a child leads.
#[derive(Debug)]
pub(crate) struct Tree {
    group: Option<Pid>,
}

impl Tree {
    /// The group `child` leads.
    pub(crate) fn new(child: &tokio::process::Child) -> io::Result<Tree> {
        let group = child
            .id()
            .and_then(|pid| i32::try_from(pid).ok())
            .and_then(Pid::from_raw);
        Ok(Tree { group })
    }

    /// SIGKILLs every process left in the group. The group id stays reserved while any
    /// member is alive, so this never reaches another group (none left: `ESRCH`, ignored).
    pub(crate) fn kill(&self) {
        if let Some(group) = self.group {
            let _ = kill_process_group(group, Signal::KILL);
        }
    }

    /// Whether no process is left in the group.
    pub(crate) fn is_empty(&self) -> bool {
        self.group
            .is_none_or(|group| test_kill_process_group(group).is_err())
    }
}
