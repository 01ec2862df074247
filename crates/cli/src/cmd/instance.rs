//! Discovery glue shared by the subcommands: `serve`'s single-instance guard and record,
//! and finding the running instance (and the bearer token of its TCP listeners) for
//! `request` and `shell`.

use anyhow::Context as _;
use pipegate_discovery::{
    Claim, ClaimOptions, ErrorKind, InstanceMode, Registration, Registry, State, HEALTH_TIMEOUT,
};
use pipegate_transport::{Endpoint, Mode};

/// Takes the instance lock and decides whether this process may serve as `name` (see
/// [`Registry::claim`]). `None` with `--no-discovery`.
pub(crate) async fn claim(
    name: &str,
    disabled: bool,
    replace: bool,
) -> anyhow::Result<Option<Claim>> {
    if disabled {
        return Ok(None);
    }
    let registry = Registry::from_env()
        .context("cannot find the discovery directory (or pass --no-discovery)")?;
    match registry
        .claim(name, &ClaimOptions::new().replace(replace))
        .await
    {
        Ok(claim) => {
            if let Some(old) = claim.replaced() {
                if let Some(record) = &old.record {
                    tracing::info!(name, state = %old.state, pid = record.pid, url = %record.url,
                        "took over the instance record");
                }
            }
            Ok(Some(claim))
        }
        // Printed as they are: `pipegate is already running at URL (PID N)` is a contract.
        Err(e) if matches!(e.kind(), ErrorKind::AlreadyRunning | ErrorKind::Unhealthy) => {
            Err(e.into())
        }
        Err(e) => Err(anyhow::Error::new(e).context(format!(
            "cannot register the instance {name:?} (or pass --no-discovery)"
        ))),
    }
}

/// Writes the record for the bound listeners and releases the lock.
pub(crate) fn register(
    claim: Option<Claim>,
    listeners: Vec<Endpoint>,
    mode: &str,
    upstream: Option<Endpoint>,
) -> anyhow::Result<Option<Registration>> {
    let Some(claim) = claim else { return Ok(None) };
    let mode = match mode {
        "agent" => InstanceMode::Agent,
        "raw" => InstanceMode::Raw,
        _ => InstanceMode::Http,
    };
    let name = claim.name().to_owned();
    let registration = claim
        .register(listeners, mode, upstream)
        .with_context(|| format!("cannot write the discovery record of {name:?}"))?;
    tracing::debug!(name, pid = registration.record().pid, "registered");
    Ok(Some(registration))
}

/// Removes the record at shutdown, if it is still ours.
pub(crate) fn deregister(registration: Option<Registration>) {
    let Some(registration) = registration else {
        return;
    };
    let name = registration.name().to_owned();
    match registration.deregister() {
        Ok(true) => tracing::debug!(name, "removed the instance record"),
        Ok(false) => tracing::info!(
            name,
            "the instance record now belongs to another instance; left it alone"
        ),
        Err(e) => tracing::warn!(name, error = %e, "could not remove the instance record"),
    }
}

/// The endpoint of the running instance `name`, and the bearer token to present there
/// (a TCP listener's; `None` for local transports).
pub(crate) async fn running_endpoint(name: &str) -> anyhow::Result<(Endpoint, Option<String>)> {
    let registry = Registry::from_env().context("cannot find the discovery directory")?;
    let status = registry
        .status(name, HEALTH_TIMEOUT)
        .await
        .with_context(|| format!("cannot read the record of instance {name:?}"))?;
    match (status.state, status.record) {
        (State::Running, Some(record)) => {
            let token = record
                .token()
                .filter(|_| record.url.mode() == Mode::Tcp)
                .map(str::to_owned);
            Ok((record.url, token))
        }
        (State::NotFound, _) => anyhow::bail!(
            "no pipegate instance named {name:?} is running (no record in {}); start one with \
             `pipegate serve`, or give the endpoint: `pipegate request EP PATH`",
            registry.dir().display()
        ),
        (state, record) => {
            let pid = record.map(|r| r.pid).unwrap_or_default();
            let why = status.reason.map(|e| format!(": {e}")).unwrap_or_default();
            anyhow::bail!(
                "the pipegate instance {name:?} (PID {pid}) is {state}{why}; see `pipegate status`"
            )
        }
    }
}

/// The bearer token to present to a TCP `endpoint`: the one in `token_file` if given,
/// else that of a discovered instance listening there (so `pipegate request
/// tcp://127.0.0.1:PORT …` works against a local `pipegate serve` without the user
/// handling the token). `None` for other transports, which take no token.
pub(crate) fn token_for(
    endpoint: &Endpoint,
    token_file: Option<&std::path::Path>,
) -> anyhow::Result<Option<String>> {
    if let Some(path) = token_file {
        return match pipegate_discovery::read_token_file(path)? {
            Some(token) => Ok(Some(token)),
            None => anyhow::bail!("the token file {} does not exist", path.display()),
        };
    }
    if endpoint.mode() != Mode::Tcp {
        return Ok(None);
    }
    // Best effort: no discovery directory or no matching record just means no token.
    let Ok(entries) = Registry::from_env().and_then(|r| r.list()) else {
        return Ok(None);
    };
    Ok(entries
        .into_iter()
        .filter_map(|entry| entry.record.ok())
        .find(|record| record.listeners.contains(endpoint))
        .and_then(|record| record.token().map(str::to_owned)))
}

/// `Authorization: Bearer <token>`, marked sensitive.
pub(crate) fn bearer(token: &str) -> anyhow::Result<http::HeaderValue> {
    let mut value = http::HeaderValue::from_str(&format!("Bearer {token}"))
        .map_err(|_| anyhow::anyhow!("the bearer token is not a valid header value"))?;
    value.set_sensitive(true);
    Ok(value)
}
