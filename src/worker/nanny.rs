//! The nanny: a small process that runs a worker process, tells the scheduler at once when it
//! dies (so its work moves without waiting for a timeout), and starts it again with backoff.
//! It also restarts the worker on the scheduler's request (`Client::restart`), and when the
//! worker's resident memory (`/proc/PID/statm`) passes `TERMINATE_FRACTION` (0.95) of its
//! memory limit, with a log line saying so: the kernel never gets to kill it silently, and the
//! scheduler hears of the death at once (a lost worker: its work is rerun).
//!
//! The worker talks to its nanny through a pipe the nanny gives it (`NANNY_REASON_FD_ENV`), in
//! typed messages (`ToNanny`): its peer address once it is up (the nanny then claims it at the
//! scheduler), and why it stops. Its standard output is passed through, never parsed.
//!
//! Restart policy: a worker that stops on purpose says why before it exits, on that pipe (a
//! `FinalReason`). The nanny does not
//! restart a worker that was refused by the scheduler (name taken, protocol version) or whose
//! scheduler is gone: it stops too, with an error naming why. It restarts one that left
//! gracefully (SIGTERM to the worker alone: retired, then closed) and one that ended without
//! giving a reason (a crash, SIGKILL, a task calling `process::exit` with any code). Exit codes
//! are never looked at.

use crate::security::{self, Access};
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{error, info, warn};
use serde::{Deserialize, Serialize};

use super::core::{ShutdownReason, TERMINATE_FRACTION};
use crate::net::{self, StartError};
use crate::protocol::codec::{decode, decode_plain, encode, encode_plain};
use crate::protocol::{FromWorker, ToWorker, WorkerAddress};

/// How to supervise a worker.
#[derive(Clone, Debug)]
pub struct NannyConfig {
    /// The scheduler's worker address.
    pub scheduler: String,
    /// The worker command: program then arguments (it must run the worker bare).
    pub worker_command: Vec<String>,
    /// Deaths in a row, before the worker came up, after which the nanny gives up. A worker
    /// that came up or lived `stable_after` resets the count. Default: 50 (with the backoff,
    /// a few minutes of trying).
    pub max_restarts: u32,
    /// First wait before a restart; doubles with each quick death, up to `backoff_max`.
    /// Default: 100 ms (a worker that cannot start is not spun on).
    pub backoff_start: Duration,
    /// Longest wait between restarts. Default: 5 s (a worker whose cause of death passes is
    /// back soon).
    pub backoff_max: Duration,
    /// A worker that lived this long resets the deaths-in-a-row count even if it never
    /// printed its address. Default: 30 s.
    pub stable_after: Duration,
    /// The worker's access: the nanny talks to the scheduler's worker port with the worker
    /// key, as its worker does. Default None: plaintext, for a scheduler without security.
    pub security: Option<Access>,
    /// The worker's memory limit (`--memory-limit`); past `TERMINATE_FRACTION` of it in
    /// resident memory the nanny restarts the worker. Default 0: no limit, not watched.
    pub memory_limit_bytes: u64,
}

impl NannyConfig {
    pub fn new(scheduler: String, worker_command: Vec<String>) -> NannyConfig {
        NannyConfig {
            scheduler,
            worker_command,
            max_restarts: 50,
            backoff_start: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            stable_after: Duration::from_secs(30),
            security: None,
            memory_limit_bytes: 0,
        }
    }
}

struct Running {
    /// The secret this worker process registers with (see `NANNY_TOKEN_ENV`).
    token: u64,
    child: Child,
    started: Instant,
    address: Option<WorkerAddress>,
    /// The worker's standard output, line by line (passed through, never interpreted).
    lines: mpsc::Receiver<String>,
    /// The peer addresses the worker announced on its pipe (`ToNanny::Started`).
    announced: mpsc::Receiver<WorkerAddress>,
    /// The last final reason the worker wrote on its pipe, sent once the pipe closes (when
    /// the process ends).
    final_reason: mpsc::Receiver<Option<FinalReason>>,
    /// Why the nanny killed it for its memory, if it did.
    memory_kill: Option<String>,
}

