//! Helpers shared by the transport integration tests: deadlines, temp dirs, unique pipe
//! names, an echo server, a one-shot relay, and checksummed bulk transfers.
//!
//! Every test file uses a different subset.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use pipegate_transport::relay::{relay, RelayOptions, RelayOutcome};
use pipegate_transport::{
    connect, ConnectOptions, Endpoint, ErrorKind, ListenOptions, Listener, PeerInfo, Stream,
};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{oneshot, Barrier};
use tokio::task::JoinHandle;

/// The budget for one ordinary step (a bind, a connect, a small exchange).
pub(crate) const STEP: Duration = Duration::from_secs(10);

/// Runs `fut`, panicking with `what` if it takes longer than `limit`: no test can hang.
pub(crate) async fn within<F: Future>(limit: Duration, fut: F, what: &str) -> F::Output {
    match tokio::time::timeout(limit, fut).await {
        Ok(out) => out,
        Err(_) => panic!("timed out after {limit:?}: {what}"),
    }
}

/// Binds `endpoint` with the default (secure) options, within [`STEP`].
pub(crate) async fn bind(endpoint: &Endpoint) -> Listener {
    within(
        STEP,
        Listener::bind(endpoint, &ListenOptions::new()),
        "bind",
    )
    .await
    .unwrap_or_else(|e| panic!("bind {endpoint}: {e}"))
}

/// One exchange over a fresh connection: the client dials `endpoint` and sends `hello`,
/// the accepted side answers `world`. Returns what the accepting side knows of its peer,
/// whether that side supports half-close, and both streams (kept open).
pub(crate) async fn hello_world(
    mut listener: Listener,
    endpoint: &Endpoint,
) -> (PeerInfo, bool, Stream, Stream) {
    let server = tokio::spawn(async move {
        let mut stream = listener.accept().await.expect("accept");
        let mut buf = [0; 5];
        stream.read_exact(&mut buf).await.expect("server read");
        assert_eq!(&buf, b"hello");
        stream.write_all(b"world").await.expect("server write");
        stream
    });
    let mut client = within(STEP, connect(endpoint, &ConnectOptions::new()), "connect")
        .await
        .expect("connect");
    client.write_all(b"hello").await.expect("client write");
    let mut back = [0; 5];
    within(STEP, client.read_exact(&mut back), "reply")
        .await
        .expect("client read");
    assert_eq!(&back, b"world");
    let server = within(STEP, server, "server").await.expect("server task");
    (
        server.peer().clone(),
        server.supports_half_close(),
        client,
        server,
    )
}

/// Dialing `endpoint`, where nothing listens, fails with `NotFound` and the message that
/// names the endpoint and what to try.
pub(crate) async fn assert_nothing_listens(endpoint: &Endpoint) {
    let err = within(STEP, connect(endpoint, &ConnectOptions::new()), "connect")
        .await
        .expect_err("nothing listens");
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    assert_eq!(
        err.to_string(),
        format!("nothing is listening on {endpoint}")
    );
    assert_eq!(err.endpoint(), Some(endpoint));
    assert_eq!(err.into_io().kind(), std::io::ErrorKind::NotFound);
}

/// A fresh private (0700 on Unix) temporary directory, removed when dropped. Short
/// prefix under the system temp dir, so socket paths stay well under 108 bytes.
pub(crate) fn temp_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("pgt")
        .tempdir()
        .expect("create a temp dir")
}

