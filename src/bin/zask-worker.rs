//! `zask-worker`: runs a worker with the built-in functions, under a nanny by default.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use zask::protocol::WorkerName;
use zask::worker::nanny::{self, FinalReason, FinalReasonWriter, NannyConfig};
use zask::worker::{Registry, SpillTo, Worker, WorkerConfig, WorkerError};
use zask::StoreSpec;

/// A Zask worker: runs tasks on a thread pool, keeps results in its store and serves them to
/// peers directly.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// The scheduler's worker address, e.g. tcp://127.0.0.1:4444.
    #[arg(value_parser = zask::cli::parse_address)]
    scheduler: String,
    /// Threads running tasks (default: the machine's cores).
    #[arg(long)]
    nthreads: Option<u32>,
    /// Name shown in status (default: the worker's address).
    #[arg(long)]
    name: Option<String>,
    /// Interface the peer port listens on (default: loopback if the scheduler is on loopback,
    /// else every interface).
    #[arg(long)]
    host: Option<String>,
    /// Port peers fetch data from (0: pick a free port).
    #[arg(long, default_value_t = 0)]
    peer_port: u16,
    /// Where results live: "memory" or "sled:PATH" (on disk).
    #[arg(long, default_value = "memory", value_parser = zask_storage::parse_store_spec)]
    store: StoreSpec,
    /// The most data this worker holds in memory (the sizes its store reports): bytes
    /// (300000000), a size (300MB, 300M, 4GB: decimal; 4GiB: binary), a fraction of the
    /// machine's memory (0.25) or auto (all of it), 0 for none. Past 60% the least recently
    /// used results spill to disk (see --spill-dir); past 80% it starts no new task until
    /// releases or spilling bring it back under; a result that cannot fit fails its task
    /// (MemoryLimit) and is not kept; past 95% in resident memory the nanny restarts it.
    #[arg(long, default_value = "0", value_parser = zask::worker::memory::parse_memory_limit)]
    memory_limit: u64,
    /// Where results spill to past 60% of the memory limit: a fresh directory is made inside
    /// DIR (created if missing) and removed when the worker stops (default: inside the
    /// system's temporary directory). Only with a memory limit and the memory store.
    #[arg(long, value_name = "DIR", conflicts_with = "no_spill")]
    spill_dir: Option<std::path::PathBuf>,
    /// Never spill: results stay in memory and one that does not fit fails its task.
    #[arg(long)]
    no_spill: bool,
    /// How often to send a heartbeat, in ms.
    #[arg(long, default_value_t = 500)]
    heartbeat_interval_ms: u64,
    /// How long to wait for a peer's data before trying another holder, in ms.
    #[arg(long, default_value_t = 5000)]
    fetch_timeout_ms: u64,
    /// Stop after this long (ms) without word from the scheduler; until then the worker
    /// keeps trying to reach it and registers again when it answers. Exit code 3; a nanny
    /// does not restart it.
    #[arg(long, default_value_t = 60_000)]
    death_timeout_ms: u64,
    /// Zero worker, for benchmarking the scheduler: report every task done at once with a null
    /// result, without running it.
    #[arg(long)]
    zero: bool,
    /// Run the worker in this process, without a nanny to restart it when it dies.
    #[arg(long)]
    no_nanny: bool,
    /// Set by the nanny for the worker process it starts (not for users).
    #[arg(long, env = zask::worker::nanny::NANNY_TOKEN_ENV, hide = true)]
    nanny_token: Option<u64>,
    /// Messages queued per connection (to the scheduler, to each peer), each way.
    #[arg(long, default_value_t = WorkerConfig::new("").queue_max_messages)]
    queue_max: i32,
    /// Largest message accepted from the scheduler or peers, in bytes. A task result bigger
    /// than this (or than the scheduler's own --max-message-bytes) fails that task with an
    /// error naming both sizes: it could not travel to the scheduler, a client or a peer.
    #[arg(long, default_value_t = zask::net::DEFAULT_MAX_MESSAGE_BYTES)]
    max_message_bytes: i64,
    /// Also offer the test functions (exit_process, counted_inc, wait_for_file, alloc,
    /// pattern, hold, fail_with_length): fault-injection helpers that let anyone who submits a graph end the
    /// worker, write files or block threads. For tests and benchmarks only.
    #[arg(long)]
    test_functions: bool,
    /// Deaths in a row of a worker that never came up, after which the nanny gives up.
    #[arg(long, default_value_t = 50)]
    max_restarts: u32,
    /// The worker's access file, which zask-scheduler writes beside its keys (default
    /// ~/.zask/worker.access).
    #[arg(long, env = zask::security::ACCESS_FILE_ENV)]
    access_file: Option<std::path::PathBuf>,
    /// Plaintext, for a scheduler started --insecure.
    #[arg(long)]
    insecure: bool,
}

