//! Platform code for helper processes: how they are started (their process tree is a
//! `pipegate_transport::ProcessTree`). Nothing else in the crate uses `cfg(unix)` or
//! `cfg(windows)`, or `unsafe`.
//!
//! Each `imp` provides `configure`, called on the helper's `Command` before spawning.

#[cfg(unix)]
#[path = "unix.rs"]
mod imp;

#[cfg(windows)]
#[path = "windows.rs"]
mod imp;

pub(crate) use imp::configure;
