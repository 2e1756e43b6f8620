//! Worker membership: who may join and who is gone. The part owns what membership needs
//! besides the registry itself: registrations held while a clashing worker is pinged, the
//! nannies' claims (by token), the tokens of processes that died or that a restart is ending,
//! and the liveness probe in flight. Registration, nanny reports and probes are handled here.

use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};

use log::{debug, info, warn};

use super::violation::InvariantViolation;
use super::workers::Worker;
use super::{warn_or_info, SchedulerCore, WorkerId};
use crate::protocol::{
    ConnectionId, RejectReason, ToWorker, WorkerAddress, WorkerRegistration, PROTOCOL_VERSION,
};

/// At most this many unmatched `NannyOf` claims are remembered (a stranger cannot grow the
/// table without bound; a real nanny's claim is matched within moments).
const MAX_NANNY_CLAIMS: usize = 1024;

/// At most this many clashing registrations wait for a probe; more are refused at once.
const MAX_HELD_REGISTRATIONS: usize = 64;

#[derive(Default)]
pub(super) struct Membership {
    /// Registrations waiting for a probe of the live worker they clash with (name or address).
    held: Vec<HeldRegistration>,
    /// Nanny tokens of worker processes that died or that a restart is ending, until when: a
    /// registration of such a process may still be on the way, and is ignored.
    dead_tokens: HashMap<u64, u64>,
    /// Nanny connections by the token they handed their worker (`NannyOf`). A nanny speaks
    /// for the worker that registered with its token; a token nobody registered with is inert.
    nanny_claims: HashMap<u64, ConnectionId>,
    /// A liveness probe in flight: (sent at, deadline).
    probe: Option<(u64, u64)>,
}

/// A registration that clashes with live workers (name or address), waiting for them to
/// answer a ping sent when it arrived.
struct HeldRegistration {
    identity: ConnectionId,
    reg: WorkerRegistration,
    deadline_ms: u64,
    /// The clashing workers and how many messages each had sent when they were pinged: one
    /// that sends nothing more before the deadline is gone.
    clashing: Vec<(WorkerId, u64)>,
}

impl Membership {
    /// The process its nanny gave `token` is gone (or being ended) until `until_ms`: a
    /// registration of it still on the way is ignored.
    pub(super) fn process_ended(&mut self, token: u64, until_ms: u64) {
        self.dead_tokens.insert(token, until_ms);
    }

    /// The nanny connection that claimed `token`, if one did.
    pub(super) fn nanny_claim(&self, token: u64) -> Option<&ConnectionId> {
        self.nanny_claims.get(&token)
    }

    /// The earliest of the probe's and the held registrations' deadlines.
    pub(super) fn next_deadline(&self) -> Option<u64> {
        let probe = self.probe.map(|(_, deadline)| deadline);
        let held = self.held.iter().map(|h| h.deadline_ms).min();
        probe.into_iter().chain(held).min()
    }

    /// The part's own invariant: its tables stay within their bounds.
    pub(super) fn check(&self) -> Result<(), InvariantViolation> {
        if self.held.len() > MAX_HELD_REGISTRATIONS {
            return Err(InvariantViolation::new(
                "membership",
                format!("{} held registrations", self.held.len()),
            ));
        }
        if self.nanny_claims.len() > MAX_NANNY_CLAIMS {
            return Err(InvariantViolation::new(
                "membership",
                format!("{} nanny claims", self.nanny_claims.len()),
            ));
        }
        Ok(())
    }
}

impl SchedulerCore {
    /// A worker connection dropped (ZeroMQ does not say whose): every worker is pinged.
    pub(super) fn probe_workers(&mut self) {
        if self.membership.probe.is_some() {
            return; // the probe in flight covers this loss too
        }
        debug!("a worker connection dropped: pinging every worker");
        self.membership.probe = Some((self.now_ms, self.now_ms + self.config.probe_timeout_ms));
        let ids: Vec<WorkerId> = self.workers.iter().map(|(id, _)| id).collect();
        for w in ids {
            self.workers.push(w, ToWorker::Ping, vec![]);
        }
    }

