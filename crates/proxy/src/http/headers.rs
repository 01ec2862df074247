//! Hop-by-hop header handling (RFC 9110 §7.6.1) and `Via` (RFC 9110 §7.6.3).
//!
//! A proxy must not forward the headers that describe one connection: `Connection` and
//! every header it names, plus the ones that are hop-by-hop by definition. The exception
//! is an upgrade exchange (a request with `Connection: upgrade` + `Upgrade`, and its `101`
//! answer), where `Connection: upgrade` and `Upgrade` must reach the other side or the
//! upgrade (WebSocket) cannot happen. `Sec-WebSocket-*` headers are end-to-end and are
//! never touched.
//!
//! `Trailer` is *not* removed: RFC 2616 called it hop-by-hop, but RFC 9110 §6.6.2 makes it
//! end-to-end (it declares which trailer fields follow the body), and hyper sends only the
//! trailer fields a message's `Trailer` header declares, so removing it would drop every
//! trailer. `TE` is hop-by-hop; [`wants_trailers`] lets the proxy ask the upstream for
//! trailers on behalf of a client that accepts them (RFC 9110 §10.1.4).

use http::header::{
    HeaderMap, HeaderName, HeaderValue, AUTHORIZATION, CONNECTION, COOKIE, PROXY_AUTHORIZATION,
    SET_COOKIE, TE, TRANSFER_ENCODING, UPGRADE, VIA,
};

/// Headers that are hop-by-hop whatever `Connection` says. Parsed names, so removing
/// them does not parse a string per header per request.
const HOP_BY_HOP: [HeaderName; 6] = [
    CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    TE,
    TRANSFER_ENCODING,
    UPGRADE,
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
    // Most messages carry no hop-by-hop header, or only `Connection` naming fixed ones
    // (`keep-alive`, `close`): one pass over the names decides, without hashing.
    if headers.keys().any(|name| HOP_BY_HOP.contains(name)) {
        // Tokens are read from the bytes: a value with a non-ASCII byte somewhere (which
        // `to_str` refuses) still names the headers it lists.
        let named: Vec<HeaderName> = headers
            .get_all(CONNECTION)
            .iter()
            .flat_map(|v| v.as_bytes().split(|&b| b == b','))
            .map(<[u8]>::trim_ascii)
            // Removed below anyway: no name to build.
            .filter(|t| !is_fixed_hop_by_hop(t))
            .filter_map(|t| HeaderName::from_bytes(t).ok())
            .collect();
        for name in named {
            if keep_upgrade && name == UPGRADE {
                continue;
            }
            headers.remove(&name);
        }
        for name in &HOP_BY_HOP {
            if keep_upgrade && (name == UPGRADE || name == CONNECTION) {
                continue;
            }
            headers.remove(name);
        }
    }
    if keep_upgrade {
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    }
    debug_assert!(keep_upgrade || !headers.contains_key(TE));
    debug_assert!(!headers.contains_key(TRANSFER_ENCODING));
}

/// Whether a `Connection` token names one of [`HOP_BY_HOP`] (ASCII case-insensitive).
fn is_fixed_hop_by_hop(token: &[u8]) -> bool {
    HOP_BY_HOP
        .iter()
        .any(|name| name.as_str().as_bytes().eq_ignore_ascii_case(token))
}

/// The request side of forwarding: hop-by-hop headers removed (an upgrade's kept),
/// `TE: trailers` asked for again when the client accepts trailers, `Via` added. `Host`
/// and the upstream token are the caller's.
pub(crate) fn rewrite_request(headers: &mut HeaderMap, upgrade: bool) {
    let trailers = wants_trailers(headers);
    strip_hop_by_hop(headers, upgrade);
    if trailers {
        // We pass trailers through, so ask the upstream for them as the client did.
        request_trailers(headers);
    }
    add_via(headers);
}

/// The response side of forwarding: hop-by-hop headers removed (kept on the `101` that
/// completes an upgrade), `Via` added.
pub(crate) fn rewrite_response(headers: &mut HeaderMap, upgraded: bool) {
    strip_hop_by_hop(headers, upgraded);
    add_via(headers);
}

