//! [`Registry`]: the records directory, atomic writes, the per-name lock, and the
//! single-instance guard ([`Claim`] → [`Registration`]).

use std::fs::{self, File};
use std::io::{self, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use pipegate_transport::Endpoint;

use crate::error::{Error, ErrorKind, Result};
use crate::health::{inspect, new_nonce, State, Status, HEALTH_TIMEOUT};
use crate::record::{InstanceMode, Record};
use crate::sys;
use crate::token::{read_token_file, remove_token, write_token};

/// The default instance name.
pub const DEFAULT_NAME: &str = "pipegate";

/// How long [`Registry::claim`] waits for another starting instance to release the lock
/// by default. It covers several instances each probing a hung peer for
/// [`HEALTH_TIMEOUT`].
pub const LOCK_TIMEOUT: Duration = Duration::from_secs(30);

/// Records bigger than this are not records.
const MAX_RECORD_BYTES: u64 = 64 * 1024;

/// The state directory: `$XDG_STATE_HOME` if it is set to an absolute path, else
/// `~/.local/state` on Linux and other Unixes, `~/Library/Application Support` on
/// macOS and `%LOCALAPPDATA%` on Windows.
///
/// # Errors
///
/// [`ErrorKind::NoStateDir`] when none of those is available.
pub fn state_dir() -> Result<PathBuf> {
    std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(sys::default_state_home)
        .ok_or_else(|| {
            Error::new(
                ErrorKind::NoStateDir,
                "no state directory: XDG_STATE_HOME is not an absolute path and the home \
                 directory (HOME, or LOCALAPPDATA on Windows) is not set",
            )
        })
}

/// Checks an instance name: 1–64 characters from `A-Z a-z 0-9 . _ -`, not starting
/// with `.` (so it is a safe file name and a valid pipe name everywhere).
///
/// # Errors
///
/// [`ErrorKind::InvalidName`].
pub fn validate_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(Error::new(
            ErrorKind::InvalidName,
            format!(
                "invalid instance name {name:?}: use 1-64 characters from A-Z, a-z, 0-9, \
                 '-', '_', '.' (not starting with '.')"
            ),
        ))
    }
}

/// One file in the records directory.
#[derive(Debug)]
#[non_exhaustive]
pub struct Entry {
    /// The instance name (the file name without `.json`).
    pub name: String,
    /// The record file.
    pub path: PathBuf,
    /// The record, or why it could not be read (a corrupt file does not hide the rest).
    pub record: Result<Record>,
}

/// The records directory, `<root>/instances`, where `root` is normally
/// `<state dir>/pipegate`.
///
/// Directories are created on first write with mode 0700 (Windows: a protected DACL for
/// the current user and SYSTEM, on `root` and `instances`); an existing `instances`
/// directory owned by someone else, or that is a symlink, is refused, and a looser mode
/// is tightened to 0700. Records are written atomically (a temporary file in the same
/// directory, fsync, rename) with mode 0600. A symlink where a record should be is
/// refused on read and on write.
#[derive(Debug, Clone)]
pub struct Registry {
    root: PathBuf,
    dir: PathBuf,
}

impl Registry {
    /// The registry under `root` (records in `root/instances`).
    pub fn new(root: impl Into<PathBuf>) -> Registry {
        let root = root.into();
        let dir = root.join("instances");
        Registry { root, dir }
    }

    /// The registry under [`state_dir`]`/pipegate`.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::NoStateDir`].
    pub fn from_env() -> Result<Registry> {
        Ok(Registry::new(state_dir()?.join("pipegate")))
    }

    /// `root`, usually `<state dir>/pipegate`.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The records directory, `root/instances`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the record of `name` lives.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidName`].
    pub fn record_path(&self, name: &str) -> Result<PathBuf> {
        validate_name(name)?;
        Ok(self.dir.join(format!("{name}.json")))
    }

