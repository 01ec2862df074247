//! [`Connector`]: the client side. It starts (or dials) the far side's `pipegate mux`
//! once, opens one stream per connection on it, and restarts it when it dies.

use std::collections::VecDeque;
use std::fmt;
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pipegate_transport::{
    connect, ConnectOptions, Dialer, Dialing, Endpoint, ProcessTree, Stream, Tunnel,
};
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, ChildStderr, Command};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::error::{Error, ErrorKind, Result};
use crate::protocol::{self, Answer, Request, Status};
use crate::session::{self, MuxStream, Pending, Session, StreamIo, WireIo};
use crate::sys;
use crate::via::Via;

/// Lines of the helper's stderr kept for the log line when it dies.
const STDERR_TAIL_LINES: usize = 20;
/// Longest stderr line kept (longer ones are cut).
const STDERR_LINE_MAX: usize = 512;
/// A session that served streams for at least this long before dying restarts at once.
const HEALTHY_RUN: Duration = Duration::from_secs(10);
/// First and largest restart delays after consecutive failures.
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// How long a closing session may take to say goodbye, and a helper to exit after that.
const CLOSE_GRACE: Duration = Duration::from_secs(2);
const EXIT_GRACE: Duration = Duration::from_secs(3);
/// How long past a stream's dial deadline its answer may come: the far side answers an
/// unreachable endpoint when its own dial times out, so leave it a moment to say so.
const VERDICT_GRACE: Duration = Duration::from_secs(1);
/// How long to wait for a session's task to record why the session ended.
const SETTLE: Duration = Duration::from_secs(1);

/// Tuning for a [`Connector`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ConnectorOptions {
    /// How long a new session may take to answer its first stream header (a helper under
    /// Wine or WSL interop can take seconds to start). Later streams get the dial timeout.
    pub startup_timeout: Duration,
    /// Whether [`Dialer::dial`] hands out a stream as soon as its header is sent, instead of
    /// after the far side's answer (see [`Connector::open_optimistic`]). Off by default.
    pub optimistic_open: bool,
}

impl Default for ConnectorOptions {
    fn default() -> ConnectorOptions {
        ConnectorOptions {
            startup_timeout: Duration::from_secs(30),
            optimistic_open: false,
        }
    }
}

impl ConnectorOptions {
    /// The defaults: a 30 s start-up allowance, streams handed out once answered.
    pub fn new() -> ConnectorOptions {
        ConnectorOptions::default()
    }

    /// Sets [`startup_timeout`](ConnectorOptions::startup_timeout).
    pub fn startup_timeout(mut self, timeout: Duration) -> ConnectorOptions {
        self.startup_timeout = timeout;
        self
    }

    /// Sets [`optimistic_open`](ConnectorOptions::optimistic_open).
    pub fn optimistic_open(mut self, optimistic: bool) -> ConnectorOptions {
        self.optimistic_open = optimistic;
        self
    }
}

/// Opens streams to endpoints through one multiplexed session with a `pipegate mux`.
///
/// With [`Via::Exec`] the helper process is started on the first use (or by
/// [`Connector::start`]) and kept for every later stream. When it exits, its exit status
/// and the tail of its stderr are logged, the streams in flight fail (reads and writes
/// return `ConnectionAborted`), and the next stream starts a new helper: at once if the
/// last one served streams for a while, else after a back-off (100 ms, doubling, at most
/// 10 s) that a stream waits out if its deadline allows. With [`Via::Endpoint`] the same
/// holds for the one connection to a `pipegate mux --listen`.
///
/// The connector is a [`Dialer`], so a bridge or a hyper connector can use it as is.
/// Clones share the session.
///
/// # Platform-specific behavior
///
/// On Unix the helper leads its own process group; when it exits, and at
/// [`shutdown`](Connector::shutdown), whatever is left in that group is killed, and the
/// helper itself is killed when its handle is dropped. A helper whose stdin closes (the
/// connector's process died) ends by itself, as `pipegate mux` does. On Windows the
/// helper runs without a console window, in a Job object that kills it and every process
/// it starts when the job is closed: when it exits, at shutdown, on drop, and when this
/// process dies, even by `TerminateProcess`.
#[derive(Clone)]
pub struct Connector {
    inner: Arc<Inner>,
}

