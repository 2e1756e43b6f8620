//! The collections part: named things clients share, stored collections (graphs, not data,
//! kept in the journal) and published datasets (computed results kept on the workers under a
//! name; each pins its tasks).
//!
//! Each collection and dataset has an owner: the client connection that stored or published
//! it. Reading (`GetCollection`, `GetDataset`, `ListCollections`) is open to every client;
//! deleting, unpublishing or replacing one needs its owner or an operator. 2015 clients'
//! collections are owned by their legacy connection (role client) under the same rules. When
//! an owner leaves (goodbye, or silent past the client timeout) its collections and datasets
//! stay, owned by nobody: only an operator may delete or replace them from then on. Owners are
//! journaled with the stored collections, so a restarted scheduler keeps them.

use std::collections::BTreeMap;

use rustc_hash::FxHashMap as HashMap;

use super::tasks::{TaskId, TaskState};
use super::{JournalOp, SchedulerCore};
use crate::collection::{Collection, LegacyCollection, StoredCollection};
use crate::graph::{Expr, Key};
use crate::protocol::{ClientRole, ConnectionId, RequestError, RequestId, ToClient};

#[derive(Default)]
pub(super) struct Collections {
    /// Stored collections by name (graphs, not data): native ones and the opaque payloads of
    /// 2015 clients, in one namespace; each with its owner.
    stored: BTreeMap<String, Owned<StoredCollection>>,
    /// Published datasets: the collection and the tasks holding its results (distinct, one
    /// pin each); each with its owner.
    datasets: HashMap<String, Owned<(Collection, Vec<TaskId>)>>,
}

/// A collection or dataset and the client that stored or published it (none once that client
/// left, or when a journal written before owners were recorded said nobody).
struct Owned<T> {
    item: T,
    owner: Option<ConnectionId>,
}

/// Whether `client` in `role` may delete or replace what `owner` owns.
fn may_change(owner: Option<&ConnectionId>, client: &ConnectionId, role: ClientRole) -> bool {
    role == ClientRole::Operator || owner == Some(client)
}

/// Whose a thing the caller may not change is, for the refusal's text.
fn whose(owner: Option<&ConnectionId>) -> &'static str {
    match owner {
        Some(_) => "(owned by another client)",
        None => "(its owner is gone)",
    }
}

/// The refusal of `action` (what, and on what) to a client that does not own it.
fn forbidden(request: RequestId, action: String) -> ToClient {
    ToClient::Failed {
        request,
        error: RequestError::Forbidden {
            action,
            needs: ClientRole::Operator,
        },
    }
}

impl Collections {
    /// The collections a previous run stored (recovery), with their journaled owners.
    pub(super) fn restore(
        &mut self,
        stored: Vec<(String, StoredCollection)>,
        owners: Vec<(String, ConnectionId)>,
    ) {
        let mut owners: HashMap<String, ConnectionId> = owners.into_iter().collect();
        for (name, item) in stored {
            let owner = owners.remove(&name);
            self.stored.insert(name, Owned { item, owner });
        }
    }

    /// `client` left: what it stored or published stays, owned by nobody (operators only).
    /// Returns the names of the stored collections it owned (their owner is journaled).
    pub(super) fn disown(&mut self, client: &ConnectionId) -> Vec<String> {
        for d in self.datasets.values_mut() {
            if d.owner.as_ref() == Some(client) {
                d.owner = None;
            }
        }
        let mut names = Vec::new();
        for (name, c) in &mut self.stored {
            if c.owner.as_ref() == Some(client) {
                c.owner = None;
                names.push(name.clone());
            }
        }
        names
    }

    /// The owner of the stored collection `name`, if it has one (for tests).
    #[cfg(test)]
    pub(super) fn collection_owner(&self, name: &str) -> Option<&ConnectionId> {
        self.stored.get(name).and_then(|c| c.owner.as_ref())
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
            .flat_map(|(name, d)| d.item.1.iter().map(move |t| (name, *t)))
    }
}

impl SchedulerCore {
    pub(super) fn set_collection(
        &mut self,
        client: &ConnectionId,
        role: ClientRole,
        request: RequestId,
        name: String,
        collection: Collection,
    ) {
        let collection = StoredCollection::Native(collection);
        self.store_collection(client, role, request, name, collection);
    }

    /// A 2015 client's `set-collection`: its payload, kept verbatim (never decoded here).
    pub(super) fn set_legacy_collection(
        &mut self,
        client: &ConnectionId,
        role: ClientRole,
        request: RequestId,
        name: String,
        payload: Vec<u8>,
    ) {
        let stored = StoredCollection::Legacy(LegacyCollection { payload });
        self.store_collection(client, role, request, name, stored);
    }

