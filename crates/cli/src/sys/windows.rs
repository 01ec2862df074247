//! Windows: Ctrl-C, Ctrl-Break or closing its console end `serve`; the default endpoint is `npipe://NAME`; the
//! console for `pipegate shell`.
// The console API is FFI; every call is commented with why it is sound.
#![allow(unsafe_code)]

use std::io;
use std::sync::Mutex;
use std::time::Duration;

use pipegate_agent::protocol::TerminalSize;
use pipegate_transport::Endpoint;
use windows_sys::Win32::Foundation::HANDLE;
use windows_sys::Win32::System::Console::{
    GetConsoleMode, GetConsoleScreenBufferInfo, GetStdHandle, ReadConsoleW, SetConsoleMode,
    CONSOLE_MODE, CONSOLE_SCREEN_BUFFER_INFO, DISABLE_NEWLINE_AUTO_RETURN, ENABLE_ECHO_INPUT,
    ENABLE_LINE_INPUT, ENABLE_PROCESSED_INPUT, ENABLE_PROCESSED_OUTPUT,
    ENABLE_VIRTUAL_TERMINAL_INPUT, ENABLE_VIRTUAL_TERMINAL_PROCESSING, STD_ERROR_HANDLE,
    STD_HANDLE, STD_INPUT_HANDLE, STD_OUTPUT_HANDLE,
};

use super::utf8::{LossyUtf8, Utf16ToUtf8};

