//! `HyperConnector` with hyper-util's pooled client against real hyper HTTP/1.1 servers,
//! on every transport this OS has: TCP everywhere, plus Unix sockets on Unix and named
//! pipes on Windows.
// Helpers outside the #[test] functions are test code too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use pipegate_transport::hyper::{endpoint_uri, host_header, HyperConnector};
use pipegate_transport::{Endpoint, Listener, Mode, PeerInfo};
use support::{bind, within, STEP};

type HttpClient = Client<HyperConnector, Empty<Bytes>>;

/// A listener for this OS's local transport: a Unix socket in `dir`, or a named pipe.
#[cfg(unix)]
async fn bind_local(dir: &tempfile::TempDir, name: &str) -> Listener {
    let path = dir.path().join(format!("{name}.sock"));
    bind(&Endpoint::parse(path.to_str().expect("UTF-8")).expect("endpoint")).await
}

#[cfg(windows)]
async fn bind_local(_dir: &tempfile::TempDir, _name: &str) -> Listener {
    bind(&support::unique_pipe()).await
}

#[cfg(unix)]
const LOCAL_MODE: Mode = Mode::Unix;
#[cfg(windows)]
const LOCAL_MODE: Mode = Mode::NamedPipe;

/// An endpoint of this OS's local transport on which nothing listens.
#[cfg(unix)]
fn missing_local(dir: &tempfile::TempDir) -> Endpoint {
    let path = dir.path().join("nobody.sock");
    Endpoint::parse(path.to_str().expect("UTF-8")).expect("endpoint")
}

#[cfg(windows)]
fn missing_local(_dir: &tempfile::TempDir) -> Endpoint {
    support::unique_pipe()
}

