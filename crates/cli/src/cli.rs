//! The command line, as clap derive structs.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use pipegate_mux::Via;
use pipegate_transport::Endpoint;

const AFTER_HELP: &str = "\
Endpoints:
  npipe://NAME              Windows named pipe (also \\\\.\\pipe\\NAME, npipe:////./pipe/NAME)
  unix:///ABS/PATH          Unix socket (also /ABS/PATH)
  tcp://127.0.0.1:PORT      loopback TCP (also http://HOST:PORT, HOST:PORT, [::1]:PORT)

Exit codes:
  0  success, including shutdown by Ctrl-C or SIGTERM
  1  runtime failure
  2  usage error
  3  another instance is already running (serve)
  22 the server answered outside 2xx (request -f)";

/// Make a local HTTP + WebSocket API reachable over named pipes, Unix sockets and
/// loopback TCP, and bridge between them.
#[derive(Debug, Parser)]
#[command(name = "pipegate", version, after_help = AFTER_HELP, propagate_version = true)]
pub(crate) struct Cli {
    #[command(flatten)]
    pub(crate) global: GlobalArgs,
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// Options for every command.
#[derive(Debug, Args)]
pub(crate) struct GlobalArgs {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "PIPEGATE_LOG_FORMAT")]
    pub(crate) log_format: LogFormat,
    /// Log filter (`info`, `debug`, `pipegate_proxy=debug,warn`, …).
    #[arg(long, global = true, default_value = "info", env = "PIPEGATE_LOG")]
    pub(crate) log: String,
    /// Worker threads of the async runtime [default: one per CPU]. One costs the least CPU
    /// per request and suits API traffic; bulk transfers through a bridge want more.
    #[arg(long, global = true, value_name = "N", env = "PIPEGATE_THREADS")]
    pub(crate) threads: Option<std::num::NonZeroUsize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Debug, Subcommand)]
// Parsed once at start-up and moved into its command: the size difference costs nothing.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Command {
    /// Listen on endpoints and forward every connection to an upstream.
    Serve(ServeArgs),
    /// Connect stdin/stdout to an endpoint (for `socat … EXEC:` and SSH ProxyCommand).
    Relay(RelayArgs),
    /// Serve multiplexed streams on stdin/stdout (or --listen EP) and dial the endpoints
    /// they name, if allowed: the far end of `serve --via` and `relay --via`.
    Mux(MuxArgs),
    /// Run a shell (or `-- CMD…`) in a session of the agent at EP, in this terminal;
    /// exits with the program's exit code (128 + N for a death by signal N).
    Shell(ShellArgs),
    /// List running instances (from their discovery records) and their state.
    Status(StatusArgs),
    /// Send one HTTP request over any endpoint, like curl (default: the running instance).
    #[command(override_usage = "pipegate request [OPTIONS] [EP] PATH")]
    Request(RequestArgs),
    /// Check what is listening where, permissions and common mistakes; suggest fixes.
    Doctor(DoctorArgs),
}