impl Running {
    /// The reason the ended worker gave, if it gave one. The pipe closes when the process
    /// ends; the wait is bounded in case a child of the worker kept it open.
    fn final_reason(&self) -> Option<FinalReason> {
        self.final_reason
            .recv_timeout(Duration::from_secs(1))
            .ok()
            .flatten()
    }

    /// Claims (`NannyOf`) the address the worker announced, if it announced one since.
    fn take_announced(&mut self, send: &dyn Fn(&FromWorker)) {
        let announced: Vec<WorkerAddress> = self.announced.try_iter().collect();
        for address in announced {
            send(&FromWorker::NannyOf {
                worker_address: address.clone(),
                token: self.token,
            });
            self.address = Some(address);
        }
    }
}

/// What a worker process tells its nanny on the pipe the nanny handed it
/// (`NANNY_REASON_FD_ENV`): typed messages, never text to parse.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
enum ToNanny {
    /// It is up and serves peers at this address: the nanny claims it at the scheduler.
    Started { address: WorkerAddress },
    /// Why it is about to exit on purpose (the last message).
    Final(FinalReason),
}

/// First bytes of every message on the pipe, so stray bytes are never taken for one.
const TO_NANNY_MAGIC: &[u8] = b"ZASK-TO-NANNY-1\n";

/// The most bytes a nanny reads from its worker's pipe: a message is a few dozen bytes.
const PIPE_BYTES_MAX: u64 = 64 * 1024;

impl ToNanny {
    /// The magic, the body's length (u32, little-endian), then the body (msgpack).
    fn encode(&self) -> Vec<u8> {
        let body = encode_plain(self);
        let mut bytes = TO_NANNY_MAGIC.to_vec();
        bytes.extend((body.len() as u32).to_le_bytes());
        bytes.extend(body);
        bytes
    }
}

/// Reads the messages on a worker's pipe until it closes, handing each to `each`. Bytes that
/// are not a whole message (stray, cut short, unreadable) end the reading, with a warning:
/// what came before them counts.
fn read_to_nanny(mut pipe: impl Read, mut each: impl FnMut(ToNanny)) {
    loop {
        let mut magic = vec![0; TO_NANNY_MAGIC.len()];
        match pipe.read_exact(&mut magic) {
            Ok(()) if magic == TO_NANNY_MAGIC => {}
            Ok(()) => {
                warn!("the worker wrote something unreadable on its pipe: ignoring the rest");
                return;
            }
            Err(_) => return, // closed: the process ended
        }
        let mut len = [0; 4];
        let mut body = Vec::new();
        let read = pipe.read_exact(&mut len).is_ok() && {
            let len = u32::from_le_bytes(len) as u64;
            len <= PIPE_BYTES_MAX && {
                body.resize(len as usize, 0);
                pipe.read_exact(&mut body).is_ok()
            }
        };
        match read.then(|| decode_plain::<ToNanny>(&body).ok()).flatten() {
            Some(msg) => each(msg),
            None => {
                warn!("the worker wrote an unreadable message on its pipe: ignoring the rest");
                return;
            }
        }
    }
}

/// Why a worker process ended on purpose, as it tells its nanny just before exiting.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum FinalReason {
    /// It was asked to stop (SIGTERM/SIGINT) and retired, or the scheduler closed it.
    Stopped,
    /// It stopped on its own: rejected by the scheduler, or the scheduler is gone.
    Shutdown(ShutdownReason),
}

impl FinalReason {
    /// Whether starting the worker again cannot help, so the nanny stops (with an error): it
    /// was refused, or its scheduler is gone. A worker that left gracefully (asked to stop on
    /// its own, its results moved elsewhere) is started again, as a crashed one is.
    fn ends_supervision(&self) -> bool {
        match self {
            FinalReason::Stopped | FinalReason::Shutdown(ShutdownReason::Closed) => false,
            FinalReason::Shutdown(
                ShutdownReason::Rejected(_)
                | ShutdownReason::SchedulerGone { .. }
                | ShutdownReason::Dismissed,
            ) => true,
        }
    }
}

