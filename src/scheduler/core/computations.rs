//! What clients ask for: submitted graphs, gathers and scatters, and delivering their values.

use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};

use log::{debug, info};

use super::tasks::{TaskId, TaskState};
use super::{Command, SchedulerCore, WorkerId};
use crate::graph::{cull, Expr, Key};
use crate::protocol::codec::{encode_plain, validate_value};
use crate::protocol::{Frame, FrameIdentity, RequestError, ToClient, ToWorker};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CompId(pub u64);

/// One client request that waits for values: a `get` or a `gather`.
pub struct Computation {
    pub client: FrameIdentity,
    pub request: u64,
    /// In request order, with repeats.
    pub outputs: Vec<TaskId>,
    pub values: HashMap<TaskId, Frame>,
    /// Distinct outputs.
    pub distinct: Vec<TaskId>,
    pub keep_results: bool,
    /// False for `persist`: done when the outputs are in memory; no value travels.
    pub values_wanted: bool,
}

pub struct PendingScatter {
    pub client: FrameIdentity,
    pub request: u64,
    pub keys: Vec<Key>,
    pub values: Vec<Frame>,
}

pub struct PutRequest {
    pub scatter: PendingScatter,
    pub placement: Vec<(Key, WorkerId, u64)>,
    pub pending_workers: HashSet<WorkerId>,
}

impl SchedulerCore {
    pub(super) fn submit(
        &mut self,
        client: FrameIdentity,
        request: u64,
        submission: super::Submission,
    ) {
        debug!(
            "request {request} from {}: graph of {} keys, {} outputs",
            String::from_utf8_lossy(&client),
            submission.graph.len(),
            submission.outputs.len()
        );
        match self.add_graph(&submission.graph, &submission.outputs) {
            Ok(()) => {
                for (key, workers) in &submission.restrictions {
                    if let Some(t) = self.tasks.id(key) {
                        self.restrictions
                            .insert(t, workers.clone().into_boxed_slice());
                    }
                }
                let c = self.new_computation(
                    client.clone(),
                    request,
                    &submission.outputs,
                    submission.keep_results,
                );
                if self.config.journal {
                    self.journal(super::JournalOp::PutComputation {
                        client,
                        request,
                        submission,
                    });
                }
                self.start_computation(c);
            }
            Err(error) => {
                debug!("rejecting graph: {error}");
                self.journal(super::JournalOp::DeleteComputation {
                    client: client.clone(),
                    request,
                });
                self.reply(&client, ToClient::Failed { request, error });
            }
        }
    }

    /// Validates a graph and merges it into the task table. Nothing changes on error.
    pub(super) fn add_graph(
        &mut self,
        graph: &[(Key, Expr)],
        outputs: &[Key],
    ) -> Result<(), RequestError> {
        let view: HashMap<&Key, &Expr> = graph.iter().map(|(k, e)| (k, e)).collect();
        let tasks = &self.tasks;
        let on_cluster = |k: &Key| tasks.id(k).is_some();
        let order = cull(&view, outputs, &on_cluster).map_err(RequestError::Graph)?;
        // First pass: decide, without changing anything.
        let mut specs = Vec::with_capacity(order.len());
        let mut replaced = Vec::new();
        for key in &order {
            let spec = encode_plain(view[*key]).into_boxed_slice();
            if let Some(t) = self.tasks.id(key) {
                let existing = self.tasks.get(t);
                if existing.spec.as_deref() != Some(&spec[..]) {
                    if self.in_use_with_dependents(t) {
                        return Err(RequestError::KeyConflict {
                            key: (*key).clone(),
                        });
                    }
                    replaced.push(t);
                }
            }
            specs.push(spec);
        }
        // Second pass: apply.
        for t in replaced {
            self.invalidate(t);
        }
        for (key, spec) in order.into_iter().zip(specs) {
            let t = match self.tasks.id(key) {
                Some(t) if self.tasks.get(t).spec.as_deref() == Some(&spec[..]) => continue,
                Some(t) => {
                    self.tasks.get_mut(t).spec = Some(spec);
                    t
                }
                None => self.tasks.insert(key.clone(), Some(spec)),
            };
            let deps: Box<[TaskId]> = view[key]
                .dependencies()
                .iter()
                .map(|d| self.tasks.id(d).expect("culled graphs are closed"))
                .collect();
            for d in deps.iter() {
                self.tasks.get_mut(*d).dependents.push(t);
            }
            self.tasks.get_mut(t).dependencies = deps;
            if !self.pending_adoptions.is_empty() {
                self.adopt_pending(t);
            }
        }
        Ok(())
    }

