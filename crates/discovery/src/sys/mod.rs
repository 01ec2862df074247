//! Platform code: directory and file security, the default state directory, process
//! liveness. Nothing else in the crate uses `cfg(unix)` or `cfg(windows)`.
//!
//! Each `imp` provides the same items: `default_state_home`, `secure_dir`,
//! `create_private_file`, `open_lock_file`, `open_nofollow`, `sync_dir`,
//! `process_alive` and `path_security`.

#[cfg(unix)]
#[path = "unix.rs"]
mod imp;

#[cfg(windows)]
#[path = "windows.rs"]
mod imp;

pub(crate) use imp::*;

/// Whether a process exists, as far as this OS lets us tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Liveness {
    /// It exists (possibly owned by another user).
    Alive,
    /// No such process.
    Dead,
    /// The pid is not one a process can have (0, or out of range), or the check failed.
    Unknown,
}
