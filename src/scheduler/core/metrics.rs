//! Part: the scheduler's running counts (messages handled, tasks finished and failed, worker
//! losses, transfers, recomputations), per task prefix the tasks done and erred, and a bounded
//! ring of recent task runs (the dashboard's task stream). Nothing here decides anything: the
//! other parts announce what happened and `SchedulerCore::metrics` reads it out, with figures
//! from the task table and the worker registry, for the dashboard and `/metrics`.

use std::collections::VecDeque;

use rustc_hash::FxHashMap as HashMap;
use serde::Serialize;

use crate::graph::Key;

/// Recent task runs kept for the task stream; the oldest goes first. 1,000: a few seconds of a
/// busy cluster, a few hundred bytes each (about 200 KB at most).
pub const TASK_STREAM_MAX: usize = 1_000;

/// Task prefixes counted (done, erred); a new one beyond is counted under `OTHER_PREFIX`, so
/// a graph with a million distinct key names cannot grow the table without bound.
pub const PREFIXES_MAX: usize = 1_000;

/// Where the prefixes beyond `PREFIXES_MAX` are counted.
pub const OTHER_PREFIX: &str = "(other)";

/// Counts since the scheduler started (never decrease).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counters {
    /// Messages from workers and clients the core handled (its events).
    pub messages_total: u64,
    /// Tasks whose result a worker reported (a recomputed task counts again).
    pub tasks_finished_total: u64,
    /// Tasks that failed themselves: a worker reported an error, or the scheduler gave up on
    /// them (killed too many workers, no worker may run them, scattered data lost). Their
    /// dependents failing with them are not counted here.
    pub task_failures_total: u64,
    /// Workers lost without saying goodbye (killed, silent, connection dropped).
    pub workers_lost_total: u64,
    /// Workers that left on purpose (goodbye, retired, closed).
    pub workers_left_total: u64,
    /// Inputs workers fetched from peers to run their tasks, as they reported them.
    pub transfers_total: u64,
    /// The bytes of those inputs.
    pub transfer_bytes_total: u64,
    /// Results lost with their last holder and computed again from their lineage.
    pub recomputations_total: u64,
}

/// One task run for the task stream: which worker ran what, from assignment to report, in the
/// core's milliseconds (the `now_ms` the IO layer passes).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TaskRun {
    pub key: String,
    pub prefix: String,
    pub worker: String,
    pub start_ms: u64,
    pub end_ms: u64,
}

/// What the dashboard and `/metrics` read of the scheduler (`SchedulerCore::metrics`): the
/// part's counters and task stream with the task table's and the worker registry's figures.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct CoreMetrics {
    /// The core's clock (ms) when this was read; the task stream's times are on it.
    pub now_ms: u64,
    pub counters: Counters,
    /// Journal operations written (the outbox's count; 0 without `--state-dir`).
    pub journal_writes_total: u64,
    pub tasks: TaskCounts,
    pub clients: u64,
    /// Sorted by address.
    pub workers: Vec<WorkerFigures>,
    /// Sorted by prefix.
    pub prefixes: Vec<PrefixProgress>,
    /// Oldest first, at most `TASK_STREAM_MAX`.
    pub task_stream: Vec<TaskRun>,
}

/// The tasks the scheduler tracks, by state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TaskCounts {
    pub total: u64,
    pub released: u64,
    pub waiting: u64,
    pub ready: u64,
    pub processing: u64,
    pub memory: u64,
    pub erred: u64,
}

/// One worker as the dashboard shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct WorkerFigures {
    pub address: String,
    pub name: String,
    pub nthreads: u32,
    /// 0: no limit.
    pub memory_limit_bytes: u64,
    /// The bytes of the results it holds (as it reported their sizes).
    pub nbytes: u64,
    /// Results it holds.
    pub keys: u64,
    /// Tasks given to it, running or queued there.
    pub processing: u64,
    pub retiring: bool,
    pub runs_python: bool,
}

/// Progress of one task prefix: done and erred since the start, pending now.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PrefixProgress {
    pub prefix: String,
    /// Tasks finished (a recomputed task counts again).
    pub done: u64,
    /// Tasks failed (themselves or through an input).
    pub erred: u64,
    /// Tasks waiting, ready or processing now.
    pub pending: u64,
}

#[derive(Clone, Copy, Debug, Default)]
struct PrefixCounts {
    done: u64,
    erred: u64,
}

/// The part: counters, per-prefix counts and the task stream.
#[derive(Default)]
pub(super) struct Metrics {
    counters: Counters,
    prefixes: HashMap<Box<str>, PrefixCounts>,
    stream: VecDeque<TaskRun>,
}

impl Metrics {
    pub(super) fn message(&mut self) {
        self.counters.messages_total += 1;
    }

