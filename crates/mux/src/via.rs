//! [`Via`]: how to reach the far side's `pipegate mux`.

use std::fmt;
use std::str::FromStr;

use pipegate_transport::Endpoint;

use crate::error::{Error, ErrorKind};

/// The route to a `pipegate mux`: a helper process to start, or an endpoint where one
/// listens (`pipegate mux --listen EP`).
///
/// # Examples
///
/// ```
/// use pipegate_mux::Via;
///
/// let exec: Via = "exec:/mnt/c/tools/pipegate.exe mux --allow npipe://docker_engine".parse()?;
/// assert_eq!(exec.command().map(|argv| argv.len()), Some(4));
///
/// let tcp: Via = "tcp://127.0.0.1:7000".parse()?;
/// assert_eq!(tcp.to_string(), "tcp://127.0.0.1:7000");
/// # Ok::<(), pipegate_mux::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Via {
    /// `exec:CMD`: start CMD once and speak the mux protocol over its stdin/stdout. The
    /// command line is split like a POSIX shell would (quotes, backslash escapes; no
    /// expansion): write Windows paths with forward slashes or in single quotes.
    Exec(Vec<String>),
    /// `tcp://…`, `unix://…`, `npipe://…` (any endpoint form): one connection to a
    /// `pipegate mux --listen` there.
    Endpoint(Endpoint),
}

impl Via {
    /// The program and its arguments, for [`Via::Exec`].
    pub fn command(&self) -> Option<&[String]> {
        match self {
            Via::Exec(argv) => Some(argv),
            Via::Endpoint(_) => None,
        }
    }
}

impl FromStr for Via {
    type Err = Error;

    /// Parses `exec:CMD` or an endpoint.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidVia`] for an empty or unbalanced command line, or text that is
    /// no endpoint either.
    fn from_str(s: &str) -> Result<Via, Error> {
        if let Some(command) = s.strip_prefix("exec:") {
            let argv = shell_words::split(command).map_err(|e| {
                Error::new(
                    ErrorKind::InvalidVia,
                    format!("cannot split the command line of {s:?} (check its quotes)"),
                )
                .with_source(e)
            })?;
            if argv.is_empty() {
                return Err(Error::new(
                    ErrorKind::InvalidVia,
                    "exec: needs a command, e.g. exec:\"pipegate.exe mux --allow npipe://NAME\"",
                ));
            }
            return Ok(Via::Exec(argv));
        }
        Endpoint::parse(s).map(Via::Endpoint).map_err(|e| {
            Error::new(
                ErrorKind::InvalidVia,
                "expected exec:CMD (a helper that runs `pipegate mux`) or the endpoint of a \
                 `pipegate mux --listen`",
            )
            .with_source(e)
        })
    }
}

impl fmt::Display for Via {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Via::Exec(argv) => write!(f, "exec:{}", shell_words::join(argv)),
            Via::Endpoint(endpoint) => endpoint.fmt(f),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn exec_splits_like_a_shell_and_prints_back() {
        let via: Via =
            r#"exec:'/mnt/c/Program Files/pipegate.exe' mux --allow "npipe://docker_engine""#
                .parse()
                .unwrap();
        assert_eq!(
            via.command().unwrap(),
            [
                "/mnt/c/Program Files/pipegate.exe",
                "mux",
                "--allow",
                "npipe://docker_engine"
            ]
        );
        assert_eq!(via.to_string().parse::<Via>().unwrap(), via);
    }

    #[test]
    fn endpoints_are_canonical() {
        let via: Via = r"\\.\pipe\Mux".parse().unwrap();
        assert_eq!(via.to_string(), "npipe://mux");
        assert!(via.command().is_none());
    }

    #[test]
    fn bad_values_say_what_is_expected() {
        for bad in ["exec:", "exec:   ", "exec:'unterminated", "ftp://x", "mux"] {
            let err = bad.parse::<Via>().unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidVia, "{bad}");
        }
        let err = "ftp://x".parse::<Via>().unwrap_err();
        assert!(err.to_string().contains("exec:CMD"), "{err}");
    }
}
