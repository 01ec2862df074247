//! The nonce health check and the states an instance record can be in.

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use pipegate_transport::hyper::host_header;
use pipegate_transport::{connect, ConnectOptions, Endpoint};

use crate::error::{Error, ErrorKind, Result};
use crate::record::{InstanceMode, Record};
use crate::sys::{self, Liveness};

/// How long a health check may take by default, connect included.
pub const HEALTH_TIMEOUT: Duration = Duration::from_secs(5);

/// The path every HTTP listener of `pipegate serve` answers with `204`.
pub const HEALTH_PATH: &str = "/_pipegate/health";

/// The response header that carries the instance's nonce.
pub const NONCE_HEADER: &str = "x-pipegate-nonce";

/// A fresh nonce: 128 bits from the OS's random source, as 32 lowercase hex digits.
///
/// # Errors
///
/// [`ErrorKind::Io`] if the OS has no randomness to give.
pub fn new_nonce() -> Result<String> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| {
        Error::new(
            ErrorKind::Io,
            "the OS random source failed while making a nonce",
        )
        .with_source(std::io::Error::other(e.to_string()))
    })?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Compares two byte strings in time that depends on their lengths only, not on where
/// they first differ, so a peer probing nonces learns nothing from timing. (Nonces have a
/// fixed, public length; the length check may short-circuit.)
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// Asks the instance at `url` for `GET /_pipegate/health` and checks that it answers
/// `204` with `X-Pipegate-Nonce: <nonce>`.
///
/// Works over every endpoint kind (named pipe, Unix socket, TCP). The nonce comparison
/// is constant-time. The whole exchange, connect included, is bounded by `timeout`
/// ([`HEALTH_TIMEOUT`] is the usual value), so a peer that accepts and never answers
/// cannot hang the caller. An empty `nonce` never matches: a record without one proves
/// nothing.
///
/// # Errors
///
/// [`ErrorKind::Unreachable`] (nothing listens), [`ErrorKind::TimedOut`],
/// [`ErrorKind::BadResponse`] (not HTTP, or a status other than `204`) or
/// [`ErrorKind::NonceMismatch`].
///
/// # Cancel safety
///
/// Cancel-safe: dropping the future closes the connection.
pub async fn check_health(url: &Endpoint, nonce: &str, timeout: Duration) -> Result<()> {
    check_health_with_token(url, nonce, None, timeout).await
}

/// [`check_health`], presenting `token` (`Authorization: Bearer …`) when `url` is a TCP
/// endpoint: `pipegate serve` answers nothing on a TCP listener, its health endpoint
/// included, without the instance's token (the nonce proves who answers; the token
/// decides who may ask). The token is never sent over a Unix socket or named pipe.
///
/// # Errors
///
/// As [`check_health`]; a wrong or missing token shows as [`ErrorKind::BadResponse`]
/// (`401`).
///
/// # Cancel safety
///
/// Cancel-safe.
pub async fn check_health_with_token(
    url: &Endpoint,
    nonce: &str,
    token: Option<&str>,
    timeout: Duration,
) -> Result<()> {
    let token = token.filter(|_| url.mode() == pipegate_transport::Mode::Tcp);
    match tokio::time::timeout(timeout, exchange(url, nonce, token, timeout)).await {
        Ok(result) => result,
        Err(_) => Err(Error::new(
            ErrorKind::TimedOut,
            format!("{url} did not answer its health check within {timeout:?}"),
        )),
    }
}

async fn exchange(
    url: &Endpoint,
    nonce: &str,
    token: Option<&str>,
    timeout: Duration,
) -> Result<()> {
    let stream = connect(url, &ConnectOptions::new().timeout(timeout))
        .await
        .map_err(|e| {
            let kind = match e.kind() {
                pipegate_transport::ErrorKind::TimedOut => ErrorKind::TimedOut,
                _ => ErrorKind::Unreachable,
            };
            Error::new(kind, format!("cannot reach {url} for a health check")).with_source(e)
        })?;
    let bad = |e: hyper::Error| {
        Error::new(
            ErrorKind::BadResponse,
            format!("{url} did not answer its health check over HTTP"),
        )
        .with_source(e)
    };
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(bad)?;
    let mut request = http::Request::get(HEALTH_PATH)
        .header(http::header::HOST, host_header(url))
        .body(Empty::<Bytes>::new())
        .map_err(|e| Error::new(ErrorKind::Io, "cannot build the health request").with_source(e))?;
    if let Some(token) = token {
        let mut value = http::HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
            Error::new(
                ErrorKind::Io,
                "the instance's token is not a valid header value",
            )
        })?;
        value.set_sensitive(true);
        request
            .headers_mut()
            .insert(http::header::AUTHORIZATION, value);
    }
    // Drive the connection and the request together; dropping both closes the stream.
    let response = tokio::select! {
        response = sender.send_request(request) => response.map_err(bad)?,
        ended = conn => {
            let closed = Error::new(
                ErrorKind::BadResponse,
                format!("{url} closed the connection without answering its health check"),
            );
            return Err(match ended {
                Err(e) => closed.with_source(e),
                Ok(()) => closed,
            });
        }
    };
    if response.status() != http::StatusCode::NO_CONTENT {
        return Err(Error::new(
            ErrorKind::BadResponse,
            format!(
                "{url} answered its health check with {} instead of 204",
                response.status()
            ),
        ));
    }
    let answered = response
        .headers()
        .get(NONCE_HEADER)
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    if nonce.is_empty() || !constant_time_eq(answered, nonce.as_bytes()) {
        return Err(Error::new(
            ErrorKind::NonceMismatch,
            format!(
                "{url} answered its health check with {} nonce: it is not the instance in the record",
                if answered.is_empty() { "no" } else { "a different" }
            ),
        ));
    }
    Ok(())
}

