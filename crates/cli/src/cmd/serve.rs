//! `pipegate serve`.

use std::process::ExitCode;

use anyhow::Context as _;
use pipegate_proxy::{Bridge, Config, ForwardMode, HttpOptions};
use pipegate_transport::{ConnectOptions, ListenOptions};

use crate::cli::{ServeArgs, ServeMode};
use crate::sys;

pub(crate) async fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let listen = if args.listen.is_empty() {
        vec![sys::default_endpoint(&args.name)]
    } else {
        args.listen
    };
    let Some(upstream) = args.upstream else {
        anyhow::bail!(
            "no --upstream given; the built-in agent is not available in this build, so tell \
             `pipegate serve` where to forward, e.g. --upstream tcp://127.0.0.1:PORT"
        );
    };
    let mode = match args.mode {
        ServeMode::Http => ForwardMode::Http,
        ServeMode::Raw => ForwardMode::Raw,
    };
    let mut http = HttpOptions::default();
    http.header_timeout = args.header_timeout;
    http.max_header_size = args.max_header_size;
    http.upstream_timeout = args.upstream_timeout;
    http.tunnel_idle_timeout = args.tunnel_idle_timeout;
    let config = Config::new(listen.clone(), upstream.clone(), mode)
        .listen_options(
            ListenOptions::new()
                .allow_remote(args.allow_remote)
                .pipe_sddl(args.pipe_sddl),
        )
        .connect_options(ConnectOptions::new().timeout(args.connect_timeout))
        .shutdown_grace(args.shutdown_grace)
        .max_connections(args.max_connections)
        .http(http);
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
    for endpoint in bridge.local_endpoints() {
        tracing::info!(
            transport.endpoint = %endpoint,
            upstream.endpoint = %upstream,
            mode = mode.as_str(),
            "listening"
        );
        // A stable line for scripts and tests, whatever the log format and level.
        eprintln!("pipegate: listening on {endpoint}");
    }
    let summary = bridge.serve(sys::shutdown_signal()).await?;
    tracing::info!(
        accepted = summary.accepted,
        aborted = summary.aborted,
        "stopped"
    );
    Ok(ExitCode::SUCCESS)
}
