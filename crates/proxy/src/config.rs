//! Validated bridge configuration.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use pipegate_transport::{ConnectOptions, Endpoint, ListenOptions, Mode};

use crate::http::ResBody;

/// A request handler that runs inside pipegate instead of behind an upstream (the
/// built-in agent). It gets the transport the request arrived on.
pub trait LocalService: Send + Sync + 'static {
    /// Answers one request.
    fn call(
        &self,
        request: http::Request<Incoming>,
        transport: Mode,
    ) -> Pin<Box<dyn Future<Output = http::Response<ResBody>> + Send>>;
}

/// Where requests go.
#[derive(Clone)]
#[non_exhaustive]
pub enum Target {
    /// Forwarded to this endpoint.
    Upstream(Endpoint),
    /// Answered in-process (HTTP mode only).
    Local(Arc<dyn LocalService>),
}

impl Target {
    /// The upstream endpoint, if requests are forwarded.
    pub fn upstream(&self) -> Option<&Endpoint> {
        match self {
            Target::Upstream(endpoint) => Some(endpoint),
            Target::Local(_) => None,
        }
    }
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Upstream(endpoint) => write!(f, "Upstream({endpoint})"),
            Target::Local(_) => f.write_str("Local"),
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Upstream(endpoint) => endpoint.fmt(f),
            Target::Local(_) => f.write_str("local"),
        }
    }
}

/// How connections are forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ForwardMode {
    /// HTTP/1.1 and h2c, WebSocket and other upgrades spliced, `/_pipegate/` answered here.
    Http,
    /// Bytes both ways, no protocol awareness.
    Raw,
}

impl ForwardMode {
    /// `http` or `raw` (the value in logs and instance records).
    pub fn as_str(self) -> &'static str {
        match self {
            ForwardMode::Http => "http",
            ForwardMode::Raw => "raw",
        }
    }
}

/// What a [`Bridge`](crate::Bridge) listens on and forwards to.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// Endpoints to listen on (at least one).
    pub listen: Vec<Endpoint>,
    /// Where requests go.
    pub target: Target,
    /// How.
    pub mode: ForwardMode,
    /// Secure-default overrides for the listeners.
    pub listen_options: ListenOptions,
    /// How the upstream is dialed.
    pub connect_options: ConnectOptions,
    /// How long open connections may take to finish after shutdown begins.
    pub shutdown_grace: Duration,
    /// Most client connections open at once; more are refused (HTTP mode answers `503`).
    pub max_connections: usize,
    /// HTTP mode limits and timeouts.
    pub http: HttpOptions,
    /// Sent as `X-Pipegate-Nonce` by `GET /_pipegate/health` (discovery's liveness proof).
    pub nonce: Option<String>,
}

/// Limits and timeouts of [`ForwardMode::Http`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct HttpOptions {
    /// How long a client may take to send request headers; also how long a kept-alive
    /// connection may sit idle between requests.
    pub header_timeout: Duration,
    /// Largest request head accepted; larger ones get `431`.
    pub max_header_size: usize,
    /// How long the upstream may take to start answering; then `504`.
    pub upstream_timeout: Duration,
    /// An upgraded (WebSocket) tunnel with no bytes moving for this long is closed.
    pub tunnel_idle_timeout: Duration,
}

impl Default for HttpOptions {
    fn default() -> HttpOptions {
        HttpOptions {
            header_timeout: Duration::from_secs(30),
            max_header_size: 64 * 1024,
            upstream_timeout: Duration::from_secs(60),
            tunnel_idle_timeout: Duration::from_secs(3600),
        }
    }
}

impl Config {
    /// A configuration with secure listen defaults, a 5 s dial deadline, a 10 s grace and
    /// the [`HttpOptions`] defaults.
    pub fn new(listen: Vec<Endpoint>, upstream: Endpoint, mode: ForwardMode) -> Config {
        Config::with_target(listen, Target::Upstream(upstream), mode)
    }

    /// An HTTP-mode configuration whose requests `service` answers in-process.
    pub fn local(listen: Vec<Endpoint>, service: Arc<dyn LocalService>) -> Config {
        Config::with_target(listen, Target::Local(service), ForwardMode::Http)
    }

    fn with_target(listen: Vec<Endpoint>, target: Target, mode: ForwardMode) -> Config {
        Config {
            listen,
            target,
            mode,
            listen_options: ListenOptions::default(),
            connect_options: ConnectOptions::default(),
            shutdown_grace: Duration::from_secs(10),
            max_connections: 16_384,
            http: HttpOptions::default(),
            nonce: None,
        }
    }

    /// Sets [`listen_options`](Config::listen_options).
    pub fn listen_options(mut self, options: ListenOptions) -> Config {
        self.listen_options = options;
        self
    }

    /// Sets [`connect_options`](Config::connect_options).
    pub fn connect_options(mut self, options: ConnectOptions) -> Config {
        self.connect_options = options;
        self
    }

    /// Sets [`max_connections`](Config::max_connections).
    pub fn max_connections(mut self, max: usize) -> Config {
        self.max_connections = max.max(1);
        self
    }

    /// Sets [`http`](Config::http).
    pub fn http(mut self, http: HttpOptions) -> Config {
        self.http = http;
        self
    }

    /// Sets [`nonce`](Config::nonce).
    pub fn nonce(mut self, nonce: Option<String>) -> Config {
        self.nonce = nonce;
        self
    }

    /// Sets [`shutdown_grace`](Config::shutdown_grace).
    pub fn shutdown_grace(mut self, grace: Duration) -> Config {
        self.shutdown_grace = grace;
        self
    }
}