    /// Where the bearer token of `name` lives (see [`Claim::with_token`]).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidName`].
    pub fn token_path(&self, name: &str) -> Result<PathBuf> {
        validate_name(name)?;
        Ok(token_path_of(&self.dir.join(format!("{name}.json"))))
    }

    fn lock_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.lock"))
    }

    fn ensure_dirs(&self) -> Result<()> {
        sys::secure_dir(&self.root, false)?;
        sys::secure_dir(&self.dir, true)
    }

    /// Reads the record of `name`, with its token if it has one; `None` if there is none.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Symlink`] (a link is never followed), [`ErrorKind::Corrupt`] (not a
    /// regular file, too big, or not a record; or a token file that holds no token),
    /// [`ErrorKind::InvalidName`], or [`ErrorKind::Io`].
    pub fn read(&self, name: &str) -> Result<Option<Record>> {
        let path = self.record_path(name)?;
        read_record(&path)
    }

    /// Writes `record` as the record of `name`, atomically, creating the directories.
    /// Callers racing other instances should go through [`claim`](Registry::claim)
    /// instead, which holds the per-name lock.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Symlink`], [`ErrorKind::InsecureDirectory`],
    /// [`ErrorKind::InvalidName`] or [`ErrorKind::Io`].
    pub fn write(&self, name: &str, record: &Record) -> Result<()> {
        let path = self.record_path(name)?;
        self.ensure_dirs()?;
        write_atomic(&self.dir, &path, record.to_json().as_bytes())
    }

    /// Every record file, sorted by name. Unreadable or corrupt records are listed with
    /// their error; a missing directory is an empty list.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Io`] if the directory exists but cannot be read.
    pub fn list(&self) -> Result<Vec<Entry>> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io("cannot list", &self.dir, e)),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| Error::io("cannot list", &self.dir, e))?;
            let file_name = entry.file_name();
            let Some(name) = file_name
                .to_str()
                .and_then(|n| n.strip_suffix(".json"))
                .filter(|n| validate_name(n).is_ok())
            else {
                continue;
            };
            let path = entry.path();
            let record = read_record(&path).and_then(|r| {
                r.ok_or_else(|| {
                    Error::new(
                        ErrorKind::Io,
                        format!("{} disappeared while listing", path.display()),
                    )
                    .with_path(&path)
                })
            });
            out.push(Entry {
                name: name.to_owned(),
                path,
                record,
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Reads and probes the record of `name` (see [`inspect`]).
    ///
    /// # Errors
    ///
    /// As [`read`](Registry::read): a record that cannot be read is an error, not a state.
    pub async fn status(&self, name: &str, timeout: Duration) -> Result<Status> {
        match self.read(name)? {
            None => Ok(Status::not_found()),
            Some(record) => Ok(inspect(&record, timeout).await),
        }
    }

    /// Removes the record of `name` if it still carries `nonce`, under the per-name lock
    /// (waiting up to `lock_timeout`). Returns whether it was removed; a record that now
    /// belongs to another instance is left alone.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::LockTimeout`], or the errors of [`read`](Registry::read) and of
    /// removing the file.
    pub fn remove_if_owned(&self, name: &str, nonce: &str, lock_timeout: Duration) -> Result<bool> {
        let path = self.record_path(name)?;
        let _lock = Lock::acquire_blocking(&self.lock_path(name), lock_timeout)?;
        remove_locked(&path, nonce)
    }

    /// Removes every [`State::Stale`] record (rechecked under its lock, so a record
    /// taken over meanwhile survives) and returns the names removed. Running,
    /// unhealthy and unreadable records are left alone.
    ///
    /// # Errors
    ///
    /// The errors of [`list`](Registry::list), of taking a lock, and of removing a file.
    pub async fn prune(&self, timeout: Duration) -> Result<Vec<String>> {
        let mut removed = Vec::new();
        for entry in self.list()? {
            let Ok(record) = entry.record else { continue };
            if inspect(&record, timeout).await.state != State::Stale {
                continue;
            }
            let _lock = Lock::acquire(&self.lock_path(&entry.name), LOCK_TIMEOUT).await?;
            // Re-probe under the lock: a new instance may have taken the name over.
            let Some(current) = read_record(&entry.path)? else {
                continue;
            };
            if current.nonce == record.nonce
                && inspect(&current, timeout).await.state == State::Stale
                && remove_locked(&entry.path, &current.nonce)?
            {
                removed.push(entry.name);
            }
        }
        Ok(removed)
    }

    /// The single-instance guard, step one: takes the per-name OS file lock (an advisory
    /// `flock`/`LockFileEx` on `<name>.lock`, never deleted) and decides, while holding
    /// it, whether this process may become instance `name`:
    ///
    /// | existing record            | outcome                                                |
    /// |----------------------------|--------------------------------------------------------|
    /// | none                       | a [`Claim`]                                            |
    /// | [`State::Running`]         | [`ErrorKind::AlreadyRunning`]: `pipegate is already running at URL (PID N)` |
    /// | [`State::Stale`]           | the record is removed; a [`Claim`]                     |
    /// | failing, with our own pid  | treated as stale: that pid was reused by this process  |
    /// | [`State::Unhealthy`]       | [`ErrorKind::Unhealthy`], or a [`Claim`] with `replace` |
    /// | unreadable (corrupt JSON)  | [`ErrorKind::Corrupt`], or a [`Claim`] with `replace`  |
    /// | a symlink                  | [`ErrorKind::Symlink`], always                         |
    ///
    /// The lock stays held until the claim is [registered](Claim::register) or dropped,
    /// so bind the listeners in between: a second instance starting at the same moment
    /// waits, then finds this one running and is refused before it touches any socket.
    ///
    /// # Errors
    ///
    /// The outcomes above, [`ErrorKind::LockTimeout`], [`ErrorKind::InvalidName`],
    /// [`ErrorKind::InsecureDirectory`] or [`ErrorKind::Io`].
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: dropping the future releases the lock if it was taken.
    pub async fn claim(&self, name: &str, options: &ClaimOptions) -> Result<Claim> {
        let path = self.record_path(name)?;
        self.ensure_dirs()?;
        let lock = Lock::acquire(&self.lock_path(name), options.lock_timeout).await?;
        let mut replaced = None;
        match read_record(&path) {
            Ok(None) => {}
            Ok(Some(record)) => {
                let mut status = inspect(&record, options.health_timeout).await;
                // A failing record that names this very process cannot be a live other
                // instance (this one has not registered yet): its process died and the
                // pid was reused by us, which happens quickly where pids are small (Wine).
                if status.state == State::Unhealthy && record.pid == std::process::id() {
                    status.state = State::Stale;
                }
                match status.state {
                    State::Running => {
                        return Err(Error::new(
                            ErrorKind::AlreadyRunning,
                            format!(
                                "pipegate is already running at {} (PID {})",
                                record.url, record.pid
                            ),
                        )
                        .with_path(&path)
                        .with_instance(&record));
                    }
                    State::Unhealthy if !options.replace => {
                        let err = Error::new(
                            ErrorKind::Unhealthy,
                            format!(
                                "an instance named {name:?} is still alive (PID {}) but fails its \
                                 health check at {}",
                                record.pid, record.url
                            ),
                        )
                        .with_path(&path)
                        .with_instance(&record);
                        return Err(match status.reason {
                            Some(reason) => err.with_source(reason),
                            None => err,
                        });
                    }
                    State::Unhealthy => {
                        tracing::warn!(name, pid = record.pid, url = %record.url,
                            "replacing the record of an unhealthy instance");
                    }
                    State::Stale | State::NotFound => {
                        tracing::info!(name, pid = record.pid, url = %record.url,
                            "taking over a stale instance record");
                        remove_locked(&path, &record.nonce)?;
                    }
                }
                replaced = Some(status);
            }
            Err(e) if e.kind() == ErrorKind::Corrupt && options.replace => {
                tracing::warn!(name, error = %e, "replacing an unreadable instance record");
            }
            Err(e) => return Err(e),
        }
        Ok(Claim {
            registry: self.clone(),
            name: name.to_owned(),
            path,
            nonce: new_nonce()?,
            replaced,
            token: None,
            _lock: lock,
        })
    }
}

/// How [`Registry::claim`] decides.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ClaimOptions {
    /// Take over the name from an instance that is alive but unhealthy (or whose record
    /// is unreadable). A running instance is never replaced.
    pub replace: bool,
    /// How long probing the existing instance may take.
    pub health_timeout: Duration,
    /// How long to wait for another starting instance to release the lock.
    pub lock_timeout: Duration,
}

