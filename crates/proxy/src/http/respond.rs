//! Every response pipegate makes itself, and the one place proxy failures become HTTP.
//!
//! Each synthetic error carries `x-pipegate-error: <kind>` so clients and tests can tell
//! a pipegate failure from an upstream answer without parsing the body.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use pipegate_transport::Endpoint;

use super::ResBody;

/// Why forwarding failed.
#[derive(Debug)]
pub(crate) enum ProxyError {
    /// The upstream could not be reached (refused, missing, permission denied) or
    /// failed before answering.
    Unavailable { detail: String },
    /// The upstream did not answer within the upstream timeout.
    Timeout { after_ms: u64 },
}

/// The single rescue: a failure → a `502`/`504` with a small JSON body.
pub(crate) fn proxy_error(upstream: &Endpoint, error: &ProxyError) -> Response<ResBody> {
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
    };
    let body = serde_json::json!({
        "error": error_text,
        "upstream": upstream.to_string(),
        "detail": detail,
    });
    json(status, kind, &body.to_string())
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
            &up,
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
