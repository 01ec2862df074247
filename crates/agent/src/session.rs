//! Sessions: one running program each, with a bounded output queue, an input writer, and
//! a janitor that ends abandoned sessions.
//!
//! # Data flow and back-pressure
//!
//! ```text
//! program ─► pty/pipes ─► pump ─► output queue (OUTPUT_QUEUE chunks) ─► attached WebSocket
//! program ◄─ pty/pipes ◄─ input task ◄─ input queue (byte budget) ◄─── attached WebSocket
//! ```
//!
//! The pump awaits room in the output queue, so a slow (or absent) reader stops the
//! pump, the kernel's terminal or pipe buffer fills, and the program blocks in `write`.
//! Memory per session is bounded by the queue (chunks of at most [`CHUNK`] bytes) and
//! the input budget ([`Limits::stdin_buffer`]). After the program exits the pump reads
//! what is left until EOF/EIO, then queues the exit status last, so a client always gets
//! every byte of output before the status.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::FutureExt;
use tokio::io::AsyncReadExt;
use tokio::sync::{mpsc, watch, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::error::ApiError;
use crate::protocol::{channel, ExitInfo, SessionInfo, SessionState, Signal, Status};
use crate::pty::{self, ControlError, Process, Reader, SpawnError, Spec};
use crate::Limits;

/// Largest output chunk read at once (one WebSocket message, plus the channel byte).
pub(crate) const CHUNK: usize = 32 * 1024;

/// Output chunks queued per session before the pump waits for the client.
pub(crate) const OUTPUT_QUEUE: usize = 8;

/// After the program exits, how long the pump waits for more output from processes
/// that still hold the terminal or pipes, per read and in total.
const DRAIN_IDLE: Duration = Duration::from_millis(250);
const DRAIN_TOTAL: Duration = Duration::from_secs(2);

/// At shutdown, how long to wait for attached clients to receive their status.
const SHUTDOWN_DELIVERY: Duration = Duration::from_secs(3);

/// What the pump queues for the attached client.
#[derive(Debug)]
pub(crate) enum Event {
    /// A framed output message: `[channel][bytes]`.
    Output(Bytes),
    /// The program ended and all its output was queued before this.
    Exit(Status),
}

/// What the client sends for the program's input.
#[derive(Debug)]
enum Input {
    /// Bytes, holding their share of the input budget until written.
    Data(Bytes, OwnedSemaphorePermit),
    /// End of input.
    Eof,
}

/// Why input was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum InputError {
    /// More unwritten input than the budget allows is waiting.
    Overflow,
    /// The program's input is gone.
    Closed,
}

/// Who holds the output queue.
#[derive(Debug)]
enum Attach {
    /// Nobody is attached; the queue waits here.
    Detached {
        output: mpsc::Receiver<Event>,
        since: Instant,
    },
    /// A WebSocket holds the queue.
    Attached,
    /// The status was delivered; the session stays visible until `since + retention`.
    Delivered { since: Instant },
    /// Removed from the registry.
    Removed,
}

/// One session.
#[derive(Debug)]
pub(crate) struct Session {
    pub(crate) id: String,
    pub(crate) pid: u32,
    pub(crate) tty: bool,
    pub(crate) argv: Vec<String>,
    /// [`Limits::ping_timeout`] for the clients that attach.
    pub(crate) ping_timeout: Duration,
    control: pty::Control,
    input: mpsc::UnboundedSender<Input>,
    budget: Arc<Semaphore>,
    exit: watch::Receiver<Option<ExitInfo>>,
    attach: Mutex<Attach>,
    /// Wakes the janitor when `attach` changes.
    changed: Notify,
}

impl Session {
    fn attach_state(&self) -> MutexGuard<'_, Attach> {
        self.attach.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn is_attached(&self) -> bool {
        matches!(*self.attach_state(), Attach::Attached)
    }

    /// How the program ended, once it has.
    pub(crate) fn exit(&self) -> Option<ExitInfo> {
        self.exit.borrow().clone()
    }

