//! An embedded cluster: a scheduler in this process and workers beside it, talking over real
//! ZeroMQ sockets on loopback, so a program runs with no servers to start by hand. It is a
//! `Cluster`: it scales (`scale`) and adapts (`adapt`) by starting and retiring workers.
//!
//! Workers are `zask-worker` processes, each under its nanny (the default), or threads of this
//! process (`processes(false)`, and always with functions registered in this program, which a
//! process cannot run). With no settings it fills the machine (`fill_machine`): workers ×
//! threads = cores, the memory split evenly as each worker's limit.
//!
//! Worker processes read the cluster's worker access from a file (mode 0600) in a directory
//! only this user can read, made for the cluster and removed with it; never from their command
//! line. They are started so that they die with this process (`crate::processes`), stopped
//! gracefully (SIGTERM to the nanny: the worker's results move to other workers first) when
//! scaled down, and all stopped when the cluster is dropped.

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use zask_storage::StoreSpec;

use crate::client::{Client, ClientConfig, ClientError, ClientSecurity};
use crate::cluster::{Cluster, ClusterError, ManagedCluster};
use crate::net::{Endpoint, StartError};
use crate::processes::{self, BinaryNotFound, PrivateDir, Spawner};
use crate::protocol::WorkerAddress;
use crate::scheduler::server::SchedulerStartError;
use crate::scheduler::{Scheduler, SchedulerConfig};
use crate::security::{Access, ClusterKeys, Role, SecurityError};
use crate::worker::{Registry, Worker, WorkerConfig};

/// How long `start` waits for its workers to register (processes start slower than threads,
/// and a loaded machine slower still).
const REGISTRATION_TIMEOUT_MS: u64 = 30_000;

/// How long a stopped worker process (its nanny) has to retire and exit before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(20);

/// How a machine's cores and memory are shared between the workers of a cluster that fills
/// it (`fill_machine`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MachineShare {
    pub workers: usize,
    pub threads_per_worker: u32,
    /// Each worker's memory limit: the machine's memory split evenly (0 when unknown).
    pub memory_limit_bytes: u64,
}

/// How a cluster with no settings fills a machine of `cores` cores and `memory_bytes` bytes,
/// as dask's LocalCluster does: up to 4 cores, one single-threaded worker per core (2 cores:
/// 2 workers × 1 thread); above, the number of workers is the smallest divisor of `cores` that
/// is at least its square root, each with `cores / workers` threads (8 cores: 4 × 2; 16: 4 × 4;
/// a prime count such as 7: 7 × 1), so workers × threads = cores. Each worker's memory limit is
/// the memory divided by the number of workers. Pure.
pub fn fill_machine(cores: usize, memory_bytes: u64) -> MachineShare {
    let cores = cores.max(1);
    let workers = if cores <= 4 {
        cores
    } else {
        (1..=cores)
            .filter(|f| cores.is_multiple_of(*f) && f * f >= cores)
            .min()
            .unwrap_or(cores)
    };
    MachineShare {
        workers,
        threads_per_worker: (cores / workers) as u32,
        memory_limit_bytes: memory_bytes / workers as u64,
    }
}

/// This machine's cores and memory in bytes (0 when it cannot be read: no default limit).
fn machine() -> (usize, u64) {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let memory = crate::worker::memory::machine_memory_bytes().unwrap_or_else(|e| {
        log::debug!("no memory limit by default: {e}");
        0
    });
    (cores, memory)
}

/// The functions the workers run.
#[derive(Clone)]
enum Functions {
    /// The built-ins (what `zask-worker` runs).
    Builtins,
    /// The built-ins and the test functions (`zask-worker --test-functions`).
    WithTests,
    /// A registry made by this program: only worker threads of this process can run it.
    Custom(Registry),
}

impl Functions {
    fn registry(&self) -> Registry {
        match self {
            Functions::Builtins => Registry::with_builtins(),
            Functions::WithTests => Registry::with_test_functions(),
            Functions::Custom(r) => r.clone(),
        }
    }
}

