//! `pipegate`: the command-line front end. Parsing, wiring and exit codes only; the work
//! is done by the `pipegate-*` libraries.
// Denied everywhere but the console code of `sys/windows.rs` (FFI).
#![deny(unsafe_code)]

mod cli;
mod cmd;
mod logging;
mod report;
mod sys;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    if let Err(e) = logging::init(&cli.global) {
        return report::error(&e);
    }
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = cli.global.threads {
        builder.worker_threads(threads.get());
    }
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            return report::error(&anyhow::Error::new(e).context("cannot start the async runtime"))
        }
    };
    match runtime.block_on(cmd::run(cli.command)) {
        Ok(code) => code,
        Err(e) => report::error(&e),
    }
}
