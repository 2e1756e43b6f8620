//! 2015 Python workers on Zask (legacy-protocol.md §3.2, §3.3, §6). An unmodified
//! `dask.distributed.Worker` registers as it always did, by heartbeating on the worker port;
//! the scheduler then starts a *bridge* for it: an ordinary native worker in this process
//! (the shipped `worker::server::Worker`, connected to this scheduler's own worker port, with
//! its own peer port) that registers as one that runs Python and has, besides the built-ins,
//! the [`PYTHON_TASK`] function. The core places a task only Python can run on such a worker
//! (`WorkerSelector::Python`) like any other task: the bridge fetches its inputs from peers
//! and keeps its result in its store, as every worker does, so Rust workers and clients get
//! Python results by the native protocol and nothing else of Zask knows about Python.
//!
//! The Python task itself is a short conversation with the Python worker, one at a time per
//! worker (the 2015 scheduler also gave each worker one task at a time): `setitem` each input
//! under its key, `compute` the task wrapped as `dill.dumps(task)` (so a result that cannot
//! be pickled fails the task at once instead of hanging the `getitem`), `getitem` the pickled
//! result, `delitem` everything (waiting for each to be answered). The worker's replies reach the bridge by their `queue` id;
//! a reply nobody asked for is logged and dropped. A Python worker silent for longer than
//! `legacy_worker_timeout_ms` is removed: its bridge says goodbye, so the core reruns its
//! tasks elsewhere, then every wait on it ends.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use log::{debug, info, warn};
use zask_compat::legacy::{reply_frames, Frame, LegacyMessage, ReplyHeader};
use zask_compat::pickle::helpers::DateTime;
use zask_compat::pickle::{decode, Node, NodeId, Pickle};

use super::legacy::LegacyRequest;
use super::legacy_graph::{self, add_value, PYTHON_TASK};
use crate::net::Waker;
use crate::protocol::{ConnectionId, TaskError, TaskErrorKind, WorkerName};
use crate::security::Access;
use crate::value::Value;
use crate::worker::registry::Registry;
use crate::worker::server::{Worker, WorkerConfig};

/// How long the bridge waits for a Python worker to acknowledge an input or to hand over a
/// result (a `compute` may take as long as the task; it ends early only if the worker falls
/// silent). Generous: values may be large, the 2015 worker pickles them on one thread.
const ACK_TIMEOUT: Duration = Duration::from_secs(120);

/// Threads of a bridge: Python tasks go to the Python worker one at a time, so one thread
/// waits on it while the other runs a built-in the placement gave the bridge.
const BRIDGE_THREADS: u32 = 2;

/// At most this many Python workers at once: each costs a bridge (threads and sockets) in the
/// scheduler process, and the 2015 port that starts them is unauthenticated.
const PYTHON_WORKERS_MAX: usize = 256;

/// What the bridges need from the scheduler.
#[derive(Clone)]
pub(super) struct BridgeSettings {
    /// The scheduler's worker port, where bridges connect and what they put in headers.
    pub address_to_workers: String,
    /// The interface bridges' peer ports listen on (the scheduler's own).
    pub host: String,
    /// A Python worker silent this long is removed.
    pub timeout_ms: u64,
    /// The worker port's socket thread, which sends legacy frames, and its waker.
    pub to_socket: Sender<(ConnectionId, Vec<Frame>)>,
    pub waker: Waker,
    /// The worker key bridges present to the secure worker port (None without security).
    pub access: Option<Access>,
}

/// The Python workers that joined, each with its bridge.
pub(super) struct LegacyWorkers {
    settings: BridgeSettings,
    bridges: HashMap<ConnectionId, Bridge>,
}

struct Bridge {
    link: Arc<PythonLink>,
    worker: Option<Worker>,
    last_heard_ms: u64,
}

impl Drop for Bridge {
    fn drop(&mut self) {
        // The native worker first: it says goodbye before any wait on the Python worker ends,
        // so a task cut short is rerun, never reported as failed.
        if let Some(w) = self.worker.take() {
            w.shutdown();
        }
        self.link.close();
    }
}

impl LegacyWorkers {
    pub(super) fn new(settings: BridgeSettings) -> LegacyWorkers {
        LegacyWorkers {
            settings,
            bridges: HashMap::new(),
        }
    }

