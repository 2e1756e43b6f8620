//! The clients part: every client connection heard from, when it was last heard from and the
//! computations it waits for; plus the client-facing requests that are not computations
//! (hello, ping, cancel, goodbye).

use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};

use log::info;

use super::computations::CompId;
use super::SchedulerCore;
use crate::protocol::{ConnectionId, RequestError, RequestId, ToClient, PROTOCOL_VERSION};

struct ClientState {
    last_seen_ms: u64,
    computations: HashSet<CompId>,
}

#[derive(Default)]
pub(super) struct Clients {
    by_identity: HashMap<ConnectionId, ClientState>,
}

impl Clients {
    /// The client was heard from at `now_ms` (a new one is added).
    pub(super) fn seen(&mut self, identity: &ConnectionId, now_ms: u64) {
        self.by_identity
            .entry(identity.clone())
            .or_insert_with(|| ClientState {
                last_seen_ms: 0,
                computations: HashSet::default(),
            })
            .last_seen_ms = now_ms;
    }

    /// Makes sure the client is known (a journaled request resumed for it after a restart).
    pub(super) fn ensure(&mut self, identity: &ConnectionId, now_ms: u64) {
        self.by_identity
            .entry(identity.clone())
            .or_insert_with(|| ClientState {
                last_seen_ms: now_ms,
                computations: HashSet::default(),
            });
    }

    pub(super) fn add_computation(&mut self, identity: &ConnectionId, c: CompId) {
        if let Some(cl) = self.by_identity.get_mut(identity) {
            cl.computations.insert(c);
        }
    }

    pub(super) fn computation_ended(&mut self, identity: &ConnectionId, c: CompId) {
        if let Some(cl) = self.by_identity.get_mut(identity) {
            cl.computations.remove(&c);
        }
    }

    /// The computations a client waits for (in no particular order).
    pub(super) fn computations(
        &self,
        identity: &ConnectionId,
    ) -> impl Iterator<Item = CompId> + '_ {
        self.by_identity
            .get(identity)
            .into_iter()
            .flat_map(|c| c.computations.iter().copied())
    }

    /// Forgets a client; returns its computations, oldest first.
    fn remove(&mut self, identity: &ConnectionId) -> Vec<CompId> {
        let Some(client) = self.by_identity.remove(identity) else {
            return Vec::new();
        };
        let mut comps: Vec<CompId> = client.computations.into_iter().collect();
        comps.sort();
        comps
    }

    /// Every computation ended at once (a restart).
    pub(super) fn clear_computations(&mut self) {
        for cl in self.by_identity.values_mut() {
            cl.computations.clear();
        }
    }

    /// Clients silent for more than `timeout_ms`.
    pub(super) fn silent(&self, now_ms: u64, timeout_ms: u64) -> Vec<ConnectionId> {
        self.by_identity
            .iter()
            .filter(|(_, c)| now_ms.saturating_sub(c.last_seen_ms) > timeout_ms)
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// When the quietest client times out.
    pub(super) fn next_deadline(&self, timeout_ms: u64) -> Option<u64> {
        self.by_identity
            .values()
            .map(|c| c.last_seen_ms + timeout_ms + 1)
            .min()
    }

    pub(super) fn len(&self) -> usize {
        self.by_identity.len()
    }
}

impl SchedulerCore {
    pub(super) fn hello(&mut self, identity: &ConnectionId, protocol_version: u8) {
        if protocol_version != PROTOCOL_VERSION {
            self.reply(
                identity,
                ToClient::Rejected {
                    error: RequestError::Protocol {
                        message: format!(
                            "protocol version {protocol_version} is not supported; this scheduler speaks {PROTOCOL_VERSION}"
                        ),
                    },
                },
            );
            return;
        }
        self.reply(
            identity,
            ToClient::Welcome {
                protocol_version: PROTOCOL_VERSION,
                address_to_workers: self.config.address_to_workers.clone(),
                address_to_clients: self.config.address_to_clients.clone(),
            },
        );
    }

    /// A client's ping, listing the requests it still waits for.
    pub(super) fn client_ping(&mut self, identity: &ConnectionId, pending: Vec<RequestId>) {
        // Requests travel before pings on the same connection, so anything pending that is not
        // known here was lost with a previous scheduler process.
        let known = self.requests_in_progress(identity);
        for request in pending {
            if !known.contains(&request) {
                self.reply(
                    identity,
                    ToClient::Failed {
                        request,
                        error: RequestError::SchedulerRestarted,
                    },
                );
            }
        }
        self.reply(identity, ToClient::Pong);
    }

    /// The client's requests that will be answered later: each part that keeps requests
    /// says which of them are this client's.
    fn requests_in_progress(&self, client: &ConnectionId) -> HashSet<RequestId> {
        let mut known: HashSet<RequestId> = self
            .clients
            .computations(client)
            .filter_map(|c| self.computations.request_of(c))
            .collect();
        known.extend(self.scatters.requests_of(client));
        known.extend(self.replication.requests_of(client));
        known.extend(self.restart.requests_of(client));
        known.extend(self.recovery.requests_of(client));
        known.extend(self.logs.requests_of(client));
        known.extend(self.dismissals.requests_of(client));
        known
    }

    pub(super) fn cancel(&mut self, identity: &ConnectionId, request: RequestId) {
        let comp = self
            .clients
            .computations(identity)
            .find(|c| self.computations.request_of(*c) == Some(request));
        if let Some(c) = comp {
            self.end_computation(c);
        }
        self.cancel_replay(identity, request);
    }

    /// A client said goodbye or went silent: its computations end; what it owns (names,
    /// collections, datasets) stays, owned by nobody (only an operator may remove it now).
    pub(super) fn remove_client(&mut self, identity: &ConnectionId) {
        for c in self.clients.remove(identity) {
            self.end_computation(c);
        }
        self.names.disown(identity);
        self.disown_collections(identity);
        self.logs.client_gone(identity);
        self.dismissals.client_gone(identity);
    }

    /// Clients silent for longer than the client timeout are gone.
    pub(super) fn drop_silent_clients(&mut self) {
        let timeout = self.config.client_timeout_ms;
        for identity in self.clients.silent(self.now_ms, timeout) {
            info!(
                "client {} silent for more than {timeout} ms: dropping its requests",
                identity
            );
            self.remove_client(&identity);
        }
    }
}