    /// Workers that did not answer the probe by its deadline are lost.
    pub(super) fn check_probe(&mut self) {
        let Some((sent, deadline)) = self.membership.probe else {
            return;
        };
        if self.now_ms < deadline {
            return;
        }
        self.membership.probe = None;
        let silent: Vec<WorkerId> = self
            .workers
            .iter()
            // A worker whose announced values are still arriving cannot answer before they
            // have: its heartbeat timeout, extended by their transfer time, judges it.
            .filter(|(_, w)| w.last_seen_ms < sent && w.incoming_bytes == 0)
            .map(|(id, _)| id)
            .collect();
        for id in silent {
            warn!(
                "worker {} did not answer a ping: considered lost",
                self.workers.address(id)
            );
            self.remove_worker(id, crate::protocol::Departure::NoPingAnswer);
        }
    }

    /// A nanny says it supervises the worker at `address` and gave it `token`. Kept by
    /// token: it counts for whichever worker registers (or registered) with that token, in
    /// any order, and for none otherwise.
    pub(super) fn nanny_of(&mut self, identity: ConnectionId, address: WorkerAddress, token: u64) {
        debug!("{} says it is the nanny of {address}", identity);
        let claims = &mut self.membership.nanny_claims;
        if claims.len() >= MAX_NANNY_CLAIMS {
            // Keep the claims registered workers use; a flood of made-up ones goes.
            let used: HashSet<u64> = self
                .workers
                .iter()
                .filter_map(|(_, w)| w.nanny_token)
                .collect();
            claims.retain(|t, _| used.contains(t));
            if claims.len() >= MAX_NANNY_CLAIMS {
                warn!("too many nanny claims: ignoring the one for {address}");
                return;
            }
        }
        claims.insert(token, identity);
    }

    /// A nanny reports that the process it gave `token` ended. Believed only from the nanny
    /// that claimed that token. The process is gone for good: its registration (if any) is
    /// removed, one still held is dropped, and a stale one still on the way is ignored later.
    pub(super) fn worker_died(
        &mut self,
        identity: ConnectionId,
        address: WorkerAddress,
        token: u64,
        expected: bool,
        reason: String,
    ) {
        if self.membership.nanny_claims.get(&token) != Some(&identity) {
            warn!(
                "ignoring a death report about {address} from {}: not that worker's nanny",
                identity
            );
            return;
        }
        let until = self.now_ms + self.config.restart_timeout_ms;
        self.membership.process_ended(token, until);
        self.membership
            .held
            .retain(|h| h.reg.nanny_token != Some(token));
        let w = self
            .workers
            .iter()
            .find(|(_, w)| w.nanny_token == Some(token))
            .map(|(id, _)| id);
        match w {
            Some(w) => {
                warn_or_info(
                    !expected,
                    &format!("worker {address} died ({reason}), says its nanny"),
                );
                let why = crate::protocol::Departure::Died {
                    reason: crate::protocol::cut_text(reason, 256),
                    expected,
                };
                self.remove_worker(w, why);
            }
            None => debug!("death report about {address}, which is not registered"),
        }
    }

    /// The connection of the nanny of the worker registered at `address`, if it has one.
    pub(super) fn nanny_at(&self, address: &WorkerAddress) -> Option<&ConnectionId> {
        let w = self.workers.by_address(address)?;
        let token = self.workers.get(w)?.nanny_token?;
        self.membership.nanny_claims.get(&token)
    }

    /// Held registrations whose ping deadline passed: the clashing workers that stayed silent
    /// are lost; then the registration is tried again, and refused if a clash remains.
    pub(super) fn retry_held_registrations(&mut self) {
        let now = self.now_ms;
        let (due, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.membership.held)
            .into_iter()
            .partition(|h| now >= h.deadline_ms);
        self.membership.held = waiting;
        for held in due {
            let pinged: Vec<WorkerId> = held.clashing.iter().map(|(w, _)| *w).collect();
            for (w, heard) in held.clashing {
                let silent = self
                    .workers
                    .get(w)
                    .is_some_and(|x| x.messages_heard == heard);
                if silent {
                    warn!(
                        "worker {} did not answer a ping (a new worker claims its name or address): considered lost",
                        self.workers.address(w)
                    );
                    self.remove_worker(w, crate::protocol::Departure::Superseded);
                }
            }
            // A worker that registered meanwhile under the same name or address was not asked
            // yet: ask it too before refusing anyone.
            let reg = &held.reg;
            let unasked = self.workers.iter().any(|(id, w)| {
                w.identity != held.identity
                    && (w.name == reg.name || w.address == reg.address)
                    && !pinged.contains(&id)
            });
            self.register_worker_after(held.identity, held.reg, !unasked);
        }
    }

