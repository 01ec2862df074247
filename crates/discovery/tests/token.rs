//! Bearer tokens: the `<name>.token` file next to the record, its lifetime, and health
//! checks that present it to TCP listeners (and only to them).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use pipegate_discovery::{
    check_health, check_health_with_token, inspect, new_token, ClaimOptions, ErrorKind,
    InstanceMode, Record, Registry, State,
};
use pipegate_transport::{Endpoint, ListenOptions, Listener};
use support::{native_endpoint, temp_dir, within, STEP};

/// A health endpoint that, like `pipegate serve` on TCP, answers only requests bearing
/// `token`; it records every `Authorization` it was sent.
struct Guarded {
    endpoint: Endpoint,
    seen: Arc<Mutex<Vec<Option<String>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Guarded {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn guarded(endpoint: &Endpoint, nonce: &str, token: &str) -> Guarded {
    let mut listener = Listener::bind(endpoint, &ListenOptions::new())
        .await
        .unwrap();
    let endpoint = listener.local_endpoint().clone();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (nonce, token, record) = (nonce.to_owned(), token.to_owned(), Arc::clone(&seen));
    let task = tokio::spawn(async move {
        while let Ok(stream) = listener.accept().await {
            let (nonce, token, record) = (nonce.clone(), token.clone(), Arc::clone(&record));
            tokio::spawn(async move {
                let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let auth = req
                        .headers()
                        .get("authorization")
                        .map(|v| v.to_str().unwrap().to_owned());
                    record.lock().unwrap().push(auth.clone());
                    let ok = auth.as_deref() == Some(&format!("Bearer {token}"));
                    let mut resp = http::Response::new(Empty::<Bytes>::new());
                    if ok {
                        *resp.status_mut() = http::StatusCode::NO_CONTENT;
                        resp.headers_mut()
                            .insert("x-pipegate-nonce", nonce.parse().unwrap());
                    } else {
                        *resp.status_mut() = http::StatusCode::UNAUTHORIZED;
                    }
                    async move { Ok::<_, Infallible>(resp) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Guarded {
        endpoint,
        seen,
        task,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_file_lives_and_dies_with_the_record() {
    let state = temp_dir();
    let registry = Registry::new(state.path().join("pipegate"));
    let token = new_token().unwrap();
    let claim = registry
        .claim("tok", &ClaimOptions::new())
        .await
        .unwrap()
        .with_token(Some(token.clone()));
    let registration = claim
        .register(
            vec![Endpoint::parse("127.0.0.1:4000").unwrap()],
            InstanceMode::Agent,
            None,
        )
        .unwrap();
    let path = registry.token_path("tok").unwrap();
    assert_eq!(path, registry.dir().join("tok.token"));
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        format!("{token}\n")
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "the token file is private");
    }
    // Not in the record's JSON, nor in any Debug output; in records read back.
    let json = std::fs::read_to_string(registry.record_path("tok").unwrap()).unwrap();
    assert!(!json.contains(&token), "{json}");
    let read = registry.read("tok").unwrap().unwrap();
    assert_eq!(read.token(), Some(token.as_str()));
    assert!(!format!("{read:?}").contains(&token));
    let listed = registry.list().unwrap();
    assert_eq!(listed.len(), 1, "the token file is not listed as a record");
    assert_eq!(
        listed[0].record.as_ref().unwrap().token(),
        Some(token.as_str())
    );

    assert!(registration.deregister().unwrap());
    assert!(!path.exists(), "removed with the record");

    // An instance without a token removes a stale token file of an earlier one.
    std::fs::write(&path, "stale\n").unwrap();
    let registration = registry
        .claim("tok", &ClaimOptions::new())
        .await
        .unwrap()
        .register(
            vec![Endpoint::parse("127.0.0.1:4000").unwrap()],
            InstanceMode::Agent,
            None,
        )
        .unwrap();
    assert!(!path.exists());
    assert_eq!(registry.read("tok").unwrap().unwrap().token(), None);
    drop(registration);
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_symlinked_token_file_is_refused() {
    let state = temp_dir();
    let registry = Registry::new(state.path().join("pipegate"));
    let registration = registry
        .claim("ln", &ClaimOptions::new())
        .await
        .unwrap()
        .register(
            vec![Endpoint::parse("127.0.0.1:4000").unwrap()],
            InstanceMode::Agent,
            None,
        )
        .unwrap();
    let target = state.path().join("elsewhere");
    std::fs::write(&target, "planted\n").unwrap();
    std::os::unix::fs::symlink(&target, registry.token_path("ln").unwrap()).unwrap();
    let err = registry.read("ln").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Symlink, "{err}");
    drop(registration);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_present_the_token_on_tcp_only() {
    let dir = temp_dir();
    let nonce = "0123456789abcdef0123456789abcdef";
    let token = new_token().unwrap();
    let tcp = guarded(&Endpoint::parse("127.0.0.1:0").unwrap(), nonce, &token).await;
    let t = Duration::from_secs(5);

    let err = within(STEP, check_health(&tcp.endpoint, nonce, t), "health")
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BadResponse, "{err}");
    within(
        STEP,
        check_health_with_token(&tcp.endpoint, nonce, Some(&token), t),
        "health",
    )
    .await
    .unwrap();

    // inspect() uses the record's token: running with it, unhealthy (pid alive) without.
    let record = Record::new(
        vec![tcp.endpoint.clone()],
        InstanceMode::Agent,
        None,
        nonce.into(),
    );
    let status = within(
        STEP,
        inspect(&record.clone().with_token(Some(token.clone())), t),
        "inspect",
    )
    .await;
    assert_eq!(status.state, State::Running, "{:?}", status.reason);
    let status = within(STEP, inspect(&record, t), "inspect").await;
    assert_eq!(status.state, State::Unhealthy);

    // A local endpoint never gets the token: the OS vouches for who is on the other end.
    let local = guarded(&native_endpoint(&dir, "tok"), nonce, &token).await;
    let _ = within(
        STEP,
        check_health_with_token(&local.endpoint, nonce, Some(&token), t),
        "health",
    )
    .await;
    assert_eq!(*local.seen.lock().unwrap(), [None]);
    assert_eq!(tcp.seen.lock().unwrap().len(), 4);
}
