//! The simulated network: endpoints, FIFO links with seeded random delays, partitions and
//! slow peers, and the faults, timers and completions that travel as messages on it.

use zask::graph::Key;
use zask::protocol::{Frame, TaskError};

use crate::rng::Rng;
use crate::sim::Sim;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Ep {
    Sim,
    Scheduler,
    Worker(usize),
    Client(usize),
    /// A worker's executor pool: completions come back from here.
    Exec(usize),
}

impl Ep {
    pub(crate) fn tags(self) -> [u64; 2] {
        match self {
            Ep::Sim => [0, 0],
            Ep::Scheduler => [1, 0],
            Ep::Worker(i) => [2, i as u64],
            Ep::Client(i) => [3, i as u64],
            Ep::Exec(i) => [4, i as u64],
        }
    }
}

/// One connection. Between two workers there are two: the fetching worker's DEALER to the
/// serving worker's ROUTER carries requests one way and replies the other way.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Chan {
    Timer,
    Net,
    PeerRequest,
    PeerReply,
    Exec,
    /// ZeroMQ's socket monitor: connection events, unordered with respect to messages.
    Monitor,
}

pub(crate) type LinkId = (Ep, Ep, Chan);

pub(crate) struct Link {
    pub(crate) rng: Rng,
    /// Delivery time of the last message: later messages never overtake it (per-link FIFO).
    pub(crate) last: u64,
    pub(crate) seq: u64,
    /// A partition: nothing sent before this time arrives before it.
    pub(crate) slow_until: u64,
}

#[derive(Debug)]
pub(crate) enum Msg {
    Frames(Vec<Frame>),
    Executed {
        key: Key,
        result: Result<Frame, TaskError>,
    },
    Wake,
    Fault(Fault),
    /// The scheduler's worker socket saw a connection drop.
    ConnectionLost,
}

#[derive(Clone, Debug)]
pub(crate) enum Fault {
    /// Crash the `pick`-th live worker; its in-flight messages vanish if `drop_inflight`.
    Crash {
        pick: u64,
        drop_inflight: bool,
        noticed: bool,
        rejoin_after: Option<u64>,
    },
    CrashAll {
        rejoin_after: u64,
    },
    /// The worker says goodbye and stops.
    Leave {
        pick: u64,
    },
    Join {
        nthreads: u32,
    },
    /// Messages between the worker and the scheduler are held for `ms` (`dirs`: 0 both ways,
    /// 1 worker→scheduler only, 2 scheduler→worker only).
    Partition {
        pick: u64,
        ms: u64,
        dirs: u8,
    },
    /// The worker answers peers only after `ms`.
    SlowPeer {
        pick: u64,
        ms: u64,
    },
    /// The scheduler process dies; a new one starts `down_ms` later on the same ports (with
    /// the journal when journaling is on). Messages on the wire are lost; messages sent while
    /// it is down wait in the senders' queues, as ZeroMQ does.
    SchedulerRestart {
        down_ms: u64,
    },
    SchedulerUp,
    /// The fault phase is over: make sure some worker is there to finish the work.
    End,
}

impl Sim {
    // ---- network ----

    pub(crate) fn link(&mut self, id: LinkId) -> &mut Link {
        let seed = self.seed;
        self.links.entry(id).or_insert_with(|| {
            let (s, d) = (id.0.tags(), id.1.tags());
            Link {
                rng: Rng::derive(seed, &[s[0], s[1], d[0], d[1], id.2 as u64]),
                last: 0,
                seq: 0,
                slow_until: 0,
            }
        })
    }

    pub(crate) fn enqueue(&mut self, id: LinkId, at: u64, msg: Msg) {
        let link = self.link(id);
        let seq = link.seq;
        link.seq += 1;
        self.queue.insert((at, id, seq), msg);
    }

    /// Sends on a FIFO link with a random delay.
    pub(crate) fn send(&mut self, src: Ep, dst: Ep, chan: Chan, frames: Vec<Frame>) {
        let now = self.now;
        let in_faults = now < self.fault_end;
        let peer_slow = match (src, chan) {
            (Ep::Worker(w), Chan::PeerReply) => self.peer_slow_until.get(&w).copied(),
            _ => None,
        };
        let down_until = self.sched_down_until;
        let link = self.link((src, dst, chan));
        let r = link.rng.below(1000);
        let delay = if r < 700 {
            link.rng.below(3)
        } else if r < 950 {
            link.rng.range(3, 20)
        } else if r < 995 || !in_faults {
            link.rng.range(20, 60)
        } else if matches!(chan, Chan::PeerRequest | Chan::PeerReply) {
            // Longer than the fetch timeout: the fetching worker tries the next holder.
            link.rng.range(150, 450)
        } else {
            // A late heartbeat, or a late answer to a probe, never loses a worker: two of
            // these are shorter than the probe and heartbeat timeouts.
            link.rng.range(60, 200)
        };
        let mut at = (now + delay).max(link.last).max(link.slow_until);
        if let Some(until) = peer_slow {
            at = at.max(until);
        }
        if let (Ep::Scheduler, Some(until)) = (dst, down_until) {
            at = at.max(until);
        }
        link.last = at;
        self.stats.messages += 1;
        self.enqueue((src, dst, chan), at, Msg::Frames(frames));
    }

    pub(crate) fn wake_client(&mut self, c: usize, at: u64) {
        self.enqueue((Ep::Sim, Ep::Client(c), Chan::Timer), at, Msg::Wake);
    }

    pub(crate) fn schedule_fault(&mut self, at: u64, f: Fault) {
        self.enqueue((Ep::Sim, Ep::Sim, Chan::Timer), at, Msg::Fault(f));
    }

    pub(crate) fn hash_frames(&mut self, id: LinkId, frames: &[Frame]) {
        let mut h = self.trace_hash;
        let mut eat = |x: u64| {
            h ^= x;
            h = h.wrapping_mul(0x0100_0000_01b3);
        };
        eat(self.now);
        let (s, d) = (id.0.tags(), id.1.tags());
        eat(s[0] << 32 | s[1]);
        eat(d[0] << 32 | d[1]);
        for f in frames {
            eat(f.len() as u64);
            for chunk in f.chunks(8) {
                let mut b = [0u8; 8];
                b[..chunk.len()].copy_from_slice(chunk);
                eat(u64::from_le_bytes(b));
            }
        }
        self.trace_hash = h;
    }
}
