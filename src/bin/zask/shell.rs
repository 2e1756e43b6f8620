//! The subcommands that do from the shell what the Rust client does: scatter, gather,
//! release, replicate, persist, publish, datasets, unpublish, workers, restart, retire and
//! shutdown; and the `--keys-json` shape of keys (`get`, `gather`). Each prints JSON on
//! stdout (or nothing) and fails with one line on stderr; the README has a table of each
//! output's fields.

use clap::Subcommand;
use serde_json::{json, Value as Json};
use zask::graph::json::{
    key_from_json, key_to_json, parse_key_arg, value_from_json, value_to_json,
};
use zask::protocol::{ClusterStatus, WantedScaling, WorkerInfo};
use zask::{Collection, Key, KeySpec, Value, WorkerAddress, WorkerName, WorkerSelector};

use super::{connect, read_graph};
use zask::client::ClientSecurity;

/// `--scheduler ADDR` (or `$ZASK_SCHEDULER`), as every client subcommand takes it.
#[derive(clap::Args, Debug)]
pub struct At {
    /// The scheduler's client address.
    #[arg(long, env = "ZASK_SCHEDULER", value_parser = zask::cli::parse_address)]
    pub scheduler: String,
}

#[derive(Subcommand, Debug)]
pub enum ShellCommand {
    /// Send values to the workers under keys (dask's scatter); prints the keys as a JSON
    /// list. Later graphs use them with {"key": "NAME"}.
    Scatter {
        #[command(flatten)]
        at: At,
        /// Values as one JSON object, {"key": value, ...} (values in the graph format's
        /// literal syntax: {"bytes": ...}, {"map": ...}; strings stay strings).
        #[arg(long, value_name = "OBJECT")]
        json: Option<String>,
        /// KEY=VALUE pairs, VALUE in JSON (a bare word that is not JSON is a string).
        #[arg(value_name = "KEY=VALUE", required_unless_present = "json")]
        pairs: Vec<String>,
    },
    /// Print the values of keys held on the cluster (scattered, kept or persisted), as
    /// JSON: one key its value, several a list, --keys-json that shape.
    Gather {
        #[command(flatten)]
        at: At,
        /// Keys in any shape, as a JSON array of keys and arrays (see `zask get`).
        #[arg(long, value_name = "JSON", conflicts_with = "keys")]
        keys_json: Option<String>,
        /// Keys; a JSON array such as '["x", 1]' names a tuple key.
        #[arg(required_unless_present = "keys_json")]
        keys: Vec<String>,
    },
    /// Drop kept results and scattered data (this connection's pins; an operator's drop
    /// every pin).
    Release {
        #[command(flatten)]
        at: At,
        #[arg(required = true)]
        keys: Vec<String>,
    },
    /// Keep N copies of each key on distinct workers, now and after losses.
    Replicate {
        #[command(flatten)]
        at: At,
        /// How many copies.
        #[arg(long, short = 'n', value_parser = clap::value_parser!(u32).range(1..))]
        n: u32,
        #[arg(required = true)]
        keys: Vec<String>,
    },
    /// Compute keys of a JSON graph and keep the results on the workers (dask's persist);
    /// prints the keys as a JSON list. Release them with `zask release`.
    Persist {
        #[command(flatten)]
        at: At,
        /// The graph file ("-" reads standard input).
        graph: String,
        #[arg(required = true)]
        keys: Vec<String>,
    },
    /// Persist keys of a JSON graph and publish them as a dataset under NAME, which outlives
    /// this process (dask's publish_dataset).
    Publish {
        #[command(flatten)]
        at: At,
        name: String,
        /// The graph file ("-" reads standard input).
        graph: String,
        #[arg(required = true)]
        keys: Vec<String>,
    },
    /// Print the names of the published datasets as a sorted JSON list.
    Datasets {
        #[command(flatten)]
        at: At,
    },
    /// Unpublish the dataset NAME, releasing its results.
    Unpublish {
        #[command(flatten)]
        at: At,
        name: String,
    },
    /// Print the workers as a JSON list of objects (see the README for the fields).
    Workers {
        #[command(flatten)]
        at: At,
    },
    /// Restart every worker and drop all tasks and data (operators only).
    Restart {
        #[command(flatten)]
        at: At,
    },
    /// Retire workers gracefully (operators only): their results move to other workers
    /// first, then they stop for good (nannies too). Prints the addresses retired as a
    /// JSON list.
    Retire {
        #[command(flatten)]
        at: At,
        /// Workers by name or by tcp:// address.
        #[arg(required = true, value_name = "NAME_OR_ADDRESS")]
        workers: Vec<String>,
    },
    /// Shut the cluster down (operators only): every worker stops for good (nannies too)
    /// and the scheduler exits; a `zask local` exits too.
    Shutdown {
        #[command(flatten)]
        at: At,
    },
}