#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// Where to listen (repeatable). Default: npipe://pipegate on Windows,
    /// unix://$XDG_RUNTIME_DIR/pipegate/NAME.sock elsewhere.
    #[arg(long, short = 'l', value_name = "EP", value_parser = parse_endpoint)]
    pub(crate) listen: Vec<Endpoint>,
    /// Where to forward connections. Without it, the built-in agent API answers.
    #[arg(long, short = 'u', value_name = "EP", value_parser = parse_endpoint)]
    pub(crate) upstream: Option<Endpoint>,
    /// How to forward: `http` understands HTTP and WebSocket; `raw` relays bytes.
    #[arg(long, value_enum, default_value_t = ServeMode::Http)]
    pub(crate) mode: ServeMode,
    /// Reach the upstream through one long-lived `pipegate mux`: `exec:CMD` starts CMD
    /// once and opens one stream per connection over its stdio (e.g. exec:"pipegate.exe
    /// mux --allow npipe://docker_engine"); tcp://…, unix://…, npipe://… connect to a
    /// `pipegate mux --listen` there.
    #[arg(long, value_name = "exec:CMD|EP", value_parser = parse_via, requires = "upstream")]
    pub(crate) via: Option<Via>,
    /// Instance name: names the default socket and the discovery record
    /// (<state dir>/pipegate/instances/NAME.json). One instance per name.
    #[arg(long, default_value = "pipegate", value_parser = parse_name)]
    pub(crate) name: String,
    /// Write no discovery record and skip the single-instance check.
    #[arg(long)]
    pub(crate) no_discovery: bool,
    /// Take over the name from an instance that is alive but fails its health check
    /// (a running one is never replaced).
    #[arg(long, conflicts_with = "no_discovery")]
    pub(crate) replace: bool,
    /// Allow TCP listeners on non-loopback addresses.
    #[arg(long)]
    pub(crate) allow_remote: bool,
    /// Replace the named pipe DACL (default: the current user and SYSTEM only).
    #[arg(long, value_name = "SDDL")]
    pub(crate) pipe_sddl: Option<String>,
    /// Also accept Unix-socket clients running as this uid (repeatable; default: only you).
    #[arg(long, value_name = "UID")]
    pub(crate) allow_uid: Vec<u32>,
    /// Also accept named-pipe clients running as this user SID (repeatable; default: only you).
    #[arg(long, value_name = "SID")]
    pub(crate) allow_sid: Vec<String>,
    /// http: TCP listeners answer without a bearer token (Host and Origin are still
    /// checked). Not with --allow-remote.
    #[arg(long, conflicts_with = "allow_remote")]
    pub(crate) no_auth: bool,
    /// http: also write the TCP listeners' bearer token to FILE (mode 0600, removed at
    /// shutdown). Needed with --no-discovery, which writes no <name>.token.
    #[arg(long, value_name = "FILE")]
    pub(crate) token_file: Option<PathBuf>,
    /// http: also accept browser requests from ORIGIN on TCP listeners (repeatable;
    /// default: http://localhost, 127.0.0.1 and [::1], any port), e.g. https://app.example
    /// or http://devbox:* for any port.
    #[arg(long, value_name = "ORIGIN")]
    pub(crate) allow_origin: Vec<String>,
    /// http: also accept requests whose Host is HOST on TCP listeners (repeatable;
    /// default: localhost, 127.0.0.1, [::1] and the bound address), e.g. the machine's
    /// name for --allow-remote.
    #[arg(long, value_name = "HOST")]
    pub(crate) allow_host: Vec<String>,
    /// http: present the bearer token in FILE to the upstream (Authorization: Bearer),
    /// e.g. another pipegate's <state dir>/pipegate/instances/NAME.token; re-read when
    /// it changes.
    #[arg(long, value_name = "FILE", requires = "upstream")]
    pub(crate) upstream_token_file: Option<PathBuf>,
    /// How long open connections may finish after Ctrl-C/SIGTERM (e.g. 10s, 500ms).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub(crate) shutdown_grace: Duration,
    /// Deadline for dialing the upstream, busy-pipe retries included.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub(crate) connect_timeout: Duration,
    /// Most client connections open at once; more are refused (503 in http mode).
    #[arg(long, default_value_t = 16_384)]
    pub(crate) max_connections: usize,
    /// http: time a client has to send request headers; also the keep-alive idle limit.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub(crate) header_timeout: Duration,
    /// http: largest request head accepted (bytes); larger gets 431.
    #[arg(long, default_value_t = 65_536)]
    pub(crate) max_header_size: usize,
    /// http: time the upstream has to start answering before the client gets 504.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub(crate) upstream_timeout: Duration,
    /// http: close a WebSocket (upgraded) tunnel after this long without traffic.
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    pub(crate) tunnel_idle_timeout: Duration,
    /// Most sessions running at once; more get 429.
    #[arg(long, default_value_t = 64, value_name = "N", conflicts_with = "upstream",
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..),
          help_heading = AGENT_HEADING)]
    pub(crate) max_sessions: usize,
    /// End a session nobody is attached to for this long (SIGHUP, --kill-grace, SIGKILL).
    #[arg(long, default_value = "5m", value_parser = parse_duration, conflicts_with = "upstream",
          help_heading = AGENT_HEADING)]
    pub(crate) detach_timeout: Duration,
    /// Between SIGHUP and SIGKILL when a session is ended (DELETE, --detach-timeout,
    /// shutdown).
    #[arg(long, default_value = "2s", value_parser = parse_duration, conflicts_with = "upstream",
          help_heading = AGENT_HEADING)]
    pub(crate) kill_grace: Duration,
    /// Ping attached clients every third of this; disconnect one that answers nothing for
    /// this long (its session stays, detached). 0 turns pings off.
    #[arg(long, default_value = "90s", value_parser = parse_duration, conflicts_with = "upstream",
          help_heading = AGENT_HEADING)]
    pub(crate) ping_timeout: Duration,
}

/// `pipegate serve --help`: where the built-in agent's options are listed.
const AGENT_HEADING: &str = "Agent (without --upstream)";

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum ServeMode {
    /// Forward HTTP/1.1 and h2c requests; splice WebSocket upgrades.
    Http,
    /// Relay bytes both ways (any protocol: SSH agent, GnuPG, Docker, HTTP).
    Raw,
}

