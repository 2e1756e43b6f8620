//! The logs part: a client's `GetLogs` asks each selected worker for its recent log lines
//! and is answered once all of them did, or once `CoreConfig::logs_timeout_ms` passed (with
//! what arrived: a silent worker cannot hang the request). An answer is believed only from a
//! worker the scheduler asked, for a request still open. The scheduler's own lines are not
//! the core's (it does no IO): the IO layer fills `ToClient::Logs::scheduler` in.

use std::collections::BTreeMap;

use log::warn;

use super::{SchedulerCore, WorkerId};
use crate::protocol::{
    cut_text, ConnectionId, RequestId, ToClient, ToWorker, WorkerAddress, WorkerSelector,
};

/// At most this many lines of one worker's answer are kept: as many as a worker's ring holds
/// (`crate::logs::LOG_LINES_MAX`, not imported: that module reads the clock); a larger
/// answer is cut to its newest lines.
pub(super) const WORKER_LOG_LINES_MAX: usize = 1_000;

/// A worker's line longer than this (in bytes) is cut, the cut marked (`protocol::cut_text`),
/// so a worker cannot make the scheduler hold or forward megabytes per line.
pub(super) const LOG_LINE_BYTES_MAX: usize = 4_096;

#[derive(Default)]
pub(super) struct LogRequests {
    /// The id of the next request sent to workers (`ToWorker::GetLogs::request`).
    next: u64,
    pending: BTreeMap<u64, PendingLogs>,
}

/// A client's `GetLogs` waiting for workers.
struct PendingLogs {
    client: ConnectionId,
    request: RequestId,
    /// Workers asked that have not answered yet.
    waiting: BTreeMap<WorkerId, WorkerAddress>,
    /// The answers so far, in the order they arrived.
    answers: Vec<(WorkerAddress, Vec<String>)>,
    deadline_ms: u64,
}

impl PendingLogs {
    fn into_reply(self) -> (ConnectionId, ToClient) {
        let mut workers = self.answers;
        workers.sort_by(|a, b| a.0.cmp(&b.0));
        (
            self.client,
            ToClient::Logs {
                request: self.request,
                scheduler: Vec::new(),
                workers,
            },
        )
    }
}

/// Why a worker's `Logs` was not believed.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Unasked {
    /// No open request has this id (never sent, answered, or timed out).
    NoSuchRequest,
    /// The request is open but this worker was not asked (or answered already).
    NotAsked,
}

impl LogRequests {
    /// Opens a request to `workers` (at least one). Returns the wire id to send each of them.
    fn open(
        &mut self,
        client: ConnectionId,
        request: RequestId,
        workers: BTreeMap<WorkerId, WorkerAddress>,
        deadline_ms: u64,
    ) -> u64 {
        let id = self.next;
        self.next += 1;
        self.pending.insert(
            id,
            PendingLogs {
                client,
                request,
                waiting: workers,
                answers: Vec::new(),
                deadline_ms,
            },
        );
        id
    }

    /// A worker's answer: the request's reply when it was the last one awaited.
    fn answered(
        &mut self,
        w: WorkerId,
        id: u64,
        address: WorkerAddress,
        mut lines: Vec<String>,
    ) -> Result<Option<(ConnectionId, ToClient)>, Unasked> {
        let pending = self.pending.get_mut(&id).ok_or(Unasked::NoSuchRequest)?;
        if pending.waiting.remove(&w).is_none() {
            return Err(Unasked::NotAsked);
        }
        if lines.len() > WORKER_LOG_LINES_MAX {
            lines.drain(..lines.len() - WORKER_LOG_LINES_MAX);
        }
        let lines = lines
            .into_iter()
            .map(|l| cut_text(l, LOG_LINE_BYTES_MAX))
            .collect();
        pending.answers.push((address, lines));
        Ok(self.take_if_complete(id))
    }

    fn take_if_complete(&mut self, id: u64) -> Option<(ConnectionId, ToClient)> {
        if self.pending.get(&id)?.waiting.is_empty() {
            self.pending.remove(&id).map(PendingLogs::into_reply)
        } else {
            None
        }
    }