struct Inner {
    via: Via,
    label: String,
    options: ConnectorOptions,
    slot: tokio::sync::Mutex<Slot>,
    closing: CancellationToken,
    tasks: TaskTracker,
}

#[derive(Default)]
struct Slot {
    current: Option<Arc<Session>>,
    generation: u64,
    failures: u32,
    retry_at: Option<Instant>,
    last_failure: Option<String>,
}

impl fmt::Debug for Connector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connector")
            .field("via", &self.inner.label)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for Connector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.inner.label)
    }
}

fn backoff(failures: u32) -> Duration {
    if failures == 0 {
        return Duration::ZERO;
    }
    BACKOFF_FIRST
        .saturating_mul(1 << failures.saturating_sub(1).min(16))
        .min(BACKOFF_MAX)
}

impl Connector {
    /// A connector for `via`; nothing starts until [`start`](Connector::start) or the
    /// first [`open`](Connector::open).
    pub fn new(via: Via, options: ConnectorOptions) -> Connector {
        Connector {
            inner: Arc::new(Inner {
                label: via.to_string(),
                via,
                options,
                slot: tokio::sync::Mutex::new(Slot::default()),
                closing: CancellationToken::new(),
                tasks: TaskTracker::new(),
            }),
        }
    }

    /// The route.
    pub fn via(&self) -> &Via {
        &self.inner.via
    }

    /// Starts the session now and checks that the far side is a `pipegate mux` (a hello
    /// stream); returns the version it reports.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::HelperFailed`] when the helper cannot be started or exits,
    /// [`ErrorKind::Protocol`] when it does not speak the protocol,
    /// [`ErrorKind::TimedOut`] after [`ConnectorOptions::startup_timeout`], or the
    /// transport's error for an endpoint.
    pub async fn start(&self) -> Result<String> {
        let deadline = Instant::now() + self.inner.options.startup_timeout;
        let (session, stream, _permit) = self.raw_stream(deadline).await?;
        let mut io = StreamIo::new(stream);
        let deadline = self.session_deadline(&session, deadline);
        let answer = self
            .exchange(&session, &mut io, &Request::Hello, deadline)
            .await?;
        Ok(answer.message)
    }

    /// Opens a stream to `endpoint` within `timeout` (plus the start-up allowance while a
    /// new session has not answered yet).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::NotAllowed`] (the far side's refusal, naming the `--allow` it needs),
    /// [`ErrorKind::Unreachable`] (the far side's dial failed, with its reason),
    /// [`ErrorKind::TimedOut`], [`ErrorKind::TooManyStreams`], or the errors of
    /// [`start`](Connector::start).
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: a stream being opened is dropped (and reset) with the future.
    pub async fn open(&self, endpoint: &Endpoint, timeout: Duration) -> Result<MuxStream> {
        self.open_stream(endpoint, timeout, false).await
    }

    /// Like [`open`](Connector::open), but returns at once, without waiting for the far
    /// side's answer: the stream's header goes out with the first write (in the same
    /// frame as its bytes), or with the first read, flush or shutdown, which saves a round
    /// trip to the far side per stream. The far side's verdict comes with the first read:
    /// a refusal or a failed dial there fails that read (and every later one) with the
    /// error `open` would have returned, as an `io::Error` (see [`Error::into_io`]) whose
    /// inner error is that [`Error`]; bytes written before it are dropped. Reads wait for
    /// the verdict at most `timeout` (plus a second for the far side's own dial timeout to
    /// report). A stream dropped unused never reaches the far side.
    ///
    /// The upstream's half-close support ([`MuxStream::upstream_half_close`]) is inferred
    /// from the endpoint's kind (a named pipe has none). While a new session has not
    /// answered any stream yet (a helper just started or restarted), this waits for the
    /// answer like `open`, so a helper that is not a `pipegate mux` still fails here.
    ///
    /// # Errors
    ///
    /// As [`open`](Connector::open), except refusals and dial failures on the far side.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe, like `open`.
    pub async fn open_optimistic(
        &self,
        endpoint: &Endpoint,
        timeout: Duration,
    ) -> Result<MuxStream> {
        self.open_stream(endpoint, timeout, true).await
    }

