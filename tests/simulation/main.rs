//! A deterministic, seeded simulation of a whole Zask cluster in one process (in the spirit of
//! TigerBeetle's VOPR and quinn-proto's tests): one `SchedulerCore`, a few `WorkerCore`s with a
//! simulated runner each (an in-memory store and a virtual executor), and a few clients, all
//! talking through an in-memory network whose delays come from a seeded RNG. Every message
//! goes through the real codec. Faults (worker crashes, graceful leaves, new workers,
//! partitions, slow peers, slow tasks, scheduler crashes with or without a journal) are drawn
//! from the seed during a fault phase; after it the cluster must converge: every request
//! answered exactly once and correctly (checked against a local reference evaluation with the
//! same `evaluate`), the scheduler's invariants hold after every event, and at the end nothing
//! is left in any worker's store, in the scheduler or in its journal.
//!
//! The simulation runs the shipped code around the cores too: each worker is the real
//! `zask::worker::runtime::WorkerRuntime` (what the worker's IO thread does with each command)
//! over a `zask_storage` memory store, an in-memory transport and a virtual job queue; each
//! client is the real `zask::client::state::ClientState` (pending requests, pings, the
//! silent-scheduler timeout); the journal is the real `MemoryJournal` (what each operation
//! writes, what a restart recovers, and what a crash loses: everything not flushed).
//!
//! `simulated_cluster_survives_random_faults` runs seeds 0..1000 (`ZASK_SIM_SEEDS=N` for another
//! count, `ZASK_SIM_SEED=K` for one seed, with a trace of its events on failure); clients are
//! operators there, as every connection is without authentication.
//! `plain_clients_survive_random_faults_on_their_own_keys` runs seeds 0..100
//! (`ZASK_SIM_CLIENT_SEEDS=N`) with plain clients, so ownership is checked under faults
//! (scheduler crashes included: a scatterer must still own its keys after a restart). The named
//! scenarios (`scenarios.rs`) pin down each bug it found, and a few behaviours that work.
//!
//! Modules: `rng` (the seeded random source), `network` (links, delays, partitions, faults as
//! messages), `sim` (the runner: the scheduler side and the main loop), `workers` and
//! `clients` (the simulated processes around the shipped runtime and client state),
//! `faults` (membership and fault injection), `reference` (the expected answers),
//! `workload` (random graphs, client scripts and whole runs), `scenarios` (named tests).

mod clients;
mod faults;
mod network;
mod reference;
mod rng;
mod scenarios;
mod sim;
mod stories;
mod workers;
mod workload;

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Instant;

use sim::Stats;
use workload::random_sim;
use zask::protocol::ClientRole;

pub(crate) const HEARTBEAT_TIMEOUT_MS: u64 = 500;
pub(crate) const HEARTBEAT_INTERVAL_MS: u64 = 100;
pub(crate) const FETCH_TIMEOUT_MS: u64 = 300;
/// Longer than any round trip to a live worker (two of the longest delays below).
pub(crate) const PROBE_TIMEOUT_MS: u64 = 500;
pub(crate) const ALLOWED_FAILURES: u32 = 3;
/// Every request must be answered this long after the fault phase ends.
pub(crate) const LIVENESS_MS: u64 = 60_000;
/// Clients ping this often while they wait, as `zask::Client` does.
pub(crate) const CLIENT_PING_MS: u64 = 1_000;
/// After the last client is done, let this much time pass before checking for leaks.
pub(crate) const QUIET_MS: u64 = 3_000;
/// A run delivering more events than this is livelocked.
pub(crate) const MAX_EVENTS: u64 = 2_000_000;

pub(crate) type R = Result<(), String>;

// ---- running seeds ----

pub(crate) struct Outcome {
    pub(crate) result: R,
    pub(crate) stats: Stats,
    pub(crate) end_ms: u64,
    pub(crate) trace_hash: u64,
    pub(crate) trace: Vec<String>,
}

pub(crate) fn run_seed(seed: u64, trace: bool) -> Outcome {
    run_seed_as(seed, trace, ClientRole::Operator)
}

/// `run_seed` with every client's messages carrying `role`.
pub(crate) fn run_seed_as(seed: u64, trace: bool, role: ClientRole) -> Outcome {
    let mut sim = match catch_unwind(|| random_sim(seed)) {
        Ok(sim) => sim,
        Err(panic) => {
            return Outcome {
                result: Err(format!("panicked while setting up: {}", panic_text(&panic))),
                stats: Stats::default(),
                end_ms: 0,
                trace_hash: 0,
                trace: Vec::new(),
            }
        }
    };
    if trace {
        sim.trace = Some(VecDeque::new());
    }
    sim.client_role = role;
    let result = catch_unwind(AssertUnwindSafe(|| sim.finish()))
        .unwrap_or_else(|panic| Err(format!("panicked: {}", panic_text(&panic))));
    let result = result.map_err(|e| format!("at {} ms virtual: {e}", sim.now));
    Outcome {
        result,
        stats: sim.stats.clone(),
        end_ms: sim.now,
        trace_hash: sim.trace_hash,
        trace: sim.trace.take().map(Vec::from).unwrap_or_default(),
    }
}

