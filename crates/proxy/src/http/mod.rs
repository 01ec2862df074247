//! HTTP mode: hyper serves each accepted connection (HTTP/1.1 and h2c prior knowledge),
//! requests are forwarded over a pooled client, upgrades are spliced, and `/_pipegate/`
//! is answered here.
//!
//! Per connection: the client's bytes pass the framing checks (framing.rs) before hyper
//! parses them. Per request, in order: the guard (guard.rs: a head refused at the edge,
//! then `Host`, `Origin` and the bearer token on guarded TCP listeners) → own endpoints →
//! hop-by-hop stripping (headers.rs) → forward (pooled client, upstream timeout, the
//! upstream token from upstream_token.rs) → on `101`, splice the tunnel (tunnel.rs) →
//! every failure becomes exactly one response (respond.rs).

mod activity;
mod body;
pub(crate) mod framing;
mod guard;
pub(crate) mod headers;
pub(crate) mod metrics;
mod on_wake;
mod respond;
mod tunnel;
mod upstream;
mod upstream_token;

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, AUTHORIZATION, CONNECTION, HOST, UPGRADE};
use http::{Method, Request, Response, StatusCode, Version};
use http_body_util::combinators::BoxBody;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use pipegate_transport::hyper::host_header;
use pipegate_transport::{Mode, Stream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::config::{Config, LocalService, Target};
use activity::{Activity, Tracked};
use body::{Counted, Exchange, Flow};
use framing::{Inspected, Verdicts};
use guard::{Arrival, Guard};
use metrics::Metrics;
use respond::ProxyError;
pub(crate) use upstream_token::UpstreamToken;

/// The error type of [`ResBody`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Every response body this proxy returns.
pub type ResBody = BoxBody<Bytes, BoxError>;

/// The reserved prefix: never forwarded.
const OWN_PREFIX: &str = "/_pipegate/";

/// State shared by every connection of one bridge.
pub(crate) struct Shared {
    route: Route,
    http1: http1::Builder,
    http2: http2::Builder<TokioExecutor>,
    header_timeout: Duration,
    upstream_timeout: Duration,
    tunnel_idle_timeout: Duration,
    /// Heads bigger than this are hyper's to refuse (431), not the framing check's.
    max_head: usize,
    nonce: Option<HeaderValue>,
    guard: Guard,
    upstream_token: Option<Arc<UpstreamToken>>,
    pub(crate) metrics: Arc<Metrics>,
    tracker: TaskTracker,
    abort: CancellationToken,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("route", &self.route)
            .finish_non_exhaustive()
    }
}

impl Shared {
    pub(crate) fn new(
        config: &Config,
        upstream_token: Option<Arc<UpstreamToken>>,
        metrics: Arc<Metrics>,
        tracker: TaskTracker,
        abort: CancellationToken,
    ) -> Shared {
        let route = match &config.target {
            Target::Upstream(upstream) => Route::Forward(upstream::Pool::new(
                upstream.clone(),
                config.connect_options.clone(),
                config.dialer.clone(),
                // An idle pipe connection pins an upstream pipe instance; keep a few.
                64,
                Duration::from_secs(90),
                Arc::clone(&metrics),
            )),
            Target::Local(service) => Route::Local(Arc::clone(service)),
        };
        let max_head = config.http.max_header_size.max(8192);
        let mut http1 = http1::Builder::new();
        http1
            .timer(TokioTimer::new())
            // Restarts whenever a connection waits for the next request head, so it also
            // closes idle keep-alive connections.
            .header_read_timeout(config.http.header_timeout)
            // hyper-util's builder has no max_header_size; a head that does not fit the
            // read buffer is refused with 431, which is the limit we want.
            .max_buf_size(max_head);
        let mut http2 = http2::Builder::new(TokioExecutor::new());
        http2
            .timer(TokioTimer::new())
            .max_header_list_size(config.http.max_header_size as u32);
        Shared {
            route,
            http1,
            http2,
            header_timeout: config.http.header_timeout,
            upstream_timeout: config.http.upstream_timeout,
            tunnel_idle_timeout: config.http.tunnel_idle_timeout,
            max_head,
            nonce: config
                .nonce
                .as_deref()
                .and_then(|n| HeaderValue::from_str(n).ok()),
            guard: Guard::new(&config.tcp_access),
            upstream_token,
            metrics,
            tracker,
            abort,
        }
    }
}