/// How to build a `LocalCluster` (`LocalCluster::builder()`); each setting says its default.
#[derive(Clone)]
pub struct LocalClusterBuilder {
    /// Workers to start. Default: as `fill_machine` says for this machine's cores when the
    /// threads are not given either; `cores / threads` when they are.
    workers: Option<usize>,
    /// Task threads per worker. Default: 1 when the workers are given, else as
    /// `fill_machine` says.
    threads_per_worker: Option<u32>,
    /// Each worker's `WorkerConfig::memory_limit_bytes`. Default: the machine's memory divided
    /// by the number of workers started (none when the machine's memory cannot be read).
    memory_limit_bytes: Option<u64>,
    /// Worker processes (`zask-worker` under its nanny) or threads of this process. Default:
    /// processes, except with a registry made by this program (`registry`), which only
    /// threads can run.
    processes: Option<bool>,
    /// The functions workers run. Default: the built-ins, never the test functions.
    functions: Functions,
    /// Where workers keep results. Default: memory; `sled:PATH` gives each worker
    /// `PATH/worker-<i>`.
    store: StoreSpec,
    /// The scheduler's settings. Default: `SchedulerConfig::default()` (its ports 0: any free
    /// port on loopback).
    scheduler: SchedulerConfig,
    /// CURVE on every socket with keys made for this cluster, in memory (unless the scheduler
    /// settings bring their own). Default: on; `insecure()` turns it off.
    secure: bool,
}

