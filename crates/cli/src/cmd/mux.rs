//! `pipegate mux`: the far end of `--via`. Serves multiplexed streams on stdin/stdout (a
//! helper started by `serve --via exec:…`) or on `--listen EP`, dialing only the endpoints
//! `--allow` names.

use std::process::ExitCode;

use anyhow::Context as _;
use pipegate_mux::{Server, ServerConfig};
use pipegate_transport::{ConnectOptions, ListenOptions, Listener};

use crate::cli::MuxArgs;
use crate::sys;

pub(crate) async fn run(args: MuxArgs) -> anyhow::Result<ExitCode> {
    let allow = args
        .allow
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    if args.allow.is_empty() {
        tracing::warn!("no --allow given: every stream will be refused");
    }
    let server = Server::new(
        ServerConfig::new(args.allow)
            .connect_options(ConnectOptions::new().timeout(args.connect_timeout)),
    );
    super::raise_open_files_limit(None);
    let Some(endpoint) = args.listen else {
        return serve_stdio(server, &allow).await;
    };
    let options = ListenOptions::new()
        .allow_remote(args.allow_remote)
        .pipe_sddl(args.pipe_sddl)
        .allow_uids(args.allow_uid)
        .allow_sids(args.allow_sid);
    let listener = Listener::bind(&endpoint, &options)
        .await
        .with_context(|| format!("cannot start `pipegate mux` on {endpoint}"))?;
    let local = listener.local_endpoint().clone();
    tracing::info!(transport.endpoint = %local, allow, "listening");
    // A stable line for scripts and tests, whatever the log format and level.
    eprintln!("pipegate: listening on {local}");
    server
        .serve_listener(listener, sys::shutdown_signal())
        .await;
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// One session on stdin/stdout, until the client closes it (or stdin ends) or a signal.
async fn serve_stdio(server: Server, allow: &str) -> anyhow::Result<ExitCode> {
    tracing::info!(allow, version = %pipegate_mux::version(), "serving on stdin/stdout");
    // Not tokio's stdin/stdout: see pipegate_mux::Stdio (fewer thread hand-offs, and a
    // read pending on stdin never holds up the exit).
    let stdio = pipegate_mux::stdio().context("cannot start the stdin/stdout threads")?;
    // On a worker thread, not this one (`block_on`'s): the streams it spawns then start on
    // the same worker, and their frames reach it without a hop between threads (each hop
    // is a wake-up, slow under Wine or WSL interop).
    let session = tokio::spawn(async move { server.serve(stdio, sys::shutdown_signal()).await });
    let summary = session
        .await
        .context("the mux session on stdin/stdout panicked")?
        .context("the mux session on stdin/stdout failed")?;
    tracing::info!(
        streams = summary.streams,
        refused = summary.refused,
        bytes.to_upstream = summary.bytes_to_upstream,
        bytes.from_upstream = summary.bytes_from_upstream,
        "stopped"
    );
    Ok(ExitCode::SUCCESS)
}
