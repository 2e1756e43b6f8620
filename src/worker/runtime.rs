//! The worker runner's logic, shared by the real IO thread (`server.rs`: ZeroMQ and the thread
//! pool) and the simulation (`tests/simulation`: an in-memory network and a virtual pool): it
//! carries out the worker core's `WorkerCommand`s against a `Store`, a `Transport` and a
//! `JobQueue`, and feeds what comes back (a store failure, a task's result) to the core as
//! events. Nothing here reads a clock or blocks: time comes in as `now_ms`, and sockets and
//! threads stay behind the two traits.

use std::collections::HashMap;

use log::error;
use zask_storage::{Bytes, Store, Tiers};

use super::core::{ShutdownReason, Storage, WorkerCommand, WorkerCore, WorkerEvent};
use super::executor::{Job, JobResult};
use crate::graph::{Expr, Key};
use crate::protocol::codec::{chunk_count, decode_plain, decode_value_owned, encode_value};
use crate::protocol::{
    ConnectionId, FinishedTask, Frame, FromWorker, PeerReply, PeerRequest, TaskError,
    TaskErrorKind, WorkerAddress,
};

/// Messages to the scheduler carrying at least this many bytes of values are announced
/// (`FromWorker::Sending`): 1 MiB takes well under a heartbeat interval on any network, so
/// smaller ones need no word, and the few big ones cost one small message more.
pub const ANNOUNCE_BYTES: u64 = 1 << 20;

/// A value sent to a peer goes in frames of at most this many bytes (`PeerReply::Data`'s
/// `chunks`), so that the sender's encryption, the socket and the receiver's decryption
/// work on different chunks at once instead of one after the other on the whole value (each
/// side's ZeroMQ IO thread en/decrypts one frame at a time). See BENCHMARKS.md.
pub const PEER_CHUNK_BYTES: usize = 4 << 20;

/// Where the worker's messages go. Sending never blocks and never fails the caller: a message
/// that cannot leave is logged (and, for fetches, noticed by the core's fetch timeout).
pub trait Transport {
    /// To the scheduler (the worker's DEALER).
    fn to_scheduler(&mut self, msg: &FromWorker, frames: Vec<Frame>);
    /// A request to the peer listening at `address` (a DEALER to that peer's ROUTER).
    fn to_peer(&mut self, address: &WorkerAddress, msg: &PeerRequest);
    /// A reply to the peer connected to this worker's ROUTER as `peer`; `frames` are shared
    /// buffers (stored values or slices of them), to be sent without copying where the
    /// transport can.
    fn reply_to_peer(&mut self, peer: &ConnectionId, msg: &PeerReply, frames: Vec<Bytes>);
}

/// Runs jobs somewhere else (a thread pool, a virtual one); each result comes back through
/// `WorkerRuntime::job_done`.
pub trait JobQueue {
    fn submit(&mut self, job: Job);

    /// Runs `job` on the calling thread if that costs less than handing it over (`bytes`:
    /// its spec and inputs, encoded) and returns its result; else gives it back for
    /// `submit`. By default never.
    // The error is the job itself, given back (moved, not copied): no boxing wanted.
    #[allow(clippy::result_large_err)]
    fn run_inline(&mut self, job: Job, bytes: usize) -> Result<JobResult, Job> {
        let _ = bytes;
        Err(job)
    }
}

impl JobQueue for super::executor::Executor {
    fn submit(&mut self, job: Job) {
        super::executor::Executor::submit(self, job)
    }

    fn run_inline(&mut self, job: Job, bytes: usize) -> Result<JobResult, Job> {
        super::executor::Executor::run_inline(self, job, bytes)
    }
}

/// The most tasks one `run_commands` runs on the calling thread; the rest of a long run of
/// cheap tasks goes to the pool, so the IO thread polls its sockets again soon.
pub const INLINE_TASKS_MAX: usize = 256;

