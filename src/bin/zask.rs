//! `zask`: submit graphs and query a cluster from the shell, with graphs and results as JSON.

use std::path::PathBuf;
use std::process::exit;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use zask::adaptive::AdaptConfig;
use zask::client::ClientSecurity;
use zask::graph::json::{graph_to_json, key_to_json, parse_graph, parse_key_arg, value_to_json};
use zask::scheduler::SchedulerConfig;
use zask::security::{Access, Role};
use zask::worker::memory::MemoryLimitSpec;
use zask::{
    Client, ClientConfig, CollectionKind, GetOptions, KeySpec, LocalCluster, WorkerAddress,
    WorkerName, WorkerSelector,
};

/// Submit task graphs to a Zask cluster and inspect it. Graphs are JSON files (see README).
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    #[command(subcommand)]
    command: Command,
    /// The access file to connect with (a client's or an operator's; zask-scheduler writes
    /// them beside its keys). Default: ~/.zask/client.access when it exists.
    #[arg(long, global = true, env = zask::security::ACCESS_FILE_ENV)]
    access_file: Option<std::path::PathBuf>,
    /// Plaintext, for a scheduler started --insecure.
    #[arg(long, global = true)]
    insecure: bool,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Compute keys of a JSON graph and print the result as JSON (one key: its value; several:
    /// a list).
    Get {
        /// The scheduler's client address.
        #[arg(long, env = "ZASK_SCHEDULER", value_parser = zask::cli::parse_address)]
        scheduler: String,
        /// Keep the results on the workers after printing them.
        #[arg(long)]
        keep_results: bool,
        /// Give up after this many seconds.
        #[arg(long)]
        timeout: Option<f64>,
        /// The graph file ("-" reads standard input).
        graph: String,
        /// Keys to compute; a JSON array such as '["x", 1]' names a tuple key.
        #[arg(required = true)]
        keys: Vec<String>,
    },
    /// Print the cluster's state as JSON.
    Status {
        #[arg(long, env = "ZASK_SCHEDULER", value_parser = zask::cli::parse_address)]
        scheduler: String,
    },
    /// Store, fetch, compute, list and delete named collections on the scheduler.
    Collection {
        #[command(subcommand)]
        action: CollectionAction,
    },
    /// Print which workers hold each key, as JSON.
    WhoHas {
        #[arg(long, env = "ZASK_SCHEDULER", value_parser = zask::cli::parse_address)]
        scheduler: String,
        /// Say where each holder keeps the value: {"KEY": {"ADDRESS": "memory" | "disk"}}.
        #[arg(long = "where")]
        show_where: bool,
        #[arg(required = true)]
        keys: Vec<String>,
    },
    /// Print the recent log lines of the scheduler and of the workers as JSON:
    /// {"scheduler": [...], "workers": {"ADDRESS": [...]}}.
    Logs {
        #[arg(long, env = "ZASK_SCHEDULER", value_parser = zask::cli::parse_address)]
        scheduler: String,
        /// Only this worker (its name, or its tcp:// address); every worker by default.
        #[arg(long, value_name = "NAME_OR_ADDRESS")]
        worker: Option<String>,
    },
    /// Run a scheduler and workers in this process until SIGINT or SIGTERM. Prints one JSON
    /// line: {"address_to_clients", "address_to_workers", "workers", "access": {"client",
    /// "operator", "worker"}} (no "access" with --insecure). Logs at info by default, every
    /// scaling decision with its reason.
    Local(LocalArgs),
}

