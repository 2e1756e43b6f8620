//! `zask-bench`: the peer benchmark scenarios (same names, arguments and JSON fields as
//! benches/peers/dask_peer.py; `benches/compare.sh` runs both side by side), run against a
//! cluster of real processes that this binary starts: a `zask-scheduler` and W `zask-worker`s
//! with one thread each.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use zask::graph::key;
use zask::protocol::{WorkerAddress, WorkerSelector};
use zask::{Client, GetOptions, Graph, Key, KeySpec, Value};

#[derive(Clone, Copy, Debug, PartialEq, ValueEnum)]
enum Scenario {
    /// N independent inc tasks in one graph, all results gathered.
    Independent,
    /// Binary-tree sum over N leaves (N inc + N-1 add tasks).
    Tree,
    /// N sequential gets of one tiny task.
    Latency,
    /// 400 items in 200 partitions, each doubled after 50 ms, summed (4 workers).
    Bag,
    /// N bytes made on worker A, their length computed on worker B.
    Transfer,
    /// Like independent with N = 100,000 by default; reports the scheduler's peak RSS.
    Scale,
    /// N independent tasks (100,000) on a scheduler with a state dir; the scheduler is
    /// SIGKILLed once they run and restarted: reports how long until it resumes the graph.
    Restart,
}

/// How the faulted bag kills its workers.
#[derive(Clone, Copy, Debug, PartialEq, ValueEnum)]
enum Fault {
    Sigterm,
    Sigkill,
}

impl Fault {
    fn signal(self) -> libc::c_int {
        match self {
            Fault::Sigterm => libc::SIGTERM,
            Fault::Sigkill => libc::SIGKILL,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Fault::Sigterm => "sigterm",
            Fault::Sigkill => "sigkill",
        }
    }
}

/// Tasks in the calibration run of a large `scale` run (see `memory_check`).
const CALIBRATION_TASKS: usize = 100_000;

/// Runs one benchmark scenario on a fresh cluster of real processes and prints one JSON line.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    scenario: Scenario,
    /// Worker processes (one thread each).
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Problem size (default depends on the scenario, as in the peer script).
    #[arg(long)]
    n: Option<usize>,
    /// Runs (each on a fresh cluster); medians are reported.
    #[arg(long, default_value_t = 1)]
    repeat: usize,
    /// Use zero workers: they report every task done without running it, so only the
    /// scheduler's own cost is measured. Results are not checked.
    #[arg(long)]
    zero: bool,
    /// bag: kill a random unprotected worker every 0.5 s while it runs, with SIGTERM
    /// (`--faults`, the default: the worker retires gracefully) or SIGKILL (`--faults sigkill`:
    /// no goodbye; its nanny starts it again).
    #[arg(long, value_enum, num_args = 0..=1, default_missing_value = "sigterm")]
    faults: Option<Fault>,
    /// scale: how many tasks the calibration run has that measures the bytes per task before
    /// a larger run (see `memory_check`).
    #[arg(long, default_value_t = CALIBRATION_TASKS)]
    calibrate_n: usize,
    /// scale: skip the calibration run and assume this many bytes per task (summed over the
    /// scheduler, the workers and this client) when checking that the machine has the memory.
    #[arg(long)]
    bytes_per_task: Option<f64>,
    /// Directory holding zask-scheduler and zask-worker (default: next to this binary).
    #[arg(long)]
    bin_dir: Option<std::path::PathBuf>,
    /// Run the cluster without CURVE (to measure what encryption costs); by default it is
    /// secured as `zask-scheduler` secures it, with keys made for the run.
    #[arg(long)]
    insecure: bool,
}

/// Where this run's cluster keys live (None: --insecure), set once in `main`.
static KEYS_DIR: std::sync::OnceLock<Option<std::path::PathBuf>> = std::sync::OnceLock::new();

fn keys_dir() -> Option<&'static std::path::Path> {
    KEYS_DIR.get().and_then(|d| d.as_deref())
}

/// The security arguments of the cluster's processes: the keys file for the scheduler, the
/// worker's access file for workers, or `--insecure` for both.
fn security_args(scheduler: bool) -> Vec<std::ffi::OsString> {
    match keys_dir() {
        None => vec!["--insecure".into()],
        Some(d) if scheduler => vec!["--security-file".into(), d.join("cluster.keys").into()],
        Some(d) => vec!["--access-file".into(), d.join("worker.access").into()],
    }
}