impl Default for ClaimOptions {
    fn default() -> ClaimOptions {
        ClaimOptions {
            replace: false,
            health_timeout: HEALTH_TIMEOUT,
            lock_timeout: LOCK_TIMEOUT,
        }
    }
}

impl ClaimOptions {
    /// The defaults: no replacing, [`HEALTH_TIMEOUT`], [`LOCK_TIMEOUT`].
    pub fn new() -> ClaimOptions {
        ClaimOptions::default()
    }

    /// Sets [`replace`](ClaimOptions::replace).
    pub fn replace(mut self, replace: bool) -> ClaimOptions {
        self.replace = replace;
        self
    }

    /// Sets [`health_timeout`](ClaimOptions::health_timeout).
    pub fn health_timeout(mut self, timeout: Duration) -> ClaimOptions {
        self.health_timeout = timeout;
        self
    }

    /// Sets [`lock_timeout`](ClaimOptions::lock_timeout).
    pub fn lock_timeout(mut self, timeout: Duration) -> ClaimOptions {
        self.lock_timeout = timeout;
        self
    }
}

/// The right to become instance `name`, holding its lock. Pass [`nonce`](Claim::nonce)
/// to the server (it answers health checks with it), bind, then
/// [`register`](Claim::register). Dropping it releases the lock and writes nothing.
#[derive(Debug)]
pub struct Claim {
    registry: Registry,
    name: String,
    path: PathBuf,
    nonce: String,
    replaced: Option<Status>,
    token: Option<String>,
    _lock: Lock,
}