impl LocalClusterBuilder {
    /// How many workers (default: see `fill_machine`).
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = Some(n);
        self
    }

    /// Task threads per worker, at least 1 (default: 1 when `workers` is given, else see
    /// `fill_machine`).
    pub fn threads_per_worker(mut self, n: u32) -> Self {
        self.threads_per_worker = Some(n.max(1));
        self
    }

    /// The most data each worker holds, in bytes (`WorkerConfig::memory_limit_bytes`; 0: no
    /// limit; default: the machine's memory split evenly between the workers started).
    /// `zask::worker::memory::parse_memory_limit` reads the `--memory-limit` spellings
    /// (300MB, 4GiB, 0.25, auto).
    pub fn memory_limit_bytes(mut self, bytes: u64) -> Self {
        self.memory_limit_bytes = Some(bytes);
        self
    }

    /// Workers as `zask-worker` processes, each under its nanny (true, the default), or as
    /// threads of this process (false). Processes need the `zask-worker` program: the path in
    /// `ZASK_WORKER_BIN`, else beside this program (or in its directory's parent), else on
    /// PATH.
    pub fn processes(mut self, processes: bool) -> Self {
        self.processes = Some(processes);
        self
    }

    /// The functions workers can run (default: the built-ins). Functions registered by this
    /// program run only in worker threads of this process: this picks threads unless
    /// `processes(true)` asks otherwise (then `start` fails, saying so).
    pub fn registry(mut self, registry: Registry) -> Self {
        self.functions = Functions::Custom(registry);
        self
    }

    /// Workers also offer the test functions (`Registry::with_test_functions`: `exit_process`,
    /// `counted_inc`, `wait_for_file`, `alloc`, `fail_with_length`), for tests only; worker
    /// processes get `--test-functions`.
    pub fn test_functions(mut self) -> Self {
        self.functions = Functions::WithTests;
        self
    }

    /// Where workers keep results (default: memory).
    pub fn store(mut self, store: StoreSpec) -> Self {
        self.store = store;
        self
    }

    /// The scheduler's settings (default: `SchedulerConfig::default()`).
    pub fn scheduler_config(mut self, config: SchedulerConfig) -> Self {
        self.scheduler = config;
        self
    }

    /// No encryption and no authentication (default: CURVE with keys made for the cluster).
    pub fn insecure(mut self) -> Self {
        self.secure = false;
        self.scheduler.security = None;
        self
    }

    /// Workers, threads per worker and memory limit as `start` will resolve them on this
    /// machine (its cores and memory).
    pub fn shape(&self) -> MachineShare {
        let (cores, memory) = machine();
        self.resolve_shape(cores, memory)
    }

    /// Workers, threads per worker and memory limit as `start` resolves them from the settings
    /// and this machine (`cores`, `memory_bytes`: 0 when unknown). Pure.
    fn resolve_shape(&self, cores: usize, memory_bytes: u64) -> MachineShare {
        let filled = fill_machine(cores, memory_bytes);
        let (workers, threads) = match (self.workers, self.threads_per_worker) {
            (Some(w), Some(t)) => (w, t),
            (Some(w), None) => (w, 1),
            (None, Some(t)) => ((cores / t as usize).max(1), t),
            (None, None) => (filled.workers, filled.threads_per_worker),
        };
        let memory = self
            .memory_limit_bytes
            .unwrap_or_else(|| memory_bytes / workers.max(1) as u64);
        MachineShare {
            workers,
            threads_per_worker: threads,
            memory_limit_bytes: memory,
        }
    }

    /// Starts the scheduler and the workers, and returns once every worker has registered.
    pub fn start(mut self) -> Result<LocalCluster, LocalClusterError> {
        let processes = self
            .processes
            .unwrap_or(!matches!(self.functions, Functions::Custom(_)));
        if processes && matches!(self.functions, Functions::Custom(_)) {
            return Err(LocalClusterError::CustomFunctionsInProcesses);
        }
        let shape = self.shape();
        // Found before anything starts, so a missing program fails at once, saying how to fix it.
        let program = if processes {
            Some(
                processes::find_binary("zask-worker", processes::WORKER_BIN_ENV)
                    .map_err(LocalClusterError::NoWorkerProgram)?,
            )
        } else {
            None
        };
        if self.secure && self.scheduler.security.is_none() {
            self.scheduler.security =
                Some(ClusterKeys::generate().map_err(LocalClusterError::Security)?);
        }
        let keys = self.scheduler.security.clone();
        let scheduler = Scheduler::start(self.scheduler).map_err(LocalClusterError::Scheduler)?;
        let launcher = match program {
            Some(program) => {
                let dir = PrivateDir::new("zask-cluster").map_err(LocalClusterError::Process)?;
                let access_file = match &keys {
                    Some(k) => {
                        let path = dir.path().join(Role::Worker.access_file_name());
                        k.access(Role::Worker)
                            .write(&path)
                            .map_err(LocalClusterError::Security)?;
                        Some(path)
                    }
                    None => None,
                };
                Launcher::Processes(ProcessLauncher {
                    program,
                    access_file,
                    spawner: Spawner::start().map_err(LocalClusterError::Process)?,
                    dir,
                })
            }
            None => Launcher::Threads,
        };
        let inner = Arc::new(LocalWorkers {
            workers: Mutex::new(Vec::with_capacity(shape.workers)),
            scheduler,
            keys,
            threads_per_worker: shape.threads_per_worker,
            memory_limit_bytes: shape.memory_limit_bytes,
            functions: self.functions,
            store: self.store,
            next_index: AtomicUsize::new(0),
            launcher,
        });
        for i in 0..shape.workers {
            inner
                .start_worker()
                .map_err(|error| LocalClusterError::Worker { index: i, error })?;
        }
        let cluster = ManagedCluster::managing(inner);
        cluster.wait_for_workers(shape.workers)?;
        Ok(cluster)
    }
}

/// A scheduler and workers beside it. Dropping it stops them (worker processes too).
///
/// A panic in one of its threads outside a task is a Zask bug and ends this process with
/// `zask::fatal::EXIT_CODE`, as it would end a separate scheduler or worker process (see
/// `zask::fatal`); panics in tasks are task errors and panics in your own threads are yours.
pub type LocalCluster = ManagedCluster<LocalWorkers>;

/// How workers are started.
enum Launcher {
    Threads,
    Processes(ProcessLauncher),
}

