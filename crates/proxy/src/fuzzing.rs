//! Fuzz target bodies (`fuzz/` at the repository root), not part of the API.
//!
//! Each function takes the fuzzer's bytes and panics if an invariant breaks; the seed
//! corpus in `fuzz/corpus/<target>/` also runs through it in this crate's tests, so a
//! change that breaks an invariant on a seed fails `cargo test` without cargo-fuzz.

use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http::header::{
    HeaderMap, HeaderName, HeaderValue, AUTHORIZATION, CONNECTION, COOKIE, PROXY_AUTHORIZATION,
    SET_COOKIE, TE, UPGRADE, VIA,
};
use http::{Method, Request, Response, Version};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, ReadBuf};

use crate::http::framing::{Framer, Inspected, Verdicts, Violation, REJECTED_HEAD};
use crate::http::headers;

/// Hop-by-hop whatever `Connection` says (RFC 9110 §7.6.1), written out again here so
/// the target checks the list rather than trusting it.
const HOP_BY_HOP: [&str; 6] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "transfer-encoding",
    "upgrade",
];

/// `http_headers`: the first byte picks the flags, the rest is `name: value` lines. The
/// headers rewritten as a forwarded request and as a forwarded response equal a model
/// written from RFC 9110: every hop-by-hop header and every header `Connection` names
/// gone (but an upgrade's `Upgrade` and `Connection: upgrade`), `TE: trailers` asked for
/// again if the client accepts trailers, end-to-end headers untouched and in order, and
/// this proxy last in `Via`. Credential headers are marked sensitive, values unchanged.
pub fn http_headers(data: &[u8]) {
    let Some((&flags, lines)) = data.split_first() else {
        return;
    };
    let original = header_map(lines);

    // `forward` asks whether the request is an upgrade only for HTTP/1.1 (bit 0).
    let upgrade = flags & 1 == 1 && headers::is_upgrade_request(&original);
    let mut request = original.clone();
    headers::rewrite_request(&mut request, upgrade);
    let trailers = headers::wants_trailers(&original);
    assert_eq!(
        request,
        expected(&original, upgrade, trailers),
        "request from {original:?}"
    );

    // A response: a `101` answering an upgrade (bit 1) keeps the upgrade headers.
    let upgraded = flags & 2 == 2;
    let mut response = original.clone();
    headers::rewrite_response(&mut response, upgraded);
    assert_eq!(
        response,
        expected(&original, upgraded, false),
        "response from {original:?}"
    );

    let mut marked = original.clone();
    headers::mark_sensitive(&mut marked);
    assert_eq!(marked, original, "marking changes no value");
    for name in [AUTHORIZATION, PROXY_AUTHORIZATION, COOKIE, SET_COOKIE] {
        assert!(marked.get_all(&name).iter().all(HeaderValue::is_sensitive));
    }
}

/// `name: value` lines; lines that are not a valid header are skipped.
fn header_map(lines: &[u8]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for line in lines.split(|&b| b == b'\n') {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let name = HeaderName::from_bytes(&line[..colon]);
        let value = HeaderValue::from_bytes(trim_ows(&line[colon + 1..]));
        if let (Ok(name), Ok(value)) = (name, value) {
            map.append(name, value);
        }
    }
    map
}

/// What forwarding must leave of `original`.
fn expected(original: &HeaderMap, keep_upgrade: bool, trailers: bool) -> HeaderMap {
    let named: Vec<HeaderName> = original
        .get_all(CONNECTION)
        .iter()
        .flat_map(|value| value.as_bytes().split(|&b| b == b','))
        .filter_map(|token| HeaderName::from_bytes(trim_ows(token)).ok())
        .collect();
    let hop_by_hop =
        |name: &HeaderName| HOP_BY_HOP.contains(&name.as_str()) || named.contains(name);
    let mut out = HeaderMap::new();
    for (name, value) in original {
        if !hop_by_hop(name) || (keep_upgrade && name == UPGRADE) {
            out.append(name.clone(), value.clone());
        }
    }
    if keep_upgrade {
        out.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    }
    if trailers {
        out.insert(TE, HeaderValue::from_static("trailers"));
        out.append(CONNECTION, HeaderValue::from_static("te"));
    }
    out.append(VIA, HeaderValue::from_static("1.1 pipegate"));
    out
}