    /// What `GET /v1/sessions/{id}` shows.
    pub(crate) fn info(&self) -> SessionInfo {
        let exit = self.exit();
        SessionInfo {
            id: self.id.clone(),
            state: if exit.is_some() {
                SessionState::Exited
            } else {
                SessionState::Running
            },
            pid: self.pid,
            argv: self.argv.clone(),
            tty: self.tty,
            attached: self.is_attached(),
            exit,
        }
    }

    /// Takes the output queue for a new attach.
    ///
    /// # Errors
    ///
    /// `409` while another client is attached, `410` once the status was delivered.
    pub(crate) fn take_output(&self) -> Result<mpsc::Receiver<Event>, ApiError> {
        let mut state = self.attach_state();
        match std::mem::replace(&mut *state, Attach::Attached) {
            Attach::Detached { output, .. } => {
                drop(state);
                self.changed.notify_one();
                Ok(output)
            }
            other => {
                let err = match &other {
                    Attach::Attached => ApiError::Conflict(
                        "another client is attached to this session; only one may be".into(),
                    ),
                    _ => ApiError::Gone(
                        "the session has ended and its output and status were delivered".into(),
                    ),
                };
                *state = other;
                Err(err)
            }
        }
    }

    /// Gives the output queue back after a client left without the status.
    pub(crate) fn detach(&self, output: mpsc::Receiver<Event>) {
        let mut state = self.attach_state();
        if matches!(*state, Attach::Attached) {
            *state = Attach::Detached {
                output,
                since: Instant::now(),
            };
        }
        drop(state);
        self.changed.notify_one();
    }

    /// Records that the status reached a client.
    pub(crate) fn delivered(&self) {
        let mut state = self.attach_state();
        if matches!(*state, Attach::Attached) {
            *state = Attach::Delivered {
                since: Instant::now(),
            };
        }
        drop(state);
        self.changed.notify_one();
    }

    /// Queues `data` for the program's input.
    ///
    /// # Errors
    ///
    /// [`InputError::Overflow`] when the input budget is used up (the program is not
    /// reading), [`InputError::Closed`] when input was closed or the program ended.
    pub(crate) fn write_input(&self, data: Bytes) -> Result<(), InputError> {
        if data.is_empty() {
            return Ok(());
        }
        let n = u32::try_from(data.len()).map_err(|_| InputError::Overflow)?;
        let permit = Arc::clone(&self.budget)
            .try_acquire_many_owned(n)
            .map_err(|_| InputError::Overflow)?;
        self.input
            .send(Input::Data(data, permit))
            .map_err(|_| InputError::Closed)
    }

    /// Ends the program's input once the queued bytes are written.
    pub(crate) fn close_input(&self) {
        let _ = self.input.send(Input::Eof);
    }

    /// Resizes the terminal.
    ///
    /// # Errors
    ///
    /// See [`pty::Control::resize`].
    pub(crate) fn resize(&self, size: crate::protocol::TerminalSize) -> Result<(), ControlError> {
        if self.exit.borrow().is_some() {
            return Err(ControlError::Exited);
        }
        self.control.resize(size)
    }

    /// Delivers a signal to the foreground process group.
    ///
    /// # Errors
    ///
    /// See [`pty::Control::signal`].
    pub(crate) fn signal(&self, signal: Signal) -> Result<(), ControlError> {
        if self.exit.borrow().is_some() {
            return Err(ControlError::Exited);
        }
        self.control.signal(signal)
    }