/// The worker core with its store and the ends of its transport and job queue.
pub struct WorkerRuntime<T, Q> {
    core: WorkerCore,
    store: Box<dyn Store>,
    transport: T,
    jobs: Q,
    /// A "zero worker": every task is done at once with a null result, without running it.
    zero: bool,
    /// Finished tasks not reported yet, with their values' frames: consecutive reports are
    /// merged while the tasks after them run on this thread (inline or zero), and sent before
    /// anything else goes to the scheduler, before a job goes to the pool and when
    /// `run_commands` ends. A job in the pool could end the process; a task run here cannot.
    report: Option<(Vec<FinishedTask>, Vec<Frame>)>,
    /// Jobs for the pool from the batch of commands being carried out: they go to the pool
    /// when the batch is done, after the batch's reports have left (the core puts a batch's
    /// reports after its `Execute`s).
    to_pool: Vec<Job>,
    /// A job went to the pool in this `run_commands`: reports leave at once, as they come.
    pooled: bool,
    /// Tasks run on this thread in this `run_commands` (at most `INLINE_TASKS_MAX`).
    inline_runs: usize,
}

impl<T: Transport, Q: JobQueue> WorkerRuntime<T, Q> {
    /// The core is told where `store` puts values (`WorkerCore::set_storage`).
    pub fn new(
        mut core: WorkerCore,
        store: Box<dyn Store>,
        transport: T,
        jobs: Q,
        zero: bool,
    ) -> WorkerRuntime<T, Q> {
        core.set_storage(match store.tiers() {
            Tiers::Memory => Storage::Memory,
            Tiers::Disk => Storage::Disk,
            Tiers::Spilling => Storage::Spilling,
        });
        WorkerRuntime {
            core,
            store,
            transport,
            jobs,
            zero,
            report: None,
            to_pool: Vec::new(),
            pooled: false,
            inline_runs: 0,
        }
    }

    pub fn core(&self) -> &WorkerCore {
        &self.core
    }

    pub fn store(&self) -> &dyn Store {
        &*self.store
    }

    /// Empties the store (a crashed worker's memory is gone).
    pub fn clear_store(&mut self) {
        if let Err(e) = self.store.clear() {
            error!("clearing the store failed: {e}");
        }
    }

    pub fn transport(&self) -> &T {
        &self.transport
    }

    pub fn transport_mut(&mut self) -> &mut T {
        &mut self.transport
    }

    pub fn jobs_mut(&mut self) -> &mut Q {
        &mut self.jobs
    }

    /// Registers with the scheduler (then `run_commands`).
    pub fn register(&mut self, now_ms: u64) {
        self.core.register(now_ms);
    }

    /// Feeds one event to the core. Its commands wait for `run_commands`, so a runner may
    /// feed a batch of events first.
    pub fn handle(&mut self, now_ms: u64, event: WorkerEvent) {
        self.core.handle(now_ms, event);
    }

    /// Lets time pass for the core: heartbeats, fetch timeouts, the death timeout (then
    /// `run_commands`).
    pub fn tick(&mut self, now_ms: u64) {
        self.core.tick(now_ms);
    }

    /// A task's outcome, from the pool or decided before reaching it: a result is stored,
    /// then the core hears of it (then `run_commands`).
    pub fn job_done(&mut self, now_ms: u64, r: JobResult) {
        let result = r.result.and_then(|frame| {
            let nbytes = frame.len() as u64;
            self.store
                .set(&r.key.to_store_key(), frame)
                .map(|()| nbytes)
                .map_err(|e| TaskError {
                    kind: TaskErrorKind::Failed,
                    message: format!("could not store the result: {e}"),
                })
        });
        self.core
            .handle(now_ms, WorkerEvent::Executed { key: r.key, result });
    }

    /// Says something to the scheduler outside the core (retire, goodbye).
    pub fn to_scheduler(&mut self, msg: &FromWorker) {
        self.flush_report();
        self.transport.to_scheduler(msg, vec![]);
    }

    /// Sends the finished tasks held back (`report`), if any.
    fn flush_report(&mut self) {
        if let Some((done, frames)) = self.report.take() {
            self.send_to_scheduler(&FromWorker::Finished(done), frames);
        }
    }

    /// Holds a finished report back to merge it with the next, or sends it at once after a
    /// job went to the pool.
    fn report_finished(&mut self, done: Vec<FinishedTask>, frames: Vec<Frame>) {
        match &mut self.report {
            Some((held, held_frames)) => {
                held.extend(done);
                held_frames.extend(frames);
            }
            None => self.report = Some((done, frames)),
        }
        if self.pooled {
            self.flush_report();
        }
    }

