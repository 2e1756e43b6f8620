//! `zask-scheduler`: runs a scheduler until killed.

use clap::Parser;
use zask::scheduler::core::CoreConfig;
use zask::scheduler::dashboard::{self, DashboardConfig};
use zask::scheduler::{Scheduler, SchedulerConfig};

/// The Zask scheduler: owns the task graph, places tasks on workers and tracks who holds which
/// result. Workers connect to the worker port, clients to the client port.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    #[command(flatten)]
    listen: zask::cli::ListenArgs,
    /// A worker silent this long (ms) is considered lost and its work rescheduled.
    #[arg(long, default_value_t = CoreConfig::default().heartbeat_timeout_ms)]
    heartbeat_timeout_ms: u64,
    /// A client silent this long (ms) is forgotten: its waiting requests are dropped and what
    /// it owned belongs to nobody. Clients ping every 500 ms while they wait, and say goodbye
    /// when they close; this is for a client that vanished (killed, or its machine lost).
    #[arg(long, default_value_t = CoreConfig::default().client_timeout_ms)]
    client_timeout_ms: u64,
    /// A task restricted to workers of which none is connected fails after waiting this long
    /// (ms) for one to connect ("no worker"); a warning names it when the wait starts.
    #[arg(long, default_value_t = CoreConfig::default().unrunnable_timeout_ms)]
    unrunnable_timeout_ms: u64,
    /// A worker whose process (the same nanny, or the same name) died unexpectedly within this
    /// many ms is "flaky": a result it finishes that other tasks still need is copied at once
    /// to a stable worker. 0 turns the copies off.
    #[arg(long, default_value_t = CoreConfig::default().flaky_window_ms)]
    flaky_window_ms: u64,
    /// At most this many tasks queued on each worker beyond its thread count (fewer for long
    /// tasks: about 10 ms of queued work).
    #[arg(long, default_value_t = CoreConfig::default().worker_queue_extra)]
    worker_queue_extra: u32,
    /// Unexpected worker deaths a task may cause before it fails as a "killed worker".
    #[arg(long, env = "ZASK_ALLOWED_FAILURES", default_value_t = CoreConfig::default().allowed_failures)]
    allowed_failures: u32,
    /// Keep a journal in this directory: after a crash, a scheduler started with the same
    /// directory resumes the graphs clients still wait for.
    #[arg(long)]
    state_dir: Option<std::path::PathBuf>,
    /// Largest message accepted on either port, in bytes.
    #[arg(long, default_value_t = zask::net::DEFAULT_MAX_MESSAGE_BYTES)]
    max_message_bytes: i64,
    /// Messages queued per client connection, each way; a client that lets its replies pile
    /// up to this is treated as gone (its requests are dropped, with a warning).
    #[arg(long, default_value_t = SchedulerConfig::default().client_queue_max_messages)]
    client_queue_max: i32,
    /// Messages queued per worker connection, each way; a worker that lets them pile up to
    /// this is probed and removed if it does not answer.
    #[arg(long, default_value_t = SchedulerConfig::default().worker_queue_max_messages)]
    worker_queue_max: i32,
    /// Decoded messages waiting for the scheduler's core; when full, the ports stop reading
    /// (senders are slowed through ZeroMQ and TCP).
    #[arg(long, default_value_t = SchedulerConfig::default().event_queue_max)]
    event_queue_max: usize,
    /// Messages per second each client connection may send (bursts of twice that); past it
    /// its requests fail as rate-limited, with at most one warning per connection per second.
    #[arg(long, default_value_t = SchedulerConfig::default().client_max_messages_per_second,
          value_parser = clap::value_parser!(u32).range(1..))]
    client_max_messages_per_second: u32,
    /// Messages per second each worker connection may send (bursts of twice that); past it
    /// its messages are dropped, with at most one warning per connection per second.
    #[arg(long, default_value_t = SchedulerConfig::default().worker_max_messages_per_second,
          value_parser = clap::value_parser!(u32).range(1..))]
    worker_max_messages_per_second: u32,
    /// A 2015 Python worker silent this long (ms; it heartbeats every 5 s by default) is
    /// removed and its tasks run elsewhere.
    #[arg(long, default_value_t = SchedulerConfig::default().python_worker_timeout_ms)]
    python_worker_timeout_ms: u64,
    /// The cluster's keys: made on first start (mode 0600), with the access files workers,
    /// clients and operators connect with written beside it (worker.access, client.access,
    /// operator.access). Default ~/.zask/cluster.keys.
    #[arg(long)]
    security_file: Option<std::path::PathBuf>,
    /// No encryption and no authentication: anyone who reaches the ports can do anything.
    #[arg(long)]
    insecure: bool,
    /// A plaintext port for 2015 (dask 0.7) Python workers, which cannot do CURVE (0: any
    /// free port). It serves only the 2015 protocol, on --legacy-host.
    #[arg(long)]
    legacy_worker_port: Option<u16>,
    /// A plaintext port for 2015 (dask 0.7) Python clients (0: any free port), on
    /// --legacy-host.
    #[arg(long)]
    legacy_client_port: Option<u16>,
    /// Where the plaintext 2015 ports listen: this machine only unless told otherwise.
    #[arg(long, default_value = "127.0.0.1")]
    legacy_host: String,
    /// The web dashboard's port (also /metrics, /health, /api/status, /events); 0: any free
    /// port. When taken, any free port is used instead (logged).
    #[arg(long, default_value_t = dashboard::DEFAULT_PORT)]
    dashboard_port: u16,
    /// Where the dashboard listens: this machine only unless told otherwise. On another
    /// address of a secure cluster it needs the token in dashboard.token (beside the access
    /// files): open http://HOST:PORT/?token=TOKEN.
    #[arg(long, default_value = "127.0.0.1")]
    dashboard_host: String,
    /// No dashboard (no HTTP port at all).
    #[arg(long, conflicts_with_all = ["dashboard_port", "dashboard_host"])]
    no_dashboard: bool,
}