    async fn open_stream(
        &self,
        endpoint: &Endpoint,
        timeout: Duration,
        optimistic: bool,
    ) -> Result<MuxStream> {
        let deadline = Instant::now() + timeout;
        let request = Request::Open {
            endpoint: endpoint.to_string(),
            timeout: Some(timeout),
        };
        let (session, stream, permit) = self.raw_stream(deadline).await?;
        if optimistic && session.is_proven() {
            let header = protocol::encode_request(&request).map_err(|e| {
                Error::new(ErrorKind::Protocol, format!("cannot ask for {endpoint}")).with_source(e)
            })?;
            let verdict = Pending::new(
                header,
                self.inner.label.clone(),
                endpoint.to_string(),
                tokio::time::Instant::from_std(deadline + VERDICT_GRACE),
            );
            // What the far side's transport reports for a connection it dialed.
            let half_close = !matches!(endpoint, Endpoint::NamedPipe(_));
            return Ok(MuxStream::optimistic(
                StreamIo::new(stream),
                session,
                half_close,
                permit,
                verdict,
            ));
        }
        let mut io = StreamIo::new(stream);
        let answer = self
            .exchange(
                &session,
                &mut io,
                &request,
                self.session_deadline(&session, deadline),
            )
            .await?;
        let half_close = answer.half_close;
        verdict(
            &self.inner.label,
            &endpoint.to_string(),
            answer.message,
            answer.status,
        )?;
        Ok(MuxStream::new(io, session, half_close, permit))
    }

