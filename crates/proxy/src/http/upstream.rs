//! The upstream client: HTTP/1.1 connections to one fixed upstream endpoint, kept in a
//! LIFO stack between requests.
//!
//! Written here instead of using hyper-util's legacy `Client` because that client is built
//! for many hosts and costs a measurable share of a small request's CPU (a hashed pool key
//! behind a mutex, a task spawned per HTTP/1 request to give the connection back, dispatch
//! through channels; docs/benchmarks.md "HTTP proxy"). A bridge has exactly one upstream,
//! so the pool is a stack of hyper's own `http1::SendRequest`s:
//!
//! - a connection goes back the moment the response body it carried ends (or, for a
//!   body-less answer, when the body is dropped at its end); the next request waits for
//!   hyper to have finished with it (`ready`), so nothing is spawned per request. One
//!   taken from the shared stack that is still busy (sending an upload the upstream
//!   answered early) is put back, not waited for;
//! - it goes back to the client connection that used it (its [`Lane`]) first: that
//!   client's next request reuses it, and since the connection's task was spawned from
//!   that client's task, both usually stay on one runtime worker (a request handed to a
//!   connection driven by the other worker costs a cross-thread wake-up; with the legacy
//!   client ~22 % of pipegate's samples were the kernel's context switch). The rest, and
//!   a lane's connection once its client connection closes, go to the shared stack;
//! - a request that reaches a pooled connection the upstream has closed meanwhile is not
//!   lost: if hyper did not write it, it is sent again on another connection (what
//!   hyper-util calls retrying a canceled request);
//! - at most `max_idle` idle connections are kept (an idle named-pipe connection holds one
//!   of the upstream's pipe instances): half of them in lanes, half on the stack, so
//!   lanes of idle kept-alive clients never leave the other requests without a
//!   connection to reuse. Those on the stack are closed after the idle timeout; a lane's
//!   connection is released when its client connection closes, which the server's own
//!   idle limit bounds;
//! - a connection whose response is `101 Switching Protocols` is never pooled: it becomes
//!   the tunnel.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use pipegate_transport::{connect, ConnectOptions, Dialer, Endpoint};

use super::body::Counted;
use super::metrics::Metrics;

/// The request body every upstream request carries.
type ReqBody = Counted<Incoming>;

/// One upstream connection's request handle; its connection runs in its own task.
type Sender = http1::SendRequest<ReqBody>;

/// Why an upstream request failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UpstreamError {
    /// The upstream could not be reached.
    #[error("{0}")]
    Connect(#[source] io::Error),
    /// The upstream was reached but the HTTP exchange failed.
    #[error("{0}")]
    Http(#[from] hyper::Error),
}

impl UpstreamError {
    /// The most useful line for a 502 body and the log: pipegate's own transport message
    /// when there is one ("nothing is listening on …"), else the innermost cause.
    pub(crate) fn detail(&self) -> String {
        let mut cause: Option<&(dyn std::error::Error + 'static)> = match self {
            UpstreamError::Connect(e) => Some(e),
            UpstreamError::Http(e) => Some(e),
        };
        let mut last = self.to_string();
        while let Some(e) = cause {
            // Dialers return `io::Error`s wrapping a transport error; io::Error's
            // `source()` skips the wrapped error itself, so look inside explicitly.
            let inner = e
                .downcast_ref::<io::Error>()
                .and_then(|io| io.get_ref())
                .and_then(|inner| inner.downcast_ref::<pipegate_transport::Error>());
            if let Some(t) = e.downcast_ref::<pipegate_transport::Error>().or(inner) {
                return t.to_string();
            }
            last = e.to_string();
            cause = e.source();
        }
        last
    }
}

/// A parked connection.
struct Idle {
    sender: Sender,
    since: Instant,
}

/// HTTP/1.1 connections to one upstream endpoint.
pub(crate) struct Pool {
    endpoint: Endpoint,
    options: ConnectOptions,
    dialer: Option<Arc<dyn Dialer>>,
    /// Oldest at the front, most recently used at the back (taken first).
    idle: Mutex<VecDeque<Idle>>,
    /// How many connections the stack keeps.
    max_stacked: usize,
    /// How many lanes may keep a connection.
    max_pinned: usize,
    idle_timeout: Duration,
    /// Whether the task that closes expired idle connections runs.
    sweeping: AtomicBool,
    metrics: Arc<Metrics>,
    /// Lanes that hold a connection between their client's requests (counted while the
    /// connection is out on a request too, so a request costs no shared write).
    pinned: AtomicUsize,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("endpoint", &self.endpoint)
            .field("max_stacked", &self.max_stacked)
            .field("max_pinned", &self.max_pinned)
            .field("idle_timeout", &self.idle_timeout)
            .finish_non_exhaustive()
    }
}

