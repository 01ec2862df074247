//! Windows: a protected DACL (the current user's SID and SYSTEM, nothing inherited) on
//! the records directories, owner checks, reparse-point-aware opens, and process liveness
//! through `OpenProcess` + `GetExitCodeProcess`.
//!
//! The SID lookup duplicates the few lines `pipegate-transport` uses for its pipe DACL:
//! that helper is private to the transport crate, and the security-descriptor work here
//! (directories, not pipes) is different anyway.
#![allow(unsafe_code)]

use std::ffi::c_void;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::windows::ffi::OsStrExt;
use std::os::windows::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::ptr;

use windows_sys::Win32::Foundation::{
    CloseHandle, GetLastError, LocalFree, ERROR_ACCESS_DENIED, HANDLE, STILL_ACTIVE,
};
use windows_sys::Win32::Security::Authorization::{
    ConvertSecurityDescriptorToStringSecurityDescriptorW, ConvertSidToStringSidW,
    ConvertStringSecurityDescriptorToSecurityDescriptorW, GetNamedSecurityInfoW,
    SetNamedSecurityInfoW, SDDL_REVISION_1, SE_FILE_OBJECT,
};
use windows_sys::Win32::Security::{
    GetSecurityDescriptorDacl, ACL, DACL_SECURITY_INFORMATION, OWNER_SECURITY_INFORMATION,
    PROTECTED_DACL_SECURITY_INFORMATION, PSECURITY_DESCRIPTOR, PSID,
};
use windows_sys::Win32::Storage::FileSystem::FILE_FLAG_OPEN_REPARSE_POINT;
use windows_sys::Win32::System::Threading::{
    GetExitCodeProcess, OpenProcess, PROCESS_QUERY_LIMITED_INFORMATION,
};

use super::Liveness;
use crate::error::{Error, ErrorKind, Result};
use crate::PathSecurity;

/// LocalSystem.
const SYSTEM_SID: &str = "S-1-5-18";
/// BUILTIN\Administrators: may own directories created from an elevated prompt.
const ADMINISTRATORS_SID: &str = "S-1-5-32-544";

/// `%LOCALAPPDATA%`.
pub(crate) fn default_state_home() -> Option<PathBuf> {
    std::env::var_os("LOCALAPPDATA")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
}

/// Creates `dir` (and missing parents), checks that its owner is the current user,
/// SYSTEM or Administrators, and replaces its DACL with a protected one granting full
/// access (inherited by files and subdirectories) to the current user and SYSTEM only.
/// `strict` is accepted for parity with Unix: on Windows both directories get the DACL.
pub(crate) fn secure_dir(dir: &Path, _strict: bool) -> Result<()> {
    fs::create_dir_all(dir).map_err(|e| Error::io("cannot create the directory", dir, e))?;
    let meta =
        fs::symlink_metadata(dir).map_err(|e| Error::io("cannot inspect the directory", dir, e))?;
    if meta.file_type().is_symlink() || !meta.is_dir() {
        return Err(insecure(
            dir,
            "is not a plain directory (a link or a file); pipegate keeps its records only in a real directory",
        ));
    }
    let user = current_user_sid().map_err(|e| {
        Error::new(
            ErrorKind::Io,
            "cannot read the current user's SID to secure the records directory",
        )
        .with_source(e)
    })?;
    check_owner(dir, &user)?;
    set_protected_dacl(dir, &dir_sddl(&user)).map_err(|e| {
        Error::new(
            ErrorKind::Io,
            format!("cannot restrict {} to your user and SYSTEM", dir.display()),
        )
        .with_path(dir)
        .with_source(e)
    })?;
    check_owner(dir, &user)
}

/// Protected; full access for SYSTEM and `user`, inherited by files and subdirectories.
fn dir_sddl(user: &str) -> String {
    format!("D:P(A;OICI;FA;;;SY)(A;OICI;FA;;;{user})")
}

