//! Windows: the process's open handles, which is what Unix's descriptor count measures
//! there. `GetProcessHandleCount` says; where it reports none at all (Wine implements it
//! as a stub returning 0, and a live process always holds handles), this process's
//! entries in the system handle table are counted instead.
#![allow(unsafe_code)]

use std::mem::{align_of, size_of};

use windows_sys::Wdk::System::SystemInformation::NtQuerySystemInformation;
use windows_sys::Win32::Foundation::NTSTATUS;
use windows_sys::Win32::System::Threading::{GetCurrentProcess, GetProcessHandleCount};

/// How many handles this process has open, or `None` if the OS does not say.
pub(crate) fn open_descriptors() -> Option<u64> {
    let mut count = 0u32;
    // SAFETY: GetCurrentProcess returns a pseudo-handle that needs no closing, and
    // `count` is a valid u32 for the call to write.
    let ok = unsafe { GetProcessHandleCount(GetCurrentProcess(), &mut count) };
    match (ok != 0, count) {
        (true, 0) => handles_in_system_table(),
        (true, n) => Some(u64::from(n)),
        (false, _) => None,
    }
}

/// `SystemExtendedHandleInformation`: every handle of every process.
const SYSTEM_EXTENDED_HANDLE_INFORMATION: i32 = 64;
const STATUS_INFO_LENGTH_MISMATCH: NTSTATUS = 0xC000_0004_u32 as NTSTATUS;

/// `SYSTEM_HANDLE_TABLE_ENTRY_INFO_EX`; the table is a count, a reserved word, then these.
/// Only the owner is read; the other fields are there for the layout.
#[allow(dead_code)]
#[repr(C)]
struct HandleEntry {
    object: usize,
    process_id: usize,
    handle: usize,
    access: u32,
    back_trace_index: u16,
    type_index: u16,
    attributes: u32,
    reserved: u32,
}

/// This process's handles, counted in the system handle table.
fn handles_in_system_table() -> Option<u64> {
    const HEADER: usize = 2 * size_of::<usize>();
    // Words, so that the entries' fields are aligned.
    let mut buf = vec![0usize; 8 * 1024];
    for _ in 0..8 {
        let bytes = buf.len() * size_of::<usize>();
        let mut needed = 0u32;
        // SAFETY: the buffer is `bytes` long and writable; `needed` is a valid u32.
        let status = unsafe {
            NtQuerySystemInformation(
                SYSTEM_EXTENDED_HANDLE_INFORMATION,
                buf.as_mut_ptr().cast(),
                u32::try_from(bytes).ok()?,
                &mut needed,
            )
        };
        if status == STATUS_INFO_LENGTH_MISMATCH {
            // The table grows between calls: ask for more than it said.
            let want = (needed as usize).max(bytes * 2) / size_of::<usize>() + 1024;
            buf.resize(want, 0);
            continue;
        }
        if status < 0 {
            return None;
        }
        let count = buf[0];
        let end = count
            .checked_mul(size_of::<HandleEntry>())?
            .checked_add(HEADER)?;
        if end > bytes || HEADER % align_of::<HandleEntry>() != 0 {
            return None;
        }
        // SAFETY: `count` entries start HEADER bytes into the buffer (aligned, checked
        // above to lie within it), written by the call as SYSTEM_HANDLE_TABLE_ENTRY_INFO_EX.
        let entries = unsafe {
            std::slice::from_raw_parts(
                buf.as_ptr().cast::<u8>().add(HEADER).cast::<HandleEntry>(),
                count,
            )
        };
        let me = std::process::id() as usize;
        return Some(entries.iter().filter(|e| e.process_id == me).count() as u64);
    }
    None
}