impl Pool {
    /// A pool for `endpoint`, dialled with `options` (through `dialer` when given),
    /// counting its connections in `metrics`.
    pub(crate) fn new(
        endpoint: Endpoint,
        options: ConnectOptions,
        dialer: Option<Arc<dyn Dialer>>,
        max_idle: usize,
        idle_timeout: Duration,
        metrics: Arc<Metrics>,
    ) -> Arc<Pool> {
        Arc::new(Pool {
            endpoint,
            options,
            dialer,
            idle: Mutex::new(VecDeque::new()),
            max_stacked: max_idle - max_idle / 2,
            max_pinned: max_idle / 2,
            idle_timeout,
            sweeping: AtomicBool::new(false),
            pinned: AtomicUsize::new(0),
            metrics,
        })
    }

    /// The upstream endpoint.
    pub(crate) fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// A lane for one client connection.
    pub(crate) fn lane(self: &Arc<Self>) -> Arc<Lane> {
        Arc::new(Lane {
            pool: Arc::clone(self),
            pinned: Mutex::new(Pinned::default()),
        })
    }

    /// Opens a new connection and starts its task.
    async fn dial(&self) -> Result<Sender, UpstreamError> {
        let stream = match &self.dialer {
            Some(dialer) => dialer.dial(&self.endpoint, &self.options).await,
            None => connect(&self.endpoint, &self.options)
                .await
                .map_err(pipegate_transport::Error::into_io),
        }
        .map_err(UpstreamError::Connect)?;
        let (sender, conn) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await?;
        let open = self.metrics.open_upstream_connection();
        tokio::spawn(async move {
            let _open = open;
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(error = %e, "upstream connection ended with an error");
            }
        });
        Ok(sender)
    }

    /// The most recently parked connection that has not expired.
    fn checkout(&self) -> Option<Sender> {
        let mut idle = self.idle.lock().ok()?;
        while let Some(parked) = idle.pop_back() {
            if parked.since.elapsed() < self.idle_timeout && !parked.sender.is_closed() {
                return Some(parked.sender);
            }
        }
        None
    }

    /// Parks a connection whose last response has ended.
    fn checkin(self: &Arc<Self>, sender: Sender) {
        if sender.is_closed() {
            return;
        }
        let Ok(mut idle) = self.idle.lock() else {
            return;
        };
        if self.max_stacked == 0 {
            return;
        }
        while idle.len() >= self.max_stacked {
            idle.pop_front(); // dropping a sender closes its connection
        }
        idle.push_back(Idle {
            sender,
            since: Instant::now(),
        });
        drop(idle);
        // Loaded first: a swap on every check-in would be a shared write per request.
        if !self.sweeping.load(Ordering::Relaxed) && !self.sweeping.swap(true, Ordering::Relaxed) {
            tokio::spawn(sweep(Arc::downgrade(self), self.idle_timeout));
        }
    }

    /// Puts back connections taken from the stack while still busy, as the oldest (they
    /// are idle again soon; the next checkout prefers those parked since).
    fn requeue(self: &Arc<Self>, busy: Vec<Sender>) {
        if busy.is_empty() {
            return;
        }
        if let Ok(mut idle) = self.idle.lock() {
            for sender in busy {
                if idle.len() < self.max_stacked && !sender.is_closed() {
                    idle.push_front(Idle {
                        sender,
                        since: Instant::now(),
                    });
                }
            }
        }
    }

    /// Closes the parked connections that have been idle for the idle timeout.
    fn evict_expired(&self) {
        if let Ok(mut idle) = self.idle.lock() {
            while idle
                .front()
                .is_some_and(|p| p.since.elapsed() >= self.idle_timeout || p.sender.is_closed())
            {
                idle.pop_front();
            }
        }
    }

    /// How many connections are parked (for tests).
    #[cfg(test)]
    fn idle_count(&self) -> usize {
        self.idle.lock().map(|idle| idle.len()).unwrap_or(0)
    }
}

/// The upstream side of one client connection: the connection its last request used,
/// kept for its next one.
pub(crate) struct Lane {
    pool: Arc<Pool>,
    pinned: Mutex<Pinned>,
}

/// A lane's connection slot.
#[derive(Default)]
struct Pinned {
    sender: Option<Sender>,
    /// Whether this lane is counted in `Pool::pinned`.
    counted: bool,
}

impl std::fmt::Debug for Lane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lane").finish_non_exhaustive()
    }
}

impl Lane {
    /// The upstream endpoint.
    pub(crate) fn endpoint(&self) -> &Endpoint {
        self.pool.endpoint()
    }

