//! The runner: the scheduler core (driven as src/scheduler/server.rs drives it: events in,
//! batches of commands out, the journal made durable before the batch's messages leave), the
//! main loop over the virtual clock, and the end-of-run checks (liveness, leaks).

use std::collections::{BTreeMap, VecDeque};

use zask::protocol::codec::{encode, split, split_peer_reply};
use zask::protocol::{
    ClientRole, ConnectionId, FromClient, FromWorker, PeerRequest, ToWorker, WorkerAddress,
};
use zask::scheduler::core::{Command, CoreConfig, Event, SchedulerCore};
use zask::scheduler::journal::{JournalWrite, MemoryJournal};
use zask::worker::core::WorkerEvent;
use zask::worker::executor::JobResult;

use crate::clients::SimClient;
use crate::network::{Chan, Ep, Link, LinkId, Msg};
use crate::reference::RefDb;
use crate::rng::Rng;
use crate::workers::SimWorker;
use crate::{ALLOWED_FAILURES, LIVENESS_MS, MAX_EVENTS, PROBE_TIMEOUT_MS, QUIET_MS, R};

#[derive(Default, Debug, Clone)]
pub(crate) struct Stats {
    pub(crate) events: u64,
    pub(crate) messages: u64,
    pub(crate) executions: u64,
    pub(crate) requests: u64,
    pub(crate) crashes: u32,
    /// `SchedulerRestarted` for requests already answered (pings crossing answers).
    pub(crate) late_restarted: u64,
    /// Journal operations applied but not flushed when the scheduler died (lost with it).
    pub(crate) journal_ops_lost: u64,
    /// Progress reports the clients received (and checked).
    pub(crate) progress_reports: u64,
}

pub(crate) struct Sim {
    pub(crate) seed: u64,
    pub(crate) now: u64,
    pub(crate) fault_end: u64,
    pub(crate) queue: BTreeMap<(u64, LinkId, u64), Msg>,
    pub(crate) links: BTreeMap<LinkId, Link>,
    pub(crate) sched: SchedulerCore,
    pub(crate) sched_config: CoreConfig,
    pub(crate) sched_rng: Rng,
    /// Decides whether a scheduler crash comes in the middle of a journal batch.
    pub(crate) crash_rng: Rng,
    /// The scheduler dies (down this long) after applying its next batch's journal
    /// operations, before flushing them and before any of the batch's messages leaves.
    pub(crate) dies_mid_batch: Option<u64>,
    /// While the scheduler is down, nothing reaches it before this time.
    pub(crate) sched_down_until: Option<u64>,
    /// When schedulers died.
    pub(crate) sched_restarts: Vec<u64>,
    pub(crate) journal: MemoryJournal,
    pub(crate) workers: Vec<SimWorker>,
    pub(crate) by_identity: BTreeMap<ConnectionId, usize>,
    pub(crate) by_address: BTreeMap<WorkerAddress, usize>,
    pub(crate) clients: Vec<SimClient>,
    pub(crate) refs: RefDb,
    /// Workers crashed, partitioned or gone: each may have cost data and a "suspicious" count.
    pub(crate) workers_lost: u32,
    pub(crate) peer_slow_until: BTreeMap<usize, u64>,
    pub(crate) stats: Stats,
    pub(crate) trace: Option<VecDeque<String>>,
    pub(crate) trace_hash: u64,
    pub(crate) clients_done_at: Option<u64>,
    /// Every task takes exactly this long (scenarios), instead of a random time.
    pub(crate) exec_ms: Option<u64>,
    /// Workers run cheap tasks on their IO thread at once (the executor's `run_inline`),
    /// merging the reports of a run of them; otherwise every task goes to the virtual pool.
    pub(crate) inline: bool,
    /// The role every client's messages carry: operators by default (as every connection is
    /// without authentication); plain clients where a test says so.
    pub(crate) client_role: ClientRole,
}

impl Sim {
    pub(crate) fn new(seed: u64, config: CoreConfig, fault_end: u64) -> Sim {
        Sim {
            seed,
            now: 0,
            fault_end,
            queue: BTreeMap::new(),
            links: BTreeMap::new(),
            sched: SchedulerCore::new(config.clone()),
            sched_config: config,
            sched_rng: Rng::derive(seed, &[100]),
            crash_rng: Rng::derive(seed, &[300]),
            dies_mid_batch: None,
            sched_down_until: None,
            sched_restarts: Vec::new(),
            journal: MemoryJournal::new(),
            workers: Vec::new(),
            by_identity: BTreeMap::new(),
            by_address: BTreeMap::new(),
            clients: Vec::new(),
            refs: RefDb::new(),
            workers_lost: 0,
            peer_slow_until: BTreeMap::new(),
            stats: Stats::default(),
            trace: None,
            trace_hash: 0xcbf2_9ce4_8422_2325,
            clients_done_at: None,
            exec_ms: None,
            inline: false,
            client_role: ClientRole::Operator,
        }
    }

