//! What clients can ask about the cluster: its status (`zask status`) and where values are
//! (`who_has`). Read-only views over the task table and the worker registry (and the
//! placement part's durations, for adaptive scaling); and what the dashboard and `/metrics`
//! read (`metrics`), with the metrics part's counts.

use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};

use super::metrics::{CoreMetrics, PrefixProgress, TaskCounts, WorkerFigures};
use super::placement::{key_prefix, Placement};
use super::tasks::{TaskState, TaskTable};
use super::workers::WorkerRegistry;
use super::{CoreConfig, SchedulerCore, WorkerId};
use crate::graph::Key;
use crate::protocol::{ClusterStatus, TaskPrefixInfo, WorkerAddress, WorkerInfo, WorkerMemory};

/// The cluster's status: its addresses, every worker with the keys it holds (and their
/// bytes, and whether it is idle), task counts, and per task prefix the tasks not finished and
/// their average run time.
pub(super) fn cluster_status(
    config: &CoreConfig,
    tasks: &TaskTable,
    registry: &WorkerRegistry,
    placement: &Placement,
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
            nbytes: w.has.iter().map(|t| tasks.get(*t).nbytes).sum(),
            idle: w.processing.is_empty() && !w.retiring,
            memory: WorkerMemory {
                paused: w.memory.paused,
                memory_bytes: w.memory.memory_bytes,
                spilled_bytes: w.memory.spilled_bytes,
                spilled_keys: {
                    let mut keys: Vec<_> = w
                        .memory
                        .on_disk
                        .iter()
                        .map(|t| tasks.get(*t).name().clone())
                        .collect();
                    keys.sort();
                    keys.dedup();
                    keys
                },
            },
        })
        .collect();
    workers.sort_by(|a, b| a.address.cmp(&b.address));
    let (mut processing, mut in_memory, mut ready, mut waiting) = (0, 0, 0, 0);
    let mut pending: HashMap<String, u64> = HashMap::default();
    for (_, t) in tasks.iter() {
        match t.state {
            TaskState::Processing(_) => processing += 1,
            TaskState::Memory => in_memory += 1,
            TaskState::Ready => ready += 1,
            TaskState::Waiting => waiting += 1,
            _ => {}
        }
        if t.state.is_active() {
            *pending.entry(key_prefix(t.name())).or_default() += 1;
        }
    }
    let mut prefixes: Vec<TaskPrefixInfo> = pending
        .into_iter()
        .map(|(prefix, pending)| TaskPrefixInfo {
            average_ms: placement.prefix_ms(&prefix),
            prefix,
            pending,
        })
        .collect();
    prefixes.sort_by(|a, b| a.prefix.cmp(&b.prefix));
    ClusterStatus {
        address_to_workers: config.address_to_workers.clone(),
        address_to_clients: config.address_to_clients.clone(),
        workers,
        tasks: tasks.len() as u64,
        processing,
        in_memory,
        clients: clients as u64,
        ready,
        waiting,
        prefixes,
    }
}

impl SchedulerCore {
    /// What the dashboard and `/metrics` show: task counts by state, every worker's figures,
    /// progress per task prefix, the counters and the recent task runs. One pass over the
    /// tasks (the IO layer reads it a few times a second, only when the dashboard is on).
    pub fn metrics(&self) -> CoreMetrics {
        let mut counts = TaskCounts {
            total: self.tasks.len() as u64,
            ..TaskCounts::default()
        };
        let mut pending: HashMap<String, u64> = HashMap::default();
        for (_, t) in self.tasks.iter() {
            match t.state {
                TaskState::Released => counts.released += 1,
                TaskState::Waiting => counts.waiting += 1,
                TaskState::Ready => counts.ready += 1,
                TaskState::Processing(_) => counts.processing += 1,
                TaskState::Memory => counts.memory += 1,
                TaskState::Erred => counts.erred += 1,
            }
            if t.state.is_active() {
                *pending.entry(key_prefix(t.name())).or_default() += 1;
            }
        }
        let mut prefixes: Vec<PrefixProgress> = self
            .metrics
            .prefixes()
            .map(|(prefix, done, erred)| PrefixProgress {
                pending: pending.remove(prefix).unwrap_or(0),
                prefix: prefix.to_owned(),
                done,
                erred,
            })
            .collect();
        prefixes.extend(pending.into_iter().map(|(prefix, pending)| {
            let (done, erred) = self.metrics.prefix_counts(&prefix);
            PrefixProgress {
                prefix,
                done,
                erred,
                pending,
            }
        }));
        prefixes.sort_by(|a, b| a.prefix.cmp(&b.prefix));
        let mut workers: Vec<WorkerFigures> = self
            .workers
            .iter()
            .map(|(_, w)| WorkerFigures {
                address: w.address.as_str().to_owned(),
                name: w.name.as_str().to_owned(),
                nthreads: w.nthreads,
                memory_limit_bytes: w.memory_limit_bytes,
                nbytes: w.has.iter().map(|t| self.tasks.get(*t).nbytes).sum(),
                keys: w.has.len() as u64,
                processing: w.processing.len() as u64,
                retiring: w.retiring,
                runs_python: w.runs_python,
            })
            .collect();
        workers.sort_by(|a, b| a.address.cmp(&b.address));
        CoreMetrics {
            now_ms: self.now_ms,
            counters: self.metrics.counters().clone(),
            journal_writes_total: self.outbox.journal_writes(),
            tasks: counts,
            clients: self.clients.len() as u64,
            workers,
            prefixes,
            task_stream: self.metrics.task_stream().cloned().collect(),
        }
    }

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
                    Some(t) => self.tasks.get(t).who_has.to_vec(),
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