    /// A legacy message on the worker port (other than `status`, which is answered as the
    /// 2015 scheduler did): a heartbeat registers the Python worker, replies go to the wait
    /// they answer.
    pub(super) fn heard(&mut self, now_ms: u64, req: LegacyRequest) {
        let who = req.identity.clone();
        match req.msg.function.as_str() {
            "heartbeat" => {
                if let Some(bridge) = self.bridges.get_mut(&who) {
                    bridge.last_heard_ms = now_ms;
                    return;
                }
                let pid = req.msg.payload_int("pid").unwrap_or(-1);
                if self.bridges.len() >= PYTHON_WORKERS_MAX {
                    warn!(
                        "legacy (2015) Python worker {who} (pid {pid}) not let in: already \
                         {PYTHON_WORKERS_MAX} Python workers"
                    );
                    return;
                }
                match self.start_bridge(&who, u32::try_from(pid).ok(), now_ms) {
                    Ok(bridge) => {
                        info!(
                            "legacy (2015) Python worker {who} (pid {pid}) joined: it runs the \
                             Python tasks, through its bridge at {}",
                            bridge
                                .worker
                                .as_ref()
                                .map(|w| w.address().to_string())
                                .unwrap_or_default()
                        );
                        self.bridges.insert(who, bridge);
                    }
                    Err(e) => warn!(
                        "legacy (2015) Python worker {who} (pid {pid}) cannot join: its bridge \
                         did not start: {e}"
                    ),
                }
            }
            "finished-task" | "setitem-ack" | "getitem-ack" | "" => {
                match self.bridges.get_mut(&who) {
                    Some(bridge) => {
                        bridge.last_heard_ms = now_ms;
                        bridge.link.deliver(req.msg);
                    }
                    None => warn!(
                        "legacy (2015) '{}' from {who}, which is not a Python worker of this \
                     scheduler (no heartbeat yet, or removed as silent): dropped",
                        req.msg.function
                    ),
                }
            }
            f => warn!(
                "legacy (2015) message '{f}' on the worker port from {who} is not one Zask \
                 answers: dropped"
            ),
        }
    }

    /// Removes the Python workers silent for longer than the timeout.
    pub(super) fn check(&mut self, now_ms: u64) {
        let timeout = self.settings.timeout_ms;
        let silent: Vec<ConnectionId> = self
            .bridges
            .iter()
            .filter(|(_, b)| now_ms.saturating_sub(b.last_heard_ms) > timeout)
            .map(|(who, _)| who.clone())
            .collect();
        for who in silent {
            warn!(
                "legacy (2015) Python worker {who} silent for more than {} ms: removed (its \
                 tasks run elsewhere; results only it held are recomputed when needed)",
                timeout
            );
            self.bridges.remove(&who);
        }
    }

    fn start_bridge(
        &self,
        who: &ConnectionId,
        pid: Option<u32>,
        now_ms: u64,
    ) -> Result<Bridge, crate::net::StartError> {
        let s = &self.settings;
        let link = Arc::new(PythonLink {
            identity: who.clone(),
            address: s.address_to_workers.clone(),
            to_socket: s.to_socket.clone(),
            waker: s.waker.clone(),
            waiting: Mutex::new(HashMap::new()),
            one_at_a_time: Mutex::new(()),
            next_queue: AtomicU64::new(1),
            closed: AtomicBool::new(false),
        });
        let mut registry = Registry::with_builtins();
        {
            let link = link.clone();
            registry.register_fn(PYTHON_TASK, move |args| link.run(args));
        }
        let mut config = WorkerConfig::new(s.address_to_workers.clone());
        config.nthreads = BRIDGE_THREADS;
        config.name = Some(WorkerName::from(who.to_string().as_str()));
        config.host = Some(s.host.clone());
        config.runs_python = true;
        config.reported_pid = pid;
        config.security = s.access.clone();
        let worker = Worker::start(config, registry)?;
        Ok(Bridge {
            link,
            worker: Some(worker),
            last_heard_ms: now_ms,
        })
    }
}

/// The bridge's line to its Python worker, shared by the bridge's task threads.
struct PythonLink {
    identity: ConnectionId,
    /// The scheduler's worker address, the `address` of every header sent.
    address: String,
    to_socket: Sender<(ConnectionId, Vec<Frame>)>,
    waker: Waker,
    /// Replies expected, by the `queue` id they will carry.
    waiting: Mutex<HashMap<String, Sender<LegacyMessage>>>,
    /// Held for a whole task: the worker's data dict is shared by its tasks' keys.
    one_at_a_time: Mutex<()>,
    next_queue: AtomicU64,
    /// The worker was removed: nothing more is sent, every wait has ended.
    closed: AtomicBool,
}

/// Why a Python task did not finish; becomes the task's error.
fn failed(message: String) -> TaskError {
    TaskError {
        kind: TaskErrorKind::Failed,
        message,
    }
}

impl PythonLink {
    /// A reply from the worker, handed to the wait that expects it.
    fn deliver(&self, msg: LegacyMessage) {
        // A bare reply (to a `delitem`) carries its id as the `jobid`; the others as `queue`.
        let queue = if msg.is_bare_reply() {
            msg.jobid_str().map(str::to_owned)
        } else {
            msg.payload_str("queue").map(str::to_owned)
        };
        let waiting = queue.and_then(|q| self.lock_waiting().remove(&q));
        match waiting {
            Some(tx) => {
                let _ = tx.send(msg);
            }
            None => warn!(
                "legacy (2015) '{}' from Python worker {} answers nothing the scheduler asked \
                 for: dropped",
                msg.function, self.identity
            ),
        }
    }

