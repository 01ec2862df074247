//! pipegate's reference agent: the API `pipegate serve` answers when it has no upstream.
//!
//! # Brief overview
//!
//! [`Agent::handle`] answers one HTTP request. It knows nothing about sockets: the
//! bridge's HTTP server (`pipegate-proxy`) accepts connections on any endpoint and calls
//! it, so the agent is reachable over named pipes, Unix sockets and TCP alike.
//!
//! | route | what |
//! |---|---|
//! | `GET /v1/info` | version, OS, pid, the transport the request came in on |
//! | `POST /v1/sessions` | start a program ([`CreateSession`](protocol::CreateSession)) → `201` [`Created`](protocol::Created) |
//! | `GET /v1/sessions` | every session |
//! | `GET /v1/sessions/{id}` | [`SessionInfo`](protocol::SessionInfo): state, pid, exit code and signal |
//! | `GET /v1/sessions/{id}/attach` | WebSocket: input, output, resize, signals, status ([`protocol`]) |
//! | `POST /v1/sessions/{id}/resize` | [`TerminalSize`](protocol::TerminalSize) → `204` |
//! | `POST /v1/sessions/{id}/signal` | [`SignalRequest`](protocol::SignalRequest) → `204` |
//! | `DELETE /v1/sessions/{id}` | SIGHUP, grace, SIGKILL to the session's process groups → `204` |
//!
//! Errors are JSON, `{"error": {"kind", "message", "field"?}}`: `400` for bad bodies
//! (the message and `field` name the field: `argv`, `size.Width`, `env.X`, `Signal`),
//! `404` for an unknown session, `409` for a second attach (or a resize without a
//! terminal), `410` for an attach after the status was delivered, `429` at the session
//! limit, `503` once shutting down, `501` for what the platform cannot do (terminal
//! sessions on Windows).
//!
//! A session's program runs on a pseudo-terminal (`tty: true`, the default) or on pipes
//! with stdout and stderr apart. It starts at once; output waits (bounded, back-pressuring
//! the program) until a client attaches. One client at a time may attach; a client that
//! leaves without the exit status may re-attach within [`Limits::detach_timeout`], after
//! which the session is ended as `DELETE` would. A client that answers nothing, not
//! even the agent's pings, for [`Limits::ping_timeout`] is disconnected and counts as
//! gone. [`Agent::shutdown`] ends every session the same way. The environment and `PATH`
//! policy is on [`CreateSession`](protocol::CreateSession).
//!
//! The program starts as it would at a terminal, whatever state the agent runs in: on
//! Unix it leads a session of its own (on pipes: with no controlling terminal, so it
//! never reaches a terminal the agent runs in), with every signal at its default and the
//! open-files limit the process started with
//! ([`raise_open_files_limit`](pipegate_transport::raise_open_files_limit) raises the
//! agent's own). On Windows it gets a console of its own and runs in a Job object with
//! whatever it starts.
//!
//! # Examples
//!
//! ```
//! use pipegate_agent::Agent;
//! use pipegate_transport::Mode;
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let agent = Agent::new();
//! let request = http::Request::get("/v1/info").body(http_body_util::Empty::<bytes::Bytes>::new())?;
//! let resp = agent.handle(request, Mode::Unix).await;
//! assert_eq!(resp.status(), 200);
//! let info: serde_json::Value = serde_json::from_slice(resp.body())?;
//! assert_eq!(info["transport"], "unix");
//! # Ok(()) }
//! ```
#![warn(missing_docs)]
#![doc(test(attr(deny(warnings))))]

mod api;
mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod protocol;
mod pty;
mod session;
mod ws;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use pipegate_transport::Mode;

