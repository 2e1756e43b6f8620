//! Membership and fault injection: crashes, graceful leaves, partitions, slow peers,
//! scheduler crashes and restarts (with the journal's crash semantics).

use zask::protocol::codec::encode;
use zask::protocol::FromWorker;
use zask::scheduler::core::{Recovered, SchedulerCore};

use crate::network::{Chan, Ep, Fault, Msg};
use crate::sim::Sim;
use crate::{HEARTBEAT_INTERVAL_MS, HEARTBEAT_TIMEOUT_MS, R};

impl Sim {
    // ---- membership ----

    pub(crate) fn live_workers(&self) -> Vec<usize> {
        (0..self.workers.len())
            .filter(|&w| self.workers[w].alive)
            .collect()
    }

    pub(crate) fn crash(&mut self, w: usize, drop_inflight: bool, noticed: bool) {
        if !self.workers[w].alive {
            return;
        }
        self.note(|| format!("w{w} CRASHES (in-flight messages dropped: {drop_inflight})"));
        let worker = &mut self.workers[w];
        worker.alive = false;
        worker.drop_inflight = drop_inflight;
        worker.rt.clear_store();
        self.workers_lost += 1;
        self.stats.crashes += 1;
        // A killed process closes its connections, which the scheduler notices; a hung or
        // unplugged machine does not.
        if noticed {
            self.connection_lost(w);
        }
    }

    pub(crate) fn connection_lost(&mut self, w: usize) {
        let id = (Ep::Worker(w), Ep::Scheduler, Chan::Monitor);
        let delay = self.link(id).rng.range(0, 20);
        let at = self.now + delay;
        self.enqueue(id, at, Msg::ConnectionLost);
    }

    pub(crate) fn leave(&mut self, w: usize) {
        if !self.workers[w].alive {
            return;
        }
        self.note(|| format!("w{w} leaves"));
        self.send(
            Ep::Worker(w),
            Ep::Scheduler,
            Chan::Net,
            vec![encode(&FromWorker::Goodbye)],
        );
        let worker = &mut self.workers[w];
        worker.alive = false;
        worker.drop_inflight = false;
        worker.rt.clear_store();
        self.workers_lost += 1;
        self.connection_lost(w);
    }

    pub(crate) fn partition(&mut self, w: usize, ms: u64, dirs: u8) {
        if !self.workers[w].alive {
            return;
        }
        self.note(|| format!("w{w} partitioned from the scheduler for {ms} ms (dirs {dirs})"));
        let until = self.now + ms;
        if dirs != 2 {
            let l = self.link((Ep::Worker(w), Ep::Scheduler, Chan::Net));
            l.slow_until = l.slow_until.max(until);
        }
        if dirs != 1 {
            let l = self.link((Ep::Scheduler, Ep::Worker(w), Chan::Net));
            l.slow_until = l.slow_until.max(until);
        }
        // Long enough to miss the heartbeat timeout or a probe (with margin for delays).
        if ms + HEARTBEAT_INTERVAL_MS + 100 >= HEARTBEAT_TIMEOUT_MS {
            self.workers_lost += 1;
        }
    }

    /// The scheduler process dies; a new one starts `down_ms` later on the same ports (with
    /// the journal when journaling is on).
    pub(crate) fn scheduler_dies(&mut self, down_ms: u64) {
        self.note(|| format!("the scheduler DIES; back in {down_ms} ms"));
        self.sched_restarts.push(self.now);
        // What it had not flushed is gone from its journal.
        self.journal.crash();
        // What was on the wire to or from it is gone.
        self.queue
            .retain(|(_, (src, dst, _), _), _| *src != Ep::Scheduler && *dst != Ep::Scheduler);
        let up = self.now + down_ms;
        self.sched_down_until = Some(up);
        self.schedule_fault(up, Fault::SchedulerUp);
    }

    pub(crate) fn apply_fault(&mut self, f: Fault) -> R {
        let live = self.live_workers();
        let pick = |p: u64| -> Option<usize> {
            if live.is_empty() {
                None
            } else {
                Some(live[(p % live.len() as u64) as usize])
            }
        };
        match f {
            Fault::Crash {
                pick: p,
                drop_inflight,
                noticed,
                rejoin_after,
            } => {
                if let Some(w) = pick(p) {
                    self.crash(w, drop_inflight, noticed);
                }
                if let Some(after) = rejoin_after {
                    let at = self.now + after;
                    self.schedule_fault(at, Fault::Join { nthreads: 2 });
                }
            }
            Fault::CrashAll { rejoin_after } => {
                for w in live.clone() {
                    self.crash(w, true, true);
                }
                let at = self.now + rejoin_after;
                self.schedule_fault(at, Fault::Join { nthreads: 1 });
            }
            Fault::Leave { pick: p } => {
                if let Some(w) = pick(p) {
                    self.leave(w);
                }
            }
            Fault::Join { nthreads } => {
                self.add_worker(nthreads);
            }
            Fault::Partition { pick: p, ms, dirs } => {
                if let Some(w) = pick(p) {
                    self.partition(w, ms, dirs);
                }
            }
            Fault::SlowPeer { pick: p, ms } => {
                if let Some(w) = pick(p) {
                    self.note(|| format!("w{w} answers peers slowly for {ms} ms"));
                    self.peer_slow_until.insert(w, self.now + ms);
                }
            }
            Fault::SchedulerRestart { down_ms } => {
                if self.sched_down_until.is_some() || self.dies_mid_batch.is_some() {
                    return Ok(());
                }
                if self.sched_config.journal && self.crash_rng.chance(50) {
                    self.note(|| {
                        "the scheduler will die while writing its next journal batch".into()
                    });
                    self.dies_mid_batch = Some(down_ms);
                } else {
                    self.scheduler_dies(down_ms);
                }
            }
            Fault::SchedulerUp => {
                self.sched_down_until = None;
                self.sched = SchedulerCore::new(self.sched_config.clone());
                if self.sched_config.journal {
                    let recovered = self.journal.load().map_err(|e| {
                        format!("the restarted scheduler cannot read its journal: {e}")
                    })?;
                    self.note(|| {
                        format!(
                            "the scheduler restarts with {} graph(s) and {} scattered key(s) in its journal",
                            recovered.computations.len(),
                            recovered.scattered.len()
                        )
                    });
                    if recovered != Recovered::default() {
                        self.sched.recover(self.now, recovered);
                    }
                } else {
                    self.note(|| "the scheduler restarts, with no journal".into());
                }
            }
            Fault::End => {
                self.note(|| "fault phase over".into());
                if let Some(down_ms) = self.dies_mid_batch.take() {
                    self.scheduler_dies(down_ms);
                }
                if live.is_empty() {
                    self.add_worker(2);
                }
            }
        }
        Ok(())
    }
}
