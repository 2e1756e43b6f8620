//! `zask`: submit graphs and query a cluster from the shell, with graphs and results as JSON.

use std::path::PathBuf;
use std::process::exit;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::{Parser, Subcommand};
use zask::adaptive::AdaptConfig;
use zask::client::ClientSecurity;
use zask::cluster::ScalingFollower;
use zask::graph::json::{graph_to_json, key_to_json, parse_graph, parse_key_arg, value_to_json};
use zask::protocol::ScalingRequest;
use zask::scheduler::SchedulerConfig;
use zask::security::{Access, Role};
use zask::worker::memory::MemoryLimitSpec;
use zask::{
    Client, ClientConfig, CollectionKind, GetOptions, KeySpec, LocalCluster, WorkerAddress,
    WorkerName, WorkerSelector,
};

// The subcommands that do what the Rust client does (scatter ... shutdown), `--keys-json`.
#[path = "zask/shell.rs"]
mod shell;

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
    /// Fail a waiting command when the scheduler stays silent this long, in seconds (default
    /// 5). A scheduler taking in a very large graph may need longer.
    #[arg(long, global = true, value_parser = parse_seconds)]
    scheduler_timeout: Option<f64>,
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
        /// Draw a progress bar on stderr while the graph runs (only when stderr is a
        /// terminal; nothing otherwise).
        #[arg(long)]
        progress: bool,
        /// Keys in any shape, printed in that shape: a JSON array is a list (of keys or of
        /// lists), a string or an integer a key, {"key": ["x", 1]} a tuple key, e.g.
        /// '[["a"], [{"key": ["x", 1]}, 5]]'.
        #[arg(long, value_name = "JSON", conflicts_with = "keys")]
        keys_json: Option<String>,
        /// The graph file ("-" reads standard input).
        graph: String,
        /// Keys to compute; a JSON array such as '["x", 1]' names a tuple key.
        #[arg(required_unless_present = "keys_json")]
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
    #[command(flatten)]
    Shell(shell::ShellCommand),
    /// Print the recorded transitions of a key with their times and causes: submitted,
    /// waiting, assigned, lost with a worker, rescheduled, done... (plain text, or JSON with
    /// --json). Exits 1 when the scheduler keeps no story of the key.
    Story {
        #[arg(long, env = "ZASK_SCHEDULER", value_parser = zask::cli::parse_address)]
        scheduler: String,
        /// The key; a JSON array such as '["x", 1]' names a tuple key.
        key: String,
        /// Print JSON: {"key", "summary", "forgotten", "definitions", "steps": [{"at_ms",
        /// "definition", "event", ...its fields}]}.
        #[arg(long)]
        json: bool,
    },
    /// Print the scheduler's recent cluster events, oldest first: workers joined, left, lost
    /// (with what it cost), retired (with what they moved); tasks rescheduled, marked bad,
    /// erred. One line each, or JSON with --json.
    Events {
        #[arg(long, env = "ZASK_SCHEDULER", value_parser = zask::cli::parse_address)]
        scheduler: String,
        /// Print a JSON list: [{"at_ms", "event", ...its fields}].
        #[arg(long)]
        json: bool,
    },
    /// Run a scheduler and workers in this process until SIGINT or SIGTERM. Prints one JSON
    /// line: {"address_to_clients", "address_to_workers", "workers", "access": {"client",
    /// "operator", "worker"}} (no "access" with --insecure). Logs at info by default, every
    /// scaling decision with its reason.
    Local(LocalArgs),
    /// Run a scheduler on the first host and workers on the others (all on the one host when
    /// only one is given), started over ssh, until SIGINT or SIGTERM. Prints one JSON line as
    /// `zask local` does. The keys travel on ssh's standard input, never on a command line.
    Ssh(SshArgs),
    /// Ask a running cluster (`zask local`) for N workers; its manager applies it within its
    /// next interval (and stops adapting). Needs the operator's access file.
    Scale {
        #[arg(long, env = "ZASK_SCHEDULER", value_parser = zask::cli::parse_address)]
        scheduler: String,
        /// Workers wanted.
        workers: u32,
    },
    /// Ask a running cluster (`zask local`) to adapt between MIN and MAX workers, or to stop
    /// adapting (--stop). Needs the operator's access file.
    Adapt {
        #[arg(long, env = "ZASK_SCHEDULER", value_parser = zask::cli::parse_address)]
        scheduler: String,
        /// The fewest workers.
        #[arg(required_unless_present = "stop", conflicts_with = "stop")]
        minimum: Option<u32>,
        /// The most workers.
        #[arg(required_unless_present = "stop", conflicts_with = "stop")]
        maximum: Option<u32>,
        /// How long the pending work should take on the cluster, in seconds (default 5).
        #[arg(long, value_parser = parse_seconds, conflicts_with = "stop")]
        target_duration: Option<f64>,
        /// Stop adapting; the workers stay as they are.
        #[arg(long)]
        stop: bool,
    },
}

