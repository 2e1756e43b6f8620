//! Part: fetches. One fetch per input missing here, with the tasks waiting for it and its
//! holders, tried one after another (a holder that does not answer in time, or is lost, moves
//! it to the next one), and the requests in flight to peers with their deadlines. What to do
//! with a value that arrives, or with tasks whose input has no holder left, is for the core
//! to announce to the other parts (`inputs.rs`).

use log::debug;
use rustc_hash::FxHashMap as HashMap;

use super::InvariantViolation;
use crate::graph::Key;
use crate::protocol::WorkerAddress;

#[derive(Debug)]
struct Fetch {
    holders: Vec<WorkerAddress>,
    tried: usize,
    waiting: Vec<Key>,
    /// Holders that did not answer in time (as opposed to answering that they lack it).
    unresponsive: Vec<WorkerAddress>,
}

/// A request in flight to a peer.
#[derive(Debug)]
pub(super) struct PeerFetch {
    pub(super) address: WorkerAddress,
    pub(super) keys: Vec<Key>,
    deadline_ms: u64,
}

/// What `next_holder` decided for an input.
pub(super) enum NextHolder {
    /// Nobody waits for it any more (or it is not fetched): nothing to do.
    Idle,
    /// Ask `address` for it under `request`.
    Ask {
        address: WorkerAddress,
        request: u64,
        key: Key,
    },
    /// Every holder was tried: the tasks `waiting` for it are given up on. `holders` answered
    /// that they lack it (or were lost), `unresponsive` did not answer in time.
    GaveUp {
        waiting: Vec<Key>,
        holders: Vec<WorkerAddress>,
        unresponsive: Vec<WorkerAddress>,
    },
}

pub(super) struct Fetches {
    by_key: HashMap<Key, Fetch>,
    in_flight: HashMap<u64, PeerFetch>,
    next_request: u64,
    /// `WorkerCoreConfig::fetch_timeout_ms`.
    timeout_ms: u64,
    /// This worker's own address: never a holder to ask.
    own: WorkerAddress,
}

impl Fetches {
    pub(super) fn new(own: WorkerAddress, timeout_ms: u64) -> Fetches {
        Fetches {
            by_key: HashMap::default(),
            in_flight: HashMap::default(),
            next_request: 1,
            timeout_ms,
            own,
        }
    }

    /// `task` waits for `input`, held by `holders`. True if this starts a new fetch (for the
    /// caller to ask its first holder); otherwise the task and the holders join the fetch
    /// under way.
    pub(super) fn wait_for(&mut self, input: Key, task: &Key, holders: Vec<WorkerAddress>) -> bool {
        match self.by_key.get_mut(&input) {
            Some(f) => {
                if !f.waiting.contains(task) {
                    f.waiting.push(task.clone());
                }
                for h in holders {
                    if h != self.own && !f.holders.contains(&h) {
                        f.holders.push(h);
                    }
                }
                false
            }
            None => {
                let holders = holders.into_iter().filter(|h| *h != self.own).collect();
                self.by_key.insert(
                    input,
                    Fetch {
                        holders,
                        tried: 0,
                        waiting: vec![task.clone()],
                        unresponsive: Vec::new(),
                    },
                );
                true
            }
        }
    }

    /// Moves the fetch of `input` to its next holder (a request due by `now_ms` plus the
    /// timeout), or ends it: when none of its tasks is `alive` any more, or no holder is left.
    pub(super) fn next_holder(
        &mut self,
        input: Key,
        now_ms: u64,
        alive: impl Fn(&Key) -> bool,
    ) -> NextHolder {
        let Some(f) = self.by_key.get_mut(&input) else {
            return NextHolder::Idle;
        };
        f.waiting.retain(|k| alive(k));
        if f.waiting.is_empty() {
            self.by_key.remove(&input);
            return NextHolder::Idle;
        }
        if f.tried < f.holders.len() {
            let address = f.holders[f.tried].clone();
            f.tried += 1;
            let request = self.next_request;
            self.next_request += 1;
            self.in_flight.insert(
                request,
                PeerFetch {
                    address: address.clone(),
                    keys: vec![input.clone()],
                    deadline_ms: now_ms + self.timeout_ms,
                },
            );
            debug!("fetching {input:?} from {address}");
            return NextHolder::Ask {
                address,
                request,
                key: input,
            };
        }
        let f = self.by_key.remove(&input).expect("present above");
        NextHolder::GaveUp {
            holders: f
                .holders
                .iter()
                .filter(|h| !f.unresponsive.contains(h))
                .cloned()
                .collect(),
            unresponsive: f.unresponsive,
            waiting: f.waiting,
        }
    }

