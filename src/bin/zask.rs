//! `zask`: submit graphs and query a cluster from the shell, with graphs and results as JSON.

use std::process::exit;
use std::time::Duration;

use clap::{Parser, Subcommand};
use zask::graph::json::{key_to_json, parse_graph, parse_key_arg, value_to_json};
use zask::{Client, GetOptions, KeySpec};

/// Submit task graphs to a Zask cluster and inspect it. Graphs are JSON files (see README).
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    #[command(subcommand)]
    command: Command,
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
    /// Print which workers hold each key, as JSON.
    WhoHas {
        #[arg(long, env = "ZASK_SCHEDULER", value_parser = zask::cli::parse_address)]
        scheduler: String,
        #[arg(required = true)]
        keys: Vec<String>,
    },
}

fn main() {
    let args: Args = zask::cli::parse_or_exit();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    match args.command {
        Command::Get {
            scheduler,
            keep_results,
            timeout,
            graph,
            keys,
        } => {
            let text = if graph == "-" {
                std::io::read_to_string(std::io::stdin())
            } else {
                std::fs::read_to_string(&graph)
            }
            .unwrap_or_else(|e| fail(&format!("cannot read {graph}: {e}")));
            let dsk = parse_graph(&text).unwrap_or_else(|e| fail(&format!("{graph}: {e}")));
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
            let client = connect(&scheduler);
            match client.get_with(&dsk, spec, options) {
                Ok(v) => println!("{}", value_to_json(&v)),
                Err(e) => fail(&e.to_string()),
            }
        }
        Command::Status { scheduler } => {
            let status = connect(&scheduler)
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
            let who_has = connect(&scheduler)
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

fn connect(address: &str) -> Client {
    Client::connect(address).unwrap_or_else(|e| fail(&e.to_string()))
}

fn fail(message: &str) -> ! {
    eprintln!("error: {message}");
    exit(1)
}
