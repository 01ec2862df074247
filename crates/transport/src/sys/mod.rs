//! Platform code: Unix sockets on Unix, named pipes on Windows. Nothing else in the crate
//! uses `cfg(unix)` or `cfg(windows)`.
//!
//! Each `imp` provides the same items: `LocalStream`, `LocalListener` (`bind`, `accept`),
//! `connect_local`, `LOCAL_HALF_CLOSE`, `owner_note`, `current_user_id`,
//! `raise_open_files_limit` and `restore_open_files_limit`.

#[cfg(unix)]
#[path = "unix.rs"]
mod imp;

#[cfg(windows)]
#[path = "windows.rs"]
mod imp;

pub(crate) use imp::*;