/// Serves one accepted connection until it closes, `stop` asks for a graceful close
/// (finish the request in flight, then close), or `abort` cuts it.
pub(crate) async fn serve_connection(stream: Stream, shared: Arc<Shared>, stop: CancellationToken) {
    let mode = stream.mode();
    let half_close = stream.supports_half_close();
    let listener = Arc::new(stream.peer().endpoint.clone());
    let verdicts = Arc::new(Verdicts::default());
    let mut stream = Inspected::new(stream, shared.max_head, Arc::clone(&verdicts));
    // Given back when this function's future is dropped, however the connection ends.
    let _open = shared.metrics.open_connection(mode);
    let abort = shared.abort.clone();
    let service_shared = Arc::clone(&shared);
    // hyper's header_read_timeout starts only once the HTTP version is known: a client
    // that sends nothing (or a slow h2 preface) would hold the connection, and a
    // max_connections slot, forever. So the first request head must also arrive within
    // the header timeout of the accept.
    let first_request = CancellationToken::new();
    let service_first_request = first_request.clone();
    let first_head_deadline = async {
        tokio::select! {
            _ = first_request.cancelled() => std::future::pending::<()>().await,
            _ = tokio::time::sleep(shared.header_timeout) => {}
        }
    };
    tokio::pin!(first_head_deadline);
    // HTTP/2 prior knowledge or HTTP/1, told by the first bytes. Done here rather than by
    // hyper-util's auto builder: its 24-byte probe reaches hyper as a separate first read,
    // which makes hyper's 8 KiB read buffer grow to 16 KiB on every connection.
    let h2 = tokio::select! {
        sniffed = stream.sniff_h2() => sniffed,
        _ = &mut first_head_deadline => Err(std::io::ErrorKind::TimedOut.into()),
        _ = stop.cancelled() => Err(std::io::ErrorKind::Interrupted.into()),
        _ = abort.cancelled() => Err(std::io::ErrorKind::Interrupted.into()),
    };
    let h2 = match h2 {
        Ok(h2) => h2,
        Err(e) => {
            if e.kind() == std::io::ErrorKind::TimedOut {
                tracing::info!(
                    close.reason = "header_timeout",
                    "connection closed: request headers not received in time"
                );
            } else {
                tracing::debug!(error = %e, "connection ended before its first request");
            }
            return;
        }
    };
    // HTTP/1 idle keep-alive connections are closed by hyper's header timeout; HTTP/2 ones
    // by this (see activity.rs).
    let activity = h2.then(Activity::new);
    let idle = {
        let activity = activity.clone();
        let limit = shared.header_timeout;
        async move {
            match activity {
                Some(activity) => activity.idle_for(limit).await,
                None => std::future::pending().await,
            }
        }
    };
    let leg = shared.route.leg();
    // Cancelling takes the token's lock; once per connection is enough.
    let first_seen = std::sync::atomic::AtomicBool::new(false);
    let service = service_fn(move |req| {
        if !first_seen.swap(true, std::sync::atomic::Ordering::Relaxed) {
            service_first_request.cancel();
        }
        let shared = Arc::clone(&service_shared);
        let leg = leg.clone();
        let listener = Arc::clone(&listener);
        let verdicts = Arc::clone(&verdicts);
        let busy = activity.as_ref().map(Activity::begin);
        // Boxed: hyper keeps a slot sized for this future in every connection for its
        // whole life, idle or not (2.6 KiB unboxed); boxed, the slot is a pointer and the
        // future's memory exists only while a request is in flight.
        Box::pin(async move {
            let arrival = Arrival {
                mode,
                listener: &listener,
                verdicts: &verdicts,
            };
            let resp = handle(shared, &arrival, &leg, half_close, req).await;
            Ok::<_, Infallible>(match busy {
                Some(busy) => resp.map(|body| Tracked::new(body, busy).boxed()),
                None => resp,
            })
        }) as ServiceFuture
    });
    let io = TokioIo::new(stream);
    let mut conn = if h2 {
        Conn::H2(Box::pin(shared.http2.serve_connection(io, service)))
    } else {
        Conn::H1(Box::pin(
            shared.http1.serve_connection(io, service).with_upgrades(),
        ))
    };
    // Shutdown, polled only when it fires (on_wake.rs), not on every wake-up of this task.
    let mut shutdown = on_wake::OnWake::new(async {
        tokio::select! {
            _ = stop.cancelled() => Shutdown::Stop,
            _ = abort.cancelled() => Shutdown::Abort,
        }
    });
    let result = tokio::select! {
        result = &mut conn => result,
        _ = &mut first_head_deadline => {
            tracing::info!(
                close.reason = "header_timeout",
                "connection closed: request headers not received in time"
            );
            Ok(())
        }
        _ = idle => {
            tracing::debug!(close.reason = "idle", "closing an idle HTTP/2 connection");
            conn.graceful_shutdown();
            tokio::select! {
                result = &mut conn => result,
                _ = abort.cancelled() => Ok(()),
            }
        }
        signal = &mut shutdown => match signal {
            Shutdown::Stop => {
                conn.graceful_shutdown();
                tokio::select! {
                    result = &mut conn => result,
                    _ = abort.cancelled() => Ok(()),
                }
            }
            Shutdown::Abort => Ok(()),
        },
    };
    if let Err(e) = result {
        if e.is_timeout() {
            tracing::info!(
                close.reason = "header_timeout",
                "connection closed: request headers not received in time"
            );
        } else {
            tracing::debug!(error = %e, "connection ended with an error");
        }
    }
}