    /// Whether replacing `t`'s definition would change something another request relies on:
    /// `t` or anything computed from it is needed or being computed.
    fn in_use_with_dependents(&self, t: TaskId) -> bool {
        let mut stack = vec![t];
        let mut seen = HashSet::default();
        while let Some(x) = stack.pop() {
            if !seen.insert(x) {
                continue;
            }
            let task = self.tasks.get(x);
            if task.state.is_active() || task.wanted > 0 || task.waiters > 0 {
                return true;
            }
            stack.extend(task.dependents.iter().copied());
        }
        false
    }

    /// Drops `t`'s data and that of everything computed from it, and detaches `t` from its
    /// old dependencies, so a new definition never meets a stale value.
    fn invalidate(&mut self, t: TaskId) {
        let mut stack = vec![t];
        let mut seen = HashSet::default();
        while let Some(x) = stack.pop() {
            if !seen.insert(x) {
                continue;
            }
            if self.tasks.get(x).spec.is_none() {
                let key = self.tasks.get(x).key.clone();
                self.journal(super::JournalOp::DeleteScattered { key });
            }
            let task = self.tasks.get_mut(x);
            task.kept = false;
            task.error = None;
            if task.state == TaskState::Memory {
                self.drop_data(x);
            }
            self.tasks.get_mut(x).state = TaskState::Released;
            stack.extend(self.tasks.get(x).dependents.iter().copied());
        }
        let old_deps = std::mem::take(&mut self.tasks.get_mut(t).dependencies);
        for d in old_deps.iter() {
            self.tasks.get_mut(*d).dependents.retain(|y| *y != t);
        }
        for d in old_deps.iter() {
            self.maybe_release(*d);
        }
    }