    /// Sends a message of the core to the scheduler; one whose values make at least
    /// `ANNOUNCE_BYTES` is announced first (`FromWorker::Sending`), so the scheduler waits for
    /// the heartbeats queued behind it as long as it takes to arrive.
    fn send_to_scheduler(&mut self, msg: &FromWorker, frames: Vec<Frame>) {
        if !matches!(msg, FromWorker::Finished(_)) {
            self.flush_report();
        }
        let bytes: u64 = frames.iter().map(|f| f.len() as u64).sum();
        if bytes >= ANNOUNCE_BYTES {
            self.transport
                .to_scheduler(&FromWorker::Sending { bytes }, vec![]);
        }
        self.transport.to_scheduler(msg, frames);
    }

    /// Carries out the core's commands until it has nothing more to say; returns a reason if
    /// the worker must stop.
    pub fn run_commands(&mut self, now_ms: u64) -> Option<ShutdownReason> {
        self.inline_runs = 0;
        let reason = self.run_all_commands(now_ms);
        self.flush_report();
        self.pooled = false;
        reason
    }

    fn run_all_commands(&mut self, now_ms: u64) -> Option<ShutdownReason> {
        // Carrying out a command can feed the core an event (a task that fails before reaching
        // the pool), so go on until the core has nothing more to say.
        loop {
            let commands = self.core.take_commands();
            if commands.is_empty() {
                return None;
            }
            for cmd in commands {
                if let Some(reason) = self.command(now_ms, cmd) {
                    self.submit_to_pool();
                    return Some(reason);
                }
            }
            self.submit_to_pool();
        }
    }

    /// Hands the batch's jobs to the pool, once what finished before them has been reported:
    /// a job in the pool could end the process, and a finished task not reported by then
    /// would be blamed for it and lost.
    fn submit_to_pool(&mut self) {
        if self.to_pool.is_empty() {
            return;
        }
        self.flush_report();
        self.pooled = true;
        for job in std::mem::take(&mut self.to_pool) {
            self.jobs.submit(job);
        }
    }

    fn command(&mut self, now_ms: u64, cmd: WorkerCommand) -> Option<ShutdownReason> {
        match cmd {
            WorkerCommand::ToScheduler { msg, frames } => {
                self.send_to_scheduler(&msg, frames);
            }
            WorkerCommand::ReportFinished(mut done) => {
                let mut frames = Vec::new();
                for f in &mut done {
                    if f.has_value {
                        match self.store.get(&f.key.to_store_key()) {
                            Ok(Some(v)) => frames.push(v),
                            _ => f.has_value = false,
                        }
                    }
                }
                self.report_finished(done, frames);
            }
            WorkerCommand::SendDataToScheduler { request, keys } => {
                let (found, frames, missing) = self.load(keys);
                let msg = FromWorker::Data {
                    request,
                    found,
                    missing,
                };
                self.send_to_scheduler(&msg, frames);
            }
            WorkerCommand::SendDataToPeer {
                peer,
                request,
                keys,
            } => {
                let (found, values, missing) = self.load_shared(keys);
                let chunks = values
                    .iter()
                    .map(|v| chunk_count(v.len(), PEER_CHUNK_BYTES) as u32)
                    .collect();
                let frames = values
                    .into_iter()
                    .flat_map(|v| chunked(v, PEER_CHUNK_BYTES))
                    .collect();
                let reply = PeerReply::Data {
                    request,
                    found,
                    missing,
                    chunks,
                };
                self.transport.reply_to_peer(&peer, &reply, frames);
            }
            WorkerCommand::FetchFromPeer {
                address,
                request,
                keys,
            } => {
                let msg = PeerRequest::GetData { request, keys };
                self.transport.to_peer(&address, &msg);
            }
            WorkerCommand::Store { key, frame } => {
                if let Err(e) = self.store.set(&key.to_store_key(), frame) {
                    // Never a silent success: the core takes the value back.
                    let error = e.to_string();
                    self.core
                        .handle(now_ms, WorkerEvent::StoreFailed { key, error });
                }
            }
            WorkerCommand::Delete(keys) => {
                for k in keys {
                    if let Err(e) = self.store.delete(&k.to_store_key()) {
                        error!("store delete of {k:?} failed: {e}");
                    }
                }
            }
            WorkerCommand::Spill(keys) => self.spill(now_ms, keys),
            WorkerCommand::Execute {
                key,
                spec,
                dependencies,
            } => self.execute(now_ms, key, &spec, dependencies),
            WorkerCommand::Shutdown { reason } => return Some(reason),
            WorkerCommand::SendLogs { request } => {
                let lines = crate::logs::recent_lines();
                self.to_scheduler(&FromWorker::Logs { request, lines });
            }
        }
        None
    }

