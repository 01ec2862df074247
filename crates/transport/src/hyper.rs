//! [`HyperConnector`]: a `tower_service::Service<Uri>` that lets
//! `hyper_util::client::legacy::Client` dial named pipes, Unix sockets and TCP.
//!
//! # URIs
//!
//! The client's pool is keyed by `(scheme, authority)`, so the authority must identify
//! the socket. [`endpoint_uri`] builds such a URI from an [`Endpoint`] and a path, and
//! [`endpoint_from_uri`] is its inverse (the connector uses it):
//!
//! | endpoint                 | URI                                    |
//! |--------------------------|----------------------------------------|
//! | `tcp://127.0.0.1:8080`   | `http://127.0.0.1:8080/PATH`           |
//! | `npipe://docker_engine`  | `npipe://docker_engine/PATH`           |
//! | `unix:///run/api.sock`   | `unix://2f72756e2f6170692e736f636b/PATH` (hex of the path) |
//!
//! hyper-util derives `Host` from the URI only when the request has none, so set it with
//! [`host_header`] (`localhost` for sockets and pipes) rather than leaking the hex form.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;

use crate::stream::PeerInfo;
use crate::{connect, ConnectOptions, Dialer, Endpoint, Stream};

/// Dials the endpoint a request URI names (see the [module docs](self)), or always one
/// fixed endpoint.
///
/// # Examples
///
/// ```no_run
/// use http_body_util::Empty;
/// use hyper_util::client::legacy::Client;
/// use hyper_util::rt::TokioExecutor;
/// use pipegate_transport::hyper::{endpoint_uri, host_header, HyperConnector};
/// use pipegate_transport::Endpoint;
///
/// # #[allow(dead_code)]
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let client = Client::builder(TokioExecutor::new())
///     .build::<_, Empty<bytes::Bytes>>(HyperConnector::new());
/// let ep = Endpoint::parse("unix:///run/user/1000/pipegate/pipegate.sock")?;
/// let req = http::Request::get(endpoint_uri(&ep, "/v1/info")?)
///     .header(http::header::HOST, host_header(&ep))
///     .body(Empty::new())?;
/// let resp = client.request(req).await?;
/// println!("{}", resp.status());
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Default)]
pub struct HyperConnector {
    fixed: Option<Endpoint>,
    options: ConnectOptions,
    dialer: Option<Arc<dyn Dialer>>,
}

impl HyperConnector {
    /// A connector that dials whatever endpoint each URI names.
    pub fn new() -> HyperConnector {
        HyperConnector::default()
    }

    /// A connector that dials `endpoint` whatever the URI says (one upstream per client).
    pub fn fixed(endpoint: Endpoint) -> HyperConnector {
        HyperConnector {
            fixed: Some(endpoint),
            options: ConnectOptions::default(),
            dialer: None,
        }
    }

    /// Sets the dial options (deadline, busy-pipe retry).
    pub fn with_options(mut self, options: ConnectOptions) -> HyperConnector {
        self.options = options;
        self
    }

    /// Dials through `dialer` (a tunnel) instead of [`connect`], or directly for `None`.
    pub fn with_dialer(mut self, dialer: Option<Arc<dyn Dialer>>) -> HyperConnector {
        self.dialer = dialer;
        self
    }
}

/// The connector's future. A named type so callers do not depend on it being boxed.
pub struct Connecting(Pin<Box<dyn Future<Output = io::Result<TokioIo<Stream>>> + Send>>);

impl std::fmt::Debug for Connecting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Connecting")
    }
}

impl Future for Connecting {
    type Output = io::Result<TokioIo<Stream>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.0.as_mut().poll(cx)
    }
}

impl tower_service::Service<Uri> for HyperConnector {
    type Response = TokioIo<Stream>;
    type Error = io::Error;
    type Future = Connecting;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), io::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Connecting {
        let endpoint = match &self.fixed {
            Some(ep) => Ok(ep.clone()),
            None => endpoint_from_uri(&uri),
        };
        let options = self.options.clone();
        let dialer = self.dialer.clone();
        Connecting(Box::pin(async move {
            let endpoint = endpoint?;
            let stream = match dialer {
                Some(dialer) => dialer.dial(&endpoint, &options).await?,
                None => connect(&endpoint, &options)
                    .await
                    .map_err(crate::Error::into_io)?,
            };
            Ok(TokioIo::new(stream))
        }))
    }
}

impl Connection for Stream {
    fn connected(&self) -> Connected {
        Connected::new().extra(self.peer().clone())
    }
}

