//! The collections part: named things clients share, stored collections (graphs, not data,
//! kept in the journal) and published datasets (computed results kept on the workers under a
//! name; each pins its tasks).

use std::collections::BTreeMap;

use rustc_hash::FxHashMap as HashMap;

use super::tasks::{TaskId, TaskState};
use super::{JournalOp, SchedulerCore};
use crate::collection::{Collection, LegacyCollection, StoredCollection};
use crate::graph::{Expr, Key};
use crate::protocol::{ConnectionId, RequestError, RequestId, ToClient};

#[derive(Default)]
pub(super) struct Collections {
    /// Stored collections by name (graphs, not data): native ones and the opaque payloads of
    /// 2015 clients, in one namespace.
    stored: BTreeMap<String, StoredCollection>,
    /// Published datasets: the collection and the tasks holding its results (distinct, one
    /// pin each).
    datasets: HashMap<String, (Collection, Vec<TaskId>)>,
}

impl Collections {
    /// The collections a previous run stored (recovery).
    pub(super) fn restore(&mut self, stored: Vec<(String, StoredCollection)>) {
        self.stored.extend(stored);
    }

    /// Published datasets are data, gone with the workers (a restart); stored collections are
    /// graphs and stay.
    pub(super) fn drop_datasets(&mut self) {
        self.datasets.clear();
    }

    /// Every task a dataset pins, with the dataset's name.
    pub(super) fn dataset_tasks(&self) -> impl Iterator<Item = (&String, TaskId)> {
        self.datasets
            .iter()
            .flat_map(|(name, (_, ids))| ids.iter().map(move |t| (name, *t)))
    }
}

impl SchedulerCore {
    pub(super) fn set_collection(
        &mut self,
        client: &ConnectionId,
        request: RequestId,
        name: String,
        collection: Collection,
    ) {
        self.store_collection(client, request, name, StoredCollection::Native(collection));
    }

    /// A 2015 client's `set-collection`: its payload, kept verbatim (never decoded here).
    pub(super) fn set_legacy_collection(
        &mut self,
        client: &ConnectionId,
        request: RequestId,
        name: String,
        payload: Vec<u8>,
    ) {
        let stored = StoredCollection::Legacy(LegacyCollection { payload });
        self.store_collection(client, request, name, stored);
    }

    fn store_collection(
        &mut self,
        client: &ConnectionId,
        request: RequestId,
        name: String,
        collection: StoredCollection,
    ) {
        self.journal(JournalOp::PutCollection {
            name: name.clone(),
            collection: collection.clone(),
        });
        self.collections.stored.insert(name, collection);
        self.reply(client, ToClient::Done { request });
    }

    pub(super) fn get_collection(
        &mut self,
        client: &ConnectionId,
        request: RequestId,
        name: String,
    ) {
        let reply = match self.collections.stored.get(&name) {
            Some(StoredCollection::Legacy(_)) => ToClient::Failed {
                request,
                error: RequestError::LegacyCollection { name },
            },
            Some(StoredCollection::Native(c)) => found_or_missing(request, Some(c.clone()), name),
            None => found_or_missing(request, None, name),
        };
        self.reply(client, reply);
    }

    /// A 2015 client's `get-collection`: the payload it stored, or why there is none for it.
    pub(super) fn get_legacy_collection(
        &mut self,
        client: &ConnectionId,
        request: RequestId,
        name: String,
    ) {
        let reply = match self.collections.stored.get(&name) {
            Some(StoredCollection::Legacy(l)) => ToClient::LegacyCollection {
                request,
                payload: l.payload.clone(),
            },
            Some(StoredCollection::Native(_)) => ToClient::Failed {
                request,
                error: RequestError::NativeCollection { name },
            },
            None => ToClient::Failed {
                request,
                error: RequestError::NoSuchCollection { name },
            },
        };
        self.reply(client, reply);
    }