    /// Stores `collection` under `name`, owned by `client`; replacing another owner's (or an
    /// ownerless) collection needs an operator.
    fn store_collection(
        &mut self,
        client: &ConnectionId,
        role: ClientRole,
        request: RequestId,
        name: String,
        collection: StoredCollection,
    ) {
        if let Some(old) = self.collections.stored.get(&name) {
            if !may_change(old.owner.as_ref(), client, role) {
                let action = format!(
                    "replacing collection {name:?} {}",
                    whose(old.owner.as_ref())
                );
                self.reply(client, forbidden(request, action));
                return;
            }
        }
        self.journal(JournalOp::PutCollection {
            name: name.clone(),
            collection: collection.clone(),
            owner: Some(client.clone()),
        });
        let owned = Owned {
            item: collection,
            owner: Some(client.clone()),
        };
        self.collections.stored.insert(name, owned);
        self.reply(client, ToClient::Done { request });
    }

    pub(super) fn get_collection(
        &mut self,
        client: &ConnectionId,
        request: RequestId,
        name: String,
    ) {
        let reply = match self.collections.stored.get(&name).map(|c| &c.item) {
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
        let reply = match self.collections.stored.get(&name).map(|c| &c.item) {
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

    /// The names of the published datasets, sorted (`zask datasets`, dask's
    /// `list_datasets`).
    pub(super) fn list_datasets(&mut self, client: &ConnectionId, request: RequestId) {
        let mut names: Vec<String> = self.collections.datasets.keys().cloned().collect();
        names.sort();
        self.reply(client, ToClient::Names { request, names });
    }

    /// Deletes a stored collection: its owner's or an operator's call.
    pub(super) fn delete_collection(
        &mut self,
        client: &ConnectionId,
        role: ClientRole,
        request: RequestId,
        name: String,
    ) {
        let owner = match self.collections.stored.get(&name) {
            None => {
                let error = RequestError::NoSuchCollection { name };
                self.reply(client, ToClient::Failed { request, error });
                return;
            }
            Some(c) => c.owner.as_ref(),
        };
        if !may_change(owner, client, role) {
            let action = format!("deleting collection {name:?} {}", whose(owner));
            self.reply(client, forbidden(request, action));
            return;
        }
        self.collections.stored.remove(&name);
        self.journal(JournalOp::DeleteCollection { name });
        self.reply(client, ToClient::Done { request });
    }

    /// `client` left: its collections and datasets stay, owned by nobody from now on.
    pub(super) fn disown_collections(&mut self, client: &ConnectionId) {
        for name in self.collections.disown(client) {
            self.journal(JournalOp::SetCollectionOwner { name, owner: None });
        }
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
            Ok((resolved, outputs)) => {
                let stories = self.story_keys(&graph, &resolved);
                self.stories_submitted(stories, &client);
                outputs
            }
            Err(error) => {
                self.reply(&client, ToClient::Failed { request, error });
                return;
            }
        };
        let c = self.new_computation(client, request, outputs, true, false);
        self.start_computation(c);
    }

    /// Publishes `collection`'s results under `name`, owned by `client`; replacing another
    /// owner's (or an ownerless) dataset needs an operator.
    pub(super) fn publish(
        &mut self,
        client: &ConnectionId,
        role: ClientRole,
        request: RequestId,
        name: String,
        collection: Collection,
    ) {
        if let Some(old) = self.collections.datasets.get(&name) {
            if !may_change(old.owner.as_ref(), client, role) {
                let action = format!("replacing dataset {name:?} {}", whose(old.owner.as_ref()));
                self.reply(client, forbidden(request, action));
                return;
            }
        }
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
        let owned = Owned {
            item: (collection, ids),
            owner: Some(client.clone()),
        };
        if let Some(old) = self.collections.datasets.insert(name, owned) {
            self.release_dataset_tasks(old.item.1);
        }
        self.reply(client, ToClient::Done { request });
    }

    pub(super) fn get_dataset(&mut self, client: &ConnectionId, request: RequestId, name: String) {
        let found = self
            .collections
            .datasets
            .get(&name)
            .map(|d| d.item.0.clone());
        let reply = found_or_missing(request, found, name);
        self.reply(client, reply);
    }

    /// Unpublishes a dataset: its owner's or an operator's call.
    pub(super) fn unpublish(
        &mut self,
        client: &ConnectionId,
        role: ClientRole,
        request: RequestId,
        name: String,
    ) {
        let owner = match self.collections.datasets.get(&name) {
            None => {
                let error = RequestError::NoSuchCollection { name };
                self.reply(client, ToClient::Failed { request, error });
                return;
            }
            Some(d) => d.owner.as_ref(),
        };
        if !may_change(owner, client, role) {
            let action = format!("unpublishing dataset {name:?} {}", whose(owner));
            self.reply(client, forbidden(request, action));
            return;
        }
        let d = self
            .collections
            .datasets
            .remove(&name)
            .expect("found above");
        self.release_dataset_tasks(d.item.1);
        self.reply(client, ToClient::Done { request });
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
