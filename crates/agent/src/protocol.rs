//! The wire format of the session API: JSON bodies and the WebSocket channel protocol.
//!
//! These types are what the agent reads and writes; clients (such as `pipegate shell`)
//! use the same types so both sides agree by construction.
//!
//! # WebSocket framing
//!
//! `GET /v1/sessions/{id}/attach` upgrades to a WebSocket with one of two subprotocols
//! (`Sec-WebSocket-Protocol`): [`SUBPROTOCOL`] (`pipegate.pty.v1`, preferred) or
//! [`K8S_SUBPROTOCOL`] (`v5.channel.k8s.io`, for Kubernetes clients). Every message is a
//! *binary* frame whose first byte is a [`channel`] and the rest its payload:
//!
//! | channel | direction | payload |
//! |---|---|---|
//! | 0 [`STDIN`](channel::STDIN) | client → agent | bytes for the program's input |
//! | 1 [`STDOUT`](channel::STDOUT) | agent → client | output (the terminal's, with a TTY) |
//! | 2 [`STDERR`](channel::STDERR) | agent → client | error output (sessions without a TTY) |
//! | 3 [`STATUS`](channel::STATUS) | agent → client | one [`Status`] JSON, after all output |
//! | 4 [`RESIZE`](channel::RESIZE) | client → agent | [`TerminalSize`] JSON |
//! | 5 [`SIGNAL`](channel::SIGNAL) | client → agent | [`SignalRequest`] JSON (`pipegate.pty.v1` only) |
//! | 255 [`CLOSE`](channel::CLOSE) | client → agent | `[255, 0]`: end of input |
//!
//! Right after the upgrade the agent sends an empty stdout message (`[1]`), which clients
//! ignore (the Kubernetes "ready" convention). After the status the agent closes with
//! 1000. A text frame gets close 1003, a message over [`MAX_MESSAGE_SIZE`] close 1009,
//! more unwritten input than the agent buffers close 1008. Malformed resize and signal
//! messages are ignored (use the HTTP routes to get an error back).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// The preferred WebSocket subprotocol: Kubernetes v5 channels plus channel 5 (signals).
pub const SUBPROTOCOL: &str = "pipegate.pty.v1";

/// The Kubernetes exec subprotocol (no signal channel).
pub const K8S_SUBPROTOCOL: &str = "v5.channel.k8s.io";

/// The largest WebSocket message the agent accepts (1 MiB); larger ones get close 1009.
pub const MAX_MESSAGE_SIZE: usize = 1 << 20;

/// Channel numbers: the first byte of every WebSocket message.
pub mod channel {
    /// Client → agent: input bytes.
    pub const STDIN: u8 = 0;
    /// Agent → client: output bytes.
    pub const STDOUT: u8 = 1;
    /// Agent → client: error output (sessions without a TTY).
    pub const STDERR: u8 = 2;
    /// Agent → client: the exit [`Status`](super::Status), once, after all output.
    pub const STATUS: u8 = 3;
    /// Client → agent: a [`TerminalSize`](super::TerminalSize).
    pub const RESIZE: u8 = 4;
    /// Client → agent: a [`SignalRequest`](super::SignalRequest) (`pipegate.pty.v1` only).
    pub const SIGNAL: u8 = 5;
    /// Half-close: `[255, 0]` from the client ends the program's input.
    pub const CLOSE: u8 = 255;
}

/// A terminal size in character cells (Kubernetes field names). Both values are 1–65535.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TerminalSize {
    /// Columns.
    #[serde(rename = "Width", alias = "width")]
    pub width: u32,
    /// Rows.
    #[serde(rename = "Height", alias = "height")]
    pub height: u32,
}

impl TerminalSize {
    /// The size used when a session is created without one: 80 columns, 24 rows.
    pub const DEFAULT: TerminalSize = TerminalSize {
        width: 80,
        height: 24,
    };

    /// A size of `width` columns and `height` rows.
    pub fn new(width: u32, height: u32) -> TerminalSize {
        TerminalSize { width, height }
    }

    /// Which field is out of 1–65535, if any (`"Width"` or `"Height"`).
    pub fn invalid_field(&self) -> Option<&'static str> {
        let ok = |v: u32| (1..=65535).contains(&v);
        if !ok(self.width) {
            Some("Width")
        } else if !ok(self.height) {
            Some("Height")
        } else {
            None
        }
    }
}

/// A signal that can be sent to a session, by name (numbers differ between
/// architectures).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Signal {
    /// Interrupt (Ctrl-C).
    #[serde(rename = "SIGINT")]
    Int,
    /// Quit (Ctrl-\).
    #[serde(rename = "SIGQUIT")]
    Quit,
    /// Terminal stop (Ctrl-Z).
    #[serde(rename = "SIGTSTP")]
    Tstp,
    /// Continue a stopped job.
    #[serde(rename = "SIGCONT")]
    Cont,
    /// Hangup.
    #[serde(rename = "SIGHUP")]
    Hup,
    /// Polite termination.
    #[serde(rename = "SIGTERM")]
    Term,
    /// Forced termination.
    #[serde(rename = "SIGKILL")]
    Kill,
    /// User-defined 1.
    #[serde(rename = "SIGUSR1")]
    Usr1,
    /// User-defined 2.
    #[serde(rename = "SIGUSR2")]
    Usr2,
    /// Window size changed.
    #[serde(rename = "SIGWINCH")]
    Winch,
}

