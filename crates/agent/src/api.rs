//! The route table and the request bodies' validation.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body::Body;
use http_body_util::{BodyExt, Limited};
use pipegate_transport::Mode;
use serde::de::DeserializeOwned;

use crate::error::{json, ApiError};
use crate::protocol::{CreateSession, Created, SignalRequest, TerminalSize};
use crate::pty::{self, ControlError, Spec};
use crate::{ws, Agent};

/// Routes one request.
pub(crate) async fn route<B>(agent: &Agent, req: Request<B>, transport: Mode) -> Response<Bytes>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    match dispatch(agent, req, transport).await {
        Ok(resp) => resp,
        Err(e) => e.into_response(),
    }
}

async fn dispatch<B>(
    agent: &Agent,
    req: Request<B>,
    transport: Mode,
) -> Result<Response<Bytes>, ApiError>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let path = req.uri().path().to_owned();
    let segments: Vec<&str> = path
        .strip_prefix("/v1/")
        .map(|rest| rest.split('/').collect())
        .unwrap_or_default();
    let method = req.method().clone();
    let not_allowed = |allow: &'static str| ApiError::Method {
        allow,
        path: path.clone(),
    };
    match segments.as_slice() {
        ["info"] => match method {
            Method::GET => Ok(json(StatusCode::OK, &agent.info(transport))),
            _ => Err(not_allowed("GET")),
        },
        ["sessions"] => match method {
            Method::POST => create(agent, req).await,
            Method::GET => Ok(json(
                StatusCode::OK,
                &serde_json::json!({ "sessions": agent.inner.sessions.list() }),
            )),
            _ => Err(not_allowed("GET, POST")),
        },
        ["sessions", id] => {
            let session = agent.inner.sessions.get(id)?;
            match method {
                Method::GET => Ok(json(StatusCode::OK, &session.info())),
                Method::DELETE => {
                    agent.inner.sessions.delete(id).await?;
                    Ok(empty(StatusCode::NO_CONTENT))
                }
                _ => Err(not_allowed("GET, DELETE")),
            }
        }
        ["sessions", id, "attach"] => {
            let session = agent.inner.sessions.get(id)?;
            match method {
                Method::GET => ws::attach(session, req),
                _ => Err(not_allowed("GET")),
            }
        }
        ["sessions", id, "resize"] => {
            let session = agent.inner.sessions.get(id)?;
            if method != Method::POST {
                return Err(not_allowed("POST"));
            }
            let size: TerminalSize = read_json(agent, req).await?;
            check_size("", &size)?;
            session.resize(size).map_err(control_error)?;
            Ok(empty(StatusCode::NO_CONTENT))
        }
        ["sessions", id, "signal"] => {
            let session = agent.inner.sessions.get(id)?;
            if method != Method::POST {
                return Err(not_allowed("POST"));
            }
            let body: SignalRequest = read_json(agent, req).await?;
            session.signal(body.signal).map_err(control_error)?;
            Ok(empty(StatusCode::NO_CONTENT))
        }
        _ => Err(ApiError::NoRoute),
    }
}

fn empty(status: StatusCode) -> Response<Bytes> {
    let mut resp = Response::new(Bytes::new());
    *resp.status_mut() = status;
    resp
}

fn control_error(e: ControlError) -> ApiError {
    match e {
        ControlError::NoTerminal | ControlError::Exited => ApiError::Conflict(e.to_string()),
        ControlError::Unsupported(_) => ApiError::Unsupported(e.to_string()),
        ControlError::Io(source) => ApiError::internal("cannot control the session", source),
    }
}

/// Reads a JSON body of at most `max_body` bytes; errors name the field at fault.
async fn read_json<T, B>(agent: &Agent, req: Request<B>) -> Result<T, ApiError>
where
    T: DeserializeOwned,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let max = agent.inner.limits.max_body;
    let body = match Limited::new(req.into_body(), max).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return Err(ApiError::TooLarge(max))
        }
        Err(e) => return Err(ApiError::BadRequest(format!("cannot read the body: {e}"))),
    };
    parse_json(&body)
}

