//! `pipegate shell [EP] [-- CMD…]`: a program in a session of the agent at EP, in this
//! terminal.
//!
//! Creates a session (`POST /v1/sessions`: the command, or the agent user's login
//! shell), attaches over WebSocket (`pipegate.pty.v1`), and relays: keystrokes to
//! channel 0, output from channels 1 and 2, the terminal size to channel 4 at start and
//! on every change (SIGWINCH; a Windows console's size is polled). With a terminal (or a
//! Windows console) on stdin it is in raw mode while the session runs (restored on every
//! exit path, including panics and signals), so Ctrl-C and friends reach the remote
//! foreground program as bytes. Without one (stdin
//! is a pipe or file) the session has no terminal, and the end of stdin ends the
//! program's input. The exit code is the remote program's (128 + N for a death by
//! signal N).

use std::io::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context as _};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use pipegate_agent::protocol::{
    channel, CreateSession, Created, Status, TerminalSize, MAX_MESSAGE_SIZE, SUBPROTOCOL,
};
use pipegate_transport::hyper::host_header;
use pipegate_transport::{connect, ConnectOptions, Endpoint, Stream};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::cli::ShellArgs;
use crate::sys;

pub(crate) async fn run(args: ShellArgs) -> anyhow::Result<ExitCode> {
    let endpoint = args
        .endpoint
        .unwrap_or_else(|| sys::default_endpoint("pipegate"));
    let options = Dial {
        connect: ConnectOptions::new().timeout(args.connect_timeout),
        // A TCP agent wants its bearer token (found through discovery, or --token-file).
        auth: super::instance::token_for(&endpoint, args.token_file.as_deref())?
            .map(|token| super::instance::bearer(&token))
            .transpose()?,
    };
    let interactive = sys::stdin_is_terminal();
    let size = if interactive {
        sys::terminal_size()
    } else {
        None
    };
    let mut env = std::collections::BTreeMap::new();
    if interactive {
        if let Ok(term) = std::env::var("TERM") {
            env.insert("TERM".to_owned(), term);
        }
    }
    let body = CreateSession {
        argv: (!args.command.is_empty()).then(|| args.command.clone()),
        env,
        cwd: None,
        tty: interactive,
        size,
    };
    // Raw mode first: a terminal that cannot do it fails before a session is started.
    // Every return below drops the guard, which restores the terminal before `main`
    // prints anything.
    let _raw = if interactive {
        Some(sys::RawMode::enable().context("cannot put the terminal in raw mode")?)
    } else {
        None
    };
    let created = create(&endpoint, &options, &body).await?;
    let ws = attach(&endpoint, &options, &created.id).await?;
    let outcome = relay(ws, interactive).await;
    match outcome {
        Outcome::Status(status) => {
            let code = status.exit_code().with_context(|| {
                format!(
                    "the agent could not run the program: {}",
                    status.message.as_deref().unwrap_or("internal error")
                )
            })?;
            Ok(ExitCode::from(code))
        }
        Outcome::Signal(number) => {
            // Leaving because we were told to: end the remote session too.
            let path = format!("/v1/sessions/{}", created.id);
            let _ = tokio::time::timeout(
                Duration::from_secs(3),
                request(&endpoint, &options, http::Method::DELETE, &path, None),
            )
            .await;
            Ok(ExitCode::from(128u8.saturating_add(number)))
        }
        Outcome::Closed(Some((code, reason))) => bail!(
            "the agent closed the session without an exit status (WebSocket close {code}: {reason})"
        ),
        Outcome::Closed(None) => {
            bail!(
                "the connection to the agent at {endpoint} ended before the program's exit status"
            )
        }
        Outcome::Failed(e) => Err(e),
    }
}

/// How to reach the agent: the dial options, and `Authorization` for a TCP agent.
struct Dial {
    connect: ConnectOptions,
    auth: Option<http::HeaderValue>,
}

