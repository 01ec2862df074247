//! Counters behind `GET /_pipegate/metrics`, in the Prometheus text format.
//!
//! A handful of atomics rendered by hand: the format is a few lines of text, and a
//! metrics crate would add a registry and a dependency for no gain here. Two process-wide
//! gauges come from elsewhere when rendered: open descriptors (handles on Windows) and the
//! async tasks alive, so a leak shows the same way on every platform.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use pipegate_transport::Mode;

const MODES: [Mode; 3] = [Mode::NamedPipe, Mode::Unix, Mode::Tcp];

/// Bridge-wide counters.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    connections_open: [AtomicI64; 3],
    connections_total: [AtomicU64; 3],
    connections_refused: AtomicU64,
    requests: [AtomicU64; 5],
    bytes_client_to_upstream: AtomicU64,
    bytes_upstream_to_client: AtomicU64,
    upstream_errors: AtomicU64,
    tunnels_open: AtomicI64,
    tunnels_total: AtomicU64,
    upstream_connections_open: AtomicI64,
    upstream_connections_total: AtomicU64,
    upstream_retries: AtomicU64,
}

fn index(mode: Mode) -> usize {
    match mode {
        Mode::NamedPipe => 0,
        Mode::Unix => 1,
        Mode::Tcp => 2,
    }
}