/// `zask local`: the settings of the local cluster.
#[derive(clap::Args, Debug)]
struct LocalArgs {
    /// Workers to start (default: with --adapt, its MIN; with --threads, the cores divided by
    /// them; else the machine filled: one single-threaded worker per core up to 4 cores,
    /// above that about the square root of the cores, workers × threads = cores).
    #[arg(long)]
    workers: Option<usize>,
    /// Task threads per worker (default: 1 with --workers or --adapt, else see --workers).
    #[arg(long)]
    threads: Option<u32>,
    /// The most data each worker holds: bytes, a size (300MB, 4GiB), a fraction of the
    /// machine's memory (0.25) or auto (the machine's memory split evenly between the
    /// workers: --workers, or MAX with --adapt), 0 for none. Default: auto.
    #[arg(long, value_parser = zask::worker::memory::parse_memory_limit_spec)]
    memory_limit: Option<MemoryLimitSpec>,
    /// Workers as zask-worker processes, each under its nanny (the default). The program is
    /// found from ZASK_WORKER_BIN, else beside this one, else on PATH.
    #[arg(long, overrides_with = "no_processes")]
    processes: bool,
    /// Workers as threads of this process instead of processes.
    #[arg(long, overrides_with = "processes")]
    no_processes: bool,
    /// Scale between MIN and MAX workers by the adaptive policy, e.g. 1:8.
    #[arg(long, value_name = "MIN:MAX", value_parser = parse_adapt_bounds)]
    adapt: Option<(usize, usize)>,
    /// How long the pending work should take on the cluster when adapting, in seconds
    /// (default 5).
    #[arg(long, requires = "adapt", value_parser = parse_seconds)]
    target_duration: Option<f64>,
    /// Workers offer the test functions too (fault-injection helpers: for tests only).
    #[arg(long, hide = true)]
    test_functions: bool,
    #[command(flatten)]
    listen: zask::cli::ListenArgs,
    /// Where to write the cluster's access files (client.access, operator.access,
    /// worker.access), so other programs can connect. Default: a new directory under the
    /// system's temporary directory. Created with mode 0700 if missing.
    #[arg(long)]
    security_dir: Option<PathBuf>,
}