/// A client of the benchmark's cluster, as its operator.
fn connect_with(address: &str, mut config: zask::ClientConfig) -> Result<Client, String> {
    use zask::client::ClientSecurity;
    config.security = match keys_dir() {
        None => ClientSecurity::Insecure,
        Some(d) => ClientSecurity::Access(
            zask::security::Access::read(&d.join("operator.access")).map_err(|e| e.to_string())?,
        ),
    };
    Client::connect_with(address, config).map_err(|e| e.to_string())
}

/// The benchmark's clients wait up to 2 minutes for a silent scheduler (the default is 5 s):
/// while it takes in a graph of a million tasks on a busy machine the scheduler can answer no
/// ping for longer than that (measured 2026-11-30), and a benchmark measures throughput, not
/// how fast a client gives up.
const SCHEDULER_TIMEOUT_MS: u64 = 120_000;

fn connect(address: &str) -> Result<Client, String> {
    let config = zask::ClientConfig {
        scheduler_timeout_ms: SCHEDULER_TIMEOUT_MS,
        ..zask::ClientConfig::default()
    };
    connect_with(address, config)
}

struct Cluster {
    scheduler: Child,
    workers: Vec<Child>,
    client: Client,
    start_s: f64,
    bin_dir: std::path::PathBuf,
    to_workers: String,
    to_clients: String,
    state_dir: Option<std::path::PathBuf>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(d) = &self.state_dir {
            let _ = std::fs::remove_dir_all(d);
        }
        // Workers first, gracefully, while the scheduler can still close them: a worker whose
        // scheduler is already gone waits out its retire timeout before leaving.
        for c in &self.workers {
            // SAFETY: kill(2) on our own child's pid; no memory is involved.
            unsafe {
                libc::kill(c.id() as libc::pid_t, libc::SIGTERM);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        for c in &mut self.workers {
            while Instant::now() < deadline && matches!(c.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(5));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = self.scheduler.kill();
        let _ = self.scheduler.wait();
    }
}

fn read_line_with_prefix(child: &mut Child, prefix: &str) -> Result<String, String> {
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut found = Vec::new();
    while Instant::now() < deadline {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(line) => {
                found.push(line);
                // "address_to" waits for both addresses (workers', then clients').
                let wanted = if prefix == "address_to" { 2 } else { 1 };
                if found.iter().filter(|l| l.starts_with(prefix)).count() >= wanted {
                    return Ok(found.join("\n"));
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(_) => break,
        }
    }
    Err(format!("no {prefix:?} line within 10 s"))
}

fn start_scheduler(
    dir: &std::path::Path,
    ports: (&str, &str),
    state_dir: Option<&std::path::Path>,
) -> Result<(Child, String), String> {
    let mut cmd = Command::new(dir.join("zask-scheduler"));
    cmd.args(["--worker-port", ports.0, "--client-port", ports.1]);
    cmd.args(security_args(true));
    if let Some(d) = state_dir {
        cmd.arg("--state-dir").arg(d);
    }
    let mut scheduler = cmd
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start zask-scheduler: {e}"))?;
    let lines = read_line_with_prefix(&mut scheduler, "address_to")?;
    Ok((scheduler, lines))
}

fn start_cluster(args: &Args, workers: usize) -> Result<Cluster, String> {
    let dir = match &args.bin_dir {
        Some(d) => d.clone(),
        None => std::env::current_exe()
            .map_err(|e| e.to_string())?
            .parent()
            .ok_or("no binary directory")?
            .to_path_buf(),
    };
    let t0 = Instant::now();
    let state_dir = (args.scenario == Scenario::Restart)
        .then(|| std::env::temp_dir().join(format!("zask-bench-state-{}", std::process::id())));
    if let Some(d) = &state_dir {
        let _ = std::fs::remove_dir_all(d);
    }
    let (scheduler, lines) = start_scheduler(&dir, ("0", "0"), state_dir.as_deref())?;
    let addr = |name: &str| {
        lines
            .lines()
            .find_map(|l| l.strip_prefix(name).map(|a| a.trim().to_owned()))
            .ok_or_else(|| format!("scheduler printed no {name}"))
    };
    let to_workers = addr("address_to_workers")?;
    let to_clients = addr("address_to_clients")?;
    let mut children = Vec::new();
    for _ in 0..workers {
        let mut cmd = Command::new(dir.join("zask-worker"));
        // The transfer scenario makes its data with `alloc`, a test function.
        cmd.args([to_workers.as_str(), "--nthreads", "1", "--test-functions"]);
        cmd.args(security_args(false));
        if args.zero {
            cmd.arg("--zero");
        }
        children.push(
            cmd.env("RUST_LOG", "warn")
                .stdout(Stdio::null())
                .spawn()
                .map_err(|e| format!("cannot start zask-worker: {e}"))?,
        );
    }
    let client = connect(&to_clients)?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while client.workers().map_err(|e| e.to_string())?.len() < workers {
        if Instant::now() > deadline {
            return Err("workers did not register within 20 s".into());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let start_s = t0.elapsed().as_secs_f64();
    // One round trip so every link is open before timing.
    let warm = zask::graph! { "warm-up" => ("inc", 0) };
    client.get(&warm, "warm-up").map_err(|e| e.to_string())?;
    Ok(Cluster {
        scheduler,
        workers: children,
        client,
        start_s,
        bin_dir: dir,
        to_workers,
        to_clients,
        state_dir,
    })
}

#[derive(Default)]
struct Run {
    wall_s: f64,
    tasks: usize,
    median_us: Option<f64>,
    p99_us: Option<f64>,
    mb_per_s: Option<f64>,
    ok: bool,
    peak_rss_mb: Option<f64>,
    /// bag with faults: how many workers were killed.
    kills: Option<usize>,
}

fn peak_rss_mb(pid: u32) -> Option<f64> {
    Some(proc_kb(&format!("/proc/{pid}/status"), "VmHWM:")? as f64 / 1024.0)
}

/// A `FIELD: N kB` line of a /proc file, in kB.
fn proc_kb(file: &str, field: &str) -> Option<u64> {
    std::fs::read_to_string(file)
        .ok()?
        .lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// What a large `scale` run will need, and what the machine has, in bytes.
struct MemoryEstimate {
    bytes_per_task: f64,
    /// "measured on N tasks" or "given".
    how: String,
    needed: f64,
    available: f64,
}

/// Before a large `scale` run: the bytes per task, summed over the scheduler, the workers and
/// this process (which builds the graph and holds the results), come from `--bytes-per-task`
/// or from a calibration run of `--calibrate-n` tasks on a fresh cluster: the rise from every
/// process's resident size before it to its peak after it, divided by the tasks. The run
/// needs that times N, plus a quarter for what a single calibration point misses (growing
/// hash tables double). The machine has MemAvailable of /proc/meminfo.
fn memory_estimate(args: &Args, workers: usize, n: usize) -> Result<MemoryEstimate, String> {
    let (bytes_per_task, how) = match args.bytes_per_task {
        Some(b) => (b, "given with --bytes-per-task".to_owned()),
        None => {
            let calibration_n = args.calibrate_n.max(1);
            let cluster = start_cluster(args, workers)?;
            let mut pids: Vec<u32> = vec![cluster.scheduler.id(), std::process::id()];
            pids.extend(
                cluster
                    .client
                    .workers()
                    .map_err(|e| e.to_string())?
                    .iter()
                    .map(|w| w.pid),
            );
            let sum = |field: &str| -> u64 {
                pids.iter()
                    .filter_map(|p| proc_kb(&format!("/proc/{p}/status"), field))
                    .sum::<u64>()
                    * 1024
            };
            let before = sum("VmRSS:");
            let run = independent(&cluster, calibration_n, args.zero)?;
            if !run.ok {
                return Err("the calibration run computed a wrong answer".into());
            }
            let peak = sum("VmHWM:");
            let per_task = peak.saturating_sub(before) as f64 / calibration_n as f64;
            (per_task, format!("measured on {calibration_n} tasks"))
        }
    };
    let available = proc_kb("/proc/meminfo", "MemAvailable:")
        .ok_or("no MemAvailable in /proc/meminfo")? as f64
        * 1024.0;
    Ok(MemoryEstimate {
        bytes_per_task,
        how,
        needed: bytes_per_task * n as f64 * 1.25,
        available,
    })
}

/// `n` independent `inc` tasks named `{prefix}-{i}`, and their keys in order.
fn independent_graph(prefix: &str, n: usize) -> (Graph, Vec<KeySpec>) {
    let mut g = Graph::new();
    let mut keys = Vec::with_capacity(n);
    for i in 0..n {
        let k = format!("{prefix}-{i}");
        g.insert(k.clone(), ("inc", i as i64));
        keys.push(KeySpec::One(Key::from(k)));
    }
    (g, keys)
}

/// The results of `independent_graph(_, n)` are 1..=n, summing to n(n+1)/2.
fn independent_answer_is_right(v: &Value, n: usize) -> bool {
    let total: i64 = v
        .as_list()
        .unwrap_or(&[])
        .iter()
        .filter_map(Value::as_i64)
        .sum();
    total == (n as i64) * (n as i64 + 1) / 2
}

fn independent(c: &Cluster, n: usize, zero: bool) -> Result<Run, String> {
    let (g, keys) = independent_graph("inc", n);
    let t0 = Instant::now();
    let v = c.client.get(&g, keys).map_err(|e| e.to_string())?;
    let wall_s = t0.elapsed().as_secs_f64();
    Ok(Run {
        wall_s,
        tasks: n,
        ok: zero || independent_answer_is_right(&v, n),
        ..Run::default()
    })
}

fn tree(c: &Cluster, leaves: usize, zero: bool) -> Result<Run, String> {
    if !leaves.is_power_of_two() {
        return Err("tree: --n must be a power of two".into());
    }
    let mut g = Graph::new();
    for i in 0..leaves {
        g.insert(format!("t-0-{i}"), ("inc", i as i64));
    }
    let (mut level, mut width) = (0, leaves);
    while width > 1 {
        for j in 0..width / 2 {
            g.insert(
                format!("t-{}-{j}", level + 1),
                (
                    "add",
                    format!("t-{level}-{}", 2 * j),
                    format!("t-{level}-{}", 2 * j + 1),
                ),
            );
        }
        level += 1;
        width /= 2;
    }
    let tasks = g.len();
    let t0 = Instant::now();
    let v = c
        .client
        .get(&g, format!("t-{level}-0"))
        .map_err(|e| e.to_string())?;
    let wall_s = t0.elapsed().as_secs_f64();
    let expected = (leaves as i64) * (leaves as i64 + 1) / 2;
    Ok(Run {
        wall_s,
        tasks,
        ok: zero || v == Value::from(expected),
        ..Run::default()
    })
}

fn latency(c: &Cluster, n: usize, zero: bool) -> Result<Run, String> {
    let one = |i: usize| -> Result<(f64, bool), String> {
        let k = format!("lat-{i}");
        let g = zask::graph! { k.clone() => ("inc", i as i64) };
        let t0 = Instant::now();
        let v = c.client.get(&g, k).map_err(|e| e.to_string())?;
        Ok((
            t0.elapsed().as_secs_f64(),
            zero || v == Value::from(i as i64 + 1),
        ))
    };
    for i in 0..20 {
        one(n + i)?;
    }
    let mut lat = Vec::with_capacity(n);
    let mut ok = true;
    let t0 = Instant::now();
    for i in 0..n {
        let (s, good) = one(i)?;
        lat.push(s);
        ok &= good;
    }
    let wall_s = t0.elapsed().as_secs_f64();
    lat.sort_by(|a, b| a.partial_cmp(b).expect("finite"));
    let pct = |p: usize| {
        lat[((lat.len() * p).div_ceil(100))
            .saturating_sub(1)
            .min(lat.len() - 1)]
    };
    Ok(Run {
        wall_s,
        tasks: n,
        median_us: Some(pct(50) * 1e6),
        p99_us: Some(pct(99) * 1e6),
        ok,
        ..Run::default()
    })
}

/// The resilience notebook's bag: `Bag::range(400, 200).map(slow_double 50 ms).sum()`
/// (`--n` items in n/2 partitions). With
/// `faults`, a thread SIGTERMs (or SIGKILLs) a random unprotected worker process every 0.5 s
/// (two of the workers are protected), as the peer script does.
fn bag(c: &Cluster, items: usize, zero: bool, faults: Option<Fault>) -> Result<Run, String> {
    let sum = zask::Bag::range(items, items.div_ceil(2))
        .map("slow_double", vec![0.05.into()])
        .sum();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let killer = faults.map(|fault| {
        let stop = stop.clone();
        let address = c.to_clients.clone();
        std::thread::spawn(move || kill_workers(&address, fault.signal(), &stop))
    });
    let t0 = Instant::now();
    let v = c.client.compute(&sum).map_err(|e| e.to_string());
    let wall_s = t0.elapsed().as_secs_f64();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let kills = killer.map(|k| k.join().unwrap_or(0));
    if let (Some(fault), Some(kills)) = (faults, kills) {
        eprintln!(
            "{kills} workers killed with {} during the run",
            fault.name()
        );
    }
    Ok(Run {
        wall_s,
        tasks: items,
        kills,
        ok: zero || v? == Value::from((items * items.saturating_sub(1)) as i64),
        ..Run::default()
    })
}

/// Every 0.5 s, sends `signal` (SIGTERM or SIGKILL) to a random worker process other than the
/// two protected ones (their nannies start them again). Returns how many it signalled.
fn kill_workers(address: &str, signal: libc::c_int, stop: &std::sync::atomic::AtomicBool) -> usize {
    let Ok(client) = connect(address) else {
        return 0;
    };
    let mut protected: Vec<u32> = client
        .workers()
        .unwrap_or_default()
        .iter()
        .map(|w| w.pid)
        .collect();
    protected.sort();
    protected.truncate(2);
    let mut rng = std::process::id() as u64 | 1;
    let mut kills = 0;
    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(500));
        let candidates: Vec<u32> = client
            .workers()
            .unwrap_or_default()
            .iter()
            .map(|w| w.pid)
            .filter(|p| !protected.contains(p))
            .collect();
        if candidates.is_empty() {
            continue;
        }
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let victim = candidates[(rng % candidates.len() as u64) as usize];
        // SAFETY: kill(2) on a pid the cluster reported; no memory is involved.
        if unsafe { libc::kill(victim as libc::pid_t, signal) } == 0 {
            kills += 1;
        }
    }
    kills
}

/// N bytes made on worker A (kept there), then their length computed on worker B: the time
/// is the peer-to-peer move plus one tiny task.
fn transfer(c: &Cluster, nbytes: usize, zero: bool) -> Result<Run, String> {
    let workers = c.client.workers().map_err(|e| e.to_string())?;
    let [a, b, ..] = &workers[..] else {
        return Err("transfer needs two workers".into());
    };
    let on = |k: &str, w: &WorkerAddress| (Key::from(k), vec![WorkerSelector::Address(w.clone())]);
    let make = |k: &str, n: usize| -> Result<(), String> {
        let g = zask::graph! { k => ("alloc", n as i64) };
        let options = GetOptions {
            keep_results: true,
            restrictions: vec![on(k, &a.address)],
            ..GetOptions::default()
        };
        c.client
            .get_with(&g, k, options)
            .map_err(|e| e.to_string())?;
        Ok(())
    };
    let length_on_b = |k: &str, out: &str| -> Result<Value, String> {
        let g = zask::graph! { out => ("length", key(k)) };
        let options = GetOptions {
            restrictions: vec![on(out, &b.address)],
            ..GetOptions::default()
        };
        c.client
            .get_with(&g, out, options)
            .map_err(|e| e.to_string())
    };
    // Warm the A -> B link with a tiny transfer (not timed).
    make("blob-warm", 1000)?;
    length_on_b("blob-warm", "len-warm")?;
    make("blob", nbytes)?;
    let t0 = Instant::now();
    let n = length_on_b("blob", "len")?;
    let wall_s = t0.elapsed().as_secs_f64();
    let placed_right = c
        .client
        .who_has(vec!["blob"])
        .map_err(|e| e.to_string())?
        .get(&Key::from("blob"))
        .is_some_and(|holders| holders.contains(&a.address) && holders.contains(&b.address));
    Ok(Run {
        wall_s,
        tasks: 1,
        mb_per_s: Some(nbytes as f64 / 1e6 / wall_s),
        ok: zero || (n == Value::from(nbytes as i64) && placed_right),
        ..Run::default()
    })
}

/// The scheduler is SIGKILLed while a graph of `n` tasks runs and started again on the same
/// ports with the same state dir. `wall_s`: from the kill until the `get` returns;
/// `restart_s`: until the new scheduler listens; `resume_s`: until it has resubmitted the graph.
fn restart(c: &mut Cluster, n: usize, zero: bool) -> Result<(Run, f64, f64), String> {
    let (g, keys) = independent_graph("r", n);
    let config = zask::ClientConfig {
        scheduler_timeout_ms: SCHEDULER_TIMEOUT_MS,
        ..zask::ClientConfig::default()
    };
    let client = connect_with(&c.to_clients, config)?;
    let get = std::thread::spawn(move || client.get(&g, keys));
    let deadline = Instant::now() + Duration::from_secs(60);
    while c.client.status().map_err(|e| e.to_string())?.processing == 0 {
        if Instant::now() > deadline {
            return Err("the graph never started".into());
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let _ = c.scheduler.kill();
    let _ = c.scheduler.wait();
    let t0 = Instant::now();
    let port = |a: &str| a.rsplit(':').next().unwrap_or("0").to_owned();
    let (wp, cp) = (port(&c.to_workers), port(&c.to_clients));
    let (scheduler, _) = start_scheduler(&c.bin_dir, (&wp, &cp), c.state_dir.as_deref())?;
    c.scheduler = scheduler;
    let restart_s = t0.elapsed().as_secs_f64();
    let watcher = connect(&c.to_clients)?;
    while (watcher.status().map_err(|e| e.to_string())?.tasks as usize) < n / 2 {
        if Instant::now() > deadline + Duration::from_secs(60) {
            return Err("the graph was not resumed".into());
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let resume_s = t0.elapsed().as_secs_f64();
    let v = get
        .join()
        .map_err(|_| "get panicked".to_string())?
        .map_err(|e| e.to_string())?;
    let wall_s = t0.elapsed().as_secs_f64();
    c.client = watcher;
    Ok((
        Run {
            wall_s,
            tasks: n,
            ok: zero || independent_answer_is_right(&v, n),
            ..Run::default()
        },
        restart_s,
        resume_s,
    ))
}

fn median(mut xs: Vec<f64>) -> Option<f64> {
    if xs.is_empty() {
        return None;
    }
    xs.sort_by(|a, b| a.partial_cmp(b).expect("finite"));
    Some(xs[xs.len() / 2])
}

fn main() {
    // A bug in any thread of this process ends it at once (see zask::fatal).
    zask::fatal::install_for_process();
    let args: Args = zask::cli::parse_or_exit();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let keys = (!args.insecure)
        .then(|| std::env::temp_dir().join(format!("zask-bench-keys-{}", std::process::id())));
    if let Some(d) = &keys {
        // The scheduler makes the keys there on its first start.
        let _ = std::fs::remove_dir_all(d);
    }
    KEYS_DIR.set(keys).expect("set once");
    let workers = if args.scenario == Scenario::Bag {
        4
    } else {
        args.workers
    };
    let n = args.n.unwrap_or(match args.scenario {
        Scenario::Independent => 10_000,
        Scenario::Tree => 8_192,
        Scenario::Latency => 1_000,
        Scenario::Bag => 400,
        Scenario::Transfer => 100_000_000,
        Scenario::Scale | Scenario::Restart => 100_000,
    });
    // A scale run larger than its calibration run first checks that the machine can hold it.
    let estimate = (args.scenario == Scenario::Scale
        && (n > args.calibrate_n || args.bytes_per_task.is_some()))
    .then(|| {
        memory_estimate(&args, workers, n).unwrap_or_else(|e| {
            eprintln!("error: memory estimate failed: {e}");
            std::process::exit(1)
        })
    });
    if let Some(e) = &estimate {
        let gib = |b: f64| b / (1u64 << 30) as f64;
        if e.needed > e.available {
            eprintln!(
                "zask-bench: scale --n {n} needs about {:.1} GiB ({:.0} B/task, {}, plus 25 %) \
                 but this machine has {:.1} GiB available: not started",
                gib(e.needed),
                e.bytes_per_task,
                e.how,
                gib(e.available)
            );
            if let Some(d) = keys_dir() {
                let _ = std::fs::remove_dir_all(d);
            }
            std::process::exit(2);
        }
        eprintln!(
            "scale --n {n}: needs about {:.1} GiB ({:.0} B/task, {}), {:.1} GiB available",
            gib(e.needed),
            e.bytes_per_task,
            e.how,
            gib(e.available)
        );
    }
    let mut restart_times = Vec::new();
    let mut runs = Vec::new();
    let mut starts = Vec::new();
    for _ in 0..args.repeat.max(1) {
        let mut cluster = match start_cluster(&args, workers) {
            Ok(c) => c,
            Err(e) => zask::cli::usage_error(&format!("cluster start failed: {e}")),
        };
        starts.push(cluster.start_s);
        let result = match args.scenario {
            Scenario::Independent | Scenario::Scale => independent(&cluster, n, args.zero),
            Scenario::Tree => tree(&cluster, n, args.zero),
            Scenario::Latency => latency(&cluster, n, args.zero),
            Scenario::Bag => bag(&cluster, n, args.zero, args.faults),
            Scenario::Transfer => transfer(&cluster, n, args.zero),
            Scenario::Restart => restart(&mut cluster, n, args.zero).map(|(r, up, resumed)| {
                restart_times.push((up, resumed));
                r
            }),
        };
        match result {
            Ok(mut r) => {
                r.peak_rss_mb = peak_rss_mb(cluster.scheduler.id());
                runs.push(r);
            }
            Err(e) => {
                eprintln!("error: {e}");
                // exit() runs no destructors: stop the cluster and remove the keys first.
                drop(cluster);
                if let Some(d) = keys_dir() {
                    let _ = std::fs::remove_dir_all(d);
                }
                std::process::exit(1);
            }
        }
    }
    let wall = median(runs.iter().map(|r| r.wall_s).collect());
    let tps = median(runs.iter().map(|r| r.tasks as f64 / r.wall_s).collect());
    let out = serde_json::json!({
        "system": if args.zero { "zask-zero" } else { "zask" },
        "scenario": format!("{:?}", args.scenario).to_lowercase(),
        "workers": workers,
        "n": n,
        "wall_s": wall,
        "tasks_per_s": tps,
        "median_us": median(runs.iter().filter_map(|r| r.median_us).collect()),
        "p99_us": median(runs.iter().filter_map(|r| r.p99_us).collect()),
        "mb_per_s": median(runs.iter().filter_map(|r| r.mb_per_s).collect()),
        "cluster_start_s": median(starts),
        "scheduler_peak_rss_mb": median(runs.iter().filter_map(|r| r.peak_rss_mb).collect()),
        // The scheduler's peak resident size over the tasks of one run.
        "bytes_per_task": median(
            runs.iter()
                .filter_map(|r| Some(r.peak_rss_mb? * 1024.0 * 1024.0 / r.tasks.max(1) as f64))
                .collect()
        ),
        "faults": args.faults.map(Fault::name),
        "kills": median(runs.iter().filter_map(|r| r.kills.map(|k| k as f64)).collect()),
        "estimated_bytes_per_task": estimate.as_ref().map(|e| e.bytes_per_task),
        "memory_needed_mb": estimate.as_ref().map(|e| e.needed / 1e6),
        "memory_available_mb": estimate.as_ref().map(|e| e.available / 1e6),
        "restart_s": median(restart_times.iter().map(|t| t.0).collect()),
        "resume_s": median(restart_times.iter().map(|t| t.1).collect()),
        "ok": runs.iter().all(|r| r.ok),
        "runs": runs.len(),
        "secure": keys_dir().is_some(),
    });
    if let Some(d) = keys_dir() {
        let _ = std::fs::remove_dir_all(d);
    }
    println!("{out}");
    if !runs.iter().all(|r| r.ok) {
        std::process::exit(1);
    }
}