    /// Moves `keys` to disk in order; at the first failure, that key and the rest stay in
    /// memory and the core hears why.
    fn spill(&mut self, now_ms: u64, keys: Vec<Key>) {
        for (i, k) in keys.iter().enumerate() {
            if let Err(e) = self.store.spill(&k.to_store_key()) {
                let event = WorkerEvent::SpillFailed {
                    keys: keys[i..].to_vec(),
                    error: e.to_string(),
                    retry_may_help: e.retry_may_help(),
                };
                self.core.handle(now_ms, event);
                return;
            }
        }
    }

    /// Reads keys from the store: the frames of those found, and the keys missing.
    fn load(&self, keys: Vec<Key>) -> (Vec<Key>, Vec<Frame>, Vec<Key>) {
        self.load_with(keys, |store, k| store.get(k))
    }

    /// Like `load`, the stores' own buffers (no copy from a store that keeps values in memory).
    fn load_shared(&self, keys: Vec<Key>) -> (Vec<Key>, Vec<Bytes>, Vec<Key>) {
        self.load_with(keys, |store, k| store.get_shared(k))
    }

    /// The keys found with what `read` gave for each, and the keys missing (a failed read is
    /// logged and counts as missing).
    fn load_with<V>(
        &self,
        keys: Vec<Key>,
        read: impl Fn(&dyn Store, &[u8]) -> zask_storage::StoreResult<Option<V>>,
    ) -> (Vec<Key>, Vec<V>, Vec<Key>) {
        let (mut found, mut values, mut missing) = (Vec::new(), Vec::new(), Vec::new());
        for k in keys {
            match read(self.store.as_ref(), &k.to_store_key()) {
                Ok(Some(v)) => {
                    found.push(k);
                    values.push(v);
                }
                Ok(None) => missing.push(k),
                Err(e) => {
                    error!("store read of {k:?} failed: {e}");
                    missing.push(k);
                }
            }
        }
        (found, values, missing)
    }

    /// Loads the inputs and hands the job to the queue; a failure found before that goes
    /// through the same path as results.
    fn execute(&mut self, now_ms: u64, key: Key, spec: &[u8], dependencies: Vec<Key>) {
        if self.zero {
            let result = Ok(encode_value(&crate::value::Value::Null));
            return self.job_done(now_ms, JobResult { key, result });
        }
        let fail = |message: String| JobResult {
            key: key.clone(),
            result: Err(TaskError {
                kind: TaskErrorKind::BadInput,
                message,
            }),
        };
        let expr: Expr = match decode_plain(spec) {
            Ok(e) => e,
            Err(e) => return self.job_done(now_ms, fail(format!("undecodable task: {e}"))),
        };
        let mut inputs = HashMap::with_capacity(dependencies.len());
        let mut bytes = spec.len();
        for d in dependencies {
            let frame = match self.store.get(&d.to_store_key()) {
                Ok(Some(f)) => f,
                Ok(None) => {
                    let failed = fail(format!("input {d:?} is not in the store"));
                    return self.job_done(now_ms, failed);
                }
                Err(e) => {
                    let failed = fail(format!("reading input {d:?}: {e}"));
                    return self.job_done(now_ms, failed);
                }
            };
            bytes += frame.len();
            match decode_value_owned(frame) {
                Ok(v) => {
                    inputs.insert(d, v);
                }
                Err(e) => {
                    let failed = fail(format!("input {d:?} is unreadable: {e}"));
                    return self.job_done(now_ms, failed);
                }
            }
        }
        let mut job = Job { key, expr, inputs };
        if self.inline_runs < INLINE_TASKS_MAX {
            match self.jobs.run_inline(job, bytes) {
                Ok(result) => {
                    self.inline_runs += 1;
                    return self.job_done(now_ms, result);
                }
                Err(back) => job = back,
            }
        }
        self.to_pool.push(job);
    }
}

