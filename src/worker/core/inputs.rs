//! Fetching inputs, announced to the parts it concerns: asking a fetch's next holder (or,
//! with none left, giving up on the tasks waiting for it: the task table forgets them, the
//! scheduler hears `MissingDependency`), a peer's answer (the value joins held data, the tasks
//! waiting for it are told, the runner stores it), requests timing out and peers lost.

use log::{debug, warn};

use super::fetch::NextHolder;
use super::{WorkerCommand, WorkerCore};
use crate::graph::Key;
use crate::protocol::codec::UNKNOWN_ORIGIN;
use crate::protocol::{Frame, FromWorker, PeerReply, WorkerAddress};

impl WorkerCore {
    /// Asks the next holder of `dep` for it, or gives up on the tasks that need it.
    pub(super) fn ask_next_holder(&mut self, dep: Key) {
        let tasks = &self.tasks;
        match self
            .fetches
            .next_holder(dep.clone(), self.now_ms, |k| tasks.contains(k))
        {
            NextHolder::Idle => {}
            NextHolder::Ask {
                address,
                request,
                key,
            } => self.outbox.push(WorkerCommand::FetchFromPeer {
                address,
                request,
                keys: vec![key],
            }),
            NextHolder::GaveUp {
                waiting,
                holders,
                unresponsive,
            } => {
                for key in waiting {
                    if self.tasks.contains(&key) {
                        self.drop_task(&key);
                        debug!("giving up on {key:?}: no holder of {dep:?} answered");
                        self.outbox.send(FromWorker::MissingDependency {
                            key,
                            dependency: dep.clone(),
                            holders: holders.clone(),
                            unresponsive: unresponsive.clone(),
                        });
                    }
                }
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
                ..
            } => (request, found, missing),
            PeerReply::Error { message } => {
                warn!("peer {address} answered with an error: {message}");
                return;
            }
        };
        let Some(asked) = self.fetches.take_request(request) else {
            return; // timed out already, or an answer to nothing we asked
        };
        for (key, frame) in found.into_iter().zip(frames) {
            if !asked.keys.contains(&key) {
                continue;
            }
            let Some(waiting) = self.fetches.arrived(&key) else {
                continue;
            };
            let nbytes = frame.len() as u64;
            let mut wanted = false;
            for t in waiting {
                wanted |= self.tasks.input_arrived(&t, &key, nbytes);
            }
            if wanted {
                self.hold(key.clone(), nbytes, UNKNOWN_ORIGIN);
                self.outbox.push(WorkerCommand::Store { key, frame });
            }
        }
        // A key the peer neither sent nor reported missing counts as missing too, or the
        // task would wait for it forever.
        let undelivered: Vec<Key> = asked
            .keys
            .into_iter()
            .filter(|k| self.fetches.is_fetching(k) && !missing.contains(k))
            .collect();
        for key in missing.into_iter().chain(undelivered) {
            self.ask_next_holder(key);
        }
        self.start_ready();
    }

    /// Requests past their deadline: each peer counts as unresponsive for what it was asked,
    /// and those fetches move to their next holder.
    pub(super) fn fetches_timed_out(&mut self) {
        for r in self.fetches.expired(self.now_ms) {
            if let Some(f) = self.fetches.time_out(r) {
                warn!(
                    "peer {} did not answer a fetch of {} key(s) in time",
                    f.address,
                    f.keys.len()
                );
                for k in f.keys {
                    self.ask_next_holder(k);
                }
            }
        }
    }

    /// Stops waiting on lost peers: their fetches move to the next holder now.
    pub(super) fn peers_lost(&mut self, addresses: &[WorkerAddress]) {
        for r in self.fetches.peers_lost(addresses) {
            if let Some(f) = self.fetches.take_request(r) {
                for k in f.keys {
                    self.ask_next_holder(k);
                }
            }
        }
        self.start_ready();
    }
}