/// `zask local`: the settings of the local cluster.
#[derive(clap::Args, Debug)]
struct LocalArgs {
    /// Workers to start (default: the machine's cores; with --adapt, its MIN).
    #[arg(long)]
    workers: Option<usize>,
    /// Task threads per worker.
    #[arg(long, default_value_t = 1)]
    threads: u32,
    /// The most data each worker holds: bytes, a size (300MB, 4GiB), a fraction of the
    /// machine's memory (0.25) or auto (the machine's memory split evenly between the
    /// workers: --workers, or MAX with --adapt), 0 for none.
    #[arg(long, default_value = "0", value_parser = zask::worker::memory::parse_memory_limit_spec)]
    memory_limit: MemoryLimitSpec,
    /// Scale between MIN and MAX workers by the adaptive policy, e.g. 1:8.
    #[arg(long, value_name = "MIN:MAX", value_parser = parse_adapt_bounds)]
    adapt: Option<(usize, usize)>,
    /// How long the pending work should take on the cluster when adapting, in seconds
    /// (default 5).
    #[arg(long, requires = "adapt", value_parser = parse_seconds)]
    target_duration: Option<f64>,
    #[command(flatten)]
    listen: zask::cli::ListenArgs,
    /// Where to write the cluster's access files (client.access, operator.access,
    /// worker.access), so other programs can connect. Default: a new directory under the
    /// system's temporary directory. Created with mode 0700 if missing.
    #[arg(long)]
    security_dir: Option<PathBuf>,
}

/// `MIN:MAX` of `--adapt`.
fn parse_adapt_bounds(text: &str) -> Result<(usize, usize), String> {
    let (min, max) = text
        .split_once(':')
        .ok_or_else(|| format!("{text:?} is not MIN:MAX (e.g. 1:8)"))?;
    let number = |s: &str| {
        s.trim()
            .parse::<usize>()
            .map_err(|_| format!("{s:?} in {text:?} is not a number of workers"))
    };
    let (min, max) = (number(min)?, number(max)?);
    if max < min || max == 0 {
        return Err(format!("{text:?}: MAX must be at least MIN and at least 1"));
    }
    Ok((min, max))
}

/// A positive number of seconds.
fn parse_seconds(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(s) if s.is_finite() && s > 0.0 => Ok(s),
        _ => Err(format!("{text:?} is not a positive number of seconds")),
    }
}

#[derive(Subcommand, Debug)]
enum CollectionAction {
    /// Store a JSON graph (the format of `zask get`) with its output keys under NAME.
    Set {
        #[arg(long, env = "ZASK_SCHEDULER", value_parser = zask::cli::parse_address)]
        scheduler: String,
        name: String,
        /// The graph file ("-" reads standard input).
        graph: String,
        #[arg(required = true)]
        keys: Vec<String>,
    },
    /// Print the stored collection as JSON: {"kind", "keys", "graph"}.
    Get {
        #[arg(long, env = "ZASK_SCHEDULER", value_parser = zask::cli::parse_address)]
        scheduler: String,
        name: String,
    },
    /// Compute the stored collection and print its value as JSON (one key: its value;
    /// several: a list; a bag: its elements).
    Compute {
        #[arg(long, env = "ZASK_SCHEDULER", value_parser = zask::cli::parse_address)]
        scheduler: String,
        name: String,
    },
    /// Print the names of the stored collections as a JSON list.
    List {
        #[arg(long, env = "ZASK_SCHEDULER", value_parser = zask::cli::parse_address)]
        scheduler: String,
    },
    /// Delete the collection stored under NAME.
    Delete {
        #[arg(long, env = "ZASK_SCHEDULER", value_parser = zask::cli::parse_address)]
        scheduler: String,
        name: String,
    },
}

fn read_graph(path: &str) -> zask::Graph {
    let text = if path == "-" {
        std::io::read_to_string(std::io::stdin())
    } else {
        std::fs::read_to_string(path)
    }
    .unwrap_or_else(|e| fail(&format!("cannot read {path}: {e}")));
    parse_graph(&text).unwrap_or_else(|e| fail(&format!("{path}: {e}")))
}

