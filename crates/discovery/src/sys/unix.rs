//! Unix: 0700 directories owned by us, 0600 files, `O_NOFOLLOW` opens, `kill(pid, 0)`.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rustix::io::Errno;
use rustix::process::Pid;

use super::Liveness;
use crate::error::{Error, ErrorKind, Result};
use crate::PathSecurity;

/// `$HOME/Library/Application Support` on macOS, `$HOME/.local/state` elsewhere.
pub(crate) fn default_state_home() -> Option<PathBuf> {
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .filter(|h| h.is_absolute())?;
    if cfg!(target_os = "macos") {
        Some(home.join("Library").join("Application Support"))
    } else {
        Some(home.join(".local").join("state"))
    }
}

fn euid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// Creates `dir` (and missing parents) with mode 0700. With `strict`, an existing `dir`
/// must be a real directory (not a symlink) owned by us, and is chmod-ed to 0700 if it
/// is looser; without it, an existing `dir` is left as it is.
pub(crate) fn secure_dir(dir: &Path, strict: bool) -> Result<()> {
    match fs::symlink_metadata(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| Error::io("cannot create the directory", dir, e))?;
            // `mode` is filtered by the umask; make the leaf exactly 0700.
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
                .map_err(|e| Error::io("cannot chmod 0700", dir, e))
        }
        Err(e) => Err(Error::io("cannot inspect the directory", dir, e)),
        Ok(_) if !strict => Ok(()),
        Ok(meta) if meta.file_type().is_symlink() => Err(insecure(
            dir,
            "is a symbolic link; pipegate keeps its records only in a real directory",
        )),
        Ok(meta) if !meta.is_dir() => Err(insecure(dir, "is not a directory")),
        Ok(meta) if meta.uid() != euid() => Err(insecure(
            dir,
            &format!(
                "is owned by uid {}, not by you (uid {}); remove it (or restore its ownership) and retry",
                meta.uid(),
                euid()
            ),
        )),
        Ok(meta) if meta.mode() & 0o077 != 0 => {
            tracing::info!(dir = %dir.display(), mode = format!("{:04o}", meta.mode() & 0o7777),
                "tightening the records directory to 0700");
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
                .map_err(|e| Error::io("cannot chmod 0700", dir, e))
        }
        Ok(_) => Ok(()),
    }
}

fn insecure(dir: &Path, why: &str) -> Error {
    Error::new(
        ErrorKind::InsecureDirectory,
        format!("refusing to trust {}: it {why}", dir.display()),
    )
    .with_path(dir)
}

/// Creates a new file (failing if anything exists there) with mode 0600 from the start.
pub(crate) fn create_private_file(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(nofollow())
        .open(path)
}

/// Opens (creating if needed, mode 0600) a lock file, without following a symlink.
pub(crate) fn open_lock_file(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(nofollow())
        .open(path)
}

/// Opens `path` for reading; fails if it is a symbolic link.
pub(crate) fn open_nofollow(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(nofollow())
        .open(path)
}

fn nofollow() -> i32 {
    rustix::fs::OFlags::NOFOLLOW.bits() as i32
}

/// fsyncs a directory, so a rename in it survives a crash.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// `kill(pid, 0)`: success or `EPERM` (someone else's process) mean alive, `ESRCH` dead.
pub(crate) fn process_alive(pid: u32) -> Liveness {
    let Some(pid) = i32::try_from(pid).ok().and_then(Pid::from_raw) else {
        return Liveness::Unknown;
    };
    match rustix::process::test_kill_process(pid) {
        Ok(()) => Liveness::Alive,
        Err(Errno::PERM) => Liveness::Alive,
        Err(Errno::SRCH) => Liveness::Dead,
        Err(_) => Liveness::Unknown,
    }
}

/// Owner and mode of `path` (not following a final symlink).
pub(crate) fn path_security(path: &Path) -> io::Result<PathSecurity> {
    let meta = fs::symlink_metadata(path)?;
    let mode = meta.mode() & 0o7777;
    Ok(PathSecurity {
        owner: format!("uid {}", meta.uid()),
        owned_by_me: meta.uid() == euid(),
        mode: Some(mode),
        private: mode & 0o077 == 0,
        description: format!("mode {mode:04o}, owner uid {}", meta.uid()),
    })
}
