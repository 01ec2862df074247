//! The pool against a real upstream: a raw HTTP/1.1 server on a loopback TCP socket,
//! written by hand so each test controls exactly when connections open, answer and
//! close, and can count what the pool did to them. (TCP rather than a Unix socket so the
//! tests run unchanged on every OS; the pool is the same for every transport.)
//!
//! Request bodies must be `Counted<Incoming>`, and only hyper makes an `Incoming`: each
//! test request's body is the response body of a real hyper client request to another
//! raw server (`incoming`).

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures_util::future::join_all;
use http::header::{CONNECTION, CONTENT_LENGTH, HOST, UPGRADE};
use http::{HeaderValue, Method, StatusCode};
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Barrier};

use super::*;
use crate::http::body::{Exchange, Flow};
use crate::http::metrics::Metrics;

/// Hang guard for every step; never an assertion about speed.
const LIMIT: Duration = Duration::from_secs(10);

async fn within<F: Future>(fut: F, what: &str) -> F::Output {
    match tokio::time::timeout(LIMIT, fut).await {
        Ok(out) => out,
        Err(_) => panic!("timed out after {LIMIT:?}: {what}"),
    }
}

/// Polls `check` until it holds, panicking after [`LIMIT`].
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + LIMIT;
    while !check() {
        assert!(
            Instant::now() < deadline,
            "not true within {LIMIT:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

// ---------------------------------------------------------------------------------------
// The raw upstream

/// One request as the upstream read it.
struct Seen {
    /// Which connection it came on: 1 for the first accepted, and so on.
    conn: usize,
    /// Request line and headers, lowercased.
    head: String,
    body: Vec<u8>,
}

impl Seen {
    fn is(&self, request_line_start: &str) -> bool {
        self.head.starts_with(request_line_start)
    }
}

/// What the upstream does after reading a request.
enum Reply {
    /// Writes this and reads the next request on the connection.
    Keep(Vec<u8>),
    /// Writes this, then echoes every byte it receives (an upgraded tunnel).
    Echo(Vec<u8>),
}

/// A `200 OK` with `body`, keep-alive.
fn ok(body: &str) -> Vec<u8> {
    let len = body.len();
    format!("HTTP/1.1 200 OK\r\ncontent-length: {len}\r\n\r\n{body}").into_bytes()
}

struct Upstream {
    endpoint: Endpoint,
    /// Connections accepted.
    accepted: Arc<AtomicUsize>,
    /// Connections the pool closed: the upstream read EOF where a request would start.
    closed_by_pool: Arc<AtomicUsize>,
    /// Connections numbered up to this one close when they wait for a request.
    close_upto: watch::Sender<usize>,
}

impl Upstream {
    async fn start<F, Fut>(handler: F) -> Upstream
    where
        F: Fn(Seen) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Reply> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let closed_by_pool = Arc::new(AtomicUsize::new(0));
        let handler = Arc::new(handler);
        let (count, closed) = (Arc::clone(&accepted), Arc::clone(&closed_by_pool));
        let (close_upto, close) = watch::channel(0);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let conn = count.fetch_add(1, Ordering::SeqCst) + 1;
                let (handler, closed) = (Arc::clone(&handler), Arc::clone(&closed));
                tokio::spawn(serve(stream, conn, handler, closed, close.clone()));
            }
        });
        Upstream {
            endpoint: Endpoint::loopback(port),
            accepted,
            closed_by_pool,
            close_upto,
        }
    }

    /// Closes every connection accepted so far as soon as it waits for a request
    /// (keep-alive answers, then a close: an upstream's own idle timeout).
    fn close_idle(&self) {
        self.close_upto.send_replace(self.accepted());
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    fn closed_by_pool(&self) -> usize {
        self.closed_by_pool.load(Ordering::SeqCst)
    }
}