    pub(super) fn list_collections(&mut self, client: &ConnectionId, request: RequestId) {
        let names = self.collections.stored.keys().cloned().collect();
        self.reply(client, ToClient::Names { request, names });
    }

    pub(super) fn delete_collection(
        &mut self,
        client: &ConnectionId,
        request: RequestId,
        name: String,
    ) {
        let reply = match self.collections.stored.remove(&name) {
            Some(_) => {
                self.journal(JournalOp::DeleteCollection { name });
                ToClient::Done { request }
            }
            None => ToClient::Failed {
                request,
                error: RequestError::NoSuchCollection { name },
            },
        };
        self.reply(client, reply);
    }

    /// Computes `outputs` and keeps them on the workers; answers `Done` once they are in memory.
    pub(super) fn persist(
        &mut self,
        client: ConnectionId,
        request: RequestId,
        graph: Vec<(Key, Expr)>,
        outputs: Vec<Key>,
    ) {
        let outputs = match self.add_graph(&graph, &outputs) {
            Ok((_, outputs)) => outputs,
            Err(error) => {
                self.reply(&client, ToClient::Failed { request, error });
                return;
            }
        };
        let c = self.new_computation(client, request, outputs, true, false);
        self.start_computation(c);
    }

    pub(super) fn publish(
        &mut self,
        client: &ConnectionId,
        request: RequestId,
        name: String,
        collection: Collection,
    ) {
        // The collection's own definitions (not whatever its keys name now) must be in memory.
        let resolved = match self.resolve_graph(&collection.graph, &collection.keys) {
            Ok(resolved) => resolved,
            Err(error) => {
                self.reply(client, ToClient::Failed { request, error });
                return;
            }
        };
        let mut ids: Vec<TaskId> = Vec::with_capacity(collection.keys.len());
        for k in &collection.keys {
            let t = resolved.wire_key(k).and_then(|w| self.tasks.id(w));
            match t {
                Some(t) if self.tasks.get(t).state == TaskState::Memory => ids.push(t),
                _ => {
                    let error = RequestError::NotFound { key: k.clone() };
                    self.reply(client, ToClient::Failed { request, error });
                    return;
                }
            }
        }
        ids.sort();
        ids.dedup();
        for &t in &ids {
            // Pinned results with lineage: a lost copy is recomputed, never silently gone.
            self.tasks.pin(t);
        }
        if let Some((_, old)) = self.collections.datasets.insert(name, (collection, ids)) {
            self.release_dataset_tasks(old);
        }
        self.reply(client, ToClient::Done { request });
    }

    pub(super) fn get_dataset(&mut self, client: &ConnectionId, request: RequestId, name: String) {
        let found = self.collections.datasets.get(&name).map(|(c, _)| c.clone());
        let reply = found_or_missing(request, found, name);
        self.reply(client, reply);
    }

    pub(super) fn unpublish(&mut self, client: &ConnectionId, request: RequestId, name: String) {
        let reply = match self.collections.datasets.remove(&name) {
            Some((_, ids)) => {
                self.release_dataset_tasks(ids);
                ToClient::Done { request }
            }
            None => ToClient::Failed {
                request,
                error: RequestError::NoSuchCollection { name },
            },
        };
        self.reply(client, reply);
    }

    /// Lets go of a dataset's results (distinct tasks, one pin each).
    fn release_dataset_tasks(&mut self, ids: Vec<TaskId>) {
        for t in ids {
            if self.tasks.exists(t) {
                self.unpin(t);
            }
        }
    }
}

/// The answer to a lookup by name: the collection, or an error naming what is missing.
fn found_or_missing(request: RequestId, found: Option<Collection>, name: String) -> ToClient {
    match found {
        Some(collection) => ToClient::Collection {
            request,
            collection,
        },
        None => ToClient::Failed {
            request,
            error: RequestError::NoSuchCollection { name },
        },
    }
}
