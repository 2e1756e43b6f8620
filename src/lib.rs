//! Zask: a fault-tolerant distributed task scheduler. One scheduler, many workers, many clients,
//! over ZeroMQ. See ARCHITECTURE.md for where things live and how a message flows.
//!
//! ```no_run
//! use zask::{graph, Client, Value};
//! let client = Client::connect("tcp://127.0.0.1:5555")?;
//! let dsk = graph! { "x" => 1, "y" => ("add", "x", 2) };
//! assert_eq!(client.get(&dsk, "y")?, Value::from(3));
//! # Ok::<(), zask::ClientError>(())
//! ```

pub mod adaptive;
pub mod bag;
pub mod cli;
pub mod client;
pub mod cluster;
pub mod collection;
pub mod fatal;
pub mod graph;
pub mod local_cluster;
pub mod logs;
pub mod net;
pub mod processes;
pub mod protocol;
pub mod scheduler;
pub mod security;
pub mod ssh_cluster;
pub mod value;
pub mod worker;

pub use adaptive::{AdaptConfig, Decision};
pub use bag::{Bag, Item};
pub use client::{Client, ClientConfig, ClientError, GetOptions, Logs, Progress};
pub use cluster::{Cluster, ClusterError};
pub use collection::{
    Collection, CollectionError, CollectionKind, Computable, LegacyCollection, StoredCollection,
};
pub use graph::{Expr, Graph, GraphError, Key, KeySpec, Node};
pub use local_cluster::{LocalCluster, LocalClusterError};
pub use protocol::{WorkerAddress, WorkerName, WorkerSelector};
pub use ssh_cluster::{SshCluster, SshClusterError};
pub use value::{Bytes, FromValue, Value};
pub use worker::Registry;
pub use zask_storage::StoreSpec;
