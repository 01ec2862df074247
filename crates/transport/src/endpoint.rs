//! The [`Endpoint`] type: one address grammar for named pipes, Unix sockets and TCP.
//!
//! Parsing accepts several spellings of each transport and [`Display`](fmt::Display)
//! prints the canonical URL, so `parse(display(e)) == e` holds for every valid endpoint.
//!
//! | transport   | canonical               | also accepted                                                        |
//! |-------------|-------------------------|----------------------------------------------------------------------|
//! | named pipe  | `npipe://NAME`          | `\\.\pipe\NAME` (prefix case-insensitive), `npipe:////./pipe/NAME`   |
//! | Unix socket | `unix:///abs/path.sock` | `/abs/path.sock`, percent-escapes in the URL form                    |
//! | TCP         | `tcp://127.0.0.1:PORT`  | `http://HOST:PORT`, `HOST:PORT`, `[::1]:PORT`                        |
//!
//! Endpoints are plain data: they parse and print on every OS. Binding or dialing a
//! transport the OS does not have fails later, in [`Listener::bind`](crate::Listener::bind)
//! and [`connect`](crate::connect()).

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};
use std::path::Path;
use std::str::FromStr;

use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, CONTROLS};

/// The accepted spellings, shown in every parse error.
pub const ACCEPTED_FORMS: &str = "npipe://NAME, \\\\.\\pipe\\NAME, npipe:////./pipe/NAME, \
unix:///ABS/PATH, /ABS/PATH, tcp://HOST:PORT, http://HOST:PORT, HOST:PORT, [::1]:PORT";

/// Longest pipe name accepted, in bytes (the 256-character `lpName` limit minus `\\.\pipe\`).
pub const MAX_PIPE_NAME_LEN: usize = 247;

/// DOS device names, which Windows treats specially wherever they appear as a name.
const DOS_DEVICE_NAMES: [&str; 22] = [
    "con", "nul", "prn", "aux", "com1", "com2", "com3", "com4", "com5", "com6", "com7", "com8",
    "com9", "lpt1", "lpt2", "lpt3", "lpt4", "lpt5", "lpt6", "lpt7", "lpt8", "lpt9",
];

/// Characters escaped when a Unix path is printed as a URL: controls, space, `%`, `?`, `#`
/// and the other characters that would change how the URL parses back.
const PATH_ESCAPES: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'%')
    .add(b'?')
    .add(b'#')
    .add(b'"')
    .add(b'<')
    .add(b'>')
    .add(b'`')
    .add(b'{')
    .add(b'}')
    .add(b'\\');

/// Which transport an endpoint uses; also the `transport.mode` telemetry value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// A Windows named pipe.
    NamedPipe,
    /// A Unix domain socket.
    Unix,
    /// A TCP socket.
    Tcp,
}

impl Mode {
    /// The short name used in logs and metrics: `npipe`, `unix` or `tcp`.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::NamedPipe => "npipe",
            Mode::Unix => "unix",
            Mode::Tcp => "tcp",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A place to listen on or connect to.
///
/// # Examples
///
/// ```
/// use pipegate_transport::Endpoint;
///
/// let pipe: Endpoint = r"\\.\PIPE\Docker_Engine".parse()?;
/// assert_eq!(pipe.to_string(), "npipe://docker_engine");
///
/// let sock: Endpoint = "/run/user/1000/api.sock".parse()?;
/// assert_eq!(sock.to_string(), "unix:///run/user/1000/api.sock");
///
/// let tcp: Endpoint = "http://127.0.0.1:8080".parse()?;
/// assert_eq!(tcp.to_string(), "tcp://127.0.0.1:8080");
/// # Ok::<(), pipegate_transport::ParseError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// A TCP host and port. The host is an IP literal or a lowercase DNS name.
    Tcp {
        /// IP literal (IPv6 without brackets) or lowercase host name.
        host: String,
        /// Port; 0 asks the OS to pick one when binding.
        port: u16,
    },
    /// An absolute Unix socket path.
    Unix(String),
    /// A named pipe name, lowercase, without the `\\.\pipe\` prefix.
    NamedPipe(String),
}

impl Endpoint {
    /// Parses an endpoint; the same as [`str::parse`].
    ///
    /// # Errors
    ///
    /// A [`ParseError`] naming the broken rule and listing [`ACCEPTED_FORMS`].
    pub fn parse(input: &str) -> Result<Endpoint, ParseError> {
        input.parse()
    }

