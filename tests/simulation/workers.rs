//! Simulated worker processes: each is the shipped `WorkerRuntime` (what the worker's IO
//! thread does with each of its core's commands) over a `zask_storage` memory store, a
//! transport that hands messages to the simulated network, and a virtual job queue whose jobs
//! the simulation evaluates with the real `evaluate_owned` and completes after a random delay.

use zask::graph::Key;
use zask::protocol::codec::{encode, encode_value};
use zask::protocol::{
    ConnectionId, Frame, FromWorker, PeerReply, PeerRequest, WorkerAddress, WorkerName,
    WorkerRegistration, PROTOCOL_VERSION,
};
use zask::worker::core::{WorkerCore, WorkerCoreConfig, WorkerEvent};
use zask::worker::executor::{evaluate_owned, is_cheap, Job, JobResult, INLINE_BYTES_MAX};
use zask::worker::runtime::{JobQueue, Transport, WorkerRuntime};
use zask::worker::Registry;
use zask_storage::{Bytes, MemoryStore};

use crate::network::{Chan, Ep, Msg};
use crate::rng::Rng;
use crate::sim::Sim;
use crate::{FETCH_TIMEOUT_MS, HEARTBEAT_INTERVAL_MS, R};

/// A message a worker sent, encoded, waiting for the simulation to put it on a link.
pub(crate) enum Sent {
    ToScheduler(Vec<Frame>),
    ToPeer {
        address: WorkerAddress,
        frames: Vec<Frame>,
    },
    ReplyToPeer {
        peer: ConnectionId,
        frames: Vec<Frame>,
    },
}

/// The worker's end of the simulated network.
#[derive(Default)]
pub(crate) struct SimTransport {
    sent: Vec<Sent>,
}

fn with_header(msg: Vec<u8>, frames: Vec<Frame>) -> Vec<Frame> {
    let mut all = vec![msg];
    all.extend(frames);
    all
}

impl Transport for SimTransport {
    fn to_scheduler(&mut self, msg: &FromWorker, frames: Vec<Frame>) {
        self.sent
            .push(Sent::ToScheduler(with_header(encode(msg), frames)));
    }

    fn to_peer(&mut self, address: &WorkerAddress, msg: &PeerRequest) {
        self.sent.push(Sent::ToPeer {
            address: address.clone(),
            frames: vec![encode(msg)],
        });
    }

    fn reply_to_peer(&mut self, peer: &ConnectionId, msg: &PeerReply, frames: Vec<Bytes>) {
        let frames = frames.iter().map(|f| f.to_vec()).collect();
        self.sent.push(Sent::ReplyToPeer {
            peer: peer.clone(),
            frames: with_header(encode(msg), frames),
        });
    }
}

/// The virtual pool: jobs wait here until the simulation runs them. With a registry
/// (`Sim::inline`), cheap jobs run at once instead, on the caller's thread, by the same rule
/// as the real executor's `run_inline`.
#[derive(Default)]
pub(crate) struct SimJobs {
    jobs: Vec<Job>,
    inline: Option<Registry>,
}

impl JobQueue for SimJobs {
    fn submit(&mut self, job: Job) {
        self.jobs.push(job);
    }

    fn run_inline(&mut self, job: Job, bytes: usize) -> Result<JobResult, Job> {
        match &self.inline {
            Some(registry) if bytes <= INLINE_BYTES_MAX && is_cheap(&job.expr, registry) => {
                let result = evaluate_owned(&job.expr, job.inputs, registry);
                Ok(JobResult {
                    key: job.key,
                    result: result.map(|v| encode_value(&v)),
                })
            }
            _ => Err(job),
        }
    }
}

pub(crate) struct SimWorker {
    pub(crate) rt: WorkerRuntime<SimTransport, SimJobs>,
    pub(crate) identity: ConnectionId,
    pub(crate) address: WorkerAddress,
    pub(crate) alive: bool,
    /// When dead: do messages it sent before dying still arrive?
    pub(crate) drop_inflight: bool,
    pub(crate) rng: Rng,
    pub(crate) executions: u64,
}

impl SimWorker {
    pub(crate) fn core(&self) -> &WorkerCore {
        self.rt.core()
    }

    /// The wire keys in its store.
    pub(crate) fn stored(&self) -> Vec<Key> {
        let mut keys: Vec<Key> = self
            .rt
            .store()
            .keys()
            .expect("a memory store lists its keys")
            .iter()
            .map(|k| Key::from_store_key(k).expect("the runtime stores keys"))
            .collect();
        keys.sort();
        keys
    }
}