/// The peer of an upstream connection, found in a response's extensions as
/// `hyper_util::client::legacy::connect::HttpInfo` is for plain TCP.
pub type UpstreamPeer = PeerInfo;

/// Builds a request URI for `path_and_query` on `endpoint` (see the [module docs](self)).
///
/// # Errors
///
/// `path_and_query` is not a valid URI path (it must start with `/`).
pub fn endpoint_uri(endpoint: &Endpoint, path_and_query: &str) -> Result<Uri, http::Error> {
    let (scheme, authority) = match endpoint {
        Endpoint::Tcp { host, port } if host.contains(':') => ("http", format!("[{host}]:{port}")),
        Endpoint::Tcp { host, port } => ("http", format!("{host}:{port}")),
        Endpoint::NamedPipe(name) => ("npipe", name.clone()),
        Endpoint::Unix(path) => ("unix", hex(path.as_bytes())),
    };
    Uri::builder()
        .scheme(scheme)
        .authority(authority)
        .path_and_query(path_and_query)
        .build()
}

/// The endpoint a URI from [`endpoint_uri`] names.
///
/// # Errors
///
/// `InvalidInput` for an unknown scheme, a missing authority or bad hex.
pub fn endpoint_from_uri(uri: &Uri) -> io::Result<Endpoint> {
    let invalid =
        |what: &str| io::Error::new(io::ErrorKind::InvalidInput, format!("{what}: {uri}"));
    let authority = uri
        .authority()
        .ok_or_else(|| invalid("URI has no authority"))?;
    match uri.scheme_str() {
        Some("http") => Endpoint::parse(authority.as_str())
            .or_else(|_| Endpoint::parse(&format!("{}:80", authority.host())))
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e)),
        Some("npipe") => Endpoint::parse(&format!("npipe://{}", authority.as_str()))
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e)),
        Some("unix") => {
            let bytes =
                unhex(authority.as_str()).ok_or_else(|| invalid("bad hex socket path in URI"))?;
            let path = String::from_utf8(bytes).map_err(|_| invalid("socket path is not UTF-8"))?;
            Endpoint::parse(&path).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
        }
        _ => Err(invalid("unsupported URI scheme (use http, npipe or unix)")),
    }
}

/// The `Host` header to send to `endpoint`: `host:port` for TCP, `localhost` otherwise.
pub fn host_header(endpoint: &Endpoint) -> http::HeaderValue {
    match endpoint {
        Endpoint::Tcp { host, port } if host.contains(':') => {
            http::HeaderValue::from_str(&format!("[{host}]:{port}"))
        }
        Endpoint::Tcp { host, port } => http::HeaderValue::from_str(&format!("{host}:{port}")),
        _ => Ok(http::HeaderValue::from_static("localhost")),
    }
    .unwrap_or(http::HeaderValue::from_static("localhost"))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uri_round_trips() {
        for text in [
            "tcp://127.0.0.1:8080",
            "tcp://[::1]:1",
            "npipe://docker_engine",
            "unix:///run/user/1000/my%20api.sock",
        ] {
            let ep = Endpoint::parse(text).unwrap();
            let uri = endpoint_uri(&ep, "/v1/info?x=1").unwrap();
            assert_eq!(uri.path_and_query().unwrap().as_str(), "/v1/info?x=1");
            assert_eq!(endpoint_from_uri(&uri).unwrap(), ep, "{uri}");
        }
    }

    #[test]
    fn distinct_sockets_have_distinct_pool_keys() {
        let a = endpoint_uri(&Endpoint::parse("/tmp/a.sock").unwrap(), "/").unwrap();
        let b = endpoint_uri(&Endpoint::parse("/tmp/b.sock").unwrap(), "/").unwrap();
        assert_ne!(a.authority(), b.authority());
    }

    #[test]
    fn host_headers() {
        assert_eq!(
            host_header(&Endpoint::parse("/tmp/a.sock").unwrap()),
            "localhost"
        );
        assert_eq!(
            host_header(&Endpoint::parse("npipe://x").unwrap()),
            "localhost"
        );
        assert_eq!(
            host_header(&Endpoint::parse("[::1]:80").unwrap()),
            "[::1]:80"
        );
        assert_eq!(
            host_header(&Endpoint::parse("127.0.0.1:9").unwrap()),
            "127.0.0.1:9"
        );
    }

    #[test]
    fn bad_uris() {
        for uri in ["ftp://x/", "unix://zz/", "unix://abc/"] {
            let uri: Uri = uri.parse().unwrap();
            assert_eq!(
                endpoint_from_uri(&uri).unwrap_err().kind(),
                io::ErrorKind::InvalidInput
            );
        }
    }
}