fn check_owner(dir: &Path, user: &str) -> Result<()> {
    // An owner that cannot be read (some file systems, some Wine versions) is not a
    // foreign owner: only a positively foreign one is refused.
    let Ok(security) = read_security(dir) else {
        return Ok(());
    };
    match security.owner {
        Some(owner) if owner != user && owner != SYSTEM_SID && owner != ADMINISTRATORS_SID => {
            Err(insecure(
                dir,
                &format!(
                    "is owned by {owner}, not by you ({user}), SYSTEM or Administrators; \
                     remove it (or restore its ownership) and retry"
                ),
            ))
        }
        _ => Ok(()),
    }
}

fn insecure(dir: &Path, why: &str) -> Error {
    Error::new(
        ErrorKind::InsecureDirectory,
        format!("refusing to trust {}: it {why}", dir.display()),
    )
    .with_path(dir)
}

/// Creates a new file, failing if anything exists there. It inherits the directory's DACL.
pub(crate) fn create_private_file(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(FILE_FLAG_OPEN_REPARSE_POINT)
        .open(path)
}

/// Opens (creating if needed) a lock file; a reparse point is opened as itself.
pub(crate) fn open_lock_file(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .custom_flags(FILE_FLAG_OPEN_REPARSE_POINT)
        .open(path)
}

/// Opens `path` for reading without following a symlink: a link is opened as itself, and
/// the caller's `is_file` check on its metadata refuses it.
pub(crate) fn open_nofollow(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(FILE_FLAG_OPEN_REPARSE_POINT)
        .open(path)
}

/// Directories cannot be fsynced through std on Windows; `MoveFileEx` is durable enough.
pub(crate) fn sync_dir(_dir: &Path) -> io::Result<()> {
    Ok(())
}

/// `OpenProcess`: no handle means gone (or, with `ERROR_ACCESS_DENIED`, someone else's
/// live process); with a handle, alive iff the exit code is still `STILL_ACTIVE`.
pub(crate) fn process_alive(pid: u32) -> Liveness {
    if pid == 0 {
        return Liveness::Unknown;
    }
    // SAFETY: plain call; a null handle is checked below.
    let handle = unsafe { OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION, 0, pid) };
    if handle.is_null() {
        // SAFETY: reads the calling thread's last-error value.
        return match unsafe { GetLastError() } {
            ERROR_ACCESS_DENIED => Liveness::Alive,
            _ => Liveness::Dead,
        };
    }
    let handle = OwnedHandle(handle);
    let mut code = 0u32;
    // SAFETY: a live process handle and an out parameter.
    if unsafe { GetExitCodeProcess(handle.0, &mut code) } == 0 {
        return Liveness::Unknown;
    }
    if code == STILL_ACTIVE as u32 {
        Liveness::Alive
    } else {
        Liveness::Dead
    }
}

/// Owner and DACL of `path`.
pub(crate) fn path_security(path: &Path) -> io::Result<PathSecurity> {
    let security = read_security(path)?;
    let user = current_user_sid()?;
    let owner = security.owner.unwrap_or_else(|| "unknown".to_owned());
    let private = security
        .dacl
        .as_deref()
        .is_some_and(|dacl| dacl_is_private(dacl, &user));
    Ok(PathSecurity {
        owned_by_me: owner == user,
        description: format!(
            "owner {owner}, DACL {}",
            security.dacl.as_deref().unwrap_or("unknown")
        ),
        owner,
        mode: None,
        private,
    })
}

/// A DACL in SDDL is private when it is protected (`D:P…`) and every allow ACE names
/// SYSTEM or `user`.
fn dacl_is_private(sddl: &str, user: &str) -> bool {
    let Some(rest) = sddl.strip_prefix("D:") else {
        return false;
    };
    let flags_end = rest.find('(').unwrap_or(rest.len());
    if !rest[..flags_end].contains('P') {
        return false;
    }
    rest[flags_end..]
        .split(['(', ')'])
        .filter(|ace| !ace.is_empty())
        .all(|ace| {
            let fields: Vec<&str> = ace.split(';').collect();
            match (fields.first(), fields.last()) {
                (Some(&"A"), Some(sid)) => {
                    *sid == "SY" || *sid == SYSTEM_SID || sid.eq_ignore_ascii_case(user)
                }
                (Some(_), Some(_)) => true,
                _ => false,
            }
        })
}