/// What starting a worker process takes.
struct ProcessLauncher {
    /// The `zask-worker` program.
    program: std::path::PathBuf,
    /// The worker's access file in `dir` (None when insecure).
    access_file: Option<std::path::PathBuf>,
    /// Starts every process, so they die with this one.
    spawner: Spawner,
    /// The cluster's private directory (0700), removed when the cluster goes.
    dir: PrivateDir,
}

/// One worker, as a thread or as a process.
enum LocalWorker {
    Thread(Worker),
    /// The nanny process (which runs the worker process) and the peer address the worker
    /// was told to listen at.
    Process {
        nanny: Child,
        address: WorkerAddress,
    },
}

impl LocalWorker {
    fn address(&self) -> &WorkerAddress {
        match self {
            LocalWorker::Thread(w) => w.address(),
            LocalWorker::Process { address, .. } => address,
        }
    }

    fn is_running(&mut self) -> bool {
        match self {
            LocalWorker::Thread(w) => w.is_running(),
            LocalWorker::Process { nanny, .. } => matches!(nanny.try_wait(), Ok(None)),
        }
    }
}

/// Stops workers gracefully, all at once: threads retire (`Worker::retire`) each on its own
/// thread; processes get SIGTERM (their nanny stops the worker, which retires: its results
/// move to other workers first) and are killed past `STOP_GRACE`. Returns when all are gone.
fn stop_all(leaving: Vec<LocalWorker>) {
    let mut threads = Vec::new();
    let mut nannies = Vec::new();
    for w in leaving {
        match w {
            LocalWorker::Thread(w) => threads.push(w),
            LocalWorker::Process { nanny, address } => {
                log::info!("stopping worker process {} ({address})", nanny.id());
                nannies.push(nanny);
            }
        }
    }
    std::thread::scope(|s| {
        for w in threads {
            s.spawn(move || w.retire());
        }
        let mut children: Vec<&mut Child> = nannies.iter_mut().collect();
        processes::terminate(&mut children, STOP_GRACE);
    });
}

/// What a `LocalCluster` runs, shared with its adaptive thread (which holds it weakly); used
/// only through `LocalCluster`.
pub struct LocalWorkers {
    // Declared first so workers say goodbye before the scheduler goes away.
    workers: Mutex<Vec<LocalWorker>>,
    scheduler: Scheduler,
    /// The cluster's keys (None when insecure).
    keys: Option<ClusterKeys>,
    threads_per_worker: u32,
    memory_limit_bytes: u64,
    functions: Functions,
    store: StoreSpec,
    /// The next worker's index: its name is `local-<index>` (never reused, so a retired
    /// worker's name is never taken by a new one), its sled store `worker-<index>`.
    next_index: AtomicUsize,
    /// Threads, or what starting processes takes (dropped after the workers are stopped).
    launcher: Launcher,
}

impl Drop for LocalWorkers {
    /// Stops every worker while the scheduler still runs: worker threads as before (dropped:
    /// they say goodbye), worker processes with SIGTERM (`stop_all`), so none outlives the
    /// cluster.
    fn drop(&mut self) {
        let all = std::mem::take(&mut *self.workers.lock().unwrap_or_else(|e| e.into_inner()));
        let (threads, processes): (Vec<LocalWorker>, Vec<LocalWorker>) = all
            .into_iter()
            .partition(|w| matches!(w, LocalWorker::Thread(_)));
        drop(threads);
        stop_all(processes);
    }
}