impl Claim {
    /// The instance name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// This instance's fresh nonce.
    pub fn nonce(&self) -> &str {
        &self.nonce
    }

    /// The stale or unhealthy instance this claim took over, if any.
    pub fn replaced(&self) -> Option<&Status> {
        self.replaced.as_ref()
    }

    /// The bearer token the instance's TCP listeners require ([`new_token`]), written by
    /// [`register`](Claim::register) to [`Registry::token_path`] (mode 0600, before the
    /// record) and removed with the record. `None` (the default): no token file, and a
    /// stale one of an earlier instance is removed.
    ///
    /// [`new_token`]: crate::new_token
    pub fn with_token(mut self, token: Option<String>) -> Claim {
        self.token = token;
        self
    }

    /// Writes the token file (see [`with_token`](Claim::with_token)), then the record
    /// (this pid, the claim's nonce, now), and releases the lock.
    ///
    /// # Panics
    ///
    /// If `listeners` is empty.
    ///
    /// # Errors
    ///
    /// The errors of [`Registry::write`].
    pub fn register(
        self,
        listeners: Vec<Endpoint>,
        mode: InstanceMode,
        upstream: Option<Endpoint>,
    ) -> Result<Registration> {
        let record =
            Record::new(listeners, mode, upstream, self.nonce.clone()).with_token(self.token);
        let token_path = token_path_of(&self.path);
        match record.token() {
            // Written first: whoever finds the record can find its token.
            Some(token) => write_token(&token_path, token)?,
            None => remove_token(&token_path)?,
        }
        if let Err(e) = write_atomic(&self.registry.dir, &self.path, record.to_json().as_bytes()) {
            let _ = remove_token(&token_path);
            return Err(e);
        }
        Ok(Registration {
            registry: self.registry,
            name: self.name,
            record,
            done: false,
        })
    }
}

