//! Unix: the helper leads a process group of its own, so that everything it starts can be
//! killed with it (`pipegate_transport::ProcessTree`), and so that a Ctrl-C in the
//! terminal reaches only pipegate (which then stops the helper itself).

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
