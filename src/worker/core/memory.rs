//! Part: the memory limit. The most data this worker holds in memory (`--memory-limit`, 0:
//! none), the fractions of it that decide what happens (dask's thresholds), whether it is
//! paused now, whether its store can spill, and what the scheduler has not been told yet.
//! Held data is measured by the sizes the store reports for each value in memory (held data's
//! `memory_bytes`), not by the process's resident memory: deterministic, and what the limit is
//! about (allocator slack, the executor's temporaries and the sockets' buffers are not
//! counted, so leave room for them: the nanny watches the resident memory, past
//! `TERMINATE_FRACTION`).
//!
//! Near and past the limit:
//! - past `TARGET_FRACTION`, a store that can spill (`Storage::Spilling`) has its least
//!   recently used values moved to disk until those in memory are back under (`spill_target`);
//!   the runner moves them; a move that fails (disk full, read-only) leaves them in memory, is
//!   logged as an error and stops spilling for `SPILL_RETRY_MS` (for good when retrying cannot
//!   help);
//! - a task whose result cannot fit fails with `TaskErrorKind::MemoryLimit` and its result is
//!   not kept (`admits`); everything held stays;
//! - past `PAUSE_FRACTION` the worker starts no new task (`update`): tasks stay queued, data is
//!   still served and heartbeats still go, until releases or spilling bring memory back under;
//!   the scheduler is told at once (`FromWorker::Memory`) and gives the worker no new task.

use log::{error, info};

use crate::graph::Key;
use crate::protocol::{MemoryReport, TaskError, TaskErrorKind};

/// Past this fraction of the limit, a worker whose store can spill moves its least recently
/// used values to disk until it is back under (dask's default target fraction).
pub const TARGET_FRACTION: f64 = 0.6;

/// Past this fraction of the limit a worker starts no new task (dask's default pause fraction):
/// room for the results of the tasks already running, so they are not the ones that fail.
pub const PAUSE_FRACTION: f64 = 0.8;

/// Past this fraction of the limit, in resident memory, the nanny restarts its worker (dask's
/// default terminate fraction): the kernel never gets to kill it silently.
pub const TERMINATE_FRACTION: f64 = 0.95;

/// After a spill failed, no spilling is tried for this long (when retrying can help).
pub const SPILL_RETRY_MS: u64 = 1000;

/// Where the worker's store puts values (the runtime says, from the store it runs over).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Storage {
    /// Every value in memory, and it stays there.
    Memory,
    /// Every value on disk from the start (a sled store): nothing counts against the limit.
    Disk,
    /// Values arrive in memory and can be spilled to disk.
    Spilling,
}

/// A change `update` saw.
#[derive(Debug, PartialEq)]
pub(super) enum Transition {
    Paused,
    Resumed,
    Unchanged,
}

/// The last spill that failed.
struct SpillFailure {
    error: String,
    /// When spilling may be tried again; `None`: never (retrying cannot help).
    retry_at_ms: Option<u64>,
}

pub(super) struct MemoryLimit {
    /// 0: no limit.
    limit_bytes: u64,
    /// Memory above this is spilled, if the store can: `TARGET_FRACTION` of the limit.
    target_bytes: u64,
    /// Memory above this pauses the worker: `PAUSE_FRACTION` of the limit.
    pause_bytes: u64,
    paused: bool,
    storage: Storage,
    spill_failure: Option<SpillFailure>,
    /// What the scheduler has not been told yet.
    unreported: Unreported,
}

/// Keys moved between memory and disk since the last report, and whether anything changed.
#[derive(Default)]
struct Unreported {
    to_disk: Vec<Key>,
    to_memory: Vec<Key>,
    /// (memory bytes, disk bytes, paused) as last reported.
    last: Option<(u64, u64, bool)>,
}

/// "1 result", "12 results".
fn results(n: usize) -> String {
    if n == 1 {
        "1 result".to_string()
    } else {
        format!("{n} results")
    }
}