/// Serves HTTP/1.1 on `listener`; every response body is `"{tag} {path?query} host={Host}"`.
/// Returns the endpoint and a count of accepted connections.
fn serve_http(mut listener: Listener, tag: &'static str) -> (Endpoint, Arc<AtomicUsize>) {
    let endpoint = listener.local_endpoint().clone();
    let connections = Arc::new(AtomicUsize::new(0));
    let count = connections.clone();
    tokio::spawn(async move {
        loop {
            let Ok(stream) = listener.accept().await else {
                return;
            };
            count.fetch_add(1, Ordering::SeqCst);
            let mode = stream.mode();
            let service = service_fn(move |req: Request<Incoming>| async move {
                let host = req
                    .headers()
                    .get(header::HOST)
                    .map(|h| String::from_utf8_lossy(h.as_bytes()).into_owned())
                    .unwrap_or_else(|| "<none>".to_owned());
                let path = req
                    .uri()
                    .path_and_query()
                    .map(|p| p.as_str().to_owned())
                    .unwrap_or_default();
                let body = format!("{tag} {path} host={host}");
                let mut response = Response::new(Full::new(Bytes::from(body)));
                response.headers_mut().insert(
                    "x-server-transport",
                    HeaderValue::from_static(mode.as_str()),
                );
                Ok::<_, Infallible>(response)
            });
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (endpoint, connections)
}

fn client(connector: HyperConnector) -> HttpClient {
    Client::builder(TokioExecutor::new()).build(connector)
}

struct Reply {
    status: StatusCode,
    body: String,
    server_transport: String,
    peer: Option<PeerInfo>,
}

async fn get(client: &HttpClient, uri: Uri, host: Option<HeaderValue>) -> Reply {
    let mut request = Request::get(uri.clone());
    if let Some(host) = host {
        request = request.header(header::HOST, host);
    }
    let request = request.body(Empty::new()).expect("request");
    let response = within(STEP, client.request(request), "request")
        .await
        .unwrap_or_else(|e| panic!("GET {uri}: {e:?}"));
    let status = response.status();
    let server_transport = response
        .headers()
        .get("x-server-transport")
        .map(|v| v.to_str().expect("ASCII").to_owned())
        .unwrap_or_default();
    let peer = response.extensions().get::<PeerInfo>().cloned();
    let body = within(STEP, response.into_body().collect(), "body")
        .await
        .expect("body")
        .to_bytes();
    Reply {
        status,
        body: String::from_utf8(body.to_vec()).expect("UTF-8 body"),
        server_transport,
        peer,
    }
}

/// A GET through `HyperConnector::new()` with `endpoint_uri` and `host_header`.
async fn get_endpoint(client: &HttpClient, endpoint: &Endpoint, path: &str) -> Reply {
    let uri = endpoint_uri(endpoint, path).expect("uri");
    get(client, uri, Some(host_header(endpoint))).await
}

#[tokio::test]
async fn tcp_request_carries_path_and_host() {
    let (ep, _) = serve_http(bind(&support::tcp_any()).await, "tcp");
    let Endpoint::Tcp { port, .. } = &ep else {
        unreachable!()
    };
    let client = client(HyperConnector::new());
    let reply = get_endpoint(&client, &ep, "/v1/info?verbose=1").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply.body,
        format!("tcp /v1/info?verbose=1 host=127.0.0.1:{port}")
    );
    assert_eq!(reply.server_transport, "tcp");
    let peer = reply
        .peer
        .expect("the connector's PeerInfo is in the response extensions");
    assert_eq!(peer.mode, Mode::Tcp);
    assert_eq!(peer.endpoint, ep);
}

#[tokio::test]
async fn local_request_carries_path_and_localhost_host() {
    let dir = support::temp_dir();
    let (ep, _) = serve_http(bind_local(&dir, "api").await, "local");
    let uri = endpoint_uri(&ep, "/v1/containers/json?all=true").expect("uri");
    assert_ne!(
        uri.authority().map(|a| a.as_str()),
        Some("localhost"),
        "the authority identifies the socket, for the pool"
    );
    let client = client(HyperConnector::new());
    let reply = get_endpoint(&client, &ep, "/v1/containers/json?all=true").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply.body, "local /v1/containers/json?all=true host=localhost",
        "the server sees the path and Host: localhost, not the URI's authority"
    );
    assert_eq!(reply.server_transport, LOCAL_MODE.as_str());
    let peer = reply.peer.expect("PeerInfo in the response extensions");
    assert_eq!(peer.mode, LOCAL_MODE);
    assert_eq!(peer.endpoint, ep);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_local_endpoints_through_one_client_keep_their_pools_apart() {
    let dir = support::temp_dir();
    let (a, a_connections) = serve_http(bind_local(&dir, "a").await, "server-a");
    let (b, b_connections) = serve_http(bind_local(&dir, "b").await, "server-b");
    assert_ne!(a, b);
    let client = client(HyperConnector::new());
    // Alternate many times: if the two endpoints shared a pool key, a request for one
    // would sooner or later reuse an idle connection to the other.
    for round in 0..25 {
        for (ep, tag) in [(&a, "server-a"), (&b, "server-b")] {
            let path = format!("/round/{round}");
            let reply = get_endpoint(&client, ep, &path).await;
            assert_eq!(
                reply.body,
                format!("{tag} {path} host=localhost"),
                "round {round}"
            );
            assert_eq!(reply.peer.expect("PeerInfo").endpoint, *ep);
        }
    }
    // Concurrently too.
    let requests = (0..20).map(|i| {
        let (ep, tag) = if i % 2 == 0 {
            (a.clone(), "server-a")
        } else {
            (b.clone(), "server-b")
        };
        let client = client.clone();
        async move {
            let reply = get_endpoint(&client, &ep, &format!("/concurrent/{i}")).await;
            assert_eq!(reply.body, format!("{tag} /concurrent/{i} host=localhost"));
        }
    });
    within(
        STEP,
        futures_util::future::join_all(requests),
        "concurrent requests",
    )
    .await;
    let (a_conns, b_conns) = (
        a_connections.load(Ordering::SeqCst),
        b_connections.load(Ordering::SeqCst),
    );
    assert!(a_conns >= 1 && b_conns >= 1, "{a_conns} {b_conns}");
    assert!(
        a_conns < 35 && b_conns < 35,
        "the pool reuses connections ({a_conns} and {b_conns} for 35 requests each)"
    );
}

#[tokio::test]
async fn fixed_connector_ignores_the_uri_authority() {
    let dir = support::temp_dir();
    let (tcp, _) = serve_http(bind(&support::tcp_any()).await, "tcp");
    let (local, _) = serve_http(bind_local(&dir, "fixed").await, "local");
    // Each URI names somewhere nothing listens; the fixed connector dials its endpoint.
    let elsewhere = [
        "http://127.0.0.1:1/fixed?q=1".parse::<Uri>().expect("uri"),
        endpoint_uri(&missing_local(&dir), "/fixed?q=1").expect("uri"),
    ];
    for (ep, tag) in [(&tcp, "tcp"), (&local, "local")] {
        let client = client(HyperConnector::fixed(ep.clone()));
        for uri in &elsewhere {
            let reply = get(
                &client,
                uri.clone(),
                Some(HeaderValue::from_static("localhost")),
            )
            .await;
            assert_eq!(
                reply.body,
                format!("{tag} /fixed?q=1 host=localhost"),
                "{uri}"
            );
            assert_eq!(reply.peer.expect("PeerInfo").endpoint, *ep);
        }
    }
    // The same URIs through a routing connector fail: nothing listens there.
    let routing = client(HyperConnector::new());
    for uri in elsewhere {
        let request = Request::get(uri.clone())
            .body(Empty::new())
            .expect("request");
        let err = within(STEP, routing.request(request), "request")
            .await
            .expect_err("nothing listens at the URI's authority");
        assert!(err.is_connect(), "{uri}: {err:?}");
    }
}

#[tokio::test]
async fn connect_failure_is_a_connect_error_saying_nothing_listens() {
    let dir = support::temp_dir();
    let ep = missing_local(&dir);
    let client = client(HyperConnector::new());
    let request = Request::get(endpoint_uri(&ep, "/").expect("uri"))
        .header(header::HOST, host_header(&ep))
        .body(Empty::new())
        .expect("request");
    let err = within(STEP, client.request(request), "request")
        .await
        .expect_err("nothing listens");
    assert!(err.is_connect(), "{err:?}");
    // The connector's io::Error, with our transport error as its inner error (which
    // io::Error's `source` skips, so reach it through `get_ref`).
    let mut source = std::error::Error::source(&err);
    let mut io_kind = None;
    let mut transport = None;
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if io_kind.is_none() {
                io_kind = Some(io.kind());
                transport = io
                    .get_ref()
                    .and_then(|inner| inner.downcast_ref::<pipegate_transport::Error>())
                    .map(|t| (t.kind(), t.to_string()));
            }
        }
        source = e.source();
    }
    let (kind, message) = transport.expect("the transport error inside the io::Error");
    assert_eq!(kind, pipegate_transport::ErrorKind::NotFound);
    assert_eq!(message, format!("nothing is listening on {ep}"));
    assert_eq!(io_kind, Some(std::io::ErrorKind::NotFound));
}
