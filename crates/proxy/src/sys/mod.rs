//! Platform leaves: what the process holds open, for `/_pipegate/metrics`. Nothing else in
//! the crate uses `cfg(unix)` or `cfg(windows)`.

#[cfg(unix)]
#[path = "unix.rs"]
mod imp;

#[cfg(windows)]
#[path = "windows.rs"]
mod imp;

pub(crate) use imp::open_descriptors;