/// Parses a JSON object body; errors name the field at fault.
pub(crate) fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    // Syntax first, so type errors can name their field.
    let json: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::invalid("body", format!("malformed JSON: {e}")))?;
    // serde would also read a struct from an array; only objects are accepted.
    if !json.is_object() {
        return Err(ApiError::invalid("body", "must be a JSON object"));
    }
    let value = serde_path_to_error::deserialize(json).map_err(|e| {
        let path = e.path().to_string();
        // "." is the body itself; "" an unknown key spelled "" at the top level.
        let field = if path == "." || path.is_empty() {
            "body".to_owned()
        } else {
            path
        };
        ApiError::invalid(field, e.into_inner().to_string())
    })?;
    Ok(value)
}

pub(crate) fn check_size(prefix: &str, size: &TerminalSize) -> Result<(), ApiError> {
    match size.invalid_field() {
        Some(field) => Err(ApiError::invalid(
            format!("{prefix}{field}"),
            "must be between 1 and 65535",
        )),
        None => Ok(()),
    }
}

async fn create<B>(agent: &Agent, req: Request<B>) -> Result<Response<Bytes>, ApiError>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let body: CreateSession = read_json(agent, req).await?;
    let (spec, argv) = spec(body)?;
    let session = agent.inner.sessions.create(spec, argv)?;
    let mut resp = json(
        StatusCode::CREATED,
        &Created {
            id: session.id.clone(),
            pid: session.pid,
        },
    );
    if let Ok(location) = HeaderValue::from_str(&format!("/v1/sessions/{}", session.id)) {
        resp.headers_mut().insert(header::LOCATION, location);
    }
    Ok(resp)
}

/// Validates a create body and applies the environment and `PATH` policy documented on
/// [`CreateSession`].
pub(crate) fn spec(body: CreateSession) -> Result<(Spec, Vec<String>), ApiError> {
    if let Some(size) = &body.size {
        check_size("size.", size)?;
    }
    for (key, value) in &body.env {
        if key.is_empty() || key.contains(['=', '\0']) {
            return Err(ApiError::invalid(
                format!("env.{key}"),
                "names must be non-empty, without '=' or NUL",
            ));
        }
        if value.contains('\0') {
            return Err(ApiError::invalid(
                format!("env.{key}"),
                "values cannot contain NUL",
            ));
        }
    }
    let (program, arg0, args, argv) = match body.argv {
        Some(argv) => {
            let Some(first) = argv.first() else {
                return Err(ApiError::invalid(
                    "argv",
                    "must not be empty (omit it for the login shell)",
                ));
            };
            if let Some(i) = argv.iter().position(|a| a.contains('\0')) {
                return Err(ApiError::invalid(format!("argv[{i}]"), "contains NUL"));
            }
            if first.is_empty() {
                return Err(ApiError::invalid("argv[0]", "must not be empty"));
            }
            let program = resolve(first)?;
            (program, first.clone(), argv[1..].to_vec(), argv)
        }
        None => {
            let (shell, arg0) = pty::login_shell();
            let argv = vec![shell.display().to_string()];
            (shell, arg0, Vec::new(), argv)
        }
    };
    let cwd = match &body.cwd {
        Some(cwd) => {
            let path = PathBuf::from(cwd);
            if !path.is_absolute() {
                return Err(ApiError::invalid("cwd", "must be an absolute path"));
            }
            if !path.is_dir() {
                return Err(ApiError::invalid(
                    "cwd",
                    format!("{cwd}: no such directory"),
                ));
            }
            path
        }
        None => pty::home_dir().unwrap_or_else(|| PathBuf::from("/")),
    };
    let tty = body.tty.then(|| body.size.unwrap_or(TerminalSize::DEFAULT));
    let mut env: Vec<(OsString, OsString)> = std::env::vars_os()
        .filter(|(k, _)| !body.env.contains_key(&*k.to_string_lossy()))
        .collect();
    if tty.is_some() && !body.env.contains_key("TERM") && std::env::var_os("TERM").is_none() {
        env.push(("TERM".into(), "xterm-256color".into()));
    }
    env.extend(body.env.into_iter().map(|(k, v)| (k.into(), v.into())));
    let spec = Spec {
        program,
        arg0,
        args,
        env,
        cwd,
        tty,
    };
    Ok((spec, argv))
}

