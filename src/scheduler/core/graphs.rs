//! Submitted graphs as the cluster knows them: each task of a graph gets a wire key from its
//! definition (references replaced by the wire keys they stand for), and the graph is merged
//! into the task table, sharing every definition that is known already.

use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};

use super::tasks::{wire_key, TaskId};
use super::SchedulerCore;
use crate::graph::{cull, Expr, Key};
use crate::protocol::codec::{encode_plain, spec_hash};
use crate::protocol::RequestError;

/// A submitted graph as the cluster will know it: every task with its wire key, dependencies
/// first. Nothing in the task table changes while it is worked out. It borrows the graph's
/// keys (a copy of each name would cost tens of bytes a task at a million tasks).
pub(super) struct ResolvedGraph<'g> {
    /// The wire key of every key the graph defines or uses, and where its task is.
    wire: HashMap<&'g Key, (Key, Resolved)>,
    new: NewTasks,
}

/// The tasks of a resolved graph, without the graph: what the table takes in.
pub(super) struct NewTasks {
    tasks: Vec<NewTask>,
    /// Where each output is, in the order of the outputs asked for.
    outputs: Vec<Resolved>,
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

impl ResolvedGraph<'_> {
    /// The wire key a key of this graph stands for.
    pub(super) fn wire_key(&self, name: &Key) -> Option<&Key> {
        self.wire.get(name).map(|(key, _)| key)
    }

    /// The new tasks alone, so that the graph and the name map can be freed before the table
    /// grows: at a million tasks they would otherwise all be held at once.
    pub(super) fn into_new_tasks(self) -> NewTasks {
        self.new
    }
}

impl SchedulerCore {
    /// Works out the identity of every task `outputs` need: keys the graph defines get a wire
    /// key from their definition (references replaced by the wire keys they stand for); keys
    /// it only uses stand for the value they name on the cluster. Changes nothing.
    pub(super) fn resolve_graph<'g>(
        &self,
        graph: &'g [(Key, Expr)],
        outputs: &'g [Key],
    ) -> Result<ResolvedGraph<'g>, RequestError> {
        let view: HashMap<&Key, &Expr> = graph.iter().map(|(k, e)| (k, e)).collect();
        let names = &self.names;
        let on_cluster = |k: &Key| names.get(k).is_some();
        let order = cull(&view, outputs, &on_cluster).map_err(RequestError::Graph)?;
        let mut wire: HashMap<&'g Key, (Key, Resolved)> = HashMap::default();
        wire.reserve(order.len());
        let named = |k: &Key| {
            let t = self.names.get(k).expect("cull checked that it is named");
            (self.tasks.get(t).key.clone(), Resolved::Known(t))
        };
        for k in outputs.iter().filter(|k| !view.contains_key(k)) {
            wire.insert(k, named(k));
        }
        let mut tasks = Vec::with_capacity(order.len());
        let mut taken: HashSet<u64> = HashSet::default();
        let mut seen: HashSet<&Key> = HashSet::default();
        for name in order {
            let expr: &'g Expr = view[name];
            let mut dependencies = Vec::new();
            seen.clear();
            for d in expr.references() {
                if !seen.insert(d) {
                    continue; // each dependency once, in first-seen order
                }
                let at = match wire.get(d) {
                    Some((_, at)) => *at,
                    None => {
                        let (key, at) = named(d);
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
            wire.insert(name, (key.clone(), Resolved::Local(tasks.len())));
            tasks.push(NewTask {
                name: name.clone(),
                key,
                spec,
                existing,
                dependencies,
            });
        }
        let outputs = outputs.iter().map(|k| wire[k].1).collect();
        Ok(ResolvedGraph {
            wire,
            new: NewTasks { tasks, outputs },
        })
    }

    pub(super) fn add_graph<'g>(
        &mut self,
        graph: &'g [(Key, Expr)],
        outputs: &'g [Key],
    ) -> Result<(ResolvedGraph<'g>, Vec<TaskId>), RequestError> {
        let mut resolved = self.resolve_graph(graph, outputs)?;
        let outputs = self.insert_new_tasks(&mut resolved.new);
        Ok((resolved, outputs))
    }

    /// Merges a resolved graph's new tasks into the table (they are taken: a second call
    /// adds nothing) and returns the ids of its outputs.
    pub(super) fn insert_new_tasks(&mut self, new: &mut NewTasks) -> Vec<TaskId> {
        let new_tasks = std::mem::take(&mut new.tasks);
        self.tasks.reserve(new_tasks.len());
        let mut ids: Vec<TaskId> = Vec::with_capacity(new_tasks.len());
        let at = |ids: &[TaskId], r: Resolved| match r {
            Resolved::Known(t) => t,
            Resolved::Local(i) => ids[i],
        };
        for task in new_tasks {
            if let Some(t) = task.existing {
                ids.push(t); // the same definition is known: share it
                continue;
            }
            let deps: Box<[TaskId]> = task.dependencies.iter().map(|d| at(&ids, *d)).collect();
            let t = self.tasks.insert(task.name, task.key, Some(task.spec));
            self.tasks.set_dependencies(t, deps);
            self.adopt_pending(t);
            ids.push(t);
        }
        new.outputs.iter().map(|r| at(&ids, *r)).collect()
    }
}

fn with_wire_references(expr: &Expr, wire: &HashMap<&Key, (Key, Resolved)>) -> Expr {
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
