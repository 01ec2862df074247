//! Every API failure, and the one place it becomes an HTTP response.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};

/// Why a request failed. Display is the message the client reads.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ApiError {
    /// A bad request body or parameter; `field` names it (`argv`, `size.Width`, …).
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    /// A malformed request that is not about one body field (headers, upgrade).
    #[error("{0}")]
    BadRequest(String),
    /// No session with this id.
    #[error("no session {0:?}; it may have ended and been removed")]
    NoSession(String),
    /// No such route.
    #[error("no such endpoint; the agent API is /v1/info and /v1/sessions…")]
    NoRoute,
    /// The route exists but not for this method.
    #[error("use {allow} for {path}")]
    Method { allow: &'static str, path: String },
    /// The session is in the wrong state for this request.
    #[error("{0}")]
    Conflict(String),
    /// The session ended and its output was delivered.
    #[error("{0}")]
    Gone(String),
    /// Too many sessions are running.
    #[error("too many sessions running (limit {0}); end one with DELETE /v1/sessions/ID")]
    TooMany(usize),
    /// The agent is shutting down and starts no more sessions.
    #[error("the agent is shutting down; it starts no new sessions")]
    ShuttingDown,
    /// The request body is larger than the agent reads.
    #[error("request body larger than {0} bytes")]
    TooLarge(usize),
    /// This build or platform cannot do it.
    #[error("{0}")]
    Unsupported(String),
    /// Something on the agent's side failed.
    #[error("{message}")]
    Internal {
        message: String,
        #[source]
        source: Option<std::io::Error>,
    },
}

impl ApiError {
    /// A body or parameter problem in `field`.
    pub(crate) fn invalid(field: impl Into<String>, message: impl Into<String>) -> ApiError {
        ApiError::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }

    /// An agent-side failure caused by `source`.
    pub(crate) fn internal(message: impl Into<String>, source: std::io::Error) -> ApiError {
        ApiError::Internal {
            message: message.into(),
            source: Some(source),
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            ApiError::Invalid { .. } | ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NoSession(_) | ApiError::NoRoute => StatusCode::NOT_FOUND,
            ApiError::Method { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Gone(_) => StatusCode::GONE,
            ApiError::TooMany(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Unsupported(_) => StatusCode::NOT_IMPLEMENTED,
            ApiError::Internal { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            ApiError::Invalid { .. } => "invalid_argument",
            ApiError::BadRequest(_) => "bad_request",
            ApiError::NoSession(_) | ApiError::NoRoute => "not_found",
            ApiError::Method { .. } => "method_not_allowed",
            ApiError::Conflict(_) => "conflict",
            ApiError::Gone(_) => "gone",
            ApiError::TooMany(_) => "too_many_sessions",
            ApiError::TooLarge(_) => "payload_too_large",
            ApiError::ShuttingDown => "shutting_down",
            ApiError::Unsupported(_) => "not_implemented",
            ApiError::Internal { .. } => "internal",
        }
    }

    /// The response: `{"error": {"kind", "message", "field"?}}` with the matching status.
    pub(crate) fn into_response(self) -> Response<Bytes> {
        let mut error = serde_json::json!({
            "kind": self.kind(),
            "message": self.to_string(),
        });
        if let ApiError::Invalid { field, .. } = &self {
            error["field"] = serde_json::Value::String(field.clone());
        }
        if let ApiError::Internal {
            source: Some(source),
            ..
        } = &self
        {
            error["detail"] = serde_json::Value::String(source.to_string());
            tracing::warn!(error = %self, cause = %source, "request failed");
        }
        let mut resp = json(self.status(), &serde_json::json!({ "error": error }));
        if let ApiError::Method { allow, .. } = &self {
            resp.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static(allow));
        }
        resp
    }
}

/// A JSON response.
pub(crate) fn json(status: StatusCode, body: &impl serde::Serialize) -> Response<Bytes> {
    let bytes = serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec());
    let mut resp = Response::new(Bytes::from(bytes));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}