    /// A loopback TCP endpoint on `127.0.0.1`.
    pub fn loopback(port: u16) -> Endpoint {
        Endpoint::Tcp {
            host: "127.0.0.1".to_owned(),
            port,
        }
    }

    /// The transport this endpoint uses.
    pub fn mode(&self) -> Mode {
        match self {
            Endpoint::Tcp { .. } => Mode::Tcp,
            Endpoint::Unix(_) => Mode::Unix,
            Endpoint::NamedPipe(_) => Mode::NamedPipe,
        }
    }

    /// The full Win32 path of a named pipe (`\\.\pipe\NAME`), or `None` for other transports.
    pub fn pipe_path(&self) -> Option<String> {
        match self {
            Endpoint::NamedPipe(name) => Some(format!(r"\\.\pipe\{name}")),
            _ => None,
        }
    }

    /// The socket path of a Unix endpoint, or `None` for other transports.
    pub fn unix_path(&self) -> Option<&Path> {
        match self {
            Endpoint::Unix(path) => Some(Path::new(path)),
            _ => None,
        }
    }

    /// Whether the TCP host is a loopback address or `localhost`. `false` for other transports.
    pub fn is_loopback_tcp(&self) -> bool {
        match self {
            Endpoint::Tcp { host, .. } => {
                host == "localhost"
                    || host
                        .parse::<IpAddr>()
                        .map(|ip| is_loopback_ip(&ip))
                        .unwrap_or(false)
            }
            _ => false,
        }
    }
}

/// Loopback, including the IPv4-mapped form `::ffff:127.0.0.1`.
pub(crate) fn is_loopback_ip(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Tcp { host, port } if host.contains(':') => {
                write!(f, "tcp://[{host}]:{port}")
            }
            Endpoint::Tcp { host, port } => write!(f, "tcp://{host}:{port}"),
            Endpoint::Unix(path) => write!(f, "unix://{}", utf8_percent_encode(path, PATH_ESCAPES)),
            Endpoint::NamedPipe(name) => write!(f, "npipe://{name}"),
        }
    }
}

impl FromStr for Endpoint {
    type Err = ParseError;

    fn from_str(input: &str) -> Result<Endpoint, ParseError> {
        let err = |rule: Rule| ParseError {
            input: input.to_owned(),
            rule,
        };
        if input.is_empty() {
            return Err(err(Rule::Empty));
        }
        if let Some(rest) = strip_prefix_ci(input, r"\\.\pipe\") {
            return parse_pipe_name(rest).map_err(err);
        }
        if input.starts_with('/') {
            return parse_unix_path(input).map_err(err);
        }
        match input.split_once("://") {
            Some((scheme, rest)) => match scheme.to_ascii_lowercase().as_str() {
                "npipe" => parse_npipe_url(rest).map_err(err),
                "unix" => parse_unix_url(rest).map_err(err),
                "tcp" | "http" => parse_host_port(rest, true).map_err(err),
                _ => Err(err(Rule::UnknownScheme(scheme.to_owned()))),
            },
            // `dir/x.sock`, `./x.sock`: a path, but not an absolute one.
            None if input.contains('/') => Err(err(Rule::UnixRelative)),
            None => parse_host_port(input, false).map_err(err),
        }
    }
}

fn strip_prefix_ci<'a>(input: &'a str, prefix: &str) -> Option<&'a str> {
    let head = input.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &input[prefix.len()..])
}

/// `npipe://NAME` or the Docker form `npipe:////./pipe/NAME`.
fn parse_npipe_url(rest: &str) -> Result<Endpoint, Rule> {
    if let Some(name) = strip_prefix_ci(rest, "//./pipe/") {
        return parse_pipe_name(name);
    }
    if rest.is_empty() {
        return Err(Rule::PipeNameEmpty);
    }
    if rest.contains('@') {
        return Err(Rule::PipeUrlPart("user information"));
    }
    if rest.contains('?') {
        return Err(Rule::PipeUrlPart("a query"));
    }
    if rest.contains('#') {
        return Err(Rule::PipeUrlPart("a fragment"));
    }
    if rest.contains('/') {
        return Err(Rule::PipeUrlPart("a path"));
    }
    if rest.contains(':') {
        return Err(Rule::PipeUrlPart("a port"));
    }
    parse_pipe_name(rest)
}