    pub(super) fn start_computation(&mut self, c: CompId) {
        let distinct = self.computations[&c].distinct.clone();
        self.activate(&distinct);
        if !self.computations.contains_key(&c) {
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
        client: FrameIdentity,
        request: u64,
        outputs: &[Key],
        keep_results: bool,
    ) -> CompId {
        let outputs: Vec<TaskId> = outputs
            .iter()
            .map(|k| self.tasks.id(k).expect("outputs were checked"))
            .collect();
        let c = CompId(self.next_computation);
        self.next_computation += 1;
        let mut distinct = outputs.clone();
        distinct.sort();
        distinct.dedup();
        for &t in &distinct {
            self.tasks.get_mut(t).wanted += 1;
            self.output_of.entry(t).or_default().push(c);
        }
        if let Some(cl) = self.clients.get_mut(&client) {
            cl.computations.insert(c);
        }
        self.computations.insert(
            c,
            Computation {
                client,
                request,
                outputs,
                values: HashMap::default(),
                distinct,
                keep_results,
                values_wanted: true,
            },
        );
        c
    }

    pub(super) fn gather(&mut self, client: FrameIdentity, request: u64, keys: Vec<Key>) {
        for k in &keys {
            match self.tasks.id(k) {
                Some(t) if self.tasks.get(t).state == TaskState::Memory => {}
                Some(t) if self.tasks.get(t).state.is_active() => {}
                _ => {
                    let error = RequestError::NotFound { key: k.clone() };
                    self.reply(&client, ToClient::Failed { request, error });
                    return;
                }
            }
        }
        let c = self.new_computation(client, request, &keys, false);
        for t in self.computations[&c].distinct.clone() {
            self.request_value_if_needed(t);
        }
        self.maybe_complete(c);
    }

    /// Asks a holder for an output task's value if some computation still waits for it.
    pub(super) fn request_value_if_needed(&mut self, t: TaskId) {
        if self.fetching_value.contains(&t) || self.tasks.get(t).state != TaskState::Memory {
            return;
        }
        let waiting = self.output_of.get(&t).is_some_and(|cs| {
            cs.iter().any(|c| {
                let comp = &self.computations[c];
                comp.values_wanted && !comp.values.contains_key(&t)
            })
        });
        if !waiting {
            return;
        }
        let Some(&holder) = self.tasks.get(t).who_has.first() else {
            return;
        };
        let request = self.next_request_id();
        let key = self.tasks.get(t).key.clone();
        self.fetching_value.insert(t);
        self.value_requests.insert(request, (holder, vec![t]));
        self.push_to_worker(
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
        if self.value_requests.remove(&request).is_none() {
            return;
        }
        for (key, frame) in found.into_iter().zip(frames) {
            if let Some(t) = self.tasks.id(&key) {
                self.fetching_value.remove(&t);
                self.value_arrived(t, frame);
            }
        }
        for key in missing {
            let Some(t) = self.tasks.id(&key) else {
                continue;
            };
            self.fetching_value.remove(&t);
            // The worker does not have it after all: stop listing it as a holder.
            let task = self.tasks.get_mut(t);
            task.who_has.retain(|x| *x != w);
            if let Some(worker) = self.workers.get_mut(w) {
                worker.has.remove(&t);
            }
            if self.tasks.get(t).who_has.is_empty() {
                let address = self.workers.address(w);
                self.data_lost(t, &[address]);
            } else {
                self.request_value_if_needed(t);
            }
        }
    }

    /// An output's value: hand it to every computation waiting for it.
    pub(super) fn value_arrived(&mut self, t: TaskId, value: Frame) {
        let Some(comps) = self.output_of.get(&t).cloned() else {
            return;
        };
        for c in comps {
            if let Some(comp) = self.computations.get_mut(&c) {
                comp.values.entry(t).or_insert_with(|| value.clone());
                self.maybe_complete(c);
            }
        }
    }

    pub(super) fn maybe_complete(&mut self, c: CompId) {
        let Some(comp) = self.computations.get(&c) else {
            return;
        };
        if !comp.values_wanted {
            let all_in_memory = comp
                .distinct
                .iter()
                .all(|t| self.tasks.get(*t).state == TaskState::Memory);
            if all_in_memory {
                let (client, request) = (comp.client.clone(), comp.request);
                for t in comp.distinct.clone() {
                    self.tasks.get_mut(t).kept = true;
                }
                self.reply(&client, ToClient::Done { request });
                self.end_computation(c);
            }
            return;
        }
        if comp.values.len() < comp.distinct.len() {
            return;
        }
        let comp = self.computations.get_mut(&c).expect("checked above");
        // Values move into the reply (a copy only for keys asked for more than once): a
        // million results must not exist twice in the scheduler.
        let mut values = std::mem::take(&mut comp.values);
        let mut remaining: HashMap<TaskId, usize> = HashMap::default();
        for t in &comp.outputs {
            *remaining.entry(*t).or_default() += 1;
        }
        let frames = comp
            .outputs
            .iter()
            .map(|t| {
                let left = remaining.get_mut(t).expect("counted above");
                *left -= 1;
                if *left == 0 {
                    values.remove(t).expect("every output has a value")
                } else {
                    values[t].clone()
                }
            })
            .collect();
        let keep = comp.keep_results;
        self.commands.push(Command::ToClient {
            identity: comp.client.clone(),
            msg: ToClient::Values {
                request: comp.request,
            },
            frames,
        });
        if keep {
            for t in comp.distinct.clone() {
                self.tasks.get_mut(t).kept = true;
            }
        }
        self.end_computation(c);
    }

    pub(super) fn fail_computations_wanting(&mut self, t: TaskId, error: &RequestError) {
        let Some(comps) = self.output_of.get(&t).cloned() else {
            return;
        };
        for c in comps {
            if let Some(comp) = self.computations.get(&c) {
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
        let Some(comp) = self.computations.remove(&c) else {
            return;
        };
        self.journal(super::JournalOp::DeleteComputation {
            client: comp.client.clone(),
            request: comp.request,
        });
        if let Some(cl) = self.clients.get_mut(&comp.client) {
            cl.computations.remove(&c);
        }
        for t in comp.distinct {
            if !self.tasks.exists(t) {
                continue;
            }
            if let Some(cs) = self.output_of.get_mut(&t) {
                cs.retain(|x| *x != c);
                if cs.is_empty() {
                    self.output_of.remove(&t);
                }
            }
            self.tasks.get_mut(t).wanted -= 1;
            self.maybe_release(t);
        }
    }

    // ---- scatter ----

    pub(super) fn start_scatter(&mut self, s: PendingScatter) {
        if s.keys.len() != s.values.len() {
            let error = RequestError::Protocol {
                message: format!("{} keys but {} values", s.keys.len(), s.values.len()),
            };
            self.reply(
                &s.client,
                ToClient::Failed {
                    request: s.request,
                    error,
                },
            );
            return;
        }
        if let Some(bad) = s.values.iter().position(|v| validate_value(v).is_err()) {
            let error = RequestError::Protocol {
                message: format!("value for {:?} is not a valid encoded value", s.keys[bad]),
            };
            self.reply(
                &s.client,
                ToClient::Failed {
                    request: s.request,
                    error,
                },
            );
            return;
        }
        for k in &s.keys {
            if let Some(t) = self.tasks.id(k) {
                if self.in_use_with_dependents(t) {
                    let error = RequestError::KeyConflict { key: k.clone() };
                    self.reply(
                        &s.client,
                        ToClient::Failed {
                            request: s.request,
                            error,
                        },
                    );
                    return;
                }
            }
        }
        // Spread keys over workers holding the fewest bytes.
        let mut loads: Vec<(u64, WorkerId)> =
            self.workers.iter().map(|(id, w)| (w.nbytes, id)).collect();
        if loads.is_empty() {
            info!("scatter waits: no workers connected");
            self.pending_scatters.push_back(s);
            return;
        }
        let request = self.next_request_id();
        let mut per_worker: HashMap<WorkerId, (Vec<Key>, Vec<Frame>)> = HashMap::default();
        let mut placement = Vec::new();
        for (k, v) in s.keys.iter().zip(&s.values) {
            loads.sort();
            let (bytes, w) = &mut loads[0];
            *bytes += v.len() as u64;
            let entry = per_worker.entry(*w).or_default();
            entry.0.push(k.clone());
            entry.1.push(v.clone());
            placement.push((k.clone(), *w, v.len() as u64));
        }
        let pending_workers = per_worker.keys().copied().collect();
        for (w, (keys, frames)) in per_worker {
            self.push_to_worker(w, ToWorker::PutData { request, keys }, frames);
        }
        self.puts.insert(
            request,
            PutRequest {
                scatter: s,
                placement,
                pending_workers,
            },
        );
    }

    pub(super) fn put_stored(&mut self, w: WorkerId, request: u64) {
        let Some(put) = self.puts.get_mut(&request) else {
            return;
        };
        put.pending_workers.remove(&w);
        if !put.pending_workers.is_empty() {
            return;
        }
        let put = self.puts.remove(&request).expect("present above");
        for (key, w, nbytes) in put.placement {
            let t = match self.tasks.id(&key) {
                Some(t) => {
                    self.invalidate(t);
                    self.tasks.get_mut(t).spec = None;
                    t
                }
                None => self.tasks.insert(key, None),
            };
            let task = self.tasks.get_mut(t);
            task.state = TaskState::Memory;
            task.kept = true;
            task.nbytes = nbytes;
            let key = task.key.clone();
            self.add_holder(t, w);
            self.journal(super::JournalOp::PutScattered { key, nbytes });
            self.dependents_may_proceed(t);
        }
        let s = put.scatter;
        self.reply(
            &s.client,
            ToClient::Scattered {
                request: s.request,
                keys: s.keys,
            },
        );
    }
}
