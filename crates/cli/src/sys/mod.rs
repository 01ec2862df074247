//! Platform leaves: the shutdown signal and the default listen endpoint.

#[cfg(unix)]
#[path = "unix.rs"]
mod imp;

#[cfg(windows)]
#[path = "windows.rs"]
mod imp;

pub(crate) use imp::{default_endpoint, shutdown_signal};