impl Metrics {
    pub(crate) fn connection_opened(&self, mode: Mode) {
        self.connections_open[index(mode)].fetch_add(1, Ordering::Relaxed);
        self.connections_total[index(mode)].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn connection_closed(&self, mode: Mode) {
        self.connections_open[index(mode)].fetch_sub(1, Ordering::Relaxed);
    }

    /// Counts a connection open until the returned guard is dropped, however its task
    /// ends (a panic included).
    pub(crate) fn open_connection(self: &Arc<Self>, mode: Mode) -> Open {
        self.connection_opened(mode);
        Open {
            metrics: Arc::clone(self),
            gauge: Gauge::Connection(mode),
        }
    }

    /// Counts a tunnel open until the returned guard is dropped.
    pub(crate) fn open_tunnel(self: &Arc<Self>) -> Open {
        self.tunnel_opened();
        Open {
            metrics: Arc::clone(self),
            gauge: Gauge::Tunnel,
        }
    }

    /// Counts an upstream connection open until the returned guard is dropped.
    pub(crate) fn open_upstream_connection(self: &Arc<Self>) -> Open {
        self.upstream_connections_open
            .fetch_add(1, Ordering::Relaxed);
        self.upstream_connections_total
            .fetch_add(1, Ordering::Relaxed);
        Open {
            metrics: Arc::clone(self),
            gauge: Gauge::Upstream,
        }
    }

    /// A request sent again because the upstream had closed its pooled connection.
    pub(crate) fn upstream_retry(&self) {
        self.upstream_retries.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn connection_refused(&self) {
        self.connections_refused.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn request(&self, status: u16) {
        let class = usize::from((status / 100).clamp(1, 5)) - 1;
        self.requests[class].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn bytes(&self, client_to_upstream: u64, upstream_to_client: u64) {
        self.bytes_client_to_upstream
            .fetch_add(client_to_upstream, Ordering::Relaxed);
        self.bytes_upstream_to_client
            .fetch_add(upstream_to_client, Ordering::Relaxed);
    }

    pub(crate) fn upstream_error(&self) {
        self.upstream_errors.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn tunnel_opened(&self) {
        self.tunnels_open.fetch_add(1, Ordering::Relaxed);
        self.tunnels_total.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn tunnel_closed(&self) {
        self.tunnels_open.fetch_sub(1, Ordering::Relaxed);
    }

    /// The Prometheus text exposition.
    pub(crate) fn render(&self) -> String {
        let mut out = String::new();
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let gauge = |a: &AtomicI64| a.load(Ordering::Relaxed);
        header(
            &mut out,
            "pipegate_connections_open",
            "gauge",
            "Client connections open now.",
        );
        for mode in MODES {
            let value = gauge(&self.connections_open[index(mode)]);
            let _ = writeln!(
                out,
                "pipegate_connections_open{{transport=\"{mode}\"}} {value}"
            );
        }
        header(
            &mut out,
            "pipegate_connections_total",
            "counter",
            "Client connections accepted.",
        );
        for mode in MODES {
            let value = load(&self.connections_total[index(mode)]);
            let _ = writeln!(
                out,
                "pipegate_connections_total{{transport=\"{mode}\"}} {value}"
            );
        }
        single(
            &mut out,
            "pipegate_connections_refused_total",
            "counter",
            "Connections refused at the connection limit.",
            load(&self.connections_refused),
        );
        header(
            &mut out,
            "pipegate_requests_total",
            "counter",
            "Requests answered, by status class.",
        );
        for (i, class) in ["1xx", "2xx", "3xx", "4xx", "5xx"].iter().enumerate() {
            let value = load(&self.requests[i]);
            let _ = writeln!(out, "pipegate_requests_total{{class=\"{class}\"}} {value}");
        }
        header(
            &mut out,
            "pipegate_bytes_total",
            "counter",
            "Body and tunnel bytes forwarded.",
        );
        for (direction, value) in [
            ("client_to_upstream", &self.bytes_client_to_upstream),
            ("upstream_to_client", &self.bytes_upstream_to_client),
        ] {
            let value = load(value);
            let _ = writeln!(
                out,
                "pipegate_bytes_total{{direction=\"{direction}\"}} {value}"
            );
        }
        single(
            &mut out,
            "pipegate_upstream_errors_total",
            "counter",
            "Requests that failed to reach the upstream (502/504).",
            load(&self.upstream_errors),
        );
        single(
            &mut out,
            "pipegate_tunnels_open",
            "gauge",
            "Upgraded (WebSocket) tunnels open now.",
            gauge(&self.tunnels_open),
        );
        single(
            &mut out,
            "pipegate_tunnels_total",
            "counter",
            "Upgraded (WebSocket) tunnels opened.",
            load(&self.tunnels_total),
        );
        single(
            &mut out,
            "pipegate_upstream_connections_open",
            "gauge",
            "Upstream connections open now (in use or kept for reuse).",
            gauge(&self.upstream_connections_open),
        );
        single(
            &mut out,
            "pipegate_upstream_connections_total",
            "counter",
            "Upstream connections opened (compare with requests: the rest reused one).",
            load(&self.upstream_connections_total),
        );
        single(
            &mut out,
            "pipegate_upstream_retries_total",
            "counter",
            "Requests sent again because the upstream had closed the kept connection they were sent on.",
            load(&self.upstream_retries),
        );
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            single(
                &mut out,
                "pipegate_tasks_alive",
                "gauge",
                "Async tasks alive in the process (connections, tunnels, pooled upstream connections, sessions).",
                runtime.metrics().num_alive_tasks(),
            );
            single(
                &mut out,
                "pipegate_runtime_workers",
                "gauge",
                "Worker threads of the async runtime (--threads).",
                runtime.metrics().num_workers(),
            );
        }
        if let Some(open) = crate::sys::open_descriptors() {
            single(
                &mut out,
                "process_open_fds",
                "gauge",
                "Open file descriptors (handles on Windows).",
                open,
            );
        }
        out
    }
}

/// The `# HELP` and `# TYPE` lines of one metric.
fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// A metric with one unlabelled value.
fn single(out: &mut String, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
    header(out, name, kind, help);
    let _ = writeln!(out, "{name} {value}");
}

/// What an [`Open`] guard counts.
#[derive(Debug, Clone, Copy)]
enum Gauge {
    Connection(Mode),
    Tunnel,
    Upstream,
}

/// One open connection or tunnel in its gauge; dropping the guard closes it.
#[derive(Debug)]
pub(crate) struct Open {
    metrics: Arc<Metrics>,
    gauge: Gauge,
}

impl Drop for Open {
    fn drop(&mut self) {
        match self.gauge {
            Gauge::Connection(mode) => self.metrics.connection_closed(mode),
            Gauge::Tunnel => self.metrics.tunnel_closed(),
            Gauge::Upstream => {
                self.metrics
                    .upstream_connections_open
                    .fetch_sub(1, Ordering::Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters() {
        let m = Metrics::default();
        m.connection_opened(Mode::Unix);
        m.connection_opened(Mode::Unix);
        m.connection_closed(Mode::Unix);
        m.request(204);
        m.request(502);
        m.bytes(10, 20);
        let text = m.render();
        assert!(
            text.contains("pipegate_connections_open{transport=\"unix\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("pipegate_connections_total{transport=\"unix\"} 2\n"));
        assert!(text.contains("pipegate_requests_total{class=\"2xx\"} 1\n"));
        assert!(text.contains("pipegate_requests_total{class=\"5xx\"} 1\n"));
        assert!(text.contains("pipegate_bytes_total{direction=\"upstream_to_client\"} 20\n"));
    }

    #[test]
    fn guards_give_their_count_back_even_when_a_task_panics() {
        let m = Arc::new(Metrics::default());
        let held = m.open_connection(Mode::Tcp);
        let tunnel = m.open_tunnel();
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _open = m.open_connection(Mode::Tcp);
            panic!("a connection task panics");
        }));
        assert!(panicked.is_err());
        let text = m.render();
        assert!(
            text.contains("pipegate_connections_open{transport=\"tcp\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("pipegate_tunnels_open 1\n"), "{text}");
        drop((held, tunnel));
        let text = m.render();
        assert!(
            text.contains("pipegate_connections_open{transport=\"tcp\"} 0\n"),
            "{text}"
        );
        assert!(text.contains("pipegate_tunnels_open 0\n"), "{text}");
    }

    #[test]
    fn process_gauges_are_rendered() {
        let text = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(async { Metrics::default().render() });
        assert!(text.contains("\npipegate_tasks_alive "), "{text}");
        let fds = text
            .lines()
            .find_map(|l| l.strip_prefix("process_open_fds "))
            .expect("process_open_fds");
        // stdin, stdout and stderr at least.
        assert!(fds.parse::<u64>().unwrap() >= 3, "{text}");
    }
}