    /// A registration. One that clashes with a live worker's name or address waits for a
    /// probe first (`Membership::held`): a worker restarted under the same name after a
    /// crash gets in as soon as its dead predecessor fails to answer; a second live worker of
    /// that name or address is refused.
    pub(super) fn register_worker(&mut self, identity: ConnectionId, reg: WorkerRegistration) {
        self.register_worker_after(identity, reg, false)
    }

    fn register_worker_after(
        &mut self,
        identity: ConnectionId,
        reg: WorkerRegistration,
        probed: bool,
    ) {
        let now = self.now_ms;
        let membership = &mut self.membership;
        membership.dead_tokens.retain(|_, until| *until > now);
        if reg
            .nanny_token
            .is_some_and(|t| membership.dead_tokens.contains_key(&t))
        {
            debug!(
                "ignoring the registration of {}: its nanny ended (or is ending) that process",
                reg.address
            );
            return;
        }
        let clash =
            |w: &Worker| w.identity != identity && (w.name == reg.name || w.address == reg.address);
        let clashing = self.workers.iter().find(|(_, w)| clash(w)).map(|(_, w)| w);
        let rejection = if reg.protocol_version != PROTOCOL_VERSION {
            Some(RejectReason::ProtocolVersion {
                scheduler: PROTOCOL_VERSION,
                worker: reg.protocol_version,
            })
        } else if let Some(other) = clashing {
            if !probed && self.membership.held.len() < MAX_HELD_REGISTRATIONS {
                info!(
                    "worker {} (name {}) clashes with a registered worker: checking that one is alive",
                    reg.address, reg.name
                );
                let clashing: Vec<(WorkerId, u64)> = self
                    .workers
                    .iter()
                    .filter(|(_, w)| clash(w))
                    .map(|(id, w)| (id, w.messages_heard))
                    .collect();
                for &(w, _) in &clashing {
                    self.workers.push(w, ToWorker::Ping, vec![]);
                }
                let held = &mut self.membership.held;
                held.retain(|h| h.identity != identity);
                held.push(HeldRegistration {
                    identity,
                    reg,
                    deadline_ms: self.now_ms + self.config.probe_timeout_ms,
                    clashing,
                });
                return;
            }
            Some(if other.name == reg.name {
                RejectReason::NameTaken {
                    name: reg.name.clone(),
                }
            } else {
                RejectReason::AddressTaken {
                    address: reg.address.clone(),
                }
            })
        } else {
            None
        };
        if let Some(reason) = rejection {
            warn!(
                "rejecting worker {} from {}: {reason}",
                reg.address, identity
            );
            self.outbox
                .send_to_connection(identity, ToWorker::Rejected { reason });
            return;
        }
        if let Some(old) = self.workers.by_identity(&identity) {
            // The same process registering again (it lost the scheduler for a while): start
            // from what it reports now.
            self.remove_worker(old, crate::protocol::Departure::Reregistered);
        }
        info!(
            "worker {} registered: name {}, {} threads, store {}, pid {}",
            reg.address, reg.name, reg.nthreads, reg.store, reg.pid
        );
        let id = self.workers.add(Worker::new(identity, &reg, self.now_ms));
        self.stories.worker_joined(id, &reg.address);
        let joined = crate::protocol::EventKind::WorkerJoined {
            worker: reg.address.clone(),
            name: reg.name.clone(),
            nthreads: reg.nthreads,
        };
        self.events.record(self.now_ms, joined);
        let max_message_bytes = self.config.max_message_bytes;
        self.workers
            .push(id, ToWorker::Registered { max_message_bytes }, vec![]);
        self.adopt_held_keys(id, reg.keys);
        for s in self.scatters.take_waiting() {
            self.start_scatter(s);
        }
        self.top_up_all_replicas();
        self.needs_scheduling = true;
        self.check_restart();
    }
}