impl Signal {
    /// Every signal, in declaration order.
    pub const ALL: [Signal; 10] = [
        Signal::Int,
        Signal::Quit,
        Signal::Tstp,
        Signal::Cont,
        Signal::Hup,
        Signal::Term,
        Signal::Kill,
        Signal::Usr1,
        Signal::Usr2,
        Signal::Winch,
    ];

    /// The conventional name, `SIGINT` etc.
    pub fn name(self) -> &'static str {
        match self {
            Signal::Int => "SIGINT",
            Signal::Quit => "SIGQUIT",
            Signal::Tstp => "SIGTSTP",
            Signal::Cont => "SIGCONT",
            Signal::Hup => "SIGHUP",
            Signal::Term => "SIGTERM",
            Signal::Kill => "SIGKILL",
            Signal::Usr1 => "SIGUSR1",
            Signal::Usr2 => "SIGUSR2",
            Signal::Winch => "SIGWINCH",
        }
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Body of `POST /v1/sessions/{id}/signal`, and of channel 5.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignalRequest {
    /// The signal to deliver.
    #[serde(rename = "Signal")]
    pub signal: Signal,
}

/// Body of `POST /v1/sessions`. Unknown fields are refused.
///
/// # Environment and `PATH` policy
///
/// * The program's environment is the agent's own, then `TERM=xterm-256color` for TTY
///   sessions when the agent has no `TERM`, then every entry of [`env`](Self::env)
///   (which wins).
/// * A bare `argv[0]` (no `/`) is looked up in the **agent's** `PATH`, never in a `PATH`
///   given in `env`: `env.PATH` is what the program and its children see, not a way to
///   choose which program the agent starts. Relative paths with a `/` are refused
///   (they would be ambiguous between the agent's and `cwd`); use an absolute path.
/// * Without `argv` the session runs the agent user's login shell (`$SHELL`, else the
///   password database, else `/bin/sh`) as a login shell (`argv[0]` prefixed with `-`).
/// * Without `cwd` the program starts in the agent user's home directory (`$HOME`), or
///   `/` when that is unset.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateSession {
    /// The program and its arguments. `None`: the login shell. An empty list is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub argv: Option<Vec<String>>,
    /// Environment variables to set (they override the agent's).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Absolute working directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// Run on a pseudo-terminal (default `true`); `false` uses pipes, with stdout and
    /// stderr kept apart.
    #[serde(default = "default_tty")]
    pub tty: bool,
    /// Initial terminal size (TTY sessions); default 80×24.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<TerminalSize>,
}

fn default_tty() -> bool {
    true
}

/// Answer of `POST /v1/sessions` (`201 Created`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Created {
    /// The session id, for the other routes.
    pub id: String,
    /// The program's process id.
    pub pid: u32,
}

/// How a program ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitInfo {
    /// The exit code, or 128 + the signal number for a death by signal.
    pub code: u8,
    /// The signal that ended the program (`SIGINT`, …, or `SIG<n>` when it has no
    /// portable name), `None` for a normal exit.
    pub signal: Option<String>,
}

/// A session's state in `GET /v1/sessions/{id}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SessionState {
    /// The program is running.
    Running,
    /// The program has ended; see [`SessionInfo::exit`].
    Exited,
}

/// Answer of `GET /v1/sessions/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionInfo {
    /// The session id.
    pub id: String,
    /// Running or exited.
    pub state: SessionState,
    /// The program's process id.
    pub pid: u32,
    /// The command line that was started.
    pub argv: Vec<String>,
    /// Whether the session has a terminal.
    pub tty: bool,
    /// Whether a client is attached now.
    pub attached: bool,
    /// How the program ended, once it has.
    pub exit: Option<ExitInfo>,
}

/// One cause in a [`Status`]'s details.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusCause {
    /// `ExitCode` or `Signal`.
    pub reason: String,
    /// The exit code (0–255) or the signal name.
    pub message: String,
}

/// Details of a [`Status`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusDetails {
    /// Exit code and signal causes.
    #[serde(default)]
    pub causes: Vec<StatusCause>,
}

/// The channel-3 message: a subset of Kubernetes' `metav1.Status`, so Kubernetes clients
/// read the exit code from it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// Always `Status`.
    #[serde(default)]
    pub kind: String,
    /// Always `v1`.
    #[serde(rename = "apiVersion", default)]
    pub api_version: String,
    /// Always empty.
    #[serde(default)]
    pub metadata: serde_json::Map<String, serde_json::Value>,
    /// `Success` or `Failure`.
    pub status: String,
    /// Human-readable explanation (failures).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// `NonZeroExitCode` or `InternalError` (failures).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The exit code and signal (failures).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<StatusDetails>,
}