    /// A raw stream on the live session, and the session.
    ///
    /// A session can end between being picked and giving out the stream (the far side
    /// went away a moment ago). Nothing reached the far side then, so the stream is asked
    /// of the next session, once; a stream that was already given out is never retried
    /// here (the far side may have acted on it).
    async fn raw_stream(
        &self,
        deadline: Instant,
    ) -> Result<(
        Arc<Session>,
        yamux::Stream,
        tokio::sync::OwnedSemaphorePermit,
    )> {
        let mut retried = false;
        loop {
            let session = self.session(deadline).await?;
            let limit = tokio::time::Instant::from_std(self.session_deadline(&session, deadline));
            match session.open_raw(limit).await {
                Ok((stream, permit)) => return Ok((session, stream, permit)),
                Err(e)
                    if e.kind() == ErrorKind::SessionClosed
                        && !retried
                        && !self.inner.closing.is_cancelled() =>
                {
                    retried = true;
                    session.settle(SETTLE).await;
                    tracing::debug!(
                        via = %self.inner.label,
                        session = session.generation,
                        "the mux session ended before the stream opened; asking the next one"
                    );
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// How long a stream on `session` may take: a session that never answered yet may
    /// still be starting (Wine, WSL interop), so it gets the startup timeout.
    fn session_deadline(&self, session: &Session, deadline: Instant) -> Instant {
        if session.is_proven() {
            deadline
        } else {
            deadline.max(session.started + self.inner.options.startup_timeout)
        }
    }

    /// Closes the session (the helper sees its stdin close and exits; one that does not
    /// within a few seconds is killed, with what is left of its process tree) and waits
    /// for that. Streams still open fail; later opens fail with
    /// [`ErrorKind::SessionClosed`].
    pub async fn shutdown(&self) {
        self.inner.closing.cancel();
        self.inner.tasks.close();
        let limit = CLOSE_GRACE + EXIT_GRACE + Duration::from_secs(2);
        if tokio::time::timeout(limit, self.inner.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(via = %self.inner.label, "the mux session did not stop in time");
        }
    }

    /// Writes `request` on a raw stream of `session` and reads the answer.
    async fn exchange(
        &self,
        session: &Session,
        io: &mut StreamIo,
        request: &Request,
        deadline: Instant,
    ) -> Result<Answer> {
        let exchange = async {
            protocol::write_request(&mut *io, request).await?;
            protocol::read_answer(&mut *io).await
        };
        let limit = tokio::time::Instant::from_std(deadline + VERDICT_GRACE);
        let answer = match tokio::time::timeout_at(limit, exchange).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(e)) => {
                // A helper that died says more than the broken stream does.
                session.settle(SETTLE).await;
                if !session.is_alive() {
                    return Err(session.closed_error());
                }
                return Err(Error::new(
                    ErrorKind::Protocol,
                    format!(
                        "{} broke off the stream header; is it `pipegate mux`?",
                        self.inner.label
                    ),
                )
                .with_source(e));
            }
            Err(_) => {
                return Err(Error::new(
                    ErrorKind::TimedOut,
                    format!("{} did not answer in time", self.inner.label),
                ))
            }
        };
        session.set_proven();
        Ok(answer)
    }

    /// The live session, starting one (after any back-off) if there is none.
    async fn session(&self, deadline: Instant) -> Result<Arc<Session>> {
        let inner = &self.inner;
        // Another stream may be starting the session (or waiting out a back-off).
        let locked =
            tokio::time::timeout_at(tokio::time::Instant::from_std(deadline), inner.slot.lock())
                .await;
        let Ok(mut slot) = locked else {
            return Err(Error::new(
                ErrorKind::TimedOut,
                format!("timed out waiting for {} to start", inner.label),
            ));
        };
        if let Some(current) = &slot.current {
            if current.is_alive() {
                return Ok(Arc::clone(current));
            }
            // It died since the last stream: account for it. One that served streams for
            // a while restarts at once; one that failed early backs off, more each time.
            if let Some(dead) = slot.current.take() {
                // Its task may not have recorded why yet (it does so just after).
                dead.settle(SETTLE).await;
                if let Some(end) = dead.end() {
                    let healthy =
                        dead.is_proven() && end.at.duration_since(dead.started) >= HEALTHY_RUN;
                    slot.failures = if healthy { 0 } else { slot.failures + 1 };
                    slot.retry_at = Some(end.at + backoff(slot.failures));
                    slot.last_failure = Some(end.reason.clone());
                }
            }
        }
        if inner.closing.is_cancelled() {
            return Err(Error::new(
                ErrorKind::SessionClosed,
                format!("{} is shutting down", inner.label),
            ));
        }
        if let Some(at) = slot.retry_at {
            let now = Instant::now();
            if at > now {
                let last = slot.last_failure.clone().unwrap_or_default();
                if at > deadline {
                    return Err(Error::new(
                        ErrorKind::HelperFailed,
                        format!(
                            "{} failed {} times in a row; the next try is in {} ms (last: {last})",
                            inner.label,
                            slot.failures,
                            (at - now).as_millis()
                        ),
                    ));
                }
                tracing::info!(
                    via = %inner.label,
                    delay_ms = (at - now).as_millis() as u64,
                    "restarting the mux session after a back-off"
                );
                tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await;
            }
        }
        slot.generation += 1;
        let generation = slot.generation;
        match self.start_session(generation, deadline).await {
            Ok(session) => {
                slot.current = Some(Arc::clone(&session));
                slot.retry_at = None;
                Ok(session)
            }
            Err(e) => {
                slot.failures += 1;
                slot.retry_at = Some(Instant::now() + backoff(slot.failures));
                slot.last_failure = Some(e.to_string());
                Err(e)
            }
        }
    }

    async fn start_session(&self, generation: u64, deadline: Instant) -> Result<Arc<Session>> {
        let inner = &self.inner;
        let (session, requests) = Session::new(generation);
        match &inner.via {
            Via::Exec(argv) => {
                let (helper, wire, stderr) = self.spawn_helper(argv)?;
                let conn = session::connection(wire, yamux::Mode::Client);
                inner.tasks.spawn(run_helper(
                    Arc::clone(&session),
                    conn,
                    requests,
                    helper,
                    stderr,
                    inner.label.clone(),
                    inner.closing.clone(),
                ));
            }
            Via::Endpoint(endpoint) => {
                let timeout = deadline
                    .saturating_duration_since(Instant::now())
                    .max(Duration::from_millis(100));
                let stream = connect(endpoint, &ConnectOptions::new().timeout(timeout))
                    .await
                    .map_err(|e| {
                        Error::new(ErrorKind::Io, format!("cannot reach the mux at {endpoint}"))
                            .with_source(e)
                    })?;
                tracing::info!(via = %inner.label, session = generation, "mux session opened");
                let conn = session::connection(Box::new(stream), yamux::Mode::Client);
                inner.tasks.spawn(run_remote(
                    Arc::clone(&session),
                    conn,
                    requests,
                    inner.label.clone(),
                    inner.closing.clone(),
                ));
            }
        }
        Ok(session)
    }

    fn spawn_helper(&self, argv: &[String]) -> Result<(Helper, Box<dyn WireIo>, StderrTail)> {
        let label = &self.inner.label;
        let (program, args) = argv
            .split_first()
            .ok_or_else(|| Error::new(ErrorKind::InvalidVia, "exec: needs a command"))?;
        let mut cmd = Command::new(program);
        cmd.args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        sys::configure(&mut cmd);
        let mut child = cmd.spawn().map_err(|e| {
            Error::new(
                ErrorKind::HelperFailed,
                format!("cannot start the mux helper ({label})"),
            )
            .with_source(e)
        })?;
        let pid = child.id().unwrap_or_default();
        let tree = match ProcessTree::new(&child) {
            Ok(tree) => Some(tree),
            Err(e) => {
                tracing::warn!(
                    via = %label,
                    helper.pid = pid,
                    error = %e,
                    "cannot hold on to the mux helper's process tree: processes it starts \
                     may outlive it"
                );
                None
            }
        };
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(Error::new(
                ErrorKind::HelperFailed,
                format!("the mux helper ({label}) has no stdio pipes"),
            ));
        };
        tracing::info!(via = %label, helper.pid = pid, "mux helper started");
        let wire: Box<dyn WireIo> = Box::new(tokio::io::join(stdout, stdin));
        Ok((
            Helper { child, tree },
            wire,
            StderrTail::collect(stderr, pid),
        ))
    }
}

/// What the far side's answer means for a stream to `endpoint`: `Ok` to go on, or the
/// error that `open` returns (and an optimistic stream's first read).
pub(crate) fn verdict(label: &str, endpoint: &str, message: String, status: Status) -> Result<()> {
    match status {
        Status::Ok => Ok(()),
        Status::NotAllowed => Err(Error::new(ErrorKind::NotAllowed, message)),
        Status::Unreachable => Err(Error::new(
            ErrorKind::Unreachable,
            format!("{label} cannot reach {endpoint}: {message}"),
        )),
        Status::BadRequest => Err(Error::new(
            ErrorKind::Protocol,
            format!("{label} rejected the stream header: {message}"),
        )),
    }
}

impl Dialer for Connector {
    /// Opens a stream with [`open`](Connector::open), or with
    /// [`open_optimistic`](Connector::open_optimistic) if
    /// [`ConnectorOptions::optimistic_open`] is set.
    fn dial<'a>(&'a self, endpoint: &'a Endpoint, options: &'a ConnectOptions) -> Dialing<'a> {
        Box::pin(async move {
            let optimistic = self.inner.options.optimistic_open;
            let stream = self
                .open_stream(endpoint, options.timeout, optimistic)
                .await
                .map_err(Error::into_io)?;
            let tunnel = Tunnel::new(
                self.inner.label.clone(),
                stream.session(),
                stream.id(),
                stream.open_streams(),
            );
            let half_close = stream.upstream_half_close();
            Ok(Stream::tunneled(stream, endpoint, half_close, tunnel))
        })
    }
}

