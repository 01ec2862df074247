//! Every response pipegate makes itself, and the one place proxy failures become HTTP.
//!
//! Each synthetic error carries `x-pipegate-error: <kind>` so clients and tests can tell
//! a pipegate failure from an upstream answer without parsing the body.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use pipegate_transport::Endpoint;

use super::guard::Rejection;
use super::ResBody;

/// Why a request got a response from pipegate rather than from the upstream.
#[derive(Debug)]
pub(crate) enum ProxyError {
    /// The upstream could not be reached (refused, missing, permission denied) or
    /// failed before answering.
    Unavailable { detail: String },
    /// The upstream did not answer within the upstream timeout.
    Timeout { after_ms: u64 },
    /// The request was refused at the edge (see `guard.rs`); never forwarded.
    Rejected(Rejection),
}

/// The single rescue: a failure → its status, `x-pipegate-error` kind and a small JSON
/// body (naming the upstream for upstream failures). No request data is echoed.
pub(crate) fn proxy_error(upstream: Option<&Endpoint>, error: &ProxyError) -> Response<ResBody> {
    let (status, kind, error_text, detail) = match error {
        ProxyError::Unavailable { detail } => (
            StatusCode::BAD_GATEWAY,
            "upstream_unavailable",
            "upstream unavailable",
            detail.clone(),
        ),
        ProxyError::Timeout { after_ms } => (
            StatusCode::GATEWAY_TIMEOUT,
            "upstream_timeout",
            "upstream timed out",
            format!("no response within {after_ms} ms"),
        ),
        ProxyError::Rejected(Rejection::Malformed(why)) => (
            StatusCode::BAD_REQUEST,
            "bad_request",
            "malformed request",
            why.describe().to_owned(),
        ),
        ProxyError::Rejected(Rejection::MisdirectedHost) => (
            StatusCode::MISDIRECTED_REQUEST,
            "host_not_allowed",
            "Host not allowed",
            "this TCP listener answers requests for localhost, 127.0.0.1, [::1] or its own \
             address only (DNS-rebinding protection); `pipegate serve --allow-host NAME` \
             adds a name"
                .to_owned(),
        ),
        ProxyError::Rejected(Rejection::ForbiddenOrigin) => (
            StatusCode::FORBIDDEN,
            "origin_not_allowed",
            "Origin not allowed",
            "this TCP listener accepts browser requests from loopback origins only \
             (cross-site request protection); `pipegate serve --allow-origin ORIGIN` adds one"
                .to_owned(),
        ),
        ProxyError::Rejected(Rejection::Unauthorized { presented }) => (
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            if *presented {
                "wrong bearer token"
            } else {
                "bearer token required"
            },
            "this TCP listener needs `Authorization: Bearer <token>` (browsers: a \
             `Sec-WebSocket-Protocol` entry `pipegate.bearer.<token>`); `pipegate serve` \
             writes the token to <state dir>/pipegate/instances/<name>.token, and \
             `pipegate request` presents it"
                .to_owned(),
        ),
    };
    let mut body = serde_json::json!({ "error": error_text });
    if let (Some(upstream), ProxyError::Unavailable { .. } | ProxyError::Timeout { .. }) =
        (upstream, error)
    {
        body["upstream"] = upstream.to_string().into();
    }
    body["detail"] = detail.into();
    let mut resp = json(status, kind, &body.to_string());
    match error {
        ProxyError::Rejected(Rejection::Unauthorized { presented }) => {
            // RFC 6750 §3: the scheme, and why a presented token failed.
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(if *presented {
                    r#"Bearer realm="pipegate", error="invalid_token""#
                } else {
                    r#"Bearer realm="pipegate""#
                }),
            );
        }
        ProxyError::Rejected(Rejection::Malformed(_)) => {
            // The rest of the stream cannot be trusted to be framed as we think.
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        _ => {}
    }
    resp
}

/// A JSON response with the `x-pipegate-error` kind header.
pub(crate) fn json(status: StatusCode, kind: &'static str, body: &str) -> Response<ResBody> {
    let mut resp = Response::new(full(body.to_owned().into_bytes()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp.headers_mut()
        .insert("x-pipegate-error", HeaderValue::from_static(kind));
    resp
}

pub(crate) fn empty(status: StatusCode) -> Response<ResBody> {
    let mut resp = Response::new(Empty::new().map_err(|never| match never {}).boxed());
    *resp.status_mut() = status;
    resp
}

pub(crate) fn full(bytes: impl Into<Bytes>) -> ResBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bad_gateway_body_names_the_upstream() {
        let up = Endpoint::parse("unix:///run/x.sock").unwrap();
        let resp = proxy_error(
            Some(&up),
            &ProxyError::Unavailable {
                detail: "nothing is listening".into(),
            },
        );
        assert_eq!(resp.status(), 502);
        assert_eq!(resp.headers()["x-pipegate-error"], "upstream_unavailable");
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(
            body,
            r#"{"error":"upstream unavailable","upstream":"unix:///run/x.sock","detail":"nothing is listening"}"#
        );
    }
}
