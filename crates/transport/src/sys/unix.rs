//! Unix sockets: secure bind (directory checks, 0600 without a window, stale-socket
//! reclaim, inode-checked removal), accept with peer credentials, and connect.

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};

use tokio::net::{UnixListener, UnixStream};

use crate::error::{connect_error, unsupported, Error, ErrorKind, Result};
use crate::listener::{bind_error, ListenOptions};
use crate::{ConnectOptions, Endpoint, OpenFilesLimit};

/// On Unix the local transport is a Unix domain socket.
pub(crate) type LocalStream = UnixStream;

/// Unix sockets forward a write shutdown as EOF while the other direction stays open.
pub(crate) const LOCAL_HALF_CLOSE: bool = true;

/// A bound Unix socket that removes its file on drop, if the file is still its own.
#[derive(Debug)]
pub(crate) struct LocalListener {
    listener: UnixListener,
    endpoint: Endpoint,
    /// Our euid plus `ListenOptions::allow_uids`.
    allowed_uids: Vec<u32>,
    path: PathBuf,
    /// `(st_dev, st_ino)` of the socket file we created.
    identity: (u64, u64),
}

impl LocalListener {
    pub(crate) fn bind(endpoint: &Endpoint, options: &ListenOptions) -> Result<LocalListener> {
        let Some(path) = endpoint.unix_path() else {
            return Err(unsupported(endpoint));
        };
        check_path_len(endpoint, path)?;
        let parent = path.parent().unwrap_or(Path::new("/"));
        let private = secure_parent_dir(endpoint, parent)?;
        reclaim_stale(endpoint, path)?;

        let listener = if private {
            // Nobody else can traverse the directory, so the socket's mode before the
            // chmod is not a window.
            let listener = UnixListener::bind(path).map_err(|e| bind_error(endpoint, e))?;
            set_mode(endpoint, path, 0o600)?;
            listener
        } else {
            bind_via_private_dir(endpoint, path, parent)?
        };
        let meta = fs::symlink_metadata(path).map_err(|e| bind_error(endpoint, e))?;
        let mut allowed_uids = vec![rustix::process::geteuid().as_raw()];
        allowed_uids.extend(&options.allow_uids);
        Ok(LocalListener {
            listener,
            endpoint: endpoint.clone(),
            allowed_uids,
            path: path.to_owned(),
            identity: (meta.dev(), meta.ino()),
        })
    }

    /// Accepts the next connection from an allowed user; others are logged and closed.
    pub(crate) async fn accept(&mut self) -> io::Result<(LocalStream, Option<u32>, Option<u32>)> {
        loop {
            let (stream, _) = self.listener.accept().await?;
            match stream.peer_cred() {
                Ok(cred) if self.allowed_uids.contains(&cred.uid()) => {
                    let pid = cred.pid().and_then(|p| u32::try_from(p).ok());
                    return Ok((stream, pid, Some(cred.uid())));
                }
                Ok(cred) => tracing::warn!(
                    transport.endpoint = %self.endpoint,
                    peer.uid = cred.uid(),
                    peer.pid = cred.pid(),
                    "refused a connection from another user (allow it with --allow-uid)"
                ),
                Err(e) => tracing::warn!(
                    transport.endpoint = %self.endpoint,
                    error = %e,
                    "refused a connection whose peer credentials are unavailable"
                ),
            }
            // Dropping `stream` closes it; nothing was read from it.
        }
    }
}

impl Drop for LocalListener {
    fn drop(&mut self) {
        // Remove the file only if it is still the one we bound: another process may have
        // replaced it (after deciding ours was stale), and its socket is not ours to delete.
        match fs::symlink_metadata(&self.path) {
            Ok(meta) if (meta.dev(), meta.ino()) == self.identity => {
                if let Err(e) = fs::remove_file(&self.path) {
                    tracing::warn!(path = %self.path.display(), error = %e, "could not remove socket file");
                }
            }
            Ok(_) => {
                tracing::debug!(path = %self.path.display(), "socket file was replaced; leaving it")
            }
            Err(_) => {}
        }
    }
}

fn check_path_len(endpoint: &Endpoint, path: &Path) -> Result<()> {
    if rustix::net::SocketAddrUnix::new(path).is_err() {
        return Err(Error::new(
            ErrorKind::PathTooLong,
            format!(
                "the socket path of {endpoint} is {} bytes, longer than this OS allows \
                 (about 107 on Linux, 103 on macOS); choose a shorter path",
                path.as_os_str().len()
            ),
        )
        .with_endpoint(endpoint));
    }
    Ok(())
}

