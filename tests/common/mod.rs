//! Shared helpers of the integration tests: a `TestCluster` of real `zask-scheduler` and
//! `zask-worker` processes on loopback (ports picked by the OS, so tests run in parallel),
//! bounded waits, and running the `zask` command with a deadline. Every child process is killed
//! and reaped when its guard drops, also when a test panics.

#![allow(dead_code)]

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use zask::client::ClientSecurity;
use zask::security::{Access, Role};
use zask::{Client, ClientConfig};

pub mod legacy;

pub const SCHEDULER: &str = env!("CARGO_BIN_EXE_zask-scheduler");
pub const WORKER: &str = env!("CARGO_BIN_EXE_zask-worker");
pub const ZASK: &str = env!("CARGO_BIN_EXE_zask");

/// Upper bound of every wait for something that normally takes milliseconds: generous, so a
/// loaded 2-core machine never makes a test flaky, yet a hang ends the test.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// Polls `condition` until it gives `Some`, or panics after `within` naming `what`.
pub fn wait_until<T>(what: &str, within: Duration, mut condition: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    let mut pause = Duration::from_millis(2);
    loop {
        if let Some(v) = condition() {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {within:?} waiting for {what}");
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// A child process that is killed (SIGKILL) and reaped when dropped. Its stderr goes to a log
/// file, printed when a test panics so failures come with the processes' side of the story.
pub struct Proc {
    pub name: String,
    child: Child,
    log: PathBuf,
    /// Lines the process printed on stdout, read by a thread so the pipe never fills.
    stdout: mpsc::Receiver<String>,
}

impl Proc {
    pub fn spawn(name: &str, program: &str, args: &[String], log: PathBuf) -> Proc {
        let stderr = File::create(&log).unwrap_or_else(|e| panic!("{}: {e}", log.display()));
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {program}: {e}"));
        let out = child.stdout.take().expect("stdout is piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Proc {
            name: name.to_owned(),
            child,
            log,
            stdout: rx,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits (bounded) for a stdout line starting with `prefix` and returns the rest of it.
    pub fn read_line_after(&mut self, prefix: &str) -> String {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stdout.recv_timeout(left) {
                Ok(line) => {
                    if let Some(rest) = line.strip_prefix(prefix) {
                        return rest.trim().to_owned();
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => panic!(
                    "{} printed no line starting with {prefix:?} within {DEADLINE:?}\n{}",
                    self.name,
                    self.log_text()
                ),
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = self.child.wait().ok();
                    panic!(
                        "{} exited ({status:?}) before printing {prefix:?}\n{}",
                        self.name,
                        self.log_text()
                    )
                }
            }
        }
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits (bounded by `within`) for the process to end and returns how it ended, or panics
    /// naming the process.
    pub fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            if Instant::now() > deadline {
                panic!(
                    "{} still running after {within:?}\n{}",
                    self.name,
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Everything the process wrote on stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL, then reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn log_text(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = &lines[lines.len().saturating_sub(40)..];
        format!(
            "--- last lines of {} stderr ---\n{}",
            self.name,
            tail.join("\n")
        )
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("{}", self.log_text());
        }
    }
}

/// How to start a `TestCluster`.
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    pub workers: usize,
    pub nthreads: u32,
    /// Extra worker arguments; `{dir}` becomes the cluster's temporary directory and `{i}` the
    /// worker's index, e.g. `["--store", "sled:{dir}/w{i}"]`.
    pub worker_args: Vec<String>,
    pub scheduler_args: Vec<String>,
    /// Run each worker under its nanny (the `zask-worker` default): the process the cluster
    /// starts, and kills on `kill_worker`, is then the nanny; the worker is its child, whose pid
    /// the scheduler reports (`client.workers()`).
    pub nanny: bool,
    /// Workers offer the test functions (`zask-worker --test-functions`: `exit_process`,
    /// `counted_inc`, `wait_for_file`, `alloc`, `fail_with_length`).
    pub test_functions: bool,
    /// No CURVE anywhere (`--insecure` for every process); by default the scheduler makes the
    /// cluster's keys in the cluster's directory and everyone connects with them.
    pub insecure: bool,
    /// The scheduler opens its plaintext 2015 ports (for the unmodified Python client and
    /// workers, which cannot do CURVE).
    pub legacy_ports: bool,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            workers: 2,
            nthreads: 1,
            worker_args: vec![],
            scheduler_args: vec![],
            nanny: false,
            test_functions: false,
            insecure: false,
            legacy_ports: false,
        }
    }
}

impl ClusterOptions {
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = n;
        self
    }

    pub fn nthreads(mut self, n: u32) -> Self {
        self.nthreads = n;
        self
    }

    pub fn worker_args(mut self, args: &[&str]) -> Self {
        self.worker_args = args.iter().map(|s| s.to_string()).collect();
        self
    }

    pub fn scheduler_args(mut self, args: &[&str]) -> Self {
        self.scheduler_args = args.iter().map(|s| s.to_string()).collect();
        self
    }

    /// Workers run under a nanny (see `ClusterOptions::nanny`).
    pub fn with_nanny(mut self) -> Self {
        self.nanny = true;
        self
    }

    /// Workers offer the test functions (see `ClusterOptions::test_functions`).
    pub fn with_test_functions(mut self) -> Self {
        self.test_functions = true;
        self
    }

    /// The scheduler opens its plaintext 2015 ports (`legacy_address_to_workers`/`_clients`).
    pub fn legacy_ports(mut self) -> Self {
        self.legacy_ports = true;
        self
    }

    /// Every process runs without security (`--insecure`).
    pub fn insecure(mut self) -> Self {
        self.insecure = true;
        self
    }

    /// Every worker keeps its results in its own sled database under the cluster's directory.
    pub fn sled_store(self) -> Self {
        self.worker_args(&["--store", "sled:{dir}/w{i}"])
    }

    pub fn start(self) -> TestCluster {
        TestCluster::start(self)
    }
}

/// A scheduler and workers as real processes on 127.0.0.1. Dropping it kills them all.
pub struct TestCluster {
    /// Kills every process of the cluster if the test is still running after `WATCHDOG`, so a
    /// hung client call fails (the client reports the scheduler lost) instead of hanging.
    watchdog: Option<Watchdog>,
    // Workers first: they go before the scheduler when the cluster drops.
    workers: Vec<Option<Proc>>,
    worker_addresses: Vec<String>,
    scheduler: Option<Proc>,
    address_to_workers: String,
    address_to_clients: String,
    /// The plaintext 2015 ports (workers, clients), when asked for.
    legacy_addresses: Option<(String, String)>,
    /// How workers are started, for `add_worker`.
    options: ClusterOptions,
    /// The processes the watchdog kills: shared, so workers added later are covered too.
    watched: Arc<Mutex<Vec<u32>>>,
    dir: tempfile::TempDir,
}

impl TestCluster {
    /// A scheduler and 2 one-thread workers with in-memory stores.
    pub fn new() -> TestCluster {
        ClusterOptions::default().start()
    }

    pub fn with_workers(n: usize) -> TestCluster {
        ClusterOptions::default().workers(n).start()
    }

    pub fn options() -> ClusterOptions {
        ClusterOptions::default()
    }

    pub fn start(options: ClusterOptions) -> TestCluster {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mut args: Vec<String> = ["--worker-port", "0", "--client-port", "0"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        if options.insecure {
            args.push("--insecure".to_owned());
        } else {
            args.push("--security-file".to_owned());
            args.push(dir.path().join("cluster.keys").display().to_string());
        }
        if options.legacy_ports {
            for a in ["--legacy-worker-port", "0", "--legacy-client-port", "0"] {
                args.push(a.to_owned());
            }
        }
        args.extend(options.scheduler_args.iter().cloned());
        let mut scheduler = Proc::spawn(
            "zask-scheduler",
            SCHEDULER,
            &args,
            dir.path().join("scheduler.log"),
        );
        let address_to_workers = scheduler.read_line_after("address_to_workers ");
        let address_to_clients = scheduler.read_line_after("address_to_clients ");
        let legacy_addresses = options.legacy_ports.then(|| {
            (
                scheduler.read_line_after("legacy_address_to_workers "),
                scheduler.read_line_after("legacy_address_to_clients "),
            )
        });
        let watched = Arc::new(Mutex::new(vec![scheduler.pid()]));
        let mut cluster = TestCluster {
            watchdog: Some(Watchdog::start(watched.clone())),
            workers: Vec::new(),
            worker_addresses: Vec::new(),
            scheduler: Some(scheduler),
            address_to_workers,
            address_to_clients,
            legacy_addresses,
            options: options.clone(),
            watched,
            dir,
        };
        for _ in 0..options.workers {
            cluster.spawn_worker();
        }
        cluster.wait_for_workers(options.workers);
        cluster
    }

    /// Starts worker number `workers.len()` with the cluster's options; returns its index once
    /// it printed its address (it may not have registered yet).
    fn spawn_worker(&mut self) -> usize {
        let i = self.workers.len();
        let mut args = vec![
            self.address_to_workers.clone(),
            "--nthreads".to_owned(),
            self.options.nthreads.to_string(),
        ];
        if !self.options.nanny {
            // Bare workers: the pid tests see and kill is the worker's own.
            args.push("--no-nanny".to_owned());
        }
        if self.options.test_functions {
            args.push("--test-functions".to_owned());
        }
        if self.options.insecure {
            args.push("--insecure".to_owned());
        } else {
            args.push("--access-file".to_owned());
            args.push(self.access_file(Role::Worker).display().to_string());
        }
        let dir = self.dir.path().display().to_string();
        args.extend(
            self.options
                .worker_args
                .iter()
                .map(|a| a.replace("{dir}", &dir).replace("{i}", &i.to_string())),
        );
        let name = if self.options.nanny {
            format!("zask-worker {i} (nanny)")
        } else {
            format!("zask-worker {i}")
        };
        let log = self.dir.path().join(format!("worker-{i}.log"));
        let mut worker = Proc::spawn(&name, WORKER, &args, log);
        self.watched
            .lock()
            .expect("never poisoned")
            .push(worker.pid());
        let address = worker.read_line_after("worker ");
        self.workers.push(Some(worker));
        self.worker_addresses.push(address);
        i
    }

    /// Starts one more worker (same options as the others) and waits until the scheduler
    /// knows a worker at its address. Returns its index.
    pub fn add_worker(&mut self) -> usize {
        let i = self.spawn_worker();
        let address = self.worker_addresses[i].clone();
        let client = self.client();
        wait_until(
            &format!("the added worker {address} to register"),
            DEADLINE,
            || {
                let workers = client.workers().expect("status");
                workers
                    .iter()
                    .any(|w| w.address.as_str() == address)
                    .then_some(())
            },
        );
        i
    }

    /// The index of the worker that printed `address` (its first address, under a nanny).
    pub fn worker_index(&self, address: impl AsRef<str>) -> Option<usize> {
        let address = address.as_ref();
        self.worker_addresses.iter().position(|a| a == address)
    }

    pub fn address_to_clients(&self) -> &str {
        &self.address_to_clients
    }

    pub fn address_to_workers(&self) -> &str {
        &self.address_to_workers
    }

    /// The plaintext port 2015 Python workers connect to (`legacy_ports()` clusters).
    pub fn legacy_address_to_workers(&self) -> &str {
        &self
            .legacy_addresses
            .as_ref()
            .expect("started with legacy_ports()")
            .0
    }

    /// The plaintext port 2015 clients connect to (`legacy_ports()` clusters).
    pub fn legacy_address_to_clients(&self) -> &str {
        &self
            .legacy_addresses
            .as_ref()
            .expect("started with legacy_ports()")
            .1
    }

    /// Each worker's peer address, as it printed it, in start order.
    pub fn worker_addresses(&self) -> &[String] {
        &self.worker_addresses
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A client with the operator's key (tests do everything, restarts included).
    pub fn client(&self) -> Client {
        self.client_with(ClientConfig::default())
    }

    /// A client with `config`; its security, when left at the default, is the operator's key
    /// (or plaintext for an insecure cluster).
    pub fn client_with(&self, mut config: ClientConfig) -> Client {
        if matches!(config.security, ClientSecurity::Default) {
            config.security = self.client_security(Role::Operator);
        }
        Client::connect_with(&self.address_to_clients, config)
            .unwrap_or_else(|e| panic!("cannot connect to the test cluster: {e}"))
    }

    /// Connecting with `role`'s key (plaintext for an insecure cluster).
    pub fn client_security(&self, role: Role) -> ClientSecurity {
        if self.options.insecure {
            return ClientSecurity::Insecure;
        }
        ClientSecurity::Access(
            Access::read(&self.access_file(role)).expect("the scheduler wrote the access files"),
        )
    }

    /// Makes a raw ZeroMQ socket present `role`'s key to the scheduler (before `connect`),
    /// as Zask's own peers do; nothing for an insecure cluster.
    pub fn authenticate(&self, socket: &zmq::Socket, role: Role) {
        if self.options.insecure {
            return;
        }
        let access = Access::read(&self.access_file(role)).expect("the access file");
        zask::security::connect_as(socket, &access.scheduler_public, &access.key)
            .expect("CURVE options");
    }

    /// Where the scheduler wrote `role`'s access file.
    pub fn access_file(&self, role: Role) -> PathBuf {
        self.dir.path().join(role.access_file_name())
    }

    /// The arguments a `zask` command against this cluster connects with: the operator's
    /// access file (or `--insecure`).
    pub fn zask_security_args(&self) -> Vec<String> {
        if self.options.insecure {
            return vec!["--insecure".to_owned()];
        }
        vec![
            "--access-file".to_owned(),
            self.access_file(Role::Operator).display().to_string(),
        ]
    }

    /// Pids of the running workers, in start order (killed ones left out).
    pub fn worker_pids(&self) -> Vec<u32> {
        self.workers.iter().flatten().map(|w| w.pid()).collect()
    }

    /// Waits (bounded) for the scheduler process to exit by itself (a shutdown) and returns
    /// how it exited.
    pub fn wait_scheduler_exit(&mut self, within: Duration) -> ExitStatus {
        let scheduler = self
            .scheduler
            .as_mut()
            .expect("a scheduler that was not killed");
        scheduler.wait_exit(within)
    }

    pub fn scheduler_pid(&self) -> Option<u32> {
        self.scheduler.as_ref().map(|s| s.pid())
    }

    /// The process of worker `i` (under a nanny: the nanny), unless it was killed.
    pub fn worker_proc(&mut self, i: usize) -> &mut Proc {
        self.workers[i]
            .as_mut()
            .expect("a worker that was not killed")
    }

    /// Whether worker `i` is still running.
    pub fn worker_running(&mut self, i: usize) -> bool {
        self.workers[i].as_mut().is_some_and(|w| w.is_running())
    }

    /// SIGKILLs worker `i` (under a nanny: the nanny; its worker then gets a SIGTERM).
    pub fn kill_worker(&mut self, i: usize) {
        if let Some(mut w) = self.workers[i].take() {
            w.kill();
            self.unwatch(w.pid());
        }
    }

    fn unwatch(&self, pid: u32) {
        self.watched
            .lock()
            .expect("never poisoned")
            .retain(|p| *p != pid);
    }

    /// SIGKILLs the scheduler.
    pub fn kill_scheduler(&mut self) {
        if let Some(mut s) = self.scheduler.take() {
            s.kill();
            self.unwatch(s.pid());
        }
    }

    /// Waits (bounded) until at least `n` workers are registered with the scheduler.
    pub fn wait_for_workers(&self, n: usize) {
        let client = self.client();
        wait_until(&format!("{n} workers to register"), DEADLINE, || {
            let have = client.workers().expect("status").len();
            (have >= n).then_some(())
        });
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        // Stop the watchdog before reaping, so it can never signal a reused pid.
        self.watchdog.take();
        for w in self.workers.iter_mut() {
            w.take();
        }
        self.scheduler.take();
    }
}

/// How long a test may use its cluster before the watchdog kills it.
pub const WATCHDOG: Duration = Duration::from_secs(120);

/// SIGKILLs the given processes (the list as it is then) unless dropped within `WATCHDOG`.
struct Watchdog {
    cancel: Option<mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watchdog {
    fn start(pids: Arc<Mutex<Vec<u32>>>) -> Watchdog {
        let (cancel, cancelled) = mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            if let Err(mpsc::RecvTimeoutError::Timeout) = cancelled.recv_timeout(WATCHDOG) {
                let pids = pids.lock().map(|p| p.clone()).unwrap_or_default();
                eprintln!("watchdog: test still running after {WATCHDOG:?}, killing {pids:?}");
                for pid in pids {
                    let _ = Command::new("kill")
                        .args(["-KILL", &pid.to_string()])
                        .status();
                }
            }
        });
        Watchdog {
            cancel: Some(cancel),
            thread: Some(thread),
        }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.cancel.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What a finished command printed.
#[derive(Debug)]
pub struct Output {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }
}

/// Runs `program args`, killing it if it has not finished within `DEADLINE`.
pub fn run(program: &str, args: &[&str]) -> Output {
    run_with_env(program, args, &[])
}

pub fn run_with_env(program: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    // The caller's environment must not leak a scheduler address in; `env` may set one.
    let mut child = Command::new(program)
        .args(args)
        .env_remove("ZASK_SCHEDULER")
        .env_remove(zask::security::ACCESS_FILE_ENV)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {program}: {e}"));
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = r.read_to_string(&mut s);
            s
        })
    };
    let out = drain(Box::new(child.stdout.take().expect("piped")));
    let err = drain(Box::new(child.stderr.take().expect("piped")));
    let deadline = Instant::now() + DEADLINE;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "`{program} {}` did not finish within {DEADLINE:?}",
                args.join(" ")
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    Output {
        status,
        stdout: out.join().expect("stdout reader"),
        stderr: err.join().expect("stderr reader"),
    }
}