/// The last lines a helper wrote to stderr; every line is also logged at debug level.
struct StderrTail {
    lines: Arc<Mutex<VecDeque<String>>>,
    task: JoinHandle<()>,
}

impl StderrTail {
    fn collect(stderr: ChildStderr, pid: u32) -> StderrTail {
        let lines = Arc::new(Mutex::new(VecDeque::new()));
        let sink = Arc::clone(&lines);
        let task = tokio::spawn(async move {
            let mut reader = BufReader::new(stderr);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match reader.read_until(b'\n', &mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let mut line = String::from_utf8_lossy(&buf)
                            .trim_end_matches(['\r', '\n'])
                            .to_owned();
                        if line.len() > STDERR_LINE_MAX {
                            let mut end = STDERR_LINE_MAX;
                            while !line.is_char_boundary(end) {
                                end -= 1;
                            }
                            line.truncate(end);
                        }
                        tracing::debug!(helper.pid = pid, "helper: {line}");
                        let mut lines = sink.lock().unwrap_or_else(|p| p.into_inner());
                        if lines.len() == STDERR_TAIL_LINES {
                            lines.pop_front();
                        }
                        lines.push_back(line);
                    }
                }
            }
        });
        StderrTail { lines, task }
    }

    /// Waits briefly for the helper's last words, then returns the tail, one string.
    async fn finish(self) -> String {
        let mut task = self.task;
        if tokio::time::timeout(Duration::from_millis(500), &mut task)
            .await
            .is_err()
        {
            task.abort();
        }
        let lines = self.lines.lock().unwrap_or_else(|p| p.into_inner());
        lines.iter().cloned().collect::<Vec<_>>().join("\n")
    }
}

