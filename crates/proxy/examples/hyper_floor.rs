//! The least a hyper/tokio HTTP proxy can do per request, for `bench/http_proxy.sh`.
//!
//! ```text
//! cargo run --release -p pipegate-proxy --example hyper_floor -- 127.0.0.1:0 unix:///tmp/up.sock
//! ```
//!
//! Each accepted TCP connection gets one upstream HTTP/1.1 connection of its own (dialled
//! with pipegate's transport, so any endpoint works), and every request is sent on it
//! unchanged: no pool, no header rewriting, no checks, timeouts, logs or metrics. It is
//! not a proxy anyone should run; it is the floor a proxy built on hyper and tokio's
//! default runtime stands on, so the benchmark can show how much of pipegate's cost per
//! request is its own and how much is the stack's.

use std::error::Error;
use std::io;
use std::sync::{Arc, Mutex};

use hyper::body::Incoming;
use hyper::client::conn::http1 as client;
use hyper::server::conn::http1 as server;
use hyper::service::service_fn;
use hyper::Request;
use hyper_util::rt::TokioIo;
use pipegate_transport::{connect, ConnectOptions, Endpoint};
use tokio::net::TcpListener;

type BoxError = Box<dyn Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(upstream)) = (args.next(), args.next()) else {
        return Err("usage: hyper_floor LISTEN_ADDR UPSTREAM_ENDPOINT".into());
    };
    let upstream = Arc::new(Endpoint::parse(&upstream)?);
    let listener = TcpListener::bind(&listen).await?;
    // The benchmark reads the port from this line.
    println!("hyper_floor: listening on {}", listener.local_addr()?);
    loop {
        let (tcp, _) = listener.accept().await?;
        tcp.set_nodelay(true)?;
        let upstream = Arc::clone(&upstream);
        tokio::spawn(async move {
            if let Err(e) = serve(tcp, &upstream).await {
                eprintln!("hyper_floor: connection: {e}");
            }
        });
    }
}

async fn serve(tcp: tokio::net::TcpStream, upstream: &Endpoint) -> Result<(), BoxError> {
    let stream = connect(upstream, &ConnectOptions::default()).await?;
    let (sender, conn) = client::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let sender = Arc::new(Mutex::new(Some(sender)));
    let service = service_fn(move |req: Request<Incoming>| {
        let sender = Arc::clone(&sender);
        async move {
            // HTTP/1 serves one request at a time per connection, so the sender is
            // always here when a request arrives.
            let taken = sender.lock().ok().and_then(|mut slot| slot.take());
            let Some(mut upstream) = taken else {
                return Err(io::Error::other("no upstream connection"));
            };
            upstream.ready().await.map_err(io::Error::other)?;
            let response = upstream.send_request(req);
            if let Ok(mut slot) = sender.lock() {
                *slot = Some(upstream);
            }
            response.await.map_err(io::Error::other)
        }
    });
    server::Builder::new()
        .serve_connection(TokioIo::new(tcp), service)
        .await?;
    Ok(())
}