/// `zask ssh`: the hosts and how to reach them.
#[derive(clap::Args, Debug)]
struct SshArgs {
    /// `[user@]host` of each machine: the first runs the scheduler.
    #[arg(required = true)]
    hosts: Vec<String>,
    /// Options for every ssh command, split at spaces: --ssh-option "-p 2222" --ssh-option
    /// "-i ~/.ssh/cluster_key" --ssh-option "-o StrictHostKeyChecking=accept-new".
    #[arg(long, allow_hyphen_values = true)]
    ssh_option: Vec<String>,
    /// Workers on each worker host.
    #[arg(long, default_value_t = 1)]
    workers_per_host: usize,
    /// Task threads per worker.
    #[arg(long, default_value_t = 1)]
    threads: u32,
    /// Each worker's --memory-limit (300MB, 0.25, auto).
    #[arg(long)]
    memory_limit: Option<String>,
    /// zask-scheduler's path on the first host (default: the local one's path, right when
    /// the hosts share a filesystem).
    #[arg(long)]
    scheduler_program: Option<PathBuf>,
    /// zask-worker's path on the worker hosts (default: the local one's path).
    #[arg(long)]
    worker_program: Option<PathBuf>,
    /// The interface the scheduler listens on (default: the first host's name; 0.0.0.0 for
    /// every interface).
    #[arg(long)]
    scheduler_listen: Option<String>,
    /// The scheduler's port for workers (0: any free port).
    #[arg(long, default_value_t = 0)]
    worker_port: u16,
    /// The scheduler's port for clients (0: any free port).
    #[arg(long, default_value_t = 0)]
    client_port: u16,
    /// Scale between MIN and MAX workers by the adaptive policy, e.g. 1:8 (workers start on
    /// the worker hosts in turn).
    #[arg(long, value_name = "MIN:MAX", value_parser = parse_adapt_bounds)]
    adapt: Option<(usize, usize)>,
    /// How long the pending work should take on the cluster when adapting, in seconds
    /// (default 5).
    #[arg(long, requires = "adapt", value_parser = parse_seconds)]
    target_duration: Option<f64>,
    /// Where to write the cluster's access files here (default: a new private directory
    /// under the system's temporary directory).
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
    let args = match args.command {
        Command::Local(local_args) => {
            // A long-running cluster says what it does (its scaling decisions) at info.
            zask::cli::init_logging();
            return local(local_args, args.insecure);
        }
        Command::Ssh(ssh_args) => {
            zask::cli::init_logging();
            return ssh(ssh_args, args.insecure);
        }
        command => Args { command, ..args },
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    if let Some(seconds) = args.scheduler_timeout {
        SCHEDULER_TIMEOUT_MS.store((seconds * 1000.0) as u64, Ordering::SeqCst);
    }
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
            progress,
            keys_json,
            graph,
            keys,
        } => {
            let spec = match keys_json {
                Some(text) => {
                    shell::key_spec_from_json(&text).unwrap_or_else(|e| usage(&e.to_string()))
                }
                None => shell::positional_spec(&keys),
            };
            let dsk = read_graph(&graph);
            let options = GetOptions {
                keep_results,
                timeout: timeout.map(Duration::from_secs_f64),
                ..GetOptions::default()
            };
            let client = connect(&scheduler, &security);
            let result = if progress {
                progress_get(&client, &dsk, spec, options)
            } else {
                client.get_with(&dsk, spec, options)
            };
            match result {
                Ok(v) => println!("{}", value_to_json(&v)),
                Err(e) => fail(&e.to_string()),
            }
        }
        Command::Shell(command) => match shell::run(command, &security) {
            Ok(Some(out)) => println!("{out}"),
            Ok(None) => {}
            Err(e) => fail(&e.to_string()),
        },
        Command::Collection { action } => collection_command(action, &security),
        Command::Status { scheduler } => {
            let client = connect(&scheduler, &security);
            let status = client.status().unwrap_or_else(|e| fail(&e.to_string()));
            // The size an operator last asked for (`zask scale`, `zask adapt`), if any.
            let scaling = client.scaling().unwrap_or_else(|e| fail(&e.to_string()));
            println!("{}", shell::status_json(&status, scaling.as_ref()));
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
        Command::Local(_) | Command::Ssh(_) => {
            unreachable!("handled before the client commands")
        }
        Command::Scale { scheduler, workers } => connect(&scheduler, &security)
            .set_scaling(ScalingRequest::Scale { workers })
            .unwrap_or_else(|e| fail(&e.to_string())),
        Command::Adapt {
            scheduler,
            minimum,
            maximum,
            target_duration,
            stop,
        } => {
            let request = match (minimum, maximum) {
                _ if stop => ScalingRequest::StopAdapt,
                (Some(minimum), Some(maximum)) => {
                    if maximum < minimum || maximum == 0 {
                        usage("MAX must be at least MIN and at least 1");
                    }
                    ScalingRequest::Adapt {
                        minimum,
                        maximum,
                        target_duration_ms: target_duration.map(|s| ((s * 1000.0) as u64).max(1)),
                    }
                }
                _ => usage("give MIN and MAX, or --stop"),
            };
            connect(&scheduler, &security)
                .set_scaling(request)
                .unwrap_or_else(|e| fail(&e.to_string()))
        }
        Command::Story {
            scheduler,
            key,
            json,
        } => story_command(&connect(&scheduler, &security), &key, json),
        Command::Events { scheduler, json } => {
            events_command(&connect(&scheduler, &security), json)
        }
    }
    say_goodbye();
}

