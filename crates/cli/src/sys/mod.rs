//! Platform leaves: the shutdown signal, the default listen endpoint, and the local
//! terminal for `pipegate shell` (raw mode, size, resize events, input and output).

#[cfg(unix)]
#[path = "unix.rs"]
mod imp;

#[cfg(windows)]
#[path = "windows.rs"]
mod imp;

mod utf8;

pub(crate) use imp::{default_endpoint, shutdown_signal};
// `pipegate shell`: the local terminal.
pub(crate) use imp::{
    output_writer, stdin_is_terminal, stdin_reader, terminal_size, terminate_signal, Interrupts,
    RawMode, ResizeEvents,
};
