//! Fuzz target bodies (`fuzz/` at the repository root), not part of the API.
//!
//! Each function takes the fuzzer's bytes and panics if an invariant breaks; the seed
//! corpus in `fuzz/corpus/<target>/` also runs through it in this crate's tests, so a
//! change that breaks an invariant on a seed fails `cargo test` without cargo-fuzz.

use std::io;

use bytes::{BufMut, Bytes, BytesMut};
use http::StatusCode;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocket};
use tokio_tungstenite::tungstenite::Message;

use crate::api;
use crate::error::ApiError;
use crate::protocol::{channel, CreateSession, SignalRequest, Status, TerminalSize};
use crate::ws::{self, Command, Proto, ResizeMessage};

/// `ws_frame`: the bytes as one binary message, and as the client's side of an attached
/// WebSocket (frames read with the agent's limits, then each binary message). Every
/// message decodes to the command its channel byte and payload say, the same under both
/// subprotocols except channel 5.
pub fn ws_frame(data: &[u8]) {
    check_message(data);
    let wire = Wire { input: data };
    let mut socket = WebSocket::from_raw_socket(wire, Role::Server, Some(ws::config()));
    loop {
        match socket.read() {
            Ok(Message::Binary(message)) => check_message(&message),
            // The agent closes on a text frame, and stops reading at a Close.
            Ok(Message::Text(_) | Message::Close(_)) | Err(_) => break,
            Ok(_) => {}
        }
    }
}

/// The client's bytes to read; what the agent writes back is dropped.
struct Wire<'a> {
    input: &'a [u8],
}

impl io::Read for Wire<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        io::Read::read(&mut self.input, buf)
    }
}

impl io::Write for Wire<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn check_message(data: &[u8]) {
    let message = Bytes::copy_from_slice(data);
    let ours = ws::decode(Proto::Pipegate, message.clone());
    let k8s = ws::decode(Proto::K8s, message);
    let Some((&ch, payload)) = data.split_first() else {
        assert_eq!((&ours, &k8s), (&Command::Ignore, &Command::Ignore));
        return;
    };
    if ch == channel::SIGNAL {
        assert_eq!(k8s, Command::Ignore, "no signals over v5.channel.k8s.io");
    } else {
        assert_eq!(ours, k8s, "the subprotocols differ only on channel 5");
    }
    match (ch, ours) {
        (channel::STDIN, Command::Input(input)) => assert_eq!(&input[..], payload),
        (channel::RESIZE, Command::Resize(size)) => {
            assert_eq!(size.invalid_field(), None, "{size:?}");
            // What a client sends for this size reads back as it.
            let mut again = BytesMut::new();
            again.put_u8(channel::RESIZE);
            again.extend_from_slice(&to_json(&size));
            assert_eq!(
                ws::decode(Proto::Pipegate, again.freeze()),
                Command::Resize(size)
            );
        }
        (channel::RESIZE, Command::Ignore) => {
            // One well-formed object with sizes in range would have been taken.
            if let Ok(size) = serde_json::from_slice::<ResizeMessage>(payload) {
                let size = TerminalSize::new(size.width, size.height);
                assert!(size.invalid_field().is_some(), "{size:?} ignored");
            }
        }
        (channel::SIGNAL, command) => {
            let expected = match serde_json::from_slice::<SignalRequest>(payload) {
                Ok(request) => Command::Signal(request.signal),
                Err(_) => Command::Ignore,
            };
            assert_eq!(command, expected);
        }
        (channel::CLOSE, command) => {
            let eof = payload.first() == Some(&channel::STDIN);
            assert_eq!(command == Command::CloseInput, eof, "{command:?}");
            assert!(matches!(command, Command::CloseInput | Command::Ignore));
        }
        (channel::STDIN | channel::RESIZE, command) => {
            panic!("channel {ch} decoded as {command:?}")
        }
        (_, command) => assert_eq!(command, Command::Ignore, "channel {ch}"),
    }
}

