//! `serve`'s access policy for TCP listeners: whether a bearer token is required (made
//! here, kept by discovery as `<name>.token`), the `Host` and `Origin` allowlists, and the
//! flag combinations that make no sense or are unsafe.
//!
//! Unix sockets and named pipes need none of this: the OS checks who connects (file
//! modes, the pipe DACL, the peer's uid/SID).

use std::path::Path;

use anyhow::bail;
use pipegate_discovery::TokenFile;
use pipegate_proxy::{ForwardMode, TcpAccess};
use pipegate_transport::{Endpoint, Mode};

use crate::cli::ServeArgs;

/// What `serve` enforces on its TCP listeners.
pub(crate) struct Access {
    /// For the bridge.
    pub(crate) policy: TcpAccess,
    /// The bearer token, when one is required: for discovery and `--token-file`. Never
    /// printed or logged.
    pub(crate) token: Option<String>,
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Access")
            .field("policy", &self.policy)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Decides the policy for `listen` (the endpoints `serve` binds).
///
/// A TCP listener in http mode requires a fresh 256-bit token unless `--no-auth` (which
/// clap refuses together with `--allow-remote`). The token must be kept somewhere a
/// client can read it: next to the discovery record, or in `--token-file`.
pub(crate) fn decide(
    args: &ServeArgs,
    mode: ForwardMode,
    listen: &[Endpoint],
) -> anyhow::Result<Access> {
    let tcp: Vec<&Endpoint> = listen.iter().filter(|e| e.mode() == Mode::Tcp).collect();
    if mode == ForwardMode::Raw {
        if args.upstream_token_file.is_some() {
            bail!(
                "--upstream-token-file works in http mode only: raw mode relays bytes and \
                 cannot add an Authorization header (drop it, or use --mode http)"
            );
        }
        if args.token_file.is_some() {
            bail!("--token-file: raw mode has no bearer token (it relays bytes it cannot read)");
        }
        for endpoint in tcp {
            tracing::warn!(
                transport.endpoint = %endpoint,
                "raw mode cannot check a bearer token, Host or Origin: any process that can \
                 connect to this TCP listener reaches the upstream"
            );
        }
        return Ok(Access {
            policy: TcpAccess::open(),
            token: None,
        });
    }
    let token = if tcp.is_empty() || args.no_auth {
        if args.token_file.is_some() {
            bail!(
                "--token-file: no bearer token to write ({})",
                if args.no_auth {
                    "--no-auth"
                } else {
                    "only TCP listeners use one"
                }
            );
        }
        None
    } else {
        if args.no_discovery && args.token_file.is_none() {
            bail!(
                "a TCP listener needs a bearer token, and with --no-discovery there is no \
                 <name>.token to keep it in: pass --token-file FILE (or --no-auth, loopback \
                 only)"
            );
        }
        Some(pipegate_discovery::new_token()?)
    };
    let policy = TcpAccess::guarded(token.clone())
        .allow_hosts(args.allow_host.clone())
        .allow_origins(args.allow_origin.clone());
    Ok(Access { policy, token })
}

impl Access {
    /// Writes `--token-file` (kept until the returned guard drops), if given.
    pub(crate) fn write_token_file(
        &self,
        path: Option<&Path>,
    ) -> anyhow::Result<Option<TokenFile>> {
        match (path, &self.token) {
            (Some(path), Some(token)) => Ok(Some(TokenFile::create(path, token)?)),
            _ => Ok(None),
        }
    }
}
