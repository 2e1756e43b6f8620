//! The reference's side of each request: what it allows when the scheduler handles a client
//! message (computed from the names at that moment), and the check of each answer as it
//! leaves the scheduler, with its effect on names applied then (later requests already see
//! it, whatever the client has read).

use std::collections::BTreeSet;

use zask::collection::Collection;
use zask::graph::{GraphError, Key};
use zask::protocol::codec::decode_value;
use zask::protocol::{Frame, FromClient, RequestError, TaskErrorKind, ToClient};
use zask::Value;

use crate::reference::{expect_graph, Expected, Named, FAIL_MESSAGE};
use crate::workload::ClientOp;
use crate::{Model, ALLOWED_FAILURES, R};

/// What the reference allowed for a request when the scheduler handled it.
#[derive(Debug)]
pub(crate) enum Expect {
    Submit(Expected),
    Persist(Expected),
    Gather(Vec<BTreeSet<Named>>),
    Scatter,
    Release,
    WhoHas(Vec<bool>),
    Replicate(Vec<bool>),
    /// Per key (maybe unnamed, surely unnamed), and the reference for the collection's own
    /// graph. Done is right if every key is named, or if the collection's definitions can
    /// have values; NotFound may name any key (its definition's value may be gone already);
    /// a missing key must be one the collection's graph uses without a name.
    Publish(Vec<(Key, bool, bool)>, Expected),
    GetDataset(Vec<Option<Collection>>),
    Unpublish(Vec<Option<Collection>>),
    SetCollection,
    GetCollection(Option<Collection>),
    DeleteCollection(bool),
    ListCollections(Vec<String>),
    Status,
    Restart,
}

#[derive(Debug)]
pub(crate) struct Pending {
    pub(crate) op: ClientOp,
    pub(crate) expect: Expect,
    /// The names this request will set if it succeeds, with their writer ids in the book.
    pub(crate) writers: Vec<(Key, u64)>,
    pub(crate) restarts_at_handle: u64,
}

/// The values of an answer, one per key asked for (a key asked twice may travel once).
pub(crate) fn values_in_order(msg: &ToClient, frames: &[Frame]) -> Result<Vec<Value>, String> {
    let decoded = frames
        .iter()
        .map(|f| decode_value(f).map_err(|e| e.to_string()))
        .collect::<Result<Vec<Value>, String>>()?;
    match msg {
        ToClient::Values { positions, .. } if !positions.is_empty() => positions
            .iter()
            .map(|p| {
                decoded
                    .get(*p as usize)
                    .cloned()
                    .ok_or_else(|| format!("position {p} of {} frames", decoded.len()))
            })
            .collect(),
        _ => Ok(decoded),
    }
}