async fn serve<F, Fut>(
    mut stream: TcpStream,
    conn: usize,
    handler: Arc<F>,
    closed: Arc<AtomicUsize>,
    mut close: watch::Receiver<usize>,
) where
    F: Fn(Seen) -> Fut,
    Fut: Future<Output = Reply>,
{
    let mut buf = Vec::new();
    loop {
        let closing = async {
            if close.wait_for(|&upto| conn <= upto).await.is_err() {
                std::future::pending::<()>().await; // the test's `Upstream` is gone
            }
        };
        let seen = tokio::select! {
            seen = read_request(&mut stream, conn, &mut buf) => seen,
            () = closing => return,
        };
        let Some(seen) = seen else {
            closed.fetch_add(1, Ordering::SeqCst);
            return;
        };
        match handler(seen).await {
            Reply::Keep(bytes) => {
                if stream.write_all(&bytes).await.is_err() {
                    return;
                }
            }
            Reply::Echo(bytes) => {
                let _ = stream.write_all(&bytes).await;
                let _ = stream.write_all(&buf).await;
                let mut chunk = [0u8; 1024];
                while let Ok(n @ 1..) = stream.read(&mut chunk).await {
                    if stream.write_all(&chunk[..n]).await.is_err() {
                        return;
                    }
                }
                return;
            }
        }
    }
}