/// `argv[0]` to a program path: absolute paths as they are, bare names through the
/// agent's own `PATH`; relative paths are refused.
fn resolve(name: &str) -> Result<PathBuf, ApiError> {
    let path = Path::new(name);
    if path.is_absolute() {
        return Ok(path.to_path_buf());
    }
    if path.components().count() > 1 || name.contains('/') {
        return Err(ApiError::invalid(
            "argv[0]",
            "relative paths are ambiguous; use an absolute path or a bare command name",
        ));
    }
    pty::find_program(name, std::env::var_os("PATH").as_deref()).ok_or_else(|| {
        ApiError::invalid("argv[0]", format!("{name}: not found in the agent's PATH"))
    })
}

#[cfg(test)]
mod tests {
    use http_body_util::Empty;

    use super::*;

    async fn call(agent: &Agent, method: Method, path: &str, mode: Mode) -> Response<Bytes> {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .body(Empty::<Bytes>::new())
            .unwrap();
        agent.handle(req, mode).await
    }

    fn body(resp: &Response<Bytes>) -> serde_json::Value {
        serde_json::from_slice(resp.body()).unwrap()
    }

    #[tokio::test]
    async fn info_reports_the_transport_and_process() {
        let agent = Agent::new();
        let resp = call(&agent, Method::GET, "/v1/info", Mode::NamedPipe).await;
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()[header::CONTENT_TYPE], "application/json");
        let info = body(&resp);
        assert_eq!(info["transport"], "npipe");
        assert_eq!(info["pid"], std::process::id());
        assert_eq!(info["os"], std::env::consts::OS);
        assert_eq!(info["version"], env!("CARGO_PKG_VERSION"));
    }

    #[tokio::test]
    async fn routes_methods_and_error_shape() {
        let agent = Agent::new();
        let resp = call(&agent, Method::POST, "/v1/info", Mode::Tcp).await;
        assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(resp.headers()[header::ALLOW], "GET");
        assert_eq!(body(&resp)["error"]["kind"], "method_not_allowed");

        let resp = call(&agent, Method::GET, "/nope", Mode::Tcp).await;
        assert_eq!(resp.status(), StatusCode::NOT_FOUND);
        assert_eq!(body(&resp)["error"]["kind"], "not_found");

        let resp = call(&agent, Method::GET, "/v1/sessions", Mode::Unix).await;
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(body(&resp), serde_json::json!({"sessions": []}));

        // An attach that is not an upgrade never reaches the session logic.
        let resp = call(&agent, Method::GET, "/v1/sessions/x/attach", Mode::Unix).await;
        assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    }

    #[test]
    fn errors_always_name_a_field() {
        // Found by the control_json fuzz target: an unknown key "" gave `"field": ""`.
        for body in [&br#"{"":0}"#[..], br#"{"Width":1,"":0}"#, b"[]", b"{"] {
            match parse_json::<TerminalSize>(body).unwrap_err() {
                ApiError::Invalid { field, message } => {
                    assert_eq!(field, "body", "{message}");
                }
                other => panic!("{other:?}"),
            }
        }
        match parse_json::<CreateSession>(br#"{"size":{"Width":1,"Height":1,"":2}}"#) {
            Err(ApiError::Invalid { field, .. }) => assert!(field.starts_with("size"), "{field}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn program_lookup_policy() {
        // Platform-neutral: the test executable itself is a program that exists here.
        let exe = std::env::current_exe().unwrap();
        assert_eq!(resolve(exe.to_str().unwrap()).unwrap(), exe);
        let dir = exe.parent().unwrap();
        let name = exe.file_name().unwrap().to_str().unwrap();
        assert_eq!(
            pty::find_program(name, Some(dir.as_os_str())).unwrap(),
            exe,
            "a bare name is found in the given PATH"
        );
        assert!(
            pty::find_program(name, Some(std::ffi::OsStr::new("relative/dir"))).is_none(),
            "relative PATH entries are never searched"
        );
        for relative in ["./x", "bin/x"] {
            let err = resolve(relative).unwrap_err().to_string();
            assert!(err.starts_with("argv[0]:"), "{err}");
        }
        let err = resolve("no-such-program-pipegate").unwrap_err().to_string();
        assert!(err.contains("not found in the agent's PATH"), "{err}");
    }
}