impl Model {
    /// A client message reaches the scheduler: the reference handles it first (what is
    /// allowed depends on the names at this moment), then the core.
    pub(crate) fn client_message_arrives(&mut self, c: usize, msg: &FromClient) {
        let request = match msg {
            FromClient::Hello { .. } | FromClient::Ping { .. } | FromClient::Goodbye => return,
            // The model's clients send none of these (no progress, retirement or shutdown).
            FromClient::Cancel { .. }
            | FromClient::WatchProgress { .. }
            | FromClient::ListDatasets { .. }
            | FromClient::RetireWorkers { .. }
            | FromClient::Shutdown { .. } => return,
            FromClient::Submit { request, .. }
            | FromClient::Gather { request, .. }
            | FromClient::Scatter { request, .. }
            | FromClient::WhoHas { request, .. }
            | FromClient::Status { request }
            | FromClient::Release { request, .. }
            | FromClient::Replicate { request, .. }
            | FromClient::SetCollection { request, .. }
            | FromClient::GetCollection { request, .. }
            | FromClient::ListCollections { request }
            | FromClient::SetLegacyCollection { request, .. }
            | FromClient::GetLegacyCollection { request, .. }
            | FromClient::DeleteCollection { request, .. }
            | FromClient::Persist { request, .. }
            | FromClient::Publish { request, .. }
            | FromClient::GetDataset { request, .. }
            | FromClient::Unpublish { request, .. }
            | FromClient::Restart { request }
            | FromClient::GetLogs { request, .. }
            | FromClient::SetScaling { request, .. }
            | FromClient::GetScaling { request }
            | FromClient::GetStory { request, .. }
            | FromClient::GetEvents { request } => request.0,
        };
        let op = self
            .sent
            .remove(&(c, request))
            .expect("every request sent is recorded");
        let mut writers = Vec::new();
        let expect = match &op {
            ClientOp::Submit {
                graph,
                outputs,
                keep,
            } => {
                let e = expect_graph(graph, outputs, &self.book);
                if *keep {
                    writers = self.start_writers(&e);
                }
                Expect::Submit(e)
            }
            ClientOp::Persist { graph, outputs } => {
                let e = expect_graph(graph, outputs, &self.book);
                writers = self.start_writers(&e);
                Expect::Persist(e)
            }
            ClientOp::Scatter { keys, values } => {
                for (k, v) in keys.iter().zip(values) {
                    let named = Named::Value {
                        value: *v,
                        fragile: true,
                    };
                    let id = self.book.writer_started(k, BTreeSet::from([named]));
                    writers.push((k.clone(), id));
                }
                Expect::Scatter
            }
            ClientOp::Gather(keys) => {
                Expect::Gather(keys.iter().map(|k| self.book.possible(k)).collect())
            }
            ClientOp::Release(keys) => {
                for k in keys {
                    self.book.released(k);
                }
                Expect::Release
            }
            ClientOp::WhoHas(keys) => {
                Expect::WhoHas(keys.iter().map(|k| self.book.surely_unnamed(k)).collect())
            }
            ClientOp::Replicate(keys, _) => {
                Expect::Replicate(keys.iter().map(|k| self.book.maybe_unnamed(k)).collect())
            }
            ClientOp::Publish(_, collection) => Expect::Publish(
                collection
                    .keys
                    .iter()
                    .map(|k| {
                        (
                            k.clone(),
                            self.book.maybe_unnamed(k),
                            self.book.surely_unnamed(k),
                        )
                    })
                    .collect(),
                expect_graph(&collection.graph, &collection.keys, &self.book),
            ),
            ClientOp::GetDataset(name) => Expect::GetDataset(self.dataset(name)),
            ClientOp::Unpublish(name) => {
                let before = self.dataset(name);
                self.datasets.insert(name.clone(), vec![None]);
                Expect::Unpublish(before)
            }
            ClientOp::SetCollection(name, collection) => {
                self.collections.insert(name.clone(), collection.clone());
                Expect::SetCollection
            }
            ClientOp::GetCollection(name) => {
                Expect::GetCollection(self.collections.get(name).cloned())
            }
            ClientOp::DeleteCollection(name) => {
                Expect::DeleteCollection(self.collections.remove(name).is_some())
            }
            ClientOp::ListCollections => {
                Expect::ListCollections(self.collections.keys().cloned().collect())
            }
            ClientOp::Status => Expect::Status,
            ClientOp::Restart => {
                self.restarts += 1;
                self.book.restart();
                self.datasets.clear();
                Expect::Restart
            }
            ClientOp::Cancel | ClientOp::Goodbye | ClientOp::GoSilent => {
                unreachable!("not requests")
            }
        };
        self.pending.insert(
            (c, request),
            Pending {
                op,
                expect,
                writers,
                restarts_at_handle: self.restarts,
            },
        );
    }

    pub(crate) fn dataset(&self, name: &str) -> Vec<Option<Collection>> {
        self.datasets
            .get(name)
            .cloned()
            .unwrap_or_else(|| vec![None])
    }

    pub(crate) fn start_writers(&mut self, e: &Expected) -> Vec<(Key, u64)> {
        let mut writers = Vec::new();
        for (k, values) in &e.per_output {
            let named = values
                .iter()
                .map(|v| Named::Value {
                    value: *v,
                    fragile: e.fragile,
                })
                .collect();
            writers.push((k.clone(), self.book.writer_started(k, named)));
        }
        writers
    }

