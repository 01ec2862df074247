//! The structured log of HTTP mode, captured as JSON per test; and a panic in one
//! connection's task, contained and logged.
//!
//! The subscriber is installed with `set_default` (this thread only), so the test runs on
//! a current-thread runtime where the bridge, the upstream and the client all run on the
//! test's own thread.
#![cfg(unix)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io;
use std::sync::{Arc, Mutex};

use http::{Request, StatusCode};
use serde_json::Value;
use support::*;

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Capture {
    fn events(&self) -> Vec<Value> {
        let bytes = self.0.lock().unwrap().clone();
        String::from_utf8(bytes)
            .unwrap()
            .lines()
            .map(|line| serde_json::from_str(line).expect("one JSON object per line"))
            .collect()
    }
}

fn span<'a>(event: &'a Value, name: &str) -> &'a Value {
    event["spans"]
        .as_array()
        .unwrap_or_else(|| panic!("no span list: {event}"))
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no {name} span around {event}"))
}

/// JSON events at INFO and above, with their span list, captured on this thread until
/// the guard is dropped.
fn capture_json() -> (Capture, tracing::subscriber::DefaultGuard) {
    let capture = Capture::default();
    let writer = capture.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_max_level(tracing::Level::INFO)
        .with_current_span(true)
        .with_span_list(true)
        .with_writer(move || writer.clone())
        .finish();
    (capture, tracing::subscriber::set_default(subscriber))
}

#[tokio::test(flavor = "current_thread")]
async fn request_completed_is_logged_with_its_fields_inside_the_connection_span() {
    let (capture, _guard) = capture_json();

    let dir = private_dir();
    let upstream = Upstream::start(&sock(&dir, "up.sock")).await;
    let bridge = Running::start(http_config(vec![tcp_any()], upstream.endpoint.clone())).await;
    let payload = vec![b'p'; 1000];
    let req = Request::post("/upload?secret=not-logged")
        .header("host", "pipegate.test")
        .body(full(payload.clone()))
        .unwrap();
    let resp = send(bridge.tcp(), req).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let answer = body_bytes(resp.into_body()).await;

    let event = eventually(STEP, "a 'request completed' event", || async {
        capture
            .events()
            .into_iter()
            .find(|e| e["fields"]["message"] == "request completed")
    })
    .await;
    let fields = &event["fields"];
    assert_eq!(event["level"], "INFO", "{event}");
    assert_eq!(fields["http.response.status_code"], 200, "{event}");
    assert_eq!(fields["bytes.client_to_upstream"], 1000, "{event}");
    assert_eq!(
        fields["bytes.upstream_to_client"],
        answer.len() as u64,
        "{event}"
    );
    assert!(fields["duration_ms"].is_u64(), "{event}");

    let request = span(&event, "request");
    assert_eq!(request["http.request.method"], "POST", "{event}");
    assert_eq!(request["url.path"], "/upload", "{event}");
    assert_eq!(request["http.response.status_code"], 200, "{event}");

    let connection = span(&event, "connection");
    assert_eq!(connection["transport.mode"], "tcp", "{event}");
    assert_eq!(
        connection["transport.endpoint"],
        bridge.tcp().to_string(),
        "{event}"
    );
    assert_eq!(connection["upstream.mode"], "unix", "{event}");
    assert_eq!(
        connection["upstream.endpoint"],
        upstream.endpoint.to_string(),
        "{event}"
    );

    // Exactly one such event for the one request, and no payload or query in the log.
    bridge.stop().await;
    let events = capture.events();
    let completed = events
        .iter()
        .filter(|e| e["fields"]["message"] == "request completed")
        .count();
    assert_eq!(completed, 1);
    let text = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    assert!(!text.contains("not-logged"), "the query string was logged");
    assert!(!text.contains("pppppppp"), "the payload was logged");
}

/// A local service that panics on `/panic` and answers `200 ok` otherwise.
struct Panicky;

impl pipegate_proxy::LocalService for Panicky {
    fn call(
        &self,
        request: Request<hyper::body::Incoming>,
        _transport: pipegate_transport::Mode,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = http::Response<pipegate_proxy::ResBody>> + Send>,
    > {
        Box::pin(async move {
            if request.uri().path() == "/panic" {
                panic!("boom on purpose");
            }
            use http_body_util::BodyExt as _;
            let body = http_body_util::Full::new(bytes::Bytes::from_static(b"ok"))
                .map_err(|never| match never {})
                .boxed();
            http::Response::new(body)
        })
    }
}

/// A panic while serving one connection ends that connection only: another client's
/// kept-alive connection and new connections are served, the connection gauge comes back
/// down, the shutdown has nothing left to drain, and the panic is logged as an error
/// inside the connection's span.
#[tokio::test(flavor = "current_thread")]
async fn a_panic_in_one_connection_is_contained_and_logged() {
    let (capture, _guard) = capture_json();

    let config = pipegate_proxy::Config::local(vec![tcp_any()], Arc::new(Panicky));
    let bridge = Running::start(config).await;

    // A kept-alive connection from another client, served before and after.
    let io = dial(bridge.tcp()).await.expect("dial");
    let (mut other, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let resp = within(STEP, other.send_request(get_request("/ok")), "first /ok")
        .await
        .expect("first /ok");
    assert_eq!(resp.status(), StatusCode::OK);
    body_bytes(resp.into_body()).await;

    // The panicking request: the connection closes without an answer.
    let mut victim = dial(bridge.tcp()).await.expect("dial");
    tokio::io::AsyncWriteExt::write_all(
        &mut victim,
        b"GET /panic HTTP/1.1\r\nHost: pipegate.test\r\n\r\n",
    )
    .await
    .expect("send");
    let answer = within(STEP, read_to_close(&mut victim), "the closed connection").await;
    assert!(answer.is_empty(), "{}", String::from_utf8_lossy(&answer));

    let resp = within(
        STEP,
        other.send_request(get_request("/ok")),
        "/ok after the panic",
    )
    .await
    .expect("the other connection still works");
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(body_bytes(resp.into_body()).await, "ok");
    drop(other);
    let (status, _, body) = get(bridge.tcp(), "/ok").await;
    assert_eq!((status, &body[..]), (StatusCode::OK, &b"ok"[..]));

    // Only the metrics request's own connection is left open.
    eventually(STEP, "the connection gauge back at 1", || async {
        let text = metrics(bridge.tcp()).await;
        (metric(&text, "pipegate_connections_open{transport=\"tcp\"}") == 1).then_some(())
    })
    .await;

    let event = capture
        .events()
        .into_iter()
        .find(|e| e["level"] == "ERROR")
        .unwrap_or_else(|| panic!("no error event in {:?}", capture.events()));
    assert_eq!(
        event["fields"]["message"], "connection task panicked; closed it, the bridge carries on",
        "{event}"
    );
    assert_eq!(
        event["fields"]["panic.message"], "boom on purpose",
        "{event}"
    );
    assert_eq!(event["fields"]["close.reason"], "panic", "{event}");
    assert_eq!(
        span(&event, "connection")["transport.mode"],
        "tcp",
        "{event}"
    );
    assert_eq!(bridge.stop().await.aborted, 0);
}
