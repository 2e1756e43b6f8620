//! A task's life on this worker, announced to the parts it concerns: accepted (`compute`:
//! the task table, and a fetch per missing input), handed to the executor, finished or failed
//! (with the bounds on results and error texts, and the memory limit: held data, the memory
//! part and the outbox), and forgotten (its
//! fetches stop waiting for it; the copies fetched for it alone leave held data). Also the
//! scheduler's `Release` and `Reset`, which each part handles for its own table.

use log::{debug, warn};

use super::memory::{Storage, Transition};
use super::{WorkerCommand, WorkerCore};
use crate::graph::Key;
use crate::protocol::codec::{spec_hash, SCATTERED};
use crate::protocol::{
    cut_text, ComputeTask, ErredTask, FinishedTask, FromWorker, TaskError, TaskErrorKind,
    WorkerAddress, TASK_ERROR_BYTES_MAX,
};

impl WorkerCore {
    pub(super) fn compute(&mut self, t: ComputeTask) {
        debug!("compute {:?}", t.key);
        if self.tasks.assigned_again(&t.key, t.report_value) {
            return;
        }
        if let Some(nbytes) = self.held.nbytes(&t.key) {
            self.held.touch(&t.key);
            self.outbox.finished(FinishedTask {
                key: t.key,
                nbytes,
                fetched: vec![],
                has_value: t.report_value,
            });
            return;
        }
        let missing: Vec<(Key, Vec<WorkerAddress>)> = t
            .dependencies
            .iter()
            .filter(|(dep, _)| !self.held.contains(dep))
            .cloned()
            .collect();
        // The task goes in first: starting a fetch checks that someone still waits for it.
        let origin = spec_hash(&t.spec);
        self.tasks.accept(
            t.key.clone(),
            t.spec,
            origin,
            t.dependencies.into_iter().map(|(k, _)| k).collect(),
            t.report_value,
            missing.len(),
        );
        for (dep, holders) in missing {
            if self.fetches.wait_for(dep.clone(), &t.key, holders) {
                self.ask_next_holder(dep);
            }
        }
    }

    /// Hands ready tasks to the executor while it has free threads, unless memory is past
    /// the pause fraction of the memory limit (then they wait for releases or spilling).
    /// Spilling is decided first, so values leave memory before the next task's do arrive.
    pub(super) fn start_ready(&mut self) {
        self.balance_memory();
        if self.memory.paused() {
            return;
        }
        while let Some(start) = self.tasks.start_next() {
            let dependencies = self.used(start.dependencies);
            self.outbox.push(WorkerCommand::Execute {
                key: start.key,
                spec: start.spec,
                dependencies,
            });
        }
    }

    /// Held data changed outside a task's life (released, reset, copies dropped, spilled): a
    /// paused worker brought back under the pause fraction starts the tasks waiting for it.
    pub(super) fn memory_changed(&mut self) {
        if self.balance_memory() == Transition::Resumed {
            self.start_ready();
        }
    }

    /// Spills the least recently used values past the target (if the store can), then
    /// pauses or resumes; a pause or resume is reported to the scheduler at once.
    fn balance_memory(&mut self) -> Transition {
        if let Some(target) = self
            .memory
            .spill_target(self.held.memory_bytes(), self.now_ms)
        {
            let before = self.held.memory_bytes();
            let spilled = self.held.spill_until(target);
            if !spilled.is_empty() {
                self.memory.spilling(&spilled, before);
                let keys = spilled.into_iter().map(|(k, _)| k).collect();
                self.outbox.push(WorkerCommand::Spill(keys));
            }
        }
        let transition = self.memory.update(self.held.memory_bytes());
        if transition != Transition::Unchanged {
            self.report_memory(false);
        }
        transition
    }

    /// Tells the scheduler about memory, if anything changed since it was last told; the
    /// keys moved only `with_keys` (see `MemoryLimit::report`).
    pub(super) fn report_memory(&mut self, with_keys: bool) {
        let report =
            self.memory
                .report(self.held.memory_bytes(), self.held.disk_bytes(), with_keys);
        if let Some(report) = report {
            self.outbox.send(FromWorker::Memory(report));
        }
    }

    /// `keys` are about to be read (inputs, fetches, gathers): each becomes the most recently
    /// used, last spilled.
    pub(super) fn used(&mut self, keys: Vec<Key>) -> Vec<Key> {
        for k in &keys {
            self.held.touch(k);
        }
        keys
    }

    /// A value joins held data: on disk at once with a store on disk, else in memory.
    pub(super) fn hold(&mut self, key: Key, nbytes: u64, origin: u64) {
        let on_disk = self.memory.storage() == Storage::Disk;
        if on_disk {
            self.memory.stored_on_disk(&key);
        }
        self.held.insert(key, nbytes, origin, on_disk);
    }

    /// Spilling `keys` failed: they are in memory after all (those still held), and the
    /// memory part decides when to try again.
    pub(super) fn spill_failed(&mut self, keys: Vec<Key>, error: String, retry_may_help: bool) {
        let keys: Vec<Key> = keys
            .into_iter()
            .filter(|k| self.held.back_in_memory(k))
            .collect();
        self.memory.spill_failed(
            &keys,
            error,
            retry_may_help,
            self.held.memory_bytes(),
            self.now_ms,
        );
    }