/// Which shutdown signal reached a connection.
enum Shutdown {
    /// Finish the request in flight, then close.
    Stop,
    /// Close now.
    Abort,
}

/// What the per-connection service returns for each request.
type ServiceFuture =
    Pin<Box<dyn std::future::Future<Output = Result<Response<ResBody>, Infallible>> + Send>>;

/// A client connection's byte stream, as hyper sees it.
type ClientIo = TokioIo<Inspected<Stream>>;

/// One client connection as hyper serves it.
enum Conn<S>
where
    S: hyper::service::HttpService<Incoming>,
{
    H1(Pin<Box<http1::UpgradeableConnection<ClientIo, S>>>),
    H2(Pin<Box<http2::Connection<ClientIo, S, TokioExecutor>>>),
}

impl<S> Conn<S>
where
    S: hyper::service::HttpService<Incoming, ResBody = ResBody>,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
{
    fn graceful_shutdown(&mut self) {
        match self {
            Conn::H1(conn) => conn.as_mut().graceful_shutdown(),
            Conn::H2(conn) => conn.as_mut().graceful_shutdown(),
        }
    }
}

impl<S> std::future::Future for Conn<S>
where
    S: hyper::service::HttpService<Incoming, ResBody = ResBody>,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
{
    type Output = hyper::Result<()>;

    fn poll(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        match self.get_mut() {
            Conn::H1(conn) => conn.as_mut().poll(cx),
            Conn::H2(conn) => conn.as_mut().poll(cx),
        }
    }
}