/// Reads one request (head and `content-length` body); `None` at EOF or an error.
async fn read_request(stream: &mut TcpStream, conn: usize, buf: &mut Vec<u8>) -> Option<Seen> {
    let mut chunk = [0u8; 4096];
    let end = loop {
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos + 4;
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
    buf.drain(..end);
    let len = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map_or(0, |v| v.trim().parse::<usize>().unwrap());
    while buf.len() < len {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let body = buf.drain(..len).collect();
    Some(Seen { conn, head, body })
}

// ---------------------------------------------------------------------------------------
// Requests and the pool

/// A real `Incoming` carrying `body`: the response body of a hyper client request.
async fn incoming(body: &'static str) -> Incoming {
    let source = Upstream::start(move |_| async move { Reply::Keep(ok(body)) }).await;
    let Endpoint::Tcp { port, .. } = source.endpoint else {
        unreachable!()
    };
    let stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let (mut sender, conn) = http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    let req = Request::get("/").body(http_body_util::Empty::<Bytes>::new());
    let resp = within(sender.send_request(req.unwrap()), "the body source").await;
    resp.unwrap().into_body()
}

/// A request as the proxy hands it to the pool: origin-form URI, `Host` set.
async fn request(method: Method, path: &str, body: &'static str) -> Request<ReqBody> {
    let exchange = Exchange::new(tracing::Span::none(), Arc::new(Metrics::default()));
    let body = Counted::new(incoming(body).await, exchange, Flow::ClientToUpstream);
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header(HOST, "upstream");
    if body.size_hint().exact() != Some(0) {
        req = req.header(CONTENT_LENGTH, body.size_hint().exact().unwrap());
    }
    req.body(body).unwrap()
}

fn pool(upstream: &Upstream, max_idle: usize, idle_timeout: Duration) -> Arc<Pool> {
    let options = ConnectOptions::new();
    Pool::new(
        upstream.endpoint.clone(),
        options,
        None,
        max_idle,
        idle_timeout,
        Arc::new(Metrics::default()),
    )
}

/// A pool for an upstream a test runs itself.
fn pool_at(endpoint: Endpoint, max_idle: usize) -> Arc<Pool> {
    Pool::new(
        endpoint,
        ConnectOptions::new(),
        None,
        max_idle,
        Duration::from_secs(600),
        Arc::new(Metrics::default()),
    )
}

/// A pool that neither caps nor expires anything a test does not ask it to.
fn roomy(upstream: &Upstream) -> Arc<Pool> {
    pool(upstream, 16, Duration::from_secs(600))
}

/// Sends `req` and reads the whole answer.
async fn send(lane: &Arc<Lane>, req: Request<ReqBody>) -> (StatusCode, String) {
    let resp = within(lane.request(req), "the upstream's answer")
        .await
        .unwrap();
    let status = resp.status();
    let body = within(resp.into_body().collect(), "the response body").await;
    let body = String::from_utf8(body.unwrap().to_bytes().to_vec()).unwrap();
    (status, body)
}

async fn get(lane: &Arc<Lane>, path: &str) -> (StatusCode, String) {
    send(lane, request(Method::GET, path, "").await).await
}

/// The answer to a plain request: which connection carried it.
fn ok_conn(seen: &Seen) -> Vec<u8> {
    ok(&format!("conn {}", seen.conn))
}

/// An upstream giving plain answers; `GET /held` waits until `hold` of those are in (so
/// that many connections are open at once).
async fn numbered(hold: usize) -> Upstream {
    let barrier = Arc::new(Barrier::new(hold));
    Upstream::start(move |seen: Seen| {
        let barrier = Arc::clone(&barrier);
        async move {
            if seen.is("get /held ") {
                barrier.wait().await;
            }
            Reply::Keep(ok_conn(&seen))
        }
    })
    .await
}

fn answer(conn: usize) -> (StatusCode, String) {
    (StatusCode::OK, format!("conn {conn}"))
}

/// Connections kept between requests: in lanes and in the shared stack.
fn kept(pool: &Pool) -> usize {
    pool.pinned.load(Ordering::SeqCst) + pool.idle_count()
}

/// Kept connections hyper has not seen closed.
fn kept_open(pool: &Pool, lane: &Lane) -> usize {
    let pinned = lane.pinned.lock().unwrap();
    let idle = pool.idle.lock().unwrap();
    let pinned = pinned.sender.iter().filter(|s| !s.is_closed()).count();
    pinned + idle.iter().filter(|p| !p.sender.is_closed()).count()
}

// ---------------------------------------------------------------------------------------
// Tests

/// Catches: a connection not coming back when its response body ends (two
/// connections), or a reused connection mixing up requests and answers.
#[tokio::test]
async fn sequential_requests_share_one_connection() {
    let upstream = Upstream::start(|seen: Seen| async move {
        let line = seen.head.lines().next().unwrap_or_default().to_owned();
        let body = String::from_utf8(seen.body).unwrap();
        Reply::Keep(ok(&format!("{line} got [{body}]")))
    })
    .await;
    let pool = roomy(&upstream);
    let lane = pool.lane();
    let first = send(&lane, request(Method::POST, "/one", "hello").await).await;
    assert_eq!(first.0, StatusCode::OK);
    assert_eq!(first.1, "post /one http/1.1 got [hello]");
    assert_eq!(kept(&pool), 1);
    // Back the moment the body ends, while the finished body is still held (as hyper's
    // server may hold it), so the client's next request finds it.
    let req = request(Method::GET, "/two", "").await;
    let mut body = within(lane.request(req), "head").await.unwrap().into_body();
    let mut got = Vec::new();
    while let Some(frame) = within(body.frame(), "a frame").await {
        got.extend_from_slice(&frame.unwrap().into_data().unwrap());
    }
    assert_eq!(
        kept(&pool),
        1,
        "the connection is back before the body is dropped"
    );
    assert_eq!(got, b"get /two http/1.1 got []");
    assert_eq!(upstream.accepted(), 1);
}

/// Catches: returning connections only when a body is polled to its end (a 204 or HEAD
/// answer is dropped without being polled), which would open a connection per request.
#[tokio::test]
async fn body_less_answers_keep_their_connection() {
    let upstream = Upstream::start(|seen: Seen| async move {
        if seen.is("head ") {
            Reply::Keep(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n".to_vec())
        } else if seen.is("get /empty ") {
            Reply::Keep(b"HTTP/1.1 204 No Content\r\n\r\n".to_vec())
        } else {
            Reply::Keep(ok_conn(&seen))
        }
    })
    .await;
    let pool = roomy(&upstream);
    let lane = pool.lane();
    let req = request(Method::GET, "/empty", "").await;
    let resp = within(lane.request(req), "204").await.unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    drop(resp);
    assert_eq!(kept(&pool), 1, "a dropped 204 gives its connection back");
    let req = request(Method::HEAD, "/", "").await;
    let resp = within(lane.request(req), "HEAD").await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()[CONTENT_LENGTH], "5");
    drop(resp);
    assert_eq!(kept(&pool), 1, "a dropped HEAD answer gives it back");
    assert_eq!(get(&lane, "/").await, answer(1));
    assert_eq!(upstream.accepted(), 1);
}

/// Catches: lanes sharing one stack (a client connection's requests hopping between
/// upstream connections driven from other tasks), the cost the lanes exist to avoid.
#[tokio::test]
async fn each_lane_keeps_reusing_its_own_connection() {
    let upstream = numbered(2).await;
    let pool = roomy(&upstream);
    let (a, b) = (pool.lane(), pool.lane());
    let (first_a, first_b) = tokio::join!(get(&a, "/held"), get(&b, "/held"));
    assert_ne!(first_a, first_b);
    let lanes = [(a, first_a), (b, first_b)];
    for i in [0, 0, 1, 1, 0, 1] {
        let (lane, first) = &lanes[i];
        assert_eq!(&get(lane, "/").await, first);
    }
    assert_eq!(upstream.accepted(), 2);
}

/// Catches: a lane's connection lost (or the lane count leaking) when its client
/// connection closes, instead of serving the other lanes.
#[tokio::test]
async fn a_closed_lanes_connection_serves_the_other_lanes() {
    let upstream = numbered(1).await;
    let pool = roomy(&upstream);
    let a = pool.lane();
    assert_eq!(get(&a, "/").await, answer(1));
    drop(a);
    assert_eq!(
        (pool.pinned.load(Ordering::SeqCst), pool.idle_count()),
        (0, 1)
    );
    assert_eq!(get(&pool.lane(), "/").await, answer(1));
    assert_eq!(upstream.accepted(), 1);
}

/// Catches: handing out a kept connection the upstream has closed and surfacing the
/// failure instead of moving on to a new connection.
#[tokio::test]
async fn a_connection_closed_by_the_upstream_while_idle_is_replaced() {
    let upstream = numbered(1).await;
    let pool = roomy(&upstream);
    let lane = pool.lane();
    assert_eq!(get(&lane, "/").await, answer(1));
    upstream.close_idle();
    // Wait for hyper to have seen the close: a request written onto a connection in the
    // instant before its EOF arrives fails in any client, which is not what this checks.
    eventually("hyper notices the close", || kept_open(&pool, &lane) == 0).await;
    assert_eq!(kept(&pool), 1, "the dead connection is still kept");
    assert_eq!(get(&lane, "/").await, answer(2));
    // The metrics count both connections opened, and only the live one as open.
    let text = pool.metrics.render();
    assert!(
        text.contains("pipegate_upstream_connections_total 2\n"),
        "{text}"
    );
    eventually("the dead connection's task to end", || {
        pool.metrics
            .render()
            .contains("pipegate_upstream_connections_open 1\n")
    })
    .await;
}

/// Catches: giving up (or erroring) after the first dead kept connection instead of
/// skipping every one of them: the lane's own and all of the shared stack's.
#[tokio::test]
async fn many_connections_closed_by_the_upstream_are_all_skipped() {
    let upstream = numbered(8).await;
    let pool = roomy(&upstream);
    // One lane, as an HTTP/2 client connection's concurrent streams share one.
    let lane = pool.lane();
    let held = join_all((0..8).map(|_| get(&lane, "/held"))).await;
    assert!(held.iter().all(|r| r.0 == StatusCode::OK), "{held:?}");
    assert_eq!(upstream.accepted(), 8);
    upstream.close_idle();
    eventually("hyper notices all 8 closes", || {
        kept_open(&pool, &lane) == 0
    })
    .await;
    assert_eq!(kept(&pool), 8, "the dead connections are still kept");
    assert_eq!(get(&lane, "/").await, answer(9));
}

/// Catches: expired connections closed only when a later request notices them (no
/// sweeper): an idle connection would hold the upstream's socket (or pipe instance)
/// forever.
#[tokio::test]
async fn idle_connections_are_closed_after_the_idle_timeout_without_a_request() {
    let upstream = numbered(1).await;
    let pool = pool(&upstream, 4, Duration::from_millis(100));
    let lane = pool.lane();
    assert_eq!(get(&lane, "/").await, answer(1));
    drop(lane); // its client connection closed: the connection goes to the shared stack
    eventually("the idle connection is swept", || pool.idle_count() == 0).await;
    eventually("the upstream reads EOF", || upstream.closed_by_pool() == 1).await;
    assert_eq!(upstream.accepted(), 1);
}

/// Catches: no cap on kept connections, or a cap that forgets connections without
/// closing them.
#[tokio::test]
async fn at_most_max_idle_connections_are_kept() {
    let upstream = numbered(5).await;
    // max_idle 2: one in a lane, one on the stack.
    let pool = pool(&upstream, 2, Duration::from_secs(600));
    // Five client connections, each with its lane.
    let lanes: Vec<_> = (0..5).map(|_| pool.lane()).collect();
    let answers = join_all(lanes.iter().map(|lane| get(lane, "/held"))).await;
    assert!(answers.iter().all(|r| r.0 == StatusCode::OK), "{answers:?}");
    assert_eq!(upstream.accepted(), 5);
    assert_eq!(
        (pool.pinned.load(Ordering::SeqCst), pool.idle_count()),
        (1, 1)
    );
    eventually("3 connections closed", || upstream.closed_by_pool() == 3).await;
    drop(lanes); // the client connections close: the lane's goes to the full stack
    assert_eq!(
        (pool.pinned.load(Ordering::SeqCst), pool.idle_count()),
        (0, 1)
    );
    eventually("4 connections closed", || upstream.closed_by_pool() == 4).await;
}

/// Catches: lanes of idle kept-alive clients taking every idle slot, so that every
/// other request dials a new connection (and closes it after its answer).
#[tokio::test]
async fn lanes_of_idle_clients_leave_the_stack_to_the_others() {
    let upstream = numbered(1).await;
    let pool = pool(&upstream, 4, Duration::from_secs(600));
    // As many clients as max_idle stay connected and idle after one request each.
    let idle: Vec<_> = (0..4).map(|_| pool.lane()).collect();
    let _ = join_all(idle.iter().map(|lane| get(lane, "/"))).await;
    assert_eq!(upstream.accepted(), 4);
    assert_eq!(
        (pool.pinned.load(Ordering::SeqCst), pool.idle_count()),
        (2, 2)
    );
    // Short-lived clients, one after the other, reuse what the stack holds.
    for _ in 0..5 {
        let lane = pool.lane();
        assert_eq!(get(&lane, "/").await.0, StatusCode::OK);
    }
    assert_eq!(upstream.accepted(), 4);
    assert_eq!(upstream.closed_by_pool(), 0);
}

/// Catches: keeping a connection whose response body was dropped half-read (its next
/// request would read the rest of the old body as its answer).
#[tokio::test]
async fn a_body_dropped_half_read_does_not_return_its_connection() {
    let upstream = Upstream::start(|seen: Seen| async move {
        if seen.is("get /partial ") {
            Reply::Keep(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n0123456789".to_vec())
        } else {
            Reply::Keep(ok_conn(&seen))
        }
    })
    .await;
    let pool = roomy(&upstream);
    let lane = pool.lane();
    let req = request(Method::GET, "/partial", "").await;
    let mut body = within(lane.request(req), "head").await.unwrap().into_body();
    let frame = within(body.frame(), "the first bytes")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(frame.into_data().unwrap(), "0123456789");
    drop(body);
    assert_eq!(kept(&pool), 0);
    eventually("the half-read connection closes", || {
        upstream.closed_by_pool() == 1
    })
    .await;
    assert_eq!(get(&lane, "/").await, answer(2));
}

/// Catches: an upgraded connection kept for reuse (the next request would be written
/// into the tunnel), or the upgrade not reaching the caller.
#[tokio::test]
async fn a_101_answer_becomes_a_tunnel_and_is_never_kept() {
    let upstream = Upstream::start(|seen: Seen| async move {
        if seen.head.contains("\r\nupgrade: echo\r\n") {
            let head =
                "HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: echo\r\n\r\n";
            Reply::Echo(head.as_bytes().to_vec())
        } else {
            Reply::Keep(ok_conn(&seen))
        }
    })
    .await;
    let pool = roomy(&upstream);
    let lane = pool.lane();
    let mut req = request(Method::GET, "/tunnel", "").await;
    let headers = req.headers_mut();
    headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(UPGRADE, HeaderValue::from_static("echo"));
    let mut resp = within(lane.request(req), "101").await.unwrap();
    assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
    resp.body_mut().detach();
    let upgrade = hyper::upgrade::on(&mut resp);
    drop(resp);
    assert_eq!(kept(&pool), 0);
    let mut tunnel = TokioIo::new(within(upgrade, "the upgrade").await.unwrap());
    let mut echoed = [0u8; 4];
    tunnel.write_all(b"ping").await.unwrap();
    within(tunnel.read_exact(&mut echoed), "the echo")
        .await
        .unwrap();
    assert_eq!(&echoed, b"ping");
    assert_eq!(kept(&pool), 0);
    assert_eq!(get(&lane, "/").await, answer(2));
    // The tunnel is untouched by the request that followed it.
    tunnel.write_all(b"pong").await.unwrap();
    within(tunnel.read_exact(&mut echoed), "the second echo")
        .await
        .unwrap();
    assert_eq!(&echoed, b"pong");
}

/// Catches: a dial failure reported as an HTTP error, or `detail()` losing pipegate's
/// own message (what a 502 body shows) for the OS error underneath it.
#[tokio::test]
async fn a_dial_error_carries_the_transport_message() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = Endpoint::loopback(listener.local_addr().unwrap().port());
    // Nothing listens there now; a refused loopback connect takes about 2 s on Windows.
    drop(listener);
    let options = ConnectOptions::new().timeout(Duration::from_secs(30));
    let metrics = Arc::new(Metrics::default());
    let pool = Pool::new(
        endpoint.clone(),
        options,
        None,
        4,
        Duration::from_secs(600),
        metrics,
    );
    let req = request(Method::GET, "/", "").await;
    let err = within(pool.lane().request(req), "dial").await.unwrap_err();
    assert!(matches!(err, UpstreamError::Connect(_)), "{err:?}");
    let detail = err.detail();
    assert!(detail.contains("nothing is listening on"), "{detail}");
    assert!(detail.contains(&endpoint.to_string()), "{detail}");
    assert_eq!(kept(&pool), 0);
}

/// Catches: a request waiting for a stacked connection that is still sending another
/// client's upload (the upstream answered before reading it), i.e. one client's slow
/// upload stalling an unrelated client until the upstream timeout.
#[tokio::test]
async fn a_stacked_connection_still_uploading_is_not_waited_for() {
    // An upstream that answers each request as soon as its head arrives, then reads
    // whatever body it declared.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = Endpoint::loopback(listener.local_addr().unwrap().port());
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&accepted);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    buf.clear(); // the rest of the body is read as the next "head"
                    let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
                    if stream.write_all(answer).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    // A client body that stops half-way until released: 5 of its 10 bytes.
    let source = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let source_port = source.local_addr().unwrap().port();
    let (release, released) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let (mut stream, _) = source.accept().await.unwrap();
        let mut head = [0u8; 1024];
        let _ = stream.read(&mut head).await;
        let _ = stream
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n01234")
            .await;
        let _ = released.await;
        let _ = stream.write_all(b"56789").await;
    });
    let stream = TcpStream::connect(("127.0.0.1", source_port))
        .await
        .unwrap();
    let (mut sender, conn) = http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    let get_source = Request::get("/").body(http_body_util::Empty::<Bytes>::new());
    let upload = within(sender.send_request(get_source.unwrap()), "the body source")
        .await
        .unwrap()
        .into_body();
    let exchange = Exchange::new(tracing::Span::none(), Arc::new(Metrics::default()));
    let upload = Request::post("/upload")
        .header(HOST, "upstream")
        .header(CONTENT_LENGTH, 10)
        .body(Counted::new(upload, exchange, Flow::ClientToUpstream))
        .unwrap();

    let pool = pool_at(endpoint, 4);
    let uploader = pool.lane();
    let resp = within(uploader.request(upload), "the early answer")
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    drop(resp); // an empty body, ended: the connection is given back mid-upload
    drop(uploader); // its client connection closes: the connection goes to the stack
    assert_eq!(pool.idle_count(), 1);

    // Another client is served at once, on a new connection.
    let (status, _) = get(&pool.lane(), "/").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
    let _ = release.send(());
}
