//! Adaptive scaling, the policy alone: from the scheduler's figures and the time, decide
//! whether a cluster should grow, shrink or stay (dask's `Adaptive`). Pure: no IO, no clock
//! (the caller passes `now_ms`), so every rule is unit-tested with figures built by hand;
//! `cluster::Adapter` runs it against a live `Cluster`.
//!
//! The rules, in order:
//! 1. The work: each pending (not finished) task is expected to take its prefix's average run
//!    time (`UNKNOWN_TASK_MS` for a prefix none of whose tasks has finished yet).
//! 2. The wanted workers: that work divided by `target_duration_ms` and by the threads per
//!    worker, rounded up, never more than the workers the tasks that can run at once (ready
//!    or processing) would keep busy: one long task or a chain does not scale up.
//! 3. If the cluster needs more memory (a worker is paused, or the workers with a memory
//!    limit hold more in memory than `TARGET_FRACTION` (60%) of their limits added up, as
//!    dask's), at least twice the registered workers.
//! 4. Clipped to `[minimum, maximum]`.
//! 5. Above the current count (registered plus requested): scale up to it. Below it: cancel
//!    the workers requested but not arrived first (newest first); then suggest retiring the
//!    idle workers holding the least data, and retire one only once it was suggested
//!    `wait_count` decisions in a row (a short lull does not shed workers that the next
//!    wave needs).
//!
//! Every decision carries a reason saying the figures it came from.

use std::collections::BTreeMap;

use crate::protocol::{ClusterStatus, WorkerAddress};
use crate::worker::core::TARGET_FRACTION;

/// What a task of a prefix none of whose tasks has finished is expected to take (dask's
/// default `unknown-task-duration`).
pub const UNKNOWN_TASK_MS: u64 = 500;

/// How adaptive scaling behaves; `AdaptConfig::new(minimum, maximum)` gives the defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdaptConfig {
    /// Never fewer workers (registered plus requested).
    pub minimum: usize,
    /// Never more workers. A `maximum` below `minimum` is raised to it.
    pub maximum: usize,
    /// How often the figures are read and a decision taken. Default: 1000 ms.
    pub interval_ms: u64,
    /// How long the pending work should take on the cluster: the work divided by this is the
    /// number of workers wanted. Default: 5000 ms (dask's 5 s).
    pub target_duration_ms: u64,
    /// How many decisions in a row must suggest retiring a worker before it is retired.
    /// Default: 3 (dask's).
    pub wait_count: u32,
}

impl AdaptConfig {
    /// Between `minimum` and `maximum` workers, with the default interval (1 s), target
    /// duration (5 s) and wait count (3).
    pub fn new(minimum: usize, maximum: usize) -> AdaptConfig {
        AdaptConfig {
            minimum,
            maximum: maximum.max(minimum),
            interval_ms: 1000,
            target_duration_ms: 5000,
            wait_count: 3,
        }
    }
}

/// One registered worker, as the policy sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkerFigures {
    pub address: WorkerAddress,
    /// Tasks it runs or has queued.
    pub processing: u64,
    /// Bytes of the results it holds.
    pub nbytes: u64,
    /// It runs nothing and is not retiring.
    pub idle: bool,
    /// Past its pause fraction: it starts no new task.
    pub paused: bool,
    /// Bytes of the results it holds in memory (as it last reported; 0 without a limit).
    pub memory_bytes: u64,
    /// Its memory limit (0: none).
    pub memory_limit_bytes: u64,
}

/// One task prefix: its pending tasks and the average run time of those that finished.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrefixFigures {
    pub prefix: String,
    pub pending: u64,
    pub average_ms: Option<u64>,
}

/// Everything the policy decides from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterFigures {
    /// The registered workers.
    pub workers: Vec<WorkerFigures>,
    /// Workers the cluster manager started that have not registered yet.
    pub requested: Vec<WorkerAddress>,
    pub prefixes: Vec<PrefixFigures>,
    /// Tasks ready to run, not yet given to a worker.
    pub ready: u64,
    /// Tasks given to workers.
    pub processing: u64,
    /// Task threads of each worker the manager starts (at least 1 is assumed).
    pub threads_per_worker: u32,
}