/// `value` cut in `chunk_count` slices of at most `chunk_bytes` (slices of one buffer: no copy).
fn chunked(value: Bytes, chunk_bytes: usize) -> impl Iterator<Item = Bytes> {
    let n = chunk_count(value.len(), chunk_bytes);
    (0..n).map(move |i| {
        let start = (i * chunk_bytes).min(value.len());
        let end = (start + chunk_bytes).min(value.len());
        value.slice(start..end)
    })
}

#[cfg(test)]
mod tests {
    use zask_storage::{MemoryStore, SpillingStore};

    use super::*;
    use crate::protocol::codec::encode_plain;
    use crate::protocol::{ComputeTask, ToWorker, WorkerRegistration, PROTOCOL_VERSION};
    use crate::value::Value;
    use crate::worker::core::WorkerCoreConfig;

    /// What the transport sent and the queue was given, in order, shared by both.
    type Log = std::rc::Rc<std::cell::RefCell<Vec<String>>>;

    /// Records what the runtime sends.
    #[derive(Default)]
    struct Recorder {
        to_scheduler: Vec<(FromWorker, Vec<Frame>)>,
        log: Log,
        to_peers: Vec<(PeerReply, Vec<Bytes>)>,
    }

    impl Transport for Recorder {
        fn to_scheduler(&mut self, msg: &FromWorker, frames: Vec<Frame>) {
            if let FromWorker::Finished(done) = msg {
                let keys: Vec<&Key> = done.iter().map(|f| &f.key).collect();
                self.log.borrow_mut().push(format!("finished {keys:?}"));
            }
            self.to_scheduler.push((msg.clone(), frames));
        }
        fn to_peer(&mut self, address: &WorkerAddress, msg: &PeerRequest) {
            panic!("unexpected fetch from {address}: {msg:?}");
        }
        fn reply_to_peer(&mut self, _: &ConnectionId, msg: &PeerReply, frames: Vec<Bytes>) {
            self.to_peers.push((msg.clone(), frames));
        }
    }

    /// Keeps the jobs given to the pool; with `inline`, runs the cheap ones as the executor
    /// does.
    #[derive(Default)]
    struct Queue(Vec<Job>, Option<crate::worker::Registry>, Log);

    impl JobQueue for Queue {
        fn submit(&mut self, job: Job) {
            self.2.borrow_mut().push(format!("pool {:?}", job.key));
            self.0.push(job);
        }

        fn run_inline(&mut self, job: Job, bytes: usize) -> Result<JobResult, Job> {
            use crate::worker::executor::{evaluate_owned, is_cheap, INLINE_BYTES_MAX};
            match &self.1 {
                Some(reg) if bytes <= INLINE_BYTES_MAX && is_cheap(&job.expr, reg) => {
                    let result = evaluate_owned(&job.expr, job.inputs, reg);
                    Ok(JobResult {
                        key: job.key,
                        result: result.map(|v| encode_value(&v)),
                    })
                }
                _ => Err(job),
            }
        }
    }

    fn runtime() -> WorkerRuntime<Recorder, Queue> {
        runtime_with(Recorder::default(), Queue::default(), 1 << 20)
    }

    /// A runtime whose queue runs cheap tasks inline, its transport and queue sharing a log.
    fn inline_runtime() -> (WorkerRuntime<Recorder, Queue>, Log) {
        let log = Log::default();
        let transport = Recorder {
            log: log.clone(),
            ..Recorder::default()
        };
        let queue = Queue(
            vec![],
            Some(crate::worker::Registry::with_builtins()),
            log.clone(),
        );
        (runtime_with(transport, queue, 1 << 20), log)
    }