fn collection_command(action: CollectionAction, security: &ClientSecurity) {
    match action {
        CollectionAction::Set {
            scheduler,
            name,
            graph,
            keys,
        } => {
            let dsk = read_graph(&graph);
            let keys = keys.iter().map(|k| parse_key_arg(k)).collect();
            let collection = zask::Collection::from_graph(&dsk, keys);
            connect(&scheduler, security)
                .set_collection(&name, &collection)
                .unwrap_or_else(|e| fail(&e.to_string()));
        }
        CollectionAction::Get { scheduler, name } => {
            let c = connect(&scheduler, security)
                .get_collection(&name)
                .unwrap_or_else(|e| fail(&e.to_string()));
            let out = serde_json::json!({
                "kind": c.kind,
                "keys": c.keys.iter().map(key_to_json).collect::<Vec<_>>(),
                "graph": graph_to_json(&c.to_graph()),
            });
            println!("{out}");
        }
        CollectionAction::Compute { scheduler, name } => {
            let client = connect(&scheduler, security);
            let c = client
                .get_collection(&name)
                .unwrap_or_else(|e| fail(&e.to_string()));
            let value = match c.kind {
                CollectionKind::Bag => zask::Bag::from_collection(&c)
                    .map_err(|e| e.to_string())
                    .and_then(|b| client.compute(&b).map_err(|e| e.to_string())),
                _ => {
                    let spec = if c.keys.len() == 1 {
                        KeySpec::One(c.keys[0].clone())
                    } else {
                        KeySpec::from(c.keys.clone())
                    };
                    client.get(&c.to_graph(), spec).map_err(|e| e.to_string())
                }
            }
            .unwrap_or_else(|e| fail(&e));
            println!("{}", value_to_json(&value));
        }
        CollectionAction::List { scheduler } => {
            let names = connect(&scheduler, security)
                .list_collections()
                .unwrap_or_else(|e| fail(&e.to_string()));
            println!("{}", serde_json::json!(names));
        }
        CollectionAction::Delete { scheduler, name } => connect(&scheduler, security)
            .delete_collection(&name)
            .unwrap_or_else(|e| fail(&e.to_string())),
    }
}