fn describe_exit(status: &std::io::Result<ExitStatus>) -> String {
    match status {
        Ok(status) => status.to_string(),
        Err(e) => format!("unknown ({e})"),
    }
}

/// A helper process and its process tree (`None` if the platform would not track it).
struct Helper {
    child: Child,
    tree: Option<ProcessTree>,
}

impl Helper {
    /// Kills whatever is left of the helper's process tree.
    fn kill_tree(&self) {
        if let Some(tree) = &self.tree {
            tree.kill();
        }
    }
}

/// Runs a helper's session until it ends, then reaps the helper and records why.
async fn run_helper(
    session: Arc<Session>,
    conn: yamux::Connection<session::Wire>,
    requests: tokio::sync::mpsc::Receiver<session::OpenReply>,
    mut helper: Helper,
    stderr: StderrTail,
    label: String,
    closing: CancellationToken,
) {
    let pid = helper.child.id().unwrap_or_default();
    let close = CancellationToken::new();
    let drive = session::drive(conn, Some(requests), drop, close.clone());
    tokio::pin!(drive);
    let mut status = None;
    let result = tokio::select! {
        result = &mut drive => result,
        exit = helper.child.wait() => {
            status = Some(exit);
            // Whatever it started may hold its stdout open: end those, then let the
            // session see EOF.
            helper.kill_tree();
            tokio::time::timeout(CLOSE_GRACE, &mut drive)
                .await
                .unwrap_or(Err(yamux::ConnectionError::Closed))
        }
        _ = closing.cancelled() => {
            close.cancel();
            tokio::time::timeout(CLOSE_GRACE, &mut drive)
                .await
                .unwrap_or(Ok(()))
        }
    };
    // No new stream may pick this session any more.
    session.set_ended(match (&status, closing.is_cancelled()) {
        (_, true) => format!("{label} is shutting down"),
        (Some(exit), false) => format!(
            "the mux helper ({label}, pid {pid}) exited: {}",
            describe_exit(exit)
        ),
        (None, false) => format!("the mux helper ({label}, pid {pid}) ended its session"),
    });
    // The connection is gone, so is the helper's stdin: it should exit by itself.
    let status = match status {
        Some(status) => status,
        None => match tokio::time::timeout(EXIT_GRACE, helper.child.wait()).await {
            Ok(status) => status,
            Err(_) => {
                let _ = helper.child.start_kill();
                helper.child.wait().await
            }
        },
    };
    helper.kill_tree();
    let tail = stderr.finish().await;
    let exit = describe_exit(&status);
    let stats = &session.stats;
    let failed = stats.open.load(Ordering::Relaxed);
    if closing.is_cancelled() {
        session.set_final(format!("{label} is shutting down"));
        tracing::info!(
            via = %label,
            helper.pid = pid,
            exit_status = %exit,
            session = session.generation,
            streams = stats.opened.load(Ordering::Relaxed),
            bytes.to_helper = stats.bytes_out.load(Ordering::Relaxed),
            bytes.from_helper = stats.bytes_in.load(Ordering::Relaxed),
            "mux helper stopped"
        );
        return;
    }
    session.set_final(format!(
        "the mux helper ({label}, pid {pid}) exited: {exit}"
    ));
    tracing::warn!(
        via = %label,
        helper.pid = pid,
        exit_status = %exit,
        stderr_tail = ?tail,
        session = session.generation,
        streams = stats.opened.load(Ordering::Relaxed),
        streams_failed = failed,
        bytes.to_helper = stats.bytes_out.load(Ordering::Relaxed),
        bytes.from_helper = stats.bytes_in.load(Ordering::Relaxed),
        error = result.err().map(tracing::field::display),
        "mux helper exited; it is restarted for the next connection"
    );
}