    /// A runtime with this transport and queue whose results may be up to
    /// `max_message_bytes`.
    fn runtime_with(
        transport: Recorder,
        queue: Queue,
        max_message_bytes: u64,
    ) -> WorkerRuntime<Recorder, Queue> {
        let core = WorkerCore::new(WorkerCoreConfig {
            registration: WorkerRegistration {
                protocol_version: PROTOCOL_VERSION,
                address: "tcp://me:1".into(),
                name: "me".into(),
                nthreads: 1,
                memory_limit_bytes: 0,
                pid: 1,
                store: "memory".into(),
                keys: vec![],
                nanny_token: None,
                runs_python: false,
            },
            heartbeat_interval_ms: 1000,
            fetch_timeout_ms: 5000,
            death_timeout_ms: 60_000,
            max_message_bytes,
        });
        let store = Box::new(MemoryStore::new());
        let mut rt = WorkerRuntime::new(core, store, transport, queue, false);
        rt.register(0);
        assert_eq!(rt.run_commands(0), None);
        let sent = std::mem::take(&mut rt.transport_mut().to_scheduler);
        assert!(
            matches!(sent[..], [(FromWorker::Register(_), _)]),
            "{sent:?}"
        );
        rt
    }

    fn compute(rt: &mut WorkerRuntime<Recorder, Queue>, key: &str, spec: Vec<u8>) {
        let task = ComputeTask {
            key: key.into(),
            spec,
            dependencies: vec![],
            report_value: true,
        };
        let msg = ToWorker::Compute(vec![task]);
        rt.handle(
            1,
            WorkerEvent::FromScheduler {
                msg,
                frames: vec![],
            },
        );
        assert_eq!(rt.run_commands(1), None);
    }

    /// Sends the scheduler's `Compute` of `tasks` (key, spec), then runs the commands.
    fn compute_all(rt: &mut WorkerRuntime<Recorder, Queue>, tasks: &[(&str, Expr)]) {
        let tasks = tasks
            .iter()
            .map(|(key, expr)| ComputeTask {
                key: (*key).into(),
                spec: encode_plain(expr),
                dependencies: vec![],
                report_value: true,
            })
            .collect();
        let msg = ToWorker::Compute(tasks);
        let event = WorkerEvent::FromScheduler {
            msg,
            frames: vec![],
        };
        rt.handle(1, event);
        assert_eq!(rt.run_commands(1), None);
    }

    fn call(name: &str, args: Vec<Value>) -> Expr {
        Expr::Call(name.into(), args.into_iter().map(Expr::Lit).collect())
    }

    #[test]
    fn cheap_tasks_run_inline_and_are_reported_in_one_message() {
        let (mut rt, log) = inline_runtime();
        let tasks: Vec<(String, Expr)> = (0..5)
            .map(|i| (format!("t{i}"), call("inc", vec![Value::from(i)])))
            .collect();
        let tasks: Vec<(&str, Expr)> = tasks.iter().map(|(k, e)| (k.as_str(), e.clone())).collect();
        compute_all(&mut rt, &tasks);
        assert!(rt.jobs_mut().0.is_empty(), "nothing went to the pool");
        let sent = std::mem::take(&mut rt.transport_mut().to_scheduler);
        let [(FromWorker::Finished(done), frames)] = &sent[..] else {
            panic!("one report expected: {sent:?}");
        };
        let keys: Vec<Key> = done.iter().map(|f| f.key.clone()).collect();
        let expected: Vec<Key> = (0..5)
            .map(|i| Key::from(format!("t{i}").as_str()))
            .collect();
        assert_eq!(keys, expected);
        let values: Vec<Frame> = (1..6).map(|i| encode_value(&Value::from(i))).collect();
        assert_eq!(frames, &values);
        for (k, v) in expected.iter().zip(&values) {
            assert_eq!(rt.store().get(&k.to_store_key()), Ok(Some(v.clone())));
        }
        assert_eq!(log.borrow().len(), 1);
        assert_eq!(rt.core().check_invariants(), Ok(()));
    }

