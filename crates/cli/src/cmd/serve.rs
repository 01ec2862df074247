//! `pipegate serve`.

use std::future::Future;
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use http_body_util::{BodyExt, Full};
use pipegate_agent::{Agent, Limits};
use pipegate_proxy::{Bridge, Config, ForwardMode, HttpOptions, LocalService, ResBody};
use pipegate_transport::{ConnectOptions, ListenOptions, Mode};

use super::instance;
use crate::cli::{ServeArgs, ServeMode};
use crate::sys;

pub(crate) async fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let listen = if args.listen.is_empty() {
        vec![sys::default_endpoint(&args.name)]
    } else {
        args.listen.clone()
    };
    let mode = match args.mode {
        ServeMode::Http => ForwardMode::Http,
        ServeMode::Raw => ForwardMode::Raw,
    };
    // TCP listeners: the bearer token, Host and Origin (see access.rs).
    let access = super::access::decide(&args, mode, &listen)?;
    // Only serves requests without --upstream; ended at shutdown either way.
    let agent = Agent::with_limits(limits(&args));
    let base = match &args.upstream {
        Some(upstream) => Config::new(listen.clone(), upstream.clone(), mode),
        None if mode == ForwardMode::Raw => anyhow::bail!(
            "--mode raw needs --upstream: raw mode relays bytes to another endpoint, \
             e.g. --upstream tcp://127.0.0.1:PORT"
        ),
        // No upstream: the built-in agent answers.
        None => Config::local(listen.clone(), Arc::new(AgentService(agent.clone()))),
    };
    let target = base.target.to_string();
    let mode_name = if args.upstream.is_some() {
        mode.as_str()
    } else {
        "agent"
    };
    let mut http = HttpOptions::default();
    http.header_timeout = args.header_timeout;
    http.max_header_size = args.max_header_size;
    http.upstream_timeout = args.upstream_timeout;
    http.tunnel_idle_timeout = args.tunnel_idle_timeout;
    // --via: one `pipegate mux` session for every upstream connection.
    // Raw mode takes a stream before the mux's answer (a refusal fails its first read).
    let optimistic = mode == ForwardMode::Raw;
    let connector = args
        .via
        .clone()
        .map(|via| super::via::connector(via, optimistic));
    let config = base
        .listen_options(
            ListenOptions::new()
                .allow_remote(args.allow_remote)
                .pipe_sddl(args.pipe_sddl)
                .allow_uids(args.allow_uid)
                .allow_sids(args.allow_sid),
        )
        .connect_options(ConnectOptions::new().timeout(args.connect_timeout))
        .dialer(
            connector
                .clone()
                .map(|c| Arc::new(c) as Arc<dyn pipegate_transport::Dialer>),
        )
        .shutdown_grace(args.shutdown_grace)
        .max_connections(args.max_connections)
        .http(http)
        .tcp_access(access.policy.clone())
        .upstream_token_file(args.upstream_token_file.clone());
    super::raise_open_files_limit(Some(args.max_connections));
    // The single-instance guard decides before anything is bound, so a running instance's
    // socket is never touched; its lock is held until the record is written.
    let claim = instance::claim(&args.name, args.no_discovery, args.replace)
        .await?
        .map(|claim| claim.with_token(access.token.clone()));
    let config = config.nonce(claim.as_ref().map(|c| c.nonce().to_owned()));
    let bridge = Bridge::bind(config).await.with_context(|| {
        format!(
            "cannot start `pipegate serve` on {}",
            listen
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        )
    })?;
    if let Some(connector) = &connector {
        // Start the helper now: a wrong command line fails here, not on the first client.
        super::via::start(connector).await?;
    }
    let registration = instance::register(
        claim,
        bridge.local_endpoints(),
        mode_name,
        args.upstream.clone(),
    )?;
    // Written before the ready line, like the record and its <name>.token.
    let _token_file = access.write_token_file(args.token_file.as_deref())?;
    for endpoint in bridge.local_endpoints() {
        tracing::info!(
            transport.endpoint = %endpoint,
            upstream.endpoint = %target,
            mode = mode_name,
            "listening"
        );
        // A stable line for scripts and tests, whatever the log format and level.
        eprintln!("pipegate: listening on {endpoint}");
    }
    let summary = bridge.serve(sys::shutdown_signal()).await?;
    // The listeners are closed: end the sessions (and the jobs they started in other
    // process groups) while their clients can still get the exit status.
    agent.shutdown().await;
    if let Some(connector) = &connector {
        connector.shutdown().await;
    }
    instance::deregister(registration);
    tracing::info!(
        accepted = summary.accepted,
        aborted = summary.aborted,
        "stopped"
    );
    Ok(ExitCode::SUCCESS)
}

/// The agent's limits from the command line.
fn limits(args: &ServeArgs) -> Limits {
    Limits::default()
        .max_sessions(args.max_sessions)
        .detach_timeout(args.detach_timeout)
        .kill_grace(args.kill_grace)
        .ping_timeout(args.ping_timeout)
}

/// The agent behind the bridge's HTTP server: requests that are not for `/_pipegate/`.
struct AgentService(Agent);

impl LocalService for AgentService {
    fn call(
        &self,
        request: http::Request<hyper::body::Incoming>,
        transport: Mode,
    ) -> Pin<Box<dyn Future<Output = http::Response<ResBody>> + Send>> {
        let agent = self.0.clone();
        Box::pin(async move {
            agent
                .handle(request, transport)
                .await
                .map(|body| Full::new(body).map_err(|never| match never {}).boxed())
        })
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use crate::cli::{Cli, Command, ServeArgs};

    fn serve_args(args: &[&str]) -> Result<ServeArgs, clap::Error> {
        match Cli::try_parse_from(args)?.command {
            Command::Serve(args) => Ok(args),
            other => panic!("not serve: {other:?}"),
        }
    }

    /// The flags' defaults are the library's, and the flags reach the limits.
    #[test]
    fn agent_limits_from_flags() {
        let defaults = pipegate_agent::Limits::default();
        let limits = super::limits(&serve_args(&["pipegate", "serve"]).unwrap());
        assert_eq!(limits.max_sessions, defaults.max_sessions);
        assert_eq!(limits.detach_timeout, defaults.detach_timeout);
        assert_eq!(limits.kill_grace, defaults.kill_grace);
        assert_eq!(limits.ping_timeout, defaults.ping_timeout);

        let args = serve_args(&[
            "pipegate",
            "serve",
            "--max-sessions",
            "3",
            "--detach-timeout",
            "10m",
            "--kill-grace",
            "500ms",
            "--ping-timeout",
            "0",
        ])
        .unwrap();
        let limits = super::limits(&args);
        assert_eq!(limits.max_sessions, 3);
        assert_eq!(limits.detach_timeout, std::time::Duration::from_secs(600));
        assert_eq!(limits.kill_grace, std::time::Duration::from_millis(500));
        assert!(limits.ping_timeout.is_zero());

        // No sessions is no agent; the agent's flags mean nothing to a bridge.
        assert!(serve_args(&["pipegate", "serve", "--max-sessions", "0"]).is_err());
        assert!(serve_args(&[
            "pipegate",
            "serve",
            "--upstream",
            "tcp://127.0.0.1:1",
            "--max-sessions",
            "2"
        ])
        .is_err());
    }
}