fn main() {
    // A bug in any thread of this process ends it at once (see zask::fatal).
    zask::fatal::install_for_process();
    let args: Args = zask::cli::parse_or_exit();
    zask::cli::init_logging();
    // Where the cluster's keys and access files are (and the dashboard's token).
    let mut keys_dir = None;
    let security = if args.insecure {
        None
    } else {
        let path = args
            .security_file
            .clone()
            .unwrap_or_else(zask::security::default_keys_path);
        keys_dir = Some(
            path.parent()
                .unwrap_or(std::path::Path::new("."))
                .to_path_buf(),
        );
        match zask::security::ClusterKeys::load_or_create(&path) {
            Ok((keys, created)) => {
                let dir = path.parent().unwrap_or(std::path::Path::new("."));
                log::info!(
                    "{} the cluster's keys in {}; workers connect with --access-file {}, \
                     clients with {} (operators: {})",
                    if created { "made" } else { "using" },
                    path.display(),
                    dir.join("worker.access").display(),
                    dir.join("client.access").display(),
                    dir.join("operator.access").display()
                );
                println!("security_file {}", path.display());
                Some(keys)
            }
            Err(e) => {
                eprintln!("error: {e}");
                std::process::exit(if e.retry_may_help() { 1 } else { 2 });
            }
        }
    };
    let dashboard = (!args.no_dashboard).then(|| {
        // A secure cluster's dashboard on a reachable address needs a token; on loopback
        // (the default) only this machine's users reach it.
        let token = match &keys_dir {
            Some(dir) if !dashboard::is_loopback(&args.dashboard_host) => {
                match dashboard::load_or_create_token(dir) {
                    Ok(t) => {
                        log::info!(
                            "the dashboard needs the token in {}",
                            dir.join(dashboard::TOKEN_FILE).display()
                        );
                        Some(t)
                    }
                    Err(e) => {
                        eprintln!(
                            "error: the dashboard's token ({}): {e}",
                            dir.join(dashboard::TOKEN_FILE).display()
                        );
                        std::process::exit(1);
                    }
                }
            }
            _ => None,
        };
        DashboardConfig {
            host: args.dashboard_host.clone(),
            port: args.dashboard_port,
            token,
            ..DashboardConfig::default()
        }
    });
    let config = SchedulerConfig {
        host: args.listen.host,
        worker_port: args.listen.worker_port,
        client_port: args.listen.client_port,
        max_message_bytes: args.max_message_bytes,
        state_dir: args.state_dir,
        client_queue_max_messages: args.client_queue_max,
        worker_queue_max_messages: args.worker_queue_max,
        event_queue_max: args.event_queue_max,
        command_queue_max: SchedulerConfig::default().command_queue_max,
        python_worker_timeout_ms: args.python_worker_timeout_ms,
        security,
        legacy_worker_port: args.legacy_worker_port,
        legacy_client_port: args.legacy_client_port,
        legacy_host: args.legacy_host,
        client_max_messages_per_second: args.client_max_messages_per_second,
        worker_max_messages_per_second: args.worker_max_messages_per_second,
        core: CoreConfig {
            heartbeat_timeout_ms: args.heartbeat_timeout_ms,
            client_timeout_ms: args.client_timeout_ms.max(1),
            unrunnable_timeout_ms: args.unrunnable_timeout_ms,
            flaky_window_ms: args.flaky_window_ms,
            worker_queue_extra: args.worker_queue_extra,
            allowed_failures: args.allowed_failures,
            ..CoreConfig::default()
        },
        dashboard,
    };
    let scheduler = match Scheduler::start(config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    };
    println!("address_to_workers {}", scheduler.address_to_workers());
    println!("address_to_clients {}", scheduler.address_to_clients());
    if let Some(a) = scheduler.legacy_address_to_workers() {
        println!("legacy_address_to_workers {a}");
    }
    if let Some(a) = scheduler.legacy_address_to_clients() {
        println!("legacy_address_to_clients {a}");
    }
    if let Some(a) = scheduler.dashboard_address() {
        println!("dashboard http://{a}/");
    }
    // Returns only when an operator shut the cluster down (`zask shutdown`).
    scheduler.wait();
    log::info!("the scheduler stopped: shut down on an operator's request");
}