#[derive(Debug, Args)]
pub(crate) struct RelayArgs {
    /// The endpoint to connect stdin/stdout to.
    #[arg(value_name = "EP", value_parser = parse_endpoint)]
    pub(crate) endpoint: Endpoint,
    /// Exit when stdin reaches EOF, even if the endpoint has more to say (npiperelay -ei).
    #[arg(long)]
    pub(crate) exit_on_stdin_eof: bool,
    /// After the endpoint reaches EOF, keep sending stdin to it until stdin ends too
    /// (the default exits at once, like npiperelay -ep).
    #[arg(long)]
    pub(crate) keep_open: bool,
    /// Keep retrying while nothing listens, up to this long (npiperelay -p).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub(crate) wait: Option<Duration>,
    /// Deadline for one dial, busy-pipe retries included.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub(crate) connect_timeout: Duration,
    /// Reach EP through a `pipegate mux` (exec:CMD or its --listen endpoint), as
    /// `serve --via` does.
    #[arg(long, value_name = "exec:CMD|EP", value_parser = parse_via)]
    pub(crate) via: Option<Via>,
}

#[derive(Debug, Args)]
pub(crate) struct MuxArgs {
    /// An endpoint streams may ask for (repeatable; exact match after canonicalisation).
    /// Default: none, so every stream is refused.
    #[arg(long, value_name = "EP", value_parser = parse_endpoint)]
    pub(crate) allow: Vec<Endpoint>,
    /// Serve sessions on this endpoint instead of stdin/stdout (same secure defaults as
    /// `serve`'s listeners).
    #[arg(long, short = 'l', value_name = "EP", value_parser = parse_endpoint)]
    pub(crate) listen: Option<Endpoint>,
    /// Deadline for dialing an allowed endpoint, busy-pipe retries included (a stream may
    /// ask for less).
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub(crate) connect_timeout: Duration,
    /// --listen: allow a TCP listener on a non-loopback address.
    #[arg(long, requires = "listen")]
    pub(crate) allow_remote: bool,
    /// --listen: replace the named pipe DACL (default: the current user and SYSTEM only).
    #[arg(long, value_name = "SDDL", requires = "listen")]
    pub(crate) pipe_sddl: Option<String>,
    /// --listen: also accept Unix-socket clients running as this uid (repeatable).
    #[arg(long, value_name = "UID", requires = "listen")]
    pub(crate) allow_uid: Vec<u32>,
    /// --listen: also accept named-pipe clients running as this user SID (repeatable).
    #[arg(long, value_name = "SID", requires = "listen")]
    pub(crate) allow_sid: Vec<String>,
}