    /// An answer leaves the scheduler: check it against what was allowed, and let its effect
    /// on names happen now (not when the client reads it: later requests already see it).
    pub(crate) fn reply_leaves(&mut self, c: usize, msg: &ToClient, frames: &[Frame]) -> R {
        if let ToClient::Rejected { error } = msg {
            return Err(format!(
                "c{c}: the scheduler rejected a well-formed message: {error}"
            ));
        }
        let Some(request) = msg.request().map(|r| r.0) else {
            return Ok(()); // Welcome, Pong
        };
        let Some(p) = self.pending.remove(&(c, request)) else {
            // A ping listing a request whose answer is still on its way is answered with
            // "unknown request"; the client has its answer by then and ignores this one.
            let late_ping_answer = matches!(
                msg,
                ToClient::Failed {
                    error: RequestError::SchedulerRestarted,
                    ..
                }
            ) && self.answered.contains(&(c, request));
            if late_ping_answer {
                return Ok(());
            }
            return Err(format!(
                "c{c}: answer to a request that is not pending: {msg:?}"
            ));
        };
        self.answered.insert((c, request));
        let values = values_in_order(msg, frames)?;
        let ok = self.check_answer(&p, msg, &values).map_err(|e| {
            format!(
                "c{c} request {request} {:?}\n  answer {msg:?} {values:?}\n  {e}",
                p.op
            )
        })?;
        for (k, id) in &p.writers {
            if !ok {
                self.book.writer_ended(k, *id);
                continue;
            }
            let named = match (&p.op, msg) {
                (ClientOp::Submit { outputs, .. }, ToClient::Values { .. }) => {
                    let i = outputs
                        .iter()
                        .position(|o| o == k)
                        .expect("a writer per output");
                    let Value::Int(v) = values[i] else {
                        unreachable!("checked")
                    };
                    let Expect::Submit(x) = &p.expect else {
                        unreachable!("a submit")
                    };
                    Some(BTreeSet::from([Named::Value {
                        value: v,
                        fragile: x.fragile,
                    }]))
                }
                _ => None,
            };
            self.book.writer_succeeded(k, *id, named);
        }
        if let (ClientOp::Publish(name, collection), ToClient::Done { .. }) = (&p.op, msg) {
            self.datasets
                .insert(name.clone(), vec![Some(collection.clone())]);
        }
        Ok(())
    }

    /// Errors some fault explains. `data`: the request reads values.
    pub(crate) fn explained(&self, p: &Pending, e: &RequestError, data: bool) -> bool {
        match e {
            RequestError::Restarted => self.restarts > p.restarts_at_handle,
            // Scattered data (or a value computed from it) lost with its holders: the name is
            // left without a value. DataLost says so; NotFound is accepted too (the key has no
            // value on the cluster any more).
            RequestError::DataLost { key, .. } => {
                data && self.losses > 0 && self.book.ever_fragile.contains(key)
            }
            // The same for NotFound; and a named computed value whose recomputation after a
            // loss took down too many workers fails for good (killed worker), so it is not
            // found either.
            RequestError::NotFound { key } => {
                data && self.losses > 0
                    && (self.book.ever_fragile.contains(key)
                        || self.worker_faults > ALLOWED_FAILURES as u64)
            }
            // Kills, but also stalls and slowness (heartbeat or probe timeouts) take workers
            // down unexpectedly.
            RequestError::Task { error, .. } if error.kind == TaskErrorKind::KilledWorker => {
                data && self.worker_faults > ALLOWED_FAILURES as u64
            }
            _ => false,
        }
    }