fn mb(bytes: u64) -> String {
    format!("{:.0} MB", bytes as f64 / 1e6)
}

impl MemoryLimit {
    pub(super) fn new(limit_bytes: u64) -> MemoryLimit {
        MemoryLimit {
            limit_bytes,
            target_bytes: (limit_bytes as f64 * TARGET_FRACTION) as u64,
            pause_bytes: (limit_bytes as f64 * PAUSE_FRACTION) as u64,
            paused: false,
            storage: Storage::Memory,
            spill_failure: None,
            unreported: Unreported::default(),
        }
    }

    pub(super) fn set_storage(&mut self, storage: Storage) {
        self.storage = storage;
    }

    pub(super) fn storage(&self) -> Storage {
        self.storage
    }

    pub(super) fn paused(&self) -> bool {
        self.paused
    }

    /// Whether spilling may be tried at `now_ms`.
    fn can_spill(&self, now_ms: u64) -> bool {
        self.limit_bytes != 0
            && self.storage == Storage::Spilling
            && self
                .spill_failure
                .as_ref()
                .is_none_or(|f| f.retry_at_ms.is_some_and(|at| at <= now_ms))
    }

    /// How far down to spill when `memory_bytes` are in memory at `now_ms`: `Some(target)`
    /// when it is past the target and the store can spill.
    pub(super) fn spill_target(&self, memory_bytes: u64, now_ms: u64) -> Option<u64> {
        (self.can_spill(now_ms) && memory_bytes > self.target_bytes).then_some(self.target_bytes)
    }

    /// Logs a spill decision with its reason, and notes the keys for the next report.
    pub(super) fn spilling(&mut self, keys: &[(Key, u64)], memory_bytes: u64) {
        let bytes: u64 = keys.iter().map(|(_, n)| n).sum();
        info!(
            "spilling {} ({}): in memory {} > target {} ({}% of the memory limit of {})",
            results(keys.len()),
            mb(bytes),
            mb(memory_bytes),
            mb(self.target_bytes),
            TARGET_FRACTION * 100.0,
            mb(self.limit_bytes)
        );
        let u = &mut self.unreported;
        u.to_memory.retain(|k| !keys.iter().any(|(s, _)| s == k));
        u.to_disk.extend(keys.iter().map(|(k, _)| k.clone()));
    }

    /// Values were stored on disk directly (a store on disk): noted for the next report.
    pub(super) fn stored_on_disk(&mut self, key: &Key) {
        self.unreported.to_disk.push(key.clone());
    }

    /// Spilling `keys` failed with `error`: they are in memory; spilling stops for
    /// `SPILL_RETRY_MS` (for good when retrying cannot help). Logged as an error.
    pub(super) fn spill_failed(
        &mut self,
        keys: &[Key],
        error: String,
        retry_may_help: bool,
        memory_bytes: u64,
        now_ms: u64,
    ) {
        let when = if retry_may_help {
            format!("spilling is tried again in {SPILL_RETRY_MS} ms")
        } else {
            "spilling stops for good (retrying cannot help)".to_string()
        };
        error!(
            "spilling to disk failed: {error}; keeping {} in memory ({} in memory now, \
             memory limit {}); {when}",
            results(keys.len()),
            mb(memory_bytes),
            mb(self.limit_bytes)
        );
        self.unreported.to_disk.retain(|k| !keys.contains(k));
        self.unreported.to_memory.extend(keys.iter().cloned());
        self.spill_failure = Some(SpillFailure {
            error,
            retry_at_ms: retry_may_help.then_some(now_ms + SPILL_RETRY_MS),
        });
    }