impl LocalWorkers {
    /// Starts one more worker (it registers some time later).
    fn start_worker(&self) -> Result<WorkerAddress, StartError> {
        let i = self.next_index.fetch_add(1, Ordering::SeqCst);
        let name = format!("local-{i}");
        let store = match &self.store {
            StoreSpec::Sled(path) => StoreSpec::Sled(path.join(format!("worker-{i}"))),
            other => other.clone(),
        };
        let worker = match &self.launcher {
            Launcher::Threads => {
                let mut config = WorkerConfig::new(self.scheduler.address_to_workers());
                config.security = self.keys.as_ref().map(|k| k.access(Role::Worker));
                config.nthreads = self.threads_per_worker;
                config.memory_limit_bytes = self.memory_limit_bytes;
                config.name = Some(name.into());
                config.store = store;
                LocalWorker::Thread(Worker::start(config, self.functions.registry())?)
            }
            Launcher::Processes(launcher) => self.start_process(launcher, name, &store)?,
        };
        let address = worker.address().clone();
        self.workers.lock().expect("never poisoned").push(worker);
        Ok(address)
    }

    /// Starts `zask-worker` (under its nanny) on a free peer port it is told, so its address
    /// is known before it registers.
    fn start_process(
        &self,
        launcher: &ProcessLauncher,
        name: String,
        store: &StoreSpec,
    ) -> Result<LocalWorker, StartError> {
        let scheduler = self.scheduler.address_to_workers();
        let endpoint = Endpoint::parse(scheduler)?;
        let (bind_host, advertised) = if endpoint.is_loopback() {
            ("127.0.0.1".to_owned(), "127.0.0.1".to_owned())
        } else {
            ("0.0.0.0".to_owned(), crate::net::hostname())
        };
        // A free port now; the worker binds it a moment later.
        let port = std::net::TcpListener::bind((bind_host.as_str(), 0))
            .and_then(|l| l.local_addr())
            .map_err(|e| StartError::resource("a free port for a worker process", e))?
            .port();
        let mut command = Command::new(&launcher.program);
        command
            .arg(scheduler)
            .args(["--name", &name])
            .args(["--nthreads", &self.threads_per_worker.to_string()])
            .args(["--memory-limit", &self.memory_limit_bytes.to_string()])
            .args(["--host", &bind_host])
            .args(["--peer-port", &port.to_string()])
            .args(["--store", &store.to_string()])
            .env_remove(crate::security::ACCESS_FILE_ENV)
            .stdin(Stdio::null());
        // The worker's stdout line goes to stderr with its logs: a program's stdout is its own.
        if let Ok(stderr) = std::os::fd::AsFd::as_fd(&std::io::stderr()).try_clone_to_owned() {
            command.stdout(Stdio::from(stderr));
        }
        if matches!(self.functions, Functions::WithTests) {
            command.arg("--test-functions");
        }
        match &launcher.access_file {
            Some(path) => command.arg("--access-file").arg(path),
            None => command.arg("--insecure"),
        };
        let nanny = launcher
            .spawner
            .spawn(command)
            .map_err(|e| StartError::resource("a worker process", e))?;
        let address = WorkerAddress::from(format!("tcp://{advertised}:{port}"));
        log::info!(
            "started worker process {} ({name}, {address}) in {}",
            nanny.id(),
            launcher.dir.path().display()
        );
        Ok(LocalWorker::Process { nanny, address })
    }

    fn client(&self) -> Result<Client, ClientError> {
        let security = match self.keys.as_ref().map(|k| k.access(Role::Operator)) {
            Some(access) => ClientSecurity::Access(access),
            None => ClientSecurity::Insecure,
        };
        let config = ClientConfig {
            security,
            ..ClientConfig::default()
        };
        Client::connect_with(self.scheduler.address_to_clients(), config)
    }
}

impl Cluster for LocalWorkers {
    fn start_workers(&self, n: usize) -> Result<Vec<WorkerAddress>, ClusterError> {
        (0..n)
            .map(|_| self.start_worker().map_err(ClusterError::Start))
            .collect()
    }

    /// Stops them gracefully all at once (`stop_all`: threads retire; processes get SIGTERM
    /// and retire), and returns when all are gone.
    fn stop_workers(&self, addresses: &[WorkerAddress]) -> Result<(), ClusterError> {
        let leaving: Vec<LocalWorker> = {
            let mut workers = self.workers.lock().expect("never poisoned");
            let (leaving, staying) = std::mem::take(&mut *workers)
                .into_iter()
                .partition(|w| addresses.contains(w.address()));
            *workers = staying;
            leaving
        };
        stop_all(leaving);
        Ok(())
    }