/// Whether the client's `TE` accepts trailers (`TE: trailers`).
pub(crate) fn wants_trailers(headers: &HeaderMap) -> bool {
    headers
        .get_all(TE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| {
            t.split(';')
                .next()
                .is_some_and(|t| t.trim().eq_ignore_ascii_case("trailers"))
        })
}

/// Asks the next hop for trailers (`TE: trailers`, listed in `Connection` as RFC 9110
/// §7.6.1 requires for a hop-by-hop field).
pub(crate) fn request_trailers(headers: &mut HeaderMap) {
    headers.insert(TE, HeaderValue::from_static("trailers"));
    if !connection_has(headers, "te") {
        headers.append(CONNECTION, HeaderValue::from_static("te"));
    }
}

/// Headers that carry credentials (RFC 9110 §11.6.2, §11.7.2; RFC 6265 §4).
const CREDENTIALS: [HeaderName; 4] = [AUTHORIZATION, PROXY_AUTHORIZATION, COOKIE, SET_COOKIE];

/// Marks every credential header value sensitive: its `Debug` form becomes `Sensitive`
/// (so no log line can print it by accident) and HTTP/2 never indexes it (RFC 7541
/// §7.1.3). The values themselves are forwarded unchanged.
pub(crate) fn mark_sensitive(headers: &mut HeaderMap) {
    // One pass over the entries: cheaper than four hashed look-ups for the usual
    // message, which has none of them.
    for (name, value) in headers.iter_mut() {
        if CREDENTIALS.contains(name) {
            value.set_sensitive(true);
        }
    }
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
        assert!(wants_trailers(&h));
        strip_hop_by_hop(&mut h, false);
        let mut left: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        left.sort_unstable();
        // Trailer is end-to-end (RFC 9110 §6.6.2): it stays.
        assert_eq!(left, ["host", "trailer", "x-end-to-end"]);
    }

    #[test]
    fn connection_with_a_non_ascii_byte_still_names_its_headers() {
        // Found by the http_headers fuzz target: `to_str` refuses the value, and the
        // headers it named used to be forwarded.
        let mut h = HeaderMap::new();
        h.append(
            CONNECTION,
            HeaderValue::from_bytes(b"x-hop, \x97, via").unwrap(),
        );
        h.append("x-hop", HeaderValue::from_static("1"));
        h.append(VIA, HeaderValue::from_static("1.0 client"));
        h.append("x-end-to-end", HeaderValue::from_static("kept"));
        strip_hop_by_hop(&mut h, false);
        let left: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["x-end-to-end"]);
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
    fn trailers_are_requested_only_when_the_client_accepts_them() {
        assert!(wants_trailers(&map(&[("te", "gzip;q=0.5, Trailers")])));
        assert!(!wants_trailers(&map(&[("te", "gzip")])));
        let mut h = HeaderMap::new();
        request_trailers(&mut h);
        assert_eq!(h["te"], "trailers");
        assert!(connection_has(&h, "te"));
    }

    #[test]
    fn credentials_are_marked_sensitive() {
        let mut h = map(&[
            ("authorization", "Bearer a-secret"),
            ("cookie", "s=b-secret"),
            ("cookie", "t=c-secret"),
            ("proxy-authorization", "Basic d-secret"),
            ("set-cookie", "s=e-secret"),
            ("x-other", "visible"),
        ]);
        mark_sensitive(&mut h);
        let shown = format!("{h:?}");
        assert!(!shown.contains("secret"), "{shown}");
        assert!(shown.contains("visible"), "{shown}");
        assert_eq!(h.get_all("cookie").iter().count(), 2);
        assert_eq!(h["authorization"], "Bearer a-secret", "values unchanged");
    }

    #[test]
    fn via_is_appended() {
        let mut h = map(&[("via", "1.0 fred")]);
        add_via(&mut h);
        let all: Vec<_> = h.get_all("via").iter().collect();
        assert_eq!(all, ["1.0 fred", VIA_VALUE]);
    }
}