/// Creates the parent directory (0700) if missing, or checks that an existing one is
/// owned by us and not writable by group or others. Returns whether it is owner-only.
fn secure_parent_dir(endpoint: &Endpoint, dir: &Path) -> Result<bool> {
    let euid = rustix::process::geteuid().as_raw();
    match fs::metadata(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| {
                    Error::new(
                        ErrorKind::Io,
                        format!("cannot create the socket directory {}", dir.display()),
                    )
                    .with_endpoint(endpoint)
                    .with_source(e)
                })?;
            // `mode` is filtered by the umask; make sure the leaf is exactly 0700.
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(|e| {
                Error::new(ErrorKind::Io, format!("cannot chmod {}", dir.display()))
                    .with_endpoint(endpoint)
                    .with_source(e)
            })?;
            Ok(true)
        }
        Err(e) => Err(Error::new(
            ErrorKind::Io,
            format!("cannot inspect the socket directory {}", dir.display()),
        )
        .with_endpoint(endpoint)
        .with_source(e)),
        Ok(meta) if !meta.is_dir() => Err(Error::new(
            ErrorKind::InsecureDirectory,
            format!("{} is not a directory", dir.display()),
        )
        .with_endpoint(endpoint)),
        Ok(meta) if meta.uid() != euid => Err(Error::new(
            ErrorKind::InsecureDirectory,
            format!(
                "refusing to create {endpoint}: its directory {} is owned by uid {}, not by you \
                 (uid {euid}); use a directory you own, such as $XDG_RUNTIME_DIR",
                dir.display(),
                meta.uid()
            ),
        )
        .with_endpoint(endpoint)),
        Ok(meta) if meta.mode() & 0o022 != 0 => Err(Error::new(
            ErrorKind::InsecureDirectory,
            format!(
                "refusing to create {endpoint}: its directory {} has mode {:04o}, so other users \
                 could replace the socket; chmod it to 0700 or use a private directory such as \
                 $XDG_RUNTIME_DIR",
                dir.display(),
                meta.mode() & 0o7777
            ),
        )
        .with_endpoint(endpoint)),
        Ok(meta) => Ok(meta.mode() & 0o077 == 0),
    }
}

/// Makes room for the socket: nothing there is fine; a socket nobody answers on is
/// removed; a live socket or any other file is refused and left alone.
fn reclaim_stale(endpoint: &Endpoint, path: &Path) -> Result<()> {
    let meta = match fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(bind_error(endpoint, e)),
        Ok(meta) => meta,
    };
    if !meta.file_type().is_socket() {
        let what = if meta.file_type().is_symlink() {
            "a symbolic link"
        } else if meta.is_dir() {
            "a directory"
        } else {
            "a file that is not a socket"
        };
        return Err(Error::new(
            ErrorKind::NotASocket,
            format!(
                "refusing to bind {endpoint}: {} is {what}, and pipegate never deletes it; \
                 remove it yourself or choose another path",
                path.display()
            ),
        )
        .with_endpoint(endpoint));
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => Err(Error::new(
            ErrorKind::AddrInUse,
            format!("{endpoint} is already in use by another process"),
        )
        .with_endpoint(endpoint)),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            tracing::info!(path = %path.display(), "replacing stale socket file (nothing answers on it)");
            match fs::remove_file(path) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(bind_error(endpoint, e)),
            }
        }
        Err(e) => Err(bind_error(endpoint, e)),
    }
}