/// `control_json`: the bytes as each JSON control message — the body of
/// `POST /v1/sessions` (then its validation), of `…/resize` and `…/signal`, and the
/// channel-3 status a client reads. What is accepted serialises and reads back the same;
/// what is refused is a `400` naming a field.
pub fn control_json(data: &[u8]) {
    create_session(data);
    if let Some(size) = accepted::<TerminalSize>(data) {
        match api::check_size("", &size) {
            Ok(()) => assert_eq!(size.invalid_field(), None),
            Err(e) => refused(e),
        }
    }
    if let Some(request) = accepted::<SignalRequest>(data) {
        assert!(request.signal.name().starts_with("SIG"));
    }
    status(data);
}

fn create_session(data: &[u8]) {
    let Some(body) = accepted::<CreateSession>(data) else {
        return;
    };
    let (spec, argv) = match api::spec(body.clone()) {
        Ok(spec) => spec,
        Err(e) => return refused(e),
    };
    assert!(!argv.is_empty());
    if let Some(given) = &body.argv {
        assert_eq!(&argv, given);
        assert_eq!(spec.arg0, given[0]);
        assert_eq!(spec.args, given[1..]);
    }
    assert!(!spec.arg0.contains('\0') && !spec.args.iter().any(|a| a.contains('\0')));
    assert!(spec.cwd.is_absolute(), "{:?}", spec.cwd);
    assert_eq!(spec.tty.is_some(), body.tty);
    if let Some(size) = spec.tty {
        assert_eq!(size.invalid_field(), None);
    }
    for (key, value) in &body.env {
        assert!(!key.is_empty() && !key.contains(['=', '\0']) && !value.contains('\0'));
        let set: Vec<_> = spec
            .env
            .iter()
            .filter(|(k, _)| k.to_str() == Some(key))
            .map(|(_, v)| v.to_str())
            .collect();
        assert_eq!(
            set,
            [Some(value.as_str())],
            "env.{key} is set once, to the given value"
        );
    }
}

/// The body parsed as the API parses it: `Some` if accepted (then it also reads back
/// from its own JSON), `None` if refused (then as a `400` naming the field).
fn accepted<T>(data: &[u8]) -> Option<T>
where
    T: DeserializeOwned + Serialize + PartialEq + std::fmt::Debug,
{
    match api::parse_json::<T>(data) {
        Ok(value) => {
            let again = api::parse_json::<T>(&to_json(&value))
                .unwrap_or_else(|e| panic!("{value:?} does not read back: {e}"));
            assert_eq!(again, value);
            Some(value)
        }
        Err(e) => {
            refused(e);
            None
        }
    }
}

/// A refused body: `400`, `{"error":{"kind":"invalid_argument","message","field"}}`.
fn refused(e: ApiError) {
    assert!(matches!(e, ApiError::Invalid { .. }), "{e:?}");
    let response = e.into_response();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body: serde_json::Value = serde_json::from_slice(response.body())
        .unwrap_or_else(|e| panic!("the error body is not JSON: {e}"));
    let error = &body["error"];
    assert_eq!(error["kind"], "invalid_argument");
    assert!(error["message"].is_string());
    assert!(error["field"].as_str().is_some_and(|f| !f.is_empty()));
}

/// The channel-3 status, as `pipegate shell` reads it.
fn status(data: &[u8]) {
    let Ok(status) = serde_json::from_slice::<Status>(data) else {
        return;
    };
    let code = status.exit_code();
    if status.status == "Success" {
        assert_eq!(code, Some(0));
    }
    let signal = status.signal().map(str::to_owned);
    let again: Status = serde_json::from_slice(&to_json(&status))
        .unwrap_or_else(|e| panic!("{status:?} does not read back: {e}"));
    // `metadata` may hold floats, which serde_json does not promise to round-trip.
    assert_eq!(again.metadata.len(), status.metadata.len());
    assert_eq!(
        (&again.status, &again.message, &again.reason, &again.details),
        (
            &status.status,
            &status.message,
            &status.reason,
            &status.details
        )
    );
    assert_eq!(
        (again.exit_code(), again.signal()),
        (code, signal.as_deref())
    );
}

fn to_json(value: &impl Serialize) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_else(|e| panic!("serialising: {e}"))
}

#[cfg(test)]
mod tests {
    use pipegate_transport::fuzzing::replay_seeds;

    #[test]
    fn ws_frame_seeds() {
        replay_seeds("ws_frame", super::ws_frame);
    }

    #[test]
    fn control_json_seeds() {
        replay_seeds("control_json", super::control_json);
    }
}