/// The worker's access, or None with --insecure; an unreadable one ends the program (before
/// any nanny restarts it in vain).
fn access(args: &Args) -> Option<zask::security::Access> {
    use zask::security::{default_dir, Access, Role};
    if args.insecure {
        return None;
    }
    let path = args
        .access_file
        .clone()
        .unwrap_or_else(|| default_dir().join(Role::Worker.access_file_name()));
    match Access::read_for(&path, &[Role::Worker]) {
        Ok(a) => Some(a),
        Err(e) => {
            eprintln!(
                "error: {e} (zask-scheduler writes the worker's access file beside its keys; \
                 pass it with --access-file, or use --insecure for a scheduler without security)"
            );
            std::process::exit(2)
        }
    }
}

fn main() {
    // First, before any thread starts: the pipe on which a nanny hears our address and why we
    // stop.
    let mut final_reason = FinalReasonWriter::from_env();
    // A bug in any thread of this process ends it at once (see zask::fatal).
    zask::fatal::install_for_process();
    let args: Args = zask::cli::parse_or_exit();
    zask::cli::init_logging();
    // SIGTERM and SIGINT stop gracefully: the worker's results are moved to other workers
    // first, and no task is blamed.
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        if let Err(e) = signal_hook::flag::register(signal, stop.clone()) {
            eprintln!("error: cannot handle signal {signal}: {e}");
            std::process::exit(1);
        }
    }
    let security = access(&args);
    if !args.no_nanny {
        let exe = std::env::current_exe()
            .unwrap_or_else(|e| fail(&format!("cannot find this program: {e}")));
        let mut command = vec![exe.to_string_lossy().into_owned()];
        command.extend(std::env::args().skip(1));
        command.push("--no-nanny".into());
        let mut config = NannyConfig::new(args.scheduler.clone(), command);
        config.max_restarts = args.max_restarts;
        config.security = security;
        config.memory_limit_bytes = args.memory_limit;
        if let Err(e) = nanny::run(config, stop) {
            fail(&e.to_string());
        }
        return;
    }
    let mut config = WorkerConfig::new(args.scheduler);
    if let Some(n) = args.nthreads {
        config.nthreads = n.max(1);
    }
    config.name = args.name.map(WorkerName::from);
    config.host = args.host;
    config.peer_port = args.peer_port;
    config.store = args.store;
    config.memory_limit_bytes = args.memory_limit;
    config.spill = match (args.no_spill, args.spill_dir) {
        (true, _) => SpillTo::Off,
        (false, Some(dir)) => SpillTo::Dir(dir),
        (false, None) => SpillTo::TempDir,
    };
    config.heartbeat_interval_ms = args.heartbeat_interval_ms.max(1);
    config.fetch_timeout_ms = args.fetch_timeout_ms.max(1);
    config.zero = args.zero;
    config.nanny_token = args.nanny_token;
    config.queue_max_messages = args.queue_max;
    config.death_timeout_ms = args.death_timeout_ms.max(1);
    config.max_message_bytes = args.max_message_bytes;
    config.security = security;
    let registry = if args.test_functions {
        Registry::with_test_functions()
    } else {
        Registry::with_builtins()
    };
    let worker = Worker::start(config, registry).unwrap_or_else(|e| fail(&e.to_string()));
    println!("worker {}", worker.address());
    // The nanny learns the address from the pipe (typed), never from the line above.
    if let Some(writer) = &mut final_reason {
        writer.started(worker.address());
    }
    let tell_nanny = |reason: FinalReason| {
        if let Some(writer) = final_reason {
            writer.send(&reason);
        }
    };
    while worker.is_running() {
        if stop.load(Ordering::SeqCst) {
            worker.retire();
            tell_nanny(FinalReason::Stopped);
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    match worker.wait() {
        Ok(()) => tell_nanny(FinalReason::Stopped),
        Err(e) => {
            if e.exit_code() == 0 {
                // Dismissed by the scheduler (retired by an operator, or shut down).
                log::info!("{e}");
            } else {
                eprintln!("error: {e}");
            }
            // A failure (not a decision) says nothing: the nanny restarts the worker.
            if let WorkerError::Shutdown(reason) = &e {
                tell_nanny(FinalReason::Shutdown(reason.clone()));
            }
            std::process::exit(e.exit_code());
        }
    }
}

fn fail(message: &str) -> ! {
    eprintln!("error: {message}");
    std::process::exit(1)
}
