//! The events part: a bounded ring of recent cluster events with typed reasons (a worker
//! joined, left, was lost with what that cost, a task rescheduled, marked bad or erred, a
//! worker retired with the data it moved), read by `Client::events`, `zask events` and the
//! dashboard (`SchedulerCore::recent_events`). Other parts record through `record`; nobody
//! else touches the ring. Times are the `now` the core was given (the core reads no clock).
//!
//! The part also keeps what the costs are computed from: how many tasks were activated so far
//! (a loss's recomputations are the activations it caused) and, per retiring worker, the
//! results only it held that had to be moved.

use std::collections::VecDeque;

use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};

use super::tasks::TaskId;
use super::violation::InvariantViolation;
use super::WorkerId;
use crate::protocol::{ClusterEvent, EventKind};

pub(super) struct Events {
    max: usize,
    ring: VecDeque<ClusterEvent>,
    /// Tasks activated (made needed: Released → Waiting/Ready) since the scheduler started.
    activated: u64,
    /// Per retiring worker: the still-needed results only it held, seen while it retired.
    to_move: HashMap<WorkerId, HashSet<TaskId>>,
}

impl Events {
    pub(super) fn new(max: usize) -> Events {
        Events {
            max,
            ring: VecDeque::new(),
            activated: 0,
            to_move: HashMap::default(),
        }
    }

    /// Records an event at `at_ms`; the oldest goes once the ring is full.
    pub(super) fn record(&mut self, at_ms: u64, what: EventKind) {
        if self.max == 0 {
            return;
        }
        if self.ring.len() >= self.max {
            self.ring.pop_front();
        }
        self.ring.push_back(ClusterEvent { at_ms, what });
    }

    /// The recent events, oldest first.
    pub(super) fn recent(&self) -> impl Iterator<Item = &ClusterEvent> {
        self.ring.iter()
    }

    /// `n` tasks were activated.
    pub(super) fn activated(&mut self, n: usize) {
        self.activated += n as u64;
    }

    /// Tasks activated so far.
    pub(super) fn activations(&self) -> u64 {
        self.activated
    }

    /// Retiring worker `w` holds these results alone; they are to be moved.
    pub(super) fn must_move(&mut self, w: WorkerId, unique: &[TaskId]) {
        self.to_move.entry(w).or_default().extend(unique);
    }

    /// `w` is gone: the results it had to move (empty if it was not retiring).
    pub(super) fn worker_gone(&mut self, w: WorkerId) -> HashSet<TaskId> {
        self.to_move.remove(&w).unwrap_or_default()
    }

    /// The part's invariant: the ring stays within its bound.
    pub(super) fn check(&self) -> Result<(), InvariantViolation> {
        if self.ring.len() > self.max {
            return Err(InvariantViolation::new(
                "events",
                format!("{} events kept, at most {}", self.ring.len(), self.max),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::WorkerAddress;

    #[test]
    fn the_ring_keeps_the_newest_events() {
        let mut events = Events::new(2);
        for i in 0..3u64 {
            events.record(
                i,
                EventKind::WorkerJoined {
                    worker: WorkerAddress::from(format!("w{i}").as_str()),
                    name: "n".into(),
                    nthreads: 1,
                },
            );
        }
        let times: Vec<u64> = events.recent().map(|e| e.at_ms).collect();
        assert_eq!(times, vec![1, 2]);
        assert!(events.check().is_ok());
    }
}