/// Completes on the first Ctrl-C or Ctrl-Break, or when the console `serve` runs in is
/// closed (the console's "close" event: Windows then gives the process about five
/// seconds, tokio's handler holding it until it exits, so the pipes are released and the
/// record removed first).
pub(crate) async fn shutdown_signal() {
    let mut brk = match tokio::signal::windows::ctrl_break() {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for Ctrl-Break; only Ctrl-C will stop");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    let mut close = tokio::signal::windows::ctrl_close().ok();
    let name = tokio::select! {
        _ = tokio::signal::ctrl_c() => "Ctrl-C",
        _ = brk.recv() => "Ctrl-Break",
        _ = async {
            match close.as_mut() {
                Some(close) => {
                    close.recv().await;
                }
                None => std::future::pending().await,
            }
        } => "console closed",
    };
    tracing::info!(signal = name, "shutting down");
}

/// `npipe://NAME` (the instance name is a valid pipe name by construction).
pub(crate) fn default_endpoint(name: &str) -> Endpoint {
    Endpoint::NamedPipe(name.to_ascii_lowercase())
}

// ---- `pipegate shell`: the local terminal ----
//
// The console API directly (windows-sys), not crossterm: crossterm's raw mode leaves out
// ENABLE_VIRTUAL_TERMINAL_INPUT and its input is key *events*, which would have to be
// turned back into the bytes a remote terminal expects; with VT input the console hands
// over those bytes itself (arrows as ESC [ A, Ctrl-C as 0x03), which is what is sent.

/// How often the console's size is checked: a console has no SIGWINCH.
const RESIZE_POLL: Duration = Duration::from_millis(250);

fn std_handle(which: STD_HANDLE) -> HANDLE {
    // SAFETY: GetStdHandle takes a constant and returns a handle value (possibly null or
    // INVALID_HANDLE_VALUE, which the console functions below reject); nothing is owned.
    unsafe { GetStdHandle(which) }
}

/// The console mode of a standard handle, if it is a console.
fn console_mode(which: STD_HANDLE) -> Option<CONSOLE_MODE> {
    let mut mode: CONSOLE_MODE = 0;
    // SAFETY: `mode` is a valid place for the one u32 the call writes; a handle that is
    // not a console (a pipe, a file, null) makes the call fail, nothing more.
    let ok = unsafe { GetConsoleMode(std_handle(which), &mut mode) };
    (ok != 0).then_some(mode)
}

fn set_console_mode(which: STD_HANDLE, mode: CONSOLE_MODE) -> io::Result<()> {
    // SAFETY: plain values; fails harmlessly for a handle that is not a console.
    if unsafe { SetConsoleMode(std_handle(which), mode) } != 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Whether stdin is a console (then `pipegate shell` would be interactive).
pub(crate) fn stdin_is_terminal() -> bool {
    std::io::IsTerminal::is_terminal(&std::io::stdin())
}

/// The console window's size in cells (the visible window, not the scroll-back buffer),
/// from stdout or else stderr.
pub(crate) fn terminal_size() -> Option<TerminalSize> {
    [STD_OUTPUT_HANDLE, STD_ERROR_HANDLE]
        .into_iter()
        .find_map(|which| {
            // SAFETY: CONSOLE_SCREEN_BUFFER_INFO is plain integers, valid when zeroed.
            let mut info: CONSOLE_SCREEN_BUFFER_INFO = unsafe { std::mem::zeroed() };
            // SAFETY: `info` is a valid place for the structure the call fills; a handle that
            // is not a console output makes it fail.
            let ok = unsafe { GetConsoleScreenBufferInfo(std_handle(which), &mut info) };
            if ok == 0 {
                return None;
            }
            let width = i32::from(info.srWindow.Right) - i32::from(info.srWindow.Left) + 1;
            let height = i32::from(info.srWindow.Bottom) - i32::from(info.srWindow.Top) + 1;
            match (u32::try_from(width), u32::try_from(height)) {
                (Ok(w), Ok(h)) if w > 0 && h > 0 => Some(TerminalSize::new(w, h)),
                _ => None,
            }
        })
}

/// The console modes to restore, shared with the panic hook.
#[derive(Debug, Clone, Copy)]
struct Saved {
    input: CONSOLE_MODE,
    output: Option<CONSOLE_MODE>,
}

static SAVED_MODES: Mutex<Option<Saved>> = Mutex::new(None);

fn restore_console() {
    let saved = SAVED_MODES.lock().unwrap_or_else(|p| p.into_inner()).take();
    if let Some(saved) = saved {
        let _ = set_console_mode(STD_INPUT_HANDLE, saved.input);
        if let Some(output) = saved.output {
            let _ = set_console_mode(STD_OUTPUT_HANDLE, output);
        }
    }
}

/// The console in raw mode until dropped: input without line editing, echo or Ctrl-C
/// processing (so Ctrl-C arrives as the byte 0x03 and reaches the remote program instead
/// of ending `pipegate shell`), with keys as VT sequences; output interpreting VT
/// sequences. A panic restores it too. Ctrl-Break still ends `pipegate shell` (and the
/// remote session): the console always treats it as a signal.
#[derive(Debug)]
pub(crate) struct RawMode(());

impl RawMode {
    /// Saves the console modes of stdin and stdout and switches them.
    ///
    /// # Errors
    ///
    /// stdin is not a console (e.g. mintty's pipes), or the console is older than
    /// Windows 10 1809 and cannot do VT input.
    pub(crate) fn enable() -> io::Result<RawMode> {
        static HOOK: std::sync::Once = std::sync::Once::new();
        let input = console_mode(STD_INPUT_HANDLE).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::Unsupported,
                "stdin is not a Windows console (mintty and other pipe-based terminals are \
                 not one: use Windows Terminal or conhost, or `winpty pipegate shell`)",
            )
        })?;
        let output = console_mode(STD_OUTPUT_HANDLE);
        *SAVED_MODES.lock().unwrap_or_else(|p| p.into_inner()) = Some(Saved { input, output });
        HOOK.call_once(|| {
            let previous = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                restore_console();
                previous(info);
            }));
        });
        let raw_input = (input & !(ENABLE_LINE_INPUT | ENABLE_ECHO_INPUT | ENABLE_PROCESSED_INPUT))
            | ENABLE_VIRTUAL_TERMINAL_INPUT;
        if let Err(e) = set_console_mode(STD_INPUT_HANDLE, raw_input) {
            restore_console();
            return Err(io::Error::new(
                e.kind(),
                format!("the console cannot do VT input (Windows 10 1809 or later): {e}"),
            ));
        }
        if let Some(output) = output {
            let vt = output | ENABLE_PROCESSED_OUTPUT | ENABLE_VIRTUAL_TERMINAL_PROCESSING;
            // Wrapping as a terminal does; older consoles lack the flag but do VT.
            let set = set_console_mode(STD_OUTPUT_HANDLE, vt | DISABLE_NEWLINE_AUTO_RETURN)
                .or_else(|_| set_console_mode(STD_OUTPUT_HANDLE, vt));
            if let Err(e) = set {
                restore_console();
                return Err(io::Error::new(
                    e.kind(),
                    format!("the console cannot interpret VT sequences: {e}"),
                ));
            }
        }
        Ok(RawMode(()))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        restore_console();
    }
}

/// What `pipegate shell` reads for the program's input: the console through
/// `ReadConsoleW` when stdin is one (std's console reader would take a Ctrl-Z for the
/// end of input), else stdin as it is.
pub(crate) fn stdin_reader() -> Box<dyn io::Read + Send> {
    if console_mode(STD_INPUT_HANDLE).is_some() {
        Box::new(ConsoleReader::default())
    } else {
        Box::new(io::stdin())
    }
}