    pub(crate) fn config(
        heartbeat_timeout_ms: u64,
        worker_queue_extra: u32,
        journal: bool,
    ) -> CoreConfig {
        CoreConfig {
            journal,
            heartbeat_timeout_ms,
            probe_timeout_ms: PROBE_TIMEOUT_MS,
            worker_queue_extra,
            allowed_failures: ALLOWED_FAILURES,
            ..CoreConfig::default()
        }
    }

    pub(crate) fn note(&mut self, f: impl FnOnce() -> String) {
        if let Some(t) = &mut self.trace {
            if t.len() >= 20_000 {
                t.pop_front();
            }
            t.push_back(format!("{:>6} {}", self.now, f()));
        }
    }

    // ---- the main loop ----

    pub(crate) fn next_time(&self) -> u64 {
        let mut t = u64::MAX;
        if let Some(((at, _, _), _)) = self.queue.first_key_value() {
            t = t.min(*at);
        }
        if self.sched_down_until.is_none() {
            if let Some(d) = self.sched.next_deadline() {
                t = t.min(d);
            }
        }
        for w in &self.workers {
            if w.alive {
                t = t.min(w.core().next_deadline());
            }
        }
        t.max(self.now)
    }

    /// Delivers everything due at the next instant, then lets time pass for every core.
    pub(crate) fn step(&mut self) -> R {
        let t = self.next_time();
        if t == u64::MAX {
            return Err("nothing left to happen, ever".into());
        }
        self.now = t;
        while let Some(entry) = self.queue.first_entry() {
            if entry.key().0 > t {
                break;
            }
            let ((_, id, _), msg) = entry.remove_entry();
            self.stats.events += 1;
            if self.stats.events > MAX_EVENTS {
                return Err(format!("more than {MAX_EVENTS} events: livelock?"));
            }
            self.deliver(id, msg)?;
        }
        for w in 0..self.workers.len() {
            if self.workers[w].alive && self.workers[w].core().next_deadline() <= t {
                self.workers[w].rt.tick(t);
                self.run_worker(w)?;
            }
        }
        if self.sched_down_until.is_some() {
            return Ok(());
        }
        self.sched.tick(t);
        self.flush_scheduler()
    }