    fn lock_waiting(&self) -> std::sync::MutexGuard<'_, HashMap<String, Sender<LegacyMessage>>> {
        // A panicking task thread cannot leave the map half-changed: inserts and removes only.
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Ends every wait (their senders dropped) and sends nothing more.
    fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.lock_waiting().clear();
    }

    /// A fresh `queue` id and the channel its reply will arrive on.
    fn expect(&self) -> (String, Receiver<LegacyMessage>) {
        let queue = format!("zask-{}", self.next_queue.fetch_add(1, Ordering::Relaxed));
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.lock_waiting().insert(queue.clone(), tx);
        (queue, rx)
    }

    /// Sends `function` with a payload dict built by `fields` (its `queue` included).
    fn send(
        &self,
        function: &str,
        fields: impl FnOnce(&mut Pickle) -> Vec<(&'static str, NodeId)>,
    ) -> Result<(), TaskError> {
        self.send_with_jobid(function, None, fields)
    }

    /// `send`, with a `jobid` in the header (which a bare reply echoes).
    fn send_with_jobid(
        &self,
        function: &str,
        jobid: Option<&str>,
        fields: impl FnOnce(&mut Pickle) -> Vec<(&'static str, NodeId)>,
    ) -> Result<(), TaskError> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(self.gone());
        }
        let mut payload = Pickle::new();
        let pairs = fields(&mut payload)
            .into_iter()
            .map(|(k, v)| (payload.add(Node::Str(k.to_owned())), v))
            .collect();
        payload.root = payload.add(Node::Dict(pairs));
        let mut header = ReplyHeader::new(self.address.as_bytes(), DateTime::now_utc())
            .function(function)
            .loads_dill();
        if let Some(id) = jobid {
            header = header.jobid(id);
        }
        let frames = reply_frames(header, &payload).map_err(|e| {
            failed(format!(
                "the message to the Python worker cannot be pickled: {e}"
            ))
        })?;
        super::send_command(
            &self.to_socket,
            &self.waker,
            (self.identity.clone(), frames),
        );
        self.waker.wake();
        Ok(())
    }

    fn gone(&self) -> TaskError {
        failed(format!(
            "the Python worker {} was removed while running this task",
            self.identity
        ))
    }

    /// Waits for a reply, for at most `timeout` (None: while the worker is heard from).
    fn wait(
        &self,
        rx: &Receiver<LegacyMessage>,
        what: &str,
        timeout: Option<Duration>,
    ) -> Result<LegacyMessage, TaskError> {
        let got = match timeout {
            Some(t) => rx.recv_timeout(t),
            None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        got.map_err(|e| match e {
            RecvTimeoutError::Disconnected => self.gone(),
            RecvTimeoutError::Timeout => failed(format!(
                "the Python worker {} did not send {what} within {} s",
                self.identity,
                ACK_TIMEOUT.as_secs()
            )),
        })
    }

    /// The [`PYTHON_TASK`] function: runs one task on the Python worker and returns its
    /// result as a value.
    fn run(&self, args: Vec<Value>) -> Result<Value, TaskError> {
        let bad = |what: &str| TaskError {
            kind: TaskErrorKind::BadArguments,
            message: format!("{PYTHON_TASK}: {what}"),
        };
        let [Value::Bytes(task), Value::Bytes(key), Value::List(input_keys), Value::List(inputs)] =
            <[Value; 4]>::try_from(args)
                .map_err(|_| bad("takes a task, its key, input keys and inputs"))?
        else {
            return Err(bad(
                "takes a task, its key, input keys and inputs as bytes and lists",
            ));
        };
        if input_keys.len() != inputs.len() {
            return Err(bad("as many input keys as inputs"));
        }
        let input_keys = input_keys
            .into_iter()
            .map(|k| match k {
                Value::Bytes(b) => Ok(b),
                _ => Err(bad("input keys are pickles")),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let _one = self.one_at_a_time.lock().unwrap_or_else(|e| e.into_inner());
        // The keys the Python worker holds for this task (inputs acknowledged, the result once
        // computed): exactly those are deleted, since deleting a missing key answers nothing.
        let mut placed: Vec<Vec<u8>> = Vec::with_capacity(input_keys.len() + 1);
        let result = self.run_locked(&task, &key, &input_keys, &inputs, &mut placed);
        // The worker's data dict is only borrowed for the task: its keys are deleted before the
        // next task may start. The Python worker runs each message on a thread of its pool, in
        // no particular order, so a `delitem` not waited for could run after the next task's
        // `setitem` of the same key and leave that task without its input (Python's `get`
        // then takes the key for a literal: a wrong result, not an error).
        let mut deletions = Vec::with_capacity(input_keys.len() + 1);
        placed.sort();
        placed.dedup();
        for k in &placed {
            let (id, rx) = self.expect();
            let sent = self.send_with_jobid("delitem", Some(&id), |p| {
                vec![
                    ("key", p.add_embedded_pickle(k.clone())),
                    ("reply", p.add(Node::Bool(true))),
                ]
            });
            if sent.is_ok() {
                deletions.push(rx);
            }
        }
        for rx in &deletions {
            if let Err(e) = self.wait(rx, "the answer to a delitem", Some(ACK_TIMEOUT)) {
                // Gone or silent: it is removed (and its tasks rerun elsewhere) by the watchdog.
                warn!("{}", e.message);
                break;
            }
        }
        result
    }

    fn run_locked(
        &self,
        task: &[u8],
        key: &[u8],
        input_keys: &[Vec<u8>],
        inputs: &[Value],
        placed: &mut Vec<Vec<u8>>,
    ) -> Result<Value, TaskError> {
        let mut acks = Vec::with_capacity(inputs.len());
        for (k, v) in input_keys.iter().zip(inputs) {
            let (queue, rx) = self.expect();
            self.send("setitem", |p| {
                vec![
                    ("key", p.add_embedded_pickle(k.clone())),
                    ("value", add_value(p, v)),
                    ("queue", p.add(Node::Str(queue))),
                ]
            })?;
            acks.push(rx);
        }
        for (rx, k) in acks.iter().zip(input_keys) {
            self.wait(rx, "setitem-ack", Some(ACK_TIMEOUT))?;
            placed.push(k.clone());
        }
        let (queue, rx) = self.expect();
        self.send("compute", |p| {
            let dumps = p.add_global("dill", "dumps");
            let inner = p.add_embedded_pickle(task.to_vec());
            vec![
                ("key", p.add_embedded_pickle(key.to_vec())),
                ("task", p.add(Node::Tuple(vec![dumps, inner]))),
                ("locations", p.add(Node::Dict(vec![]))),
                ("queue", p.add(Node::Str(queue))),
            ]
        })?;
        let finished = self.wait(&rx, "finished-task", None)?;
        let status = finished.payload_get("status");
        if finished.payload.str_of(status.unwrap_or(NodeId(u32::MAX))) != Some("OK") {
            return Err(failed(exception_text(&finished.payload, status)));
        }
        placed.push(key.to_vec());
        let (queue, rx) = self.expect();
        self.send("getitem", |p| {
            vec![
                ("key", p.add_embedded_pickle(key.to_vec())),
                ("queue", p.add(Node::Str(queue))),
            ]
        })?;
        let got = self.wait(&rx, "getitem-ack", Some(ACK_TIMEOUT))?;
        let value = got.payload_get("value").and_then(|id| got.payload.get(id));
        let (Some("OK"), Some(Node::Bytes(blob))) = (got.status.as_deref(), value) else {
            return Err(failed(format!(
                "the Python worker {} lost the result it had just computed",
                self.identity
            )));
        };
        let result = decode(blob)
            .map_err(|e| failed(format!("the Python worker's result cannot be read: {e}")))?;
        legacy_graph::value_of(&result, result.root, "the result").map_err(|refused| {
            let what = match refused {
                legacy_graph::Refused::NotRepresentable { what, .. } => what,
                other => other.exception().2,
            };
            debug!("a Python result Zask cannot hold: {what}");
            failed(format!(
                "NotImplementedError: the task's result holds {what}; results of Python tasks \
                 travel between Zask's workers as plain data only (None, bool, int, float, str, \
                 bytes, list, tuple, dict)"
            ))
        })
    }
}

/// `Class: message` of the exception a `finished-task` carries as its status (the class as
/// Python names it, the first argument as the message).
fn exception_text(payload: &Pickle, status: Option<NodeId>) -> String {
    let Some(Node::Reduce { callable, args }) = status.and_then(|id| payload.get(id)) else {
        return format!(
            "RuntimeError: the Python worker reported status {}",
            status.map(|id| payload.render(id)).unwrap_or_default()
        );
    };
    let class = match legacy_graph::callable_of(payload, *callable) {
        Some(legacy_graph::Callable::Global { module, name }) if module == "builtins" => name,
        Some(legacy_graph::Callable::Global { module, name }) => format!("{module}.{name}"),
        _ => payload.render(*callable),
    };
    let message = payload
        .tuple_of(*args)
        .and_then(|a| a.first())
        .map(|&m| {
            payload
                .str_of(m)
                .map(str::to_owned)
                .unwrap_or_else(|| payload.render(m))
        })
        .unwrap_or_default();
    format!("{class}: {message}")
}
