//! Fetching a task's inputs from peers: one fetch per missing key, tried holder after holder
//! (a holder that does not answer in time, or is lost, moves it to the next one), until the
//! value arrives or no holder is left and the tasks needing it are given up.

use log::{debug, warn};

use super::{Held, PeerFetch, Phase, WorkerCommand, WorkerCore};
use crate::graph::Key;
use crate::protocol::codec::UNKNOWN_ORIGIN;
use crate::protocol::{Frame, FromWorker, PeerReply, WorkerAddress};

impl WorkerCore {
    /// Asks the next holder of `dep` for it, or gives up on the tasks that need it.
    pub(super) fn try_next_holder(&mut self, dep: Key) {
        let Some(f) = self.fetches.get_mut(&dep) else {
            return;
        };
        f.waiting.retain(|k| self.tasks.contains_key(k));
        if f.waiting.is_empty() {
            self.fetches.remove(&dep);
            return;
        }
        if f.tried < f.holders.len() {
            let address = f.holders[f.tried].clone();
            f.tried += 1;
            let request = self.next_request;
            self.next_request += 1;
            self.peer_fetches.insert(
                request,
                PeerFetch {
                    address: address.clone(),
                    keys: vec![dep.clone()],
                    deadline_ms: self.now_ms + self.config.fetch_timeout_ms,
                },
            );
            debug!("fetching {dep:?} from {address}");
            self.commands.push(WorkerCommand::FetchFromPeer {
                address,
                request,
                keys: vec![dep],
            });
            return;
        }
        let f = self.fetches.remove(&dep).expect("present above");
        for key in f.waiting {
            if self.tasks.contains_key(&key) {
                self.drop_task(&key);
                debug!("giving up on {key:?}: no holder of {dep:?} answered");
                self.commands.push(WorkerCommand::ToScheduler {
                    msg: FromWorker::MissingDependency {
                        key,
                        dependency: dep.clone(),
                        holders: f
                            .holders
                            .iter()
                            .filter(|h| !f.unresponsive.contains(h))
                            .cloned()
                            .collect(),
                        unresponsive: f.unresponsive.clone(),
                    },
                    frames: vec![],
                });
            }
        }
    }

    pub(super) fn peer_answered(
        &mut self,
        address: WorkerAddress,
        msg: PeerReply,
        frames: Vec<Frame>,
    ) {
        debug!("peer {address} answered {msg:?}");
        let (request, found, missing) = match msg {
            PeerReply::Data {
                request,
                found,
                missing,
            } => (request, found, missing),
            PeerReply::Error { message } => {
                warn!("peer {address} answered with an error: {message}");
                return;
            }
        };
        let Some(pf) = self.peer_fetches.remove(&request) else {
            return; // timed out already, or an answer to nothing we asked
        };
        for (key, frame) in found.into_iter().zip(frames) {
            if !pf.keys.contains(&key) {
                continue;
            }
            let Some(f) = self.fetches.remove(&key) else {
                continue;
            };
            let nbytes = frame.len() as u64;
            let mut wanted = false;
            for t in f.waiting {
                if let Some(task) = self.tasks.get_mut(&t) {
                    wanted = true;
                    task.fetched.push((key.clone(), nbytes));
                    if let Phase::Fetching { missing } = &mut task.phase {
                        *missing -= 1;
                        if *missing == 0 {
                            task.phase = Phase::Ready;
                            self.ready.push_back(t);
                        }
                    }
                }
            }
            if wanted {
                self.data
                    .insert(key.clone(), Held::new(nbytes, UNKNOWN_ORIGIN));
                self.commands.push(WorkerCommand::Store { key, frame });
            }
        }
        // A key the peer neither sent nor reported missing counts as missing too, or the
        // task would wait for it forever.
        let undelivered: Vec<Key> = pf
            .keys
            .into_iter()
            .filter(|k| self.fetches.contains_key(k) && !missing.contains(k))
            .collect();
        for key in missing.into_iter().chain(undelivered) {
            self.try_next_holder(key);
        }
        self.start_ready();
    }

    /// Stops waiting on lost peers: their fetches move to the next holder now.
    pub(super) fn peers_lost(&mut self, addresses: &[WorkerAddress]) {
        for f in self.fetches.values_mut() {
            // Keep the tried prefix intact so `tried` still indexes the next holder.
            let (tried, untried) = f.holders.split_at(f.tried);
            let untried: Vec<WorkerAddress> = untried
                .iter()
                .filter(|h| !addresses.contains(h))
                .cloned()
                .collect();
            let mut holders = tried.to_vec();
            holders.extend(untried);
            f.holders = holders;
        }
        let stuck: Vec<u64> = self
            .peer_fetches
            .iter()
            .filter(|(_, f)| addresses.contains(&f.address))
            .map(|(r, _)| *r)
            .collect();
        for r in stuck {
            if let Some(f) = self.peer_fetches.remove(&r) {
                for k in f.keys {
                    self.try_next_holder(k);
                }
            }
        }
        self.start_ready();
    }
}
