//! Windows: the helper gets no console window of its own (no pop-up when pipegate runs
//! without a console). Its process tree is a Job object
//! (`pipegate_transport::ProcessTree`).

/// `CREATE_NO_WINDOW` from `winbase.h`.
const CREATE_NO_WINDOW: u32 = 0x0800_0000;

/// Starts the helper without a console window.
pub(crate) fn configure(cmd: &mut tokio::process::Command) {
    cmd.creation_flags(CREATE_NO_WINDOW);
}
