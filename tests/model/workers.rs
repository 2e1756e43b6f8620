//! Model workers: what a worker process does, seen from the scheduler. They answer
//! `ToWorker` messages, run tasks by decoding the spec the scheduler forwarded and evaluating
//! it with the reference functions, fetch dependencies from the holders they are told about
//! (reading the peer's store directly: a fetch is instantaneous, but the holder must be alive
//! and still have the value) and fail in the ways real workers fail.

use std::collections::{BTreeMap, VecDeque};

use zask::graph::{Expr, Key};
use zask::protocol::codec::{decode_plain, decode_value, encode_value};
use zask::protocol::{
    ComputeTask, ConnectionId, ErredTask, FinishedTask, Frame, FromWorker, TaskError,
    TaskErrorKind, ToWorker, WorkerAddress, WorkerName, WorkerRegistration, PROTOCOL_VERSION,
};
use zask::Value;

use crate::reference::{eval_expr, EvalError};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Life {
    /// The process starts (a nanny restarted it); it registers at `at`.
    Starting {
        at: u64,
    },
    Running,
    /// Stopped (SIGSTOP-like): reads nothing, sends nothing, until `until`.
    Stalled {
        until: u64,
    },
    /// Killed; a nanny, if any, starts a new incarnation.
    Dead,
    /// Closed by the scheduler (after retiring) or replaced by a new incarnation.
    Gone,
}

/// How long a fetch from a peer that does not answer takes to fail.
pub const FETCH_TIMEOUT_MS: u64 = 300;

/// Messages a worker (or its nanny) sends to the scheduler.
pub type Out = Vec<(FromWorker, Vec<Frame>)>;

/// A task waiting for a fetch from a silent peer to time out.
pub struct FetchTimeout {
    pub at: u64,
    pub dependency: Key,
    pub task: ComputeTask,
    pub report: Out,
}

/// How a peer answers a fetch.
pub enum PeerAnswer {
    Has(Value),
    Lacks,
    Unresponsive,
}

pub struct ModelWorker {
    /// Stable across nanny restarts: the nanny's identity is derived from it.
    pub slot: usize,
    pub incarnation: u32,
    pub identity: ConnectionId,
    pub name: WorkerName,
    pub address: WorkerAddress,
    pub has_nanny: bool,
    pub life: Life,
    pub store: BTreeMap<Key, Value>,
    pub queue: VecDeque<ComputeTask>,
    pub next_heartbeat_ms: u64,
    /// Its messages and tasks are picked less often.
    pub slow: bool,
    /// Tasks whose fetch from a silent peer is timing out: at the time, the task runs again
    /// if the value arrived meanwhile (another task fetched it: a real worker fetches a key
    /// once for all its tasks), else the report goes out.
    pub fetching: Vec<FetchTimeout>,
    /// A registration is on its way: further "unknown worker" errors are about earlier
    /// messages.
    pub registering: bool,
}

impl ModelWorker {
    /// `fixed`: the process is started with a fixed `--name` and `--peer-port`, so every
    /// incarnation a nanny starts registers with its predecessor's name and address.
    pub fn new(
        slot: usize,
        incarnation: u32,
        has_nanny: bool,
        fixed: bool,
        start_at: u64,
    ) -> ModelWorker {
        let name = if fixed {
            format!("w{slot}")
        } else {
            format!("w{slot}.{incarnation}")
        };
        ModelWorker {
            slot,
            incarnation,
            identity: ConnectionId::from(format!("w{slot}.{incarnation}")),
            address: WorkerAddress::from(format!("tcp://{name}:1")),
            name: WorkerName::from(name),
            has_nanny,
            life: Life::Starting { at: start_at },
            store: BTreeMap::new(),
            queue: VecDeque::new(),
            next_heartbeat_ms: 0,
            slow: false,
            registering: true,
            fetching: Vec::new(),
        }
    }