/// `zask get --progress`: a bar on stderr when it is a terminal, fed by the scheduler's
/// batched progress reports (`Client::get_with_progress`); nothing drawn otherwise.
fn progress_get(
    client: &Client,
    dsk: &zask::Graph,
    spec: KeySpec,
    options: GetOptions,
) -> Result<zask::Value, zask::ClientError> {
    use std::io::IsTerminal;
    if !std::io::stderr().is_terminal() {
        return client.get_with(dsk, spec, options);
    }
    // Made at the first report, when the total is known (nothing is drawn before).
    let mut bar: Option<indicatif::ProgressBar> = None;
    let result = client.get_with_progress(dsk, spec, options, |p| {
        let bar = bar.get_or_insert_with(|| {
            let bar = indicatif::ProgressBar::with_draw_target(
                Some(p.total),
                indicatif::ProgressDrawTarget::stderr(),
            );
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{bar:40} {pos}/{len} tasks {percent:>3}% {elapsed} {msg}",
                )
                .expect("a valid template"),
            );
            bar
        });
        bar.set_length(p.total);
        bar.set_position(p.done + p.erred);
        if p.erred > 0 {
            bar.set_message(format!("{} erred", p.erred));
        }
    });
    if let Some(bar) = bar {
        match &result {
            Ok(_) => bar.finish(),
            Err(_) => bar.abandon(),
        }
    }
    result
}

/// `zask story KEY [--json]`.
fn story_command(client: &Client, key: &str, json: bool) {
    let key = parse_key_arg(key);
    let story = client
        .story(key.clone())
        .unwrap_or_else(|e| fail(&e.to_string()));
    if story.steps.is_empty() {
        fail(&format!(
            "no story of {key:?}: never submitted, or among the oldest keys (the scheduler \
             keeps the stories of its most recent keys only)"
        ));
    }
    if !json {
        print!("{story}");
        return;
    }
    let steps: Vec<serde_json::Value> = story
        .steps
        .iter()
        .map(|s| {
            let mut step = tagged_json(&s.what);
            step["at_ms"] = s.at_ms.into();
            step["definition"] = s.definition.into();
            step
        })
        .collect();
    let out = serde_json::json!({
        "key": key_to_json(&story.key),
        "summary": story.summary(),
        "forgotten": story.forgotten,
        "definitions": story.definitions,
        "steps": steps,
    });
    println!("{out}");
}

/// `zask events [--json]`.
fn events_command(client: &Client, json: bool) {
    let events = client.events().unwrap_or_else(|e| fail(&e.to_string()));
    if json {
        let list: Vec<serde_json::Value> = events
            .iter()
            .map(|e| {
                let mut event = tagged_json(&e.what);
                event["at_ms"] = e.at_ms.into();
                event
            })
            .collect();
        println!("{}", serde_json::Value::Array(list));
    } else {
        for event in events {
            println!("{event}");
        }
    }
}

/// An enum value as one JSON object: its variant's name in snake case under "event", its
/// fields beside it.
fn tagged_json(value: &impl serde::Serialize) -> serde_json::Value {
    let snake = |name: &str| {
        let mut out = String::new();
        for (i, c) in name.chars().enumerate() {
            if c.is_uppercase() && i > 0 {
                out.push('_');
            }
            out.extend(c.to_lowercase());
        }
        out
    };
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(name)) => serde_json::json!({ "event": snake(&name) }),
        Ok(serde_json::Value::Object(map)) if map.len() == 1 => {
            let (name, fields) = map.into_iter().next().expect("one entry");
            let mut out = match fields {
                serde_json::Value::Object(fields) => fields,
                other => [("value".to_string(), other)].into_iter().collect(),
            };
            out.insert("event".into(), snake(&name).into());
            serde_json::Value::Object(out)
        }
        Ok(other) => other,
        Err(e) => fail(&format!("cannot write JSON: {e}")),
    }
}

