//! End-to-end tests of the `pipegate` binary: real processes, real sockets.
//!
//! One test binary (see `[[test]] name = "e2e"` in Cargo.toml) with a module per area.
//! The Linux tests run the native binary against in-test upstreams; `windows` drives a
//! Windows `pipegate.exe` under Wine with the Windows Node.js (set up by `scripts/test`).
//! Everything here is Unix-only: under the Windows target this binary is empty.
#![cfg(unix)]
// A test crate: in helpers as in tests, a panic is how a check fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

mod agent;
mod bridge;
mod discovery;
mod faults;
mod leaks;
mod lifecycle;
mod load;
mod logging;
mod mux;
mod relay;
mod security;
mod shell;
mod windows;