    /// Ends a session: SIGHUP (and SIGCONT, so stopped jobs see it) to every process
    /// group of the session, up to `grace` for the program to exit, then SIGKILL to the
    /// same groups. Returns once the program is gone (or after a bounded wait).
    ///
    /// A session whose program has already exited gets the same for what it left
    /// running: jobs in process groups of their own (a job-control shell's `cmd &`) or
    /// in the program's group (a plain `cmd &`) outlive it; the grace then ends when
    /// those groups are empty.
    pub(crate) async fn terminate(&self, grace: Duration) {
        let running = self.exit.borrow().is_none();
        let groups = self.control.groups();
        if !running && !self.control.any_alive(&groups) {
            return;
        }
        self.control.signal_groups(&groups, Signal::Hup);
        self.control.signal_groups(&groups, Signal::Cont);
        let mut exit = self.exit.clone();
        let ended = if running {
            tokio::time::timeout(grace, exit.wait_for(Option::is_some))
                .await
                .is_ok()
        } else {
            let deadline = Instant::now() + grace;
            while self.control.any_alive(&groups) && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            true
        };
        // The stragglers too (nohup'd jobs), in the groups found before the hangup.
        let more = self.control.groups();
        self.control.signal_groups(&groups, Signal::Kill);
        self.control.signal_groups(&more, Signal::Kill);
        if !ended {
            let _ =
                tokio::time::timeout(Duration::from_secs(5), exit.wait_for(Option::is_some)).await;
        }
    }
}

/// All sessions of one agent.
#[derive(Debug)]
pub(crate) struct Registry {
    sessions: Mutex<HashMap<String, Arc<Session>>>,
    limits: Limits,
    /// Set (under the `sessions` lock) by [`Registry::shutdown`]: no new sessions.
    closing: AtomicBool,
}

impl Registry {
    pub(crate) fn new(limits: Limits) -> Registry {
        Registry {
            sessions: Mutex::new(HashMap::new()),
            limits,
            closing: AtomicBool::new(false),
        }
    }

    fn map(&self) -> MutexGuard<'_, HashMap<String, Arc<Session>>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The session with this id.
    pub(crate) fn get(&self, id: &str) -> Result<Arc<Session>, ApiError> {
        self.map()
            .get(id)
            .cloned()
            .ok_or_else(|| ApiError::NoSession(id.to_owned()))
    }

    /// Every session's info.
    pub(crate) fn list(&self) -> Vec<SessionInfo> {
        let sessions: Vec<Arc<Session>> = self.map().values().cloned().collect();
        sessions.iter().map(|s| s.info()).collect()
    }

    /// Removes a session from the registry (it may still be running).
    fn remove(&self, id: &str) -> Option<Arc<Session>> {
        let session = self.map().remove(id)?;
        *session.attach_state() = Attach::Removed;
        session.changed.notify_one();
        Some(session)
    }

    /// `DELETE`: removes the session and ends its processes.
    pub(crate) async fn delete(&self, id: &str) -> Result<(), ApiError> {
        let session = self
            .remove(id)
            .ok_or_else(|| ApiError::NoSession(id.to_owned()))?;
        session.terminate(self.limits.kill_grace).await;
        Ok(())
    }