async fn handle(
    shared: Arc<Shared>,
    arrival: &Arrival<'_>,
    leg: &Leg,
    client_half_close: bool,
    req: Request<Incoming>,
) -> Response<ResBody> {
    // hyper treats these as upgrades (RFC 9110 §7.8, §9.3.6) and the framing check stops
    // reading at them; if one is refused, the connection must not carry more requests.
    let upgrade_like = (req.version() == Version::HTTP_11 && req.headers().contains_key(UPGRADE))
        || req.method() == Method::CONNECT;
    let mut resp = route(shared, arrival, leg, client_half_close, req).await;
    if upgrade_like && resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        resp.headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

async fn route(
    shared: Arc<Shared>,
    arrival: &Arrival<'_>,
    leg: &Leg,
    client_half_close: bool,
    mut req: Request<Incoming>,
) -> Response<ResBody> {
    let mode = arrival.mode;
    headers::mark_sensitive(req.headers_mut());
    if let Err(rejection) = shared.guard.check(&mut req, arrival) {
        let resp = respond::proxy_error(None, &ProxyError::Rejected(rejection));
        // The method and path only: nothing the client sent in headers is logged.
        tracing::info!(
            http.request.method = %req.method(),
            url.path = %req.uri().path(),
            http.response.status_code = resp.status().as_u16(),
            reason = rejection.reason(),
            "request refused"
        );
        shared.metrics.request(resp.status().as_u16());
        return resp;
    }
    if req.uri().path().starts_with(OWN_PREFIX) {
        let resp = own_endpoint(&shared, &req);
        shared.metrics.request(resp.status().as_u16());
        return resp;
    }
    let span = tracing::info_span!(
        "request",
        http.request.method = %req.method(),
        url.path = %req.uri().path(),
        network.protocol.version = ?req.version(),
        http.response.status_code = tracing::field::Empty,
    );
    let exchange = Exchange::new(span.clone(), Arc::clone(&shared.metrics));
    match leg {
        Leg::Forward(lane) => {
            forward(&shared, lane, mode, client_half_close, req, exchange)
                .instrument(span)
                .await
        }
        Leg::Local(service) => {
            let resp = service.call(req, mode).instrument(span.clone()).await;
            exchange.set_status(resp.status().as_u16());
            resp.map(|body| Counted::new(body, exchange, Flow::UpstreamToClient).boxed())
        }
    }
}

/// What a bridge does with requests that are not for `/_pipegate/`.
enum Route {
    Forward(Arc<upstream::Pool>),
    Local(Arc<dyn LocalService>),
}

impl Route {
    /// What one connection uses: its own lane into the pool (upstream.rs), or the service.
    fn leg(&self) -> Leg {
        match self {
            Route::Forward(pool) => Leg::Forward(pool.lane()),
            Route::Local(service) => Leg::Local(Arc::clone(service)),
        }
    }
}

/// One connection's [`Route`].
#[derive(Clone)]
enum Leg {
    Forward(Arc<upstream::Lane>),
    Local(Arc<dyn LocalService>),
}

impl std::fmt::Debug for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Route::Forward(pool) => write!(f, "Forward({})", pool.endpoint()),
            Route::Local(_) => f.write_str("Local"),
        }
    }
}

fn own_endpoint(shared: &Shared, req: &Request<Incoming>) -> Response<ResBody> {
    let path = req.uri().path();
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return respond::json(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            r#"{"error":"only GET is allowed under /_pipegate/"}"#,
        );
    }
    match path {
        "/_pipegate/health" => {
            let mut resp = respond::empty(StatusCode::NO_CONTENT);
            if let Some(nonce) = &shared.nonce {
                resp.headers_mut().insert("x-pipegate-nonce", nonce.clone());
            }
            resp
        }
        "/_pipegate/metrics" => {
            let mut resp = Response::new(respond::full(shared.metrics.render()));
            resp.headers_mut().insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            resp
        }
        _ => respond::json(
            StatusCode::NOT_FOUND,
            "not_found",
            r#"{"error":"unknown pipegate endpoint; try /_pipegate/health or /_pipegate/metrics"}"#,
        ),
    }
}