impl std::fmt::Display for FinalReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FinalReason::Stopped => write!(f, "stopped on request"),
            FinalReason::Shutdown(reason) => write!(f, "{reason}"),
        }
    }
}

/// The environment variable naming the file descriptor of the pipe on which a worker started
/// by a nanny announces its address and writes its `FinalReason`.
pub const NANNY_REASON_FD_ENV: &str = "ZASK_NANNY_REASON_FD";

/// The worker's end of the pipe to its nanny.
pub struct FinalReasonWriter(File);

impl FinalReasonWriter {
    /// Takes the pipe the nanny handed this process, if any. Call it once, early in `main`,
    /// before threads start: it removes the variable from the environment and marks the
    /// descriptor close-on-exec so programs a task starts do not inherit it.
    pub fn from_env() -> Option<FinalReasonWriter> {
        use std::sync::atomic::AtomicBool;
        static TAKEN: AtomicBool = AtomicBool::new(false);
        let value = std::env::var(NANNY_REASON_FD_ENV).ok()?;
        std::env::remove_var(NANNY_REASON_FD_ENV);
        let fd: i32 = value.parse().ok().filter(|fd| *fd > 2)?;
        if TAKEN.swap(true, Ordering::SeqCst) {
            return None;
        }
        // SAFETY: fcntl on any integer is memory-safe; -1 means it is no open descriptor.
        if unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) } == -1 {
            warn!("{NANNY_REASON_FD_ENV}={value} is not an open file descriptor");
            return None;
        }
        // SAFETY: the descriptor is open (checked above) and was opened for this process by
        // its nanny; `TAKEN` makes sure it gets exactly one owner.
        Some(FinalReasonWriter(unsafe { File::from_raw_fd(fd) }))
    }

    /// Tells the nanny the worker is up and serves peers at `address`, so it can claim the
    /// worker at the scheduler.
    pub fn started(&mut self, address: &WorkerAddress) {
        let msg = ToNanny::Started {
            address: address.clone(),
        };
        if let Err(e) = self.0.write_all(&msg.encode()) {
            warn!("could not tell the nanny the worker's address: {e}");
        }
    }

    /// Tells the nanny why this process is about to exit on purpose.
    pub fn send(mut self, reason: &FinalReason) {
        if let Err(e) = self.0.write_all(&ToNanny::Final(reason.clone()).encode()) {
            warn!("could not tell the nanny why the worker stops: {e}");
        }
    }
}

/// Why a nanny stopped supervising. `retry_may_help` says whether running it again, unchanged,
/// can succeed.
#[derive(Debug)]
pub enum NannyError {
    /// Its socket to the scheduler (or the final-reason pipe) could not be set up: that
    /// error's own `retry_may_help` decides.
    Start(StartError),
    /// The worker command is empty: retrying will not help.
    EmptyCommand,
    /// The worker process could not be started. A missing or forbidden program will not
    /// appear by retrying; other failures (no processes or memory left) may pass.
    Spawn {
        program: String,
        error: std::io::Error,
    },
    /// Polling the scheduler socket or waiting for the worker process failed: may pass.
    Io {
        what: &'static str,
        error: std::io::Error,
    },
    /// The worker stopped on purpose with a reason that ends supervision (refused by the
    /// scheduler, or its scheduler is gone): a new worker would fare no better.
    WorkerStopped(FinalReason),
    /// The worker died this many times in a row before coming up (`max_restarts`): it is not
    /// going to start; retrying unchanged will not help.
    GaveUp {
        deaths_in_a_row: u32,
        max_restarts: u32,
    },
}

impl NannyError {
    /// Whether running the nanny again, unchanged, can succeed later.
    pub fn retry_may_help(&self) -> bool {
        match self {
            NannyError::Start(e) => e.retry_may_help(),
            NannyError::Spawn { error, .. } => !matches!(
                error.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied
            ),
            NannyError::Io { .. } => true,
            NannyError::EmptyCommand | NannyError::WorkerStopped(_) | NannyError::GaveUp { .. } => {
                false
            }
        }
    }
}