/// Binds in a fresh 0700 directory next to the target, sets 0600, then hard-links the
/// socket into place. `link` fails if anything appeared at the target meanwhile, so a
/// racing process's socket is never replaced, and the socket is never reachable at a
/// looser mode.
fn bind_via_private_dir(endpoint: &Endpoint, path: &Path, parent: &Path) -> Result<UnixListener> {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let dir = parent.join(format!(
        ".pg{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let temp = dir.join("s");
    if rustix::net::SocketAddrUnix::new(&temp).is_err() {
        return Err(Error::new(
            ErrorKind::PathTooLong,
            format!(
                "cannot bind {endpoint} safely: its directory {} is not private (mode 0700) and \
                 the path is too long to bind through a private temporary directory; use a \
                 shorter path or a 0700 directory",
                parent.display()
            ),
        )
        .with_endpoint(endpoint));
    }
    fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .map_err(|e| bind_error(endpoint, e))?;
    let result = (|| {
        let listener = UnixListener::bind(&temp).map_err(|e| bind_error(endpoint, e))?;
        set_mode(endpoint, &temp, 0o600)?;
        fs::hard_link(&temp, path).map_err(|e| {
            if e.kind() == io::ErrorKind::AlreadyExists {
                Error::new(
                    ErrorKind::AddrInUse,
                    format!("{endpoint} is already in use by another process"),
                )
                .with_endpoint(endpoint)
            } else {
                bind_error(endpoint, e)
            }
        })?;
        Ok(listener)
    })();
    let _ = fs::remove_file(&temp);
    let _ = fs::remove_dir(&dir);
    result
}

fn set_mode(endpoint: &Endpoint, path: &Path, mode: u32) -> Result<()> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(|e| {
        Error::new(
            ErrorKind::Io,
            format!("cannot set mode {mode:04o} on {}", path.display()),
        )
        .with_endpoint(endpoint)
        .with_source(e)
    })
}

pub(crate) async fn connect_local(
    endpoint: &Endpoint,
    _options: &ConnectOptions,
) -> Result<LocalStream> {
    let Some(path) = endpoint.unix_path() else {
        return Err(unsupported(endpoint));
    };
    check_path_len(endpoint, path)?;
    UnixStream::connect(path)
        .await
        .map_err(|e| connect_error(endpoint, e))
}

/// A note on who owns an endpoint, for "permission denied" messages.
pub(crate) fn owner_note(endpoint: &Endpoint) -> String {
    let Some(path) = endpoint.unix_path() else {
        return String::new();
    };
    match fs::metadata(path) {
        Ok(meta) => format!(
            " — the socket belongs to uid {} (mode {:04o}) and you are uid {}",
            meta.uid(),
            meta.mode() & 0o777,
            rustix::process::geteuid().as_raw()
        ),
        Err(_) => match path.parent().and_then(|dir| fs::metadata(dir).ok()) {
            Some(meta) => format!(
                " — its directory belongs to uid {} (mode {:04o}) and you are uid {}",
                meta.uid(),
                meta.mode() & 0o777,
                rustix::process::geteuid().as_raw()
            ),
            None => String::new(),
        },
    }
}

/// The soft open-files limit the process started with, once `raise_open_files_limit`
/// changed it; [`NOT_RAISED`] before.
static STARTED_WITH: AtomicU64 = AtomicU64::new(NOT_RAISED);
const NOT_RAISED: u64 = u64::MAX;

/// What the soft limit goes up to when the hard limit is unlimited (macOS), and the
/// fallback where the system refuses the hard limit itself (macOS's `OPEN_MAX`).
const UNLIMITED_TARGET: u64 = 1 << 20;
const OPEN_MAX: u64 = 10_240;

pub(crate) fn raise_open_files_limit() -> io::Result<OpenFilesLimit> {
    let limit = getrlimit(Resource::Nofile);
    let Some(current) = limit.current else {
        return Ok(OpenFilesLimit {
            before: None,
            after: None,
        });
    };
    let target = limit.maximum.unwrap_or(UNLIMITED_TARGET);
    let mut after = current;
    for candidate in [target, target.min(OPEN_MAX)] {
        if candidate <= current {
            break;
        }
        let new = Rlimit {
            current: Some(candidate),
            maximum: limit.maximum,
        };
        match setrlimit(Resource::Nofile, new) {
            Ok(()) => {
                after = candidate;
                break;
            }
            Err(rustix::io::Errno::INVAL) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    if after != current {
        STARTED_WITH.store(current, Ordering::Relaxed);
    }
    Ok(OpenFilesLimit {
        before: Some(current),
        after: Some(after),
    })
}

pub(crate) fn restore_open_files_limit() -> io::Result<()> {
    let started_with = STARTED_WITH.load(Ordering::Relaxed);
    if started_with == NOT_RAISED {
        return Ok(());
    }
    let limit = getrlimit(Resource::Nofile);
    let old = Rlimit {
        current: Some(started_with),
        maximum: limit.maximum,
    };
    setrlimit(Resource::Nofile, old).map_err(io::Error::from)
}

/// The identity peers are checked against: the effective uid, in decimal.
pub(crate) fn current_user_id() -> io::Result<String> {
    Ok(rustix::process::geteuid().as_raw().to_string())
}