    /// Is this answer allowed? Ok(true) when the request succeeded.
    pub(crate) fn check_answer(
        &self,
        p: &Pending,
        msg: &ToClient,
        values: &[Value],
    ) -> Result<bool, String> {
        let bad = |why: &str| Err(why.to_string());
        if let ToClient::Failed { error, .. } = msg {
            let allowed = match (&p.expect, error) {
                (_, e) if self.explained(p, e, false) => true,
                (
                    Expect::Submit(x) | Expect::Persist(x),
                    RequestError::Graph(GraphError::MissingKey { key, .. }),
                ) => x.missing.contains(key),
                (Expect::Submit(x) | Expect::Persist(x), RequestError::Task { key, error }) => {
                    (error.kind == TaskErrorKind::Failed
                        && error.message == FAIL_MESSAGE
                        && x.failed.contains(key))
                        || self.explained(
                            p,
                            &RequestError::Task {
                                key: key.clone(),
                                error: error.clone(),
                            },
                            true,
                        )
                }
                (
                    Expect::Submit(_)
                    | Expect::Persist(_)
                    | Expect::Gather(_)
                    | Expect::Replicate(_),
                    e,
                ) => {
                    self.explained(p, e, true)
                        || match (&p.expect, &p.op, e) {
                            (
                                Expect::Gather(options),
                                ClientOp::Gather(keys),
                                RequestError::NotFound { key },
                            ) => keys
                                .iter()
                                .zip(options)
                                .any(|(k, o)| k == key && o.contains(&Named::Unnamed)),
                            (
                                Expect::Replicate(maybe),
                                ClientOp::Replicate(keys, _),
                                RequestError::NotFound { key },
                            ) => keys.iter().zip(maybe).any(|(k, m)| k == key && *m),
                            _ => false,
                        }
                }
                (Expect::Publish(keys, _), RequestError::NotFound { key }) => {
                    keys.iter().any(|(k, ..)| k == key)
                }
                (
                    Expect::Publish(_, x),
                    RequestError::Graph(GraphError::MissingKey { key, .. }),
                ) => x.missing.contains(key),
                (Expect::GetDataset(o), RequestError::NoSuchCollection { .. }) => o.contains(&None),
                (Expect::Unpublish(o), RequestError::NoSuchCollection { .. }) => o.contains(&None),
                (Expect::GetCollection(None), RequestError::NoSuchCollection { .. }) => true,
                (Expect::DeleteCollection(false), RequestError::NoSuchCollection { .. }) => true,
                // A worker that died unnoticed, or one the network made look dead, is
                // expected back and never comes.
                (Expect::Restart, RequestError::RestartIncomplete { .. }) => self.worker_faults > 0,
                _ => false,
            };
            return if allowed {
                Ok(false)
            } else {
                bad("an error nothing explains")
            };
        }
        match (&p.expect, msg) {
            (Expect::Submit(x), ToClient::Values { .. }) => {
                let ints: Option<Vec<i64>> = values
                    .iter()
                    .map(|v| match v {
                        Value::Int(i) => Some(*i),
                        _ => None,
                    })
                    .collect();
                match ints {
                    Some(ints) if x.values.contains(&ints) => {}
                    _ => return bad(&format!("wrong values: the reference allows {x:?}")),
                }
            }
            (Expect::Persist(x), ToClient::Done { .. }) => {
                if x.values.is_empty() {
                    return bad(&format!("done, but the reference allows no success: {x:?}"));
                }
            }
            (Expect::Gather(options), ToClient::Values { .. }) => {
                if values.len() != options.len() {
                    return bad("wrong number of values");
                }
                for (v, o) in values.iter().zip(options) {
                    let fits = o.iter().any(|n| {
                        matches!((n, v), (Named::Value { value, .. }, Value::Int(i)) if value == i)
                    });
                    if !fits {
                        return bad(&format!("gathered {v:?}, the name may hold {o:?}"));
                    }
                }
            }
            (Expect::Scatter, ToClient::Scattered { keys, .. }) => {
                let ClientOp::Scatter { keys: sent, .. } = &p.op else {
                    unreachable!()
                };
                if keys != sent {
                    return bad("scattered other keys");
                }
            }
            (Expect::WhoHas(unnamed), ToClient::WhoHas { who_has, .. }) => {
                let ClientOp::WhoHas(keys) = &p.op else {
                    unreachable!()
                };
                if who_has.iter().map(|(k, _)| k).ne(keys.iter()) {
                    return bad("who_has for other keys");
                }
                // The brief says who_has acts on named values; for a key with no name the core
                // reports the holders of every definition of it instead (a deliberate choice in
                // `SchedulerCore::who_has`), so only the addresses are checked.
                let _ = unnamed;
                for (k, holders) in who_has {
                    if let Some(h) = holders.iter().find(|h| !self.by_address.contains_key(*h)) {
                        return bad(&format!("{k:?} is held by {h}, which is no worker"));
                    }
                }
            }
            (Expect::Publish(keys, x), ToClient::Done { .. }) => {
                let all_named = keys.iter().all(|(_, _, surely)| !surely);
                if !all_named && x.values.is_empty() {
                    return bad(&format!(
                        "published, but its keys are not all named and its graph has no values: {x:?}"
                    ));
                }
            }
            (Expect::GetDataset(o), ToClient::Collection { collection, .. }) => {
                if !o.contains(&Some(collection.clone())) {
                    return bad(&format!("not the published collection: {o:?}"));
                }
            }
            (Expect::Unpublish(o), ToClient::Done { .. }) => {
                if !o.iter().any(Option::is_some) {
                    return bad("unpublished a dataset that was not published");
                }
            }
            (Expect::GetCollection(Some(c)), ToClient::Collection { collection, .. }) => {
                if c != collection {
                    return bad(&format!("not the last collection set: {c:?}"));
                }
            }
            (Expect::DeleteCollection(true), ToClient::Done { .. }) => {}
            (Expect::ListCollections(names), ToClient::Names { names: got, .. }) => {
                let got: BTreeSet<&String> = got.iter().collect();
                if got != names.iter().collect() {
                    return bad(&format!("collections are {names:?}"));
                }
            }
            (Expect::Release, ToClient::Done { .. })
            | (Expect::Replicate(_), ToClient::Done { .. })
            | (Expect::SetCollection, ToClient::Done { .. })
            | (Expect::Status, ToClient::Status { .. })
            | (Expect::Restart, ToClient::Done { .. }) => {}
            _ => return bad("an answer of the wrong kind"),
        }
        Ok(true)
    }
}