fn trim_ows(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

/// The largest request head checked; hyper's smallest read buffer.
const HEAD_LIMIT: usize = 8192;

/// `http_framing`: the first byte picks a read size, the rest is what a client sends.
///
/// * The framing check gives the same bytes and verdict whatever the read sizes.
/// * It passes the bytes on unchanged, or a prefix of them ending where a refused head
///   began, then the placeholder request.
/// * hyper, reading through the check as the server does, sees exactly the requests the
///   check passed (a prefix of them, if it stops early), in order, and the placeholder
///   where a head was refused: no request reaches hyper unchecked. A request hyper treats
///   as an upgrade is one after which the check passes bytes through untouched.
pub fn http_framing(data: &[u8]) {
    let Some((&read_size, input)) = data.split_first() else {
        return;
    };
    let read_size = usize::from(read_size % 64) + 1;
    let bytewise = frame(input, 1);
    for pieces in [read_size, input.len().max(1)] {
        let other = frame(input, pieces);
        assert_eq!(other.error, bytewise.error, "read size {pieces}");
        if !bytewise.error {
            assert_eq!(other.out, bytewise.out, "read size {pieces}");
            assert_eq!(other.refused, bytewise.refused, "read size {pieces}");
        }
    }
    match bytewise.refused {
        Some((index, _)) => {
            assert_eq!(
                index,
                bytewise.heads.len() as u64,
                "the refused head is the next"
            );
            let kept = bytewise
                .out
                .strip_suffix(REJECTED_HEAD)
                .unwrap_or_else(|| panic!("no placeholder after a refusal"));
            assert!(
                input.starts_with(kept),
                "only a prefix of the input is passed on"
            );
        }
        None if bytewise.error => assert!(input.starts_with(&bytewise.out)),
        None => assert_eq!(bytewise.out, input, "passed on unchanged"),
    }

    let mut checked: Vec<Option<Seen>> = bytewise.heads.iter().map(|h| parse(&h.bytes)).collect();
    if bytewise.refused.is_some() {
        checked.push(parse(REJECTED_HEAD).map(|seen| Seen {
            refused: true,
            ..seen
        }));
    }
    let served = serve(input, read_size);
    assert!(
        served.len() <= checked.len(),
        "hyper saw {} requests, the check passed {}: {served:?}",
        served.len(),
        checked.len()
    );
    for (i, (seen, upgrade_like)) in served.iter().enumerate() {
        assert_eq!(Some(seen), checked[i].as_ref(), "request {i}");
        if *upgrade_like && !seen.refused {
            assert!(
                bytewise.heads[i].passthrough,
                "hyper upgrades at request {i}, the check goes on reading"
            );
        }
    }
}

/// A head the framing check passed, and whether it then passed bytes through.
#[derive(Debug)]
struct Head {
    bytes: Vec<u8>,
    passthrough: bool,
}

#[derive(Debug)]
struct Framed {
    out: Vec<u8>,
    error: bool,
    refused: Option<(u64, Violation)>,
    /// Only when fed byte by byte.
    heads: Vec<Head>,
}

/// Runs the framing check over `input` in reads of `pieces` bytes, then EOF.
fn frame(input: &[u8], pieces: usize) -> Framed {
    let verdicts = Verdicts::default();
    let mut framer = Framer::new(HEAD_LIMIT);
    let mut out = BytesMut::new();
    let mut heads = Vec::new();
    let mut error = false;
    for piece in input.chunks(pieces) {
        let (before, heads_before) = (out.len(), framer.heads());
        let fed = framer.skip(piece).and_then(|kept| {
            out.extend_from_slice(&piece[..kept]);
            framer.feed(&piece[kept..], &mut out, &verdicts)
        });
        if fed.is_err() {
            error = true;
            break;
        }
        if pieces == 1 && framer.heads() > heads_before {
            heads.push(Head {
                bytes: out[before..].to_vec(),
                passthrough: framer.is_passthrough(),
            });
        }
    }
    if !error {
        framer.finish(&mut out);
    }
    let refused = (0..=framer.heads()).find_map(|i| verdicts.next_request().map(|why| (i, why)));
    Framed {
        out: out.to_vec(),
        error,
        refused,
        heads,
    }
}

/// A request as hyper sees it: method, version, headers (sorted), and whether the
/// framing check said it is a refused head's placeholder.
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    method: String,
    http11: bool,
    headers: Vec<(String, Vec<u8>)>,
    refused: bool,
}