/// A pipe name no other test (or concurrent test run) uses: `pipegate-test-<pid>-<n>`.
pub(crate) fn unique_pipe_name() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    format!(
        "pipegate-test-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// `npipe://pipegate-test-<pid>-<n>`.
pub(crate) fn unique_pipe() -> Endpoint {
    Endpoint::parse(&format!("npipe://{}", unique_pipe_name())).expect("valid pipe name")
}

/// A loopback TCP endpoint on port 0 (the OS picks the port when binding).
pub(crate) fn tcp_any() -> Endpoint {
    Endpoint::parse("127.0.0.1:0").expect("valid endpoint")
}

/// Deterministic pseudo-random bytes (xorshift64*), different for every seed and never
/// periodic on buffer-size boundaries, so reordered or dropped chunks change the hash.
#[derive(Debug, Clone)]
pub(crate) struct Pattern(u64);

impl Pattern {
    pub(crate) fn new(seed: u64) -> Pattern {
        Pattern(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub(crate) fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let mut x = self.0;
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            self.0 = x;
            let word = x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes();
            chunk.copy_from_slice(&word[..chunk.len()]);
        }
    }

    pub(crate) fn bytes(seed: u64, len: usize) -> Vec<u8> {
        let mut buf = vec![0; len];
        Pattern::new(seed).fill(&mut buf);
        buf
    }
}

pub(crate) type Sha = [u8; 32];

/// Writes `len` bytes of `Pattern::new(seed)`; returns their SHA-256.
pub(crate) async fn send_pattern<W: AsyncWrite + Unpin>(
    writer: &mut W,
    seed: u64,
    len: u64,
) -> std::io::Result<Sha> {
    let mut pattern = Pattern::new(seed);
    let mut hasher = Sha256::new();
    let mut buf = vec![0; 64 * 1024];
    let mut left = len;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        pattern.fill(&mut buf[..n]);
        hasher.update(&buf[..n]);
        writer.write_all(&buf[..n]).await?;
        left -= n as u64;
    }
    writer.flush().await?;
    Ok(hasher.finalize().into())
}

/// Reads to EOF (`limit == None`) or exactly `limit` bytes; returns the count and SHA-256.
pub(crate) async fn hash_incoming<R: AsyncRead + Unpin>(
    reader: &mut R,
    limit: Option<u64>,
) -> std::io::Result<(u64, Sha)> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0; 64 * 1024];
    let mut total = 0u64;
    loop {
        let want = match limit {
            Some(limit) if total == limit => break,
            Some(limit) => (limit - total).min(buf.len() as u64) as usize,
            None => buf.len(),
        };
        let n = reader.read(&mut buf[..want]).await?;
        if n == 0 {
            if limit.is_some() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("EOF after {total} of {limit:?} bytes"),
                ));
            }
            break;
        }
        hasher.update(&buf[..n]);
        total += n as u64;
    }
    Ok((total, hasher.finalize().into()))
}

/// Echoes one stream until its peer's EOF, then shuts the write side down.
pub(crate) async fn echo(stream: Stream) {
    let (mut reader, mut writer) = tokio::io::split(stream);
    let _ = tokio::io::copy(&mut reader, &mut writer).await;
    let _ = writer.shutdown().await;
}

/// Serves an echo on `listener` until the runtime ends (or accept fails: the task then
/// returns the error).
pub(crate) fn spawn_echo_server(mut listener: Listener) -> JoinHandle<std::io::Error> {
    tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok(stream) => {
                    tokio::spawn(echo(stream));
                }
                Err(e) => return e,
            }
        }
    })
}

/// Connects, sends `payload` while reading its echo, and checks the echo.
pub(crate) async fn echo_once(endpoint: &Endpoint, payload: &[u8]) -> Stream {
    let stream = within(STEP, connect(endpoint, &ConnectOptions::new()), "connect")
        .await
        .unwrap_or_else(|e| panic!("connect to {endpoint}: {e}"));
    let (mut reader, mut writer) = tokio::io::split(stream);
    let mut back = vec![0; payload.len()];
    let (w, r) = within(
        STEP,
        async { tokio::join!(writer.write_all(payload), reader.read_exact(&mut back)) },
        "echo round trip",
    )
    .await;
    w.expect("write");
    r.expect("read the echo");
    assert!(back == payload, "echo differs from what was sent");
    reader.unsplit(writer)
}

