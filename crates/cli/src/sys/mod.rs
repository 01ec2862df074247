//! Platform leaves: the shutdown signal, the default listen endpoint, and the local
//! terminal for `pipegate shell` (raw mode, size, resize events).

#[cfg(unix)]
#[path = "unix.rs"]
mod imp;

#[cfg(windows)]
#[path = "windows.rs"]
mod imp;

pub(crate) use imp::{default_endpoint, shutdown_signal};
// `pipegate shell`: the local terminal.
pub(crate) use imp::{stdin_is_terminal, terminal_size, terminate_signal, RawMode, ResizeEvents};
