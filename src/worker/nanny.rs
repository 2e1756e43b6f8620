//! The nanny: a small process that runs a worker process, tells the scheduler at once when it
//! dies (so its work moves without waiting for a timeout), and starts it again with backoff.
//! It also restarts the worker on the scheduler's request (`Client::restart`).

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{error, info, warn};

use crate::net;
use crate::protocol::codec::{decode, encode};
use crate::protocol::{FromWorker, ToWorker};

/// How to supervise a worker.
#[derive(Clone, Debug)]
pub struct NannyConfig {
    /// The scheduler's worker address.
    pub scheduler: String,
    /// The worker command: program then arguments (it must run the worker bare).
    pub worker_command: Vec<String>,
    /// Deaths in a row, before the worker came up, after which the nanny gives up. A worker
    /// that came up or lived `stable_after` resets the count.
    pub max_restarts: u32,
    /// First wait before a restart; doubles with each quick death, up to `backoff_max`.
    pub backoff_start: Duration,
    pub backoff_max: Duration,
    pub stable_after: Duration,
    /// A worker exiting with this code is not restarted: the nanny ends too (the worker
    /// gave up on the scheduler).
    pub give_up_on_exit_code: Option<i32>,
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
            give_up_on_exit_code: None,
        }
    }
}

struct Running {
    /// The secret this worker process registers with (see `NANNY_TOKEN_ENV`).
    token: u64,
    child: Child,
    started: Instant,
    address: Option<String>,
    lines: mpsc::Receiver<String>,
}

/// Runs until `stop` is set (then stops the worker gracefully) or the worker keeps dying.
pub fn run(config: NannyConfig, stop: Arc<AtomicBool>) -> Result<(), String> {
    let ctx = zmq::Context::new();
    let socket = ctx.socket(zmq::DEALER).map_err(|e| e.to_string())?;
    net::configure(&socket, net::DEFAULT_MAX_MESSAGE_BYTES).map_err(|e| e.to_string())?;
    socket
        .set_identity(&net::unique_identity("nanny"))
        .map_err(|e| e.to_string())?;
    socket
        .connect(&config.scheduler)
        .map_err(|e| format!("cannot connect to {}: {e}", config.scheduler))?;
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
            net::poll(&mut items, 50).map_err(|e| e.to_string())?;
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
            if let Some(address) = line.strip_prefix("worker ") {
                let address = address.trim().to_owned();
                send(&FromWorker::NannyOf {
                    worker_address: address.clone(),
                    token: worker.token,
                });
                worker.address = Some(address);
            }
        }
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
        let Some(status) = worker.child.try_wait().map_err(|e| e.to_string())? else {
            continue;
        };
        if stop.load(Ordering::SeqCst) {
            return Ok(());
        }
        let reason = describe_exit(status);
        warn!("worker process ended: {reason}");
        report_death(&send, &worker, false, reason.clone());
        if status.code().is_some() && status.code() == config.give_up_on_exit_code {
            return Err(format!("the worker gave up ({reason}); not restarting it"));
        }
        // A worker that came up (it printed its address) and died later is restarted at
        // once; backoff is for workers that cannot even start.
        if worker.address.is_some() || worker.started.elapsed() >= config.stable_after {
            deaths_in_a_row = 0;
            backoff = config.backoff_start;
        }
        deaths_in_a_row += 1;
        if deaths_in_a_row > config.max_restarts {
            return Err(format!(
                "the worker died {deaths_in_a_row} times in a row; giving up (--max-restarts {})",
                config.max_restarts
            ));
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
            expected,
            reason,
        });
    }
}

fn start(config: &NannyConfig) -> Result<Running, String> {
    let (program, args) = config
        .worker_command
        .split_first()
        .ok_or("empty worker command")?;
    let mut command = Command::new(program);
    let token = new_token();
    command
        .args(args)
        .env(NANNY_TOKEN_ENV, token.to_string())
        .stdout(Stdio::piped());
    // SAFETY: prctl is async-signal-safe; it only asks the kernel to SIGTERM the worker when
    // the nanny dies, so a killed nanny never leaves an orphaned worker behind.
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
    let mut child = command
        .spawn()
        .map_err(|e| format!("cannot start the worker ({program}): {e}"))?;
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
    Ok(Running {
        child,
        started: Instant::now(),
        address: None,
        lines: rx,
        token,
    })
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

/// A fresh unpredictable token: std's per-process random hash keys, mixed with the clock and pid.
fn new_token() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.write_u32(std::process::id());
    h.finish()
}

fn describe_exit(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        _ => "unknown exit".into(),
    }
}
