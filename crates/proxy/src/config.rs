//! Validated bridge configuration.

use std::time::Duration;

use pipegate_transport::{ConnectOptions, Endpoint, ListenOptions};

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
    /// Where every connection is forwarded.
    pub upstream: Endpoint,
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
        Config {
            listen,
            upstream,
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
