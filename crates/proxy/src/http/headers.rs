//! Hop-by-hop header handling (RFC 9110 §7.6.1) and `Via` (RFC 9110 §7.6.3).
//!
//! A proxy must not forward the headers that describe one connection: `Connection` and
//! every header it names, plus the ones that are hop-by-hop by definition. The exception
//! is an upgrade exchange (a request with `Connection: upgrade` + `Upgrade`, and its `101`
//! answer), where `Connection: upgrade` and `Upgrade` must reach the other side or the
//! upgrade (WebSocket) cannot happen. `Sec-WebSocket-*` headers are end-to-end and are
//! never touched.

use http::header::{
    HeaderMap, HeaderName, HeaderValue, CONNECTION, TE, TRAILER, TRANSFER_ENCODING, UPGRADE, VIA,
};

/// Headers that are hop-by-hop whatever `Connection` says.
const HOP_BY_HOP: [&str; 7] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// The value added to `Via`.
pub(crate) const VIA_VALUE: &str = "1.1 pipegate";

/// Whether `Connection` lists `token` (comma-separated, case-insensitive).
pub(crate) fn connection_has(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Whether these request headers ask for a protocol upgrade.
pub(crate) fn is_upgrade_request(headers: &HeaderMap) -> bool {
    headers.contains_key(UPGRADE) && connection_has(headers, "upgrade")
}

/// Removes hop-by-hop headers. With `keep_upgrade`, `Upgrade` and a `Connection: upgrade`
/// survive (for an upgrade exchange); every other token `Connection` named is removed.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for name in named {
        if keep_upgrade && name == UPGRADE {
            continue;
        }
        headers.remove(&name);
    }
    for name in HOP_BY_HOP {
        if keep_upgrade && (name == "upgrade" || name == "connection") {
            continue;
        }
        headers.remove(name);
    }
    if keep_upgrade {
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    }
    debug_assert!(keep_upgrade || !headers.contains_key(TE));
    debug_assert!(!headers.contains_key(TRAILER) && !headers.contains_key(TRANSFER_ENCODING));
}

/// Appends this proxy to `Via`.
pub(crate) fn add_via(headers: &mut HeaderMap) {
    headers.append(VIA, HeaderValue::from_static(VIA_VALUE));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn strips_named_and_fixed_hop_by_hop_headers() {
        let mut h = map(&[
            ("connection", "close, X-Secret-Hop"),
            ("connection", "keep-alive"),
            ("x-secret-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("te", "trailers"),
            ("trailer", "x-checksum"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("x-end-to-end", "kept"),
            ("host", "example"),
        ]);
        strip_hop_by_hop(&mut h, false);
        let left: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["x-end-to-end", "host"]);
    }

    #[test]
    fn upgrade_exchange_keeps_upgrade_and_connection() {
        let mut h = map(&[
            ("connection", "Upgrade, x-hop"),
            ("upgrade", "websocket"),
            ("x-hop", "1"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("sec-websocket-protocol", "pipegate.pty.v1"),
        ]);
        assert!(is_upgrade_request(&h));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h["connection"], "upgrade");
        assert_eq!(h["upgrade"], "websocket");
        assert!(!h.contains_key("x-hop"));
        assert!(h.contains_key("sec-websocket-key"));
        assert!(h.contains_key("sec-websocket-protocol"));
    }

    #[test]
    fn connection_tokens_are_case_insensitive_lists() {
        assert!(connection_has(
            &map(&[("connection", "keep-alive, UPGRADE")]),
            "upgrade"
        ));
        assert!(!connection_has(
            &map(&[("connection", "upgraded")]),
            "upgrade"
        ));
        assert!(!is_upgrade_request(&map(&[("connection", "upgrade")])));
    }

    #[test]
    fn via_is_appended() {
        let mut h = map(&[("via", "1.0 fred")]);
        add_via(&mut h);
        let all: Vec<_> = h.get_all("via").iter().collect();
        assert_eq!(all, ["1.0 fred", VIA_VALUE]);
    }
}
