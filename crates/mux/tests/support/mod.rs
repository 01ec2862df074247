//! Shared machinery for the mux tests: in-process upstreams and mux servers on loopback
//! TCP (every OS has it), payloads and bounded waits.
#![allow(dead_code, unreachable_pub)]

use std::future::Future;
use std::time::Duration;

use pipegate_mux::{Connector, ConnectorOptions, Server, ServerConfig, Via};
use pipegate_transport::{Endpoint, ListenOptions, Listener};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Runs `fut`, failing the test if it takes longer than `limit`.
pub async fn within<T>(limit: Duration, what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(limit, fut).await {
        Ok(value) => value,
        Err(_) => panic!("timed out after {limit:?}: {what}"),
    }
}

/// What an upstream does with each connection.
#[derive(Debug, Clone, Copy)]
pub enum Behavior {
    /// Copies everything back; after the client's EOF, shuts down its write side.
    Echo,
    /// Reads until EOF, then answers `got N bytes` and closes: proves half-close.
    CountThenReply,
    /// Writes `n` bytes as fast as the client takes them, then closes.
    Firehose(usize),
}

/// An in-test upstream on loopback TCP; its accept loop stops when dropped.
pub struct Upstream {
    pub endpoint: Endpoint,
    task: JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub async fn upstream(behavior: Behavior) -> Upstream {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = Endpoint::loopback(listener.local_addr().unwrap().port());
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(handle(stream, behavior));
        }
    });
    Upstream { endpoint, task }
}

async fn handle(stream: tokio::net::TcpStream, behavior: Behavior) {
    let (mut reader, mut writer) = stream.into_split();
    match behavior {
        Behavior::Echo => {
            let _ = tokio::io::copy(&mut reader, &mut writer).await;
            let _ = writer.shutdown().await;
        }
        Behavior::CountThenReply => {
            let mut sink = Vec::new();
            let _ = reader.read_to_end(&mut sink).await;
            let _ = writer
                .write_all(format!("got {} bytes", sink.len()).as_bytes())
                .await;
            let _ = writer.shutdown().await;
        }
        Behavior::Firehose(n) => {
            let chunk = vec![7u8; 64 * 1024];
            let mut left = n;
            while left > 0 {
                let k = left.min(chunk.len());
                if writer.write_all(&chunk[..k]).await.is_err() {
                    return;
                }
                left -= k;
            }
            let _ = writer.shutdown().await;
        }
    }
}

/// A `pipegate mux` server in-process on loopback TCP; stopped when dropped (or by
/// [`Mux::stop`], which waits).
pub struct Mux {
    pub endpoint: Endpoint,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Mux {
    pub async fn start(allow: Vec<Endpoint>) -> Mux {
        Mux::start_on(&Endpoint::parse("127.0.0.1:0").unwrap(), allow).await
    }

    pub async fn start_on(endpoint: &Endpoint, allow: Vec<Endpoint>) -> Mux {
        let listener = Listener::bind(endpoint, &ListenOptions::new())
            .await
            .unwrap();
        let endpoint = listener.local_endpoint().clone();
        let server = Server::new(ServerConfig::new(allow));
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            server
                .serve_listener(listener, async {
                    let _ = stopped.await;
                })
                .await;
        });
        Mux {
            endpoint,
            stop: Some(stop),
            task,
        }
    }

    /// Kills the server abruptly: its sessions end without a goodbye.
    pub async fn kill(mut self) {
        self.stop.take();
        self.task.abort();
        let _ = (&mut self.task).await;
    }
}

impl Drop for Mux {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub fn connector(mux: &Mux) -> Connector {
    Connector::new(Via::Endpoint(mux.endpoint.clone()), ConnectorOptions::new())
}

/// `len` pseudo-random bytes from `seed` (xorshift64*).
pub fn payload(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        out.extend_from_slice(&state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

pub fn sha256(data: &[u8]) -> Vec<u8> {
    Sha256::digest(data).to_vec()
}

/// Sends `data`, shuts down the write side, and reads until EOF, concurrently; returns
/// the SHA-256 of what came back.
pub async fn echo_digest<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    data: &[u8],
) -> std::io::Result<Vec<u8>> {
    let (mut reader, mut writer) = tokio::io::split(stream);
    let write = async {
        for chunk in data.chunks(64 * 1024) {
            writer.write_all(chunk).await?;
        }
        writer.shutdown().await
    };
    let read = async {
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = reader.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        Ok::<_, std::io::Error>(hasher.finalize().to_vec())
    };
    let (written, read) = tokio::join!(write, read);
    written?;
    read
}
