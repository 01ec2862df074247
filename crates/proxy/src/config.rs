//! Validated bridge configuration.

use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use pipegate_transport::{ConnectOptions, Dialer, Endpoint, ListenOptions, Mode};

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

/// What a [`Bridge`](crate::Bridge) listens on and forwards to. Its `Debug` form redacts
/// the nonce and the token.
#[derive(Clone)]
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
    /// Dial the upstream through this (a multiplexed session to a helper, `--via`)
    /// instead of directly; its `Display` is the connection span's `via` field.
    pub dialer: Option<Arc<dyn Dialer>>,
    /// How long open connections may take to finish after shutdown begins.
    pub shutdown_grace: Duration,
    /// Most client connections open at once; more are refused (HTTP mode answers `503`).
    pub max_connections: usize,
    /// HTTP mode limits and timeouts.
    pub http: HttpOptions,
    /// Sent as `X-Pipegate-Nonce` by `GET /_pipegate/health` (discovery's liveness proof).
    pub nonce: Option<String>,
    /// Who may use the TCP listeners (HTTP mode): bearer token, `Host` and `Origin`
    /// checks. Open by default; `pipegate serve` always guards them.
    pub tcp_access: TcpAccess,
    /// A file holding a bearer token to present upstream (`Authorization: Bearer …` on
    /// every forwarded request, HTTP mode only). Re-read when it changes, so an upstream
    /// pipegate that restarts with a new token is followed.
    pub upstream_token_file: Option<PathBuf>,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("target", &self.target)
            .field("mode", &self.mode)
            .field("listen_options", &self.listen_options)
            .field("connect_options", &self.connect_options)
            .field("dialer", &self.dialer)
            .field("shutdown_grace", &self.shutdown_grace)
            .field("max_connections", &self.max_connections)
            .field("http", &self.http)
            .field("nonce", &self.nonce.as_ref().map(|_| "<redacted>"))
            .field("tcp_access", &self.tcp_access)
            .field("upstream_token_file", &self.upstream_token_file)
            .finish()
    }
}

/// Who may use a bridge's TCP listeners in [`ForwardMode::Http`].
///
/// A TCP port on loopback is reachable by every local user and, through DNS rebinding and
/// cross-site WebSocket requests, by web pages the user visits; Unix sockets and named
/// pipes are guarded by the OS instead (file modes, the DACL and the peer's identity), so
/// none of this applies to them. When [`guarded`](TcpAccess::guarded), every request on a
/// TCP listener, `/_pipegate/` included, must pass, in order:
///
/// 1. `Host` (and an absolute-form or HTTP/2 authority) names a loopback host
///    (`localhost`, `127.0.0.1`, `[::1]`), the listener's bound address, or one of
///    [`allow_hosts`](TcpAccess::allow_hosts), with any port; otherwise `421`.
/// 2. `Origin`, when present, is a loopback origin (`http://localhost:*`,
///    `http://127.0.0.1:*`, `http://[::1]:*`) or one of
///    [`allow_origins`](TcpAccess::allow_origins); otherwise `403`.
/// 3. With a [`token`](TcpAccess::token): `Authorization: Bearer <token>`, or, for
///    browsers (which cannot set headers on a WebSocket), a `Sec-WebSocket-Protocol`
///    entry `pipegate.bearer.<token>` offered alongside the real subprotocol; compared in
///    constant time; otherwise `401` with `WWW-Authenticate: Bearer`. The credential that
///    matched is removed before the request goes on, so the upstream never sees it.
///
/// The token is redacted from `Debug`.
#[derive(Clone, Default)]
#[non_exhaustive]
pub struct TcpAccess {
    /// Whether the checks apply at all (`false`: the TCP listeners are open, the
    /// [`Config::new`] default).
    pub guarded: bool,
    /// The bearer token requests must carry (`None`: no token, `Host`/`Origin` only).
    pub token: Option<String>,
    /// More `Host` names accepted (with any port), e.g. the machine's name for
    /// `--allow-remote`.
    pub allow_hosts: Vec<String>,
    /// More origins accepted: `scheme://host[:port]`, or `scheme://host:*` for any port.
    pub allow_origins: Vec<String>,
}

impl TcpAccess {
    /// No checks: anything that can connect may use the TCP listeners.
    pub fn open() -> TcpAccess {
        TcpAccess::default()
    }

    /// `Host` and `Origin` checks, and `token` if given.
    pub fn guarded(token: Option<String>) -> TcpAccess {
        TcpAccess {
            guarded: true,
            token,
            ..TcpAccess::default()
        }
    }

    /// Sets [`allow_hosts`](TcpAccess::allow_hosts).
    pub fn allow_hosts(mut self, hosts: Vec<String>) -> TcpAccess {
        self.allow_hosts = hosts;
        self
    }

    /// Sets [`allow_origins`](TcpAccess::allow_origins).
    pub fn allow_origins(mut self, origins: Vec<String>) -> TcpAccess {
        self.allow_origins = origins;
        self
    }
}

impl fmt::Debug for TcpAccess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TcpAccess")
            .field("guarded", &self.guarded)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("allow_hosts", &self.allow_hosts)
            .field("allow_origins", &self.allow_origins)
            .finish()
    }
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
            dialer: None,
            shutdown_grace: Duration::from_secs(10),
            max_connections: 16_384,
            http: HttpOptions::default(),
            nonce: None,
            tcp_access: TcpAccess::open(),
            upstream_token_file: None,
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

    /// Sets [`dialer`](Config::dialer).
    pub fn dialer(mut self, dialer: Option<Arc<dyn Dialer>>) -> Config {
        self.dialer = dialer;
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

    /// Sets [`tcp_access`](Config::tcp_access).
    pub fn tcp_access(mut self, access: TcpAccess) -> Config {
        self.tcp_access = access;
        self
    }

    /// Sets [`upstream_token_file`](Config::upstream_token_file).
    pub fn upstream_token_file(mut self, path: Option<PathBuf>) -> Config {
        self.upstream_token_file = path;
        self
    }

    /// Sets [`shutdown_grace`](Config::shutdown_grace).
    pub fn shutdown_grace(mut self, grace: Duration) -> Config {
        self.shutdown_grace = grace;
        self
    }
}