/// A worker as `zask workers` and `zask status` print it (README: JSON outputs).
pub fn worker_json(w: &WorkerInfo) -> Json {
    json!({
        "address": w.address,
        "name": w.name,
        "pid": w.pid,
        "nthreads": w.nthreads,
        "memory_limit": w.memory_limit_bytes,
        "store": w.store,
        "keys": w.keys.len(),
        "nbytes": w.nbytes,
        "processing": w.processing,
        "idle": w.idle,
        "runs_python": w.runs_python,
        "paused": w.memory.paused,
        "memory_bytes": w.memory.memory_bytes,
        "spilled_bytes": w.memory.spilled_bytes,
        "spilled_keys": w.memory.spilled_keys.len(),
    })
}

/// The cluster as `zask status` prints it (README: JSON outputs).
pub fn status_json(status: &ClusterStatus, scaling: Option<&WantedScaling>) -> Json {
    let prefixes: Vec<Json> = status
        .prefixes
        .iter()
        .map(|p| json!({"prefix": p.prefix, "pending": p.pending, "average_ms": p.average_ms}))
        .collect();
    json!({
        "address_to_workers": status.address_to_workers,
        "address_to_clients": status.address_to_clients,
        "workers": status.workers.iter().map(worker_json).collect::<Vec<_>>(),
        "tasks": status.tasks,
        "processing": status.processing,
        "in_memory": status.in_memory,
        "ready": status.ready,
        "waiting": status.waiting,
        "prefixes": prefixes,
        "clients": status.clients,
        "scaling": scaling,
    })
}

/// A worker named on the command line: a tcp:// address, else a name.
pub fn worker_selector(text: &str) -> WorkerSelector {
    if zask::net::Endpoint::parse(text).is_ok() {
        WorkerSelector::Address(WorkerAddress::new(text.to_owned()))
    } else {
        WorkerSelector::Name(WorkerName::new(text.to_owned()))
    }
}

/// The keys of `--keys-json`, in their shape. The rule is the JSON graph format's: an array
/// is a list (of keys or of lists), a string or an integer is a key, and a tuple key is
/// written `{"key": ["x", 1]}`, as a reference to it is in a graph. So
/// `[["a"], [{"key": ["x", 1]}, 5]]` asks for `[[a], [("x", 1), 5]]` and gets the values in
/// that shape.
pub fn key_spec_from_json(text: &str) -> Result<KeySpec, KeysJsonError> {
    let json: Json = serde_json::from_str(text).map_err(KeysJsonError::InvalidJson)?;
    fn spec(json: &Json) -> Result<KeySpec, KeysJsonError> {
        match json {
            Json::Array(items) => Ok(KeySpec::Many(
                items.iter().map(spec).collect::<Result<_, _>>()?,
            )),
            Json::Object(fields) if fields.len() == 1 && fields.contains_key("key") => {
                key_from_json(&fields["key"])
                    .map(KeySpec::One)
                    .map_err(KeysJsonError::BadKey)
            }
            Json::String(_) | Json::Number(_) => key_from_json(json)
                .map(KeySpec::One)
                .map_err(KeysJsonError::BadKey),
            other => Err(KeysJsonError::NotAKey(other.clone())),
        }
    }
    spec(&json)
}

/// Why `--keys-json` was refused (a usage error: the command line must change).
#[derive(Debug)]
pub enum KeysJsonError {
    InvalidJson(serde_json::Error),
    /// A key the graph format refuses (a float, a nested object in a tuple key...).
    BadKey(zask::graph::json::JsonGraphError),
    /// Neither a list, a key, nor `{"key": [...]}`.
    NotAKey(Json),
}

impl std::fmt::Display for KeysJsonError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeysJsonError::InvalidJson(e) => write!(f, "--keys-json: invalid JSON: {e}"),
            KeysJsonError::BadKey(e) => write!(f, "--keys-json: {e}"),
            KeysJsonError::NotAKey(json @ Json::Object(_)) => write!(
                f,
                "--keys-json: {json} is not a key: write a tuple key as {{\"key\": [...]}}"
            ),
            KeysJsonError::NotAKey(other) => write!(
                f,
                "--keys-json: {other} is not a key (a string, an integer or {{\"key\": [...]}})"
            ),
        }
    }
}

/// The positional keys of `get` and `gather`: one key is asked alone (its value printed
/// alone), several as a list.
pub fn positional_spec(keys: &[String]) -> KeySpec {
    let keys: Vec<Key> = keys.iter().map(|k| parse_key_arg(k)).collect();
    if keys.len() == 1 {
        KeySpec::One(keys[0].clone())
    } else {
        KeySpec::from(keys)
    }
}

