//! The 2015 resilience notebook, as real processes: a `zask-scheduler` and four `zask-worker`s
//! (each under its nanny, one thread each), two of them protected. A bag of `range(400)` in 200
//! partitions is doubled element by element (50 ms each) and summed, while a thread signals the
//! worker process of a random unprotected worker every 0.5 s; its nanny starts it again. The sum
//! must still be 159600. Runs with SIGTERM (a graceful exit), then with SIGKILL (a crash).
//!
//! ```text
//! cargo run --release --example resilience                  # SIGTERM, then SIGKILL
//! cargo run --release --example resilience -- --signal kill # one of none, term, kill
//! ```
//!
//! The binaries are taken from the example's own target directory (`target/release` for a
//! release build), built first when the example runs under `cargo run`; `--bin-dir DIR` (or
//! `ZASK_BIN_DIR`) points elsewhere. Exits with code 1 if a result is wrong or missing.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use zask::{Bag, Client, GetOptions, Value};

const EXPECTED: i64 = 159_600;

#[derive(Parser, Debug)]
#[command(about = "Sum a bag while workers are killed under it (the 2015 resilience notebook)")]
struct Args {
    /// Signals to run with, in order (comma-separated): none, term, kill.
    #[arg(long, default_value = "term,kill", value_delimiter = ',')]
    signal: Vec<String>,
    /// Worker processes (each under a nanny, one thread).
    #[arg(long, default_value_t = 4)]
    workers: usize,
    /// Workers never signalled.
    #[arg(long, default_value_t = 2)]
    protected: usize,
    /// Time between two signals, in ms.
    #[arg(long, default_value_t = 500)]
    interval_ms: u64,
    /// Seed of the victim choice (default: from the clock; printed).
    #[arg(long)]
    seed: Option<u64>,
    /// Where zask-scheduler and zask-worker are (default: next to this example's directory).
    #[arg(long, env = "ZASK_BIN_DIR")]
    bin_dir: Option<PathBuf>,
    /// Keep the processes' logs (in the temporary directory) even when the result is right.
    #[arg(long)]
    keep_logs: bool,
    /// Give up on a run after this many seconds.
    #[arg(long, default_value_t = 300)]
    timeout_s: u64,
}

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let args = Args::parse();
    let bin_dir = match binaries(&args) {
        Ok(dir) => dir,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
    });
    println!("seed {seed}; binaries from {}", bin_dir.display());
    let mut all_ok = true;
    for (n, name) in args.signal.iter().enumerate() {
        let signal = match name.as_str() {
            "none" => None,
            "term" => Some(libc::SIGTERM),
            "kill" => Some(libc::SIGKILL),
            other => {
                eprintln!("error: --signal: unknown signal {other:?} (none, term, kill)");
                std::process::exit(2);
            }
        };
        match run(&args, &bin_dir, name, signal, seed.wrapping_add(n as u64)) {
            Ok(true) => {}
            Ok(false) => all_ok = false,
            Err(e) => {
                println!("{name}: FAILED: {e}");
                all_ok = false;
            }
        }
    }
    if !all_ok {
        std::process::exit(1);
    }
}

/// Finds (and under `cargo run`, builds) the scheduler and worker binaries.
fn binaries(args: &Args) -> Result<PathBuf, String> {
    let explicit = args.bin_dir.is_some();
    let dir = match &args.bin_dir {
        Some(dir) => dir.clone(),
        None => {
            let exe = std::env::current_exe().map_err(|e| format!("cannot find myself: {e}"))?;
            // target/<profile>/examples/resilience -> target/<profile>
            exe.parent()
                .and_then(Path::parent)
                .ok_or("cannot find the target directory")?
                .to_path_buf()
        }
    };
    // `cargo run --example` builds the library, not the binaries: build them the same way,
    // so they are never missing or older than the example.
    if let (false, Ok(cargo)) = (explicit, std::env::var("CARGO")) {
        let mut command = Command::new(cargo);
        command.args(["build", "--bin", "zask-scheduler", "--bin", "zask-worker"]);
        match dir.file_name().and_then(|n| n.to_str()) {
            Some("debug") => {}
            Some("release") => {
                command.arg("--release");
            }
            Some(profile) => {
                command.args(["--profile", profile]);
            }
            None => {}
        }
        if let Ok(manifest) = std::env::var("CARGO_MANIFEST_DIR") {
            command.arg("--manifest-path");
            command.arg(Path::new(&manifest).join("Cargo.toml"));
        }
        let status = command
            .status()
            .map_err(|e| format!("cannot run cargo: {e}"))?;
        if !status.success() {
            return Err(format!("building the binaries failed ({status})"));
        }
    }
    for bin in ["zask-scheduler", "zask-worker"] {
        if !dir.join(bin).is_file() {
            return Err(format!(
                "{} not found; build it (cargo build --release --bins) or pass --bin-dir",
                dir.join(bin).display()
            ));
        }
    }
    Ok(dir)
}