    fn scheduler_address(&self) -> &str {
        self.scheduler.address_to_clients()
    }

    fn client(&self) -> Result<Client, ClientError> {
        LocalWorkers::client(self)
    }

    /// The workers still running (a thread or a nanny that stopped by itself is not
    /// counted).
    fn started(&self) -> Vec<WorkerAddress> {
        self.workers
            .lock()
            .expect("never poisoned")
            .iter_mut()
            .filter_map(|w| w.is_running().then(|| w.address().clone()))
            .collect()
    }

    fn threads_per_worker(&self) -> u32 {
        self.threads_per_worker
    }
}

impl LocalCluster {
    /// Fills the machine (`fill_machine`) with worker processes running the built-in
    /// functions (no test functions), in-memory stores.
    pub fn new() -> Result<LocalCluster, LocalClusterError> {
        LocalCluster::builder().start()
    }

    pub fn builder() -> LocalClusterBuilder {
        LocalClusterBuilder {
            workers: None,
            threads_per_worker: None,
            memory_limit_bytes: None,
            processes: None,
            functions: Functions::Builtins,
            store: StoreSpec::Memory,
            scheduler: SchedulerConfig::default(),
            secure: true,
        }
    }

    /// What a peer of `role` needs to connect (to hand a client or worker elsewhere in this
    /// process, or write with `Access::write`); None when the cluster is insecure.
    pub fn access(&self, role: Role) -> Option<Access> {
        self.inner.keys.as_ref().map(|k| k.access(role))
    }

    /// Whether the scheduler stopped because an operator shut the cluster down
    /// (`Client::shutdown`, `zask shutdown`; its workers were dismissed). What is left to do
    /// is to drop the cluster (`zask local` exits).
    pub fn shut_down(&self) -> bool {
        self.inner.scheduler.has_stopped()
    }

    pub fn address_to_clients(&self) -> &str {
        self.inner.scheduler.address_to_clients()
    }

    pub fn address_to_workers(&self) -> &str {
        self.inner.scheduler.address_to_workers()
    }

    /// Where the scheduler's dashboard listens, when its `SchedulerConfig::dashboard` is set.
    pub fn dashboard_address(&self) -> Option<std::net::SocketAddr> {
        self.inner.scheduler.dashboard_address()
    }

    /// The workers started and not retired (running or not).
    pub fn worker_addresses(&self) -> Vec<WorkerAddress> {
        self.inner
            .workers
            .lock()
            .expect("never poisoned")
            .iter()
            .map(|w| w.address().clone())
            .collect()
    }

    /// The process ids of the worker processes' nannies (each runs one worker process, whose
    /// own pid is in the workers' status); empty with worker threads.
    pub fn nanny_pids(&self) -> Vec<u32> {
        self.inner
            .workers
            .lock()
            .expect("never poisoned")
            .iter()
            .filter_map(|w| match w {
                LocalWorker::Process { nanny, .. } => Some(nanny.id()),
                LocalWorker::Thread(_) => None,
            })
            .collect()
    }

    /// Whether its workers are processes (else threads of this process).
    pub fn uses_processes(&self) -> bool {
        matches!(self.inner.launcher, Launcher::Processes(_))
    }

    /// Task threads of each worker.
    pub fn threads_per_worker(&self) -> u32 {
        self.inner.threads_per_worker
    }

    /// Each worker's memory limit in bytes (0: none).
    pub fn memory_limit_bytes(&self) -> u64 {
        self.inner.memory_limit_bytes
    }