fn main() {
    // A bug in any thread of this process ends it at once (see zask::fatal).
    zask::fatal::install_for_process();
    let args: Args = zask::cli::parse_or_exit();
    if let Command::Local(local_args) = args.command {
        // A long-running cluster says what it does (its scaling decisions) at info.
        zask::cli::init_logging();
        return local(local_args, args.insecure);
    }
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let security = if args.insecure {
        ClientSecurity::Insecure
    } else if let Some(path) = &args.access_file {
        let roles = [Role::Client, Role::Operator];
        ClientSecurity::Access(
            Access::read_for(path, &roles).unwrap_or_else(|e| fail(&e.to_string())),
        )
    } else {
        ClientSecurity::Default
    };
    match args.command {
        Command::Get {
            scheduler,
            keep_results,
            timeout,
            graph,
            keys,
        } => {
            let dsk = read_graph(&graph);
            let keys: Vec<zask::Key> = keys.iter().map(|k| parse_key_arg(k)).collect();
            let spec = if keys.len() == 1 {
                KeySpec::One(keys[0].clone())
            } else {
                KeySpec::from(keys)
            };
            let options = GetOptions {
                keep_results,
                timeout: timeout.map(Duration::from_secs_f64),
                ..GetOptions::default()
            };
            let client = connect(&scheduler, &security);
            match client.get_with(&dsk, spec, options) {
                Ok(v) => println!("{}", value_to_json(&v)),
                Err(e) => fail(&e.to_string()),
            }
        }
        Command::Collection { action } => collection_command(action, &security),
        Command::Status { scheduler } => {
            let status = connect(&scheduler, &security)
                .status()
                .unwrap_or_else(|e| fail(&e.to_string()));
            let workers: Vec<serde_json::Value> = status
                .workers
                .iter()
                .map(|w| {
                    serde_json::json!({
                        "address": w.address,
                        "name": w.name,
                        "pid": w.pid,
                        "nthreads": w.nthreads,
                        "memory_limit": w.memory_limit_bytes,
                        "store": w.store,
                        "keys": w.keys.len(),
                        "processing": w.processing,
                        "paused": w.memory.paused,
                        "memory_bytes": w.memory.memory_bytes,
                        "spilled_bytes": w.memory.spilled_bytes,
                        "spilled_keys": w.memory.spilled_keys.len(),
                    })
                })
                .collect();
            let out = serde_json::json!({
                "address_to_workers": status.address_to_workers,
                "address_to_clients": status.address_to_clients,
                "workers": workers,
                "tasks": status.tasks,
                "processing": status.processing,
                "in_memory": status.in_memory,
                "clients": status.clients,
            });
            println!("{out}");
        }
        Command::WhoHas {
            scheduler,
            show_where,
            keys,
        } => {
            let keys: Vec<zask::Key> = keys.iter().map(|k| parse_key_arg(k)).collect();
            let client = connect(&scheduler, &security);
            let who_has = client
                .who_has(keys.clone())
                .unwrap_or_else(|e| fail(&e.to_string()));
            // With --where, each holder's tier from its memory report in the status.
            let spilled: Option<Vec<_>> = show_where.then(|| {
                client
                    .status()
                    .unwrap_or_else(|e| fail(&e.to_string()))
                    .workers
            });
            let holders_of = |k: &zask::Key| -> serde_json::Value {
                let holders = who_has.get(k).cloned().unwrap_or_default();
                match &spilled {
                    None => serde_json::json!(holders),
                    Some(workers) => serde_json::Value::Object(
                        holders
                            .iter()
                            .map(|a| {
                                let on_disk = workers
                                    .iter()
                                    .any(|w| &w.address == a && w.memory.spilled_keys.contains(k));
                                let tier = if on_disk { "disk" } else { "memory" };
                                (a.to_string(), serde_json::json!(tier))
                            })
                            .collect(),
                    ),
                }
            };
            let pairs: Vec<serde_json::Value> = keys
                .iter()
                .map(|k| serde_json::json!([key_to_json(k), holders_of(k)]))
                .collect();
            // An object when every key is a string, as most are; pairs otherwise.
            if keys.iter().all(|k| k.as_str().is_some()) {
                let map: serde_json::Map<String, serde_json::Value> = keys
                    .iter()
                    .map(|k| (k.to_string(), holders_of(k)))
                    .collect();
                println!("{}", serde_json::Value::Object(map));
            } else {
                println!("{}", serde_json::Value::Array(pairs));
            }
        }
        Command::Logs { scheduler, worker } => {
            let selector = worker.map(|w| {
                if zask::net::Endpoint::parse(&w).is_ok() {
                    WorkerSelector::Address(WorkerAddress::new(w))
                } else {
                    WorkerSelector::Name(WorkerName::new(w))
                }
            });
            let logs = connect(&scheduler, &security)
                .get_logs(selector)
                .unwrap_or_else(|e| fail(&e.to_string()));
            let workers: serde_json::Map<String, serde_json::Value> = logs
                .workers
                .into_iter()
                .map(|(address, lines)| (address.to_string(), serde_json::json!(lines)))
                .collect();
            let out = serde_json::json!({
                "scheduler": logs.scheduler,
                "workers": workers,
            });
            println!("{out}");
        }
        Command::Local(_) => unreachable!("handled before the client commands"),
    }
}

