//! Surviving a scheduler restart. The core describes its durable state as journal operations
//! (the IO layer makes them durable before anything else of the same batch leaves); after a
//! restart the IO layer hands the journal back, the core waits a grace period for workers to
//! register and report what they hold, then resubmits the journaled graphs, adopting every
//! result whose definition it still knows.

use rustc_hash::FxHashMap as HashMap;

use log::{debug, info};
use serde::{Deserialize, Serialize};

use super::tasks::{TaskId, TaskState};
use super::{SchedulerCore, WorkerId};
use crate::collection::StoredCollection;
use crate::graph::{Expr, Key};
use crate::protocol::codec::{encode_plain, spec_hash, SCATTERED};
use crate::protocol::{ConnectionId, FinishedTask, HeldKey, RequestId, WorkerSelector};

/// A change to the durable state.
#[derive(Clone, Debug, PartialEq)]
pub enum JournalOp {
    PutComputation {
        client: ConnectionId,
        request: RequestId,
        submission: Submission,
    },
    DeleteComputation {
        client: ConnectionId,
        request: RequestId,
    },
    /// Scattered data exists (it lives on workers; only its names are durable): the key a
    /// client gave it and its wire key.
    PutScattered {
        name: Key,
        key: Key,
        nbytes: u64,
        /// The client that scattered it (its owner).
        owner: ConnectionId,
    },
    DeleteScattered {
        key: Key,
    },
    PutCollection {
        name: String,
        collection: StoredCollection,
        /// Who stored it (none: nobody, operators only).
        owner: Option<ConnectionId>,
    },
    /// A stored collection's owner changed (its owner left: none).
    SetCollectionOwner {
        name: String,
        owner: Option<ConnectionId>,
    },
    DeleteCollection {
        name: String,
    },
    /// Forget pending graphs and scattered data (the cluster was restarted on request);
    /// collections stay.
    Clear,
}

/// A graph a client waits for, as submitted.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Submission {
    pub graph: Vec<(Key, Expr)>,
    pub outputs: Vec<Key>,
    pub keep_results: bool,
    #[serde(default)]
    pub restrictions: Vec<(Key, Vec<WorkerSelector>)>,
}

/// The durable state read back after a restart.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Recovered {
    pub computations: Vec<(ConnectionId, RequestId, Submission)>,
    /// (key, wire key, bytes, owner) of each scattered value (no owner: journaled before
    /// owners were, nobody's).
    pub scattered: Vec<(Key, Key, u64, Option<ConnectionId>)>,
    pub collections: Vec<(String, StoredCollection)>,
    /// The owner of each stored collection that has one (a journal written before owners
    /// were recorded has none: those collections are nobody's, operators only).
    pub collection_owners: Vec<(String, ConnectionId)>,
}

/// The recovery part: after a restart, the journaled graphs waiting for the grace period to
/// end, and the results workers reported that wait to be adopted by the tasks resubmitted.
#[derive(Default)]
pub(super) struct Recovery {
    replay: Option<Replay>,
    /// Held results to adopt while journaled graphs are resubmitted.
    pending_adoptions: HashMap<Key, Vec<(WorkerId, u64, u64)>>,
}

impl Recovery {
    /// When the grace period ends, while one is under way.
    pub(super) fn deadline(&self) -> Option<u64> {
        self.replay.as_ref().map(|r| r.deadline_ms)
    }

    /// The client's journaled requests not resubmitted yet.
    pub(super) fn requests_of<'a>(
        &'a self,
        client: &'a ConnectionId,
    ) -> impl Iterator<Item = RequestId> + 'a {
        self.replay
            .iter()
            .flat_map(|r| r.computations.iter())
            .filter(move |(c, _, _)| c == client)
            .map(|(_, request, _)| *request)
    }
}

/// Journaled graphs waiting for the grace period to end.
struct Replay {
    deadline_ms: u64,
    computations: Vec<(ConnectionId, RequestId, Submission)>,
    /// Results workers reported before the graphs that define them were resubmitted.
    candidates: HashMap<Key, Vec<(WorkerId, u64, u64)>>,
}

impl SchedulerCore {
    /// Loads the durable state of a previous run. Call once, before any event.
    pub fn recover(&mut self, now_ms: u64, recovered: Recovered) {
        self.now_ms = self.now_ms.max(now_ms);
        info!(
            "recovering {} pending graph(s) and {} scattered key(s); waiting {} ms for workers",
            recovered.computations.len(),
            recovered.scattered.len(),
            self.config.recovery_grace_ms
        );
        self.collections
            .restore(recovered.collections, recovered.collection_owners);
        for (name, key, nbytes, owner) in recovered.scattered {
            let t = match self.tasks.id(&key) {
                Some(t) => t,
                None => self.tasks.insert(name.clone(), key, None),
            };
            self.tasks.set_nbytes(t, nbytes);
            // Its scatterer owns it again (a client that kept the same key does not: keeps are
            // not journaled).
            self.name_value(name, t, owner);
        }
        self.recovery.replay = Some(Replay {
            deadline_ms: self.now_ms + self.config.recovery_grace_ms,
            computations: recovered.computations,
            candidates: HashMap::default(),
        });
    }