    /// `w` is gone: no request waits for it any more. The replies that became complete.
    fn worker_lost(&mut self, w: WorkerId) -> Vec<(ConnectionId, ToClient)> {
        let ids: Vec<u64> = self
            .pending
            .iter_mut()
            .filter_map(|(id, p)| p.waiting.remove(&w).map(|_| *id))
            .collect();
        ids.into_iter()
            .filter_map(|id| self.take_if_complete(id))
            .collect()
    }

    /// The requests whose deadline passed, answered with what arrived.
    fn expired(&mut self, now_ms: u64) -> Vec<(ConnectionId, ToClient)> {
        let ids: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| p.deadline_ms <= now_ms)
            .map(|(id, _)| *id)
            .collect();
        ids.into_iter()
            .filter_map(|id| self.pending.remove(&id))
            .map(|p| {
                let silent: Vec<String> = p.waiting.values().map(|a| a.to_string()).collect();
                warn!(
                    "logs request {}: no answer from {} in time, answering without them",
                    p.request.0,
                    silent.join(", ")
                );
                p.into_reply()
            })
            .collect()
    }

    pub(super) fn next_deadline(&self) -> Option<u64> {
        self.pending.values().map(|p| p.deadline_ms).min()
    }

    /// The client's requests waiting for workers' logs.
    pub(super) fn requests_of<'a>(
        &'a self,
        client: &'a ConnectionId,
    ) -> impl Iterator<Item = RequestId> + 'a {
        self.pending
            .values()
            .filter(move |p| &p.client == client)
            .map(|p| p.request)
    }

    /// The client is gone: its requests are dropped.
    pub(super) fn client_gone(&mut self, client: &ConnectionId) {
        self.pending.retain(|_, p| &p.client != client);
    }

    /// How many requests are open (for tests).
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.pending.len()
    }
}

impl SchedulerCore {
    /// A client's `GetLogs`: ask every worker `selector` selects (all without one).
    pub(super) fn get_logs(
        &mut self,
        client: ConnectionId,
        request: RequestId,
        selector: Option<WorkerSelector>,
    ) {
        let workers: BTreeMap<WorkerId, WorkerAddress> = self
            .workers
            .iter()
            .filter(|(_, w)| {
                selector
                    .as_ref()
                    .is_none_or(|s| s.matches(&w.address, &w.name, w.runs_python))
            })
            .map(|(id, w)| (id, w.address.clone()))
            .collect();
        if workers.is_empty() {
            let reply = ToClient::Logs {
                request,
                scheduler: Vec::new(),
                workers: Vec::new(),
            };
            self.reply(&client, reply);
            return;
        }
        let asked: Vec<WorkerId> = workers.keys().copied().collect();
        let deadline = self.now_ms + self.config.logs_timeout_ms;
        let id = self.logs.open(client, request, workers, deadline);
        for w in asked {
            self.workers
                .push(w, ToWorker::GetLogs { request: id }, vec![]);
        }
    }

    /// A worker's `Logs`: believed only if it was asked for them.
    pub(super) fn logs_arrived(&mut self, w: WorkerId, request: u64, lines: Vec<String>) {
        let address = self.workers.address(w);
        match self.logs.answered(w, request, address.clone(), lines) {
            Ok(Some((client, reply))) => self.reply(&client, reply),
            Ok(None) => {}
            Err(why) => warn!(
                "ignoring logs from worker {address} for request {request}: {}",
                match why {
                    Unasked::NoSuchRequest => "no such request is open",
                    Unasked::NotAsked => "it was not asked",
                }
            ),
        }
    }

    /// Answers the log requests that waited only for `w`, which is gone.
    pub(super) fn logs_worker_lost(&mut self, w: WorkerId) {
        for (client, reply) in self.logs.worker_lost(w) {
            self.reply(&client, reply);
        }
    }

    /// Answers the log requests whose workers did not all answer in time.
    pub(super) fn expire_log_requests(&mut self) {
        for (client, reply) in self.logs.expired(self.now_ms) {
            self.reply(&client, reply);
        }
    }
}