/// The states of an instance name, as ToolHive's discovery has them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// The health check passed with the recorded nonce (raw mode: the endpoint accepts
    /// connections and the pid is alive).
    Running,
    /// The health check failed but the recorded pid is alive: a hung instance, or the
    /// pid now belongs to another process.
    Unhealthy,
    /// The health check failed and the recorded pid is gone (or cannot be a process).
    Stale,
    /// No record.
    NotFound,
}

impl State {
    /// `running`, `unhealthy`, `stale` or `not_found`.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Running => "running",
            State::Unhealthy => "unhealthy",
            State::Stale => "stale",
            State::NotFound => "not_found",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A record and what probing it found.
#[derive(Debug)]
#[non_exhaustive]
pub struct Status {
    /// The verdict.
    pub state: State,
    /// The record probed (`None` for [`State::NotFound`]).
    pub record: Option<Record>,
    /// Why the instance is not running, when it is not: the failed probe.
    pub reason: Option<Error>,
}

impl Status {
    pub(crate) fn not_found() -> Status {
        Status {
            state: State::NotFound,
            record: None,
            reason: None,
        }
    }
}

/// Probes `record`'s instance and classifies it.
///
/// HTTP modes (`agent`, `http`, and unknown ones): [`check_health_with_token`] on
/// `record.url` with the record's [token](Record::token);
/// passing means [`State::Running`]; otherwise the pid decides between
/// [`State::Unhealthy`] (alive) and [`State::Stale`] (dead, or not a valid pid). A pid
/// owned by another user counts as alive.
///
/// Raw mode has no HTTP to answer with a nonce: a dead pid is [`State::Stale`]; a live
/// one is [`State::Running`] if `record.url` accepts a connection (which the bridge
/// relays to its upstream and closes at once), [`State::Unhealthy`] if not. A recycled
/// pid next to someone else's listener on the same endpoint would pass this check.
///
/// # Cancel safety
///
/// Cancel-safe.
pub async fn inspect(record: &Record, timeout: Duration) -> Status {
    let classify = |reason: Error| {
        let state = match sys::process_alive(record.pid) {
            Liveness::Alive => State::Unhealthy,
            Liveness::Dead | Liveness::Unknown => State::Stale,
        };
        Status {
            state,
            record: Some(record.clone()),
            reason: Some(reason),
        }
    };
    if record.mode == InstanceMode::Raw {
        if sys::process_alive(record.pid) != Liveness::Alive {
            return classify(Error::new(
                ErrorKind::Unreachable,
                format!("process {} is not running", record.pid),
            ));
        }
        return match connect(&record.url, &ConnectOptions::new().timeout(timeout)).await {
            Ok(_) => Status {
                state: State::Running,
                record: Some(record.clone()),
                reason: None,
            },
            Err(e) => classify(
                Error::new(
                    ErrorKind::Unreachable,
                    format!("cannot connect to {}", record.url),
                )
                .with_source(e),
            ),
        };
    }
    match check_health_with_token(&record.url, &record.nonce, record.token(), timeout).await {
        Ok(()) => Status {
            state: State::Running,
            record: Some(record.clone()),
            reason: None,
        },
        Err(e) => classify(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonces_are_32_lowercase_hex_and_differ() {
        let a = new_nonce().unwrap();
        let b = new_nonce().unwrap();
        assert_eq!(a.len(), 32);
        assert!(
            a.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')),
            "{a}"
        );
        assert_ne!(a, b);
    }

    #[test]
    fn constant_time_eq_is_equality() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"xbc"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(constant_time_eq(b"", b""));
    }

    #[test]
    fn state_names() {
        let names: Vec<&str> = [
            State::Running,
            State::Unhealthy,
            State::Stale,
            State::NotFound,
        ]
        .iter()
        .map(|s| s.as_str())
        .collect();
        assert_eq!(names, ["running", "unhealthy", "stale", "not_found"]);
    }
}