#[derive(Debug, Args)]
pub(crate) struct ShellArgs {
    /// The agent (`pipegate serve` without --upstream, or a bridge to one). Default: where
    /// `pipegate serve` listens by default.
    #[arg(value_name = "EP", value_parser = parse_endpoint)]
    pub(crate) endpoint: Option<Endpoint>,
    /// The program and its arguments, after `--` (default: the agent user's login shell).
    #[arg(last = true, value_name = "CMD")]
    pub(crate) command: Vec<String>,
    /// Deadline for dialing the agent, busy-pipe retries included.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub(crate) connect_timeout: Duration,
    /// Present the bearer token in FILE (a TCP agent). Default: the token of the
    /// discovered instance listening there, if any.
    #[arg(long, value_name = "FILE")]
    pub(crate) token_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub(crate) struct StatusArgs {
    /// Only this instance.
    #[arg(long, value_parser = parse_name)]
    pub(crate) name: Option<String>,
    /// One JSON array of instances on stdout.
    #[arg(long)]
    pub(crate) json: bool,
    /// Remove stale records (their process has exited) first.
    #[arg(long)]
    pub(crate) prune: bool,
    /// How long each health check may take.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub(crate) timeout: Duration,
}

#[derive(Debug, Args)]
pub(crate) struct RequestArgs {
    /// `[EP] PATH`: the endpoint (default: the running instance --name) and the request
    /// path with its query, e.g. /v1/info.
    #[arg(value_name = "[EP] PATH", num_args = 1..=2, required = true)]
    pub(crate) target: Vec<String>,
    /// Request method (default GET, or POST with --data).
    #[arg(short = 'X', long = "request", value_name = "METHOD")]
    pub(crate) method: Option<String>,
    /// Request header, `Name: value` (repeatable).
    #[arg(short = 'H', long = "header", value_name = "K: V")]
    pub(crate) headers: Vec<String>,
    /// Request body: DATA, @FILE, or @- for stdin.
    #[arg(short = 'd', long = "data", value_name = "DATA|@FILE")]
    pub(crate) data: Option<String>,
    /// Print the status line and response headers before the body.
    #[arg(short = 'i', long = "include")]
    pub(crate) include: bool,
    /// On a status outside 2xx print no body and exit 22 (like curl -f).
    #[arg(short = 'f', long = "fail")]
    pub(crate) fail: bool,
    /// Which discovered instance to use when no EP is given.
    #[arg(long, default_value = "pipegate", value_parser = parse_name)]
    pub(crate) name: String,
    /// Deadline for dialing, busy-pipe retries included.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub(crate) connect_timeout: Duration,
    /// Deadline for the whole request, body included (default: none).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub(crate) max_time: Option<Duration>,
    /// Present the bearer token in FILE (TCP endpoints). Default: the token of the
    /// discovered instance listening there, if any.
    #[arg(long, value_name = "FILE")]
    pub(crate) token_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub(crate) struct DoctorArgs {
    /// How long each probe may take.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    pub(crate) timeout: Duration,
}

fn parse_endpoint(s: &str) -> Result<Endpoint, String> {
    Endpoint::parse(s).map_err(|e| e.to_string())
}

fn parse_via(s: &str) -> Result<Via, String> {
    s.parse::<Via>()
        .map_err(|e| match std::error::Error::source(&e) {
            Some(cause) => format!("{e}: {cause}"),
            None => e.to_string(),
        })
}

fn parse_name(s: &str) -> Result<String, String> {
    let ok = !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && !s.starts_with('.');
    if ok {
        Ok(s.to_owned())
    } else {
        Err("use 1-64 characters from A-Z, a-z, 0-9, '-', '_', '.' (not starting with '.')".into())
    }
}

/// `1500ms`, `10s`, `2m`, or a bare number of seconds.
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (number, unit) = match s.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (use e.g. 500ms, 10s, 2m)"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => {
            return Err(format!(
                "unknown unit {unit:?} in {s:?} (use ms, s, m or h)"
            ))
        }
    };
    Duration::try_from_secs_f64(seconds).map_err(|_| format!("{s:?} is out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("3").unwrap(), Duration::from_secs(3));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("5y").is_err());
    }

    #[test]
    fn serve_flags() {
        let cli = Cli::try_parse_from([
            "pipegate",
            "serve",
            "--mode",
            "raw",
            "--listen",
            r"\\.\pipe\ssh-agent",
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            "tcp://127.0.0.1:17788",
            "--shutdown-grace",
            "250ms",
            "--log-format",
            "json",
        ])
        .unwrap();
        let Command::Serve(args) = cli.command else {
            panic!("not serve")
        };
        assert_eq!(args.listen.len(), 2);
        assert_eq!(args.listen[0].to_string(), "npipe://ssh-agent");
        assert_eq!(args.upstream.unwrap().to_string(), "tcp://127.0.0.1:17788");
        assert_eq!(args.shutdown_grace, Duration::from_millis(250));
        assert_eq!(cli.global.log_format, LogFormat::Json);
    }

    #[test]
    fn bad_endpoint_is_a_usage_error_naming_the_rule() {
        let err = Cli::try_parse_from(["pipegate", "relay", "npipe://con"]).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("reserved DOS device name"), "{text}");
        assert!(text.contains("accepted forms"), "{text}");
    }

    #[test]
    fn relay_flags() {
        let cli = Cli::try_parse_from([
            "pipegate",
            "relay",
            "npipe:////./pipe/docker_engine",
            "--exit-on-stdin-eof",
            "--wait",
            "2s",
        ])
        .unwrap();
        let Command::Relay(args) = cli.command else {
            panic!("not relay")
        };
        assert_eq!(args.endpoint.to_string(), "npipe://docker_engine");
        assert!(args.exit_on_stdin_eof && !args.keep_open);
        assert_eq!(args.wait, Some(Duration::from_secs(2)));
    }

    #[test]
    fn discovery_flags() {
        let cli = Cli::try_parse_from(["pipegate", "serve", "--name", "api", "--replace"]).unwrap();
        let Command::Serve(args) = cli.command else {
            panic!("not serve")
        };
        assert_eq!(args.name, "api");
        assert!(args.replace && !args.no_discovery);
        assert!(
            Cli::try_parse_from(["pipegate", "serve", "--no-discovery", "--replace"]).is_err(),
            "--replace means nothing without discovery"
        );
        let cli = Cli::try_parse_from(["pipegate", "status", "--json", "--prune", "--name", "x"])
            .unwrap();
        let Command::Status(args) = cli.command else {
            panic!("not status")
        };
        assert!(args.json && args.prune);
        assert_eq!(args.name.as_deref(), Some("x"));
    }

    #[test]
    fn request_flags() {
        let cli = Cli::try_parse_from([
            "pipegate",
            "request",
            "-X",
            "PUT",
            "-H",
            "A: 1",
            "-H",
            "B: 2",
            "-d",
            "@body.json",
            "-i",
            "-f",
            "npipe://api",
            "/v1/x?y=1",
        ])
        .unwrap();
        let Command::Request(args) = cli.command else {
            panic!("not request")
        };
        assert_eq!(args.method.as_deref(), Some("PUT"));
        assert_eq!(args.headers, ["A: 1", "B: 2"]);
        assert_eq!(args.data.as_deref(), Some("@body.json"));
        assert!(args.include && args.fail);
        assert_eq!(args.target, ["npipe://api", "/v1/x?y=1"]);
        let cli = Cli::try_parse_from(["pipegate", "request", "/v1/info"]).unwrap();
        let Command::Request(args) = cli.command else {
            panic!("not request")
        };
        assert_eq!(args.target, ["/v1/info"]);
        assert_eq!(args.name, "pipegate");
        assert!(Cli::try_parse_from(["pipegate", "request"]).is_err());
        assert!(Cli::try_parse_from(["pipegate", "request", "a", "b", "c"]).is_err());
    }

    #[test]
    fn mux_and_via_flags() {
        let cli = Cli::try_parse_from([
            "pipegate",
            "mux",
            "--allow",
            r"\\.\pipe\Docker_Engine",
            "--allow",
            "/run/a.sock",
        ])
        .unwrap();
        let Command::Mux(args) = cli.command else {
            panic!("not mux")
        };
        let allow: Vec<String> = args.allow.iter().map(ToString::to_string).collect();
        assert_eq!(allow, ["npipe://docker_engine", "unix:///run/a.sock"]);
        assert!(args.listen.is_none());
        assert!(
            Cli::try_parse_from(["pipegate", "mux", "--allow-remote"]).is_err(),
            "--allow-remote means nothing without --listen"
        );

        let cli = Cli::try_parse_from([
            "pipegate",
            "serve",
            "--mode",
            "raw",
            "--upstream",
            "npipe://docker_engine",
            "--via",
            "exec:'/mnt/c/tools/pipegate.exe' mux --allow npipe://docker_engine",
        ])
        .unwrap();
        let Command::Serve(args) = cli.command else {
            panic!("not serve")
        };
        let via = args.via.unwrap();
        assert_eq!(via.command().unwrap()[0], "/mnt/c/tools/pipegate.exe");
        let err = Cli::try_parse_from(["pipegate", "serve", "--via", "exec:x"]).unwrap_err();
        assert!(err.to_string().contains("--upstream"), "{err}");
        let err = Cli::try_parse_from(["pipegate", "relay", "unix:///a", "--via", "exec:'x"])
            .unwrap_err();
        assert!(err.to_string().contains("quotes"), "{err}");
    }

    #[test]
    fn security_flags() {
        let cli = Cli::try_parse_from([
            "pipegate",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            "unix:///run/a.sock",
            "--no-auth",
            "--allow-origin",
            "https://app.example",
            "--allow-origin",
            "http://devbox:*",
            "--allow-host",
            "devbox",
            "--upstream-token-file",
            "/run/up.token",
        ])
        .unwrap();
        let Command::Serve(args) = cli.command else {
            panic!("not serve")
        };
        assert!(args.no_auth);
        assert_eq!(
            args.allow_origin,
            ["https://app.example", "http://devbox:*"]
        );
        assert_eq!(args.allow_host, ["devbox"]);
        assert_eq!(
            args.upstream_token_file.as_deref(),
            Some(std::path::Path::new("/run/up.token"))
        );
        // A token-less TCP listener reachable from other machines is not offered.
        let err =
            Cli::try_parse_from(["pipegate", "serve", "--no-auth", "--allow-remote"]).unwrap_err();
        assert_eq!(
            err.kind(),
            clap::error::ErrorKind::ArgumentConflict,
            "{err}"
        );
        // An upstream token needs an upstream.
        assert!(Cli::try_parse_from(["pipegate", "serve", "--upstream-token-file", "f"]).is_err());
    }

    #[test]
    fn names() {
        assert!(parse_name("pipegate").is_ok());
        assert!(parse_name("../x").is_err());
        assert!(parse_name("").is_err());
    }
}
