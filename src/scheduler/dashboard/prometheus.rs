//! `/metrics`: a snapshot in Prometheus' text exposition format (version 0.0.4): for each
//! metric a `# HELP` and a `# TYPE` line, then its samples; label values escaped.

use std::fmt::Write;

use super::Snapshot;
use crate::scheduler::core::{PrefixProgress, WorkerFigures};

/// A per-worker family: name, help, the figure.
type WorkerFamily = (&'static str, &'static str, fn(&WorkerFigures) -> u64);
/// A per-prefix family: name, type, help, the figure.
type PrefixFamily = (
    &'static str,
    &'static str,
    &'static str,
    fn(&PrefixProgress) -> u64,
);

/// The whole `/metrics` page for `s`.
pub fn render(s: &Snapshot) -> String {
    let mut out = String::with_capacity(4096);
    let m = &s.core;
    let t = &m.tasks;
    family(
        &mut out,
        "zask_tasks",
        "gauge",
        "Tasks the scheduler tracks, by state.",
    );
    for (state, n) in [
        ("released", t.released),
        ("waiting", t.waiting),
        ("ready", t.ready),
        ("processing", t.processing),
        ("memory", t.memory),
        ("erred", t.erred),
    ] {
        sample(&mut out, "zask_tasks", &[("state", state)], n);
    }
    let gauges: [(&str, &str, u64); 5] = [
        (
            "zask_workers",
            "Workers registered.",
            m.workers.len() as u64,
        ),
        (
            "zask_worker_threads",
            "Threads of all registered workers.",
            m.workers.iter().map(|w| u64::from(w.nthreads)).sum(),
        ),
        (
            "zask_bytes_held",
            "Bytes of the results the workers hold, as they reported their sizes.",
            m.workers.iter().map(|w| w.nbytes).sum(),
        ),
        ("zask_clients", "Clients connected.", m.clients),
        (
            "zask_uptime_seconds",
            "Seconds since the scheduler started.",
            m.now_ms / 1000,
        ),
    ];
    for (name, help, value) in gauges {
        family(&mut out, name, "gauge", help);
        sample(&mut out, name, &[], value);
    }
    let c = &m.counters;
    let counters: [(&str, &str, u64); 9] = [
        (
            "zask_messages_received_total",
            "Messages from workers and clients the scheduler's core handled.",
            c.messages_total,
        ),
        (
            "zask_tasks_finished_total",
            "Tasks whose result a worker reported (a recomputed task counts again).",
            c.tasks_finished_total,
        ),
        (
            "zask_task_failures_total",
            "Tasks that failed themselves (their dependents failing with them not counted).",
            c.task_failures_total,
        ),
        (
            "zask_workers_lost_total",
            "Workers lost without saying goodbye.",
            c.workers_lost_total,
        ),
        (
            "zask_workers_left_total",
            "Workers that left on purpose.",
            c.workers_left_total,
        ),
        (
            "zask_transfers_total",
            "Inputs workers fetched from peers to run their tasks.",
            c.transfers_total,
        ),
        (
            "zask_transfer_bytes_total",
            "Bytes of the inputs workers fetched from peers.",
            c.transfer_bytes_total,
        ),
        (
            "zask_recomputations_total",
            "Results lost with their last holder and computed again.",
            c.recomputations_total,
        ),
        (
            "zask_journal_writes_total",
            "Journal operations written (--state-dir).",
            m.journal_writes_total,
        ),
    ];
    for (name, help, value) in counters {
        family(&mut out, name, "counter", help);
        sample(&mut out, name, &[], value);
    }
    let per_worker: [WorkerFamily; 4] = [
        (
            "zask_worker_bytes_held",
            "Bytes of the results each worker holds.",
            |w| w.nbytes,
        ),
        ("zask_worker_keys", "Results each worker holds.", |w| w.keys),
        (
            "zask_worker_processing",
            "Tasks given to each worker, running or queued.",
            |w| w.processing,
        ),
        (
            "zask_worker_memory_limit_bytes",
            "Each worker's memory limit (0: none).",
            |w| w.memory_limit_bytes,
        ),
    ];
    for (name, help, value) in per_worker {
        family(&mut out, name, "gauge", help);
        for w in &m.workers {
            sample(&mut out, name, &[("worker", &w.address)], value(w));
        }
    }
    let per_prefix: [PrefixFamily; 3] = [
        (
            "zask_prefix_tasks_done_total",
            "counter",
            "Tasks finished, per task prefix.",
            |p| p.done,
        ),
        (
            "zask_prefix_tasks_erred_total",
            "counter",
            "Tasks failed, per task prefix.",
            |p| p.erred,
        ),
        (
            "zask_prefix_tasks_pending",
            "gauge",
            "Tasks waiting, ready or processing, per task prefix.",
            |p| p.pending,
        ),
    ];
    for (name, kind, help, value) in per_prefix {
        family(&mut out, name, kind, help);
        for p in &m.prefixes {
            sample(&mut out, name, &[("prefix", &p.prefix)], value(p));
        }
    }
    out
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn sample(out: &mut String, name: &str, labels: &[(&str, &str)], value: u64) {
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (i, (k, v)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, "{k}=\"{}\"", escape(v));
        }
        out.push('}');
    }
    let _ = writeln!(out, " {value}");
}

/// A label value as the text format wants it: backslash, double quote and newline escaped.
fn escape(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}