    /// Ends every session as [`Registry::delete`] does, all at once, and refuses new
    /// ones; then waits (briefly) for attached clients to receive their status.
    pub(crate) async fn shutdown(&self) {
        let sessions: Vec<Arc<Session>> = {
            let map = self.map();
            self.closing.store(true, Ordering::SeqCst);
            map.values().cloned().collect()
        };
        if sessions.is_empty() {
            return;
        }
        tracing::info!(sessions = sessions.len(), "ending the sessions");
        let grace = self.limits.kill_grace;
        let mut ending = tokio::task::JoinSet::new();
        for session in &sessions {
            let session = Arc::clone(session);
            ending.spawn(async move { session.terminate(grace).await });
        }
        while ending.join_next().await.is_some() {}
        // The status follows the program's remaining output to an attached client.
        let deadline = Instant::now() + SHUTDOWN_DELIVERY;
        while sessions.iter().any(|s| s.is_attached()) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Starts `spec` as a new session.
    ///
    /// # Errors
    ///
    /// `429` at the session limit, `503` once shutting down, `501` for what the platform
    /// cannot run, `400` when the program cannot be executed, `500` for other spawn
    /// failures.
    pub(crate) fn create(
        self: &Arc<Registry>,
        spec: Spec,
        argv: Vec<String>,
    ) -> Result<Arc<Session>, ApiError> {
        let mut map = self.map();
        if self.closing.load(Ordering::SeqCst) {
            return Err(ApiError::ShuttingDown);
        }
        let running = map.values().filter(|s| s.exit().is_none()).count();
        // Ended sessions are kept a while for GET; cap them too.
        if running >= self.limits.max_sessions || map.len() >= self.limits.max_sessions * 4 {
            return Err(ApiError::TooMany(self.limits.max_sessions));
        }
        let tty = spec.tty.is_some();
        let program = spec.program.display().to_string();
        let process = pty::spawn(spec).map_err(|e| match e {
            SpawnError::Unsupported(message) => ApiError::Unsupported(message.to_owned()),
            SpawnError::Io(e) => match e.kind() {
                std::io::ErrorKind::NotFound => {
                    ApiError::invalid("argv[0]", format!("{program}: no such file"))
                }
                std::io::ErrorKind::PermissionDenied => {
                    ApiError::invalid("argv[0]", format!("{program}: permission denied"))
                }
                _ => ApiError::internal(format!("cannot start {program}"), e),
            },
        })?;
        let id = format!("{:032x}", rand::random::<u128>());
        let Process {
            pid,
            child,
            stdout,
            stderr,
            stdin,
            control,
        } = process;
        let (out_tx, out_rx) = mpsc::channel(OUTPUT_QUEUE);
        let (in_tx, in_rx) = mpsc::unbounded_channel();
        let (exit_tx, exit_rx) = watch::channel(None);
        let budget = self.limits.stdin_buffer.min(Semaphore::MAX_PERMITS);
        let session = Arc::new(Session {
            id: id.clone(),
            pid,
            tty,
            argv,
            ping_timeout: self.limits.ping_timeout,
            control,
            input: in_tx,
            budget: Arc::new(Semaphore::new(budget)),
            exit: exit_rx,
            attach: Mutex::new(Attach::Detached {
                output: out_rx,
                since: Instant::now(),
            }),
            changed: Notify::new(),
        });
        map.insert(id, Arc::clone(&session));
        drop(map);
        tracing::info!(session.id = %session.id, pid, tty, "session started");
        tokio::spawn(input_task(stdin, in_rx, session.exit.clone()));
        tokio::spawn(supervise(
            Arc::clone(&session),
            child,
            stdout,
            stderr,
            out_tx,
            exit_tx,
        ));
        tokio::spawn(janitor(Arc::downgrade(self), Arc::clone(&session)));
        Ok(session)
    }
}

/// Writes queued input to the program until input ends or the program exits.
async fn input_task(
    mut stdin: pty::Stdin,
    mut queue: mpsc::UnboundedReceiver<Input>,
    mut exit: watch::Receiver<Option<ExitInfo>>,
) {
    let mut broken = false;
    loop {
        let input = tokio::select! {
            input = queue.recv() => input,
            _ = exit.wait_for(Option::is_some) => None,
        };
        match input {
            None => break,
            // Once a write fails, later input is dropped (its budget is released).
            Some(Input::Data(_, _)) if broken => {}
            Some(Input::Data(bytes, _permit)) => {
                tokio::select! {
                    result = stdin.write(&bytes) => broken = result.is_err(),
                    _ = exit.wait_for(Option::is_some) => break,
                }
            }
            Some(Input::Eof) => {
                tokio::select! {
                    _ = stdin.close() => {}
                    _ = exit.wait_for(Option::is_some) => break,
                }
            }
        }
    }
    stdin.release();
}

/// Runs one session's program to the end: pumps its output, waits for it, queues the
/// status after the output, and closes the terminal.
async fn supervise(
    session: Arc<Session>,
    mut child: tokio::process::Child,
    stdout: Reader,
    stderr: Option<Reader>,
    output: mpsc::Sender<Event>,
    exit_tx: watch::Sender<Option<ExitInfo>>,
) {
    let exit_rx = exit_tx.subscribe();
    let out = pump(stdout, channel::STDOUT, output.clone(), exit_rx.clone());
    let err = async {
        if let Some(stderr) = stderr {
            pump(stderr, channel::STDERR, output.clone(), exit_rx.clone()).await;
        }
    };
    let wait = async {
        let result = pty::wait(&mut child, &session.control).await;
        let info = match &result {
            Ok(status) => pty::exit_info(*status),
            Err(_) => ExitInfo {
                code: u8::MAX,
                signal: None,
            },
        };
        exit_tx.send_replace(Some(info.clone()));
        (result, info)
    };
    let ((), (), (result, info)) = tokio::join!(out, err, wait);
    session.control.close_terminal();
    let status = match result {
        Ok(_) => Status::from_exit(&info),
        Err(e) => Status::internal_error(&format!("cannot wait for the program: {e}")),
    };
    tracing::info!(
        session.id = %session.id,
        exit.code = info.code,
        exit.signal = info.signal.as_deref().unwrap_or(""),
        "session program exited"
    );
    let _ = output.send(Event::Exit(status)).await;
}

/// Copies one output stream into the queue as framed messages until EOF or EIO; after
/// the program exits, until the stream goes quiet (processes left behind may hold it).
async fn pump(
    mut reader: Reader,
    channel: u8,
    queue: mpsc::Sender<Event>,
    mut exit: watch::Receiver<Option<ExitInfo>>,
) {
    let mut exited_at: Option<Instant> = None;
    let mut sending = Duration::ZERO;
    loop {
        let mut frame = BytesMut::with_capacity(CHUNK + 1);
        frame.put_u8(channel);
        let read = match exited_at {
            None => {
                tokio::select! {
                    read = reader.read_buf(&mut frame) => read,
                    _ = exit.wait_for(Option::is_some) => {
                        exited_at = Some(Instant::now());
                        continue;
                    }
                }
            }
            Some(at) => {
                // Time spent waiting for the client does not count against the drain.
                if at.elapsed().saturating_sub(sending) > DRAIN_TOTAL {
                    break;
                }
                match tokio::time::timeout(DRAIN_IDLE, reader.read_buf(&mut frame)).await {
                    Ok(read) => read,
                    Err(_) => break,
                }
            }
        };
        match read {
            // EOF, or EIO from a terminal nobody holds any more.
            Ok(0) | Err(_) => break,
            Ok(_) => {
                // A terminal hands over at most ~4 KiB per read; what is already there
                // goes into the same message (up to CHUNK), without waiting for more:
                // a fast writer then costs a message per 32 KiB, not per 4 KiB.
                let mut ended = false;
                while frame.len() < CHUNK + 1 {
                    match reader.read_buf(&mut frame).now_or_never() {
                        Some(Ok(n)) if n > 0 => {}
                        Some(Ok(_) | Err(_)) => {
                            ended = true;
                            break;
                        }
                        None => break,
                    }
                }
                let started = Instant::now();
                if queue.send(Event::Output(frame.freeze())).await.is_err() {
                    break;
                }
                if ended {
                    break;
                }
                if exited_at.is_some() {
                    sending += started.elapsed();
                }
            }
        }
    }
}

/// Ends sessions nobody attaches to within the detach timeout, and forgets ended
/// sessions after the retention time.
async fn janitor(registry: Weak<Registry>, session: Arc<Session>) {
    loop {
        let Some(limits) = registry.upgrade().map(|r| r.limits.clone()) else {
            return;
        };
        let deadline = match &*session.attach_state() {
            Attach::Removed => return,
            Attach::Attached => None,
            Attach::Detached { since, .. } => Some(*since + limits.detach_timeout),
            Attach::Delivered { since } => Some(*since + limits.retention),
        };
        let changed = session.changed.notified();
        match deadline {
            None => changed.await,
            Some(at) => {
                tokio::select! {
                    _ = changed => continue,
                    _ = tokio::time::sleep_until(at) => {}
                }
                let Some(registry) = registry.upgrade() else {
                    return;
                };
                let expired = match &*session.attach_state() {
                    Attach::Detached { since, .. } => {
                        *since + limits.detach_timeout <= Instant::now()
                    }
                    Attach::Delivered { since } => *since + limits.retention <= Instant::now(),
                    _ => false,
                };
                if expired {
                    if registry.remove(&session.id).is_some() {
                        tracing::info!(session.id = %session.id, "session ended: detached too long or finished");
                    }
                    session.terminate(limits.kill_grace).await;
                    return;
                }
            }
        }
    }
}