/// `KEY=VALUE` of `zask scatter`: the key as on the command line, the value in JSON (a word
/// that is not JSON is a string, as a shell user means `name=alice`).
fn scatter_pair(pair: &str) -> Result<(Key, Value), String> {
    let (key, value) = pair
        .split_once('=')
        .ok_or_else(|| format!("{pair:?} is not KEY=VALUE"))?;
    if key.is_empty() {
        return Err(format!("{pair:?}: the key is empty"));
    }
    let value = match serde_json::from_str::<Json>(value) {
        Ok(json) => value_from_json(&json).map_err(|e| format!("{key}: {e}"))?,
        Err(_) => Value::Str(value.to_owned()),
    };
    Ok((parse_key_arg(key), value))
}

/// The values `zask scatter` sends: those of `--json`, then the `KEY=VALUE` pairs.
fn scatter_data(json: Option<&str>, pairs: &[String]) -> Result<Vec<(Key, Value)>, String> {
    let mut data: Vec<(Key, Value)> = Vec::new();
    if let Some(text) = json {
        let object: Json =
            serde_json::from_str(text).map_err(|e| format!("--json: invalid JSON: {e}"))?;
        let Json::Object(fields) = object else {
            return Err("--json: expected an object {\"key\": value, ...}".into());
        };
        for (k, v) in &fields {
            let value = value_from_json(v).map_err(|e| format!("--json: {k}: {e}"))?;
            data.push((Key::from(k.as_str()), value));
        }
    }
    for pair in pairs {
        data.push(scatter_pair(pair)?);
    }
    Ok(data)
}

fn keys_json(keys: &[Key]) -> Json {
    Json::Array(keys.iter().map(key_to_json).collect())
}

/// Runs one subcommand; returns what to print on stdout (None: nothing).
pub fn run(
    command: ShellCommand,
    security: &ClientSecurity,
) -> Result<Option<Json>, zask::ClientError> {
    match command {
        ShellCommand::Scatter { at, json, pairs } => {
            let data = scatter_data(json.as_deref(), &pairs).unwrap_or_else(|e| super::usage(&e));
            let keys = connect(&at.scheduler, security).scatter(data)?;
            Ok(Some(keys_json(&keys)))
        }
        ShellCommand::Gather {
            at,
            keys_json,
            keys,
        } => {
            let spec = match keys_json {
                Some(text) => {
                    key_spec_from_json(&text).unwrap_or_else(|e| super::usage(&e.to_string()))
                }
                None => positional_spec(&keys),
            };
            let value = connect(&at.scheduler, security).gather(spec)?;
            Ok(Some(value_to_json(&value)))
        }
        ShellCommand::Release { at, keys } => {
            let keys: Vec<Key> = keys.iter().map(|k| parse_key_arg(k)).collect();
            connect(&at.scheduler, security).release(keys)?;
            Ok(None)
        }
        ShellCommand::Replicate { at, n, keys } => {
            let keys: Vec<Key> = keys.iter().map(|k| parse_key_arg(k)).collect();
            connect(&at.scheduler, security).replicate(keys, n)?;
            Ok(None)
        }
        ShellCommand::Persist { at, graph, keys } => {
            let collection = collection(&graph, &keys);
            let persisted = connect(&at.scheduler, security).persist(&collection)?;
            Ok(Some(keys_json(&persisted.keys)))
        }
        ShellCommand::Publish {
            at,
            name,
            graph,
            keys,
        } => {
            let collection = collection(&graph, &keys);
            let client = connect(&at.scheduler, security);
            let persisted = client.persist(&collection)?;
            client.publish(&name, &persisted)?;
            Ok(None)
        }
        ShellCommand::Datasets { at } => {
            let names = connect(&at.scheduler, security).list_datasets()?;
            Ok(Some(json!(names)))
        }
        ShellCommand::Unpublish { at, name } => {
            connect(&at.scheduler, security).unpublish(&name)?;
            Ok(None)
        }
        ShellCommand::Workers { at } => {
            let workers = connect(&at.scheduler, security).workers()?;
            Ok(Some(Json::Array(workers.iter().map(worker_json).collect())))
        }
        ShellCommand::Restart { at } => {
            connect(&at.scheduler, security).restart()?;
            Ok(None)
        }
        ShellCommand::Retire { at, workers } => {
            let selectors = workers.iter().map(|w| worker_selector(w)).collect();
            let retired = connect(&at.scheduler, security).retire_workers(selectors)?;
            Ok(Some(json!(retired)))
        }
        ShellCommand::Shutdown { at } => {
            connect(&at.scheduler, security).shutdown()?;
            Ok(None)
        }
    }
}

/// A graph file's keys as a collection (what `persist` and `publish` take).
fn collection(graph: &str, keys: &[String]) -> Collection {
    let dsk = read_graph(graph);
    let keys = keys.iter().map(|k| parse_key_arg(k)).collect();
    Collection::from_graph(&dsk, keys)
}