/// A written record. [`deregister`](Registration::deregister) it at shutdown; dropping it
/// does the same, best effort. Either way the file is removed only if it still holds
/// this instance's nonce.
#[derive(Debug)]
pub struct Registration {
    registry: Registry,
    name: String,
    record: Record,
    done: bool,
}

impl Registration {
    /// What was written.
    pub fn record(&self) -> &Record {
        &self.record
    }

    /// The instance name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Removes the record if it is still ours (under the lock, waiting up to 5 s).
    /// Returns `false` if another instance's record is there now, which is left alone.
    ///
    /// # Errors
    ///
    /// The errors of [`Registry::remove_if_owned`].
    pub fn deregister(mut self) -> Result<bool> {
        self.done = true;
        self.registry
            .remove_if_owned(&self.name, &self.record.nonce, Duration::from_secs(5))
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        if let Err(e) =
            self.registry
                .remove_if_owned(&self.name, &self.record.nonce, Duration::from_secs(2))
        {
            tracing::warn!(name = %self.name, error = %e, "could not remove the instance record");
        }
    }
}

/// An exclusive OS lock on a file, released when dropped (closing the file releases it).
/// The lock file is never deleted: deleting it would let two processes lock two
/// different files of the same name.
#[derive(Debug)]
struct Lock {
    _file: File,
}

/// How often a contended lock is retried.
const LOCK_RETRY: Duration = Duration::from_millis(20);

impl Lock {
    fn open(path: &Path) -> Result<File> {
        sys::open_lock_file(path).map_err(|e| Error::io("cannot open the lock file", path, e))
    }

    fn try_lock(path: &Path, file: &File) -> Result<bool> {
        // Called through the trait: std's inherent `File::try_lock` needs a newer Rust
        // than this workspace's minimum.
        match fs4::FileExt::try_lock(file) {
            Ok(()) => Ok(true),
            Err(fs4::TryLockError::WouldBlock) => Ok(false),
            Err(fs4::TryLockError::Error(e)) => Err(Error::io("cannot lock", path, e)),
        }
    }

    fn timed_out(path: &Path, timeout: Duration) -> Error {
        Error::new(
            ErrorKind::LockTimeout,
            format!(
                "another pipegate held {} for more than {timeout:?}",
                path.display()
            ),
        )
        .with_path(path)
    }

    /// Waits (asynchronously) for the lock, up to `timeout`.
    async fn acquire(path: &Path, timeout: Duration) -> Result<Lock> {
        let file = Lock::open(path)?;
        let deadline = Instant::now() + timeout;
        loop {
            if Lock::try_lock(path, &file)? {
                return Ok(Lock { _file: file });
            }
            if Instant::now() >= deadline {
                return Err(Lock::timed_out(path, timeout));
            }
            tokio::time::sleep(LOCK_RETRY).await;
        }
    }

    /// Waits (blocking the thread) for the lock, up to `timeout`.
    fn acquire_blocking(path: &Path, timeout: Duration) -> Result<Lock> {
        let file = Lock::open(path)?;
        let deadline = Instant::now() + timeout;
        loop {
            if Lock::try_lock(path, &file)? {
                return Ok(Lock { _file: file });
            }
            if Instant::now() >= deadline {
                return Err(Lock::timed_out(path, timeout));
            }
            std::thread::sleep(LOCK_RETRY);
        }
    }
}

/// `<name>.token` next to the record `<name>.json`.
fn token_path_of(record: &Path) -> PathBuf {
    record.with_extension("token")
}