    pub(crate) fn deliver(&mut self, id: LinkId, msg: Msg) -> R {
        if let Msg::Frames(frames) = &msg {
            self.hash_frames(id, frames);
        }
        match (id.0, id.1, msg) {
            (Ep::Sim, Ep::Sim, Msg::Fault(f)) => {
                self.note(|| format!("fault {f:?}"));
                self.apply_fault(f)
            }
            (Ep::Sim, Ep::Client(c), Msg::Wake) => self.client_poll(c),
            (Ep::Worker(w), Ep::Scheduler, Msg::ConnectionLost) => {
                self.note(|| format!("scheduler: the connection of w{w} dropped"));
                self.sched.handle(self.now, Event::WorkerConnectionLost);
                self.after_scheduler_event()
            }
            (Ep::Worker(w), Ep::Scheduler, Msg::Frames(frames)) => {
                if !self.workers[w].alive && self.workers[w].drop_inflight {
                    return Ok(());
                }
                let (msg, frames) = split::<FromWorker>(frames, |m| match m {
                    FromWorker::Finished(done) => done.iter().filter(|f| f.has_value).count(),
                    FromWorker::Data { found, .. } => found.len(),
                    _ => 0,
                })
                .map_err(|e| format!("scheduler cannot decode a message from w{w}: {e}"))?;
                self.note(|| format!("w{w} -> scheduler: {msg:?}"));
                let identity = self.workers[w].identity.clone();
                self.sched.handle(
                    self.now,
                    Event::FromWorker {
                        identity,
                        msg,
                        frames,
                    },
                );
                self.after_scheduler_event()
            }
            (Ep::Client(c), Ep::Scheduler, Msg::Frames(frames)) => {
                let (msg, frames) = split::<FromClient>(frames, |m| match m {
                    FromClient::Scatter { keys, .. } => keys.len(),
                    _ => 0,
                })
                .map_err(|e| format!("scheduler cannot decode a message from c{c}: {e}"))?;
                self.note(|| format!("c{c} -> scheduler: {}", short_client_msg(&msg)));
                let identity = self.clients[c].identity.clone();
                self.sched.handle(
                    self.now,
                    Event::FromClient {
                        identity,
                        role: self.client_role,
                        msg,
                        frames,
                    },
                );
                self.after_scheduler_event()
            }
            (Ep::Scheduler, Ep::Worker(w), Msg::Frames(frames)) => {
                if !self.workers[w].alive {
                    return Ok(());
                }
                let (msg, frames) = split::<ToWorker>(frames, |m| match m {
                    ToWorker::PutData { keys, .. } => keys.len(),
                    _ => 0,
                })
                .map_err(|e| format!("w{w} cannot decode a message from the scheduler: {e}"))?;
                self.note(|| format!("scheduler -> w{w}: {}", short_worker_msg(&msg)));
                self.worker_event(w, WorkerEvent::FromScheduler { msg, frames })
            }
            (Ep::Scheduler, Ep::Client(c), Msg::Frames(frames)) => self.client_receive(c, frames),
            (Ep::Worker(a), Ep::Worker(b), Msg::Frames(frames)) if id.2 == Chan::PeerRequest => {
                if !self.workers[b].alive
                    || (!self.workers[a].alive && self.workers[a].drop_inflight)
                {
                    return Ok(());
                }
                let (msg, _) = split::<PeerRequest>(frames, |_| 0)
                    .map_err(|e| format!("w{b} cannot decode a peer request: {e}"))?;
                self.note(|| format!("w{a} -> w{b}: {msg:?}"));
                let peer = self.workers[a].identity.clone();
                self.worker_event(b, WorkerEvent::FromPeer { peer, msg })
            }
            (Ep::Worker(b), Ep::Worker(a), Msg::Frames(frames)) if id.2 == Chan::PeerReply => {
                if !self.workers[a].alive
                    || (!self.workers[b].alive && self.workers[b].drop_inflight)
                {
                    return Ok(());
                }
                let (msg, frames) = split_peer_reply(frames, u64::MAX)
                    .map_err(|e| format!("w{a} cannot decode a peer reply: {e}"))?;
                self.note(|| format!("w{b} -> w{a}: {msg:?}"));
                let address = self.workers[b].address.clone();
                let event = WorkerEvent::PeerAnswered {
                    address,
                    msg,
                    frames,
                };
                self.worker_event(a, event)
            }
            (Ep::Exec(w), Ep::Worker(_), Msg::Executed { key, result }) => {
                if !self.workers[w].alive {
                    return Ok(());
                }
                self.note(|| format!("w{w} executed {key:?}: ok {}", result.is_ok()));
                self.job_done(w, JobResult { key, result })
            }
            (s, d, m) => Err(format!("simulator bug: {m:?} on link {s:?} -> {d:?}")),
        }
    }

    pub(crate) fn after_scheduler_event(&mut self) -> R {
        self.sched
            .check_invariants()
            .map_err(|e| format!("scheduler invariant broken (mid-batch): {e}"))?;
        // The IO layer batches events; sometimes flush after one, sometimes after several.
        if self.sched_rng.chance(50) {
            self.flush_scheduler()?;
        }
        Ok(())
    }

    pub(crate) fn flush_scheduler(&mut self) -> R {
        let commands = self.sched.take_commands();
        self.sched
            .check_invariants()
            .map_err(|e| format!("scheduler invariant broken: {e}"))?;
        // As the scheduler's IO loop does: the batch's journal operations are applied and
        // flushed before any of its messages leaves.
        let mut wrote = false;
        for cmd in &commands {
            if let Command::Journal(op) = cmd {
                if !self.sched_config.journal {
                    return Err(format!("a journal operation with journaling off: {op:?}"));
                }
                self.note(|| format!("journal: {op:?}"));
                self.journal
                    .apply(op)
                    .map_err(|e| format!("journal: {e}"))?;
                wrote = true;
            }
        }
        if wrote {
            if let Some(down_ms) = self.dies_mid_batch.take() {
                let lost = commands
                    .iter()
                    .filter(|c| matches!(c, Command::Journal(_)))
                    .count();
                self.stats.journal_ops_lost += lost as u64;
                self.note(|| {
                    format!("the scheduler dies before flushing {lost} journal operation(s)")
                });
                self.scheduler_dies(down_ms);
                return Ok(());
            }
            self.journal.flush().map_err(|e| format!("journal: {e}"))?;
        }
        for cmd in commands {
            match cmd {
                Command::ToWorker {
                    identity,
                    msg,
                    frames,
                } => {
                    let Some(&w) = self.by_identity.get(&identity) else {
                        return Err(format!(
                            "scheduler wrote to an identity no worker ever had: {:?}",
                            identity
                        ));
                    };
                    let mut all = vec![encode(&msg)];
                    all.extend(frames);
                    self.send(Ep::Scheduler, Ep::Worker(w), Chan::Net, all);
                }
                Command::ToClient {
                    identity,
                    msg,
                    frames,
                } => {
                    let Some(c) = self.clients.iter().position(|c| c.identity == identity) else {
                        return Err("scheduler wrote to an unknown client".into());
                    };
                    let mut all = vec![encode(&msg)];
                    all.extend(frames);
                    self.send(Ep::Scheduler, Ep::Client(c), Chan::Net, all);
                }
                // Made durable above, before anything of the batch left.
                Command::Journal(_) => {}
                #[allow(unreachable_patterns)]
                other => return Err(format!("the simulator does not know {other:?}")),
            }
        }
        Ok(())
    }