impl Sim {
    pub(crate) fn add_worker(&mut self, nthreads: u32) -> usize {
        let n = self.workers.len();
        let identity = ConnectionId::from(format!("w{n}"));
        let address = WorkerAddress::from(format!("sim://w{n}"));
        let config = WorkerCoreConfig {
            registration: WorkerRegistration {
                protocol_version: PROTOCOL_VERSION,
                address: address.clone(),
                name: WorkerName::from(format!("w{n}")),
                nthreads,
                memory_limit_bytes: 0,
                pid: 1000 + n as u32,
                store: "memory".into(),
                keys: vec![],
                nanny_token: None,
                runs_python: false,
            },
            heartbeat_interval_ms: HEARTBEAT_INTERVAL_MS,
            fetch_timeout_ms: FETCH_TIMEOUT_MS,
            // Longer than any partition: a worker never gives up on the scheduler here.
            death_timeout_ms: 30_000,
            max_message_bytes: u64::MAX,
        };
        let rt = WorkerRuntime::new(
            WorkerCore::new(config),
            Box::new(MemoryStore::new()),
            SimTransport::default(),
            SimJobs {
                jobs: Vec::new(),
                inline: self.inline.then(|| self.refs.registry.clone()),
            },
            false,
        );
        self.workers.push(SimWorker {
            rt,
            identity: identity.clone(),
            address: address.clone(),
            alive: true,
            drop_inflight: false,
            rng: Rng::derive(self.seed, &[200, n as u64]),
            executions: 0,
        });
        self.by_identity.insert(identity, n);
        self.by_address.insert(address, n);
        self.note(|| format!("w{n} starts with {nthreads} thread(s)"));
        let now = self.now;
        self.workers[n].rt.register(now);
        // Nothing can fail here: registering only sends.
        self.run_worker(n).expect("a new worker registers");
        n
    }

    /// Feeds an event to a live worker's runtime and carries out what follows.
    pub(crate) fn worker_event(&mut self, w: usize, event: WorkerEvent) -> R {
        let now = self.now;
        self.workers[w].rt.handle(now, event);
        self.run_worker(w)
    }

    /// The runtime carries out its core's commands; then what it sent goes on the network
    /// and the jobs it queued start.
    pub(crate) fn run_worker(&mut self, w: usize) -> R {
        if !self.workers[w].alive {
            return Ok(());
        }
        let now = self.now;
        self.workers[w]
            .rt
            .core()
            .check_invariants()
            .map_err(|e| format!("w{w}: worker invariant broken: {e}"))?;
        if let Some(reason) = self.workers[w].rt.run_commands(now) {
            return Err(format!("w{w} was told to shut down: {reason}"));
        }
        self.workers[w]
            .rt
            .core()
            .check_invariants()
            .map_err(|e| format!("w{w}: worker invariant broken after its commands: {e}"))?;
        let sent = std::mem::take(&mut self.workers[w].rt.transport_mut().sent);
        for s in sent {
            match s {
                Sent::ToScheduler(frames) => {
                    self.send(Ep::Worker(w), Ep::Scheduler, Chan::Net, frames)
                }
                Sent::ToPeer { address, frames } => match self.by_address.get(&address) {
                    Some(&b) => self.send(Ep::Worker(w), Ep::Worker(b), Chan::PeerRequest, frames),
                    None => {
                        return Err(format!("w{w} fetches from {address}, which never existed"))
                    }
                },
                Sent::ReplyToPeer { peer, frames } => {
                    let Some(&a) = self.by_identity.get(&peer) else {
                        return Err(format!("w{w} answers an unknown peer"));
                    };
                    self.send(Ep::Worker(w), Ep::Worker(a), Chan::PeerReply, frames);
                }
            }
        }
        let jobs = std::mem::take(&mut self.workers[w].rt.jobs_mut().jobs);
        for job in jobs {
            self.start_job(w, job);
        }
        let worker = &self.workers[w];
        let stored = worker.stored();
        if worker.core().stored_keys() != stored.len()
            || stored.iter().any(|k| !worker.core().holds(k))
        {
            return Err(format!(
                "w{w}: the core thinks it holds {} key(s) but the store has {stored:?}",
                worker.core().stored_keys(),
            ));
        }
        Ok(())
    }

    /// Runs a job at once with the real `evaluate_owned`; its result comes back after a
    /// random time (or `exec_ms`), as from the pool.
    fn start_job(&mut self, w: usize, job: Job) {
        self.stats.executions += 1;
        self.workers[w].executions += 1;
        let result =
            evaluate_owned(&job.expr, job.inputs, &self.refs.registry).map(|v| encode_value(&v));
        let rng = &mut self.workers[w].rng;
        let r = rng.below(100);
        let duration = if let Some(ms) = self.exec_ms {
            ms
        } else if r < 60 {
            rng.below(3)
        } else if r < 96 {
            rng.range(3, 40)
        } else {
            rng.range(100, 600)
        };
        let at = self.now + duration;
        self.enqueue(
            (Ep::Exec(w), Ep::Worker(w), Chan::Exec),
            at,
            Msg::Executed {
                key: job.key,
                result,
            },
        );
    }

    /// A job's result reaches the worker's runtime (which stores it and tells the core).
    pub(crate) fn job_done(&mut self, w: usize, r: JobResult) -> R {
        let now = self.now;
        self.workers[w].rt.job_done(now, r);
        self.run_worker(w)
    }
}