    /// Sends `req` (origin-form URI, `Host` set) and returns the response head; the
    /// connection comes back to this lane when the returned body ends.
    pub(crate) async fn request(
        self: &Arc<Self>,
        mut req: Request<ReqBody>,
    ) -> Result<Response<Returning>, UpstreamError> {
        // This lane's connection, then pooled ones; a request hyper gives back unsent
        // (the connection closed under it) moves on to the next one, and finally to a
        // new connection.
        let mut next = self.unpin();
        let mut busy = Vec::new();
        while let Some((mut sender, own)) = next
            .take()
            .map(|s| (s, true))
            .or_else(|| self.pool.checkout().map(|s| (s, false)))
        {
            // This lane's connection finishes its last exchange soon: wait for it. One
            // from the stack may still be sending another client's upload (its answer
            // came early): never wait behind that, take the next one.
            let ready = if own {
                sender.ready().await
            } else {
                match std::future::poll_fn(|cx| Poll::Ready(sender.poll_ready(cx))).await {
                    Poll::Ready(ready) => ready,
                    Poll::Pending => {
                        busy.push(sender);
                        continue;
                    }
                }
            };
            if ready.is_err() {
                continue; // closed while parked: nothing was sent
            }
            match sender.try_send_request(req).await {
                Ok(resp) => {
                    self.pool.requeue(busy);
                    return Ok(self.returning(resp, sender));
                }
                Err(mut e) => match e.take_message() {
                    Some(unsent) => {
                        self.pool.metrics.upstream_retry();
                        req = unsent;
                    }
                    None => {
                        self.pool.requeue(busy);
                        return Err(e.into_error().into());
                    }
                },
            }
        }
        self.pool.requeue(busy);
        let mut sender = self.pool.dial().await?;
        let resp = sender.send_request(req).await?;
        Ok(self.returning(resp, sender))
    }

    fn returning(
        self: &Arc<Self>,
        resp: Response<Incoming>,
        sender: Sender,
    ) -> Response<Returning> {
        resp.map(|inner| Returning {
            inner,
            back: Some((Arc::clone(self), sender)),
        })
    }

    fn unpin(&self) -> Option<Sender> {
        self.pinned.lock().ok()?.sender.take()
    }

    /// Takes back a connection whose last response has ended.
    fn park(&self, sender: Sender) {
        if sender.is_closed() {
            return;
        }
        let pool = &self.pool;
        if let Ok(mut slot) = self.pinned.lock() {
            if slot.sender.is_none() {
                if !slot.counted {
                    slot.counted = pool.pinned.fetch_add(1, Ordering::Relaxed) < pool.max_pinned;
                    if !slot.counted {
                        pool.pinned.fetch_sub(1, Ordering::Relaxed);
                    }
                }
                if slot.counted {
                    slot.sender = Some(sender);
                    return;
                }
            }
        }
        pool.checkin(sender);
    }
}

impl Drop for Lane {
    fn drop(&mut self) {
        // The client connection is gone: its upstream connection serves the others.
        let Ok(slot) = self.pinned.get_mut() else {
            return;
        };
        if std::mem::take(&mut slot.counted) {
            self.pool.pinned.fetch_sub(1, Ordering::Relaxed);
        }
        if let Some(sender) = slot.sender.take() {
            self.pool.checkin(sender);
        }
    }
}

/// Runs while the pool exists: closes expired idle connections even when no request
/// comes to notice them.
async fn sweep(pool: Weak<Pool>, idle_timeout: Duration) {
    let period = (idle_timeout / 2).max(Duration::from_millis(10));
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    loop {
        tick.tick().await;
        match pool.upgrade() {
            Some(pool) => pool.evict_expired(),
            None => return,
        }
    }
}

/// A response body that gives its connection back to the pool when it ends.
pub(crate) struct Returning {
    inner: Incoming,
    back: Option<(Arc<Lane>, Sender)>,
}

impl std::fmt::Debug for Returning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Returning")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl Returning {
    /// Keeps the connection out of the pool (it carries an upgraded tunnel now).
    pub(crate) fn detach(&mut self) {
        self.back = None;
    }

    fn give_back(&mut self) {
        if let Some((lane, sender)) = self.back.take() {
            lane.park(sender);
        }
    }
}

impl Drop for Returning {
    fn drop(&mut self) {
        // Dropped at its end (a body-less answer is never polled): the connection is
        // reusable. Dropped half-read: hyper closes the connection, so let it go.
        if self.inner.is_end_stream() {
            self.give_back();
        }
    }
}

impl Body for Returning {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => self.give_back(),
            Poll::Ready(Some(Ok(_))) if self.inner.is_end_stream() => self.give_back(),
            Poll::Ready(Some(Err(_))) => self.back = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests;
