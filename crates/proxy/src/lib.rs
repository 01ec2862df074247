//! Forwarding between named pipes, Unix sockets and TCP.
//!
//! # Brief overview
//!
//! A [`Bridge`] is bound from a [`Config`] (one or more listen endpoints, one upstream)
//! with [`Bridge::bind`], which is where address-in-use and permission errors surface;
//! [`Bridge::local_endpoints`] then tells where it really listens (the port picked for
//! `:0`), and [`Bridge::serve`] runs until the shutdown future completes, then drains.
//!
//! In [`ForwardMode::Http`] hyper serves each connection (HTTP/1.1 and h2c); requests
//! go to the upstream over a pooled client with bodies streamed, hop-by-hop headers
//! removed and `Via` added; an `Upgrade` (WebSocket) is forwarded and, on `101`, both
//! upgraded streams are spliced without parsing frames. Upstream failures become `502`
//! (unreachable) or `504` (too slow) with a JSON body naming the upstream. Paths under
//! `/_pipegate/` are never forwarded: `health` answers `204` (with `X-Pipegate-Nonce` when
//! a nonce is set) and `metrics` the Prometheus text. Each request is logged once, inside
//! its connection's span, with method, path, status, bytes each way and duration.
//!
//! Before hyper parses a request, its head is checked for the shapes used to smuggle
//! requests past a proxy (`Content-Length` with `Transfer-Encoding`, repeated
//! `Content-Length`, obs-fold, bare LF, …): such a request is answered `400` and never
//! forwarded. On TCP listeners a guarded [`TcpAccess`] then requires a loopback `Host`
//! (`421`), an allowed `Origin` (`403`) and the bearer token (`401`); Unix sockets and
//! named pipes rely on the OS's peer checks instead. A bridge can present a token to its
//! upstream ([`Config::upstream_token_file`]). Header values are never logged, and
//! credential headers are marked sensitive.
//!
//! In [`ForwardMode::Raw`] every accepted connection gets its own upstream connection and
//! bytes are relayed both ways ([`pipegate_transport::relay`]), with half-close forwarded
//! where both transports have it. Each connection is logged once, when it closes, with
//! `transport.mode`, `transport.endpoint`, `upstream.mode`, `upstream.endpoint`, bytes each
//! way, duration and close reason. Payloads are never logged.
//!
//! # Examples
//!
//! ```
//! use pipegate_proxy::{Bridge, Config, ForwardMode};
//! use pipegate_transport::Endpoint;
//!
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let config = Config::new(
//!     vec![Endpoint::parse("127.0.0.1:0")?],
//!     Endpoint::loopback(upstream.local_addr()?.port()),
//!     ForwardMode::Raw,
//! );
//! let bridge = Bridge::bind(config).await?;
//! println!("forwarding {} to the upstream", bridge.local_endpoints()[0]);
//! let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
//! let server = tokio::spawn(bridge.serve(async { let _ = stopped.await; }));
//! stop.send(()).ok();
//! server.await??;
//! # Ok(()) }
//! ```
// `unsafe` only in sys/windows.rs (the process handle count).
#![deny(unsafe_code)]
#![warn(missing_docs)]
#![doc(test(attr(deny(warnings))))]

mod config;
mod error;
#[doc(hidden)]
pub mod fuzzing;
mod http;
mod raw;
mod server;
mod sys;

pub use config::{Config, ForwardMode, HttpOptions, LocalService, Target, TcpAccess};
pub use error::{Error, Result};
pub use http::{BoxError, ResBody};
pub use server::{Bridge, ServeSummary};
