//! The scatters part: values clients send to be stored on workers. A scatter spreads its
//! values over the workers holding the fewest bytes (`PutData`), and once every worker has
//! stored its share (`Stored`) each value becomes a named task in memory. Scatters that arrive
//! while no worker is connected wait here.

use std::collections::VecDeque;

use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};

use log::info;

use super::tasks::wire_key;
use super::{JournalOp, SchedulerCore, WorkerId};
use crate::graph::Key;
use crate::protocol::codec::{encode_plain, spec_hash, validate_value};
use crate::protocol::{ConnectionId, Frame, RequestError, RequestId, ToClient, ToWorker};

/// A client's scatter: keys and their encoded values, as they arrived.
pub(super) struct PendingScatter {
    pub(super) client: ConnectionId,
    pub(super) request: RequestId,
    pub(super) keys: Vec<Key>,
    pub(super) values: Vec<Frame>,
}

/// A scatter whose values were sent to workers (`PutData`), waiting for each to say `Stored`.
pub(super) struct PutRequest {
    pub(super) scatter: PendingScatter,
    pub(super) placement: Vec<Placed>,
    pending_workers: HashSet<WorkerId>,
}

#[derive(Default)]
pub(super) struct Scatters {
    /// Puts sent to workers, by request id.
    puts: HashMap<u64, PutRequest>,
    /// Scatters that arrived while no worker was connected.
    waiting: VecDeque<PendingScatter>,
    /// Counts scatters, for their wire keys.
    next_scatter: u64,
}

impl Scatters {
    /// The scatters that waited for a worker, to start now that one is connected.
    pub(super) fn take_waiting(&mut self) -> Vec<PendingScatter> {
        self.waiting.drain(..).collect()
    }

    /// Every scatter, waiting or in flight (a restart fails them all).
    pub(super) fn take_all(&mut self) -> Vec<PendingScatter> {
        self.waiting
            .drain(..)
            .chain(self.puts.drain().map(|(_, p)| p.scatter))
            .collect()
    }

    pub(super) fn has_waiting(&self) -> bool {
        !self.waiting.is_empty()
    }

    /// The client's scatters not answered yet.
    pub(super) fn requests_of<'a>(
        &'a self,
        client: &'a ConnectionId,
    ) -> impl Iterator<Item = RequestId> + 'a {
        self.waiting
            .iter()
            .chain(self.puts.values().map(|p| &p.scatter))
            .filter(move |s| s.client == *client)
            .map(|s| s.request)
    }

    /// Worker `w` is gone: the puts that placed values on it, to release and start again.
    pub(super) fn worker_lost(&mut self, w: WorkerId) -> Vec<PutRequest> {
        let failed: Vec<u64> = self
            .puts
            .iter()
            .filter(|(_, p)| {
                p.pending_workers.contains(&w) || p.placement.iter().any(|x| x.worker == w)
            })
            .map(|(r, _)| *r)
            .collect();
        failed
            .into_iter()
            .filter_map(|r| self.puts.remove(&r))
            .collect()
    }
}

impl SchedulerCore {
    pub(super) fn start_scatter(&mut self, s: PendingScatter) {
        if s.keys.len() != s.values.len() {
            let error = RequestError::Protocol {
                message: format!("{} keys but {} values", s.keys.len(), s.values.len()),
            };
            self.reply(
                &s.client,
                ToClient::Failed {
                    request: s.request,
                    error,
                },
            );
            return;
        }
        if let Some(bad) = s.values.iter().position(|v| validate_value(v).is_err()) {
            let error = RequestError::Protocol {
                message: format!("value for {:?} is not a valid encoded value", s.keys[bad]),
            };
            self.reply(
                &s.client,
                ToClient::Failed {
                    request: s.request,
                    error,
                },
            );
            return;
        }
        // Spread keys over workers holding the fewest bytes.
        let mut loads: Vec<(u64, WorkerId)> =
            self.workers.iter().map(|(id, w)| (w.nbytes, id)).collect();
        if loads.is_empty() {
            info!("scatter waits: no workers connected");
            self.scatters.waiting.push_back(s);
            return;
        }
        let request = self.outbox.next_request_id();
        let mut per_worker: HashMap<WorkerId, (Vec<Key>, Vec<Frame>)> = HashMap::default();
        let mut placement = Vec::new();
        // Tokens this scatter has used (its values are not in the task table yet).
        let mut taken: HashSet<u64> = HashSet::default();
        for (k, v) in s.keys.iter().zip(&s.values) {
            loads.sort();
            let (bytes, w) = &mut loads[0];
            *bytes += v.len() as u64;
            // Each scatter is a new value: a wire key never used before (in this process or,
            // through the instance token, an earlier one whose workers may still hold values).
            self.scatters.next_scatter += 1;
            let mut token =
                scatter_token(k, self.config.instance_token, self.scatters.next_scatter);
            while self.tasks.id(&wire_key(token)).is_some() || !taken.insert(token) {
                token = token.wrapping_add(1);
            }
            let key = wire_key(token);
            let entry = per_worker.entry(*w).or_default();
            entry.0.push(key.clone());
            entry.1.push(v.clone());
            placement.push(Placed {
                name: k.clone(),
                key,
                worker: *w,
                nbytes: v.len() as u64,
            });
        }
        let pending_workers = per_worker.keys().copied().collect();
        for (w, (keys, frames)) in per_worker {
            self.workers
                .push(w, ToWorker::PutData { request, keys }, frames);
        }
        self.scatters.puts.insert(
            request,
            PutRequest {
                scatter: s,
                placement,
                pending_workers,
            },
        );
    }

    pub(super) fn put_stored(&mut self, w: WorkerId, request: u64) {
        let Some(put) = self.scatters.puts.get_mut(&request) else {
            return;
        };
        put.pending_workers.remove(&w);
        if !put.pending_workers.is_empty() {
            return;
        }
        let put = self.scatters.puts.remove(&request).expect("present above");
        for placed in put.placement {
            let t = match self.tasks.id(&placed.key) {
                Some(t) => t,
                None => self
                    .tasks
                    .insert(placed.name.clone(), placed.key.clone(), None),
            };
            let (client, now) = (&put.scatter.client, self.now_ms);
            self.stories
                .scattered(&placed.name, &placed.key, client, now);
            self.arrived_in_memory(t, placed.worker, placed.nbytes);
            self.journal(JournalOp::PutScattered {
                name: placed.name.clone(),
                key: placed.key,
                nbytes: placed.nbytes,
                owner: put.scatter.client.clone(),
            });
            self.name_value(placed.name, t, Some(put.scatter.client.clone()));
        }
        let s = put.scatter;
        self.reply(
            &s.client,
            ToClient::Scattered {
                request: s.request,
                keys: s.keys,
            },
        );
    }
}

/// Where one scattered value went.
pub(super) struct Placed {
    name: Key,
    pub(super) key: Key,
    pub(super) worker: WorkerId,
    nbytes: u64,
}

fn scatter_token(name: &Key, instance: u64, sequence: u64) -> u64 {
    let mut bytes = encode_plain(name);
    bytes.extend_from_slice(b"scatter");
    bytes.extend_from_slice(&instance.to_le_bytes());
    bytes.extend_from_slice(&sequence.to_le_bytes());
    spec_hash(&bytes)
}