struct OwnedHandle(HANDLE);

impl Drop for OwnedHandle {
    fn drop(&mut self) {
        // SAFETY: a handle we opened and own.
        unsafe { CloseHandle(self.0) };
    }
}

/// Memory from `LocalAlloc` (security descriptors, strings the conversions return).
struct LocalBox(*mut c_void);

impl Drop for LocalBox {
    fn drop(&mut self) {
        if !self.0.is_null() {
            // SAFETY: allocated by the API that handed it to us, with LocalAlloc.
            unsafe { LocalFree(self.0) };
        }
    }
}

fn to_wide(s: &std::ffi::OsStr) -> Vec<u16> {
    s.encode_wide().chain(std::iter::once(0)).collect()
}

/// Reads a NUL-terminated UTF-16 string.
///
/// # Safety
///
/// `p` must point to a NUL-terminated UTF-16 string.
unsafe fn from_wide(p: *const u16) -> String {
    let mut n = 0;
    // SAFETY: the caller promises a terminator.
    while unsafe { *p.add(n) } != 0 {
        n += 1;
    }
    // SAFETY: `n` elements were just read.
    String::from_utf16_lossy(unsafe { std::slice::from_raw_parts(p, n) })
}

/// The string form of a SID.
///
/// # Safety
///
/// `sid` must point to a valid SID.
unsafe fn sid_to_string(sid: PSID) -> io::Result<String> {
    let mut wide: *mut u16 = ptr::null_mut();
    // SAFETY: `sid` is valid per the caller; `wide` receives a LocalAlloc'd string.
    if unsafe { ConvertSidToStringSidW(sid, &mut wide) } == 0 {
        return Err(io::Error::last_os_error());
    }
    let _free = LocalBox(wide.cast());
    // SAFETY: ConvertSidToStringSidW returned a NUL-terminated string.
    Ok(unsafe { from_wide(wide) })
}

/// The current user's SID (`S-1-5-21-…`): the identity the transport checks peers with.
fn current_user_sid() -> io::Result<String> {
    pipegate_transport::current_user_id()
}

struct Security {
    owner: Option<String>,
    dacl: Option<String>,
}

/// The owner SID and the DACL (as SDDL) of a file or directory.
fn read_security(path: &Path) -> io::Result<Security> {
    let wide = to_wide(path.as_os_str());
    let mut owner: PSID = ptr::null_mut();
    let mut sd: PSECURITY_DESCRIPTOR = ptr::null_mut();
    // SAFETY: `wide` is NUL-terminated and outlives the call; `owner` points into `sd`,
    // which we free through LocalBox after the last use of `owner`.
    let rc = unsafe {
        GetNamedSecurityInfoW(
            wide.as_ptr(),
            SE_FILE_OBJECT,
            OWNER_SECURITY_INFORMATION | DACL_SECURITY_INFORMATION,
            &mut owner,
            ptr::null_mut(),
            ptr::null_mut(),
            ptr::null_mut(),
            &mut sd,
        )
    };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc as i32));
    }
    let sd = LocalBox(sd);
    let owner_text = if owner.is_null() {
        None
    } else {
        // SAFETY: a SID inside the descriptor we still hold.
        unsafe { sid_to_string(owner) }.ok()
    };
    let mut text: *mut u16 = ptr::null_mut();
    // SAFETY: `sd.0` is a valid descriptor; `text` receives a LocalAlloc'd string.
    let ok = unsafe {
        ConvertSecurityDescriptorToStringSecurityDescriptorW(
            sd.0,
            SDDL_REVISION_1,
            DACL_SECURITY_INFORMATION,
            &mut text,
            ptr::null_mut(),
        )
    };
    let dacl = if ok == 0 {
        None
    } else {
        let _free = LocalBox(text.cast());
        // SAFETY: NUL-terminated output of the conversion.
        Some(unsafe { from_wide(text) })
    };
    Ok(Security {
        owner: owner_text,
        dacl,
    })
}

