//! Discovery for `pipegate serve`: instance records, the nonce health check, and a
//! race-free single-instance guard.
//!
//! # Brief overview
//!
//! * A [`Record`] (`<state dir>/pipegate/instances/<name>.json`) says where an instance
//!   listens (`url`, `listeners`), what it serves (`mode`, `upstream`), who it is (`pid`)
//!   and the [`nonce`](Record::nonce) it proves itself with.
//! * [`Registry`] owns that directory: 0700 (a protected DACL on Windows), records
//!   written atomically with mode 0600, symlinks refused, [`list`](Registry::list) that
//!   survives a corrupt file, [`prune`](Registry::prune) for stale records.
//! * [`check_health`] asks any endpoint for `GET /_pipegate/health` and compares the
//!   `X-Pipegate-Nonce` answer in constant time, within a deadline; [`inspect`] turns
//!   that and the pid's liveness into a [`State`]: running, unhealthy, stale.
//! * An instance with TCP listeners also has a bearer token ([`new_token`]), stored
//!   0600 next to its record as `<name>.token` ([`Claim::with_token`]), never in the
//!   record's JSON; records read from a [`Registry`] carry it ([`Record::token`]) and
//!   [`inspect`] presents it to the health endpoint.
//! * [`Registry::claim`] is the single-instance guard: under an OS file lock it decides
//!   whether this process may take a name *before* any socket is bound;
//!   [`Claim::register`] writes the record and releases the lock; the [`Registration`]
//!   removes the record at shutdown only if it still holds this instance's nonce.
//!
//! Records of every endpoint kind read and write on every OS, so a Linux `pipegate
//! status` can show a record naming a pipe; only probing needs the transport to exist.
//!
//! # Examples
//!
//! Claim a name, register an instance listening on loopback TCP, find it, shut down:
//!
//! ```
//! use pipegate_discovery::{ClaimOptions, InstanceMode, Registry};
//! use pipegate_transport::Endpoint;
//!
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let state = tempfile::tempdir()?;
//! let registry = Registry::new(state.path().join("pipegate"));
//! let claim = registry.claim("demo", &ClaimOptions::new()).await?;
//! // … bind the listeners here, and make the server answer health checks with
//! // `claim.nonce()` …
//! let endpoint = Endpoint::parse("127.0.0.1:4000")?;
//! let registration = claim.register(vec![endpoint.clone()], InstanceMode::Agent, None)?;
//!
//! let listed = registry.list()?;
//! assert_eq!(listed[0].name, "demo");
//! assert_eq!(listed[0].record.as_ref().map(|r| &r.url).ok(), Some(&endpoint));
//!
//! assert!(registration.deregister()?);
//! assert!(registry.read("demo")?.is_none());
//! # Ok(()) }
//! ```
#![warn(missing_docs)]
#![doc(test(attr(deny(warnings))))]

mod error;
#[doc(hidden)]
pub mod fuzzing;
mod health;
mod record;
mod registry;
mod security;
mod sys;
mod token;

pub use error::{Error, ErrorKind, Result};
pub use health::{
    check_health, check_health_with_token, inspect, new_nonce, State, Status, HEALTH_PATH,
    HEALTH_TIMEOUT, NONCE_HEADER,
};
pub use record::{InstanceMode, Record};
pub use registry::{
    state_dir, validate_name, Claim, ClaimOptions, Entry, Registration, Registry, DEFAULT_NAME,
    LOCK_TIMEOUT,
};
pub use security::{path_security, PathSecurity};
pub use token::{new_token, read_token_file, TokenFile};