    pub fn nanny_identity(slot: usize) -> ConnectionId {
        ConnectionId::from(format!("nanny{slot}"))
    }

    /// Answers messages and runs tasks.
    pub fn responsive(&self) -> bool {
        self.life == Life::Running
    }

    pub fn registration(&self) -> FromWorker {
        FromWorker::Register(WorkerRegistration {
            protocol_version: PROTOCOL_VERSION,
            address: self.address.clone(),
            name: self.name.clone(),
            nthreads: 1,
            memory_limit_bytes: 0,
            pid: (self.slot * 100) as u32 + self.incarnation,
            store: "memory".into(),
            keys: vec![],
            nanny_token: self.has_nanny.then(|| self.nanny_token()),
            runs_python: false,
        })
    }

    /// The secret the nanny hands this process (deterministic: one per incarnation).
    pub fn nanny_token(&self) -> u64 {
        0x7a61_736b_0000_0000 | (self.slot as u64) << 16 | self.incarnation as u64
    }

    /// Fetches timing out by `now`: their reports, or their tasks back in the queue.
    pub fn due(&mut self, now: u64) -> Out {
        let (due, later): (Vec<_>, Vec<_>) = self.fetching.drain(..).partition(|f| f.at <= now);
        self.fetching = later;
        let mut out = Vec::new();
        for f in due {
            if self.store.contains_key(&f.dependency) {
                self.queue.push_front(f.task);
            } else {
                out.extend(f.report);
            }
        }
        out
    }

    pub fn handle(&mut self, msg: ToWorker, frames: Vec<Frame>) -> Result<Out, String> {
        Ok(match msg {
            ToWorker::Registered { .. } => {
                self.registering = false;
                vec![]
            }
            ToWorker::HeartbeatAck | ToWorker::PeersLost(_) => vec![],
            ToWorker::Rejected { reason } => return Err(format!("worker rejected: {reason}")),
            ToWorker::CheckHeld { keys } => {
                let keys = keys
                    .into_iter()
                    .filter(|k| !self.store.contains_key(k))
                    .collect();
                vec![(FromWorker::NotHeld { keys }, vec![])]
            }
            ToWorker::Compute(tasks) => {
                self.queue.extend(tasks);
                vec![]
            }
            ToWorker::Release(keys) => {
                for k in &keys {
                    self.store.remove(k);
                }
                self.queue.retain(|t| !keys.contains(&t.key));
                self.fetching.retain(|f| !keys.contains(&f.task.key));
                vec![]
            }
            ToWorker::Ping => vec![(FromWorker::Heartbeat, vec![])],
            // A model worker keeps no log lines.
            ToWorker::GetLogs { request } => vec![(
                FromWorker::Logs {
                    request,
                    lines: vec![],
                },
                vec![],
            )],
            ToWorker::Reset => {
                self.store.clear();
                self.queue.clear();
                self.fetching.clear();
                vec![]
            }
            ToWorker::Restart => return Err("Restart sent to a worker, not to its nanny".into()),
            ToWorker::GetData { request, keys } => {
                let (mut found, mut missing, mut values) = (vec![], vec![], vec![]);
                for k in keys {
                    match self.store.get(&k) {
                        Some(v) => {
                            values.push(encode_value(v));
                            found.push(k);
                        }
                        None => missing.push(k),
                    }
                }
                vec![(
                    FromWorker::Data {
                        request,
                        found,
                        missing,
                    },
                    values,
                )]
            }
            ToWorker::PutData { request, keys } => {
                if keys.len() != frames.len() {
                    return Err(format!("PutData of {keys:?} with {} frames", frames.len()));
                }
                for (k, f) in keys.into_iter().zip(frames) {
                    let v = decode_value(&f).map_err(|e| format!("PutData value: {e}"))?;
                    self.store.insert(k, v);
                }
                vec![(FromWorker::Stored { request }, vec![])]
            }
            // The model sends only well-formed messages.
            ToWorker::Malformed { message } => {
                return Err(format!(
                    "the scheduler found a model worker's message malformed: {message}"
                ))
            }
            ToWorker::UnknownWorker => {
                // The scheduler gave up on us (we were silent). A real worker registers
                // again; this one starts afresh (it reports no held keys).
                if self.registering {
                    return Ok(vec![]); // one registration answers them all
                }
                self.registering = true;
                self.store.clear();
                self.queue.clear();
                self.fetching.clear();
                vec![(self.registration(), vec![])]
            }
            ToWorker::Close | ToWorker::Dismiss => {
                self.life = Life::Gone;
                vec![]
            }
        })
    }