fn parse_pipe_name(name: &str) -> Result<Endpoint, Rule> {
    if name.is_empty() {
        return Err(Rule::PipeNameEmpty);
    }
    if name.contains(['/', '\\']) {
        return Err(Rule::PipeNameSeparator);
    }
    if name.len() > MAX_PIPE_NAME_LEN {
        return Err(Rule::PipeNameTooLong(name.len()));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(Rule::PipeNameCharacter(bad));
    }
    if name.contains("..") {
        return Err(Rule::PipeNameDotDot);
    }
    let lower = name.to_ascii_lowercase();
    if DOS_DEVICE_NAMES.contains(&lower.as_str()) {
        return Err(Rule::PipeNameDevice(lower));
    }
    Ok(Endpoint::NamedPipe(lower))
}

/// `unix:///abs/path` (percent-escapes decoded). `unix://host/path` is refused.
fn parse_unix_url(rest: &str) -> Result<Endpoint, Rule> {
    if !rest.starts_with('/') {
        return Err(Rule::UnixRelative);
    }
    if rest.contains('?') {
        return Err(Rule::UnixUrlPart("a query"));
    }
    if rest.contains('#') {
        return Err(Rule::UnixUrlPart("a fragment"));
    }
    let decoded = percent_decode_str(rest)
        .decode_utf8()
        .map_err(|_| Rule::UnixNotUtf8)?;
    parse_unix_path(&decoded)
}

fn parse_unix_path(path: &str) -> Result<Endpoint, Rule> {
    if !path.starts_with('/') {
        return Err(Rule::UnixRelative);
    }
    if path.contains('\0') {
        return Err(Rule::UnixNul);
    }
    if path.split('/').any(|component| component == "..") {
        return Err(Rule::UnixDotDot);
    }
    if path.len() == 1 || path.ends_with('/') {
        return Err(Rule::UnixDirectory);
    }
    Ok(Endpoint::Unix(path.to_owned()))
}

/// `HOST:PORT` or `[V6]:PORT`, optionally the authority of a `tcp://` or `http://` URL
/// (which may end in a single `/`).
fn parse_host_port(rest: &str, from_url: bool) -> Result<Endpoint, Rule> {
    let authority = if from_url {
        rest.strip_suffix('/').unwrap_or(rest)
    } else {
        rest
    };
    if authority.contains(['/', '?', '#']) {
        return Err(Rule::TcpUrlPart);
    }
    if authority.contains('@') {
        return Err(Rule::TcpUserInfo);
    }
    let (host, port) = if let Some(after) = authority.strip_prefix('[') {
        let (v6, tail) = after.split_once(']').ok_or(Rule::TcpBracket)?;
        let port = tail.strip_prefix(':').ok_or(Rule::TcpPortMissing)?;
        let ip: Ipv6Addr = v6.parse().map_err(|_| Rule::TcpHost(v6.to_owned()))?;
        (ip.to_string(), port)
    } else {
        let (host, port) = authority.rsplit_once(':').ok_or(Rule::TcpPortMissing)?;
        if host.contains(':') {
            return Err(Rule::TcpBracket);
        }
        (normalize_host(host)?, port)
    };
    if port.is_empty() {
        return Err(Rule::TcpPortMissing);
    }
    if !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Rule::TcpPort(port.to_owned()));
    }
    let port: u16 = port.parse().map_err(|_| Rule::TcpPort(port.to_owned()))?;
    Ok(Endpoint::Tcp { host, port })
}

fn normalize_host(host: &str) -> Result<String, Rule> {
    if host.is_empty() {
        return Err(Rule::TcpHost(String::new()));
    }
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(ip.to_string());
    }
    let valid_label = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    if host.len() > 253 || !host.split('.').all(valid_label) {
        return Err(Rule::TcpHost(host.to_owned()));
    }
    Ok(host.to_ascii_lowercase())
}

/// Why an endpoint string was refused.
///
/// Its message names the broken rule and lists the accepted forms, for example:
/// `invalid endpoint "npipe://con": "con" is a reserved DOS device name (accepted forms: …)`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid endpoint {input:?}: {rule} (accepted forms: {ACCEPTED_FORMS})")]
pub struct ParseError {
    input: String,
    rule: Rule,
}

impl ParseError {
    /// The text that failed to parse.
    pub fn input(&self) -> &str {
        &self.input
    }