/// Limits of an [`Agent`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Limits {
    /// Most sessions whose program is running at once; more get `429`. Default 64.
    pub max_sessions: usize,
    /// A session nobody is attached to for this long is ended (SIGHUP, grace, SIGKILL)
    /// and removed. Default 5 minutes.
    pub detach_timeout: Duration,
    /// How long a session stays visible (`GET`) after its status was delivered.
    /// Default 1 minute.
    pub retention: Duration,
    /// Between SIGHUP and SIGKILL when a session is ended. Default 2 s.
    pub kill_grace: Duration,
    /// Most input bytes waiting for the program; a client that sends more while the
    /// program is not reading is closed with 1008. Default 4 MiB.
    pub stdin_buffer: usize,
    /// Largest JSON request body; larger gets `413`. Default 64 KiB.
    pub max_body: usize,
    /// An attached client is pinged every third of this; one that sends nothing at all
    /// (not even the Pong) for this long is disconnected with Close 1001, and the
    /// session is detached (see [`detach_timeout`](Limits::detach_timeout)), so a
    /// client that hangs cannot hold a session forever. Zero turns pings off.
    /// Default 90 s.
    pub ping_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_sessions: 64,
            detach_timeout: Duration::from_secs(300),
            retention: Duration::from_secs(60),
            kill_grace: Duration::from_secs(2),
            stdin_buffer: 4 << 20,
            max_body: 64 << 10,
            ping_timeout: Duration::from_secs(90),
        }
    }
}

impl Limits {
    /// Sets [`max_sessions`](Limits::max_sessions).
    pub fn max_sessions(mut self, max: usize) -> Limits {
        self.max_sessions = max.max(1);
        self
    }

    /// Sets [`detach_timeout`](Limits::detach_timeout).
    pub fn detach_timeout(mut self, timeout: Duration) -> Limits {
        self.detach_timeout = timeout;
        self
    }

    /// Sets [`retention`](Limits::retention).
    pub fn retention(mut self, retention: Duration) -> Limits {
        self.retention = retention;
        self
    }

    /// Sets [`kill_grace`](Limits::kill_grace).
    pub fn kill_grace(mut self, grace: Duration) -> Limits {
        self.kill_grace = grace;
        self
    }

    /// Sets [`stdin_buffer`](Limits::stdin_buffer).
    pub fn stdin_buffer(mut self, bytes: usize) -> Limits {
        self.stdin_buffer = bytes.max(1);
        self
    }

    /// Sets [`ping_timeout`](Limits::ping_timeout) (zero: no pings).
    pub fn ping_timeout(mut self, timeout: Duration) -> Limits {
        self.ping_timeout = timeout;
        self
    }
}

/// The agent: its sessions and what it reports about itself. Cheap to clone (shared).
#[derive(Debug, Clone)]
pub struct Agent {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    started: SystemTime,
    limits: Limits,
    sessions: Arc<session::Registry>,
}

impl Default for Agent {
    fn default() -> Agent {
        Agent::new()
    }
}

impl Agent {
    /// An agent with the default [`Limits`].
    pub fn new() -> Agent {
        Agent::with_limits(Limits::default())
    }

    /// An agent with these limits.
    pub fn with_limits(limits: Limits) -> Agent {
        Agent {
            inner: Arc::new(Inner {
                started: SystemTime::now(),
                sessions: Arc::new(session::Registry::new(limits.clone())),
                limits,
            }),
        }
    }

    /// Answers one request. `transport` is how the request reached pipegate; `/v1/info`
    /// reports it. An attach request that is accepted is answered `101`, and the
    /// WebSocket is served on a task of its own once the connection is upgraded (the
    /// request must come from a hyper server with upgrades enabled).
    ///
    /// # Panics
    ///
    /// Outside a Tokio runtime, for requests that start sessions.
    pub async fn handle<B>(&self, request: Request<B>, transport: Mode) -> Response<Bytes>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        api::route(self, request, transport).await
    }

    /// Ends every session as `DELETE` would (SIGHUP and SIGCONT to each session's
    /// process groups, [`Limits::kill_grace`], then SIGKILL to the same groups and to
    /// any found since), concurrently, and refuses new sessions (`503`) from now on.
    /// Attached clients get their exit status; this waits a few seconds at most for
    /// that. Call it before the runtime goes away: on Unix, dropping a running session
    /// kills only its program's process, not the jobs it started in other process groups
    /// (on Windows, dropping it closes its Job object, which ends them all).
    pub async fn shutdown(&self) {
        self.inner.sessions.shutdown().await;
    }

    fn info(&self, transport: Mode) -> serde_json::Value {
        serde_json::json!({
            "name": "pipegate",
            "version": env!("CARGO_PKG_VERSION"),
            "os": std::env::consts::OS,
            "arch": std::env::consts::ARCH,
            "pid": std::process::id(),
            "transport": transport.as_str(),
            "uptime_s": self.inner.started.elapsed().map(|d| d.as_secs()).unwrap_or(0),
        })
    }
}
