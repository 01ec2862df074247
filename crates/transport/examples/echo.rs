//! An echo server on any endpoint: `cargo run --example echo -- unix:///tmp/echo/echo.sock`.

use pipegate_transport::{Endpoint, ListenOptions, Listener};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let text = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:0".to_owned());
    let endpoint = Endpoint::parse(&text)?;
    let mut listener = Listener::bind(&endpoint, &ListenOptions::new()).await?;
    println!("listening on {}", listener.local_endpoint());
    loop {
        let mut stream = listener.accept().await?;
        tokio::spawn(async move {
            let (mut reader, mut writer) = tokio::io::split(&mut stream);
            let _ = tokio::io::copy(&mut reader, &mut writer).await;
        });
    }
}