/// One HTTP/1.1 request on a fresh connection; the status and body.
async fn request(
    endpoint: &Endpoint,
    options: &Dial,
    method: http::Method,
    path: &str,
    body: Option<Vec<u8>>,
) -> anyhow::Result<(http::StatusCode, Bytes)> {
    let stream = connect(endpoint, &options.connect)
        .await
        .with_context(|| format!("cannot reach the pipegate agent at {endpoint}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .with_context(|| format!("HTTP handshake with {endpoint} failed"))?;
    tokio::spawn(conn);
    let mut req = http::Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::HOST, host_header(endpoint))
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body.unwrap_or_default())))
        .context("cannot build the request")?;
    if let Some(auth) = &options.auth {
        req.headers_mut()
            .insert(http::header::AUTHORIZATION, auth.clone());
    }
    let resp = sender
        .send_request(req)
        .await
        .with_context(|| format!("{endpoint} did not answer"))?;
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .with_context(|| format!("{endpoint} did not send the whole answer"))?
        .to_bytes();
    Ok((status, body))
}

/// `POST /v1/sessions`.
async fn create(
    endpoint: &Endpoint,
    options: &Dial,
    body: &CreateSession,
) -> anyhow::Result<Created> {
    let json = serde_json::to_vec(body).context("cannot encode the session request")?;
    let (status, answer) = request(
        endpoint,
        options,
        http::Method::POST,
        "/v1/sessions",
        Some(json),
    )
    .await?;
    if status == http::StatusCode::CREATED {
        return serde_json::from_slice(&answer)
            .with_context(|| format!("{endpoint} answered 201 without a session id"));
    }
    let message = serde_json::from_slice::<serde_json::Value>(&answer)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(&answer).trim().to_owned());
    if status == http::StatusCode::NOT_FOUND {
        bail!(
            "{endpoint} does not serve the pipegate agent API ({status}); \
             `pipegate serve` without --upstream does"
        );
    }
    bail!("the agent at {endpoint} refused the session ({status}): {message}")
}

/// `GET /v1/sessions/{id}/attach` as a WebSocket.
async fn attach(
    endpoint: &Endpoint,
    options: &Dial,
    id: &str,
) -> anyhow::Result<WebSocketStream<Stream>> {
    let stream = connect(endpoint, &options.connect)
        .await
        .with_context(|| format!("cannot reach the pipegate agent at {endpoint}"))?;
    let mut req = format!("ws://localhost/v1/sessions/{id}/attach")
        .into_client_request()
        .context("cannot build the attach request")?;
    req.headers_mut()
        .insert(http::header::HOST, host_header(endpoint));
    req.headers_mut().insert(
        http::header::SEC_WEBSOCKET_PROTOCOL,
        http::HeaderValue::from_static(SUBPROTOCOL),
    );
    if let Some(auth) = &options.auth {
        req.headers_mut()
            .insert(http::header::AUTHORIZATION, auth.clone());
    }
    let mut config = WebSocketConfig::default();
    config.max_message_size = Some(4 * MAX_MESSAGE_SIZE);
    let (ws, _) = tokio_tungstenite::client_async_with_config(req, stream, Some(config))
        .await
        .with_context(|| format!("cannot attach to session {id} at {endpoint}"))?;
    Ok(ws)
}

/// How the relay ended.
enum Outcome {
    /// The program ended; its status.
    Status(Status),
    /// `pipegate shell` itself got a terminating signal (its number).
    Signal(u8),
    /// The agent closed (code and reason) or the connection dropped, without a status.
    Closed(Option<(u16, String)>),
    /// Local I/O failed.
    Failed(anyhow::Error),
}

fn message(ch: u8, payload: &[u8]) -> Message {
    let mut data = Vec::with_capacity(payload.len() + 1);
    data.push(ch);
    data.extend_from_slice(payload);
    Message::Binary(data.into())
}

