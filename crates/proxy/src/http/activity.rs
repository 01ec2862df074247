//! Idle detection for HTTP/2 client connections.
//!
//! On HTTP/1 hyper's header read timeout restarts whenever a connection waits for its next
//! request, so it also closes idle keep-alive connections. hyper's HTTP/2 server has no such
//! limit (its keep-alive pings only find dead peers), so an h2c client that stops sending
//! requests would hold its connection, and a `--max-connections` slot, forever. Here a
//! connection counts its requests in flight, from the request's arrival until its response
//! body is finished or dropped, and [`Activity::idle_for`] completes once none has been in
//! flight for the limit.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::sync::watch;

/// Requests in flight on one connection.
#[derive(Debug)]
pub(crate) struct Activity {
    in_flight: watch::Sender<usize>,
}

impl Activity {
    pub(crate) fn new() -> Arc<Activity> {
        Arc::new(Activity {
            in_flight: watch::Sender::new(0),
        })
    }

    /// A request arrived; it is in flight until the returned guard is dropped.
    pub(crate) fn begin(self: &Arc<Self>) -> Busy {
        self.in_flight.send_modify(|n| *n += 1);
        Busy(Arc::clone(self))
    }

    /// Completes once no request has been in flight for `limit` without a break.
    pub(crate) async fn idle_for(&self, limit: Duration) {
        let mut seen = self.in_flight.subscribe();
        loop {
            // The sender lives in `self`, so these never see it closed.
            if seen.wait_for(|n| *n == 0).await.is_err() {
                return std::future::pending().await;
            }
            tokio::select! {
                _ = tokio::time::sleep(limit) => return,
                // A request came (and maybe went) meanwhile: the idle period starts again.
                changed = seen.changed() => {
                    if changed.is_err() {
                        return std::future::pending().await;
                    }
                }
            }
        }
    }
}

/// One request in flight (see [`Activity::begin`]).
#[derive(Debug)]
pub(crate) struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.in_flight.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// A response body that keeps its request in flight until it is finished or dropped.
#[derive(Debug)]
pub(crate) struct Tracked<B> {
    inner: B,
    _busy: Busy,
}

impl<B> Tracked<B> {
    pub(crate) fn new(inner: B, busy: Busy) -> Tracked<B> {
        Tracked { inner, _busy: busy }
    }
}

impl<B: Body<Data = Bytes> + Unpin> Body for Tracked<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn idle_only_after_the_last_request_ends() {
        let activity = Activity::new();
        let limit = Duration::from_secs(10);
        let busy = activity.begin();
        // Busy: the limit passes several times over without the connection going idle.
        let idle = tokio::time::timeout(limit * 3, activity.idle_for(limit)).await;
        assert!(idle.is_err(), "a request in flight is not idle");
        drop(busy);
        let started = tokio::time::Instant::now();
        activity.idle_for(limit).await;
        assert_eq!(started.elapsed(), limit);
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_restarts_the_idle_period() {
        let activity = Activity::new();
        let limit = Duration::from_secs(10);
        let started = tokio::time::Instant::now();
        let poke = {
            let activity = Arc::clone(&activity);
            async move {
                tokio::time::sleep(Duration::from_secs(6)).await;
                drop(activity.begin());
                std::future::pending::<()>().await
            }
        };
        tokio::select! {
            _ = activity.idle_for(limit) => {}
            _ = poke => unreachable!(),
        }
        assert_eq!(started.elapsed(), Duration::from_secs(16));
    }
}