/// Removes `path`, and its token file, if it holds a record with `nonce`; the caller
/// holds the lock.
fn remove_locked(path: &Path, nonce: &str) -> Result<bool> {
    let record = match read_json(path) {
        Ok(Some(record)) => record,
        Ok(None) => return Ok(false),
        Err(e) => return Err(e),
    };
    if record.nonce != nonce {
        return Ok(false);
    }
    // The token first: a record never outlives its token file's removal attempt.
    remove_token(&token_path_of(path))?;
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::io("cannot remove", path, e)),
    }
}

fn symlink_error(path: &Path, doing: &str) -> Error {
    Error::new(
        ErrorKind::Symlink,
        format!(
            "refusing to {doing} the instance record {}: it is a symbolic link",
            path.display()
        ),
    )
    .with_path(path)
}

/// Reads the record at `path` and the token file next to it.
fn read_record(path: &Path) -> Result<Option<Record>> {
    let Some(record) = read_json(path)? else {
        return Ok(None);
    };
    let token = read_token_file(&token_path_of(path))?;
    Ok(Some(record.with_token(token)))
}

/// Reads the record at `path` alone.
fn read_json(path: &Path) -> Result<Option<Record>> {
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("cannot read", path, e)),
        Ok(meta) if meta.file_type().is_symlink() => return Err(symlink_error(path, "read")),
        Ok(_) => {}
    }
    // Opened without following links, so a link swapped in after the check is refused too.
    let file = match sys::open_nofollow(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(match fs::symlink_metadata(path) {
                Ok(meta) if meta.file_type().is_symlink() => symlink_error(path, "read"),
                _ => Error::io("cannot read", path, e),
            })
        }
    };
    let meta = file
        .metadata()
        .map_err(|e| Error::io("cannot read", path, e))?;
    if meta.file_type().is_symlink() {
        return Err(symlink_error(path, "read"));
    }
    let corrupt = |why: String| {
        Error::new(
            ErrorKind::Corrupt,
            format!("the instance record {} {why}", path.display()),
        )
        .with_path(path)
    };
    if !meta.is_file() {
        return Err(corrupt("is not a regular file".into()));
    }
    let mut text = String::new();
    file.take(MAX_RECORD_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| corrupt("is not UTF-8 text".into()).with_source(e))?;
    if text.len() as u64 > MAX_RECORD_BYTES {
        return Err(corrupt(format!("is larger than {MAX_RECORD_BYTES} bytes")));
    }
    Record::from_json(&text).map(Some).map_err(|e| {
        corrupt("is not a valid record (remove it, or start with --replace)".into()).with_source(e)
    })
}

/// Temporary file in `dir`, fsync, rename over `path`, fsync `dir`. A symlink at `path`
/// is refused; the temporary file is removed on any failure.
pub(crate) fn write_atomic(dir: &Path, path: &Path, bytes: &[u8]) -> Result<()> {
    if fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
        return Err(symlink_error(path, "write"));
    }
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let suffix = new_nonce()?;
    let temp = dir.join(format!(
        ".{file_name}.tmp-{}-{}",
        std::process::id(),
        &suffix[..8]
    ));
    let result = (|| {
        let mut file =
            sys::create_private_file(&temp).map_err(|e| Error::io("cannot create", &temp, e))?;
        file.write_all(bytes)
            .and_then(|()| file.sync_all())
            .map_err(|e| Error::io("cannot write", &temp, e))?;
        drop(file);
        if fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
            return Err(symlink_error(path, "write"));
        }
        fs::rename(&temp, path).map_err(|e| Error::io("cannot replace", path, e))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
        return result;
    }
    if let Err(e) = sys::sync_dir(dir) {
        tracing::debug!(dir = %dir.display(), error = %e, "could not fsync the records directory");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["pipegate", "a", "my-api_2.x", &"n".repeat(64)] {
            assert!(validate_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".hidden", "../x", "a/b", "a b", "é", &"n".repeat(65)] {
            let err = validate_name(bad).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidName, "{bad}");
        }
    }
}
