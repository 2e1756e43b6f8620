//! Part: the memory limit. The most data this worker holds (`--memory-limit`, 0: none), the
//! fraction past which it pauses, and whether it is paused now. Held data is measured by the
//! sizes the store reports for each value (held data's total), not by the process's resident
//! memory: deterministic, and what the limit is about (allocator slack, the executor's
//! temporaries and the sockets' buffers are not counted, so leave room for them).
//!
//! Near and past the limit:
//! - a task whose result would take held data past the limit fails with
//!   `TaskErrorKind::MemoryLimit` and its result is not kept (`admits`); everything held stays;
//! - past `PAUSE_FRACTION` of the limit the worker starts no new task (`update`): tasks stay
//!   queued, data is still served and heartbeats still go, until releases bring held data back
//!   under. The scheduler is not told: a task queued on a paused worker waits for releases.

use log::info;

use crate::protocol::{TaskError, TaskErrorKind};

/// Past this fraction of the limit a worker starts no new task (dask's default pause fraction):
/// room for the results of the tasks already running, so they are not the ones that fail.
pub const PAUSE_FRACTION: f64 = 0.8;

/// A change `update` saw.
#[derive(Debug, PartialEq)]
pub(super) enum Transition {
    Paused,
    Resumed,
    Unchanged,
}

pub(super) struct MemoryLimit {
    /// 0: no limit.
    limit_bytes: u64,
    /// Held data above this pauses the worker: `PAUSE_FRACTION` of the limit.
    pause_bytes: u64,
    paused: bool,
}

impl MemoryLimit {
    pub(super) fn new(limit_bytes: u64) -> MemoryLimit {
        MemoryLimit {
            limit_bytes,
            pause_bytes: (limit_bytes as f64 * PAUSE_FRACTION) as u64,
            paused: false,
        }
    }

    pub(super) fn paused(&self) -> bool {
        self.paused
    }

    /// Whether a result of `result_bytes` may join the `held_bytes` held now; the error says
    /// why not.
    pub(super) fn admits(&self, held_bytes: u64, result_bytes: u64) -> Result<(), TaskError> {
        if self.limit_bytes == 0 || held_bytes.saturating_add(result_bytes) <= self.limit_bytes {
            return Ok(());
        }
        Err(TaskError {
            kind: TaskErrorKind::MemoryLimit,
            message: format!(
                "the result is {result_bytes} bytes and this worker holds {held_bytes} bytes \
                 of its memory limit of {limit} bytes: keeping it would pass the limit, so it \
                 was not kept (the worker and what it holds stay; release values or give the \
                 worker a larger --memory-limit)",
                limit = self.limit_bytes
            ),
        })
    }

    /// Held data is now `held_bytes`: pauses above the pause fraction, resumes at or below it,
    /// logging each change with the numbers.
    pub(super) fn update(&mut self, held_bytes: u64) -> Transition {
        let over = self.limit_bytes != 0 && held_bytes > self.pause_bytes;
        if over == self.paused {
            return Transition::Unchanged;
        }
        self.paused = over;
        let percent = PAUSE_FRACTION * 100.0;
        if over {
            info!(
                "paused: holding {held_bytes} bytes, more than {percent}% ({} bytes) of the \
                 memory limit of {} bytes; no new task starts until releases bring it under",
                self.pause_bytes, self.limit_bytes
            );
            Transition::Paused
        } else {
            info!(
                "resumed: holding {held_bytes} bytes, at most {percent}% ({} bytes) of the \
                 memory limit of {} bytes; tasks start again",
                self.pause_bytes, self.limit_bytes
            );
            Transition::Resumed
        }
    }
}