/// `zask local`: starts the cluster, prints its line, adapts if asked and stops on SIGINT or
/// SIGTERM (exit 0).
fn local(args: LocalArgs, insecure: bool) {
    let stop = stop_flag();
    let scheduler = SchedulerConfig {
        host: args.listen.host,
        worker_port: args.listen.worker_port,
        client_port: args.listen.client_port,
        // The dashboard on this machine only (8787, or a free port when that one is taken).
        dashboard: Some(zask::scheduler::dashboard::DashboardConfig::default()),
        ..SchedulerConfig::default()
    };
    let mut builder = LocalCluster::builder()
        .processes(!args.no_processes)
        .scheduler_config(scheduler);
    if let Some(n) = args.workers.or(args.adapt.map(|(min, _)| min)) {
        builder = builder.workers(n);
    }
    if let Some(n) = args.threads {
        builder = builder.threads_per_worker(n);
    }
    if args.test_functions {
        builder = builder.test_functions();
    }
    let shape = builder.shape();
    // `auto` (the default) splits the machine between as many workers as there may be.
    let sharing = args
        .adapt
        .map_or(shape.workers, |(_, max)| max.max(shape.workers));
    let memory_limit_bytes = args
        .memory_limit
        .unwrap_or(MemoryLimitSpec::Auto)
        .resolve(sharing as u64, zask::worker::memory::machine_memory_bytes)
        .unwrap_or_else(|e| usage(&format!("--memory-limit: {e}")));
    builder = builder.memory_limit_bytes(memory_limit_bytes);
    let workers = shape.workers;
    if insecure {
        builder = builder.insecure();
    }
    let cluster = builder.start().unwrap_or_else(|e| fail(&e.to_string()));
    let line = serde_json::json!({
        "address_to_clients": cluster.address_to_clients(),
        "address_to_workers": cluster.address_to_workers(),
        "workers": workers,
        "threads": cluster.threads_per_worker(),
        "memory_limit": cluster.memory_limit_bytes(),
        "processes": cluster.uses_processes(),
        "dashboard": cluster.dashboard_address().map(|a| format!("http://{a}/")),
    });
    log::info!(
        "{workers} workers ({}), {} threads each, memory limit {} bytes each",
        if cluster.uses_processes() {
            "processes"
        } else {
            "threads of this process"
        },
        cluster.threads_per_worker(),
        cluster.memory_limit_bytes()
    );
    let adapt = args
        .adapt
        .map(|(min, max)| adapt_settings(min, max, args.target_duration));
    serve(&cluster, line, insecure, args.security_dir, adapt, &stop);
    drop(cluster);
}

/// `--adapt MIN:MAX` with `--target-duration SECONDS`.
fn adapt_settings(minimum: usize, maximum: usize, target_duration: Option<f64>) -> AdaptConfig {
    let mut config = AdaptConfig::new(minimum, maximum);
    if let Some(seconds) = target_duration {
        config.target_duration_ms = ((seconds * 1000.0) as u64).max(1);
    }
    config
}

/// What `zask local` and `zask ssh` do with the cluster they started.
trait Managed {
    fn access(&self, role: Role) -> Option<Access>;
    fn client(&self) -> Result<Client, zask::ClientError>;
    fn adapt(&self, config: AdaptConfig) -> Result<(), zask::ClusterError>;
    fn stop_adapt(&self);
    fn apply(&self, request: &ScalingRequest) -> Result<(), zask::ClusterError>;
    fn shut_down(&self) -> bool;
}

macro_rules! managed {
    ($t:ty) => {
        impl Managed for $t {
            fn access(&self, role: Role) -> Option<Access> {
                <$t>::access(self, role)
            }
            fn client(&self) -> Result<Client, zask::ClientError> {
                <$t>::client(self)
            }
            fn adapt(&self, config: AdaptConfig) -> Result<(), zask::ClusterError> {
                <$t>::adapt(self, config)
            }
            fn stop_adapt(&self) {
                <$t>::stop_adapt(self)
            }
            fn apply(&self, request: &ScalingRequest) -> Result<(), zask::ClusterError> {
                <$t>::apply(self, request)
            }
            fn shut_down(&self) -> bool {
                <$t>::shut_down(self)
            }
        }
    };
}
managed!(LocalCluster);
managed!(zask::SshCluster);