    #[test]
    fn what_finished_is_reported_before_a_job_goes_to_the_pool() {
        let (mut rt, log) = inline_runtime();
        // One thread: a runs inline, b (a sleep: not cheap) goes to the pool, c waits for it.
        let tasks = [
            ("a", call("inc", vec![Value::from(1)])),
            ("b", call("sleep", vec![Value::from(0)])),
            ("c", call("inc", vec![Value::from(3)])),
        ];
        compute_all(&mut rt, &tasks);
        assert_eq!(
            log.borrow().clone(),
            vec![r#"finished ["a"]"#.to_string(), r#"pool "b""#.into()]
        );
        let job = rt.jobs_mut().0.pop().expect("b went to the pool");
        let result = Ok(encode_value(&Value::Null));
        rt.job_done(
            2,
            JobResult {
                key: job.key,
                result,
            },
        );
        assert_eq!(rt.run_commands(2), None);
        // c ran inline once b's thread was free; b and c leave together.
        assert_eq!(log.borrow()[2..], [r#"finished ["b", "c"]"#.to_string()]);
        assert!(rt.jobs_mut().0.is_empty());
        assert_eq!(rt.core().check_invariants(), Ok(()));
    }

    #[test]
    fn a_job_result_is_stored_then_reported_with_its_value() {
        let mut rt = runtime();
        compute(&mut rt, "x", encode_plain(&Expr::Lit(Value::from(5))));
        let job = rt.jobs_mut().0.pop().expect("the task went to the queue");
        assert_eq!(job.key, Key::from("x"));
        let frame = encode_value(&Value::from(5));
        rt.job_done(
            2,
            JobResult {
                key: job.key,
                result: Ok(frame.clone()),
            },
        );
        assert_eq!(rt.run_commands(2), None);
        assert_eq!(
            rt.store().get(&Key::from("x").to_store_key()),
            Ok(Some(frame.clone()))
        );
        let sent = std::mem::take(&mut rt.transport_mut().to_scheduler);
        assert!(
            matches!(&sent[..], [(FromWorker::Finished(done), frames)]
                if done.len() == 1 && done[0].has_value && frames == &vec![frame.clone()]),
            "{sent:?}"
        );
    }

    #[test]
    fn a_big_result_is_announced_before_it_is_sent() {
        let mut rt = runtime();
        compute(&mut rt, "x", encode_plain(&Expr::Lit(Value::from(5))));
        let job = rt.jobs_mut().0.pop().expect("the task went to the queue");
        let frame = vec![7u8; ANNOUNCE_BYTES as usize];
        rt.job_done(
            2,
            JobResult {
                key: job.key,
                result: Ok(frame.clone()),
            },
        );
        assert_eq!(rt.run_commands(2), None);
        let sent = std::mem::take(&mut rt.transport_mut().to_scheduler);
        assert!(
            matches!(&sent[..], [(FromWorker::Sending { bytes }, none), (FromWorker::Finished(done), frames)]
                if *bytes == ANNOUNCE_BYTES && none.is_empty() && done.len() == 1
                    && frames == &vec![frame.clone()]),
            "{:?}",
            sent.iter().map(|(m, _)| m).collect::<Vec<_>>()
        );
    }

    #[test]
    fn a_large_value_goes_to_a_peer_in_chunks_of_the_stored_buffer() {
        use crate::protocol::codec::{encode, split_peer_reply};
        let mut rt = runtime_with(Recorder::default(), Queue::default(), 1 << 30);
        let n = 2 * PEER_CHUNK_BYTES + 10;
        make(&mut rt, "big", n);
        make(&mut rt, "small", 3);
        let peer = ConnectionId::from(b"peer".to_vec());
        let msg = PeerRequest::GetData {
            request: 9,
            keys: vec![Key::from("big"), Key::from("small"), Key::from("gone")],
        };
        rt.handle(3, WorkerEvent::FromPeer { peer, msg });
        assert_eq!(rt.run_commands(3), None);
        let (reply, frames) = rt.transport_mut().to_peers.pop().expect("a reply");
        assert!(
            matches!(&reply, PeerReply::Data { request: 9, found, missing, chunks }
                if found.len() == 2 && missing == &[Key::from("gone")] && chunks == &[3, 1]),
            "{reply:?}"
        );
        assert!(frames.iter().all(|f| f.len() <= PEER_CHUNK_BYTES));
        // The chunks are slices of the stored buffer itself, not copies.
        let stored = rt.store().get_shared(&Key::from("big").to_store_key());
        let stored = stored.unwrap().expect("still stored");
        assert_eq!(frames[0].as_ptr(), stored.as_ptr());
        // Joined by the receiver, they are the stored values again.
        let mut wire = vec![encode(&reply)];
        wire.extend(frames.iter().map(|f| f.to_vec()));
        let (_, values) = split_peer_reply(wire, u64::MAX).unwrap();
        assert_eq!(values[0], encode_value(&Value::Bytes(vec![7; n])));
        assert_eq!(values[1], encode_value(&Value::Bytes(vec![7; 3])));
    }

    #[test]
    fn an_undecodable_task_fails_without_reaching_the_queue() {
        let mut rt = runtime();
        compute(&mut rt, "bad", vec![0xc1]);
        assert!(rt.jobs_mut().0.is_empty());
        assert!(rt.store().is_empty());
        let sent = std::mem::take(&mut rt.transport_mut().to_scheduler);
        assert!(
            matches!(&sent[..], [(FromWorker::Erred(erred), _)]
                if erred[0].error.kind == TaskErrorKind::BadInput),
            "{sent:?}"
        );
    }

    /// A runtime over a store that spills, with a memory limit of `limit` bytes.
    fn spilling_runtime(store: SpillingStore, limit: u64) -> WorkerRuntime<Recorder, Queue> {
        let core = WorkerCore::new(WorkerCoreConfig {
            registration: WorkerRegistration {
                protocol_version: PROTOCOL_VERSION,
                address: "tcp://me:1".into(),
                name: "me".into(),
                nthreads: 1,
                memory_limit_bytes: limit,
                pid: 1,
                store: "spill".into(),
                keys: vec![],
                nanny_token: None,
                runs_python: false,
            },
            heartbeat_interval_ms: 1000,
            fetch_timeout_ms: 5000,
            death_timeout_ms: 60_000,
            max_message_bytes: 1 << 20,
        });
        let mut rt = WorkerRuntime::new(
            core,
            Box::new(store),
            Recorder::default(),
            Queue::default(),
            false,
        );
        rt.register(0);
        assert_eq!(rt.run_commands(0), None);
        rt.transport_mut().to_scheduler.clear();
        rt
    }

    /// Runs task `key` making a value of `n` bytes, through the queue and back.
    fn make(rt: &mut WorkerRuntime<Recorder, Queue>, key: &str, n: usize) {
        compute(rt, key, encode_plain(&Expr::Lit(Value::Bytes(vec![7; n]))));
        let job = rt.jobs_mut().0.pop().expect("the task went to the queue");
        let frame = encode_value(&Value::Bytes(vec![7; n]));
        rt.job_done(
            2,
            JobResult {
                key: job.key,
                result: Ok(frame),
            },
        );
        assert_eq!(rt.run_commands(2), None);
    }

    #[test]
    fn spilled_values_move_to_disk_and_a_failing_disk_keeps_them_in_memory() {
        use zask_storage::Tier;
        let parent = tempfile::tempdir().unwrap();
        let store = SpillingStore::open(parent.path()).unwrap();
        let dir = store.dir().to_path_buf();
        // Target 600 bytes: the second 400-byte value sends the first to disk.
        let mut rt = spilling_runtime(store, 1000);
        make(&mut rt, "a", 400);
        make(&mut rt, "b", 400);
        let tier = |rt: &WorkerRuntime<Recorder, Queue>, k: &str| {
            rt.store().tier(&Key::from(k).to_store_key()).unwrap()
        };
        assert_eq!(tier(&rt, "a"), Some(Tier::Disk));
        assert_eq!(tier(&rt, "b"), Some(Tier::Memory));
        assert!(rt.core().on_disk(&Key::from("a")));
        assert_eq!(rt.core().memory_bytes(), rt.store().memory_bytes());

        // The spill directory breaks: the next spill fails, and the core hears of it at once.
        std::fs::remove_dir_all(&dir).unwrap();
        std::fs::write(&dir, b"no longer a directory").unwrap();
        make(&mut rt, "c", 400);
        assert_eq!(tier(&rt, "b"), Some(Tier::Memory), "b could not move");
        assert!(!rt.core().on_disk(&Key::from("b")));
        assert_eq!(rt.core().memory_bytes(), rt.store().memory_bytes());
        assert_eq!(rt.core().check_invariants(), Ok(()));
        std::fs::remove_file(&dir).unwrap();
    }
}