    /// The request `request` is answered (or given up): it leaves the flight. None if it
    /// timed out already, or was never asked.
    pub(super) fn take_request(&mut self, request: u64) -> Option<PeerFetch> {
        self.in_flight.remove(&request)
    }

    /// `input` arrived: its fetch ends, handing back the tasks that waited for it.
    pub(super) fn arrived(&mut self, input: &Key) -> Option<Vec<Key>> {
        self.by_key.remove(input).map(|f| f.waiting)
    }

    /// Whether a fetch of `input` is under way.
    pub(super) fn is_fetching(&self, input: &Key) -> bool {
        self.by_key.contains_key(input)
    }

    /// The requests whose deadline has passed at `now_ms`.
    pub(super) fn expired(&self, now_ms: u64) -> Vec<u64> {
        self.in_flight
            .iter()
            .filter(|(_, f)| f.deadline_ms <= now_ms)
            .map(|(r, _)| *r)
            .collect()
    }

    /// `request` was not answered in time: it leaves the flight, and its peer counts as
    /// unresponsive for each key it was asked.
    pub(super) fn time_out(&mut self, request: u64) -> Option<PeerFetch> {
        let f = self.in_flight.remove(&request)?;
        for k in &f.keys {
            if let Some(fetch) = self.by_key.get_mut(k) {
                fetch.unresponsive.push(f.address.clone());
            }
        }
        Some(f)
    }

    /// Peers are lost: no fetch will ask them, and the requests in flight to them are
    /// returned (for the caller to take and move on).
    pub(super) fn peers_lost(&mut self, addresses: &[WorkerAddress]) -> Vec<u64> {
        for f in self.by_key.values_mut() {
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
        self.in_flight
            .iter()
            .filter(|(_, f)| addresses.contains(&f.address))
            .map(|(r, _)| *r)
            .collect()
    }

    /// `task` was forgotten: it waits for nothing any more.
    pub(super) fn forget_waiter(&mut self, input: &Key, task: &Key) {
        if let Some(f) = self.by_key.get_mut(input) {
            f.waiting.retain(|k| k != task);
        }
    }

    /// The cluster restarted: every fetch and request is dropped (late answers are ignored).
    pub(super) fn clear(&mut self) {
        self.by_key.clear();
        self.in_flight.clear();
    }

    /// The earliest deadline of a request in flight.
    pub(super) fn next_deadline(&self) -> Option<u64> {
        self.in_flight.values().map(|f| f.deadline_ms).min()
    }

    /// Whether the fetch of `input` lists `task` among its waiters.
    pub(super) fn lists(&self, input: &Key, task: &Key) -> bool {
        self.by_key
            .get(input)
            .is_some_and(|f| f.waiting.contains(task))
    }

    /// Each fetch under way with the tasks waiting for it.
    pub(super) fn waiters(&self) -> impl Iterator<Item = (&Key, &[Key])> {
        self.by_key.iter().map(|(k, f)| (k, f.waiting.as_slice()))
    }

    /// The part's own invariants: a request for every fetch is in flight (or its tasks would
    /// wait forever); each request asks for something, under an id already handed out.
    pub(super) fn check(&self) -> Result<(), InvariantViolation> {
        for input in self.by_key.keys() {
            if !self.in_flight.values().any(|p| p.keys.contains(input)) {
                return Err(InvariantViolation::FetchNotInFlight {
                    input: input.clone(),
                });
            }
        }
        for (request, fetch) in &self.in_flight {
            if fetch.keys.is_empty() {
                return Err(InvariantViolation::EmptyRequest { request: *request });
            }
            if *request >= self.next_request {
                return Err(InvariantViolation::FutureRequest {
                    request: *request,
                    next: self.next_request,
                });
            }
        }
        Ok(())
    }

    /// Tests only: puts back a request taken out, to show the check catching its absence.
    #[cfg(test)]
    pub(super) fn put_back_request(&mut self, request: u64, fetch: PeerFetch) {
        self.in_flight.insert(request, fetch);
    }

    /// Tests only: overwrites the waiters of a fetch, to show the check catching it.
    #[cfg(test)]
    pub(super) fn corrupt_waiting(&mut self, input: &Key, waiting: Vec<Key>) {
        self.by_key
            .get_mut(input)
            .expect("a fetch of that input")
            .waiting = waiting;
    }
}
