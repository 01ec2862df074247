//! [`path_security`]: who owns a file and who else may use it, for diagnostics.

use std::io;
use std::path::Path;

use crate::sys;

/// Ownership and access of a file or directory, in OS-neutral terms.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PathSecurity {
    /// The owner: `uid N` on Unix, a SID string on Windows.
    pub owner: String,
    /// Whether the current user owns it.
    pub owned_by_me: bool,
    /// Unix permission bits (`0o600`, …); `None` on Windows.
    pub mode: Option<u32>,
    /// Unix: no permission bits for group or others. Windows: a protected DACL whose
    /// allow entries name only the current user and SYSTEM.
    pub private: bool,
    /// A one-line summary (`mode 0700, owner uid 1000` or `owner S-1-…, DACL D:P(…)`).
    pub description: String,
}

/// Reads the owner and access rules of `path` (a final symlink is not followed on Unix).
///
/// # Errors
///
/// The OS error, e.g. `NotFound`.
pub fn path_security(path: &Path) -> io::Result<PathSecurity> {
    sys::path_security(path)
}
