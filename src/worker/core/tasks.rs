//! A task's life on this worker: accepted (`compute`), waiting for its inputs, queued, handed
//! to the executor, finished or failed (with the bounds on results and error texts), and
//! forgotten (with the copies fetched for it alone).

use log::{debug, warn};

use super::{Fetch, Held, Phase, Task, WorkerCommand, WorkerCore};
use crate::graph::Key;
use crate::protocol::codec::{spec_hash, SCATTERED};
use crate::protocol::{ComputeTask, ErredTask, FinishedTask, FromWorker, TaskError, WorkerAddress};

impl WorkerCore {
    pub(super) fn compute(&mut self, t: ComputeTask) {
        debug!("compute {:?}", t.key);
        if let Some(existing) = self.tasks.get_mut(&t.key) {
            // Assigned again while still here (released, then wanted again): keep going.
            existing.released = false;
            existing.report_value |= t.report_value;
            return;
        }
        if let Some(nbytes) = self.data.get(&t.key).map(|h| h.nbytes) {
            self.finished.push(FinishedTask {
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
            .filter(|(dep, _)| !self.data.contains_key(dep))
            .cloned()
            .collect();
        let phase = if missing.is_empty() {
            self.ready.push_back(t.key.clone());
            Phase::Ready
        } else {
            Phase::Fetching {
                missing: missing.len(),
            }
        };
        // The task goes in first: starting a fetch checks that someone still waits for it.
        self.tasks.insert(
            t.key.clone(),
            Task {
                origin: spec_hash(&t.spec),
                spec: t.spec,
                dependencies: t.dependencies.into_iter().map(|(k, _)| k).collect(),
                report_value: t.report_value,
                phase,
                fetched: Vec::new(),
                released: false,
            },
        );
        for (dep, holders) in missing {
            match self.fetches.get_mut(&dep) {
                Some(f) => {
                    if !f.waiting.contains(&t.key) {
                        f.waiting.push(t.key.clone());
                    }
                    let own = &self.config.registration.address;
                    for h in holders {
                        if h != *own && !f.holders.contains(&h) {
                            f.holders.push(h);
                        }
                    }
                }
                None => {
                    let own = &self.config.registration.address;
                    let holders = holders.into_iter().filter(|h| h != own).collect();
                    self.fetches.insert(
                        dep.clone(),
                        Fetch {
                            holders,
                            tried: 0,
                            waiting: vec![t.key.clone()],
                            unresponsive: Vec::new(),
                        },
                    );
                    self.try_next_holder(dep);
                }
            }
        }
    }

    pub(super) fn start_ready(&mut self) {
        // The pool gets no more tasks than it has threads: a task queued in the pool would
        // start before the report of the one before it leaves, and a crash would then blame
        // (and lose) the finished task.
        while self.executing < self.nthreads {
            let Some(key) = self.ready.pop_front() else {
                break;
            };
            let Some(task) = self.tasks.get_mut(&key) else {
                continue;
            };
            if task.phase != Phase::Ready {
                continue;
            }
            task.phase = Phase::Executing;
            self.executing += 1;
            self.commands.push(WorkerCommand::Execute {
                key,
                spec: task.spec.clone(),
                dependencies: task.dependencies.clone(),
            });
        }
    }

    pub(super) fn executed(&mut self, key: Key, result: Result<u64, TaskError>) {
        debug!("executed {key:?}: {result:?}");
        self.executing = self.executing.saturating_sub(1);
        let Some(task) = self.tasks.remove(&key) else {
            // Forgotten while it ran (its input could not be stored): its thread is free.
            self.start_ready();
            return;
        };
        let result = match result {
            Ok(nbytes) if nbytes > self.result_bytes_max => {
                // Stored already by the runner: it must go, and the task fails now rather
                // than its value being dropped on the way (which would leave a client or a
                // peer waiting for it).
                self.commands.push(WorkerCommand::Delete(vec![key.clone()]));
                Err(TaskError {
                    kind: crate::protocol::TaskErrorKind::Failed,
                    message: format!(
                        "the result is {nbytes} bytes, more than the message limit of {} \
                         bytes (max_message_bytes of the worker or the scheduler): it could \
                         not be sent anywhere",
                        self.result_bytes_max
                    ),
                })
            }
            Err(mut error) => {
                error.message =
                    crate::protocol::cut_text(error.message, crate::protocol::TASK_ERROR_BYTES_MAX);
                Err(error)
            }
            ok => ok,
        };
        match result {
            Ok(nbytes) if task.released => {
                self.commands.push(WorkerCommand::Delete(vec![key]));
                let _ = nbytes;
                self.drop_orphans(task.fetched);
            }
            Ok(nbytes) => {
                self.data
                    .insert(key.clone(), Held::new(nbytes, task.origin));
                self.finished.push(FinishedTask {
                    key,
                    nbytes,
                    fetched: task.fetched,
                    has_value: task.report_value,
                });
            }
            Err(_) if task.released => self.drop_orphans(task.fetched),
            Err(error) => {
                self.erred.push(ErredTask { key, error });
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
        let Some(held) = self.data.remove(&key) else {
            return;
        };
        if held.origin == SCATTERED {
            self.commands.push(WorkerCommand::ToScheduler {
                msg: FromWorker::NotHeld { keys: vec![key] },
                frames: vec![],
            });
            return;
        }
        // Dependents may be executing already: their `Execute` left in the same batch as the
        // failed write. They are forgotten here and fail with this error; their own failure
        // ("not in the store"), which follows, then only frees their thread.
        let dependents: Vec<Key> = self
            .tasks
            .iter()
            .filter(|(_, t)| t.dependencies.contains(&key))
            .map(|(k, _)| k.clone())
            .collect();
        for t in dependents {
            self.drop_task(&t);
            self.erred.push(ErredTask {
                key: t,
                error: TaskError {
                    kind: crate::protocol::TaskErrorKind::Failed,
                    message: format!("could not store input {key:?} fetched from a peer: {error}"),
                },
            });
        }
        self.start_ready();
    }

    /// Deletes the copies fetched for a task that will not report them (released or failed)
    /// unless another task here needs them: the scheduler learns of fetched copies only from a
    /// finished report, so nobody else would ever release them.
    pub(super) fn drop_orphans(&mut self, fetched: Vec<(Key, u64)>) {
        let orphans: Vec<Key> = fetched
            .into_iter()
            .map(|(k, _)| k)
            .filter(|k| !self.tasks.values().any(|t| t.dependencies.contains(k)))
            .collect();
        for k in &orphans {
            self.data.remove(k);
        }
        if !orphans.is_empty() {
            self.commands.push(WorkerCommand::Delete(orphans));
        }
    }

    /// Forgets a task that will not run here: it stops waiting on fetches, and the copies
    /// fetched for it alone are deleted.
    pub(super) fn drop_task(&mut self, key: &Key) {
        let Some(task) = self.tasks.remove(key) else {
            return;
        };
        for dep in &task.dependencies {
            if let Some(f) = self.fetches.get_mut(dep) {
                f.waiting.retain(|k| k != key);
            }
        }
        self.drop_orphans(task.fetched);
    }
}