impl ClusterFigures {
    /// The figures of a scheduler's status, with what only the manager knows: the workers it
    /// started that have not registered, and its threads per worker. A worker in `started`
    /// that the status lists is registered, not requested.
    pub fn from_status(
        status: &ClusterStatus,
        started: &[WorkerAddress],
        threads_per_worker: u32,
    ) -> ClusterFigures {
        let workers: Vec<WorkerFigures> = status
            .workers
            .iter()
            .map(|w| WorkerFigures {
                address: w.address.clone(),
                processing: w.processing,
                nbytes: w.nbytes,
                idle: w.idle,
                paused: w.memory.paused,
                memory_bytes: w.memory.memory_bytes,
                memory_limit_bytes: w.memory_limit_bytes,
            })
            .collect();
        let requested = started
            .iter()
            .filter(|a| !workers.iter().any(|w| &w.address == *a))
            .cloned()
            .collect();
        ClusterFigures {
            workers,
            requested,
            prefixes: status
                .prefixes
                .iter()
                .map(|p| PrefixFigures {
                    prefix: p.prefix.clone(),
                    pending: p.pending,
                    average_ms: p.average_ms,
                })
                .collect(),
            ready: status.ready,
            processing: status.processing,
            threads_per_worker,
        }
    }
}

/// What the cluster should do now; each carries its reason, for the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Nothing to do (the count is right, or a retirement waits for more suggestions, or no
    /// worker is idle).
    Hold { reason: String },
    /// Grow to `to` workers in all (registered plus requested).
    ScaleUp { to: usize, reason: String },
    /// Cancel these workers, requested but not registered.
    CancelRequested {
        workers: Vec<WorkerAddress>,
        reason: String,
    },
    /// Retire these registered workers gracefully (their data moves away first).
    Retire {
        workers: Vec<WorkerAddress>,
        reason: String,
    },
}

impl Decision {
    /// Why: the figures the decision came from.
    pub fn reason(&self) -> &str {
        match self {
            Decision::Hold { reason }
            | Decision::ScaleUp { reason, .. }
            | Decision::CancelRequested { reason, .. }
            | Decision::Retire { reason, .. } => reason,
        }
    }
}

impl std::fmt::Display for Decision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let list = |ws: &[WorkerAddress]| {
            ws.iter()
                .map(WorkerAddress::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        };
        match self {
            Decision::Hold { reason } => write!(f, "hold: {reason}"),
            Decision::ScaleUp { to, reason } => write!(f, "scale up to {to}: {reason}"),
            Decision::CancelRequested { workers, reason } => {
                write!(f, "cancel requested {}: {reason}", list(workers))
            }
            Decision::Retire { workers, reason } => {
                write!(f, "retire {}: {reason}", list(workers))
            }
        }
    }
}

/// The policy's state between decisions.
#[derive(Clone, Debug)]
pub struct Adaptive {
    config: AdaptConfig,
    /// Registered workers suggested for retirement, and in how many decisions in a row.
    suggested: BTreeMap<WorkerAddress, u32>,
    /// Workers requested and not yet arrived, and since when (ms): the newest are cancelled
    /// first.
    requested: BTreeMap<WorkerAddress, u64>,
}

impl Adaptive {
    pub fn new(config: AdaptConfig) -> Adaptive {
        Adaptive {
            config,
            suggested: BTreeMap::new(),
            requested: BTreeMap::new(),
        }
    }

    pub fn config(&self) -> &AdaptConfig {
        &self.config
    }

    /// New bounds and settings; retirement suggestions start counting again.
    pub fn set_config(&mut self, config: AdaptConfig) {
        self.config = config;
        self.suggested.clear();
    }

