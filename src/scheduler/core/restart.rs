//! The restart part: a client's `restart` drops every request, task and value; workers with a
//! nanny get a fresh process and the others are emptied. The part keeps the restart under way:
//! every request that asked for it, answered once the restarted workers are back (or the
//! restart timeout passes).

use log::info;

use super::{JournalOp, SchedulerCore, WorkerId};
use crate::protocol::{ConnectionId, RequestError, RequestId, ToClient, ToWorker};

#[derive(Default)]
pub(super) struct Restart {
    pending: Option<PendingRestart>,
}

/// A `restart` waiting for the restarted workers to register again, with every request that
/// asked for it (a restart asked for while one is under way joins it).
struct PendingRestart {
    requests: Vec<(ConnectionId, RequestId)>,
    workers_expected: u32,
    deadline_ms: u64,
}

impl Restart {
    pub(super) fn deadline(&self) -> Option<u64> {
        self.pending.as_ref().map(|r| r.deadline_ms)
    }

    /// The client's requests waiting for the restart under way.
    pub(super) fn requests_of<'a>(
        &'a self,
        client: &'a ConnectionId,
    ) -> impl Iterator<Item = RequestId> + 'a {
        self.pending
            .iter()
            .flat_map(|r| r.requests.iter())
            .filter(move |(c, _)| c == client)
            .map(|(_, r)| *r)
    }
}

impl SchedulerCore {
    /// Restarts the cluster: every request pending fails, every task and value is dropped,
    /// workers with a nanny get a fresh process and the others are emptied. Answers once the
    /// restarted workers are back (or the restart timeout passes).
    pub(super) fn restart(&mut self, client: ConnectionId, request: RequestId) {
        // A restart asked for while one is under way restarts again (what happened in between
        // is dropped too) and is answered with the first, when the workers are back.
        info!("restarting the cluster");
        // Every part drops what it keeps; the requests waiting on it fail.
        let mut failed = self.computations.clear();
        self.clients.clear_computations();
        self.progress.clear();
        failed.extend(
            self.scatters
                .take_all()
                .into_iter()
                .map(|s| (s.client, s.request)),
        );
        for (client, request) in failed {
            self.reply(
                &client,
                ToClient::Failed {
                    request,
                    error: RequestError::Restarted,
                },
            );
        }
        self.journal(JournalOp::Clear);
        self.tasks.clear();
        self.stories.restarted(self.now_ms);
        self.names.clear();
        self.placement.clear();
        // Published results are data, gone with the workers; stored collections are graphs
        // and stay.
        self.collections.drop_datasets();
        for (client, request) in self.replication.clear() {
            self.reply(
                &client,
                ToClient::Failed {
                    request,
                    error: RequestError::Restarted,
                },
            );
        }
        let expected = self.workers.len() as u32;
        let ids: Vec<WorkerId> = self.workers.iter().map(|(id, _)| id).collect();
        for id in ids {
            let address = self.workers.address(id);
            match self.nanny_at(&address).cloned() {
                Some(nanny) => {
                    if let Some(w) = self.workers.remove(id) {
                        // Until its nanny has killed it, the old process may still try to
                        // register: it must not be given work or data that would die with it.
                        if let Some(token) = w.nanny_token {
                            let until = self.now_ms + self.config.restart_timeout_ms;
                            self.membership.process_ended(token, until);
                        }
                    }
                    self.outbox.send_to_connection(nanny, ToWorker::Restart);
                }
                None => {
                    self.workers.reset(id);
                }
            }
        }
        let deadline_ms = self.now_ms + self.config.restart_timeout_ms;
        match &mut self.restart.pending {
            Some(pending) => {
                pending.requests.push((client, request));
                pending.workers_expected = pending.workers_expected.max(expected);
                pending.deadline_ms = deadline_ms;
            }
            None => {
                self.restart.pending = Some(PendingRestart {
                    requests: vec![(client, request)],
                    workers_expected: expected,
                    deadline_ms,
                })
            }
        }
        self.check_restart();
    }

    pub(super) fn check_restart(&mut self) {
        let Some(r) = &self.restart.pending else {
            return;
        };
        let back = self.workers.len() as u32;
        let outcome = if back >= r.workers_expected {
            info!("restart done: {back} workers");
            None
        } else if self.now_ms >= r.deadline_ms {
            Some(RequestError::RestartIncomplete {
                expected: r.workers_expected,
                back,
            })
        } else {
            return;
        };
        let requests = self.restart.pending.take().expect("checked above").requests;
        for (client, request) in requests {
            let reply = match &outcome {
                None => ToClient::Done { request },
                Some(error) => ToClient::Failed {
                    request,
                    error: error.clone(),
                },
            };
            self.reply(&client, reply);
        }
    }
}
