//! `zask-worker`: runs a worker with the built-in functions, under a nanny by default.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use zask::worker::nanny::{self, NannyConfig};
use zask::worker::{Registry, Worker, WorkerConfig};
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
    /// Memory limit reported to the scheduler, in bytes (0: none).
    #[arg(long, default_value_t = 0)]
    memory_limit: u64,
    /// How often to send a heartbeat, in ms.
    #[arg(long, default_value_t = 500)]
    heartbeat_interval_ms: u64,
    /// How long to wait for a peer's data before trying another holder, in ms.
    #[arg(long, default_value_t = 5000)]
    fetch_timeout_ms: u64,
    /// Stop after this long (ms) without word from the scheduler; until then the worker
    /// keeps trying to reach it and registers again when it answers. Exit code 3.
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
    /// Deaths in a row of a worker that never came up, after which the nanny gives up.
    #[arg(long, default_value_t = 50)]
    max_restarts: u32,
}

fn main() {
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
    if !args.no_nanny {
        let exe = std::env::current_exe()
            .unwrap_or_else(|e| fail(&format!("cannot find this program: {e}")));
        let mut command = vec![exe.to_string_lossy().into_owned()];
        command.extend(std::env::args().skip(1));
        command.push("--no-nanny".into());
        let mut config = NannyConfig::new(args.scheduler.clone(), command);
        config.give_up_on_exit_code = Some(SCHEDULER_GONE_EXIT_CODE);
        config.max_restarts = args.max_restarts;
        if let Err(e) = nanny::run(config, stop) {
            fail(&e);
        }
        return;
    }
    let mut config = WorkerConfig::new(args.scheduler);
    if let Some(n) = args.nthreads {
        config.nthreads = n.max(1);
    }
    config.name = args.name;
    config.host = args.host;
    config.peer_port = args.peer_port;
    config.store = args.store;
    config.memory_limit_bytes = args.memory_limit;
    config.heartbeat_interval_ms = args.heartbeat_interval_ms.max(1);
    config.fetch_timeout_ms = args.fetch_timeout_ms.max(1);
    config.zero = args.zero;
    config.nanny_token = args.nanny_token;
    config.death_timeout_ms = args.death_timeout_ms.max(1);
    let worker = Worker::start(config, Registry::with_builtins()).unwrap_or_else(|e| fail(&e));
    println!("worker {}", worker.address());
    while worker.is_running() {
        if stop.load(Ordering::SeqCst) {
            worker.retire();
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    if let Err(e) = worker.wait() {
        eprintln!("error: {e}");
        // A distinct code tells the nanny not to restart a worker whose scheduler is gone.
        let code = if e.starts_with(zask::worker::core::SCHEDULER_GONE) {
            SCHEDULER_GONE_EXIT_CODE
        } else {
            1
        };
        std::process::exit(code);
    }
}

const SCHEDULER_GONE_EXIT_CODE: i32 = 3;

fn fail(message: &str) -> ! {
    eprintln!("error: {message}");
    std::process::exit(1)
}
