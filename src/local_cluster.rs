//! An embedded cluster: a scheduler and workers as threads of this process, talking over real
//! ZeroMQ sockets on loopback, so a program runs with no servers at all. It is a `Cluster`:
//! it scales (`scale`) and adapts (`adapt`) by starting and retiring worker threads.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use zask_storage::StoreSpec;

use crate::adaptive::AdaptConfig;
use crate::client::{Client, ClientConfig, ClientError, ClientSecurity};
use crate::cluster::{downgrade, Adapter, Cluster, ClusterError};
use crate::net::StartError;
use crate::protocol::WorkerAddress;
use crate::scheduler::server::SchedulerStartError;
use crate::scheduler::{Scheduler, SchedulerConfig};
use crate::security::{Access, ClusterKeys, Role, SecurityError};
use crate::worker::{Registry, Worker, WorkerConfig};

/// How long `start` waits for its workers to register.
const REGISTRATION_TIMEOUT_MS: u64 = 10_000;

/// How to build a `LocalCluster` (`LocalCluster::builder()`); each setting says its default.
#[derive(Clone)]
pub struct LocalClusterBuilder {
    /// Worker threads of the process (each with its own store and peer port). Default: one
    /// per core (`available_parallelism`), so the machine is used without oversubscribing.
    workers: usize,
    /// Task threads per worker. Default: 1 (parallelism comes from the workers).
    threads_per_worker: u32,
    /// Each worker's `WorkerConfig::memory_limit_bytes`. Default: 0 (no limit), as a worker
    /// started from code: the caller decides how to split the machine.
    memory_limit_bytes: u64,
    /// The functions workers run. Default: the built-ins (`Registry::with_builtins`), never
    /// the test functions.
    registry: Registry,
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
    /// How many workers (default: one per core).
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = n;
        self
    }

    /// Task threads per worker, at least 1 (default: 1).
    pub fn threads_per_worker(mut self, n: u32) -> Self {
        self.threads_per_worker = n.max(1);
        self
    }

    /// The most data each worker holds, in bytes (`WorkerConfig::memory_limit_bytes`; default
    /// 0: no limit). `zask::worker::memory::parse_memory_limit` reads the `--memory-limit`
    /// spellings (300MB, 4GiB, 0.25, auto).
    pub fn memory_limit_bytes(mut self, bytes: u64) -> Self {
        self.memory_limit_bytes = bytes;
        self
    }

    /// The functions workers can run (default: the built-ins).
    pub fn registry(mut self, registry: Registry) -> Self {
        self.registry = registry;
        self
    }

    /// Workers also offer the test functions (`Registry::with_test_functions`: `exit_process`,
    /// `counted_inc`, `wait_for_file`, `alloc`, `fail_with_length`), for tests only.
    pub fn test_functions(self) -> Self {
        self.registry(Registry::with_test_functions())
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

    /// Starts the scheduler and the workers, and returns once every worker has registered.
    pub fn start(mut self) -> Result<LocalCluster, LocalClusterError> {
        if self.secure && self.scheduler.security.is_none() {
            self.scheduler.security =
                Some(ClusterKeys::generate().map_err(LocalClusterError::Security)?);
        }
        let keys = self.scheduler.security.clone();
        let scheduler = Scheduler::start(self.scheduler).map_err(LocalClusterError::Scheduler)?;
        let inner = Arc::new(LocalWorkers {
            workers: Mutex::new(Vec::with_capacity(self.workers)),
            scheduler,
            keys,
            threads_per_worker: self.threads_per_worker,
            memory_limit_bytes: self.memory_limit_bytes,
            registry: self.registry,
            store: self.store,
            next_index: AtomicUsize::new(0),
        });
        for i in 0..self.workers {
            inner
                .start_worker()
                .map_err(|error| LocalClusterError::Worker { index: i, error })?;
        }
        let cluster = LocalCluster {
            adapter: Mutex::new(None),
            inner,
        };
        cluster.wait_for_workers(self.workers)?;
        Ok(cluster)
    }
}

/// A scheduler and workers inside this process. Dropping it stops them.
///
/// A panic in one of its threads outside a task is a Zask bug and ends this process with
/// `zask::fatal::EXIT_CODE`, as it would end a separate scheduler or worker process (see
/// `zask::fatal`); panics in tasks are task errors and panics in your own threads are yours.
pub struct LocalCluster {
    // Declared first so adapting stops before the workers and the scheduler go away.
    adapter: Mutex<Option<Adapter>>,
    inner: Arc<LocalWorkers>,
}

/// What a `LocalCluster` runs, shared with its adaptive thread (which holds it weakly).
struct LocalWorkers {
    // Declared first so workers say goodbye before the scheduler goes away.
    workers: Mutex<Vec<Worker>>,
    scheduler: Scheduler,
    /// The cluster's keys (None when insecure).
    keys: Option<ClusterKeys>,
    threads_per_worker: u32,
    memory_limit_bytes: u64,
    registry: Registry,
    store: StoreSpec,
    /// The next worker's index: its name is `local-<index>` (never reused, so a retired
    /// worker's name is never taken by a new one), its sled store `worker-<index>`.
    next_index: AtomicUsize,
}

