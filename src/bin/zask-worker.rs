//! `zask-worker`: runs a worker with the built-in functions until the scheduler closes it.

use clap::Parser;
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
    /// Zero worker, for benchmarking the scheduler: report every task done at once with a null
    /// result, without running it.
    #[arg(long)]
    zero: bool,
}

fn main() {
    let args: Args = zask::cli::parse_or_exit();
    zask::cli::init_logging();
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
    let worker = match Worker::start(config, Registry::with_builtins()) {
        Ok(w) => w,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    };
    println!("worker {}", worker.address());
    if let Err(e) = worker.wait() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