    /// Whether the cluster needs more memory, with the figures in words: a worker is paused,
    /// or the workers with a memory limit hold more in memory than `TARGET_FRACTION` of
    /// their limits added up.
    pub fn needs_memory(figures: &ClusterFigures) -> Option<String> {
        let paused = figures.workers.iter().filter(|w| w.paused).count();
        if paused > 0 {
            return Some(format!("{paused} workers paused for memory"));
        }
        let limited = figures.workers.iter().filter(|w| w.memory_limit_bytes > 0);
        let (in_memory, limits) = limited.fold((0u64, 0u64), |(m, l), w| {
            (
                m.saturating_add(w.memory_bytes),
                l.saturating_add(w.memory_limit_bytes),
            )
        });
        let mb = |b: u64| b / 1_000_000;
        (limits > 0 && in_memory as f64 > limits as f64 * TARGET_FRACTION).then(|| {
            format!(
                "{} MB in memory > {}% of the workers' {} MB of limits",
                mb(in_memory),
                TARGET_FRACTION * 100.0,
                mb(limits)
            )
        })
    }

    /// The number of workers the figures call for, clipped to the bounds, with the figures
    /// in words.
    pub fn target(&self, figures: &ClusterFigures) -> (usize, String) {
        let threads = u64::from(figures.threads_per_worker.max(1));
        let (mut pending, mut work_ms) = (0u64, 0u64);
        for p in &figures.prefixes {
            pending += p.pending;
            work_ms = work_ms.saturating_add(
                p.pending
                    .saturating_mul(p.average_ms.unwrap_or(UNKNOWN_TASK_MS)),
            );
        }
        let per_worker_ms = self
            .config
            .target_duration_ms
            .max(1)
            .saturating_mul(threads);
        let wanted = work_ms.div_ceil(per_worker_ms);
        let runnable = figures.ready + figures.processing;
        let runnable_workers = runnable.div_ceil(threads);
        let mut unclipped = wanted.min(runnable_workers) as usize;
        let memory = match Adaptive::needs_memory(figures) {
            Some(why) => {
                let twice = 2 * figures.workers.len();
                unclipped = unclipped.max(twice);
                format!(
                    "; more memory needed ({why}): at least twice the {} workers, {twice}",
                    figures.workers.len()
                )
            }
            None => String::new(),
        };
        let maximum = self.config.maximum.max(self.config.minimum);
        let target = unclipped.clamp(self.config.minimum, maximum);
        let why = format!(
            "{pending} pending tasks ≈ {} of work / {} target duration / {threads} threads per worker = {wanted} workers; {runnable} tasks can run at once ({runnable_workers} workers){memory}; clipped to [{}, {maximum}]: {target}",
            seconds(work_ms),
            seconds(self.config.target_duration_ms),
            self.config.minimum,
        );
        (target, why)
    }

    /// The decision at `now_ms` for these figures (see the module comment for the rules).
    pub fn decide(&mut self, now_ms: u64, figures: &ClusterFigures) -> Decision {
        self.requested.retain(|a, _| figures.requested.contains(a));
        for a in &figures.requested {
            self.requested.entry(a.clone()).or_insert(now_ms);
        }
        let (target, why) = self.target(figures);
        let registered = figures.workers.len();
        let current = registered + figures.requested.len();
        let counts = format!(
            "{registered} registered + {} requested workers",
            figures.requested.len()
        );
        if target >= current {
            self.suggested.clear();
            if target == current {
                return Decision::Hold {
                    reason: format!("{counts}; {why}"),
                };
            }
            return Decision::ScaleUp {
                to: target,
                reason: format!("{counts}; {why}"),
            };
        }
        let excess = current - target;
        if !self.requested.is_empty() {
            // Requested workers do no work yet: cancel them before retiring anyone.
            self.suggested.clear();
            let mut newest: Vec<(&WorkerAddress, u64)> =
                self.requested.iter().map(|(a, t)| (a, *t)).collect();
            newest.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
            let workers: Vec<WorkerAddress> = newest
                .into_iter()
                .take(excess)
                .map(|(a, _)| a.clone())
                .collect();
            for a in &workers {
                self.requested.remove(a);
            }
            return Decision::CancelRequested {
                reason: format!(
                    "{counts}, {excess} too many: cancel {} not arrived first; {why}",
                    workers.len()
                ),
                workers,
            };
        }
        let mut idle: Vec<&WorkerFigures> = figures.workers.iter().filter(|w| w.idle).collect();
        idle.sort_by(|a, b| {
            a.nbytes
                .cmp(&b.nbytes)
                .then_with(|| a.address.cmp(&b.address))
        });
        let chosen: Vec<&WorkerFigures> = idle.into_iter().take(excess).collect();
        self.suggested
            .retain(|a, _| chosen.iter().any(|w| &w.address == a));
        let wait = self.config.wait_count.max(1);
        let mut firm = Vec::new();
        let mut counted = Vec::new();
        for w in &chosen {
            let n = self.suggested.entry(w.address.clone()).or_insert(0);
            *n += 1;
            if *n >= wait {
                firm.push(w.address.clone());
            } else {
                counted.push(format!("{} ({n}/{wait}, {} bytes)", w.address, w.nbytes));
            }
        }
        if chosen.is_empty() {
            return Decision::Hold {
                reason: format!("{counts}, {excess} too many but none is idle; {why}"),
            };
        }
        if firm.is_empty() {
            return Decision::Hold {
                reason: format!(
                    "{counts}, {excess} too many; suggested to retire: {}; {why}",
                    counted.join(", ")
                ),
            };
        }
        for a in &firm {
            self.suggested.remove(a);
        }
        Decision::Retire {
            reason: format!(
                "{counts}, {excess} too many; {} idle, least data first, suggested {wait} times in a row; {why}",
                firm.len()
            ),
            workers: firm,
        }
    }
}

