//! Streaming bodies that count their bytes into the request's [`Exchange`], so each
//! request is logged once, with bytes each way, when both of its bodies are finished.

use std::pin::Pin;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use super::metrics::Metrics;

/// One request/response exchange. Logged when the last body referring to it is dropped.
#[derive(Debug)]
pub(crate) struct Exchange {
    span: tracing::Span,
    started: Instant,
    status: AtomicU16,
    client_to_upstream: AtomicU64,
    upstream_to_client: AtomicU64,
    metrics: Arc<Metrics>,
}

impl Exchange {
    pub(crate) fn new(span: tracing::Span, metrics: Arc<Metrics>) -> Arc<Exchange> {
        Arc::new(Exchange {
            span,
            started: Instant::now(),
            status: AtomicU16::new(0),
            client_to_upstream: AtomicU64::new(0),
            upstream_to_client: AtomicU64::new(0),
            metrics,
        })
    }

    pub(crate) fn set_status(&self, status: u16) {
        self.status.store(status, Ordering::Relaxed);
        self.span.record("http.response.status_code", status);
        self.metrics.request(status);
    }

    pub(crate) fn span(&self) -> &tracing::Span {
        &self.span
    }
}

impl Drop for Exchange {
    fn drop(&mut self) {
        let up = self.client_to_upstream.load(Ordering::Relaxed);
        let down = self.upstream_to_client.load(Ordering::Relaxed);
        self.metrics.bytes(up, down);
        let _entered = self.span.enter();
        tracing::info!(
            http.response.status_code = self.status.load(Ordering::Relaxed),
            bytes.client_to_upstream = up,
            bytes.upstream_to_client = down,
            duration_ms = self.started.elapsed().as_millis() as u64,
            "request completed"
        );
    }
}

/// Which way a body flows.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Flow {
    ClientToUpstream,
    UpstreamToClient,
}

/// A body that adds its data frames' sizes to an [`Exchange`].
#[derive(Debug)]
pub(crate) struct Counted<B> {
    inner: B,
    exchange: Arc<Exchange>,
    flow: Flow,
}

impl<B> Counted<B> {
    pub(crate) fn new(inner: B, exchange: Arc<Exchange>, flow: Flow) -> Counted<B> {
        Counted {
            inner,
            exchange,
            flow,
        }
    }
}

impl<B> Body for Counted<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(data) = frame.data_ref() {
                let counter = match self.flow {
                    Flow::ClientToUpstream => &self.exchange.client_to_upstream,
                    Flow::UpstreamToClient => &self.exchange.upstream_to_client,
                };
                counter.fetch_add(data.len() as u64, Ordering::Relaxed);
            }
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
