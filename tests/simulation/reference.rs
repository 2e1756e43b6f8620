//! The reference evaluator: what each key's value (or error) must be, computed locally with
//! the real `evaluate`, and which scattered keys and failing keys it depends on.

use std::collections::{BTreeSet, HashMap};

use zask::graph::{Expr, Key};
use zask::protocol::TaskError;
use zask::worker::executor::evaluate;
use zask::{Registry, Value};

#[derive(Clone, Debug, Default)]
pub(crate) struct RefInfo {
    /// None when the key fails (itself or through a dependency).
    pub(crate) value: Option<Value>,
    /// The failing keys it depends on (itself included).
    pub(crate) fails: BTreeSet<Key>,
    /// Scattered keys it depends on.
    pub(crate) scattered: BTreeSet<Key>,
    /// Everything it depends on, itself included.
    pub(crate) closure: BTreeSet<Key>,
}

pub(crate) struct RefDb {
    pub(crate) registry: Registry,
    pub(crate) defs: HashMap<Key, Expr>,
    pub(crate) info: HashMap<Key, RefInfo>,
    pub(crate) errors: HashMap<Key, TaskError>,
}

impl RefDb {
    pub(crate) fn new() -> RefDb {
        RefDb {
            registry: Registry::with_builtins(),
            defs: HashMap::new(),
            info: HashMap::new(),
            errors: HashMap::new(),
        }
    }

    pub(crate) fn scattered(&mut self, key: &Key, value: &Value) {
        self.info.insert(
            key.clone(),
            RefInfo {
                value: Some(value.clone()),
                fails: BTreeSet::new(),
                scattered: BTreeSet::from([key.clone()]),
                closure: BTreeSet::from([key.clone()]),
            },
        );
    }

    /// Evaluates every key of a graph, in dependency order, with the real `evaluate`.
    pub(crate) fn learn(&mut self, graph: &[(Key, Expr)]) {
        for (k, e) in graph {
            if let Some(old) = self.defs.get(k) {
                assert_eq!(old, e, "the generator gave {k:?} two definitions");
            }
            self.defs.insert(k.clone(), e.clone());
        }
        for (k, _) in graph {
            self.compute(k);
        }
    }

    pub(crate) fn compute(&mut self, k: &Key) -> RefInfo {
        if let Some(i) = self.info.get(k) {
            return i.clone();
        }
        let expr = self
            .defs
            .get(k)
            .unwrap_or_else(|| panic!("the reference knows nothing of {k:?}"))
            .clone();
        let mut info = RefInfo {
            closure: BTreeSet::from([k.clone()]),
            ..RefInfo::default()
        };
        let mut inputs = HashMap::new();
        for d in expr.dependencies() {
            let di = self.compute(&d);
            info.fails.extend(di.fails.iter().cloned());
            info.scattered.extend(di.scattered.iter().cloned());
            info.closure.extend(di.closure.iter().cloned());
            if let Some(v) = di.value {
                inputs.insert(d, v);
            }
        }
        if info.fails.is_empty() {
            match evaluate(&expr, &inputs, &self.registry) {
                Ok(v) => info.value = Some(v),
                Err(e) => {
                    info.fails.insert(k.clone());
                    self.errors.insert(k.clone(), e);
                }
            }
        }
        self.info.insert(k.clone(), info.clone());
        info
    }
}
