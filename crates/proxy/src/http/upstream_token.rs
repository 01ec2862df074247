//! The bearer token a bridge presents to its upstream ([`Config::upstream_token_file`]).
//!
//! The file is read at bind (an unusable file is an error then) and again whenever its
//! modification time or size changes, so a bridge in front of a `pipegate serve` that
//! restarts (and writes a new token) keeps working without a restart of its own. If a
//! later read fails, the last good token is kept and the failure logged, never the token.
//!
//! [`Config::upstream_token_file`]: crate::Config::upstream_token_file

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use http::HeaderValue;

/// Token files bigger than this are not token files.
const MAX_TOKEN_FILE: u64 = 4096;

#[derive(Debug)]
pub(crate) struct UpstreamToken {
    path: PathBuf,
    current: Mutex<Loaded>,
}

/// One read of the file. `Debug` shows no token: `HeaderValue`s marked sensitive print
/// as `Sensitive`.
#[derive(Debug, Clone)]
struct Loaded {
    stamp: Stamp,
    header: HeaderValue,
}

type Stamp = (Option<SystemTime>, u64);

impl UpstreamToken {
    /// Reads `path` once.
    ///
    /// # Errors
    ///
    /// The file cannot be read, is larger than 4 KiB, or does not hold one token
    /// (visible ASCII, no spaces); the error never contains the file's contents.
    pub(crate) fn load(path: &Path) -> io::Result<UpstreamToken> {
        let loaded = read(path)?;
        Ok(UpstreamToken {
            path: path.to_owned(),
            current: Mutex::new(loaded),
        })
    }

    /// `Bearer <token>` for the next upstream request (marked sensitive, so HTTP/2
    /// never indexes it and `Debug` never prints it).
    pub(crate) fn header(&self) -> HeaderValue {
        let mut current = match self.current.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        let changed = stamp(&self.path).map_or(true, |now| now != current.stamp);
        if changed {
            match read(&self.path) {
                Ok(loaded) => *current = loaded,
                Err(e) => {
                    tracing::warn!(path = %self.path.display(), error = %e,
                        "cannot re-read the upstream token file; keeping the last token");
                }
            }
        }
        current.header.clone()
    }
}

fn stamp(path: &Path) -> io::Result<Stamp> {
    let meta = fs::metadata(path)?;
    Ok((meta.modified().ok(), meta.len()))
}

fn read(path: &Path) -> io::Result<Loaded> {
    let before = stamp(path)?;
    if before.1 > MAX_TOKEN_FILE {
        return Err(invalid("is larger than 4 KiB: not a token file"));
    }
    let text = fs::read_to_string(path)?;
    let token = text.trim();
    if token.is_empty() {
        return Err(invalid("is empty"));
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(invalid(
            "does not hold one token (visible ASCII characters, no spaces)",
        ));
    }
    let mut header = HeaderValue::from_str(&format!("Bearer {token}"))
        .map_err(|_| invalid("does not hold a valid header value"))?;
    header.set_sensitive(true);
    Ok(Loaded {
        stamp: before,
        header,
    })
}

fn invalid(why: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("the file {why}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_trims_and_follows_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t");
        fs::write(&path, "first\n").unwrap();
        let token = UpstreamToken::load(&path).unwrap();
        assert_eq!(token.header(), "Bearer first");
        assert!(token.header().is_sensitive());
        assert!(!format!("{token:?}").contains("first"), "{token:?}");
        // A different size is noticed even within the file system's time granularity.
        fs::write(&path, "second-token\n").unwrap();
        assert_eq!(token.header(), "Bearer second-token");
        // An unusable rewrite keeps the last good token.
        fs::write(&path, "two words").unwrap();
        assert_eq!(token.header(), "Bearer second-token");
    }

    #[test]
    fn refuses_unusable_files_without_echoing_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t");
        for bad in ["", "  \n", "secret value", "x\u{e9}"] {
            fs::write(&path, bad).unwrap();
            let err = UpstreamToken::load(&path).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{bad:?}");
            assert!(!err.to_string().contains("secret"), "{err}");
        }
        let err = UpstreamToken::load(&dir.path().join("missing")).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }
}