/// A child process killed when dropped, its stdout lines read by a thread.
struct Proc {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Proc {
    fn spawn(program: &Path, args: &[String], log: &Path) -> Result<Proc, String> {
        let stderr = std::fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", program.display()))?;
        let out = child.stdout.take().expect("piped");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    // Nobody listens any more: keep draining so the pipe never fills.
                    continue;
                }
            }
        });
        Ok(Proc { child, lines })
    }

    /// The rest of the first stdout line starting with `prefix` (waits up to 30 s).
    fn line_after(&mut self, prefix: &str) -> Result<String, String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    if let Some(rest) = line.strip_prefix(prefix) {
                        return Ok(rest.trim().to_owned());
                    }
                }
                Err(_) => return Err(format!("no {prefix:?} line from process {}", self.id())),
            }
        }
    }

    fn id(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM (a nanny then stops its worker gracefully), SIGKILL after 5 s.
    fn stop(&mut self) {
        signal(self.id(), libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn signal(pid: u32, signal: libc::c_int) -> bool {
    // SAFETY: kill(2) has no memory effects; the pids are this example's child processes.
    unsafe { libc::kill(pid as libc::pid_t, signal) == 0 }
}

/// A small deterministic random generator (xorshift64*), enough to pick victims.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n.max(1)
    }
}

/// One run: a fresh cluster, the bag sum under `signal`. Ok(true) if the sum was right.
fn run(
    args: &Args,
    bin_dir: &Path,
    name: &str,
    signal_number: Option<libc::c_int>,
    seed: u64,
) -> Result<bool, String> {
    let logs = std::env::temp_dir().join(format!("zask-resilience-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&logs).map_err(|e| format!("{}: {e}", logs.display()))?;
    // The run's own keys (not ~/.zask): the scheduler makes them there, the others read them.
    let keys = logs.join("cluster.keys").display().to_string();
    let mut scheduler = Proc::spawn(
        &bin_dir.join("zask-scheduler"),
        &[
            "--worker-port",
            "0",
            "--client-port",
            "0",
            "--security-file",
            &keys,
        ]
        .map(String::from),
        &logs.join("scheduler.log"),
    )?;
    let to_workers = scheduler.line_after("address_to_workers ")?;
    let to_clients = scheduler.line_after("address_to_clients ")?;
    let mut nannies = Vec::new();
    for i in 0..args.workers {
        let worker_args = [
            to_workers.clone(),
            "--nthreads".into(),
            "1".into(),
            "--access-file".into(),
            logs.join("worker.access").display().to_string(),
        ];
        let mut nanny = Proc::spawn(
            &bin_dir.join("zask-worker"),
            &worker_args,
            &logs.join(format!("worker-{i}.log")),
        )?;
        nanny.line_after("worker ")?;
        nannies.push(nanny);
    }
    let access =
        zask::security::Access::read(&logs.join("client.access")).map_err(|e| e.to_string())?;
    let config = zask::ClientConfig {
        security: zask::client::ClientSecurity::Access(access),
        ..zask::ClientConfig::default()
    };
    let client = Arc::new(Client::connect_with(&to_clients, config).map_err(|e| e.to_string())?);
    let deadline = Instant::now() + Duration::from_secs(30);
    let start_pids: Vec<u32> = loop {
        let ws = client.workers().map_err(|e| e.to_string())?;
        if ws.len() >= args.workers {
            break ws.iter().map(|w| w.pid).collect();
        }
        if Instant::now() > deadline {
            return Err(format!("only {} workers registered", ws.len()));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut rng = Rng::new(seed);
    let mut candidates = start_pids.clone();
    let mut protected = Vec::new();
    while protected.len() < args.protected.min(candidates.len()) {
        protected.push(candidates.remove(rng.below(candidates.len())));
    }
    protected.sort();

    let sum = Bag::range(400, 200)
        .map("slow_double", vec![Value::from(0.05)])
        .sum();

    // The killer: every interval, the worker process of a random unprotected worker.
    let stop = Arc::new(AtomicBool::new(false));
    let kills = Arc::new(Mutex::new(Vec::new()));
    let killer = signal_number.map(|sig| {
        let (client, stop, kills, protected) = (
            client.clone(),
            stop.clone(),
            kills.clone(),
            protected.clone(),
        );
        let interval = Duration::from_millis(args.interval_ms);
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                std::thread::sleep(interval);
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(ws) = client.workers() else { continue };
                let victims: Vec<u32> = ws
                    .iter()
                    .map(|w| w.pid)
                    .filter(|p| !protected.contains(p))
                    .collect();
                if victims.is_empty() {
                    continue;
                }
                let victim = victims[rng.below(victims.len())];
                if signal(victim, sig) {
                    kills.lock().expect("never poisoned").push(victim);
                }
            }
        })
    });

    let started = Instant::now();
    let options = GetOptions {
        timeout: Some(Duration::from_secs(args.timeout_s)),
        ..GetOptions::default()
    };
    let result = client.get_with(sum.graph(), sum.key(), options);
    let elapsed = started.elapsed();
    stop.store(true, Ordering::SeqCst);
    if let Some(k) = killer {
        let _ = k.join();
    }
    let kills = kills.lock().expect("never poisoned").clone();
    let mut distinct = kills.clone();
    distinct.sort();
    distinct.dedup();
    // Let restarted workers come back before counting them.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut at_end = 0;
    while Instant::now() < deadline {
        at_end = client.workers().map(|w| w.len()).unwrap_or(0);
        if at_end >= args.workers {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let ok = result == Ok(Value::from(EXPECTED));
    let shown = match &result {
        Ok(v) => v.to_string(),
        Err(e) => format!("error: {e}"),
    };
    println!(
        "{name:>4}: result {shown} ({}) in {:.2} s; {} signals to {} worker processes \
         (protected pids {protected:?}); {at_end} of {} workers at the end",
        if ok {
            "right"
        } else {
            "WRONG, expected 159600"
        },
        elapsed.as_secs_f64(),
        kills.len(),
        distinct.len(),
        args.workers,
    );
    drop(client);
    for mut nanny in nannies {
        nanny.stop();
    }
    scheduler.stop();
    if ok && !args.keep_logs {
        let _ = std::fs::remove_dir_all(&logs);
    } else {
        println!("      logs kept in {}", logs.display());
    }
    Ok(ok)
}
