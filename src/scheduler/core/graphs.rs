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
            self.tasks.set_dependencies(t, deps);
            self.adopt_pending(t);
            ids.push(t);
        }
        let outputs = outputs
            .iter()
            .map(|k| at(&ids, resolved.wire[k].1))
            .collect();
        Ok((resolved, outputs))
    }
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
