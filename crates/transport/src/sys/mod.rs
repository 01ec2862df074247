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

// A child's process tree (`crate::ProcessTree`): `Tree` with `new`, `kill`, `is_empty`.
#[cfg(unix)]
#[path = "unix_tree.rs"]
mod tree;

#[cfg(windows)]
#[path = "windows_tree.rs"]
mod tree;

pub(crate) use tree::Tree;
