//! Many byte streams over one connection: one long-lived helper process (or one socket)
//! for every connection across a boundary such as WSL ⇄ Windows, instead of a process per
//! connection.
//!
//! # Brief overview
//!
//! * A [`Server`] (what `pipegate mux` runs) serves multiplexed sessions on any byte
//!   stream (its stdin/stdout, or connections a [`Listener`](pipegate_transport::Listener)
//!   accepts). Each stream opens with a header naming the endpoint it wants; the server
//!   dials it only if it is on the [`ServerConfig::allow`] list (exact match of the
//!   canonical endpoint; empty by default, so nothing is allowed), answers, then relays
//!   bytes with half-close per stream.
//! * A [`Connector`] is the other end: given a [`Via`] (`exec:CMD` to start a helper,
//!   or the endpoint of a `pipegate mux --listen`), it keeps one session and opens one
//!   [`MuxStream`] per connection, after the far side's answer or, with
//!   [`Connector::open_optimistic`], at once (the first bytes travel with the header).
//!   It supervises the helper: logs its exit status and stderr tail, fails the streams in
//!   flight, restarts it with back-off, and kills it with its process tree at
//!   [`shutdown`](Connector::shutdown). It implements
//!   [`Dialer`](pipegate_transport::Dialer), so a bridge can forward through it.
//! * [`stdio()`] is this process's stdin/stdout as one byte stream for a helper's
//!   [`Server::serve`], with one thread per direction instead of a blocking-pool job
//!   per read, write and flush.
//!
//! The multiplexer is [yamux](https://docs.rs/yamux) (per-stream flow control: a stream
//! whose reader is slow stops only its own sender). The stream header is described in
//! the `protocol` module's source.
//!
//! # Examples
//!
//! A mux listening on loopback TCP, allowed to reach one upstream, and a connector that
//! opens a stream to it:
//!
//! ```
//! use std::time::Duration;
//! use pipegate_mux::{Connector, ConnectorOptions, Server, ServerConfig, Via};
//! use pipegate_transport::{Endpoint, ListenOptions, Listener};
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//!
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // The upstream: answers "hi" to every connection.
//! let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let upstream_ep = Endpoint::loopback(upstream.local_addr()?.port());
//! tokio::spawn(async move {
//!     while let Ok((mut conn, _)) = upstream.accept().await {
//!         let _ = conn.write_all(b"hi").await;
//!     }
//! });
//! // The mux, allowed to reach only that upstream.
//! let listener = Listener::bind(&Endpoint::parse("127.0.0.1:0")?, &ListenOptions::new()).await?;
//! let mux_ep = listener.local_endpoint().clone();
//! let server = Server::new(ServerConfig::new(vec![upstream_ep.clone()]));
//! tokio::spawn(async move { server.serve_listener(listener, std::future::pending()).await });
//!
//! let connector = Connector::new(Via::Endpoint(mux_ep), ConnectorOptions::new());
//! let mut stream = connector.open(&upstream_ep, Duration::from_secs(5)).await?;
//! let mut greeting = [0; 2];
//! stream.read_exact(&mut greeting).await?;
//! assert_eq!(&greeting, b"hi");
//!
//! // Anything else is refused, and the refusal says how to allow it.
//! let other = Endpoint::loopback(1);
//! let refused = connector.open(&other, Duration::from_secs(5)).await.unwrap_err();
//! assert!(refused.to_string().contains("--allow tcp://127.0.0.1:1"));
//! connector.shutdown().await;
//! # Ok(()) }
//! ```
// `unsafe` only in `sys/windows.rs` (the Job object FFI).
#![deny(unsafe_code)]
#![warn(missing_docs)]
#![doc(test(attr(deny(warnings))))]

mod client;
mod error;
mod protocol;
mod server;
mod session;
mod stdio;
mod sys;
mod via;

pub use client::{Connector, ConnectorOptions};
pub use error::{Error, ErrorKind, Result};
pub use server::{Server, ServerConfig, SessionSummary};
pub use session::MuxStream;
pub use stdio::{stdio, Stdio};
pub use via::Via;

/// The version a `pipegate mux` reports to a hello: `pipegate-mux/PROTOCOL (pipegate VERSION)`.
pub fn version() -> String {
    format!(
        "pipegate-mux/{} (pipegate {})",
        protocol::VERSION,
        env!("CARGO_PKG_VERSION")
    )
}
