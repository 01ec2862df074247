//! Windows: the helper gets no console window of its own (no pop-up when pipegate runs
//! without a console).
//!
//! Gap: processes the helper itself starts are not tracked (a Job object with
//! `JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE` would do it, but needs `unsafe` FFI that this
//! crate does not take on); the helper itself is killed, and a `pipegate mux` helper
//! starts nothing.

/// `CREATE_NO_WINDOW` from `winbase.h`.
const CREATE_NO_WINDOW: u32 = 0x0800_0000;

/// Starts the helper without a console window.
pub(crate) fn configure(cmd: &mut tokio::process::Command) {
    cmd.creation_flags(CREATE_NO_WINDOW);
}

/// Nothing beyond the helper itself to kill on Windows (see the module docs).
pub(crate) fn kill_tree(_pid: u32) {}