impl Status {
    fn base(status: &str) -> Status {
        Status {
            kind: "Status".into(),
            api_version: "v1".into(),
            metadata: serde_json::Map::new(),
            status: status.into(),
            message: None,
            reason: None,
            details: None,
        }
    }

    /// The status for a program that ended as `exit` says.
    pub fn from_exit(exit: &ExitInfo) -> Status {
        if exit.code == 0 && exit.signal.is_none() {
            return Status::base("Success");
        }
        let mut status = Status::base("Failure");
        status.reason = Some("NonZeroExitCode".into());
        let mut causes = vec![StatusCause {
            reason: "ExitCode".into(),
            message: exit.code.to_string(),
        }];
        status.message = Some(match &exit.signal {
            Some(signal) => {
                causes.push(StatusCause {
                    reason: "Signal".into(),
                    message: signal.clone(),
                });
                format!("command terminated by signal {signal}")
            }
            None => format!("command terminated with non-zero exit code: {}", exit.code),
        });
        status.details = Some(StatusDetails { causes });
        status
    }

    /// The status for a session the agent could not run to completion.
    pub fn internal_error(message: &str) -> Status {
        let mut status = Status::base("Failure");
        status.reason = Some("InternalError".into());
        status.message = Some(message.into());
        status
    }

    /// The exit code this status reports: 0 for `Success`, the `ExitCode` cause for a
    /// failure, `None` when there is none (an internal error).
    pub fn exit_code(&self) -> Option<u8> {
        if self.status == "Success" {
            return Some(0);
        }
        self.details
            .as_ref()?
            .causes
            .iter()
            .find(|c| c.reason == "ExitCode")
            .and_then(|c| c.message.parse().ok())
    }

    /// The signal name this status reports, if the program died of one.
    pub fn signal(&self) -> Option<&str> {
        self.details
            .as_ref()?
            .causes
            .iter()
            .find(|c| c.reason == "Signal")
            .map(|c| c.message.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_shapes_match_kubernetes() {
        let ok = Status::from_exit(&ExitInfo {
            code: 0,
            signal: None,
        });
        assert_eq!(
            serde_json::to_string(&ok).unwrap(),
            r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Success"}"#
        );
        assert_eq!(ok.exit_code(), Some(0));

        let seven = Status::from_exit(&ExitInfo {
            code: 7,
            signal: None,
        });
        assert_eq!(
            serde_json::to_string(&seven).unwrap(),
            r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"command terminated with non-zero exit code: 7","reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"7"}]}}"#
        );
        assert_eq!(seven.exit_code(), Some(7));
        assert_eq!(seven.signal(), None);

        let int = Status::from_exit(&ExitInfo {
            code: 130,
            signal: Some("SIGINT".into()),
        });
        let back: Status = serde_json::from_str(&serde_json::to_string(&int).unwrap()).unwrap();
        assert_eq!(back.exit_code(), Some(130));
        assert_eq!(back.signal(), Some("SIGINT"));
        assert_eq!(
            back.message.as_deref(),
            Some("command terminated by signal SIGINT")
        );

        let internal = Status::internal_error("boom");
        assert_eq!(internal.exit_code(), None);
        assert_eq!(internal.reason.as_deref(), Some("InternalError"));
    }

    #[test]
    fn signals_by_name_only() {
        for signal in Signal::ALL {
            let json = format!(r#"{{"Signal":"{}"}}"#, signal.name());
            let req: SignalRequest = serde_json::from_str(&json).unwrap();
            assert_eq!(req.signal, signal);
        }
        assert!(serde_json::from_str::<SignalRequest>(r#"{"Signal":"SIGFOO"}"#).is_err());
        assert!(serde_json::from_str::<SignalRequest>(r#"{"Signal":2}"#).is_err());
        assert!(serde_json::from_str::<SignalRequest>(r#"{"Signal":"SIGINT","x":1}"#).is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(TerminalSize::new(80, 24).invalid_field(), None);
        assert_eq!(TerminalSize::new(65535, 1).invalid_field(), None);
        assert_eq!(TerminalSize::new(0, 24).invalid_field(), Some("Width"));
        assert_eq!(TerminalSize::new(80, 65536).invalid_field(), Some("Height"));
        let size: TerminalSize = serde_json::from_str(r#"{"width":3,"height":4}"#).unwrap();
        assert_eq!(size, TerminalSize::new(3, 4));
    }

    #[test]
    fn create_defaults() {
        let body: CreateSession = serde_json::from_str("{}").unwrap();
        assert!(body.tty);
        assert_eq!(body.argv, None);
        assert!(serde_json::from_str::<CreateSession>(r#"{"argv":["x"],"user":"root"}"#).is_err());
    }
}
