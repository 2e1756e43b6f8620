//! What clients ask for: submitted graphs, gathers and scatters, and delivering their values.

use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};

use log::{debug, info, warn};

use super::tasks::{wire_key, TaskId, TaskState};
use super::{Command, SchedulerCore, WorkerId};
use crate::graph::{cull, Expr, Key};
use crate::protocol::codec::{encode_plain, spec_hash, validate_value};
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
    pub placement: Vec<Placed>,
    pub pending_workers: HashSet<WorkerId>,
}

/// A submitted graph as the cluster will know it: every task with its wire key, dependencies
/// first. Nothing in the task table changes while it is worked out.
pub(super) struct ResolvedGraph {
    tasks: Vec<NewTask>,
    /// The wire key of every key the graph defines or uses, and where its task is.
    wire: HashMap<Key, (Key, Resolved)>,
}

/// Where a task of a resolved graph is: already in the task table, or the i-th of the graph's
/// own tasks (which may turn out to be known too).
#[derive(Clone, Copy)]
enum Resolved {
    Known(TaskId),
    Local(usize),
}

struct NewTask {
    name: Key,
    key: Key,
    spec: Box<[u8]>,
    /// The same definition is in the task table already.
    existing: Option<TaskId>,
    dependencies: Vec<Resolved>,
}

