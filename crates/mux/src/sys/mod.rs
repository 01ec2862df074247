//! Platform code for helper processes: how they are started and how their process tree
//! is killed. Nothing else in the crate uses `cfg(unix)` or `cfg(windows)`, or `unsafe`.
//!
//! Each `imp` provides `configure` (called on the helper's `Command` before spawning) and
//! `Tree`: made right after spawning (`Tree::new`), it holds on to the helper's process
//! tree; `Tree::kill` kills whatever is left of it.

#[cfg(unix)]
#[path = "unix.rs"]
mod imp;

#[cfg(windows)]
#[path = "windows.rs"]
mod imp;

pub(crate) use imp::{configure, Tree};
