//! `--log-format json`: every log line is a JSON object, and the per-connection event
//! carries the telemetry fields.

use std::time::Duration;

use serde_json::Value;

use crate::support::{
    dial, echo_bytes, payload, serve, tcp_upstream, Behavior, TestEnv, LISTENING,
};

/// A field of a JSON log event: on the event itself, or on its span (`span`).
fn field<'a>(event: &'a Value, name: &str) -> Option<&'a Value> {
    event
        .get(name)
        .or_else(|| event.get("fields").and_then(|f| f.get(name)))
        .or_else(|| event.get("span").and_then(|s| s.get(name)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_parse_and_connection_closed_has_the_telemetry_fields() {
    let env = TestEnv::new();
    let upstream = tcp_upstream(Behavior::Echo).await;
    let listen = format!("unix://{}", env.sock("in.sock").display());
    let (mut serve, endpoint) = serve(&[
        "--mode",
        "raw",
        "--log-format",
        "json",
        "--listen",
        &listen,
        "--upstream",
        &upstream.endpoint,
    ])
    .await;
    let data = payload(21, 10_000);
    let back = echo_bytes(dial(&endpoint).await, &data)
        .await
        .expect("round trip");
    assert!(back == data);
    serve
        .wait_stderr(
            Duration::from_secs(10),
            "the 'connection closed' event",
            |l| l.contains("connection closed"),
        )
        .await;
    serve.signal("TERM");
    let status = serve.wait_exit(Duration::from_secs(15)).await;
    assert_eq!(status.code(), Some(0), "exit status\n{}", serve.dump());

    let mut closed = Vec::new();
    let mut parsed = 0;
    for line in serve.stderr_lines() {
        if line.starts_with(LISTENING) {
            continue; // the one plain line, printed whatever the log format
        }
        let value: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}\n{}", serve.dump()));
        assert!(value.is_object(), "not an object: {line}");
        parsed += 1;
        let message = field(&value, "message")
            .and_then(Value::as_str)
            .unwrap_or("");
        if message == "connection closed" {
            closed.push(value);
        }
    }
    assert!(
        parsed >= 2,
        "expected the listening and closed events at least\n{}",
        serve.dump()
    );
    assert_eq!(
        closed.len(),
        1,
        "one 'connection closed' event\n{}",
        serve.dump()
    );
    let event = &closed[0];
    let text = |name: &str| {
        field(event, name)
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("field {name} missing or not a string in {event}"))
            .to_owned()
    };
    let number = |name: &str| {
        field(event, name)
            .and_then(Value::as_u64)
            .unwrap_or_else(|| panic!("field {name} missing or not a number in {event}"))
    };
    assert_eq!(text("transport.mode"), "unix");
    assert_eq!(text("transport.endpoint"), listen);
    assert_eq!(text("upstream.mode"), "tcp");
    assert_eq!(text("upstream.endpoint"), upstream.endpoint);
    assert_eq!(number("bytes.client_to_upstream"), data.len() as u64);
    assert_eq!(number("bytes.upstream_to_client"), data.len() as u64);
    let _ = number("duration_ms");
    assert!(!text("close.reason").is_empty());
}