pub(crate) fn panic_text(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "a panic".into())
}

pub(crate) fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

/// Seeds 0..1000 (`ZASK_SIM_SEEDS`), or one (`ZASK_SIM_SEED`). When it was written, 129 of
/// the first 1000 seeds failed; each bug it found has a named regression below.
#[test]
fn simulated_cluster_survives_random_faults() {
    if let Some(seed) = env_u64("ZASK_SIM_SEED") {
        let o = run_seed(seed, true);
        if o.result.is_err() {
            eprintln!("--- last events of seed {seed} ---");
            for line in &o.trace {
                eprintln!("{line}");
            }
        }
        eprintln!(
            "seed {seed}: {:?}, ended at {} ms virtual, trace hash {:016x}",
            o.stats, o.end_ms, o.trace_hash
        );
        if let Err(e) = o.result {
            panic!("seed {seed} failed: {e}\nreplay with ZASK_SIM_SEED={seed}");
        }
        return;
    }
    let n = env_u64("ZASK_SIM_SEEDS").unwrap_or(1000);
    let threads = std::thread::available_parallelism()
        .map(|p| p.get())
        .unwrap_or(2)
        .clamp(1, 8) as u64;
    let started = Instant::now();
    let results: Vec<(u64, Outcome)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || {
                    (0..n)
                        .filter(|seed| seed % threads == t)
                        .map(|seed| (seed, run_seed(seed, false)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("seed runner"))
            .collect()
    });
    let mut total = Stats::default();
    let mut virtual_ms = 0;
    let mut failures: Vec<(u64, String)> = Vec::new();
    for (seed, o) in results {
        total.events += o.stats.events;
        total.messages += o.stats.messages;
        total.executions += o.stats.executions;
        total.requests += o.stats.requests;
        total.crashes += o.stats.crashes;
        total.late_restarted += o.stats.late_restarted;
        total.journal_ops_lost += o.stats.journal_ops_lost;
        total.progress_reports += o.stats.progress_reports;
        virtual_ms += o.end_ms;
        if let Err(e) = o.result {
            failures.push((seed, e));
        }
    }
    failures.sort();
    eprintln!(
        "{n} seeds in {:.1} s on {threads} thread(s): {} requests, {} executions, {} messages, {} crashes, {} s virtual, {} late SchedulerRestarted, {} unflushed journal operations lost in crashes, {} progress reports",
        started.elapsed().as_secs_f64(),
        total.requests,
        total.executions,
        total.messages,
        total.crashes,
        virtual_ms / 1000,
        total.late_restarted,
        total.journal_ops_lost,
        total.progress_reports
    );
    if !failures.is_empty() {
        let mut report = format!("{} of {n} seeds failed:\n", failures.len());
        for (seed, e) in failures.iter().take(10) {
            report += &format!("seed {seed}: {e}\n  replay with ZASK_SIM_SEED={seed}\n");
        }
        let all: Vec<String> = failures.iter().map(|(s, _)| s.to_string()).collect();
        report += &format!("failing seeds: {}\n", all.join(" "));
        if std::env::var("ZASK_SIM_ALL_FAILURES").is_ok() {
            for (seed, e) in &failures {
                eprintln!("seed {seed}: {e}");
            }
        }
        panic!("{report}");
    }
}

#[test]
fn simulation_is_deterministic() {
    for seed in [1, 7, 42] {
        let a = run_seed(seed, false);
        let b = run_seed(seed, false);
        assert_eq!(
            (a.trace_hash, a.end_ms, a.stats.messages),
            (b.trace_hash, b.end_ms, b.stats.messages),
            "seed {seed} ran differently twice; replay with ZASK_SIM_SEED={seed}"
        );
    }
}

/// The random workloads again with plain clients (no operator): each client releases only
/// what it scattered or kept itself, so ownership must never refuse it, and a key two clients
/// kept stays until both released it (nothing may be left once every name is released).
#[test]
fn plain_clients_survive_random_faults_on_their_own_keys() {
    let n = env_u64("ZASK_SIM_CLIENT_SEEDS").unwrap_or(100);
    let mut failures = Vec::new();
    for seed in 0..n {
        let o = run_seed_as(seed, false, ClientRole::Client);
        if let Err(e) = o.result {
            failures.push(format!("seed {seed}: {e}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {n} seeds failed with plain clients:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