/// Console input as UTF-8 bytes. Never ends: a console has no end of input in raw mode.
#[derive(Debug, Default)]
struct ConsoleReader {
    decoder: Utf16ToUtf8,
    /// Decoded bytes not yet returned.
    pending: Vec<u8>,
}

impl io::Read for ConsoleReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pending.is_empty() {
            let mut units = [0u16; 1024];
            let mut count: u32 = 0;
            // SAFETY: `units` has room for the 1024 UTF-16 units asked for and `count`
            // for the one u32 written; no read control structure is passed.
            let ok = unsafe {
                ReadConsoleW(
                    std_handle(STD_INPUT_HANDLE),
                    units.as_mut_ptr().cast(),
                    units.len() as u32,
                    &mut count,
                    std::ptr::null(),
                )
            };
            if ok == 0 {
                return Err(io::Error::last_os_error());
            }
            let count = (count as usize).min(units.len());
            self.decoder.push(&units[..count], &mut self.pending);
        }
        let n = buf.len().min(self.pending.len());
        buf[..n].copy_from_slice(&self.pending[..n]);
        self.pending.drain(..n);
        Ok(n)
    }
}

/// stdout (or stderr) for the session's output. A console takes only valid UTF-8 (std
/// fails the write otherwise), so output to one goes through [`LossyUtf8`]; to a pipe or
/// file, bytes pass as they are.
pub(crate) fn output_writer(stderr: bool) -> Box<dyn io::Write + Send> {
    let (inner, which): (Box<dyn io::Write + Send>, _) = if stderr {
        (Box::new(io::stderr()), STD_ERROR_HANDLE)
    } else {
        (Box::new(io::stdout()), STD_OUTPUT_HANDLE)
    };
    match console_mode(which) {
        Some(_) => Box::new(ConsoleText {
            inner,
            text: LossyUtf8::default(),
        }),
        None => inner,
    }
}

/// Output to a console, as valid UTF-8.
struct ConsoleText {
    inner: Box<dyn io::Write + Send>,
    text: LossyUtf8,
}

impl io::Write for ConsoleText {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let text = self.text.push(buf);
        self.inner.write_all(text.as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// "The console was resized", found by polling its size every [`RESIZE_POLL`].
#[derive(Debug)]
pub(crate) struct ResizeEvents {
    last: Option<TerminalSize>,
}

impl ResizeEvents {
    pub(crate) fn new() -> ResizeEvents {
        ResizeEvents {
            last: terminal_size(),
        }
    }

    /// Completes when the size differs from the one last seen (never without a console).
    pub(crate) async fn recv(&mut self) {
        loop {
            tokio::time::sleep(RESIZE_POLL).await;
            let now = terminal_size();
            if now != self.last {
                self.last = now;
                return;
            }
        }
    }
}

/// Ctrl-C as a console event while the console is raw: the key, to be passed on.
/// Without `ENABLE_PROCESSED_INPUT` Windows reports Ctrl-C as input instead, but a
/// console may still raise the event (Wine on a Unix terminal does).
#[derive(Debug)]
pub(crate) struct Interrupts(Option<tokio::signal::windows::CtrlC>);

impl Interrupts {
    pub(crate) fn new(interactive: bool) -> Interrupts {
        Interrupts(if interactive {
            tokio::signal::windows::ctrl_c().ok()
        } else {
            None
        })
    }

    /// Completes at the next Ctrl-C event (never when not interactive).
    pub(crate) async fn recv(&mut self) {
        match &mut self.0 {
            Some(ctrl_c) => {
                ctrl_c.recv().await;
            }
            None => std::future::pending().await,
        }
    }
}

/// Completes on Ctrl-Break (as SIGTERM, 15), and unless `interactive` (where Ctrl-C is a
/// key for the remote program, see [`Interrupts`]) on Ctrl-C (as SIGINT, 2).
pub(crate) async fn terminate_signal(interactive: bool) -> u8 {
    let ctrl_c = async {
        if interactive {
            std::future::pending::<()>().await;
        }
        let _ = tokio::signal::ctrl_c().await;
    };
    let Ok(mut brk) = tokio::signal::windows::ctrl_break() else {
        ctrl_c.await;
        return 2;
    };
    tokio::select! {
        () = ctrl_c => 2,
        _ = brk.recv() => 15,
    }
}