/// A duration for a reader: "12.5 s", "250 ms".
fn seconds(ms: u64) -> String {
    if ms >= 1000 {
        format!("{:.1} s", ms as f64 / 1000.0)
    } else {
        format!("{ms} ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(n: u32) -> WorkerAddress {
        WorkerAddress::from(format!("tcp://w{n}:1"))
    }

    fn worker(n: u32, processing: u64, nbytes: u64) -> WorkerFigures {
        WorkerFigures {
            address: addr(n),
            processing,
            nbytes,
            idle: processing == 0,
            paused: false,
            memory_bytes: 0,
            memory_limit_bytes: 0,
        }
    }

    /// A worker with a memory limit of `limit` holding `memory` bytes in memory.
    fn limited(n: u32, processing: u64, memory: u64, limit: u64, paused: bool) -> WorkerFigures {
        WorkerFigures {
            memory_bytes: memory,
            memory_limit_bytes: limit,
            paused,
            ..worker(n, processing, memory)
        }
    }

    #[test]
    fn a_paused_worker_means_the_cluster_needs_memory_twice_the_workers() {
        let mut a = Adaptive::new(config(1, 10));
        // No work at all: the work alone would shrink the cluster.
        let figures = ClusterFigures {
            workers: vec![
                limited(1, 0, 250, 300, true),
                limited(2, 0, 10, 300, false),
                limited(3, 0, 0, 300, false),
            ],
            threads_per_worker: 1,
            ..ClusterFigures::default()
        };
        let (target, why) = a.target(&figures);
        assert_eq!(target, 6, "{why}");
        assert!(why.contains("1 workers paused for memory"), "{why}");
        assert!(why.contains("at least twice the 3 workers, 6"), "{why}");
        let decision = a.decide(0, &figures);
        assert!(
            matches!(decision, Decision::ScaleUp { to: 6, .. }),
            "{decision}"
        );
        // Still clipped to the maximum.
        let mut small = Adaptive::new(config(1, 4));
        assert_eq!(small.target(&figures).0, 4);
        assert!(matches!(
            small.decide(0, &figures),
            Decision::ScaleUp { to: 4, .. }
        ));
    }

    #[test]
    fn memory_past_the_target_fraction_of_the_limits_needs_memory() {
        let a = Adaptive::new(config(0, 10));
        let at = |memory: u64| ClusterFigures {
            workers: vec![
                limited(1, 0, memory, 1000, false),
                limited(2, 0, 0, 1000, false),
                // No limit: counts neither memory nor limit.
                worker(3, 0, 5000),
            ],
            threads_per_worker: 1,
            ..ClusterFigures::default()
        };
        // 1200 of 2000 bytes of limits: exactly 60%, not past it.
        assert_eq!(Adaptive::needs_memory(&at(1200)), None);
        assert_eq!(a.target(&at(1200)).0, 0);
        let why = Adaptive::needs_memory(&at(1201)).expect("past 60%");
        assert!(why.contains("60% of the workers'"), "{why}");
        assert_eq!(a.target(&at(1201)).0, 6, "twice the 3 workers");
        // Without any limit, memory never calls for workers.
        let unlimited = ClusterFigures {
            workers: vec![worker(1, 0, u64::MAX)],
            threads_per_worker: 1,
            ..ClusterFigures::default()
        };
        assert_eq!(Adaptive::needs_memory(&unlimited), None);
    }

    #[test]
    fn the_memory_rule_never_lowers_what_the_work_asks_for() {
        let a = Adaptive::new(config(0, 100));
        let figures = ClusterFigures {
            workers: vec![limited(1, 1, 900, 1000, false)],
            prefixes: vec![prefix("slow", 40, Some(5000))],
            ready: 39,
            processing: 1,
            threads_per_worker: 1,
            ..ClusterFigures::default()
        };
        // 40 tasks of 5 s over a 5 s target: 40 workers; memory alone would ask for 2.
        assert_eq!(a.target(&figures).0, 40);
    }

    fn prefix(name: &str, pending: u64, average_ms: Option<u64>) -> PrefixFigures {
        PrefixFigures {
            prefix: name.into(),
            pending,
            average_ms,
        }
    }

    fn config(minimum: usize, maximum: usize) -> AdaptConfig {
        AdaptConfig::new(minimum, maximum)
    }

    /// `n` idle workers holding nothing, no work.
    fn idle_cluster(n: u32) -> ClusterFigures {
        ClusterFigures {
            workers: (1..=n).map(|i| worker(i, 0, 0)).collect(),
            threads_per_worker: 1,
            ..ClusterFigures::default()
        }
    }

    #[test]
    fn the_defaults_are_dasks() {
        let c = AdaptConfig::new(1, 4);
        assert_eq!(
            (c.target_duration_ms, c.wait_count, c.interval_ms),
            (5000, 3, 1000)
        );
        assert_eq!(
            AdaptConfig::new(3, 1).maximum,
            3,
            "maximum raised to minimum"
        );
    }

    #[test]
    fn the_target_is_the_expected_work_over_the_target_duration() {
        let a = Adaptive::new(config(0, 100));
        let figures = ClusterFigures {
            prefixes: vec![
                prefix("slow", 20, Some(2000)),
                prefix("fast", 100, Some(10)),
            ],
            ready: 120,
            threads_per_worker: 1,
            ..ClusterFigures::default()
        };
        // 40 s + 1 s of work over 5 s: 8.2, rounded up.
        let (target, why) = a.target(&figures);
        assert_eq!(target, 9, "{why}");
        assert!(why.contains("120 pending tasks"), "{why}");
    }

    #[test]
    fn unknown_prefixes_count_as_half_a_second() {
        let a = Adaptive::new(config(0, 100));
        let figures = ClusterFigures {
            prefixes: vec![prefix("new", 30, None)],
            ready: 30,
            threads_per_worker: 1,
            ..ClusterFigures::default()
        };
        // 30 × 500 ms = 15 s over 5 s.
        assert_eq!(a.target(&figures).0, 3);
    }

    #[test]
    fn threads_per_worker_divide_the_target() {
        let a = Adaptive::new(config(0, 100));
        let figures = ClusterFigures {
            prefixes: vec![prefix("slow", 40, Some(1000))],
            ready: 40,
            threads_per_worker: 4,
            ..ClusterFigures::default()
        };
        // 40 s over 5 s = 8 threads' worth: 2 workers of 4 threads.
        assert_eq!(a.target(&figures).0, 2);
    }

    #[test]
    fn a_long_task_or_a_chain_does_not_scale_up() {
        let a = Adaptive::new(config(0, 100));
        // One task of a minute: 12 target durations of work, but it runs on one worker.
        let one_long = ClusterFigures {
            workers: vec![worker(1, 1, 0)],
            prefixes: vec![prefix("long", 1, Some(60_000))],
            processing: 1,
            threads_per_worker: 1,
            ..ClusterFigures::default()
        };
        assert_eq!(a.target(&one_long).0, 1);
        // A chain of 10 such tasks: only its head can run.
        let chain = ClusterFigures {
            prefixes: vec![prefix("step", 10, Some(60_000))],
            processing: 1,
            ..one_long
        };
        let (target, why) = a.target(&chain);
        assert_eq!(target, 1, "{why}");
    }

    #[test]
    fn the_target_is_clipped_to_the_bounds() {
        let a = Adaptive::new(config(2, 4));
        let busy = ClusterFigures {
            prefixes: vec![prefix("slow", 100, Some(5000))],
            ready: 100,
            threads_per_worker: 1,
            ..ClusterFigures::default()
        };
        assert_eq!(a.target(&busy).0, 4);
        assert_eq!(a.target(&ClusterFigures::default()).0, 2);
    }

    #[test]
    fn a_burst_scales_up_at_once_with_the_figures_in_the_reason() {
        let mut a = Adaptive::new(config(1, 4));
        let figures = ClusterFigures {
            prefixes: vec![prefix("slow", 40, Some(1000))],
            ready: 39,
            processing: 1,
            ..idle_cluster(1)
        };
        let d = a.decide(0, &figures);
        match &d {
            Decision::ScaleUp { to: 4, reason } => {
                assert!(reason.contains("40 pending tasks"), "{reason}");
                assert!(reason.contains("clipped to [1, 4]"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_right_count_holds() {
        let mut a = Adaptive::new(config(2, 4));
        let d = a.decide(0, &idle_cluster(2));
        assert!(matches!(d, Decision::Hold { .. }), "{d:?}");
    }

    #[test]
    fn requested_workers_count_and_are_cancelled_first() {
        let mut a = Adaptive::new(config(1, 4));
        let figures = ClusterFigures {
            requested: vec![addr(8), addr(9)],
            ..idle_cluster(2)
        };
        // 2 registered + 2 requested, 3 too many: both requested go, at once, before any
        // registered worker is suggested.
        match a.decide(0, &figures) {
            Decision::CancelRequested { workers, reason } => {
                assert_eq!(workers, vec![addr(8), addr(9)]);
                assert!(reason.contains("2 requested"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        // Only one too many: the newest is cancelled.
        let mut a = Adaptive::new(config(3, 4));
        a.decide(
            0,
            &ClusterFigures {
                requested: vec![addr(8)],
                ..idle_cluster(2)
            },
        );
        let d = a.decide(
            1000,
            &ClusterFigures {
                requested: vec![addr(8), addr(9)],
                ..idle_cluster(2)
            },
        );
        assert!(
            matches!(&d, Decision::CancelRequested { workers, .. } if *workers == vec![addr(9)]),
            "{d:?}"
        );
    }

    #[test]
    fn requested_workers_count_towards_a_scale_up() {
        let mut a = Adaptive::new(config(1, 4));
        let figures = ClusterFigures {
            prefixes: vec![prefix("slow", 40, Some(1000))],
            ready: 40,
            requested: vec![addr(2), addr(3), addr(4)],
            ..idle_cluster(1)
        };
        let d = a.decide(0, &figures);
        assert!(matches!(d, Decision::Hold { .. }), "{d:?}");
    }

    #[test]
    fn a_worker_is_retired_only_after_wait_count_suggestions_in_a_row() {
        let mut a = Adaptive::new(config(1, 4));
        let figures = idle_cluster(2);
        for i in 0..2 {
            match a.decide(i * 1000, &figures) {
                Decision::Hold { reason } => {
                    assert!(reason.contains(&format!("({}/3", i + 1)), "{reason}")
                }
                other => panic!("{other:?}"),
            }
        }
        match a.decide(2000, &figures) {
            Decision::Retire { workers, reason } => {
                assert_eq!(workers, vec![addr(1)]);
                assert!(reason.contains("3 times in a row"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_busy_moment_resets_the_suggestions() {
        let mut a = Adaptive::new(config(1, 4));
        let idle = idle_cluster(2);
        a.decide(0, &idle);
        a.decide(1000, &idle);
        // A burst comes: both are needed, the count starts over.
        let busy = ClusterFigures {
            prefixes: vec![prefix("slow", 2, Some(10_000))],
            processing: 2,
            workers: vec![worker(1, 1, 0), worker(2, 1, 0)],
            threads_per_worker: 1,
            ..ClusterFigures::default()
        };
        assert!(matches!(a.decide(2000, &busy), Decision::Hold { .. }));
        for t in [3000, 4000] {
            let d = a.decide(t, &idle);
            assert!(matches!(d, Decision::Hold { .. }), "{d:?}");
        }
        assert!(matches!(a.decide(5000, &idle), Decision::Retire { .. }));
    }

    #[test]
    fn scaling_down_picks_idle_workers_holding_the_least_data_first() {
        let mut a = Adaptive::new(AdaptConfig {
            wait_count: 1,
            ..config(1, 4)
        });
        let figures = ClusterFigures {
            workers: vec![
                worker(1, 0, 5000),
                worker(2, 3, 0), // busy: never chosen
                worker(3, 0, 10),
                worker(4, 0, 700),
            ],
            prefixes: vec![prefix("slow", 3, Some(100))],
            processing: 3,
            threads_per_worker: 1,
            ..ClusterFigures::default()
        };
        // The target is 1: 3 too many, of which 3 are idle: the least data first.
        match a.decide(0, &figures) {
            Decision::Retire { workers, .. } => {
                assert_eq!(workers, vec![addr(3), addr(4), addr(1)])
            }
            other => panic!("{other:?}"),
        }
        // Two too many: the two holding the least.
        let mut a = Adaptive::new(AdaptConfig {
            wait_count: 1,
            ..config(2, 4)
        });
        match a.decide(0, &figures) {
            Decision::Retire { workers, .. } => assert_eq!(workers, vec![addr(3), addr(4)]),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn with_no_idle_worker_nothing_is_retired() {
        let mut a = Adaptive::new(AdaptConfig {
            wait_count: 1,
            ..config(1, 4)
        });
        let figures = ClusterFigures {
            workers: vec![worker(1, 1, 0), worker(2, 1, 0)],
            prefixes: vec![prefix("quick", 2, Some(10))],
            processing: 2,
            threads_per_worker: 1,
            ..ClusterFigures::default()
        };
        match a.decide(0, &figures) {
            Decision::Hold { reason } => assert!(reason.contains("none is idle"), "{reason}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn new_bounds_take_effect_and_restart_the_count() {
        let mut a = Adaptive::new(config(1, 4));
        let idle = idle_cluster(3);
        a.decide(0, &idle);
        a.decide(1000, &idle);
        a.set_config(config(3, 6));
        assert!(matches!(a.decide(2000, &idle), Decision::Hold { .. }));
        a.set_config(config(1, 6));
        for t in [3000, 4000] {
            assert!(matches!(a.decide(t, &idle), Decision::Hold { .. }));
        }
        match a.decide(5000, &idle) {
            Decision::Retire { workers, .. } => assert_eq!(workers.len(), 2),
            other => panic!("{other:?}"),
        }
        a.set_config(config(5, 6));
        assert!(matches!(
            a.decide(6000, &idle),
            Decision::ScaleUp { to: 5, .. }
        ));
    }

    #[test]
    fn figures_from_a_status_tell_registered_from_requested() {
        let status = ClusterStatus {
            address_to_workers: String::new(),
            address_to_clients: String::new(),
            workers: vec![crate::protocol::WorkerInfo {
                address: addr(1),
                name: "w1".into(),
                pid: 1,
                nthreads: 2,
                memory_limit_bytes: 0,
                store: "memory".into(),
                keys: vec![],
                processing: 0,
                runs_python: false,
                nbytes: 64,
                idle: true,
                memory: crate::protocol::WorkerMemory {
                    paused: true,
                    memory_bytes: 48,
                    spilled_bytes: 16,
                    spilled_keys: vec![],
                },
            }],
            tasks: 0,
            processing: 0,
            in_memory: 0,
            clients: 0,
            ready: 0,
            waiting: 0,
            prefixes: vec![],
        };
        let figures = ClusterFigures::from_status(&status, &[addr(1), addr(2)], 2);
        assert_eq!(
            figures.workers,
            vec![WorkerFigures {
                address: addr(1),
                processing: 0,
                nbytes: 64,
                idle: true,
                paused: true,
                memory_bytes: 48,
                memory_limit_bytes: 0,
            }]
        );
        assert_eq!(figures.requested, vec![addr(2)]);
    }
}