/// Replaces the DACL of `path` with the one in `sddl`, marked protected (no inherited
/// entries from the parent).
fn set_protected_dacl(path: &Path, sddl: &str) -> io::Result<()> {
    let sddl_wide: Vec<u16> = sddl.encode_utf16().chain(std::iter::once(0)).collect();
    let mut sd: PSECURITY_DESCRIPTOR = ptr::null_mut();
    // SAFETY: `sddl_wide` is NUL-terminated; `sd` receives a LocalAlloc'd descriptor.
    let ok = unsafe {
        ConvertStringSecurityDescriptorToSecurityDescriptorW(
            sddl_wide.as_ptr(),
            SDDL_REVISION_1,
            &mut sd,
            ptr::null_mut(),
        )
    };
    if ok == 0 {
        return Err(io::Error::last_os_error());
    }
    let sd = LocalBox(sd);
    let mut present = 0;
    let mut defaulted = 0;
    let mut dacl: *mut ACL = ptr::null_mut();
    // SAFETY: a valid descriptor and out parameters; `dacl` points into `sd`.
    if unsafe { GetSecurityDescriptorDacl(sd.0, &mut present, &mut dacl, &mut defaulted) } == 0 {
        return Err(io::Error::last_os_error());
    }
    let wide = to_wide(path.as_os_str());
    // SAFETY: `wide` is NUL-terminated; `dacl` lives inside `sd`, alive for the call.
    let rc = unsafe {
        SetNamedSecurityInfoW(
            wide.as_ptr(),
            SE_FILE_OBJECT,
            DACL_SECURITY_INFORMATION | PROTECTED_DACL_SECURITY_INFORMATION,
            ptr::null_mut(),
            ptr::null_mut(),
            dacl,
            ptr::null(),
        )
    };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc as i32));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_dacls() {
        let me = "S-1-5-21-1-2-3-1000";
        assert!(dacl_is_private(
            &format!("D:P(A;OICI;FA;;;SY)(A;OICI;FA;;;{me})"),
            me
        ));
        assert!(dacl_is_private(
            &format!("D:PAI(A;OICIID;FA;;;S-1-5-18)(A;OICI;FA;;;{me})"),
            me
        ));
        assert!(!dacl_is_private(
            &format!("D:(A;OICI;FA;;;SY)(A;OICI;FA;;;{me})"),
            me
        ));
        assert!(!dacl_is_private(
            &format!("D:P(A;OICI;FA;;;SY)(A;OICI;FA;;;{me})(A;;FR;;;WD)"),
            me
        ));
        assert!(!dacl_is_private("", me));
    }

    #[test]
    fn the_directory_dacl_is_private_and_valid_sddl() {
        let user = current_user_sid().unwrap();
        let sddl = dir_sddl(&user);
        assert!(dacl_is_private(&sddl, &user), "{sddl}");
        assert!(!sddl.contains(";;;WD)"), "{sddl}");
        let wide: Vec<u16> = sddl.encode_utf16().chain(std::iter::once(0)).collect();
        let mut sd: PSECURITY_DESCRIPTOR = ptr::null_mut();
        // SAFETY: NUL-terminated input; `sd` is freed by LocalBox.
        let ok = unsafe {
            ConvertStringSecurityDescriptorToSecurityDescriptorW(
                wide.as_ptr(),
                SDDL_REVISION_1,
                &mut sd,
                ptr::null_mut(),
            )
        };
        let _free = LocalBox(sd);
        assert_ne!(ok, 0, "{sddl} must convert");
    }

    #[test]
    fn current_user_sid_looks_like_a_sid() {
        let sid = current_user_sid().unwrap();
        assert!(sid.starts_with("S-1-"), "{sid}");
    }

    #[test]
    fn this_process_is_alive_and_pid_zero_is_unknown() {
        assert_eq!(process_alive(std::process::id()), Liveness::Alive);
        assert_eq!(process_alive(0), Liveness::Unknown);
    }
}