    /// A journaled request cancelled before it was resubmitted is dropped for good.
    pub(super) fn cancel_replay(&mut self, client: &ConnectionId, request: RequestId) {
        let Some(replay) = &mut self.recovery.replay else {
            return;
        };
        let before = replay.computations.len();
        replay
            .computations
            .retain(|(c, r, _)| !(c == client && *r == request));
        if replay.computations.len() < before {
            self.journal(JournalOp::DeleteComputation {
                client: client.clone(),
                request,
            });
        }
    }

    /// Resubmits the journaled graphs once the grace period is over.
    pub(super) fn replay_if_due(&mut self) {
        if self
            .recovery
            .replay
            .as_ref()
            .is_none_or(|r| self.now_ms < r.deadline_ms)
        {
            return;
        }
        let replay = self.recovery.replay.take().expect("checked above");
        // Scattered data no worker reported during the grace period is lost for good.
        let mut missing: Vec<TaskId> = self
            .tasks
            .iter()
            .filter(|(_, t)| t.spec.is_none() && t.state == TaskState::Released && t.needed())
            .map(|(id, _)| id)
            .collect();
        missing.sort();
        for t in missing {
            if self.tasks.exists(t) && self.tasks.get(t).waiters + self.tasks.get(t).wanted > 0 {
                let error = crate::protocol::RequestError::DataLost {
                    key: self.tasks.get(t).name().clone(),
                    workers: Vec::new(),
                };
                self.fail_dependents_and_wanters(t, error);
            }
            if self.tasks.exists(t) {
                info!(
                    "scattered {:?} was not found on any worker",
                    self.tasks.get(t).key
                );
                let name = self.tasks.get(t).name().clone();
                if self.names.get(&name) == Some(t) {
                    self.unname(&name);
                }
            }
        }
        let mut candidates = replay.candidates;
        for (client, request, submission) in replay.computations {
            info!(
                "resuming request {request} of {} ({} keys)",
                client,
                submission.graph.len()
            );
            self.clients.ensure(&client, self.now_ms);
            // Results already on workers for these definitions (same wire keys) are adopted
            // as the tasks are merged, before activation.
            self.recovery.pending_adoptions.extend(candidates.drain());
            self.submit(client, request, submission);
        }
        for (key, held) in std::mem::take(&mut self.recovery.pending_adoptions) {
            for (w, _, _) in held {
                self.workers.push_release(w, vec![key.clone()]);
            }
        }
        for (key, held) in candidates {
            for (w, _, _) in held {
                self.workers.push_release(w, vec![key.clone()]);
            }
        }
    }

    /// A freshly merged task: adopt a copy a worker reported during recovery, if it is the
    /// value of this very definition.
    pub(super) fn adopt_pending(&mut self, t: TaskId) {
        if self.recovery.pending_adoptions.is_empty() {
            return;
        }
        let Some(held) = self
            .recovery
            .pending_adoptions
            .remove(&self.tasks.get(t).key)
        else {
            return;
        };
        let origin = self.tasks.get(t).spec.as_deref().map(spec_hash);
        for (w, held_origin, nbytes) in held {
            if Some(held_origin) == origin && self.workers.get(w).is_some() {
                self.arrived_in_memory(t, w, nbytes);
            } else {
                let key = self.tasks.get(t).key.clone();
                self.workers.push_release(w, vec![key]);
            }
        }
    }

    /// What a (re)registering worker holds: keep the values of definitions known here, tell
    /// it to drop the rest. A stale value of a reused key name is never adopted.
    pub(super) fn adopt_held_keys(&mut self, w: WorkerId, keys: Vec<HeldKey>) {
        let mut unwanted = Vec::new();
        for held in keys {
            let Some(t) = self.tasks.id(&held.key) else {
                match &mut self.recovery.replay {
                    Some(r) => r.candidates.entry(held.key).or_default().push((
                        w,
                        held.origin,
                        held.nbytes,
                    )),
                    None => unwanted.push(held.key),
                }
                continue;
            };
            let task = self.tasks.get(t);
            // A replica (made by `replicate`) evaluates to its own key: it is a copy of known
            // data, trusted for scattered keys and for values already in memory.
            let replica = held.origin == spec_hash(&encode_plain(&Expr::Ref(held.key.clone())));
            let same_definition = match &task.spec {
                None => held.origin == SCATTERED || replica,
                Some(spec) => {
                    held.origin == spec_hash(spec) || (replica && task.state == TaskState::Memory)
                }
            };
            if !same_definition {
                unwanted.push(held.key);
                continue;
            }
            match task.state {
                TaskState::Memory => self.add_holder(t, w),
                TaskState::Released if task.spec.is_none() => {
                    debug!("scattered {:?} found again on a worker", held.key);
                    self.arrived_in_memory(t, w, held.nbytes);
                    self.dependents_may_proceed(t);
                }
                state if state.is_active() => {
                    // The value of this very definition (checked above): as good as a result
                    // of an assignment, though the worker was never given the task.
                    let done = FinishedTask {
                        key: held.key,
                        nbytes: held.nbytes,
                        fetched: vec![],
                        has_value: false,
                    };
                    self.task_finished(w, done, None);
                }
                _ => unwanted.push(held.key),
            }
        }
        if !unwanted.is_empty() {
            self.workers.push_release(w, unwanted);
        }
    }
}
