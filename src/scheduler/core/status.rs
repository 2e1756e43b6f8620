//! What clients can ask about the cluster: its status (`zask status`) and where values are
//! (`who_has`). Read-only views over the task table and the worker registry.

use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};

use super::tasks::{TaskState, TaskTable};
use super::workers::WorkerRegistry;
use super::{CoreConfig, SchedulerCore, WorkerId};
use crate::graph::Key;
use crate::protocol::{ClusterStatus, WorkerAddress, WorkerInfo};

/// The cluster's status: its addresses, every worker with the keys it holds, task counts.
pub(super) fn cluster_status(
    config: &CoreConfig,
    tasks: &TaskTable,
    registry: &WorkerRegistry,
    clients: usize,
) -> ClusterStatus {
    let mut workers: Vec<WorkerInfo> = registry
        .iter()
        .map(|(_, w)| WorkerInfo {
            address: w.address.clone(),
            name: w.name.clone(),
            pid: w.pid,
            nthreads: w.nthreads,
            memory_limit_bytes: w.memory_limit_bytes,
            store: w.store.clone(),
            keys: {
                let mut keys: Vec<_> = w.has.iter().map(|t| tasks.get(*t).name().clone()).collect();
                keys.sort();
                keys.dedup();
                keys
            },
            processing: w.processing.len() as u64,
            runs_python: w.runs_python,
        })
        .collect();
    workers.sort_by(|a, b| a.address.cmp(&b.address));
    let (mut processing, mut in_memory) = (0, 0);
    for (_, t) in tasks.iter() {
        match t.state {
            TaskState::Processing(_) => processing += 1,
            TaskState::Memory => in_memory += 1,
            _ => {}
        }
    }
    ClusterStatus {
        address_to_workers: config.address_to_workers.clone(),
        address_to_clients: config.address_to_clients.clone(),
        workers,
        tasks: tasks.len() as u64,
        processing,
        in_memory,
        clients: clients as u64,
    }
}

impl SchedulerCore {
    /// Where the values of `keys` are: the named value of a key, else every definition of it
    /// the scheduler tracks (one pass over the tasks for all such keys).
    pub(super) fn who_has(&self, keys: Vec<Key>) -> Vec<(Key, Vec<WorkerAddress>)> {
        let unnamed: HashSet<&Key> = keys
            .iter()
            .filter(|k| self.names.get(k).is_none())
            .collect();
        let mut by_name: HashMap<&Key, Vec<WorkerId>> = HashMap::default();
        if !unnamed.is_empty() {
            for (_, t) in self.tasks.iter() {
                if let Some(k) = unnamed.get(t.name()) {
                    by_name
                        .entry(k)
                        .or_default()
                        .extend(t.who_has.iter().copied());
                }
            }
        }
        keys.iter()
            .map(|k| {
                let mut holders: Vec<WorkerId> = match self.names.get(k) {
                    Some(t) => self.tasks.get(t).who_has.clone(),
                    None => by_name.get(k).cloned().unwrap_or_default(),
                };
                holders.sort();
                holders.dedup();
                let addresses = holders.iter().map(|w| self.workers.address(*w)).collect();
                (k.clone(), addresses)
            })
            .collect()
    }
}
