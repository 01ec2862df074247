//! `pipegate request [EP] PATH`: one HTTP request over any endpoint, curl-style. The
//! body goes to stdout as it arrives; `-i` prints the head first; `-f` turns a status
//! outside 2xx into exit code 22.

use std::process::ExitCode;

use anyhow::Context as _;
use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, HOST};
use http::Method;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use pipegate_transport::hyper::{endpoint_uri, host_header, HyperConnector};
use pipegate_transport::{ConnectOptions, Endpoint};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::instance;
use crate::cli::RequestArgs;

/// Exit code for a status outside 2xx with `-f`, as curl's `CURLE_HTTP_RETURNED_ERROR`.
const EXIT_HTTP_ERROR: u8 = 22;

pub(crate) async fn run(args: RequestArgs) -> anyhow::Result<ExitCode> {
    let (endpoint, path, token) = match args.target.as_slice() {
        [path] => {
            let (endpoint, token) = instance::running_endpoint(&args.name).await?;
            let token = match &args.token_file {
                Some(file) => instance::token_for(&endpoint, Some(file))?,
                None => token,
            };
            (endpoint, path.clone(), token)
        }
        [ep, path] => {
            let endpoint =
                Endpoint::parse(ep).with_context(|| format!("invalid endpoint {ep:?}"))?;
            let token = instance::token_for(&endpoint, args.token_file.as_deref())?;
            (endpoint, path.clone(), token)
        }
        _ => anyhow::bail!("usage: pipegate request [OPTIONS] [EP] PATH"),
    };
    if !path.starts_with('/') {
        anyhow::bail!("the request path must start with '/', as in /v1/info (got {path:?})");
    }
    let body = match &args.data {
        None => Bytes::new(),
        Some(data) => read_data(data).await?,
    };
    let method = match &args.method {
        Some(m) => {
            Method::from_bytes(m.as_bytes()).with_context(|| format!("invalid method {m:?}"))?
        }
        None if args.data.is_some() => Method::POST,
        None => Method::GET,
    };
    let uri =
        endpoint_uri(&endpoint, &path).with_context(|| format!("invalid request path {path:?}"))?;
    let mut request = http::Request::builder()
        .method(method)
        .uri(uri)
        .body(Full::new(body))
        .context("cannot build the request")?;
    let headers = request.headers_mut();
    headers.insert(HOST, host_header(&endpoint));
    headers.insert(
        http::header::USER_AGENT,
        HeaderValue::from_static(concat!("pipegate/", env!("CARGO_PKG_VERSION"))),
    );
    if let Some(token) = &token {
        headers.insert(http::header::AUTHORIZATION, instance::bearer(token)?);
    }
    // -H replaces a default (Host, User-Agent, the token) of the same name and adds to
    // other -H lines.
    let extra = args
        .headers
        .iter()
        .map(|line| parse_header(line))
        .collect::<anyhow::Result<Vec<_>>>()?;
    for (name, _) in &extra {
        headers.remove(name);
    }
    for (name, value) in extra {
        headers.append(name, value);
    }

    let exchange = send(request, &endpoint, &args);
    match args.max_time {
        Some(limit) => tokio::time::timeout(limit, exchange).await.map_err(|_| {
            anyhow::anyhow!("the request to {endpoint} took longer than {limit:?} (--max-time)")
        })?,
        None => exchange.await,
    }
}

async fn send(
    request: http::Request<Full<Bytes>>,
    endpoint: &Endpoint,
    args: &RequestArgs,
) -> anyhow::Result<ExitCode> {
    let connector =
        HyperConnector::new().with_options(ConnectOptions::new().timeout(args.connect_timeout));
    let client = Client::builder(TokioExecutor::new()).build::<_, Full<Bytes>>(connector);
    let response = client
        .request(request)
        .await
        .with_context(|| format!("request to {endpoint} failed"))?;
    let status = response.status();
    if args.fail && !status.is_success() {
        eprintln!(
            "pipegate: request: {endpoint} answered {status}{}",
            status
                .canonical_reason()
                .map(|_| "")
                .unwrap_or(" (non-standard status)")
        );
        return Ok(ExitCode::from(EXIT_HTTP_ERROR));
    }
    let mut stdout = tokio::io::stdout();
    let result = async {
        if args.include {
            let mut head = format!("{:?} {status}\r\n", response.version());
            for (name, value) in response.headers() {
                head.push_str(name.as_str());
                head.push_str(": ");
                head.push_str(&String::from_utf8_lossy(value.as_bytes()));
                head.push_str("\r\n");
            }
            head.push_str("\r\n");
            stdout.write_all(head.as_bytes()).await?;
        }
        let mut body = response.into_body();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(std::io::Error::other)?;
            if let Some(data) = frame.data_ref() {
                stdout.write_all(data).await?;
            }
        }
        stdout.flush().await
    }
    .await;
    match result {
        Ok(()) => Ok(ExitCode::SUCCESS),
        // `pipegate request … | head`: not an error.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(ExitCode::SUCCESS),
        Err(e) => Err(e).with_context(|| format!("reading the response from {endpoint} failed")),
    }
}

/// `-d DATA`, `-d @FILE`, `-d @-` (stdin).
async fn read_data(data: &str) -> anyhow::Result<Bytes> {
    match data.strip_prefix('@') {
        Some("-") => {
            let mut buf = Vec::new();
            tokio::io::stdin()
                .read_to_end(&mut buf)
                .await
                .context("cannot read the request body from stdin")?;
            Ok(buf.into())
        }
        Some(file) => tokio::fs::read(file)
            .await
            .map(Bytes::from)
            .with_context(|| format!("cannot read the request body from {file:?}")),
        None => Ok(Bytes::copy_from_slice(data.as_bytes())),
    }
}

/// `Name: value` (spaces around the value are trimmed).
fn parse_header(line: &str) -> anyhow::Result<(HeaderName, HeaderValue)> {
    let (name, value) = line
        .split_once(':')
        .with_context(|| format!("invalid header {line:?}: use 'Name: value'"))?;
    let name = HeaderName::from_bytes(name.trim().as_bytes())
        .with_context(|| format!("invalid header name in {line:?}"))?;
    let value = HeaderValue::from_str(value.trim())
        .with_context(|| format!("invalid header value in {line:?}"))?;
    Ok((name, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers() {
        let (n, v) = parse_header("Content-Type:  application/json ").unwrap();
        assert_eq!(n, http::header::CONTENT_TYPE);
        assert_eq!(v, "application/json");
        assert!(parse_header("no colon").is_err());
        assert!(parse_header("bad name: x").is_err());
        assert!(parse_header("X-Empty:").is_ok());
    }
}
