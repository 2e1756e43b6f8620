//! Adaptive scaling: a LocalCluster that grows under a burst of slow tasks and shrinks back
//! when idle. `cargo run --example adaptive` (about 20 s; `RUST_LOG=info` shows each scaling
//! decision with its reason).
//!
//! It prints `t=SECONDS workers=N` at each adaptive interval, then the result and
//! `max_workers=N final_workers=N recomputed=N` (tasks run more than once: a retired worker's
//! results move to another worker first, so none should be).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use zask::scheduler::core::CoreConfig;
use zask::scheduler::SchedulerConfig;
use zask::{AdaptConfig, Cluster, GetOptions, Graph, Key, LocalCluster, Registry, Value};

/// Slow tasks in the burst, each taking `TASK_MS`.
const TASKS: usize = 32;
const TASK_MS: u64 = 1000;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    // Counts executions: the workers are threads of this process.
    let runs = Arc::new(AtomicUsize::new(0));
    let mut registry = Registry::with_builtins();
    let counter = runs.clone();
    registry.register("slow_square", move |x: i64| {
        counter.fetch_add(1, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(TASK_MS));
        x * x
    });
    // The scheduler queues up to 64 tasks on a worker until it has seen how long they take;
    // there is no work stealing, so a burst would all land on the first worker before the
    // new ones arrive. Slow tasks want a shallow queue: one beyond each thread.
    let scheduler = SchedulerConfig {
        core: CoreConfig {
            worker_queue_extra: 1,
            ..CoreConfig::default()
        },
        ..SchedulerConfig::default()
    };
    let cluster = LocalCluster::builder()
        .workers(1)
        .registry(registry)
        .scheduler_config(scheduler)
        .start()?;
    let config = AdaptConfig::new(1, 4); // every 1 s, target duration 5 s, wait count 3
    let interval = Duration::from_millis(config.interval_ms);
    cluster.adapt(config)?;

    let mut graph = Graph::new();
    let keys: Vec<Key> = (0..TASKS)
        .map(|i| Key::from(format!("square-{i}")))
        .collect();
    for (i, k) in keys.iter().enumerate() {
        graph.insert(k.clone(), ("slow_square", i as i64));
    }
    let client = cluster.client()?;
    let burst = {
        let keys = keys.clone();
        std::thread::spawn(move || {
            let options = GetOptions {
                keep_results: true,
                ..GetOptions::default()
            };
            let value = client.get_with(&graph, keys, options);
            (client, value)
        })
    };

    let start = Instant::now();
    let mut max_workers = 0;
    let mut burst = Some(burst);
    let mut result = None;
    // The burst, then idle time until the cluster is back to one worker (at most 60 s).
    loop {
        std::thread::sleep(interval);
        let workers = cluster.workers()?.len();
        max_workers = max_workers.max(workers);
        println!("t={} workers={workers}", start.elapsed().as_secs());
        if burst.as_ref().is_some_and(|b| b.is_finished()) {
            let (client, value) = burst.take().expect("checked").join().expect("no panic");
            result = Some((client, value?));
        }
        let shrunk = workers == 1 && cluster.started().len() == 1;
        if (result.is_some() && shrunk) || start.elapsed() > Duration::from_secs(60) {
            break;
        }
    }
    let (client, value) = result.ok_or("the burst did not finish in 60 s")?;
    let total: i64 = match &value {
        Value::List(items) => items.iter().filter_map(Value::as_i64).sum(),
        other => return Err(format!("unexpected result {other:?}").into()),
    };
    // The results were kept: they are all still on the cluster, moved off retired workers.
    assert_eq!(client.gather(keys)?, value);
    println!("result: sum of squares 0..{TASKS} = {total}");
    println!(
        "max_workers={max_workers} final_workers={} recomputed={}",
        cluster.workers()?.len(),
        runs.load(Ordering::SeqCst).saturating_sub(TASKS)
    );
    Ok(())
}