    /// The rule that was broken.
    pub fn rule(&self) -> &Rule {
        &self.rule
    }
}

/// The endpoint grammar's rules, one variant per way to break them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Rule {
    /// The input was empty.
    #[error("the endpoint is empty")]
    Empty,
    /// A `scheme://` other than `npipe`, `unix`, `tcp` or `http`.
    #[error("unknown scheme {0:?}: use npipe://, unix://, tcp:// or http://")]
    UnknownScheme(String),
    /// `npipe://` or `\\.\pipe\` with nothing after it.
    #[error("the pipe name is empty")]
    PipeNameEmpty,
    /// A pipe URL with a path, query, fragment, user information or port.
    #[error("a named pipe URL must be exactly npipe://NAME, without {0}")]
    PipeUrlPart(&'static str),
    /// A `/` or `\` inside a pipe name.
    #[error("a pipe name must not contain path separators")]
    PipeNameSeparator,
    /// More than [`MAX_PIPE_NAME_LEN`] bytes.
    #[error("the pipe name is {0} bytes long; the limit is 247")]
    PipeNameTooLong(usize),
    /// A character outside `[A-Za-z0-9._-]`.
    #[error("the pipe name contains {0:?}; only A-Z, a-z, 0-9, '.', '_' and '-' are allowed")]
    PipeNameCharacter(char),
    /// `..` inside a pipe name.
    #[error("a pipe name must not contain '..'")]
    PipeNameDotDot,
    /// `con`, `nul`, `com1`, ….
    #[error("{0:?} is a reserved DOS device name")]
    PipeNameDevice(String),
    /// A Unix path that does not start with `/` (or `unix://host/…`).
    #[error("a Unix socket path must be absolute (unix:///ABS/PATH)")]
    UnixRelative,
    /// A query or fragment on a `unix://` URL.
    #[error("a unix:// URL must not have {0}; escape '?' and '#' in paths as %3F and %23")]
    UnixUrlPart(&'static str),
    /// Percent-escapes that do not decode to UTF-8.
    #[error("the Unix socket path is not valid UTF-8 after percent-decoding")]
    UnixNotUtf8,
    /// A NUL byte in the path.
    #[error("a Unix socket path must not contain NUL bytes")]
    UnixNul,
    /// A `..` path component.
    #[error("a Unix socket path must not contain '..' components")]
    UnixDotDot,
    /// `/` alone or a path ending in `/`.
    #[error("a Unix socket path must name a file, not a directory")]
    UnixDirectory,
    /// A TCP URL with a path, query or fragment.
    #[error("a TCP endpoint must be HOST:PORT, without a path, query or fragment")]
    TcpUrlPart,
    /// A TCP URL with user information.
    #[error("a TCP endpoint must not carry user information")]
    TcpUserInfo,
    /// An unbracketed IPv6 address, or a missing `]`.
    #[error("IPv6 addresses must be in brackets, as in [::1]:PORT")]
    TcpBracket,
    /// No `:PORT`.
    #[error("a TCP endpoint needs a port, as in 127.0.0.1:PORT")]
    TcpPortMissing,
    /// A port that is not a number in 0..=65535.
    #[error("{0:?} is not a port number (0-65535)")]
    TcpPort(String),
    /// A host that is neither an IP literal nor a DNS name.
    #[error("{0:?} is not an IP address or host name")]
    TcpHost(String),
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ok(input: &str, canonical: &str) {
        let e: Endpoint = input
            .parse()
            .unwrap_or_else(|err| panic!("{input:?} should parse: {err}"));
        assert_eq!(e.to_string(), canonical, "display of {input:?}");
        assert_eq!(canonical.parse::<Endpoint>().unwrap(), e, "round trip");
    }

    fn bad(input: &str, rule: fn(&Rule) -> bool) {
        match input.parse::<Endpoint>() {
            Ok(e) => panic!("{input:?} should be refused, parsed as {e}"),
            Err(err) => {
                assert!(rule(err.rule()), "{input:?}: wrong rule {:?}", err.rule());
                let msg = err.to_string();
                assert!(msg.contains("accepted forms: npipe://NAME"), "{msg}");
            }
        }
    }

    #[test]
    fn accepted_forms() {
        ok("npipe://substrate-agent", "npipe://substrate-agent");
        ok("NPIPE://Docker_Engine", "npipe://docker_engine");
        ok(r"\\.\pipe\docker_engine", "npipe://docker_engine");
        ok(r"\\.\PIPE\docker_engine", "npipe://docker_engine");
        ok(r"\\.\Pipe\a.b_c-1", "npipe://a.b_c-1");
        ok("npipe:////./pipe/docker_engine", "npipe://docker_engine");
        ok("npipe:////./PIPE/Docker_Engine", "npipe://docker_engine");
    }

    #[test]
    fn more_accepted_forms() {
        ok("/run/user/1000/api.sock", "unix:///run/user/1000/api.sock");
        ok("unix:///run/x.sock", "unix:///run/x.sock");
        ok("unix:///tmp/my%20sock", "unix:///tmp/my%20sock");
        ok("unix:///tmp/a%3Fb", "unix:///tmp/a%3Fb");
        ok("tcp://127.0.0.1:17788", "tcp://127.0.0.1:17788");
        ok("http://127.0.0.1:8080", "tcp://127.0.0.1:8080");
        ok("http://127.0.0.1:8080/", "tcp://127.0.0.1:8080");
        ok("127.0.0.1:0", "tcp://127.0.0.1:0");
        ok("[::1]:9000", "tcp://[::1]:9000");
        ok("tcp://[::1]:9000", "tcp://[::1]:9000");
        ok("LOCALHOST:80", "tcp://localhost:80");
        ok("npipe://con.txt", "npipe://con.txt");
        // A plain path is taken literally: no percent-decoding, so this is not a `..`.
        ok("/tmp/%2e%2e/x", "unix:///tmp/%252e%252e/x");
    }

    #[test]
    fn refused_forms() {
        bad("", |r| matches!(r, Rule::Empty));
        bad("npipe://", |r| matches!(r, Rule::PipeNameEmpty));
        bad(r"\\.\pipe\", |r| matches!(r, Rule::PipeNameEmpty));
        bad("ftp://x:1", |r| matches!(r, Rule::UnknownScheme(_)));
        bad("npipe://thv/api", |r| {
            matches!(r, Rule::PipeUrlPart("a path"))
        });
        bad("npipe://thv/", |r| matches!(r, Rule::PipeUrlPart("a path")));
        bad("npipe:///thv", |r| matches!(r, Rule::PipeUrlPart("a path")));
        bad("npipe://x?a=1", |r| {
            matches!(r, Rule::PipeUrlPart("a query"))
        });
        bad("npipe://x#frag", |r| {
            matches!(r, Rule::PipeUrlPart("a fragment"))
        });
        bad("npipe://user:pw@x", |r| {
            matches!(r, Rule::PipeUrlPart("user information"))
        });
        bad("npipe://x:1234", |r| {
            matches!(r, Rule::PipeUrlPart("a port"))
        });
        bad(r"\\.\pipe\a\b", |r| matches!(r, Rule::PipeNameSeparator));
        bad(r"\\.\pipe\a/b", |r| matches!(r, Rule::PipeNameSeparator));
        bad("npipe://my..api", |r| matches!(r, Rule::PipeNameDotDot));
        bad("npipe://..", |r| matches!(r, Rule::PipeNameDotDot));
        bad("npipe://a b", |r| matches!(r, Rule::PipeNameCharacter(' ')));
        bad("npipe://a$", |r| matches!(r, Rule::PipeNameCharacter('$')));
        bad("npipe://é", |r| matches!(r, Rule::PipeNameCharacter('é')));
        bad("unix://relative/x.sock", |r| {
            matches!(r, Rule::UnixRelative)
        });
        bad("unix://", |r| matches!(r, Rule::UnixRelative));
        bad("unix:///tmp/x?y", |r| matches!(r, Rule::UnixUrlPart(_)));
        bad("unix:///tmp/../etc/x", |r| matches!(r, Rule::UnixDotDot));
        bad("unix:///tmp/%2e%2e/x", |r| matches!(r, Rule::UnixDotDot));
        bad("unix:///tmp/a%00b", |r| matches!(r, Rule::UnixNul));
        bad("unix:///tmp/%ff", |r| matches!(r, Rule::UnixNotUtf8));
        bad("/", |r| matches!(r, Rule::UnixDirectory));
        bad("/tmp/dir/", |r| matches!(r, Rule::UnixDirectory));
        bad("127.0.0.1", |r| matches!(r, Rule::TcpPortMissing));
        bad("127.0.0.1:", |r| matches!(r, Rule::TcpPortMissing));
        bad("127.0.0.1:99999", |r| matches!(r, Rule::TcpPort(_)));
        bad("127.0.0.1:+80", |r| matches!(r, Rule::TcpPort(_)));
        bad("::1:80", |r| matches!(r, Rule::TcpBracket));
        bad("[::1:80", |r| matches!(r, Rule::TcpBracket));
        bad("[zz]:80", |r| matches!(r, Rule::TcpHost(_)));
        bad("http://127.0.0.1:80/path", |r| {
            matches!(r, Rule::TcpUrlPart)
        });
        bad("http://u@127.0.0.1:80", |r| matches!(r, Rule::TcpUserInfo));
        bad("bad_host:80", |r| matches!(r, Rule::TcpHost(_)));
        bad(":80", |r| matches!(r, Rule::TcpHost(_)));
        bad("relative/x.sock", |r| matches!(r, Rule::UnixRelative));
        bad("./x.sock", |r| matches!(r, Rule::UnixRelative));
    }

    #[test]
    fn dos_device_names_are_refused_in_every_case() {
        for name in DOS_DEVICE_NAMES {
            for spelled in [name.to_owned(), name.to_ascii_uppercase()] {
                bad(&format!("npipe://{spelled}"), |r| {
                    matches!(r, Rule::PipeNameDevice(_))
                });
                bad(&format!(r"\\.\pipe\{spelled}"), |r| {
                    matches!(r, Rule::PipeNameDevice(_))
                });
            }
        }
    }

    #[test]
    fn pipe_name_length_limit() {
        let max = "a".repeat(MAX_PIPE_NAME_LEN);
        ok(&format!("npipe://{max}"), &format!("npipe://{max}"));
        bad(&format!("npipe://{max}a"), |r| {
            matches!(r, Rule::PipeNameTooLong(248))
        });
    }

    #[test]
    fn accessors() {
        let e = Endpoint::parse("npipe://X").unwrap();
        assert_eq!(e.pipe_path().unwrap(), r"\\.\pipe\x");
        assert_eq!(e.mode(), Mode::NamedPipe);
        assert!(Endpoint::parse("[::1]:1").unwrap().is_loopback_tcp());
        assert!(Endpoint::parse("[::ffff:127.0.0.1]:1")
            .unwrap()
            .is_loopback_tcp());
        assert!(Endpoint::parse("localhost:1").unwrap().is_loopback_tcp());
        assert!(!Endpoint::parse("0.0.0.0:1").unwrap().is_loopback_tcp());
        assert!(!Endpoint::parse("example.com:1").unwrap().is_loopback_tcp());
    }

    fn arb_endpoint() -> impl Strategy<Value = Endpoint> {
        let pipe = "[A-Za-z0-9_-][A-Za-z0-9._-]{0,40}"
            .prop_filter_map("valid pipe name", |s| parse_pipe_name(&s).ok());
        let unix = proptest::collection::vec("[^/\u{0}]{1,12}", 1..5)
            .prop_filter_map("valid unix path", |parts| {
                parse_unix_path(&format!("/{}", parts.join("/"))).ok()
            });
        let v4 = (any::<[u8; 4]>(), any::<u16>()).prop_map(|(ip, port)| Endpoint::Tcp {
            host: IpAddr::from(ip).to_string(),
            port,
        });
        let v6 = (any::<[u8; 16]>(), any::<u16>()).prop_map(|(ip, port)| Endpoint::Tcp {
            host: IpAddr::from(ip).to_string(),
            port,
        });
        let name = (
            "[a-z][a-z0-9-]{0,10}[a-z0-9](\\.[a-z][a-z0-9]{0,8}){0,3}",
            any::<u16>(),
        )
            .prop_map(|(host, port)| Endpoint::Tcp { host, port });
        prop_oneof![pipe, unix, v4, v6, name]
    }

    proptest! {
        #[test]
        fn display_round_trips(e in arb_endpoint()) {
            let shown = e.to_string();
            let back: Endpoint = shown.parse().map_err(|err| TestCaseError::fail(format!("{shown}: {err}")))?;
            prop_assert_eq!(back, e);
        }

        #[test]
        fn parse_never_panics(s in "\\PC{0,64}") {
            let _ = s.parse::<Endpoint>();
        }
    }
}
