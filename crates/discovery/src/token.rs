//! Bearer tokens of TCP listeners: making them, and the private files they live in.
//!
//! `pipegate serve` requires a token on its TCP listeners (loopback TCP is open to every
//! local user and to web pages through DNS rebinding). The token is stored next to the
//! instance record as `<name>.token`, written like the record (a new file with mode 0600
//! — on Windows it inherits the records directory's user-only DACL — then renamed into
//! place), and removed with it. It is never in the record itself, so nothing that prints
//! a record prints the token.

use std::fmt;
use std::fs;
use std::io::{self, Read as _};
use std::path::{Path, PathBuf};

use crate::error::{Error, ErrorKind, Result};
use crate::registry::write_atomic;
use crate::sys;

/// Token files bigger than this are not token files.
const MAX_TOKEN_BYTES: u64 = 4096;

/// A fresh bearer token: 256 bits from the OS's random source, as 64 lowercase hex
/// digits (usable as an HTTP header value and as a WebSocket subprotocol name).
///
/// # Errors
///
/// [`ErrorKind::Io`] if the OS has no randomness to give.
pub fn new_token() -> Result<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| {
        Error::new(
            ErrorKind::Io,
            "the OS random source failed while making a token",
        )
        .with_source(io::Error::other(e.to_string()))
    })?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// A secret string whose `Debug` form is `<redacted>`.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Secret(pub(crate) String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Reads a token file: `None` if there is none. A symlink is refused, like a record.
///
/// # Errors
///
/// [`ErrorKind::Symlink`], [`ErrorKind::Corrupt`] (not a regular file, too big, empty,
/// or not one token), or [`ErrorKind::Io`]. No error contains the file's contents.
pub fn read_token_file(path: &Path) -> Result<Option<String>> {
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("cannot read", path, e)),
        Ok(meta) if meta.file_type().is_symlink() => return Err(symlink(path)),
        Ok(_) => {}
    }
    let file = match sys::open_nofollow(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("cannot read", path, e)),
    };
    let meta = file
        .metadata()
        .map_err(|e| Error::io("cannot read", path, e))?;
    let corrupt = |why: &str| {
        Error::new(
            ErrorKind::Corrupt,
            format!("the token file {} {why}", path.display()),
        )
        .with_path(path)
    };
    if meta.file_type().is_symlink() {
        return Err(symlink(path));
    }
    if !meta.is_file() {
        return Err(corrupt("is not a regular file"));
    }
    let mut text = String::new();
    file.take(MAX_TOKEN_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|_| corrupt("is not text"))?;
    if text.len() as u64 > MAX_TOKEN_BYTES {
        return Err(corrupt("is larger than 4 KiB"));
    }
    let token = text.trim();
    if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(corrupt(
            "does not hold one token (visible ASCII characters, no spaces)",
        ));
    }
    Ok(Some(token.to_owned()))
}

fn symlink(path: &Path) -> Error {
    Error::new(
        ErrorKind::Symlink,
        format!(
            "refusing to read the token file {}: it is a symbolic link",
            path.display()
        ),
    )
    .with_path(path)
}

/// Writes `token` (and a newline) to `path` atomically with mode 0600; a symlink there is
/// refused.
pub(crate) fn write_token(path: &Path, token: &str) -> Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    write_atomic(dir, path, format!("{token}\n").as_bytes())
}

/// Removes `path` if it exists; `NotFound` is not an error.
pub(crate) fn remove_token(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("cannot remove", path, e)),
    }
}

/// A token written to a file of the caller's choosing (`pipegate serve --token-file`),
/// removed when dropped if it still holds this token.
///
/// The file is created with mode 0600 on Unix. On Windows it gets the ACL its directory
/// passes on, so choose a directory only you can read.
pub struct TokenFile {
    path: PathBuf,
    token: Secret,
}

impl fmt::Debug for TokenFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenFile")
            .field("path", &self.path)
            .field("token", &self.token)
            .finish()
    }
}

impl TokenFile {
    /// Writes `token` to `path` (atomically: a temporary file in the same directory, then a
    /// rename; a symlink at `path` is refused).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Symlink`] or [`ErrorKind::Io`].
    pub fn create(path: &Path, token: &str) -> Result<TokenFile> {
        write_token(path, token)?;
        Ok(TokenFile {
            path: path.to_owned(),
            token: Secret(token.to_owned()),
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TokenFile {
    fn drop(&mut self) {
        if matches!(read_token_file(&self.path), Ok(Some(t)) if t == self.token.0) {
            if let Err(e) = remove_token(&self.path) {
                tracing::warn!(path = %self.path.display(), error = %e, "could not remove the token file");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_64_lowercase_hex_and_differ() {
        let a = new_token().unwrap();
        assert_eq!(a.len(), 64);
        assert!(
            a.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')),
            "{a}"
        );
        assert_ne!(a, new_token().unwrap());
    }

    #[test]
    fn token_files_round_trip_and_are_removed_only_if_ours() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.token");
        let file = TokenFile::create(&path, "abc").unwrap();
        assert!(!format!("{file:?}").contains("abc"));
        assert_eq!(read_token_file(&path).unwrap().as_deref(), Some("abc"));
        drop(file);
        assert!(!path.exists());
        let file = TokenFile::create(&path, "abc").unwrap();
        fs::write(&path, "someone-else\n").unwrap();
        drop(file);
        assert_eq!(
            read_token_file(&path).unwrap().as_deref(),
            Some("someone-else")
        );
        fs::write(&path, "two words").unwrap();
        let err = read_token_file(&path).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Corrupt);
        assert!(!err.to_string().contains("words"), "{err}");
        assert_eq!(read_token_file(&dir.path().join("none")).unwrap(), None);
    }
}
