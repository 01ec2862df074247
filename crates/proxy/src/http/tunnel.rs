//! Upgraded connections (WebSocket and any other `Upgrade`): both sides' upgraded
//! streams are spliced with the byte relay; frames are never parsed.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use pipegate_transport::relay::{relay, RelayOptions};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::sync::CancellationToken;

use super::metrics::Metrics;

/// What a tunnel needs besides its two halves.
#[derive(Debug)]
pub(crate) struct TunnelParams {
    pub(crate) client_half_close: bool,
    pub(crate) upstream_half_close: bool,
    pub(crate) idle_timeout: Duration,
    pub(crate) abort: CancellationToken,
    pub(crate) metrics: Arc<Metrics>,
}

/// Waits for both upgrades, then relays until either side ends, the tunnel is idle for
/// `idle_timeout`, or shutdown aborts it. Logs one event with lifetime and bytes.
pub(crate) async fn run(client: OnUpgrade, upstream: OnUpgrade, params: TunnelParams) {
    let (client, upstream) = match tokio::try_join!(client, upstream) {
        Ok(pair) => pair,
        Err(e) => {
            tracing::warn!(error = %e, "upgrade failed; tunnel not opened");
            return;
        }
    };
    let open = params.metrics.open_tunnel();
    let started = Instant::now();
    let activity = Arc::new(AtomicU64::new(0));
    let mut client = Active::new(TokioIo::new(client), started, &activity);
    let mut upstream = Active::new(TokioIo::new(upstream), started, &activity);
    let mut options =
        RelayOptions::for_streams(params.client_half_close, params.upstream_half_close);
    // An upgraded protocol whose server has closed is over; don't hold the tunnel (and a
    // shutdown) open waiting for the client to notice.
    options.end_on_upstream_eof = true;
    let idle = idle_watch(started, Arc::clone(&activity), params.idle_timeout);
    let (up, down, reason) = tokio::select! {
        outcome = relay(&mut client, &mut upstream, options) => {
            (outcome.client_to_upstream, outcome.upstream_to_client, outcome.reason.label())
        }
        _ = idle => (client.total, upstream.total, "idle_timeout"),
        _ = params.abort.cancelled() => (client.total, upstream.total, "shutdown"),
    };
    drop(open);
    params.metrics.bytes(up, down);
    tracing::info!(
        tunnel.duration_ms = started.elapsed().as_millis() as u64,
        bytes.client_to_upstream = up,
        bytes.upstream_to_client = down,
        close.reason = reason,
        "tunnel closed"
    );
}

/// Completes once no byte has moved for `idle`.
async fn idle_watch(started: Instant, activity: Arc<AtomicU64>, idle: Duration) {
    loop {
        let last = Duration::from_millis(activity.load(Ordering::Relaxed));
        let deadline = last + idle;
        let now = started.elapsed();
        if now >= deadline {
            return;
        }
        tokio::time::sleep(deadline - now).await;
    }
}

/// Records the time of the last byte read (ms since the tunnel started) and counts
/// bytes read from this side.
struct Active<T> {
    inner: T,
    started: Instant,
    activity: Arc<AtomicU64>,
    total: u64,
}

impl<T> Active<T> {
    fn new(inner: T, started: Instant, activity: &Arc<AtomicU64>) -> Active<T> {
        Active {
            inner,
            started,
            activity: Arc::clone(activity),
            total: 0,
        }
    }

    fn touch(&self) {
        self.activity
            .store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Active<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            self.total += n as u64;
            self.touch();
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Active<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