    /// Runs the next queued task: fetches what it lacks, evaluates, reports.
    pub fn run_next(
        &mut self,
        now: u64,
        peer: &dyn Fn(&WorkerAddress, &Key) -> PeerAnswer,
    ) -> Result<Out, String> {
        let Some(task) = self.queue.pop_front() else {
            return Ok(vec![]);
        };
        let mut fetched = Vec::new();
        for (dep, holders) in &task.dependencies {
            if self.store.contains_key(dep) {
                continue;
            }
            let (mut lacking, mut unresponsive, mut got) = (vec![], vec![], None);
            for h in holders {
                match peer(h, dep) {
                    PeerAnswer::Has(v) => {
                        got = Some(v);
                        break;
                    }
                    PeerAnswer::Lacks => lacking.push(h.clone()),
                    PeerAnswer::Unresponsive => unresponsive.push(h.clone()),
                }
            }
            match got {
                Some(v) => {
                    fetched.push((dep.clone(), encode_value(&v).len() as u64));
                    self.store.insert(dep.clone(), v);
                }
                None => {
                    // Drop the copies fetched for this attempt: the scheduler never heard of
                    // them, so it would never release them.
                    for (k, _) in &fetched {
                        self.store.remove(k);
                    }
                    let report: Out = vec![(
                        FromWorker::MissingDependency {
                            key: task.key.clone(),
                            dependency: dep.clone(),
                            holders: lacking,
                            unresponsive: unresponsive.clone(),
                        },
                        vec![],
                    )];
                    if unresponsive.is_empty() {
                        return Ok(report);
                    }
                    // A silent peer is given up on only after the fetch timeout.
                    self.fetching.push(FetchTimeout {
                        at: now + FETCH_TIMEOUT_MS,
                        dependency: dep.clone(),
                        task: task.clone(),
                        report,
                    });
                    return Ok(vec![]);
                }
            }
        }
        let expr: Expr = match decode_plain(&task.spec) {
            Ok(e) => e,
            Err(e) => return Err(format!("undecodable spec of {:?}: {e}", task.key)),
        };
        let result = {
            let store = &self.store;
            eval_expr(&expr, &|k| store.get(k).cloned())
        };
        Ok(match result {
            Ok(v) => {
                let frame = encode_value(&v);
                let report = FinishedTask {
                    key: task.key.clone(),
                    nbytes: frame.len() as u64,
                    fetched,
                    has_value: task.report_value,
                };
                self.store.insert(task.key.clone(), v);
                let frames = if task.report_value {
                    vec![frame]
                } else {
                    vec![]
                };
                vec![(FromWorker::Finished(vec![report]), frames)]
            }
            Err(EvalError::Failed(message)) => {
                // As the real worker does: an error report lists no fetched copies, so they
                // are deleted (the scheduler would never release them).
                for (k, _) in &fetched {
                    self.store.remove(k);
                }
                vec![(
                    FromWorker::Erred(vec![ErredTask {
                        key: task.key.clone(),
                        error: TaskError {
                            kind: TaskErrorKind::Failed,
                            message,
                        },
                    }]),
                    vec![],
                )]
            }
            Err(EvalError::Unbound(k)) => {
                return Err(format!(
                    "task {:?} refers to {k:?}, which the scheduler listed with no dependency",
                    task.key
                ))
            }
        })
    }
}
