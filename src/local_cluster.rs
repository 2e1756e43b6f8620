//! An embedded cluster: a scheduler and workers as threads of this process, talking over real
//! ZeroMQ sockets on loopback, so a program runs with no servers at all.

use zask_storage::StoreSpec;

use crate::client::{Client, ClientError};
use crate::scheduler::{Scheduler, SchedulerConfig};
use crate::worker::{Registry, Worker, WorkerConfig};

/// How to build a `LocalCluster`.
#[derive(Clone)]
pub struct LocalClusterBuilder {
    workers: usize,
    threads_per_worker: u32,
    registry: Registry,
    store: StoreSpec,
    scheduler: SchedulerConfig,
}

impl LocalClusterBuilder {
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = n;
        self
    }

    pub fn threads_per_worker(mut self, n: u32) -> Self {
        self.threads_per_worker = n.max(1);
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

    pub fn store(mut self, store: StoreSpec) -> Self {
        self.store = store;
        self
    }

    pub fn scheduler_config(mut self, config: SchedulerConfig) -> Self {
        self.scheduler = config;
        self
    }

    pub fn start(self) -> Result<LocalCluster, String> {
        let scheduler = Scheduler::start(self.scheduler)?;
        let mut workers = Vec::with_capacity(self.workers);
        for i in 0..self.workers {
            let mut config = WorkerConfig::new(scheduler.address_to_workers());
            config.nthreads = self.threads_per_worker;
            config.name = Some(format!("local-{i}"));
            config.store = match &self.store {
                StoreSpec::Sled(path) => StoreSpec::Sled(path.join(format!("worker-{i}"))),
                other => other.clone(),
            };
            workers.push(Worker::start(config, self.registry.clone())?);
        }
        let cluster = LocalCluster { scheduler, workers };
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
    // Declared first so workers say goodbye before the scheduler goes away.
    workers: Vec<Worker>,
    scheduler: Scheduler,
}

impl LocalCluster {
    /// One worker per core, one thread each, the built-in functions (no test functions),
    /// in-memory stores.
    pub fn new() -> Result<LocalCluster, String> {
        LocalCluster::builder().start()
    }

    pub fn builder() -> LocalClusterBuilder {
        LocalClusterBuilder {
            workers: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            threads_per_worker: 1,
            registry: Registry::with_builtins(),
            store: StoreSpec::Memory,
            scheduler: SchedulerConfig::default(),
        }
    }

    /// A client connected to this cluster.
    pub fn client(&self) -> Result<Client, ClientError> {
        Client::connect(self.scheduler.address_to_clients())
    }

    pub fn address_to_clients(&self) -> &str {
        self.scheduler.address_to_clients()
    }

    pub fn address_to_workers(&self) -> &str {
        self.scheduler.address_to_workers()
    }

    pub fn worker_addresses(&self) -> Vec<String> {
        self.workers
            .iter()
            .map(|w| w.address().to_owned())
            .collect()
    }

    /// Waits (bounded) until `n` workers have registered.
    fn wait_for_workers(&self, n: usize) -> Result<(), String> {
        let client = self.client().map_err(|e| e.to_string())?;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let have = client.workers().map_err(|e| e.to_string())?.len();
            if have >= n {
                return Ok(());
            }
            if std::time::Instant::now() > deadline {
                return Err(format!("only {have} of {n} workers registered within 10 s"));
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
}
