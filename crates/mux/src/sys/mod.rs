//! Platform code for helper processes: how they are started and how what is left of them
//! is killed. Nothing else in the crate uses `cfg(unix)` or `cfg(windows)`.
//!
//! Each `imp` provides `configure` (called on the helper's `Command` before spawning) and
//! `kill_tree` (kills whatever the helper left behind).

#[cfg(unix)]
#[path = "unix.rs"]
mod imp;

#[cfg(windows)]
#[path = "windows.rs"]
mod imp;

pub(crate) use imp::{configure, kill_tree};
