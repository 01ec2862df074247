//! The checks at the top of request handling: a request refused at the edge
//! ([`framing`](super::framing)), then, on a guarded TCP listener, `Host`, `Origin` and
//! the bearer token, as [`TcpAccess`] describes. Unix sockets and named pipes skip the
//! last three: the OS vouches for their peers (file modes, the DACL, peer identity).
//!
//! Every refusal becomes a response in `respond.rs`; nothing here logs a header value.

use http::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION, HOST, ORIGIN, UPGRADE};
use http::Request;
use pipegate_transport::{Endpoint, Mode};

use super::framing::{Verdicts, Violation};
use crate::config::TcpAccess;

/// Names a `Host` may always use, besides the listener's own address.
const LOOPBACK_HOSTS: [&str; 3] = ["localhost", "127.0.0.1", "[::1]"];

/// Origins always accepted: pages served from loopback, any port.
const LOOPBACK_ORIGINS: [&str; 3] = ["http://localhost:*", "http://127.0.0.1:*", "http://[::1]:*"];

/// The `Sec-WebSocket-Protocol` entry that carries the token for browsers:
/// `pipegate.bearer.<token>`, offered next to the real subprotocol.
pub(crate) const WS_TOKEN_PREFIX: &str = "pipegate.bearer.";

const SEC_WEBSOCKET_PROTOCOL: HeaderName = http::header::SEC_WEBSOCKET_PROTOCOL;

/// Why a request is answered by pipegate instead of being served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rejection {
    /// Refused before parsing (400).
    Malformed(Violation),
    /// `Host` is not this listener (421).
    MisdirectedHost,
    /// `Origin` is not allowed (403).
    ForbiddenOrigin,
    /// No token, or the wrong one (401). `presented`: a bearer token was there.
    Unauthorized { presented: bool },
}

impl Rejection {
    /// Why, for logs.
    pub(crate) fn reason(self) -> &'static str {
        match self {
            Rejection::Malformed(v) => v.as_str(),
            Rejection::MisdirectedHost => "host_not_allowed",
            Rejection::ForbiddenOrigin => "origin_not_allowed",
            Rejection::Unauthorized { presented: false } => "token_missing",
            Rejection::Unauthorized { presented: true } => "token_wrong",
        }
    }
}

/// The connection a request arrived on, as the guard needs it.
#[derive(Debug)]
pub(crate) struct Arrival<'a> {
    pub(crate) mode: Mode,
    /// The listener's bound endpoint.
    pub(crate) listener: &'a Endpoint,
    pub(crate) verdicts: &'a Verdicts,
}

/// [`TcpAccess`], prepared for matching.
pub(crate) struct Guard {
    guarded: bool,
    token: Option<Vec<u8>>,
    hosts: Vec<String>,
    origins: Vec<String>,
}

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guard")
            .field("guarded", &self.guarded)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("hosts", &self.hosts)
            .field("origins", &self.origins)
            .finish()
    }
}

impl Guard {
    pub(crate) fn new(access: &TcpAccess) -> Guard {
        let hosts = LOOPBACK_HOSTS
            .iter()
            .map(|h| (*h).to_owned())
            .chain(
                access
                    .allow_hosts
                    .iter()
                    .filter_map(|h| host_part(h.trim())),
            )
            .collect();
        let origins = LOOPBACK_ORIGINS
            .iter()
            .map(|o| (*o).to_owned())
            .chain(access.allow_origins.iter().map(|o| normalize_origin(o)))
            .collect();
        Guard {
            guarded: access.guarded,
            token: access.token.as_ref().map(|t| t.as_bytes().to_vec()),
            hosts,
            origins,
        }
    }

    /// Admits `req` or says why not. An admitted request has lost the credential that
    /// matched (the `Authorization` value or the subprotocol entry), so it goes no further.
    ///
    /// Call exactly once per request, in arrival order (it consumes the connection's
    /// [`Verdicts`]).
    pub(crate) fn check<B>(&self, req: &mut Request<B>, at: &Arrival<'_>) -> Result<(), Rejection> {
        if let Some(why) = at.verdicts.next_request() {
            return Err(Rejection::Malformed(why));
        }
        if !self.guarded || at.mode != Mode::Tcp {
            return Ok(());
        }
        if !self.host_allowed(req, at.listener) {
            return Err(Rejection::MisdirectedHost);
        }
        if let Some(origin) = req.headers().get(ORIGIN) {
            if !self.origin_allowed(origin) {
                return Err(Rejection::ForbiddenOrigin);
            }
        }
        if let Some(token) = &self.token {
            let upgrade = req.headers().contains_key(UPGRADE);
            take_credential(req.headers_mut(), token, upgrade)?;
        }
        Ok(())
    }

