//! Unix: the helper leads a session (and so a process group) of its own, with no
//! controlling terminal: everything it starts can be killed with it
//! (`pipegate_transport::ProcessTree`), a Ctrl-C in the terminal reaches only pipegate
//! (which then stops the helper itself), and a helper that wants to ask something on a
//! terminal (`ssh` for a password) fails at once, saying so on its stderr, instead of
//! being stopped (SIGTTIN) as a background group of the terminal `serve` runs in.

/// Makes the helper a session leader (`setsid`; its pid is the group id), with the
/// open-files limit pipegate started with (a server raises its own).
#[allow(unsafe_code)]
pub(crate) fn configure(cmd: &mut tokio::process::Command) {
    // SAFETY: `setsid` is a plain system call, and `restore_open_files_limit` is
    // async-signal-safe (an atomic load and two system calls). Best effort for the
    // latter: lowering a soft limit is always allowed.
    unsafe {
        cmd.pre_exec(|| {
            rustix::process::setsid()?;
            let _ = pipegate_transport::restore_open_files_limit();
            Ok(())
        })
    };
}