impl std::fmt::Display for NannyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NannyError::Start(e) => write!(f, "{e}"),
            NannyError::EmptyCommand => write!(f, "empty worker command"),
            NannyError::Spawn { program, error } => {
                write!(f, "cannot start the worker ({program}): {error}")
            }
            NannyError::Io { what, error } => write!(f, "{what}: {error}"),
            NannyError::WorkerStopped(reason) => {
                write!(f, "the worker stopped: {reason}; not restarting it")
            }
            NannyError::GaveUp {
                deaths_in_a_row,
                max_restarts,
            } => write!(
                f,
                "the worker died {deaths_in_a_row} times in a row; giving up \
                 (--max-restarts {max_restarts})"
            ),
        }
    }
}

impl std::error::Error for NannyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            NannyError::Start(e) => Some(e),
            NannyError::Spawn { error, .. } | NannyError::Io { error, .. } => Some(error),
            _ => None,
        }
    }
}

/// Runs until `stop` is set (then stops the worker gracefully) or the worker keeps dying.
pub fn run(config: NannyConfig, stop: Arc<AtomicBool>) -> Result<(), NannyError> {
    let ctx = zmq::Context::new();
    let socket_error = |what| move |e| NannyError::Start(StartError::socket(what, e));
    let socket = ctx
        .socket(zmq::DEALER)
        .map_err(socket_error("making the scheduler socket"))?;
    net::configure(&socket, net::DEFAULT_MAX_MESSAGE_BYTES)
        .map_err(socket_error("setting socket options"))?;
    socket
        .set_identity(&net::unique_identity("nanny"))
        .map_err(socket_error("setting the socket identity"))?;
    if let Some(access) = &config.security {
        security::connect_as(&socket, &access.scheduler_public, &access.key)
            .map_err(|e| NannyError::Start(StartError::Security(e)))?;
    }
    socket.connect(&config.scheduler).map_err(|error| {
        NannyError::Start(StartError::Connect {
            address: config.scheduler.clone(),
            error,
        })
    })?;
    let send = |msg: &FromWorker| {
        if let Err(e) = net::send(&socket, None, encode(msg), vec![]) {
            warn!("nanny could not reach the scheduler: {e}");
        }
    };
    let mut deaths_in_a_row = 0u32;
    let mut backoff = config.backoff_start;
    let mut worker = start(&config)?;
    loop {
        if stop.load(Ordering::SeqCst) {
            stop_gracefully(&mut worker.child);
            return Ok(());
        }
        let mut restart_requested = false;
        let readable = {
            let mut items = [socket.as_poll_item(zmq::POLLIN)];
            net::poll(&mut items, 50).map_err(|e| NannyError::Io {
                what: "polling the scheduler socket",
                error: e.into(),
            })?;
            items[0].is_readable()
        };
        if readable {
            while let Some(frames) = net::try_recv(&socket) {
                match frames.first().map(|f| decode::<ToWorker>(f)) {
                    Some(Ok(ToWorker::Restart)) => restart_requested = true,
                    Some(Ok(other)) => info!("nanny ignores {other:?}"),
                    Some(Err(e)) => warn!("nanny got an unreadable message: {e}"),
                    None => {}
                }
            }
        }
        for line in worker.lines.try_iter() {
            // The worker's own output stays visible (tests and scripts read "worker ADDR").
            println!("{line}");
        }
        worker.take_announced(&send);
        if restart_requested {
            info!("restarting the worker on the scheduler's request");
            let _ = worker.child.kill();
            let _ = worker.child.wait();
            report_death(&send, &worker, true, "restarted on request".into());
            deaths_in_a_row = 0;
            backoff = config.backoff_start;
            worker = start(&config)?;
            continue;
        }
        if let Some(reason) = over_memory(&worker, config.memory_limit_bytes) {
            // SIGKILL: a worker this far past its limit may not get to say goodbye, and the
            // kernel would not ask either. The death is reported below, once it is reaped.
            warn!("{reason}: restarting");
            let _ = worker.child.kill();
            worker.memory_kill = Some(reason);
        }
        let Some(status) = worker.child.try_wait().map_err(|error| NannyError::Io {
            what: "waiting for the worker process",
            error,
        })?
        else {
            continue;
        };
        if stop.load(Ordering::SeqCst) {
            return Ok(());
        }
        let exit = describe_exit(status);
        let final_reason = worker.final_reason();
        // The pipe is closed now: an address announced just before the end is claimed before
        // the death is reported, so the report counts.
        worker.take_announced(&send);
        match final_reason {
            Some(reason @ FinalReason::Shutdown(ShutdownReason::Dismissed)) => {
                // Retired by an operator, or the cluster shut down: a success, not an error.
                info!("worker process ended ({exit}): {reason}; stopping too");
                report_death(&send, &worker, true, reason.to_string());
                return Ok(());
            }
            Some(reason) if reason.ends_supervision() => {
                warn!("worker process ended ({exit}): {reason}");
                report_death(&send, &worker, true, reason.to_string());
                return Err(NannyError::WorkerStopped(reason));
            }
            Some(reason) => {
                info!("worker process left gracefully ({exit}: {reason}): starting a new one");
                report_death(&send, &worker, true, reason.to_string());
            }
            None => match worker.memory_kill.take() {
                // A lost worker, not a graceful one: the tasks it ran are blamed.
                Some(reason) => report_death(&send, &worker, false, format!("{reason} ({exit})")),
                None => {
                    warn!("worker process ended without saying why ({exit}): restarting it");
                    report_death(&send, &worker, false, exit);
                }
            },
        }
        // A worker that came up (it printed its address) and died later is restarted at
        // once; backoff is for workers that cannot even start.
        if worker.address.is_some() || worker.started.elapsed() >= config.stable_after {
            deaths_in_a_row = 0;
            backoff = config.backoff_start;
        }
        deaths_in_a_row += 1;
        if deaths_in_a_row > config.max_restarts {
            return Err(NannyError::GaveUp {
                deaths_in_a_row,
                max_restarts: config.max_restarts,
            });
        }
        std::thread::sleep(backoff);
        backoff = (backoff * 2).min(config.backoff_max);
        worker = start(&config)?;
    }
}