/// Runs a session to a `pipegate mux --listen` until it ends, and records why.
async fn run_remote(
    session: Arc<Session>,
    conn: yamux::Connection<session::Wire>,
    requests: tokio::sync::mpsc::Receiver<session::OpenReply>,
    label: String,
    closing: CancellationToken,
) {
    let close = CancellationToken::new();
    let drive = session::drive(conn, Some(requests), drop, close.clone());
    tokio::pin!(drive);
    let result = tokio::select! {
        result = &mut drive => result,
        _ = closing.cancelled() => {
            close.cancel();
            tokio::time::timeout(CLOSE_GRACE, &mut drive).await.unwrap_or(Ok(()))
        }
    };
    let stats = &session.stats;
    if closing.is_cancelled() {
        session.set_final(format!("{label} is shutting down"));
        tracing::info!(via = %label, session = session.generation, "mux session closed");
        return;
    }
    let reason = match &result {
        Ok(()) => format!("the mux at {label} closed the session"),
        Err(e) => format!("the session with the mux at {label} failed: {e}"),
    };
    session.set_final(reason.clone());
    tracing::warn!(
        via = %label,
        session = session.generation,
        streams = stats.opened.load(Ordering::Relaxed),
        streams_failed = stats.open.load(Ordering::Relaxed),
        bytes.to_helper = stats.bytes_out.load(Ordering::Relaxed),
        bytes.from_helper = stats.bytes_in.load(Ordering::Relaxed),
        "{reason}; it is reopened for the next connection"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Server, ServerConfig};
    use pipegate_transport::{ListenOptions, Listener};
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    /// A mux server on loopback allowing one echo upstream; returns the connector to it
    /// and the upstream. Both serve until the runtime ends.
    async fn mux_and_echo() -> (Connector, Endpoint) {
        let echo = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let upstream = Endpoint::loopback(echo.local_addr().unwrap().port());
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = echo.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = stream.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        let listener = Listener::bind(&Endpoint::loopback(0), &ListenOptions::new())
            .await
            .unwrap();
        let via = Via::Endpoint(listener.local_endpoint().clone());
        let server = Server::new(ServerConfig::new(vec![upstream.clone()]));
        tokio::spawn(async move {
            server
                .serve_listener(listener, std::future::pending::<()>())
                .await;
        });
        (Connector::new(via, ConnectorOptions::new()), upstream)
    }

    /// Puts `session` in the connector's slot as its current (first) session.
    async fn install(connector: &Connector, session: Arc<Session>) {
        let mut slot = connector.inner.slot.lock().await;
        slot.generation = session.generation;
        slot.current = Some(session);
    }

    /// Opens a stream through `connector` (whose current session is broken), checks it
    /// came from the next session, and echoes through it.
    async fn assert_opens_on_the_next_session(connector: &Connector, upstream: &Endpoint) {
        let mut stream = connector
            .open(upstream, Duration::from_secs(10))
            .await
            .expect("a stream from the next session, not the broken one's error");
        assert_eq!(stream.session(), 2);
        stream.write_all(b"ping").await.unwrap();
        let mut back = [0u8; 4];
        stream.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"ping");
    }

    #[tokio::test]
    async fn a_session_whose_driver_stopped_is_replaced_before_its_end_is_recorded() {
        let (connector, upstream) = mux_and_echo().await;
        // The connection's driver is gone (it dropped its requests), and the task that
        // records why has not run yet: the window after a far side went away.
        let (dead, requests) = Session::new(1);
        drop(requests);
        install(&connector, dead).await;
        assert_opens_on_the_next_session(&connector, &upstream).await;
    }

    #[tokio::test]
    async fn a_session_that_ends_while_opening_a_stream_hands_the_open_to_the_next() {
        let (connector, upstream) = mux_and_echo().await;
        // Alive when picked; its driver takes the request and then stops without a
        // stream, as one does when the connection dies under it.
        let (dying, mut requests) = Session::new(1);
        tokio::spawn(async move {
            let reply = requests.recv().await;
            drop(requests);
            drop(reply);
        });
        install(&connector, dying).await;
        assert_opens_on_the_next_session(&connector, &upstream).await;
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        assert_eq!(backoff(0), Duration::ZERO);
        assert_eq!(backoff(1), Duration::from_millis(100));
        assert_eq!(backoff(2), Duration::from_millis(200));
        assert_eq!(backoff(4), Duration::from_millis(800));
        assert_eq!(backoff(30), BACKOFF_MAX);
    }
}