/// `zask local`: starts the cluster, prints its line, adapts if asked and stops on SIGINT or
/// SIGTERM (exit 0).
fn local(args: LocalArgs, insecure: bool) {
    // Registered before anything starts, so a signal during the start is not lost.
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        if let Err(e) = signal_hook::flag::register(signal, stop.clone()) {
            fail(&format!("cannot handle signal {signal}: {e}"));
        }
    }
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let workers = match (args.workers, args.adapt) {
        (Some(n), _) => n,
        (None, Some((min, _))) => min,
        (None, None) => cores,
    };
    // `auto` splits the machine between as many workers as there may be.
    let sharing = args.adapt.map_or(workers, |(_, max)| max.max(workers));
    let memory_limit_bytes = args
        .memory_limit
        .resolve(sharing as u64, zask::worker::memory::machine_memory_bytes)
        .unwrap_or_else(|e| usage(&format!("--memory-limit: {e}")));
    let scheduler = SchedulerConfig {
        host: args.listen.host,
        worker_port: args.listen.worker_port,
        client_port: args.listen.client_port,
        ..SchedulerConfig::default()
    };
    let mut builder = LocalCluster::builder()
        .workers(workers)
        .threads_per_worker(args.threads)
        .memory_limit_bytes(memory_limit_bytes)
        .scheduler_config(scheduler);
    if insecure {
        builder = builder.insecure();
    }
    let cluster = builder.start().unwrap_or_else(|e| fail(&e.to_string()));
    let mut line = serde_json::json!({
        "address_to_clients": cluster.address_to_clients(),
        "address_to_workers": cluster.address_to_workers(),
        "workers": workers,
    });
    if !insecure {
        let dir = security_dir(args.security_dir);
        let mut files = serde_json::Map::new();
        for role in [Role::Client, Role::Operator, Role::Worker] {
            let access = cluster.access(role).expect("a secure cluster has access");
            let path = dir.join(role.access_file_name());
            access
                .write(&path)
                .unwrap_or_else(|e| fail(&format!("{}: {e}", path.display())));
            files.insert(role.as_str().into(), path.display().to_string().into());
        }
        line["access"] = serde_json::Value::Object(files);
        log::info!(
            "access files in {}: clients connect with --access-file {}",
            dir.display(),
            dir.join(Role::Client.access_file_name()).display()
        );
    }
    println!("{line}");
    if let Some((minimum, maximum)) = args.adapt {
        let mut config = AdaptConfig::new(minimum, maximum);
        if let Some(seconds) = args.target_duration {
            config.target_duration_ms = ((seconds * 1000.0) as u64).max(1);
        }
        // The adaptive thread logs its settings and then every decision with its reason.
        cluster
            .adapt(config)
            .unwrap_or_else(|e| fail(&e.to_string()));
    }
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(50));
    }
    log::info!("stopping: a signal asked for it");
    cluster.stop_adapt();
    drop(cluster);
}

/// The directory for the access files: the one given (made with mode 0700 if missing), or a
/// new one under the system's temporary directory.
fn security_dir(given: Option<PathBuf>) -> PathBuf {
    use std::os::unix::fs::DirBuilderExt;
    let mut builder = std::fs::DirBuilder::new();
    builder.mode(0o700);
    if let Some(dir) = given {
        if !dir.is_dir() {
            builder
                .recursive(true)
                .create(&dir)
                .unwrap_or_else(|e| fail(&format!("{}: {e}", dir.display())));
        }
        return dir;
    }
    let base = std::env::temp_dir();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    // `create` fails when the name is taken, so a directory is never shared by accident.
    for attempt in 0..100u32 {
        let dir = base.join(format!(
            "zask-local-{}-{:x}",
            std::process::id(),
            nanos.wrapping_add(attempt)
        ));
        match builder.create(&dir) {
            Ok(()) => return dir,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => fail(&format!("{}: {e}", dir.display())),
        }
    }
    fail(&format!(
        "cannot make a new directory in {}",
        base.display()
    ))
}

fn usage(message: &str) -> ! {
    zask::cli::usage_error(message)
}

fn connect(address: &str, security: &ClientSecurity) -> Client {
    let config = ClientConfig {
        security: security.clone(),
        ..ClientConfig::default()
    };
    Client::connect_with(address, config).unwrap_or_else(|e| fail(&e.to_string()))
}

fn fail(message: &str) -> ! {
    eprintln!("error: {message}");
    exit(1)
}