    /// Waits (bounded) until `n` workers have registered.
    fn wait_for_workers(&self, n: usize) -> Result<(), LocalClusterError> {
        let client = self.client().map_err(LocalClusterError::Client)?;
        let deadline =
            std::time::Instant::now() + std::time::Duration::from_millis(REGISTRATION_TIMEOUT_MS);
        loop {
            let have = client.workers().map_err(LocalClusterError::Client)?.len();
            if have >= n {
                return Ok(());
            }
            if std::time::Instant::now() > deadline {
                return Err(LocalClusterError::Unregistered {
                    registered: have,
                    started: n,
                    waited_ms: REGISTRATION_TIMEOUT_MS,
                });
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
}

/// Why a `LocalCluster` could not start. `retry_may_help` says whether starting it again,
/// unchanged, can succeed.
#[derive(Debug)]
pub enum LocalClusterError {
    /// The scheduler did not start (its own `retry_may_help` decides).
    Scheduler(SchedulerStartError),
    /// Worker `index` did not start (its own `retry_may_help` decides).
    Worker { index: usize, error: StartError },
    /// The cluster's own client could not ask the scheduler about its workers.
    Client(ClientError),
    /// Its keys could not be made (no CURVE in this libzmq).
    Security(SecurityError),
    /// Worker processes were asked for and no `zask-worker` program was found (the message
    /// says where it looked and how to fix it): not until it is installed.
    NoWorkerProgram(BinaryNotFound),
    /// Functions registered by this program (`registry`) with `processes(true)`: a
    /// `zask-worker` process cannot run them. Use threads, or the built-ins.
    CustomFunctionsInProcesses,
    /// The system refused what worker processes need (a directory, a thread): may pass.
    Process(std::io::Error),
    /// Not every worker registered in time (a loaded machine): may pass.
    Unregistered {
        registered: usize,
        started: usize,
        waited_ms: u64,
    },
}

impl LocalClusterError {
    /// Whether starting the cluster again, unchanged, can succeed later.
    pub fn retry_may_help(&self) -> bool {
        match self {
            LocalClusterError::Scheduler(e) => e.retry_may_help(),
            LocalClusterError::Worker { error, .. } => error.retry_may_help(),
            LocalClusterError::Client(e) => e.retry_may_help(),
            LocalClusterError::Unregistered { .. } => true,
            LocalClusterError::Security(e) => e.retry_may_help(),
            LocalClusterError::NoWorkerProgram(_) => false,
            LocalClusterError::CustomFunctionsInProcesses => false,
            LocalClusterError::Process(_) => true,
        }
    }
}

impl std::fmt::Display for LocalClusterError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LocalClusterError::Scheduler(e) => write!(f, "the scheduler did not start: {e}"),
            LocalClusterError::Worker { index, error } => {
                write!(f, "worker {index} did not start: {error}")
            }
            LocalClusterError::Client(e) => write!(f, "{e}"),
            LocalClusterError::Security(e) => write!(f, "securing the cluster: {e}"),
            LocalClusterError::NoWorkerProgram(e) => write!(f, "{e}"),
            LocalClusterError::CustomFunctionsInProcesses => write!(
                f,
                "functions registered by this program run only in worker threads: \
                 use processes(false) (or no processes(true)) with registry(..)"
            ),
            LocalClusterError::Process(e) => write!(f, "starting worker processes: {e}"),
            LocalClusterError::Unregistered {
                registered,
                started,
                waited_ms,
            } => write!(
                f,
                "only {registered} of {started} workers registered within {waited_ms} ms"
            ),
        }
    }
}