    /// `Host`, and the authority of an absolute-form target or an HTTP/2 request, all
    /// name an allowed host; at least one of them is present.
    fn host_allowed<B>(&self, req: &Request<B>, listener: &Endpoint) -> bool {
        let bound = match listener {
            Endpoint::Tcp { host, .. } => {
                host_part(host).or_else(|| host_part(&format!("[{host}]")))
            }
            _ => None,
        };
        let allowed = |authority: &str| {
            host_part(authority)
                .is_some_and(|h| self.hosts.contains(&h) || bound.as_ref() == Some(&h))
        };
        let host = req.headers().get(HOST);
        let authority = req.uri().authority();
        if host.is_none() && authority.is_none() {
            return false;
        }
        host.is_none_or(|h| h.to_str().is_ok_and(allowed))
            && authority.is_none_or(|a| allowed(a.as_str()))
    }

    fn origin_allowed(&self, origin: &HeaderValue) -> bool {
        let Ok(origin) = origin.to_str() else {
            return false;
        };
        let origin = normalize_origin(origin);
        self.origins
            .iter()
            .any(|rule| match rule.strip_suffix(":*") {
                Some(base) => {
                    origin == base
                        || origin
                            .strip_prefix(base)
                            .and_then(|rest| rest.strip_prefix(':'))
                            .is_some_and(|port| {
                                !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit())
                            })
                }
                None => origin == *rule,
            })
    }
}

/// Finds our token in `Authorization: Bearer …` or (upgrades only) in a
/// `pipegate.bearer.…` subprotocol entry, and removes it.
fn take_credential(headers: &mut HeaderMap, token: &[u8], upgrade: bool) -> Result<(), Rejection> {
    let mut presented = false;
    let authorization: Vec<HeaderValue> = headers.get_all(AUTHORIZATION).iter().cloned().collect();
    for (i, value) in authorization.iter().enumerate() {
        let Some(bearer) = bearer_token(value.as_bytes()) else {
            continue;
        };
        presented = true;
        if constant_time_eq(bearer, token) {
            headers.remove(AUTHORIZATION);
            for (j, other) in authorization.into_iter().enumerate() {
                if j != i {
                    headers.append(AUTHORIZATION, other);
                }
            }
            return Ok(());
        }
    }
    if upgrade {
        let offered: Vec<String> = headers
            .get_all(SEC_WEBSOCKET_PROTOCOL)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|p| p.trim().to_owned())
            .filter(|p| !p.is_empty())
            .collect();
        let ours = offered.iter().position(|p| {
            p.strip_prefix(WS_TOKEN_PREFIX).is_some_and(|t| {
                presented = true;
                constant_time_eq(t.as_bytes(), token)
            })
        });
        if let Some(ours) = ours {
            let rest: Vec<&str> = offered
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != ours)
                .map(|(_, p)| p.as_str())
                .collect();
            headers.remove(SEC_WEBSOCKET_PROTOCOL);
            if let Ok(value) = HeaderValue::from_str(&rest.join(", ")) {
                if !rest.is_empty() {
                    headers.insert(SEC_WEBSOCKET_PROTOCOL, value);
                }
            }
            return Ok(());
        }
    }
    Err(Rejection::Unauthorized { presented })
}

/// The token of `Bearer <token>` (scheme case-insensitive, RFC 9110 §11.1).
fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = value.split_at_checked(6)?;
    if !scheme.eq_ignore_ascii_case(b"bearer") || !rest.starts_with(b" ") {
        return None;
    }
    let token = rest.trim_ascii();
    (!token.is_empty()).then_some(token)
}

/// Compares in time that depends on the lengths only (the token's length is public).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// The host of an authority (`host[:port]`, `[v6][:port]`), lowercased, IPv6 in
/// brackets; `None` if it is not one.
fn host_part(authority: &str) -> Option<String> {
    let port_ok = |p: &str| p.is_empty() || p.bytes().all(|b| b.is_ascii_digit());
    let host = if let Some(rest) = authority.strip_prefix('[') {
        let close = rest.find(']')?;
        let after = &rest[close + 1..];
        if !(after.is_empty() || after.strip_prefix(':').is_some_and(port_ok)) {
            return None;
        }
        &authority[..close + 2]
    } else {
        match authority.split_once(':') {
            Some((host, port)) if port_ok(port) => host,
            Some(_) => return None,
            None => authority,
        }
    };
    let valid = host.len() > 2 || !host.starts_with('[');
    (valid && !host.is_empty() && !host.contains(['@', '/', ' ']))
        .then(|| host.to_ascii_lowercase())
}

