//! The structured log of HTTP mode, captured as JSON per test.
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

#[tokio::test(flavor = "current_thread")]
async fn request_completed_is_logged_with_its_fields_inside_the_connection_span() {
    let capture = Capture::default();
    let writer = capture.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_max_level(tracing::Level::INFO)
        .with_current_span(true)
        .with_span_list(true)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

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