impl std::error::Error for LocalClusterError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LocalClusterError::Scheduler(e) => Some(e),
            LocalClusterError::Worker { error, .. } => Some(error),
            LocalClusterError::Client(e) => Some(e),
            LocalClusterError::Unregistered { .. } => None,
            LocalClusterError::Security(e) => Some(e),
            LocalClusterError::NoWorkerProgram(e) => Some(e),
            LocalClusterError::CustomFunctionsInProcesses => None,
            LocalClusterError::Process(e) => Some(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::{AddressProblem, Endpoint};

    #[test]
    fn filling_a_machine_uses_every_core_once_and_splits_the_memory() {
        let gib = 1 << 30;
        let shape = |cores| {
            let s = fill_machine(cores, 24 * gib);
            (s.workers, s.threads_per_worker)
        };
        assert_eq!(shape(0), (1, 1));
        assert_eq!(shape(1), (1, 1));
        assert_eq!(shape(2), (2, 1));
        assert_eq!(shape(4), (4, 1));
        assert_eq!(shape(6), (3, 2));
        assert_eq!(shape(7), (7, 1));
        assert_eq!(shape(8), (4, 2));
        assert_eq!(shape(12), (4, 3));
        assert_eq!(shape(16), (4, 4));
        assert_eq!(shape(64), (8, 8));
        for cores in 1..=128 {
            let s = fill_machine(cores, 24 * gib);
            assert_eq!(s.workers * s.threads_per_worker as usize, cores);
            assert_eq!(s.memory_limit_bytes, 24 * gib / s.workers as u64);
        }
        assert_eq!(
            fill_machine(2, 0).memory_limit_bytes,
            0,
            "unknown memory: no limit"
        );
    }

    #[test]
    fn settings_given_win_over_filling_the_machine() {
        let b = LocalCluster::builder();
        let gib = 1 << 30;
        let s = b.clone().resolve_shape(8, 8 * gib);
        assert_eq!(
            (s.workers, s.threads_per_worker, s.memory_limit_bytes),
            (4, 2, 2 * gib)
        );
        let s = b.clone().workers(2).resolve_shape(8, 8 * gib);
        assert_eq!(
            (s.workers, s.threads_per_worker, s.memory_limit_bytes),
            (2, 1, 4 * gib)
        );
        let s = b.clone().threads_per_worker(4).resolve_shape(8, 8 * gib);
        assert_eq!((s.workers, s.threads_per_worker), (2, 4));
        let s = b.clone().threads_per_worker(16).resolve_shape(8, 8 * gib);
        assert_eq!((s.workers, s.threads_per_worker), (1, 16));
        let s = b.workers(3).memory_limit_bytes(0).resolve_shape(8, 8 * gib);
        assert_eq!((s.workers, s.memory_limit_bytes), (3, 0));
    }

    #[test]
    fn functions_of_this_program_cannot_run_in_processes() {
        let err = LocalCluster::builder()
            .workers(0)
            .registry(Registry::with_builtins())
            .processes(true)
            .start()
            .err()
            .expect("refused");
        assert!(
            matches!(err, LocalClusterError::CustomFunctionsInProcesses),
            "{err:?}"
        );
        assert!(!err.retry_may_help());
    }

    #[test]
    fn a_taken_port_fails_the_start_with_an_error_worth_retrying() {
        let ctx = zmq::Context::new();
        let holder = ctx.socket(zmq::ROUTER).unwrap();
        let taken = crate::net::bind(&holder, "127.0.0.1", 0).unwrap();
        let port = Endpoint::parse(&taken).unwrap().port;
        let err = LocalCluster::builder()
            .workers(0)
            .processes(false)
            .scheduler_config(SchedulerConfig {
                worker_port: port,
                ..SchedulerConfig::default()
            })
            .start()
            .err()
            .expect("the port is taken");
        assert!(
            matches!(
                &err,
                LocalClusterError::Scheduler(SchedulerStartError::Start(StartError::Bind {
                    error,
                    ..
                }))
                    if *error == zmq::Error::EADDRINUSE
            ),
            "{err:?}"
        );
        assert!(err.retry_may_help(), "{err}");
    }

    #[test]
    fn a_bad_scheduler_address_fails_a_worker_for_good() {
        let err = Worker::start(WorkerConfig::new("127.0.0.1:4444"), Registry::new())
            .err()
            .expect("not an address");
        assert!(
            matches!(
                &err,
                StartError::Address(e) if e.problem == AddressProblem::NotTcp
            ),
            "{err:?}"
        );
        assert!(!err.retry_may_help(), "{err}");
        assert!(err.to_string().contains("tcp://HOST:PORT"), "{err}");
    }
}