impl ResolvedGraph {
    /// The wire key a key of this graph stands for.
    pub(super) fn wire_key(&self, name: &Key) -> Option<&Key> {
        self.wire.get(name).map(|(key, _)| key)
    }
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
            Ok((resolved, outputs)) => {
                for (key, workers) in &submission.restrictions {
                    if let Some(t) = resolved.wire_key(key).and_then(|k| self.tasks.id(k)) {
                        self.restrictions
                            .insert(t, workers.clone().into_boxed_slice());
                    }
                }
                let c =
                    self.new_computation(client.clone(), request, outputs, submission.keep_results);
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

    /// Works out the identity of every task `outputs` need: keys the graph defines get a wire
    /// key from their definition (references replaced by the wire keys they stand for); keys
    /// it only uses stand for the value they name on the cluster. Changes nothing.
    pub(super) fn resolve_graph(
        &self,
        graph: &[(Key, Expr)],
        outputs: &[Key],
    ) -> Result<ResolvedGraph, RequestError> {
        let view: HashMap<&Key, &Expr> = graph.iter().map(|(k, e)| (k, e)).collect();
        let names = &self.names;
        let on_cluster = |k: &Key| names.get(k).is_some();
        let order = cull(&view, outputs, &on_cluster).map_err(RequestError::Graph)?;
        let mut wire: HashMap<Key, (Key, Resolved)> = HashMap::default();
        let named = |k: &Key| {
            let t = self.names.get(k).expect("cull checked that it is named");
            (self.tasks.get(t).key.clone(), Resolved::Known(t))
        };
        for k in outputs.iter().filter(|k| !view.contains_key(k)) {
            wire.insert(k.clone(), named(k));
        }
        let mut tasks = Vec::with_capacity(order.len());
        let mut taken: HashSet<u64> = HashSet::default();
        for name in order {
            let expr = view[name];
            let mut dependencies = Vec::new();
            for d in expr.dependencies() {
                let at = match wire.get(&d) {
                    Some((_, at)) => *at,
                    None => {
                        let (key, at) = named(&d);
                        wire.insert(d, (key, at));
                        at
                    }
                };
                dependencies.push(at);
            }
            let spec = encode_plain(&with_wire_references(expr, &wire)).into_boxed_slice();
            let mut token = definition_token(name, &spec);
            // A 64-bit token can collide: probe until the wire key is free (for this graph
            // too) or is this very definition.
            let (key, existing) = loop {
                let key = wire_key(token);
                match self.tasks.id(&key) {
                    None if !taken.contains(&token) => break (key, None),
                    Some(t)
                        if {
                            let task = self.tasks.get(t);
                            task.name() == name && task.spec.as_deref() == Some(&spec[..])
                        } =>
                    {
                        break (key, Some(t))
                    }
                    _ => token = token.wrapping_add(1),
                }
            };
            taken.insert(token);
            wire.insert(name.clone(), (key.clone(), Resolved::Local(tasks.len())));
            tasks.push(NewTask {
                name: name.clone(),
                key,
                spec,
                existing,
                dependencies,
            });
        }
        Ok(ResolvedGraph { tasks, wire })
    }

    /// Validates a graph and merges it into the task table; returns it resolved and the tasks
    /// of `outputs`, in order. Nothing changes on error.
    pub(super) fn add_graph(
        &mut self,
        graph: &[(Key, Expr)],
        outputs: &[Key],
    ) -> Result<(ResolvedGraph, Vec<TaskId>), RequestError> {
        let mut resolved = self.resolve_graph(graph, outputs)?;
        let mut ids: Vec<TaskId> = Vec::with_capacity(resolved.tasks.len());
        let at = |ids: &[TaskId], r: Resolved| match r {
            Resolved::Known(t) => t,
            Resolved::Local(i) => ids[i],
        };
        for new in std::mem::take(&mut resolved.tasks) {
            if let Some(t) = new.existing {
                ids.push(t); // the same definition is known: share it
                continue;
            }
            let deps: Box<[TaskId]> = new.dependencies.iter().map(|d| at(&ids, *d)).collect();
            let t = self.tasks.insert(new.name, new.key, Some(new.spec));
            for d in deps.iter() {
                self.tasks.get_mut(*d).dependents.push(t);
            }
            self.tasks.get_mut(t).dependencies = deps;
            if !self.pending_adoptions.is_empty() {
                self.adopt_pending(t);
            }
            ids.push(t);
        }
        let outputs = outputs
            .iter()
            .map(|k| at(&ids, resolved.wire[k].1))
            .collect();
        Ok((resolved, outputs))
    }

    /// Makes `key` name `t` (an explicit scatter, keep or persist); the task it named before
    /// is let go once nothing else needs it.
    pub(super) fn name_value(&mut self, key: Key, t: TaskId) {
        let before = self.names.bind(key, t);
        if before == Some(t) {
            return;
        }
        self.tasks.get_mut(t).pins += 1;
        if let Some(old) = before {
            self.unpin(old);
        }
    }

    /// `release` of a key: it names nothing any more.
    pub(super) fn unname(&mut self, key: &Key) {
        if let Some(t) = self.names.unbind(key) {
            self.unpin(t);
        }
    }

    /// One name or dataset less holds `t`.
    pub(super) fn unpin(&mut self, t: TaskId) {
        let task = self.tasks.get_mut(t);
        task.pins -= 1;
        if task.pins == 0 && task.spec.is_none() {
            // Scattered data the journal keeps is named data only.
            let key = task.key.clone();
            self.journal(super::JournalOp::DeleteScattered { key });
        }
        self.maybe_release(t);
    }

    pub(super) fn start_computation(&mut self, c: CompId) {
        let distinct = self.computations[&c].distinct.clone();
        // An output that already failed (and is still held, by a name) fails the request now.
        if let Some(error) = distinct
            .iter()
            .find_map(|t| self.tasks.get(*t).error.as_deref().cloned())
        {
            let comp = &self.computations[&c];
            let (client, request) = (comp.client.clone(), comp.request);
            self.reply(&client, ToClient::Failed { request, error });
            self.end_computation(c);
            return;
        }
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
        outputs: Vec<TaskId>,
        keep_results: bool,
    ) -> CompId {
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

    /// Values of named keys (scattered, kept or persisted).
    pub(super) fn gather(&mut self, client: FrameIdentity, request: u64, keys: Vec<Key>) {
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
        let c = self.new_computation(client, request, ids, false);
        self.start_computation(c);
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
        // Only the worker asked answers, only about the keys asked, with one value per key.
        let asked = match self.value_requests.get(&request) {
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
        self.value_requests.remove(&request);
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
                self.fetching_value.remove(&t);
                if self.tasks.exists(t) {
                    self.request_value_if_needed(t);
                }
            }
        }
        for (t, frame) in found {
            self.fetching_value.remove(&t);
            self.value_arrived(t, frame);
        }
        for t in missing {
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
                self.keep_outputs(c);
                self.reply(&client, ToClient::Done { request });
                self.end_computation(c);
            }
            return;
        }
        if comp.values.len() < comp.distinct.len() {
            return;
        }
        let comp = self.computations.get_mut(&c).expect("checked above");
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
        self.commands.push(Command::ToClient {
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
        for t in self.computations[&c].distinct.clone() {
            let name = self.tasks.get(t).name().clone();
            self.name_value(name, t);
        }
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
        // Tokens this scatter has used (its values are not in the task table yet).
        let mut taken: HashSet<u64> = HashSet::default();
        for (k, v) in s.keys.iter().zip(&s.values) {
            loads.sort();
            let (bytes, w) = &mut loads[0];
            *bytes += v.len() as u64;
            // Each scatter is a new value: a wire key never used before (in this process or,
            // through the instance token, an earlier one whose workers may still hold values).
            self.next_scatter += 1;
            let mut token = scatter_token(k, self.config.instance_token, self.next_scatter);
            while self.tasks.id(&wire_key(token)).is_some() || !taken.insert(token) {
                token = token.wrapping_add(1);
            }
            let key = wire_key(token);
            let entry = per_worker.entry(*w).or_default();
            entry.0.push(key.clone());
            entry.1.push(v.clone());
            placement.push(Placed {
                name: k.clone(),
                key,
                worker: *w,
                nbytes: v.len() as u64,
            });
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
        for placed in put.placement {
            let t = match self.tasks.id(&placed.key) {
                Some(t) => t,
                None => self
                    .tasks
                    .insert(placed.name.clone(), placed.key.clone(), None),
            };
            let task = self.tasks.get_mut(t);
            task.state = TaskState::Memory;
            task.nbytes = placed.nbytes;
            self.add_holder(t, placed.worker);
            self.journal(super::JournalOp::PutScattered {
                name: placed.name.clone(),
                key: placed.key,
                nbytes: placed.nbytes,
            });
            self.name_value(placed.name, t);
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

/// Where one scattered value went.
pub struct Placed {
    pub name: Key,
    pub key: Key,
    pub worker: WorkerId,
    pub nbytes: u64,
}

/// `expr` with every reference replaced by the wire key it stands for.
fn with_wire_references(expr: &Expr, wire: &HashMap<Key, (Key, Resolved)>) -> Expr {
    match expr {
        Expr::Lit(v) => Expr::Lit(v.clone()),
        Expr::Ref(k) => Expr::Ref(wire.get(k).map_or_else(|| k.clone(), |(w, _)| w.clone())),
        Expr::Call(f, args) => Expr::Call(
            f.clone(),
            args.iter().map(|a| with_wire_references(a, wire)).collect(),
        ),
        Expr::List(items) => Expr::List(
            items
                .iter()
                .map(|a| with_wire_references(a, wire))
                .collect(),
        ),
    }
}

/// The token of a definition: its key and its spec, whose references are wire keys already,
/// so the token covers everything the value is computed from.
fn definition_token(name: &Key, spec: &[u8]) -> u64 {
    let mut bytes = encode_plain(name);
    bytes.extend_from_slice(spec);
    spec_hash(&bytes)
}

fn scatter_token(name: &Key, instance: u64, sequence: u64) -> u64 {
    let mut bytes = encode_plain(name);
    bytes.extend_from_slice(b"scatter");
    bytes.extend_from_slice(&instance.to_le_bytes());
    bytes.extend_from_slice(&sequence.to_le_bytes());
    spec_hash(&bytes)
}