    pub(super) fn executed(&mut self, key: Key, result: Result<u64, TaskError>) {
        debug!("executed {key:?}: {result:?}");
        let Some(task) = self.tasks.executed(&key) else {
            // Forgotten while it ran (its input could not be stored): its thread is free.
            self.start_ready();
            return;
        };
        let result_bytes_max = self.link.result_bytes_max();
        let result = match result {
            Ok(nbytes) if nbytes > result_bytes_max => {
                // Stored already by the runner: it must go, and the task fails now rather
                // than its value being dropped on the way (which would leave a client or a
                // peer waiting for it).
                self.outbox.delete(vec![key.clone()]);
                Err(TaskError {
                    kind: TaskErrorKind::Failed,
                    message: format!(
                        "the result is {nbytes} bytes, more than the message limit of \
                         {result_bytes_max} bytes (max_message_bytes of the worker or the \
                         scheduler): it could not be sent anywhere"
                    ),
                })
            }
            Ok(nbytes) if !task.released => {
                match self
                    .memory
                    .admits(self.held.memory_bytes(), nbytes, self.now_ms)
                {
                    Ok(()) => Ok(nbytes),
                    Err(error) => {
                        // Stored already by the runner: it goes at once; what is held stays.
                        warn!("task {key:?} failed: {}", error.message);
                        self.outbox.delete(vec![key.clone()]);
                        Err(error)
                    }
                }
            }
            Err(mut error) => {
                error.message = cut_text(error.message, TASK_ERROR_BYTES_MAX);
                Err(error)
            }
            ok => ok,
        };
        match result {
            Ok(_) if task.released => {
                self.outbox.delete(vec![key]);
                self.drop_orphans(task.fetched);
            }
            Ok(nbytes) => {
                self.hold(key.clone(), nbytes, task.origin);
                self.outbox.finished(FinishedTask {
                    key,
                    nbytes,
                    fetched: task.fetched,
                    has_value: task.report_value,
                });
            }
            Err(_) if task.released => self.drop_orphans(task.fetched),
            Err(error) => {
                self.outbox.erred(ErredTask { key, error });
                self.drop_orphans(task.fetched);
            }
        }
        self.start_ready();
    }

    /// A value could not be written to the store: nobody is told it is here. Scattered data
    /// was (or is about to be) confirmed with `Stored`; `NotHeld` follows, so the scheduler
    /// counts it lost (and fails whoever needs it, naming it) rather than sending readers here.
    /// A copy fetched from a peer: the tasks waiting for it fail, naming the store's error.
    pub(super) fn store_failed(&mut self, key: Key, error: String) {
        warn!("store write of {key:?} failed: {error}");
        let Some(held) = self.held.remove(&key) else {
            return;
        };
        if held.origin == SCATTERED {
            self.outbox.send(FromWorker::NotHeld { keys: vec![key] });
            return;
        }
        // Dependents may be executing already: their `Execute` left in the same batch as the
        // failed write. They are forgotten here and fail with this error; their own failure
        // ("not in the store"), which follows, then only frees their thread.
        for t in self.tasks.dependents_of(&key) {
            self.drop_task(&t);
            self.outbox.erred(ErredTask {
                key: t,
                error: TaskError {
                    kind: TaskErrorKind::Failed,
                    message: format!("could not store input {key:?} fetched from a peer: {error}"),
                },
            });
        }
        self.start_ready();
    }

    /// Deletes the copies fetched for a task that will not report them (released or failed)
    /// unless another task here needs them: the scheduler learns of fetched copies only from a
    /// finished report, so nobody else would ever release them.
    fn drop_orphans(&mut self, fetched: Vec<(Key, u64)>) {
        let orphans: Vec<Key> = fetched
            .into_iter()
            .map(|(k, _)| k)
            .filter(|k| !self.tasks.needs(k))
            .collect();
        for k in &orphans {
            self.held.remove(k);
        }
        self.outbox.delete(orphans);
    }

    /// Forgets a task that will not run here: it stops waiting on fetches, and the copies
    /// fetched for it alone are deleted.
    pub(super) fn drop_task(&mut self, key: &Key) {
        let Some(task) = self.tasks.remove(key) else {
            return;
        };
        for dep in &task.dependencies {
            self.fetches.forget_waiter(dep, key);
        }
        self.drop_orphans(task.fetched);
    }

    /// The scheduler released `keys`: held values are deleted, an executing task's result
    /// will be dropped, any other task is forgotten.
    pub(super) fn release(&mut self, keys: Vec<Key>) {
        let mut delete = Vec::new();
        for key in keys {
            if self.held.remove(&key).is_some() {
                delete.push(key.clone());
            }
            if !self.tasks.release_executing(&key) {
                self.drop_task(&key);
            }
        }
        self.outbox.delete(delete);
    }

    /// Drops every task and every stored value: the cluster restarted. Each part clears its
    /// own table; running tasks cannot be stopped, their results are dropped when they end.
    pub(super) fn reset(&mut self) {
        self.tasks.reset();
        self.fetches.clear();
        self.outbox.drop_reports();
        let keys = self.held.clear();
        self.outbox.delete(keys);
    }
}