impl LocalWorkers {
    /// Starts one more worker thread (it registers some time later).
    fn start_worker(&self) -> Result<WorkerAddress, StartError> {
        let i = self.next_index.fetch_add(1, Ordering::SeqCst);
        let mut config = WorkerConfig::new(self.scheduler.address_to_workers());
        config.security = self.keys.as_ref().map(|k| k.access(Role::Worker));
        config.nthreads = self.threads_per_worker;
        config.memory_limit_bytes = self.memory_limit_bytes;
        config.name = Some(format!("local-{i}").into());
        config.store = match &self.store {
            StoreSpec::Sled(path) => StoreSpec::Sled(path.join(format!("worker-{i}"))),
            other => other.clone(),
        };
        let worker = Worker::start(config, self.registry.clone())?;
        let address = worker.address().clone();
        self.workers.lock().expect("never poisoned").push(worker);
        Ok(address)
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

    /// Retires them (`Worker::retire`) all at once, each on its own thread, and returns when
    /// all are gone.
    fn stop_workers(&self, addresses: &[WorkerAddress]) -> Result<(), ClusterError> {
        let leaving: Vec<Worker> = {
            let mut workers = self.workers.lock().expect("never poisoned");
            let (leaving, staying) = std::mem::take(&mut *workers)
                .into_iter()
                .partition(|w| addresses.contains(w.address()));
            *workers = staying;
            leaving
        };
        std::thread::scope(|s| {
            for w in leaving {
                s.spawn(move || w.retire());
            }
        });
        Ok(())
    }

    fn scheduler_address(&self) -> &str {
        self.scheduler.address_to_clients()
    }

    fn client(&self) -> Result<Client, ClientError> {
        LocalWorkers::client(self)
    }

    /// The worker threads still running (one that stopped by itself is not counted).
    fn started(&self) -> Vec<WorkerAddress> {
        self.workers
            .lock()
            .expect("never poisoned")
            .iter()
            .filter(|w| w.is_running())
            .map(|w| w.address().clone())
            .collect()
    }

    fn threads_per_worker(&self) -> u32 {
        self.threads_per_worker
    }
}

/// The cluster's own operations, on its shared part.
impl Cluster for LocalCluster {
    fn start_workers(&self, n: usize) -> Result<Vec<WorkerAddress>, ClusterError> {
        self.inner.start_workers(n)
    }

    fn stop_workers(&self, workers: &[WorkerAddress]) -> Result<(), ClusterError> {
        self.inner.stop_workers(workers)
    }

    fn scheduler_address(&self) -> &str {
        self.inner.scheduler_address()
    }

    fn client(&self) -> Result<Client, ClientError> {
        self.inner.client()
    }

    fn started(&self) -> Vec<WorkerAddress> {
        self.inner.started()
    }

    fn threads_per_worker(&self) -> u32 {
        self.inner.threads_per_worker
    }
}

impl LocalCluster {
    /// One worker per core, one thread each, the built-in functions (no test functions),
    /// in-memory stores.
    pub fn new() -> Result<LocalCluster, LocalClusterError> {
        LocalCluster::builder().start()
    }

    pub fn builder() -> LocalClusterBuilder {
        LocalClusterBuilder {
            workers: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            threads_per_worker: 1,
            memory_limit_bytes: 0,
            registry: Registry::with_builtins(),
            store: StoreSpec::Memory,
            scheduler: SchedulerConfig::default(),
            secure: true,
        }
    }

    /// A client connected to this cluster, as its operator (whoever made the cluster owns it).
    pub fn client(&self) -> Result<Client, ClientError> {
        self.inner.client()
    }

    /// Scales the cluster by the adaptive policy (`crate::adaptive`) between `config.minimum`
    /// and `config.maximum` workers, deciding every `config.interval_ms` on a thread of its
    /// own and logging each decision with its reason. Called again, it replaces the bounds
    /// and settings (retirement suggestions start counting again).
    pub fn adapt(&self, config: AdaptConfig) -> Result<(), ClusterError> {
        let mut adapter = self.adapter.lock().expect("never poisoned");
        match adapter.as_ref() {
            Some(running) => running.set_config(config),
            None => *adapter = Some(Adapter::start(downgrade(&self.inner), config)?),
        }
        Ok(())
    }

    /// Stops adapting (the workers stay as they are); returns once its thread has finished
    /// its step. Nothing happens if it was not adapting.
    pub fn stop_adapt(&self) {
        let adapter = self.adapter.lock().expect("never poisoned").take();
        if let Some(adapter) = adapter {
            adapter.stop();
        }
    }

    /// What a peer of `role` needs to connect (to hand a client or worker elsewhere in this
    /// process, or write with `Access::write`); None when the cluster is insecure.
    pub fn access(&self, role: Role) -> Option<Access> {
        self.inner.keys.as_ref().map(|k| k.access(role))
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
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::{AddressProblem, Endpoint};

    #[test]
    fn a_taken_port_fails_the_start_with_an_error_worth_retrying() {
        let ctx = zmq::Context::new();
        let holder = ctx.socket(zmq::ROUTER).unwrap();
        let taken = crate::net::bind(&holder, "127.0.0.1", 0).unwrap();
        let port = Endpoint::parse(&taken).unwrap().port;
        let err = LocalCluster::builder()
            .workers(0)
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
