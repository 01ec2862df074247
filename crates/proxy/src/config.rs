//! Validated bridge configuration.

use std::time::Duration;

use pipegate_transport::{ConnectOptions, Endpoint, ListenOptions};

/// How connections are forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ForwardMode {
    /// Bytes both ways, no protocol awareness.
    Raw,
}

impl ForwardMode {
    /// `raw` (the value in logs and instance records).
    pub fn as_str(self) -> &'static str {
        match self {
            ForwardMode::Raw => "raw",
        }
    }
}

/// What a [`Bridge`](crate::Bridge) listens on and forwards to.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// Endpoints to listen on (at least one).
    pub listen: Vec<Endpoint>,
    /// Where every connection is forwarded.
    pub upstream: Endpoint,
    /// How.
    pub mode: ForwardMode,
    /// Secure-default overrides for the listeners.
    pub listen_options: ListenOptions,
    /// How the upstream is dialed.
    pub connect_options: ConnectOptions,
    /// How long open connections may take to finish after shutdown begins.
    pub shutdown_grace: Duration,
}

impl Config {
    /// A configuration with secure listen defaults, a 5 s dial deadline and a 10 s grace.
    pub fn new(listen: Vec<Endpoint>, upstream: Endpoint, mode: ForwardMode) -> Config {
        Config {
            listen,
            upstream,
            mode,
            listen_options: ListenOptions::default(),
            connect_options: ConnectOptions::default(),
            shutdown_grace: Duration::from_secs(10),
        }
    }

    /// Sets [`listen_options`](Config::listen_options).
    pub fn listen_options(mut self, options: ListenOptions) -> Config {
        self.listen_options = options;
        self
    }

    /// Sets [`connect_options`](Config::connect_options).
    pub fn connect_options(mut self, options: ConnectOptions) -> Config {
        self.connect_options = options;
        self
    }

    /// Sets [`shutdown_grace`](Config::shutdown_grace).
    pub fn shutdown_grace(mut self, grace: Duration) -> Config {
        self.shutdown_grace = grace;
        self
    }
}