/// Writes the access files (unless insecure) and names them in `line`, prints `line`,
/// adapts if asked, then applies operators' scaling requests until SIGINT or SIGTERM.
fn serve(
    cluster: &dyn Managed,
    mut line: serde_json::Value,
    insecure: bool,
    security: Option<PathBuf>,
    adapt: Option<AdaptConfig>,
    stop: &AtomicBool,
) {
    if !insecure {
        let dir = security_dir(security);
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
    if let Some(config) = adapt {
        // The adaptive thread logs its settings and then every decision with its reason.
        cluster
            .adapt(config)
            .unwrap_or_else(|e| fail(&e.to_string()));
    }
    // Operators' requests (`zask scale`, `zask adapt`) are recorded by the scheduler: read
    // them twice a second and apply each once.
    let mut follower = ScalingFollower::new();
    let mut operator: Option<Client> = None;
    let mut next_poll = std::time::Instant::now();
    while !stop.load(Ordering::SeqCst) {
        if cluster.shut_down() {
            // `zask shutdown`: the scheduler stopped and dismissed the workers.
            log::info!("stopping: an operator shut the cluster down");
            cluster.stop_adapt();
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
        if std::time::Instant::now() < next_poll {
            continue;
        }
        next_poll = std::time::Instant::now() + SCALING_POLL;
        if operator.is_none() {
            operator = cluster
                .client()
                .map_err(|e| log::warn!("scaling: cannot reach the scheduler: {e}"))
                .ok();
        }
        let Some(client) = &operator else { continue };
        match follower.poll(client) {
            Ok(Some(request)) => {
                if let Err(e) = cluster.apply(&request) {
                    log::warn!("scaling: {request} failed: {e}");
                }
            }
            Ok(None) => {}
            Err(e) => {
                log::warn!("scaling: cannot read the requested size: {e}");
                operator = None;
            }
        }
    }
    log::info!("stopping: a signal asked for it");
    cluster.stop_adapt();
}

/// Registers SIGTERM and SIGINT on a flag, before anything starts (so a signal during the
/// start is not lost).
fn stop_flag() -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        if let Err(e) = signal_hook::flag::register(signal, stop.clone()) {
            fail(&format!("cannot handle signal {signal}: {e}"));
        }
    }
    stop
}

/// `zask ssh`: the scheduler on the first host, workers on the others, until SIGINT or
/// SIGTERM.
fn ssh(args: SshArgs, insecure: bool) {
    let stop = stop_flag();
    let options: Vec<String> = args
        .ssh_option
        .iter()
        .flat_map(|o| o.split_whitespace().map(str::to_owned))
        .collect();
    let mut builder = zask::SshCluster::builder(args.hosts)
        .ssh_options(options)
        .workers_per_host(args.workers_per_host)
        .threads_per_worker(args.threads)
        .ports(args.worker_port, args.client_port);
    if let Some(p) = args.scheduler_program {
        builder = builder.scheduler_program(p);
    }
    if let Some(p) = args.worker_program {
        builder = builder.worker_program(p);
    }
    if let Some(limit) = args.memory_limit {
        builder = builder.memory_limit(limit);
    }
    if let Some(listen) = args.scheduler_listen {
        builder = builder.scheduler_listen(listen);
    }
    if insecure {
        builder = builder.insecure();
    }
    let cluster = builder.start().unwrap_or_else(|e| fail(&e.to_string()));
    let line = serde_json::json!({
        "address_to_clients": cluster.address_to_clients(),
        "address_to_workers": cluster.address_to_workers(),
        "workers": zask::Cluster::started(&cluster).len(),
    });
    let adapt = args
        .adapt
        .map(|(min, max)| adapt_settings(min, max, args.target_duration));
    serve(&cluster, line, insecure, args.security_dir, adapt, &stop);
    drop(cluster);
}

/// How often `zask local` reads the size operators ask for.
const SCALING_POLL: Duration = Duration::from_millis(500);

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

/// Every client this process connected, so that each says goodbye before the process exits
/// (an error exit included: `process::exit` runs no destructor) and the scheduler forgets it
/// at once instead of after its client timeout.
static CLIENTS: Mutex<Vec<Arc<Client>>> = Mutex::new(Vec::new());

/// `--scheduler-timeout` (0: the client's default), for every client this process connects.
static SCHEDULER_TIMEOUT_MS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn connect(address: &str, security: &ClientSecurity) -> Arc<Client> {
    let mut config = ClientConfig {
        security: security.clone(),
        ..ClientConfig::default()
    };
    match SCHEDULER_TIMEOUT_MS.load(Ordering::SeqCst) {
        0 => {}
        ms => config.scheduler_timeout_ms = ms,
    }
    let client =
        Arc::new(Client::connect_with(address, config).unwrap_or_else(|e| fail(&e.to_string())));
    CLIENTS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .push(client.clone());
    client
}

/// Says goodbye for every client this process connected (each waits at most 1 s for its
/// goodbye to leave).
fn say_goodbye() {
    let clients = std::mem::take(
        &mut *CLIENTS
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()),
    );
    for client in clients {
        client.disconnect();
    }
}

fn fail(message: &str) -> ! {
    say_goodbye();
    eprintln!("error: {message}");
    exit(1)
}
