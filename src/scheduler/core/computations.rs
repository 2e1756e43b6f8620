//! The computations part: client requests that wait for values (a `get`, a `gather`) or for
//! results in memory (a `persist`), the output tasks each reports to (`output_of`), and the
//! fetches of output values from workers. Submitting, completing, failing and ending
//! computations, and delivering their values, are handled here.

use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};

use log::{debug, warn};
use smallvec::SmallVec;

use super::tasks::{TaskId, TaskState};
use super::violation::InvariantViolation;
use super::{Command, JournalOp, SchedulerCore, Submission, WorkerId};
use crate::graph::Key;
use crate::protocol::{
    ConnectionId, Frame, RequestError, RequestId, ToClient, ToWorker, WorkerSelector,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CompId(pub u64);

/// One client request that waits for values: a `get` or a `gather`.
struct Computation {
    client: ConnectionId,
    request: RequestId,
    /// In request order, with repeats.
    outputs: Vec<TaskId>,
    values: HashMap<TaskId, Frame>,
    /// Distinct outputs.
    distinct: Vec<TaskId>,
    keep_results: bool,
    /// False for `persist`: done when the outputs are in memory; no value travels.
    values_wanted: bool,
}

#[derive(Default)]
pub(super) struct Computations {
    by_id: HashMap<CompId, Computation>,
    /// The computations each output task reports to.
    output_of: HashMap<TaskId, SmallVec<[CompId; 1]>>,
    /// Value fetches sent to workers, by request id. The ids may outlive their tasks (the
    /// answer is matched by wire key, and a forgotten task's id never names another).
    value_requests: HashMap<u64, (WorkerId, Vec<TaskId>)>,
    /// Output tasks whose value is being fetched.
    fetching_value: HashSet<TaskId>,
    next_computation: u64,
}

impl Computations {
    /// The client request a computation answers.
    pub(super) fn request_of(&self, c: CompId) -> Option<RequestId> {
        self.by_id.get(&c).map(|c| c.request)
    }

    /// A computation's distinct output tasks (empty once it ended).
    pub(super) fn outputs_of(&self, c: CompId) -> &[TaskId] {
        self.by_id.get(&c).map_or(&[], |c| &c.distinct)
    }

    pub(super) fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// Whether some computation waiting for `t` wants its value (not only memory).
    pub(super) fn value_wanted(&self, t: TaskId) -> bool {
        self.output_of.get(&t).is_some_and(|cs| {
            cs.iter()
                .any(|c| self.by_id.get(c).is_some_and(|c| c.values_wanted))
        })
    }

    /// The persists waiting for `t` to be in memory.
    pub(super) fn persists_of(&self, t: TaskId) -> Vec<CompId> {
        self.output_of
            .get(&t)
            .into_iter()
            .flatten()
            .copied()
            .filter(|c| self.by_id.get(c).is_some_and(|c| !c.values_wanted))
            .collect()
    }

    /// Task `t` is forgotten: it is no output and no value of it is being fetched.
    pub(super) fn forget(&mut self, t: TaskId) {
        self.output_of.remove(&t);
        self.fetching_value.remove(&t);
    }

    /// Worker `w` is gone: the outputs whose values it owed, to ask another holder for.
    pub(super) fn worker_lost(&mut self, w: WorkerId) -> Vec<TaskId> {
        let owed: Vec<u64> = self
            .value_requests
            .iter()
            .filter(|(_, (holder, _))| *holder == w)
            .map(|(r, _)| *r)
            .collect();
        let mut tasks = Vec::new();
        for r in owed {
            if let Some((_, ts)) = self.value_requests.remove(&r) {
                for t in ts {
                    self.fetching_value.remove(&t);
                    tasks.push(t);
                }
            }
        }
        tasks
    }

    /// Ends every computation at once (a restart): their requests, oldest first.
    pub(super) fn clear(&mut self) -> Vec<(ConnectionId, RequestId)> {
        let mut comps: Vec<(CompId, Computation)> = self.by_id.drain().collect();
        comps.sort_by_key(|(c, _)| *c);
        self.output_of.clear();
        self.value_requests.clear();
        self.fetching_value.clear();
        comps
            .into_iter()
            .map(|(_, c)| (c.client, c.request))
            .collect()
    }

    /// The part's own invariant: outputs are live tasks, each reporting to live computations.
    pub(super) fn check(&self, exists: &dyn Fn(TaskId) -> bool) -> Result<(), InvariantViolation> {
        for (t, cs) in &self.output_of {
            if !exists(*t) {
                return Err(InvariantViolation::new(
                    "computations",
                    format!("a forgotten task {t:?} is an output"),
                ));
            }
            for c in cs {
                if !self.by_id.contains_key(c) {
                    return Err(InvariantViolation::new(
                        "computations",
                        format!("task {t:?} reports to {c:?}, which has ended"),
                    ));
                }
            }
        }
        for t in &self.fetching_value {
            if !exists(*t) {
                return Err(InvariantViolation::new(
                    "computations",
                    format!("the value of a forgotten task {t:?} is being fetched"),
                ));
            }
        }
        Ok(())
    }
}

impl SchedulerCore {
    pub(super) fn submit(
        &mut self,
        client: ConnectionId,
        request: RequestId,
        submission: Submission,
    ) {
        debug!(
            "request {request} from {}: graph of {} keys, {} outputs",
            client,
            submission.graph.len(),
            submission.outputs.len()
        );
        let Submission {
            graph,
            outputs,
            keep_results,
            restrictions,
        } = submission;
        let resolved = match self.resolve_graph(&graph, &outputs) {
            Ok(resolved) => resolved,
            Err(error) => {
                debug!("rejecting graph: {error}");
                self.journal(JournalOp::DeleteComputation {
                    client: client.clone(),
                    request,
                });
                self.reply(&client, ToClient::Failed { request, error });
                return;
            }
        };
        // What is needed of the names once the tasks are in the table (a few keys), so that
        // the decoded graph and the name map can go first: at a million tasks they and the
        // growing table would otherwise all be held at once.
        let stories = self.story_keys(&graph, &resolved);
        let restricted: Vec<(Key, Vec<WorkerSelector>)> = restrictions
            .iter()
            .filter_map(|(key, workers)| Some((resolved.wire_key(key)?.clone(), workers.clone())))
            .collect();
        let mut new_tasks = resolved.into_new_tasks();
        let graph = if self.outbox.journaling() {
            graph
        } else {
            drop(graph);
            Vec::new()
        };
        let outputs_ids = self.insert_new_tasks(&mut new_tasks);
        drop(new_tasks);
        self.stories_submitted(stories, &client);
        for (wire, workers) in restricted {
            if let Some(t) = self.tasks.id(&wire) {
                self.placement.restrict(t, workers.into_boxed_slice());
            }
        }
        let c = self.new_computation(client.clone(), request, outputs_ids, keep_results, true);
        if self.outbox.journaling() {
            let submission = Submission {
                graph,
                outputs,
                keep_results,
                restrictions,
            };
            self.journal(JournalOp::PutComputation {
                client,
                request,
                submission,
            });
        }
        self.start_computation(c);
    }

    pub(super) fn start_computation(&mut self, c: CompId) {
        let distinct = self.computations.by_id[&c].distinct.clone();
        // An output that already failed (and is still held, by a name) fails the request now.
        if let Some(error) = distinct
            .iter()
            .find_map(|t| self.tasks.get(*t).error.as_deref().cloned())
        {
            let comp = &self.computations.by_id[&c];
            let (client, request) = (comp.client.clone(), comp.request);
            self.reply(&client, ToClient::Failed { request, error });
            self.end_computation(c);
            return;
        }
        self.activate(&distinct);
        if !self.computations.by_id.contains_key(&c) {
            return; // failed during activation (lost scattered input, failed input)
        }
        for t in distinct {
            if self.tasks.exists(t) {
                self.request_value_if_needed(t);
            }
        }
        self.maybe_complete(c);
    }

    pub(super) fn new_computation(
        &mut self,
        client: ConnectionId,
        request: RequestId,
        outputs: Vec<TaskId>,
        keep_results: bool,
        values_wanted: bool,
    ) -> CompId {
        self.computations.next_computation += 1;
        let c = CompId(self.computations.next_computation);
        let mut distinct = outputs.clone();
        distinct.sort();
        distinct.dedup();
        for &t in &distinct {
            self.tasks.want(t);
            self.computations.output_of.entry(t).or_default().push(c);
        }
        self.clients.add_computation(&client, c);
        self.computations.by_id.insert(
            c,
            Computation {
                client,
                request,
                outputs,
                values: HashMap::default(),
                distinct,
                keep_results,
                values_wanted,
            },
        );
        c
    }

    /// Values of named keys (scattered, kept or persisted).
    pub(super) fn gather(&mut self, client: ConnectionId, request: RequestId, keys: Vec<Key>) {
        let mut ids = Vec::with_capacity(keys.len());
        for k in &keys {
            match self.names.get(k) {
                Some(t) => ids.push(t),
                None => {
                    let error = RequestError::NotFound { key: k.clone() };
                    self.reply(&client, ToClient::Failed { request, error });
                    return;
                }
            }
        }
        let c = self.new_computation(client, request, ids, false, true);
        self.start_computation(c);
    }

    /// Asks a holder for an output task's value if some computation still waits for it.
    pub(super) fn request_value_if_needed(&mut self, t: TaskId) {
        if self.computations.fetching_value.contains(&t)
            || self.tasks.get(t).state != TaskState::Memory
        {
            return;
        }
        let waiting = self.computations.output_of.get(&t).is_some_and(|cs| {
            cs.iter().any(|c| {
                let comp = &self.computations.by_id[c];
                comp.values_wanted && !comp.values.contains_key(&t)
            })
        });
        if !waiting {
            return;
        }
        let Some(&holder) = self.tasks.get(t).who_has.first() else {
            return;
        };
        let request = self.outbox.next_request_id();
        let key = self.tasks.get(t).key.clone();
        self.computations.fetching_value.insert(t);
        self.computations
            .value_requests
            .insert(request, (holder, vec![t]));
        self.workers.push(
            holder,
            ToWorker::GetData {
                request,
                keys: vec![key],
            },
            vec![],
        );
    }

    pub(super) fn data_arrived(
        &mut self,
        w: WorkerId,
        request: u64,
        found: Vec<Key>,
        missing: Vec<Key>,
        frames: Vec<Frame>,
    ) {
        // Only the worker asked answers, only about the keys asked, with one value per key.
        let asked = match self.computations.value_requests.get(&request) {
            Some((holder, asked)) if *holder == w && found.len() == frames.len() => asked.clone(),
            _ => {
                warn!(
                    "ignoring data from worker {} for request {request}: not asked of it, or {} keys for {} values",
                    self.workers.address(w),
                    found.len(),
                    frames.len()
                );
                return;
            }
        };
        self.computations.value_requests.remove(&request);
        let asked_for = |key: &Key| self.tasks.id(key).filter(|t| asked.contains(t));
        let found: Vec<(TaskId, Frame)> = found
            .iter()
            .zip(frames)
            .filter_map(|(key, frame)| asked_for(key).map(|t| (t, frame)))
            .collect();
        let missing: Vec<TaskId> = missing.iter().filter_map(asked_for).collect();
        for t in asked {
            if !found.iter().any(|(x, _)| *x == t) && !missing.contains(&t) {
                // Neither found nor missing: ask again.
                self.computations.fetching_value.remove(&t);
                if self.tasks.exists(t) {
                    self.request_value_if_needed(t);
                }
            }
        }
        for (t, frame) in found {
            self.computations.fetching_value.remove(&t);
            self.value_arrived(t, frame);
        }
        for t in missing {
            self.computations.fetching_value.remove(&t);
            // The worker does not have it after all: stop listing it as a holder.
            if self.remove_holder(t, w) {
                let address = self.workers.address(w);
                self.data_lost(t, &[address]);
            } else {
                self.request_value_if_needed(t);
            }
        }
    }

    /// An output's value: hand it to every computation waiting for it.
    pub(super) fn value_arrived(&mut self, t: TaskId, value: Frame) {
        let Some(comps) = self.computations.output_of.get(&t).cloned() else {
            return;
        };
        for c in comps {
            if let Some(comp) = self.computations.by_id.get_mut(&c) {
                comp.values.entry(t).or_insert_with(|| value.clone());
                self.maybe_complete(c);
            }
        }
    }

    pub(super) fn maybe_complete(&mut self, c: CompId) {
        let Some(comp) = self.computations.by_id.get(&c) else {
            return;
        };
        if !comp.values_wanted {
            let all_in_memory = comp
                .distinct
                .iter()
                .all(|t| self.tasks.get(*t).state == TaskState::Memory);
            if all_in_memory {
                let (client, request) = (comp.client.clone(), comp.request);
                self.keep_outputs(c);
                self.reply(&client, ToClient::Done { request });
                self.end_computation(c);
            }
            return;
        }
        if comp.values.len() < comp.distinct.len() {
            return;
        }
        let comp = self.computations.by_id.get_mut(&c).expect("checked above");
        // Each distinct value travels once, moved into the reply (a million results must not
        // exist twice in the scheduler); `positions` says which frame each output is when a
        // key was asked for more than once.
        let mut values = std::mem::take(&mut comp.values);
        let repeats = comp.outputs.len() != comp.distinct.len();
        let mut frames = Vec::with_capacity(comp.distinct.len());
        let mut positions = Vec::new();
        if repeats {
            let mut index: HashMap<TaskId, u32> = HashMap::default();
            for t in &comp.outputs {
                let i = *index.entry(*t).or_insert_with(|| {
                    frames.push(values.remove(t).expect("every output has a value"));
                    frames.len() as u32 - 1
                });
                positions.push(i);
            }
        } else {
            for t in &comp.outputs {
                frames.push(values.remove(t).expect("every output has a value"));
            }
        }
        self.outbox.push(Command::ToClient {
            identity: comp.client.clone(),
            msg: ToClient::Values {
                request: comp.request,
                positions,
            },
            frames,
        });
        if comp.keep_results {
            self.keep_outputs(c);
        }
        self.end_computation(c);
    }

    /// `keep_results` and `persist`: each output's key names its value from now on.
    fn keep_outputs(&mut self, c: CompId) {
        let comp = &self.computations.by_id[&c];
        let owner = comp.client.clone();
        for t in comp.distinct.clone() {
            let name = self.tasks.get(t).name().clone();
            self.name_value(name, t, Some(owner.clone()));
        }
    }

    pub(super) fn fail_computations_wanting(&mut self, t: TaskId, error: &RequestError) {
        let Some(comps) = self.computations.output_of.get(&t).cloned() else {
            return;
        };
        for c in comps {
            if let Some(comp) = self.computations.by_id.get(&c) {
                let (client, request) = (comp.client.clone(), comp.request);
                self.reply(
                    &client,
                    ToClient::Failed {
                        request,
                        error: error.clone(),
                    },
                );
                self.end_computation(c);
            }
        }
    }

    /// Forgets a computation and releases what only it wanted.
    pub(super) fn end_computation(&mut self, c: CompId) {
        let Some(comp) = self.computations.by_id.remove(&c) else {
            return;
        };
        self.journal(JournalOp::DeleteComputation {
            client: comp.client.clone(),
            request: comp.request,
        });
        self.clients.computation_ended(&comp.client, c);
        self.progress.ended(c);
        for t in comp.distinct {
            if !self.tasks.exists(t) {
                continue;
            }
            if let Some(cs) = self.computations.output_of.get_mut(&t) {
                cs.retain(|x| *x != c);
                if cs.is_empty() {
                    self.computations.output_of.remove(&t);
                }
            }
            self.tasks.unwant(t);
            self.maybe_release(t);
        }
    }
}