    /// Whether a result of `result_bytes` may join the `memory_bytes` held in memory now (at
    /// `now_ms`); the error says why not. With a store on disk every result may; with a
    /// store that can spill, any result no bigger than the limit may (the others move to
    /// disk); otherwise it must fit beside what is in memory.
    pub(super) fn admits(
        &self,
        memory_bytes: u64,
        result_bytes: u64,
        now_ms: u64,
    ) -> Result<(), TaskError> {
        if self.limit_bytes == 0 || self.storage == Storage::Disk {
            return Ok(());
        }
        let limit = self.limit_bytes;
        if self.can_spill(now_ms) {
            if result_bytes <= limit {
                return Ok(());
            }
            return Err(TaskError {
                kind: TaskErrorKind::MemoryLimit,
                message: format!(
                    "the result is {result_bytes} bytes, more than this worker's whole memory \
                     limit of {limit} bytes, so it was not kept (the worker and what it holds \
                     stay; give the worker a larger --memory-limit)"
                ),
            });
        }
        if memory_bytes.saturating_add(result_bytes) <= limit {
            return Ok(());
        }
        let spill = match &self.spill_failure {
            Some(f) if self.storage == Storage::Spilling => {
                format!("; spilling to disk failed: {}", f.error)
            }
            _ => String::new(),
        };
        Err(TaskError {
            kind: TaskErrorKind::MemoryLimit,
            message: format!(
                "the result is {result_bytes} bytes and this worker holds {memory_bytes} bytes \
                 of its memory limit of {limit} bytes: keeping it would pass the limit, so it \
                 was not kept (the worker and what it holds stay; release values or give the \
                 worker a larger --memory-limit){spill}"
            ),
        })
    }

    /// Memory now holds `memory_bytes`: pauses above the pause fraction, resumes at or below
    /// it, logging each change with the numbers.
    pub(super) fn update(&mut self, memory_bytes: u64) -> Transition {
        let over = self.limit_bytes != 0 && memory_bytes > self.pause_bytes;
        if over == self.paused {
            return Transition::Unchanged;
        }
        self.paused = over;
        let percent = PAUSE_FRACTION * 100.0;
        if over {
            info!(
                "paused: holding {memory_bytes} bytes in memory, more than {percent}% ({} \
                 bytes) of the memory limit of {} bytes; no new task starts until releases \
                 or spilling bring it under",
                self.pause_bytes, self.limit_bytes
            );
            Transition::Paused
        } else {
            info!(
                "resumed: holding {memory_bytes} bytes in memory, at most {percent}% ({} \
                 bytes) of the memory limit of {} bytes; tasks start again",
                self.pause_bytes, self.limit_bytes
            );
            Transition::Resumed
        }
    }

    /// Whether this worker reports its memory to the scheduler at all: with a limit, or with
    /// values on disk to show.
    fn reports(&self) -> bool {
        self.limit_bytes != 0 || self.storage != Storage::Memory
    }

    /// The report to send now, if anything changed since the last one: keys moved, the
    /// figures, or the pause. `with_keys` false (a pause or resume, told at once) leaves the
    /// keys for the next heartbeat's report: a key moved in this batch may be a result whose
    /// finished report leaves after this message, and the scheduler would not believe it yet.
    pub(super) fn report(
        &mut self,
        memory_bytes: u64,
        disk_bytes: u64,
        with_keys: bool,
    ) -> Option<MemoryReport> {
        if !self.reports() {
            return None;
        }
        let now = (memory_bytes, disk_bytes, self.paused);
        let u = &mut self.unreported;
        let keys_moved = with_keys && !(u.to_disk.is_empty() && u.to_memory.is_empty());
        if u.last == Some(now) && !keys_moved {
            return None;
        }
        u.last = Some(now);
        let (spilled, unspilled) = if with_keys {
            (
                std::mem::take(&mut u.to_disk),
                std::mem::take(&mut u.to_memory),
            )
        } else {
            (Vec::new(), Vec::new())
        };
        Some(MemoryReport {
            paused: self.paused,
            memory_bytes,
            spilled_bytes: disk_bytes,
            spilled,
            unspilled,
        })
    }

    /// The scheduler must hear about every value on disk again (it registered anew): these
    /// keys, and the figures.
    pub(super) fn report_all_again(&mut self, on_disk: Vec<Key>) {
        self.unreported = Unreported {
            to_disk: on_disk,
            ..Unreported::default()
        };
    }
}