    /// Runs until `done` holds; false if `limit` (virtual ms) came first.
    pub(crate) fn run_until(
        &mut self,
        limit: u64,
        done: impl Fn(&Sim) -> bool,
    ) -> Result<bool, String> {
        loop {
            if done(self) {
                return Ok(true);
            }
            if self.next_time() > limit {
                self.now = self.now.max(limit);
                return Ok(false);
            }
            self.step()?;
        }
    }

    /// Runs to the end: every client done (liveness), then quiet, then no leaks anywhere.
    pub(crate) fn finish(&mut self) -> R {
        let deadline = self.fault_end + LIVENESS_MS;
        if !self.run_until(deadline, |s| s.clients_finished())? {
            return Err(format!(
                "liveness: not done {LIVENESS_MS} ms after the faults stopped: {}",
                self.describe_pending()
            ));
        }
        self.clients_done_at = Some(self.now);
        for (i, c) in self.clients.iter().enumerate() {
            // A welcome on the wire when the scheduler died is lost.
            if !c.gone && c.welcomes != c.hellos && self.sched_restarts.is_empty() {
                return Err(format!(
                    "c{i}: {} hello(s), {} welcome(s)",
                    c.hellos, c.welcomes
                ));
            }
        }
        let quiet_until = self.now + QUIET_MS;
        self.run_until(quiet_until, |_| false)?;
        self.check_no_leaks()
    }

    pub(crate) fn check_no_leaks(&self) -> R {
        for (i, w) in self.workers.iter().enumerate() {
            if !w.alive {
                continue;
            }
            if !w.rt.store().is_empty()
                || w.core().stored_keys() != 0
                || w.core().pending_tasks() != 0
            {
                return Err(format!(
                    "leak: after quiescence w{i} still stores {:?} ({} per its core) and has {} pending task(s); the scheduler knows {} task(s)",
                    w.stored(),
                    w.core().stored_keys(),
                    w.core().pending_tasks(),
                    self.sched.task_count()
                ));
            }
        }
        let recovered = self
            .journal
            .load()
            .map_err(|e| format!("the journal cannot be read: {e}"))?;
        if !recovered.computations.is_empty() || !recovered.scattered.is_empty() {
            return Err(format!(
                "leak: after quiescence the journal still holds graphs {:?} and scattered keys {:?}",
                recovered
                    .computations
                    .iter()
                    .map(|(c, r, _)| (c.to_string(), r))
                    .collect::<Vec<_>>(),
                recovered.scattered
            ));
        }
        if self.sched.task_count() != 0 {
            return Err(format!(
                "leak: after quiescence the scheduler still knows {} task(s): {}",
                self.sched.task_count(),
                self.describe_pending()
            ));
        }
        Ok(())
    }
}

pub(crate) fn short_client_msg(m: &FromClient) -> String {
    match m {
        FromClient::Submit {
            request,
            graph,
            outputs,
            keep_results,
            ..
        } => format!(
            "Submit {{ request: {request}, {} keys, outputs: {outputs:?}, keep: {keep_results} }}",
            graph.len()
        ),
        other => format!("{other:?}"),
    }
}

pub(crate) fn short_worker_msg(m: &ToWorker) -> String {
    match m {
        ToWorker::Compute(ts) => format!(
            "Compute {:?}",
            ts.iter()
                .map(|t| (&t.key, &t.dependencies))
                .collect::<Vec<_>>()
        ),
        other => format!("{other:?}"),
    }
}
