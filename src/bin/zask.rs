//! `zask`: submit graphs and query a cluster from the shell, with graphs and results as JSON.

use std::process::exit;
use std::time::Duration;

use clap::{Parser, Subcommand};
use zask::client::ClientSecurity;
use zask::graph::json::{graph_to_json, key_to_json, parse_graph, parse_key_arg, value_to_json};
use zask::security::{Access, Role};
use zask::{Client, ClientConfig, CollectionKind, GetOptions, KeySpec};

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
        #[arg(required = true)]
        keys: Vec<String>,
    },
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
        Command::WhoHas { scheduler, keys } => {
            let keys: Vec<zask::Key> = keys.iter().map(|k| parse_key_arg(k)).collect();
            let who_has = connect(&scheduler, &security)
                .who_has(keys.clone())
                .unwrap_or_else(|e| fail(&e.to_string()));
            let pairs: Vec<serde_json::Value> = keys
                .iter()
                .map(|k| {
                    serde_json::json!([key_to_json(k), who_has.get(k).cloned().unwrap_or_default()])
                })
                .collect();
            // An object when every key is a string, as most are; pairs otherwise.
            if keys.iter().all(|k| k.as_str().is_some()) {
                let map: serde_json::Map<String, serde_json::Value> = keys
                    .iter()
                    .map(|k| {
                        let holders = who_has.get(k).cloned().unwrap_or_default();
                        (k.to_string(), serde_json::json!(holders))
                    })
                    .collect();
                println!("{}", serde_json::Value::Object(map));
            } else {
                println!("{}", serde_json::Value::Array(pairs));
            }
        }
    }
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