/// A head parsed as hyper's server parses it (httparse's defaults, 100 headers).
fn parse(head: &[u8]) -> Option<Seen> {
    let mut slots = [httparse::EMPTY_HEADER; 100];
    let mut request = httparse::Request::new(&mut slots);
    match request.parse(head) {
        Ok(httparse::Status::Complete(n)) if n == head.len() => {}
        _ => return None,
    }
    let mut headers: Vec<_> = request
        .headers
        .iter()
        .map(|h| (h.name.to_ascii_lowercase(), h.value.to_vec()))
        .collect();
    headers.sort();
    Some(Seen {
        method: request.method?.to_owned(),
        http11: request.version? == 1,
        headers,
        refused: false,
    })
}

thread_local! {
    static RUNTIME: Option<tokio::runtime::Runtime> =
        tokio::runtime::Builder::new_current_thread().build().ok();
}

/// Serves `input`, read `read_size` bytes at a time through the framing check, with
/// hyper's HTTP/1 server as the bridge configures it; the requests it saw, and whether
/// each was upgrade-like. The service answers as the bridge does when it refuses an
/// upgrade: with `Connection: close`.
fn serve(input: &[u8], read_size: usize) -> Vec<(Seen, bool)> {
    let verdicts = Arc::new(Verdicts::default());
    let client = Pieces {
        input: input.to_vec(),
        at: 0,
        read_size,
    };
    let stream = Inspected::new(
        tokio::io::join(client, tokio::io::sink()),
        HEAD_LIMIT,
        Arc::clone(&verdicts),
    );
    let served = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&served);
    let service = service_fn(move |req: Request<Incoming>| {
        let refused = verdicts.next_request().is_some();
        let upgrade_like = (req.version() == Version::HTTP_11
            && req.headers().contains_key(UPGRADE))
            || req.method() == Method::CONNECT;
        let mut headers: Vec<_> = req
            .headers()
            .iter()
            .map(|(name, value)| (name.as_str().to_owned(), value.as_bytes().to_vec()))
            .collect();
        headers.sort();
        let seen = Seen {
            method: req.method().as_str().to_owned(),
            http11: req.version() == Version::HTTP_11,
            headers,
            refused,
        };
        log.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((seen, upgrade_like));
        async move {
            let _ = req.into_body().collect().await;
            let mut resp = Response::new(Full::new(Bytes::new()));
            if upgrade_like {
                resp.headers_mut()
                    .insert(CONNECTION, HeaderValue::from_static("close"));
            }
            Ok::<_, Infallible>(resp)
        }
    });
    RUNTIME.with(|runtime| {
        let Some(runtime) = runtime else {
            panic!("no Tokio runtime");
        };
        runtime.block_on(async {
            let _ = hyper::server::conn::http1::Builder::new()
                .half_close(true)
                .max_buf_size(HEAD_LIMIT)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    });
    let served = std::mem::take(&mut *served.lock().unwrap_or_else(PoisonError::into_inner));
    served
}

/// A client that sends `input` in reads of at most `read_size` bytes, then EOF.
struct Pieces {
    input: Vec<u8>,
    at: usize,
    read_size: usize,
}

impl AsyncRead for Pieces {
    fn poll_read(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let n = this
            .read_size
            .min(buf.remaining())
            .min(this.input.len() - this.at);
        buf.put_slice(&this.input[this.at..this.at + n]);
        this.at += n;
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use pipegate_transport::fuzzing::replay_seeds;

    #[test]
    fn http_headers_seeds() {
        replay_seeds("http_headers", super::http_headers);
    }

    #[test]
    fn http_framing_seeds() {
        replay_seeds("http_framing", super::http_framing);
    }
}