fn normalize_origin(origin: &str) -> String {
    origin.trim().trim_end_matches('/').to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(token: Option<&str>) -> Guard {
        Guard::new(
            &TcpAccess::guarded(token.map(str::to_owned))
                .allow_hosts(vec!["Box.Lan".into()])
                .allow_origins(vec![
                    "https://app.example/".into(),
                    "http://dev.test:*".into(),
                ]),
        )
    }

    fn check(guard: &Guard, req: &mut Request<()>) -> Result<(), Rejection> {
        let listener = Endpoint::parse("127.0.0.1:8080").unwrap();
        let verdicts = Verdicts::default();
        guard.check(
            req,
            &Arrival {
                mode: Mode::Tcp,
                listener: &listener,
                verdicts: &verdicts,
            },
        )
    }

    fn req(headers: &[(&str, &str)]) -> Request<()> {
        let mut b = Request::get("/x");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn hosts() {
        let g = guard(None);
        for ok in [
            "localhost",
            "LOCALHOST:1",
            "127.0.0.1:8080",
            "[::1]",
            "[::1]:9",
            "box.lan:80",
        ] {
            assert_eq!(check(&g, &mut req(&[("host", ok)])), Ok(()), "{ok}");
        }
        for bad in [
            "evil.com",
            "evil.com:8080",
            "localhost.evil.com",
            "127.0.0.2",
            "[::2]:1",
            "localhost:x",
            "",
            "a@localhost",
        ] {
            assert_eq!(
                check(&g, &mut req(&[("host", bad)])),
                Err(Rejection::MisdirectedHost),
                "{bad}"
            );
        }
        assert_eq!(
            check(&g, &mut req(&[])),
            Err(Rejection::MisdirectedHost),
            "no Host"
        );
        let mut absolute = Request::get("http://evil.com/")
            .header("host", "localhost")
            .body(())
            .unwrap();
        assert_eq!(check(&g, &mut absolute), Err(Rejection::MisdirectedHost));
        // The bound address, IPv6 too.
        let v6 = Endpoint::parse("[::1]:80").unwrap();
        assert!(g.host_allowed(&req(&[("host", "[::1]:80")]), &v6));
        let any = Endpoint::parse("0.0.0.0:80").unwrap();
        assert!(g.host_allowed(&req(&[("host", "0.0.0.0:80")]), &any));
    }

    #[test]
    fn origins() {
        let g = guard(None);
        for ok in [
            "http://localhost:3000",
            "http://127.0.0.1",
            "http://[::1]:8080",
            "https://app.example",
            "http://dev.test:1",
        ] {
            assert_eq!(
                check(&g, &mut req(&[("host", "localhost"), ("origin", ok)])),
                Ok(()),
                "{ok}"
            );
        }
        for bad in [
            "null",
            "https://localhost:3000",
            "http://localhost.evil.com",
            "http://localhost:3000x",
            "https://app.example:444",
            "http://evil.com",
        ] {
            assert_eq!(
                check(&g, &mut req(&[("host", "localhost"), ("origin", bad)])),
                Err(Rejection::ForbiddenOrigin),
                "{bad}"
            );
        }
    }

    #[test]
    fn tokens() {
        let g = guard(Some("s3cret"));
        let host = ("host", "localhost");
        assert_eq!(
            check(&g, &mut req(&[host])),
            Err(Rejection::Unauthorized { presented: false })
        );
        assert_eq!(
            check(&g, &mut req(&[host, ("authorization", "Bearer wrong")])),
            Err(Rejection::Unauthorized { presented: true })
        );
        assert_eq!(
            check(&g, &mut req(&[host, ("authorization", "Basic czNjcmV0")])),
            Err(Rejection::Unauthorized { presented: false })
        );
        // Ours is removed; the upstream's own credential stays.
        let mut r = req(&[
            host,
            ("authorization", "Basic dXA="),
            ("authorization", "bearer  s3cret"),
        ]);
        assert_eq!(check(&g, &mut r), Ok(()));
        let left: Vec<_> = r.headers().get_all("authorization").iter().collect();
        assert_eq!(left, ["Basic dXA="]);
        // The subprotocol form counts on upgrades only, and is removed.
        let ws = [
            host,
            ("upgrade", "websocket"),
            (
                "sec-websocket-protocol",
                "pipegate.pty.v1, pipegate.bearer.s3cret",
            ),
        ];
        let mut r = req(&ws);
        assert_eq!(check(&g, &mut r), Ok(()));
        assert_eq!(r.headers()["sec-websocket-protocol"], "pipegate.pty.v1");
        let mut r = req(&[host, ("sec-websocket-protocol", "pipegate.bearer.s3cret")]);
        assert_eq!(
            check(&g, &mut r),
            Err(Rejection::Unauthorized { presented: false })
        );
        let mut r = req(&[
            host,
            ("upgrade", "websocket"),
            ("sec-websocket-protocol", "pipegate.bearer.nope"),
        ]);
        assert_eq!(
            check(&g, &mut r),
            Err(Rejection::Unauthorized { presented: true })
        );
        assert!(!format!("{g:?}").contains("s3cret"));
    }

    #[test]
    fn local_transports_and_open_access_are_not_checked() {
        let g = guard(Some("t"));
        let listener = Endpoint::parse("/tmp/x.sock").unwrap();
        let verdicts = Verdicts::default();
        let at = Arrival {
            mode: Mode::Unix,
            listener: &listener,
            verdicts: &verdicts,
        };
        assert_eq!(
            g.check(
                &mut req(&[("host", "evil.com"), ("origin", "http://evil.com")]),
                &at
            ),
            Ok(())
        );
        let open = Guard::new(&TcpAccess::open());
        assert_eq!(check(&open, &mut req(&[("host", "evil.com")])), Ok(()));
    }
}