fn resize_message(size: TerminalSize) -> Message {
    let json = format!(r#"{{"Width":{},"Height":{}}}"#, size.width, size.height);
    message(channel::RESIZE, json.as_bytes())
}

/// Moves bytes both ways until the status arrives or something ends the session.
async fn relay(ws: WebSocketStream<Stream>, interactive: bool) -> Outcome {
    let mut output = OutputWriter::spawn();
    let outcome = relay_until_end(ws, interactive, &mut output).await;
    match outcome {
        // Every byte of output is written before the exit code is.
        Outcome::Status(status) => match output.finish().await {
            Ok(()) => Outcome::Status(status),
            Err(e) => {
                Outcome::Failed(anyhow::Error::new(e).context("cannot write the session's output"))
            }
        },
        // Leaving anyway: what arrived, if the terminal takes it soon.
        other => {
            let _ = tokio::time::timeout(Duration::from_secs(1), output.finish()).await;
            other
        }
    }
}

async fn relay_until_end(
    ws: WebSocketStream<Stream>,
    interactive: bool,
    output: &mut OutputWriter,
) -> Outcome {
    let (mut sink, mut stream) = ws.split();
    let mut input = spawn_stdin_reader();
    let mut resized = sys::ResizeEvents::new();
    let terminate = sys::terminate_signal(interactive);
    tokio::pin!(terminate);
    let mut interrupts = sys::Interrupts::new(interactive);
    let mut status: Option<Status> = None;
    let mut input_open = true;

    if interactive {
        if let Some(size) = sys::terminal_size() {
            let _ = sink.send(resize_message(size)).await;
        }
    }
    loop {
        tokio::select! {
            number = &mut terminate => return Outcome::Signal(number),
            () = interrupts.recv() => {
                // Ctrl-C reported as an event rather than as input: it is the key.
                tracing::debug!("Ctrl-C event: sent as 0x03");
                if sink.send(message(channel::STDIN, &[0x03])).await.is_err() {
                    return Outcome::Closed(None);
                }
            }
            _ = resized.recv() => {
                if let Some(size) = sys::terminal_size() {
                    tracing::debug!(width = size.width, height = size.height, "terminal resized");
                    if sink.send(resize_message(size)).await.is_err() {
                        return Outcome::Closed(None);
                    }
                }
            }
            chunk = input.recv(), if input_open => {
                let msg = match chunk {
                    Some(bytes) => message(channel::STDIN, &bytes),
                    None => {
                        input_open = false;
                        message(channel::CLOSE, &[channel::STDIN])
                    }
                };
                if sink.send(msg).await.is_err() {
                    return Outcome::Closed(None);
                }
            }
            msg = stream.next() => match msg {
                Some(Ok(Message::Binary(data))) => {
                    let Some(&ch) = data.first() else { continue };
                    let written = match ch {
                        channel::STDOUT | channel::STDERR if data.len() > 1 => {
                            output.write(ch == channel::STDERR, data.slice(1..)).await
                        }
                        channel::STATUS => {
                            match serde_json::from_slice::<Status>(&data[1..]) {
                                Ok(s) => status = Some(s),
                                Err(e) => return Outcome::Failed(anyhow::Error::new(e).context("the agent sent a malformed exit status")),
                            }
                            Ok(())
                        }
                        _ => Ok(()),
                    };
                    if let Err(e) = written {
                        return Outcome::Failed(anyhow::Error::new(e).context("cannot write the session's output"));
                    }
                }
                Some(Ok(Message::Close(frame))) => {
                    return match (status.take(), frame) {
                        (Some(status), _) => Outcome::Status(status),
                        (None, Some(f)) if f.code != CloseCode::Normal => {
                            Outcome::Closed(Some((u16::from(f.code), f.reason.to_string())))
                        }
                        (None, _) => Outcome::Closed(None),
                    };
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => {
                    return match status.take() {
                        Some(status) => Outcome::Status(status),
                        None => Outcome::Closed(None),
                    };
                }
            },
        }
    }
}

/// The session's output (stdout and stderr, in arrival order), written on a plain thread
/// with blocking writes. tokio's stdout hands every write to its blocking pool, and a
/// terminal takes a few KiB per write, so that was a thread hand-off every few KiB
/// (8 futex calls per 2 KiB, most of `pipegate shell`'s CPU time). The queue is short:
/// a slow terminal still slows the program down.
struct OutputWriter {
    queue: Option<mpsc::Sender<(bool, Bytes)>>,
    /// The writer's result once it ends (all written, or the first error).
    done: Option<oneshot::Receiver<std::io::Result<()>>>,
}

impl OutputWriter {
    fn spawn() -> OutputWriter {
        let (queue, mut rx) = mpsc::channel::<(bool, Bytes)>(16);
        let (done_tx, done) = oneshot::channel();
        std::thread::spawn(move || {
            let mut stdout = sys::output_writer(false);
            let mut stderr = sys::output_writer(true);
            let result = (|| -> std::io::Result<()> {
                while let Some((to_stderr, data)) = rx.blocking_recv() {
                    let out = if to_stderr { &mut stderr } else { &mut stdout };
                    out.write_all(&data)?;
                    // Flushed whenever nothing more is waiting (std's stdout buffers lines).
                    if rx.is_empty() {
                        stdout.flush()?;
                        stderr.flush()?;
                    }
                }
                stdout.flush()?;
                stderr.flush()
            })();
            let _ = done_tx.send(result);
        });
        OutputWriter {
            queue: Some(queue),
            done: Some(done),
        }
    }

    /// Queues `data` for stdout (or stderr); waits while the queue is full.
    ///
    /// # Errors
    ///
    /// A write failed (the terminal or pipe is gone).
    async fn write(&mut self, to_stderr: bool, data: Bytes) -> std::io::Result<()> {
        if let Some(queue) = &self.queue {
            if queue.send((to_stderr, data)).await.is_ok() {
                return Ok(());
            }
        }
        // The writer stopped: its error.
        self.queue = None;
        self.finish().await?;
        Err(std::io::Error::other("the output writer stopped"))
    }

    /// Waits until everything queued is written.
    ///
    /// # Errors
    ///
    /// A write failed.
    async fn finish(&mut self) -> std::io::Result<()> {
        self.queue = None;
        match self.done.take() {
            Some(done) => done.await.unwrap_or(Ok(())),
            None => Ok(()),
        }
    }
}

/// Reads stdin on a plain thread (tokio's stdin would keep the runtime from exiting
/// while a read is pending); `None` is end of input.
fn spawn_stdin_reader() -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel::<Vec<u8>>(16);
    std::thread::spawn(move || {
        use std::io::Read as _;
        let mut stdin = sys::stdin_reader();
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match stdin.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if tx.blocking_send(buf[..n].to_vec()).is_err() {
                        return;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        // Dropping the sender tells the relay that input ended.
    });
    rx
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use crate::cli::{Cli, Command};

    fn parse(args: &[&str]) -> Result<crate::cli::ShellArgs, clap::Error> {
        let cli = Cli::try_parse_from(args)?;
        match cli.command {
            Command::Shell(args) => Ok(args),
            other => panic!("not shell: {other:?}"),
        }
    }

    #[test]
    fn shell_flags() {
        let args = parse(&[
            "pipegate",
            "shell",
            "unix:///tmp/a.sock",
            "--",
            "htop",
            "-d",
            "5",
        ])
        .unwrap();
        assert_eq!(args.endpoint.unwrap().to_string(), "unix:///tmp/a.sock");
        assert_eq!(args.command, ["htop", "-d", "5"]);

        let args = parse(&["pipegate", "shell"]).unwrap();
        assert!(args.endpoint.is_none() && args.command.is_empty());

        // A command needs `--`; a bare word is taken for the endpoint and checked.
        assert!(parse(&["pipegate", "shell", "npipe://con"]).is_err());
        assert!(parse(&["pipegate", "shell", "tcp://127.0.0.1:1", "htop"]).is_err());
    }
}
