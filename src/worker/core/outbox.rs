//! Part: the outbox. The commands for the runner in the order they were decided, and the
//! completions batched until `take`: every finished task in one `ReportFinished`, every failed
//! one in one `Erred` message, after the commands decided before them.

use super::WorkerCommand;
use crate::graph::Key;
use crate::protocol::{ErredTask, FinishedTask, FromWorker};

#[derive(Default)]
pub(super) struct Outbox {
    commands: Vec<WorkerCommand>,
    finished: Vec<FinishedTask>,
    erred: Vec<ErredTask>,
}

impl Outbox {
    pub(super) fn push(&mut self, command: WorkerCommand) {
        self.commands.push(command);
    }

    /// A message to the scheduler with no frames.
    pub(super) fn send(&mut self, msg: FromWorker) {
        self.commands.push(WorkerCommand::ToScheduler {
            msg,
            frames: vec![],
        });
    }

    /// Deletes `keys` from the store (nothing when there are none).
    pub(super) fn delete(&mut self, keys: Vec<Key>) {
        if !keys.is_empty() {
            self.commands.push(WorkerCommand::Delete(keys));
        }
    }

    pub(super) fn finished(&mut self, task: FinishedTask) {
        self.finished.push(task);
    }

    pub(super) fn erred(&mut self, task: ErredTask) {
        self.erred.push(task);
    }

    /// The cluster restarted: completions not reported yet are not reported at all.
    pub(super) fn drop_reports(&mut self) {
        self.finished.clear();
        self.erred.clear();
    }

    /// Everything to do, with completions batched into one report each.
    pub(super) fn take(&mut self) -> Vec<WorkerCommand> {
        if !self.finished.is_empty() {
            let finished = std::mem::take(&mut self.finished);
            self.commands.push(WorkerCommand::ReportFinished(finished));
        }
        if !self.erred.is_empty() {
            let erred = std::mem::take(&mut self.erred);
            self.send(FromWorker::Erred(erred));
        }
        std::mem::take(&mut self.commands)
    }
}