async fn forward(
    shared: &Shared,
    lane: &Arc<upstream::Lane>,
    mode: Mode,
    client_half_close: bool,
    mut req: Request<Incoming>,
    exchange: Arc<Exchange>,
) -> Response<ResBody> {
    // HTTP/2 has no Upgrade (RFC 9113 §8.6); only an HTTP/1.1 request can ask for one.
    let upgrade = req.version() == Version::HTTP_11 && headers::is_upgrade_request(req.headers());
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();

    // Host is preserved; an HTTP/2 request carries it as :authority instead.
    let host = parts
        .headers
        .get(HOST)
        .cloned()
        .or_else(|| {
            parts
                .uri
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        })
        .unwrap_or_else(|| host_header(lane.endpoint()));
    headers::rewrite_request(&mut parts.headers, upgrade);
    parts.headers.insert(HOST, host);
    if let Some(token) = &shared.upstream_token {
        // Whatever the client sent is replaced: this bridge authenticates itself.
        parts.headers.insert(AUTHORIZATION, token.header());
    }
    // Origin-form: the upstream is reached by its endpoint, not by the URI's authority.
    parts.uri = match parts.uri.path_and_query() {
        Some(pq) => http::Uri::from(pq.clone()),
        None => http::Uri::from_static("/"),
    };
    // The upstream leg is HTTP/1.1 whatever the client spoke (h2c in, HTTP/1.1 out).
    parts.version = Version::HTTP_11;
    let req = Request::from_parts(
        parts,
        Counted::new(body, Arc::clone(&exchange), Flow::ClientToUpstream),
    );

    let result = tokio::time::timeout(shared.upstream_timeout, lane.request(req)).await;
    let mut resp = match result {
        Ok(Ok(resp)) => resp,
        Ok(Err(e)) => {
            shared.metrics.upstream_error();
            let detail = e.detail();
            tracing::warn!(error = %detail, upstream.endpoint = %lane.endpoint(), "upstream request failed");
            let resp =
                respond::proxy_error(Some(lane.endpoint()), &ProxyError::Unavailable { detail });
            exchange.set_status(resp.status().as_u16());
            return resp;
        }
        Err(_) => {
            shared.metrics.upstream_error();
            let after_ms = shared.upstream_timeout.as_millis() as u64;
            tracing::warn!(upstream.endpoint = %lane.endpoint(), after_ms, "upstream timed out");
            let resp =
                respond::proxy_error(Some(lane.endpoint()), &ProxyError::Timeout { after_ms });
            exchange.set_status(resp.status().as_u16());
            return resp;
        }
    };
    exchange.set_status(resp.status().as_u16());
    headers::mark_sensitive(resp.headers_mut());

    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        if let Some(client_upgrade) = client_upgrade {
            resp.body_mut().detach();
            let upstream_upgrade = hyper::upgrade::on(&mut resp);
            let params = tunnel::TunnelParams {
                client_half_close,
                upstream_half_close: lane.endpoint().mode() != Mode::NamedPipe,
                idle_timeout: shared.tunnel_idle_timeout,
                abort: shared.abort.clone(),
                metrics: Arc::clone(&shared.metrics),
            };
            let span =
                tracing::info_span!(parent: exchange.span(), "tunnel", transport.mode = %mode);
            shared.tracker.spawn(
                crate::server::contained(tunnel::run(client_upgrade, upstream_upgrade, params))
                    .instrument(span),
            );
            headers::rewrite_response(resp.headers_mut(), true);
            let (parts, _) = resp.into_parts();
            return Response::from_parts(parts, respond::full(Bytes::new()));
        }
    }
    headers::rewrite_response(resp.headers_mut(), false);
    resp.map(|body| {
        Counted::new(body, exchange, Flow::UpstreamToClient)
            .map_err(BoxError::from)
            .boxed()
    })
}
