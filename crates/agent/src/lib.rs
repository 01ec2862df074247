//! pipegate's reference agent: the API `pipegate serve` answers when it has no upstream.
//!
//! # Brief overview
//!
//! [`Agent::handle`] maps one request (method, path, and the transport it arrived on) to
//! a response. It knows nothing about sockets: the bridge's HTTP server
//! (`pipegate-proxy`) accepts connections on any endpoint and calls it, so the agent is
//! reachable over named pipes, Unix sockets and TCP alike and shares the bridge's limits,
//! health endpoint and telemetry.
//!
//! Today the API has `GET /v1/info`; the session endpoints (`/v1/sessions…`: PTY over
//! WebSocket) answer `501 Not Implemented` until they land.
//!
//! # Examples
//!
//! ```
//! use pipegate_agent::Agent;
//! use pipegate_transport::Mode;
//!
//! let agent = Agent::new();
//! let resp = agent.handle(&http::Method::GET, "/v1/info", Mode::Unix);
//! assert_eq!(resp.status(), 200);
//! let info: serde_json::Value = serde_json::from_slice(resp.body())?;
//! assert_eq!(info["transport"], "unix");
//! # Ok::<(), serde_json::Error>(())
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![doc(test(attr(deny(warnings))))]

use std::time::SystemTime;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Response, StatusCode};
use pipegate_transport::Mode;

/// The agent's state: what it reports about itself.
#[derive(Debug, Clone)]
pub struct Agent {
    started: SystemTime,
}

impl Default for Agent {
    fn default() -> Agent {
        Agent::new()
    }
}

impl Agent {
    /// An agent that started now.
    pub fn new() -> Agent {
        Agent {
            started: SystemTime::now(),
        }
    }

    /// Answers one request. `transport` is how the request reached pipegate; `/v1/info`
    /// reports it.
    pub fn handle(&self, method: &Method, path: &str, transport: Mode) -> Response<Bytes> {
        match (method, path) {
            (&Method::GET, "/v1/info") => json(
                StatusCode::OK,
                serde_json::json!({
                    "name": "pipegate",
                    "version": env!("CARGO_PKG_VERSION"),
                    "os": std::env::consts::OS,
                    "arch": std::env::consts::ARCH,
                    "pid": std::process::id(),
                    "transport": transport.as_str(),
                    "uptime_s": self.started.elapsed().map(|d| d.as_secs()).unwrap_or(0),
                }),
            ),
            (_, "/v1/info") => error(StatusCode::METHOD_NOT_ALLOWED, "use GET for /v1/info"),
            (_, p) if p == "/v1/sessions" || p.starts_with("/v1/sessions/") => error(
                StatusCode::NOT_IMPLEMENTED,
                "PTY sessions are not implemented in this build of pipegate",
            ),
            _ => error(
                StatusCode::NOT_FOUND,
                "no such endpoint; the agent API has GET /v1/info",
            ),
        }
    }
}

fn json(status: StatusCode, body: serde_json::Value) -> Response<Bytes> {
    let mut resp = Response::new(Bytes::from(body.to_string()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

fn error(status: StatusCode, message: &str) -> Response<Bytes> {
    json(status, serde_json::json!({ "error": message }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(resp: &Response<Bytes>) -> serde_json::Value {
        serde_json::from_slice(resp.body()).unwrap()
    }

    #[test]
    fn info_reports_the_transport_and_process() {
        let agent = Agent::new();
        let resp = agent.handle(&Method::GET, "/v1/info", Mode::NamedPipe);
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()[header::CONTENT_TYPE], "application/json");
        let info = body(&resp);
        assert_eq!(info["transport"], "npipe");
        assert_eq!(info["pid"], std::process::id());
        assert_eq!(info["os"], std::env::consts::OS);
        assert_eq!(info["version"], env!("CARGO_PKG_VERSION"));
    }

    #[test]
    fn other_routes() {
        let agent = Agent::new();
        assert_eq!(
            agent.handle(&Method::POST, "/v1/info", Mode::Tcp).status(),
            405
        );
        let sessions = agent.handle(&Method::POST, "/v1/sessions", Mode::Tcp);
        assert_eq!(sessions.status(), 501);
        assert!(body(&sessions)["error"]
            .as_str()
            .unwrap()
            .contains("not implemented"));
        assert_eq!(agent.handle(&Method::GET, "/nope", Mode::Tcp).status(), 404);
    }
}