    /// Task `key` of `prefix` finished on `worker`, given to it at `start_ms`. Once the ring is
    /// full, the oldest run's strings are reused for the new one: nothing allocated per task.
    pub(super) fn task_finished(
        &mut self,
        key: &Key,
        prefix: &str,
        worker: &str,
        start_ms: u64,
        end_ms: u64,
    ) {
        use std::fmt::Write;
        self.counters.tasks_finished_total += 1;
        self.prefix(prefix).done += 1;
        let mut run = if self.stream.len() >= TASK_STREAM_MAX {
            self.stream.pop_front().expect("the ring is full")
        } else {
            TaskRun {
                key: String::new(),
                prefix: String::new(),
                worker: String::new(),
                start_ms,
                end_ms,
            }
        };
        run.key.clear();
        write!(run.key, "{key}").expect("writing to a String cannot fail");
        run.prefix.clear();
        run.prefix.push_str(prefix);
        run.worker.clear();
        run.worker.push_str(worker);
        run.start_ms = start_ms;
        run.end_ms = end_ms;
        self.stream.push_back(run);
    }

    /// A task failed: itself (`cause`), or through an input.
    pub(super) fn task_erred(&mut self, prefix: &str, cause: bool) {
        if cause {
            self.counters.task_failures_total += 1;
        }
        self.prefix(prefix).erred += 1;
    }

    pub(super) fn worker_removed(&mut self, unexpected: bool) {
        if unexpected {
            self.counters.workers_lost_total += 1;
        } else {
            self.counters.workers_left_total += 1;
        }
    }

    pub(super) fn fetched(&mut self, inputs: &[(crate::graph::Key, u64)]) {
        self.counters.transfers_total += inputs.len() as u64;
        self.counters.transfer_bytes_total += inputs.iter().map(|(_, b)| *b).sum::<u64>();
    }

    pub(super) fn recomputed(&mut self) {
        self.counters.recomputations_total += 1;
    }

    pub(super) fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Done and erred counts of `prefix` (zeros when never counted).
    pub(super) fn prefix_counts(&self, prefix: &str) -> (u64, u64) {
        let c = self.prefixes.get(prefix).copied().unwrap_or_default();
        (c.done, c.erred)
    }

    /// Every counted prefix with its done and erred counts.
    pub(super) fn prefixes(&self) -> impl Iterator<Item = (&str, u64, u64)> {
        self.prefixes
            .iter()
            .map(|(p, c)| (p.as_ref(), c.done, c.erred))
    }

    pub(super) fn task_stream(&self) -> impl Iterator<Item = &TaskRun> {
        self.stream.iter()
    }

    fn prefix(&mut self, prefix: &str) -> &mut PrefixCounts {
        let known = self.prefixes.contains_key(prefix);
        let key: &str = if known || self.prefixes.len() < PREFIXES_MAX {
            prefix
        } else {
            OTHER_PREFIX
        };
        if !self.prefixes.contains_key(key) {
            self.prefixes.insert(key.into(), PrefixCounts::default());
        }
        self.prefixes.get_mut(key).expect("inserted just above")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_task_stream_keeps_only_the_most_recent_runs() {
        let mut m = Metrics::default();
        for i in 0..TASK_STREAM_MAX as u64 + 5 {
            m.task_finished(&Key::Str(format!("x-{i}")), "x", "w", i, i + 1);
        }
        assert_eq!(m.task_stream().count(), TASK_STREAM_MAX);
        assert_eq!(m.task_stream().next().map(|r| r.start_ms), Some(5));
        // The runs that reuse the oldest entries' strings say what they are, not what was.
        let last = TASK_STREAM_MAX as u64 + 4;
        let newest = m.task_stream().last().expect("runs kept");
        assert_eq!(
            (
                newest.key.as_str(),
                newest.prefix.as_str(),
                newest.worker.as_str()
            ),
            (format!("x-{last}").as_str(), "x", "w")
        );
        assert_eq!((newest.start_ms, newest.end_ms), (last, last + 1));
        assert_eq!(m.task_stream().next().map(|r| r.key.as_str()), Some("x-5"));
        assert_eq!(
            m.counters().tasks_finished_total,
            TASK_STREAM_MAX as u64 + 5
        );
        assert_eq!(m.prefix_counts("x"), (TASK_STREAM_MAX as u64 + 5, 0));
    }

    #[test]
    fn prefixes_beyond_the_bound_are_counted_together() {
        let mut m = Metrics::default();
        for i in 0..PREFIXES_MAX + 3 {
            m.task_erred(&format!("p{i}"), true);
        }
        assert_eq!(m.prefixes().count(), PREFIXES_MAX + 1);
        assert_eq!(m.prefix_counts(OTHER_PREFIX), (0, 3));
        assert_eq!(m.prefix_counts("p0"), (0, 1));
        assert_eq!(m.counters().task_failures_total, PREFIXES_MAX as u64 + 3);
    }
}