/// `clients` tasks start together (a barrier), connect with `options`, wait until every
/// one of them is connected (so all connections are open at once), then each echoes its
/// own distinct payload. Panics listing every failure.
pub(crate) async fn concurrent_echo(endpoint: &Endpoint, clients: usize, options: ConnectOptions) {
    let start = Arc::new(Barrier::new(clients));
    let connected = Arc::new(Barrier::new(clients));
    let mut tasks = Vec::with_capacity(clients);
    for i in 0..clients {
        let (start, connected) = (start.clone(), connected.clone());
        let (endpoint, options) = (endpoint.clone(), options.clone());
        tasks.push(tokio::spawn(async move {
            start.wait().await;
            let dialed = connect(&endpoint, &options).await;
            // Reach the barrier even on failure, so the others are not held forever.
            connected.wait().await;
            let stream = dialed.map_err(|e| format!("client {i}: {:?}: {e}", e.kind()))?;
            let mut payload = format!("client {i} of {clients}: ").into_bytes();
            payload.extend(Pattern::bytes(i as u64, 1000 + 37 * i));
            let (mut reader, mut writer) = tokio::io::split(stream);
            let mut back = vec![0; payload.len()];
            let (w, r) = tokio::join!(writer.write_all(&payload), reader.read_exact(&mut back));
            w.map_err(|e| format!("client {i}: write: {e}"))?;
            r.map_err(|e| format!("client {i}: read: {e}"))?;
            if back != payload {
                return Err(format!("client {i}: echo differs from what it sent"));
            }
            Ok::<_, String>(())
        }));
    }
    let results = within(
        Duration::from_secs(60),
        futures_util::future::join_all(tasks),
        "concurrent clients",
    )
    .await;
    let failures: Vec<String> = results
        .into_iter()
        .filter_map(|result| match result {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e),
            Err(e) => Some(format!("client task panicked: {e}")),
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {clients} clients failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Accepts one client on `front`, dials `upstream` and relays between them with the
/// policy the two streams call for; the task returns the relay's outcome.
pub(crate) fn spawn_relay_once(
    mut front: Listener,
    upstream: Endpoint,
) -> JoinHandle<RelayOutcome> {
    tokio::spawn(async move {
        let mut client = front.accept().await.expect("relay: accept the client");
        let mut upstream = connect(&upstream, &ConnectOptions::new())
            .await
            .expect("relay: dial the upstream");
        let options =
            RelayOptions::for_streams(client.supports_half_close(), upstream.supports_half_close());
        relay(&mut client, &mut upstream, options).await
    })
}

/// Half-close without a relay: the client writes and shuts down its write side; the
/// server reads to EOF and only then replies; the client still receives the reply.
pub(crate) async fn half_close_direct(mut listener: Listener) {
    let endpoint = listener.local_endpoint().clone();
    let server = tokio::spawn(async move {
        let mut stream = listener.accept().await.expect("accept");
        assert!(stream.supports_half_close());
        let mut got = Vec::new();
        stream
            .read_to_end(&mut got)
            .await
            .expect("server reads to EOF");
        stream
            .write_all(format!("reply to {}", String::from_utf8_lossy(&got)).as_bytes())
            .await
            .expect("server replies after EOF");
        stream.shutdown().await.expect("server shutdown");
        got
    });
    let mut client = within(STEP, connect(&endpoint, &ConnectOptions::new()), "connect")
        .await
        .expect("connect");
    assert!(client.supports_half_close());
    client.write_all(b"request").await.expect("client write");
    client
        .shutdown()
        .await
        .expect("client shuts down its write side");
    let mut reply = Vec::new();
    within(
        STEP,
        client.read_to_end(&mut reply),
        "client reads the reply",
    )
    .await
    .expect("client reads after its own shutdown");
    assert_eq!(reply, b"reply to request");
    let got = within(STEP, server, "server").await.expect("server task");
    assert_eq!(got, b"request");
}

/// What the upstream sends after it sees the client's EOF.
pub(crate) const TRAILER: &[u8] = b"-- the rest of the reply, sent after EOF --";

/// Half-close through a relay: client ⇄ relay ⇄ upstream echo. The client gets an echo
/// (the relay is live both ways), shuts down its write side; the upstream must see EOF,
/// and only then sends [`TRAILER`], which the client must still receive.
pub(crate) async fn half_close_through_relay(front: Listener, mut upstream: Listener) {
    let front_ep = front.local_endpoint().clone();
    let upstream_ep = upstream.local_endpoint().clone();
    let (saw_eof_tx, saw_eof_rx) = oneshot::channel();
    let upstream_task = tokio::spawn(async move {
        let stream = upstream.accept().await.expect("upstream accept");
        let (mut reader, mut writer) = tokio::io::split(stream);
        let mut received = Vec::new();
        let mut buf = [0; 1024];
        loop {
            let n = reader.read(&mut buf).await.expect("upstream read");
            if n == 0 {
                break;
            }
            received.extend_from_slice(&buf[..n]);
            writer.write_all(&buf[..n]).await.expect("upstream echo");
        }
        let _ = saw_eof_tx.send(received);
        writer.write_all(TRAILER).await.expect("upstream trailer");
        writer.shutdown().await.expect("upstream shutdown");
    });
    let relay_task = spawn_relay_once(front, upstream_ep);

    let mut client = within(STEP, connect(&front_ep, &ConnectOptions::new()), "connect")
        .await
        .expect("connect to the relay");
    client.write_all(b"ping").await.expect("client write");
    let mut echo = [0; 4];
    within(STEP, client.read_exact(&mut echo), "echo through the relay")
        .await
        .expect("read the echo");
    assert_eq!(&echo, b"ping");
    client.shutdown().await.expect("client shutdown");

    let received = within(STEP, saw_eof_rx, "the upstream to see EOF")
        .await
        .expect("the upstream saw EOF");
    assert_eq!(
        received, b"ping",
        "the upstream got exactly the client's bytes"
    );
    let mut rest = Vec::new();
    within(STEP, client.read_to_end(&mut rest), "the rest of the reply")
        .await
        .expect("client reads after its own shutdown");
    assert_eq!(rest, TRAILER, "the reply sent after EOF reached the client");

    within(STEP, upstream_task, "upstream task")
        .await
        .expect("upstream task");
    let outcome = within(STEP, relay_task, "relay").await.expect("relay task");
    assert_eq!(outcome.reason.label(), "eof", "{:?}", outcome.reason);
    assert_eq!(outcome.client_to_upstream, 4);
    assert_eq!(outcome.upstream_to_client, 4 + TRAILER.len() as u64);
}

/// `up` bytes client → upstream and `down` bytes upstream → client, both at once, through
/// client ⇄ relay ⇄ upstream, each checked by SHA-256 (hashed as written and as read).
/// With half-close both sides read to EOF; without (named pipes) they read exactly the
/// expected count and the client's drop ends the relay.
pub(crate) async fn bulk_through_relay(
    front: Listener,
    mut upstream: Listener,
    up: u64,
    down: u64,
) {
    const CLIENT_SEED: u64 = 0xC11E;
    const UPSTREAM_SEED: u64 = 0x0B57;
    let limit = Duration::from_secs(120);
    let front_ep = front.local_endpoint().clone();
    let upstream_ep = upstream.local_endpoint().clone();

    let upstream_task = tokio::spawn(async move {
        let stream = upstream.accept().await.expect("upstream accept");
        let half_close = stream.supports_half_close();
        let (mut reader, mut writer) = tokio::io::split(stream);
        let (sent, received) = tokio::join!(
            async {
                let sha = send_pattern(&mut writer, UPSTREAM_SEED, down).await?;
                if half_close {
                    writer.shutdown().await?;
                }
                Ok::<_, std::io::Error>(sha)
            },
            hash_incoming(&mut reader, (!half_close).then_some(up)),
        );
        let sent = sent.expect("upstream send");
        let received = received.expect("upstream receive");
        // Hand the stream back: without half-close (pipes) dropping it here would end the
        // relay from the upstream side; the test drops it after the relay has ended.
        (sent, received, reader.unsplit(writer))
    });
    let relay_task = spawn_relay_once(front, upstream_ep);

    let client = within(STEP, connect(&front_ep, &ConnectOptions::new()), "connect")
        .await
        .expect("connect to the relay");
    let half_close = client.supports_half_close();
    let (mut reader, mut writer) = tokio::io::split(client);
    let (sent, received) = within(
        limit,
        async {
            tokio::join!(
                async {
                    let sha = send_pattern(&mut writer, CLIENT_SEED, up).await?;
                    if half_close {
                        writer.shutdown().await?;
                    }
                    Ok::<_, std::io::Error>(sha)
                },
                hash_incoming(&mut reader, (!half_close).then_some(down)),
            )
        },
        "bulk transfer through the relay",
    )
    .await;
    let sent = sent.expect("client send");
    let (client_got, client_sha) = received.expect("client receive");
    let (upstream_sent, (upstream_got, upstream_sha), upstream_stream) =
        within(limit, upstream_task, "upstream")
            .await
            .expect("upstream task");
    drop(reader.unsplit(writer));
    let outcome = within(limit, relay_task, "relay to end")
        .await
        .expect("relay task");
    drop(upstream_stream);

    assert_eq!(upstream_got, up, "bytes the upstream received");
    assert_eq!(client_got, down, "bytes the client received");
    assert!(upstream_sha == sent, "client → upstream SHA-256 mismatch");
    assert!(
        client_sha == upstream_sent,
        "upstream → client SHA-256 mismatch"
    );
    assert_eq!(outcome.client_to_upstream, up);
    assert_eq!(outcome.upstream_to_client, down);
    let expected = if half_close { "eof" } else { "client_closed" };
    assert_eq!(outcome.reason.label(), expected, "{:?}", outcome.reason);
}