fn report_death(send: &dyn Fn(&FromWorker), worker: &Running, expected: bool, reason: String) {
    if let Some(address) = &worker.address {
        send(&FromWorker::WorkerDied {
            worker_address: address.clone(),
            token: worker.token,
            expected,
            reason,
        });
    }
}

fn start(config: &NannyConfig) -> Result<Running, NannyError> {
    let (program, args) = config
        .worker_command
        .split_first()
        .ok_or(NannyError::EmptyCommand)?;
    let mut command = Command::new(program);
    let token = net::unpredictable_token();
    let (reason_read, reason_write) =
        pipe().map_err(|e| NannyError::Start(StartError::resource("making a pipe", e)))?;
    let write_fd = reason_write.as_raw_fd();
    command
        .args(args)
        .env(NANNY_TOKEN_ENV, token.to_string())
        .env(NANNY_REASON_FD_ENV, write_fd.to_string())
        .stdout(Stdio::piped());
    // SAFETY: prctl and fcntl are async-signal-safe. prctl only asks the kernel to SIGTERM the
    // worker when the nanny dies, so a killed nanny never leaves an orphaned worker behind;
    // fcntl lets the child (only) keep the write end of the final-reason pipe across exec.
    unsafe {
        command.pre_exec(move || {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            if libc::fcntl(write_fd, libc::F_SETFD, 0) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let spawned = command.spawn();
    // The child has its copy; ours must go, or the pipe would never close.
    drop(reason_write);
    let mut child = spawned.map_err(|error| NannyError::Spawn {
        program: program.clone(),
        error,
    })?;
    info!("started worker process {}", child.id());
    let stdout = child.stdout.take().expect("piped above");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let (reason_tx, reason_rx) = mpsc::channel();
    let (announced_tx, announced_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut last = None;
        // Bounded: the messages are a few dozen bytes.
        read_to_nanny(
            File::from(reason_read).take(PIPE_BYTES_MAX),
            |msg| match msg {
                ToNanny::Started { address } => {
                    let _ = announced_tx.send(address);
                }
                ToNanny::Final(reason) => last = Some(reason),
            },
        );
        let _ = reason_tx.send(last);
    });
    Ok(Running {
        child,
        started: Instant::now(),
        address: None,
        lines: rx,
        announced: announced_rx,
        token,
        final_reason: reason_rx,
        memory_kill: None,
    })
}

/// Why `worker` must be restarted for its memory: its resident memory is past
/// `TERMINATE_FRACTION` of `limit_bytes` (0: no limit). Unreadable (the process just ended):
/// no reason.
fn over_memory(worker: &Running, limit_bytes: u64) -> Option<String> {
    if limit_bytes == 0 || worker.memory_kill.is_some() {
        return None;
    }
    let resident = super::memory::resident_bytes(worker.child.id()).ok()?;
    let mb = |b: u64| b as f64 / 1e6;
    (resident as f64 > limit_bytes as f64 * TERMINATE_FRACTION).then(|| {
        format!(
            "worker used {:.0} MB of its {:.0} MB limit (more than {}%)",
            mb(resident),
            mb(limit_bytes),
            TERMINATE_FRACTION * 100.0
        )
    })
}

/// A pipe whose two ends are close-on-exec: (read end, write end).
fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into the array it is given, which has room for two.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } == -1 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just opened by pipe2 and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// SIGTERM (the worker says goodbye to the scheduler), then SIGKILL if it lingers.
fn stop_gracefully(child: &mut Child) {
    // SAFETY: kill(2) with a pid we own and a valid signal number has no memory effects.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    error!("worker did not stop within 3 s of SIGTERM: killing it");
    let _ = child.kill();
    let _ = child.wait();
}

/// The environment variable through which a nanny hands its worker the secret that ties them
/// together at the scheduler: only a nanny that knows it can report the worker's death.
pub const NANNY_TOKEN_ENV: &str = "ZASK_NANNY_TOKEN";

fn describe_exit(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        _ => "unknown exit".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::RejectReason;

    /// The messages `read_to_nanny` finds in these bytes.
    fn read(bytes: &[u8]) -> Vec<ToNanny> {
        let mut out = Vec::new();
        read_to_nanny(bytes, |m| out.push(m));
        out
    }

    #[test]
    fn pipe_messages_round_trip_and_stray_bytes_are_no_message() {
        let reasons = [
            FinalReason::Stopped,
            FinalReason::Shutdown(ShutdownReason::Closed),
            FinalReason::Shutdown(ShutdownReason::Rejected(RejectReason::NameTaken {
                name: "w1".into(),
            })),
            FinalReason::Shutdown(ShutdownReason::SchedulerGone {
                silent_ms: 2001,
                death_timeout_ms: 2000,
            }),
            FinalReason::Shutdown(ShutdownReason::Dismissed),
        ];
        for r in &reasons {
            let started = ToNanny::Started {
                address: "tcp://127.0.0.1:4000".into(),
            };
            let mut bytes = started.encode();
            bytes.extend(ToNanny::Final(r.clone()).encode());
            assert_eq!(read(&bytes), [started, ToNanny::Final(r.clone())]);
        }
        let ends: Vec<bool> = reasons.iter().map(FinalReason::ends_supervision).collect();
        assert_eq!(ends, [false, false, true, true, true]);
        assert_eq!(read(b""), []);
        assert_eq!(read(b"3\n"), []);
        assert_eq!(read(b"worker tcp://127.0.0.1:4000\n"), []);
        // A message cut short is no message; the ones before it count.
        let first = ToNanny::Final(reasons[0].clone());
        let mut bytes = first.encode();
        let mut truncated = ToNanny::Final(reasons[2].clone()).encode();
        truncated.truncate(truncated.len() - 2);
        bytes.extend(truncated);
        assert_eq!(read(&bytes), [first]);
        // A length beyond the bound is not believed.
        let mut huge = TO_NANNY_MAGIC.to_vec();
        huge.extend(u32::MAX.to_le_bytes());
        assert_eq!(read(&huge), []);
    }
}
