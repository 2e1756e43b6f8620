//! What a resource manager implements to run a Zask cluster, and what it gets from that:
//! the `Cluster` trait (start n workers, stop these workers; `scale`, `workers`, one adaptive
//! step provided on top) and the `Adapter`, the thread that scales a cluster by the adaptive
//! policy (`crate::adaptive`) every interval.
//!
//! This is its own module, not part of `local_cluster.rs`, because it is not about threads in
//! one process: an SSH, SLURM or Kubernetes manager implements the same two operations, and
//! everything here (scaling, the adaptive loop, logging each decision) works for it unchanged.
//!
//! The adaptive loop runs on its own thread, which holds the cluster by a `Weak` reference
//! (`Adapter::start`): a manager keeps its state behind an `Arc` and its `Adapter` beside it,
//! so dropping the manager stops the loop rather than the loop keeping the manager alive.
//! `LocalCluster::adapt` shows the shape.

use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use log::{debug, info, warn};

use crate::adaptive::{AdaptConfig, Adaptive, ClusterFigures, Decision};
use crate::client::{Client, ClientError, Logs};
use crate::net::StartError;
use crate::protocol::{ScalingRequest, WantedScaling, WorkerAddress, WorkerInfo};

/// A cluster of workers around one scheduler, as a resource manager runs it. A manager
/// implements the two operations (`start_workers`, `stop_workers`) and says what it runs;
/// `scale`, `workers`, `figures` and `adapt_once` are provided.
pub trait Cluster: Send + Sync {
    /// Starts `n` more workers; returns their addresses. They register with the scheduler
    /// some time later (until then they are "requested").
    fn start_workers(&self, n: usize) -> Result<Vec<WorkerAddress>, ClusterError>;

    /// Stops these workers gracefully: the scheduler moves the results only they hold to
    /// other workers before each leaves (graceful retirement). Returns once they are gone.
    /// Addresses this manager did not start are ignored.
    fn stop_workers(&self, workers: &[WorkerAddress]) -> Result<(), ClusterError>;

    /// The address clients connect to.
    fn scheduler_address(&self) -> &str;

    /// A client of this cluster with the rights to manage it (an operator).
    fn client(&self) -> Result<Client, ClientError>;

    /// The workers this manager started and has not stopped, registered or not.
    fn started(&self) -> Vec<WorkerAddress>;

    /// Task threads of each worker it starts.
    fn threads_per_worker(&self) -> u32;

    /// The workers registered with the scheduler.
    fn workers(&self) -> Result<Vec<WorkerInfo>, ClusterError> {
        let client = self.client().map_err(ClusterError::Client)?;
        client.workers().map_err(ClusterError::Client)
    }

    /// The recent log lines of the scheduler and of every worker (`Client::get_logs`).
    fn get_logs(&self) -> Result<Logs, ClusterError> {
        let client = self.client().map_err(ClusterError::Client)?;
        client.get_logs(None).map_err(ClusterError::Client)
    }

    /// What the adaptive policy decides from: the scheduler's status and the workers started
    /// but not registered.
    fn figures(&self, client: &Client) -> Result<ClusterFigures, ClusterError> {
        let status = client.status().map_err(ClusterError::Client)?;
        Ok(ClusterFigures::from_status(
            &status,
            &self.started(),
            self.threads_per_worker(),
        ))
    }

    /// Grows or shrinks the cluster to `n` workers started by this manager. Shrinking stops
    /// the workers not registered yet first, then idle workers holding the least data, then
    /// the least busy.
    fn scale(&self, n: usize) -> Result<(), ClusterError> {
        let started = self.started();
        let excess = started.len().saturating_sub(n);
        if n > started.len() {
            self.start_workers(n - started.len())?;
            return Ok(());
        }
        if n == started.len() {
            return Ok(());
        }
        let registered = self.workers()?;
        let mut order: Vec<(u8, u64, u64, WorkerAddress)> = started
            .into_iter()
            .map(|a| match registered.iter().find(|w| w.address == a) {
                None => (0, 0, 0, a),
                Some(w) if w.idle => (1, w.nbytes, 0, a),
                Some(w) => (2, w.processing, w.nbytes, a),
            })
            .collect();
        order.sort();
        let stop: Vec<WorkerAddress> = order
            .into_iter()
            .take(excess)
            .map(|(_, _, _, a)| a)
            .collect();
        self.stop_workers(&stop)
    }

    /// One adaptive step: reads the figures, asks the policy at `now_ms`, does what it
    /// decided, and logs the decision with its reason (at info level; a hold, which comes
    /// every interval while nothing changes, at debug level). Returns the decision.
    fn adapt_once(
        &self,
        client: &Client,
        policy: &mut Adaptive,
        now_ms: u64,
    ) -> Result<Decision, ClusterError> {
        let figures = self.figures(client)?;
        let decision = policy.decide(now_ms, &figures);
        match &decision {
            Decision::Hold { .. } => debug!("adaptive: {decision}"),
            _ => info!("adaptive: {decision}"),
        }
        match &decision {
            Decision::Hold { .. } => {}
            Decision::ScaleUp { to, .. } => {
                let have = figures.workers.len() + figures.requested.len();
                self.start_workers(to.saturating_sub(have))?;
            }
            Decision::CancelRequested { workers, .. } | Decision::Retire { workers, .. } => {
                self.stop_workers(workers)?;
            }
        }
        Ok(decision)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_follower_hands_out_each_request_once() {
        let mut f = ScalingFollower::new();
        let wanted = |serial, workers| {
            Some(WantedScaling {
                serial,
                request: ScalingRequest::Scale { workers },
            })
        };
        assert_eq!(f.next(None), None);
        assert_eq!(
            f.next(wanted(1, 3)),
            Some(ScalingRequest::Scale { workers: 3 })
        );
        assert_eq!(f.next(wanted(1, 3)), None, "applied already");
        assert_eq!(
            f.next(wanted(2, 3)),
            Some(ScalingRequest::Scale { workers: 3 })
        );
        assert_eq!(
            f.next(wanted(1, 5)),
            Some(ScalingRequest::Scale { workers: 5 }),
            "a new scheduler counts from 1 again"
        );
    }
}

/// Why a cluster operation failed. `retry_may_help` says whether trying again can succeed.
#[derive(Debug)]
pub enum ClusterError {
    /// Talking to the scheduler failed (its own `retry_may_help` decides).
    Client(ClientError),
    /// A worker did not start (its own `retry_may_help` decides).
    Start(StartError),
    /// The adaptive thread could not be started (the system refused a thread: may pass).
    Thread(std::io::Error),
    /// The ssh program could not be run or fed (missing: not until it is installed).
    Ssh(std::io::Error),
    /// A remote worker did not say its address in time: ssh could not connect, or the remote
    /// program is missing or failed (their messages are on stderr).
    RemoteStart { host: String, waited_ms: u64 },
}

impl ClusterError {
    pub fn retry_may_help(&self) -> bool {
        match self {
            ClusterError::Client(e) => e.retry_may_help(),
            ClusterError::Start(e) => e.retry_may_help(),
            ClusterError::Thread(_) => true,
            ClusterError::Ssh(e) => e.kind() != std::io::ErrorKind::NotFound,
            ClusterError::RemoteStart { .. } => true,
        }
    }
}

impl std::fmt::Display for ClusterError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClusterError::Client(e) => write!(f, "asking the scheduler: {e}"),
            ClusterError::Start(e) => write!(f, "a worker did not start: {e}"),
            ClusterError::Thread(e) => write!(f, "the adaptive thread did not start: {e}"),
            ClusterError::Ssh(e) => write!(f, "running ssh: {e}"),
            ClusterError::RemoteStart { host, waited_ms } => write!(
                f,
                "the worker on {host} did not say its address within {waited_ms} ms \
                 (ssh's and the worker's messages are above)"
            ),
        }
    }
}

impl std::error::Error for ClusterError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ClusterError::Client(e) => Some(e),
            ClusterError::Start(e) => Some(e),
            ClusterError::Thread(e) | ClusterError::Ssh(e) => Some(e),
            ClusterError::RemoteStart { .. } => None,
        }
    }
}

/// A message to the adaptive thread.
enum ToAdapter {
    /// New bounds and settings.
    Config(AdaptConfig),
    Stop,
}

/// The adaptive thread of a cluster: every `interval_ms` one `Cluster::adapt_once`. Stops
/// when told (`stop`), when dropped, or when its cluster is gone.
pub struct Adapter {
    to_thread: Sender<ToAdapter>,
    thread: Option<JoinHandle<()>>,
}

impl Adapter {
    /// Starts adapting `cluster` with `config`.
    pub fn start(cluster: Weak<dyn Cluster>, config: AdaptConfig) -> Result<Adapter, ClusterError> {
        let (to_thread, from_owner) = mpsc::channel();
        info!(
            "adaptive: between {} and {} workers, every {} ms, target duration {} ms, wait count {}",
            config.minimum,
            config.maximum,
            config.interval_ms,
            config.target_duration_ms,
            config.wait_count
        );
        let thread = crate::fatal::spawn_service("zask-adapt", move || {
            let started = Instant::now();
            let mut policy = Adaptive::new(config);
            let mut client: Option<Client> = None;
            loop {
                let interval = Duration::from_millis(policy.config().interval_ms.max(1));
                match from_owner.recv_timeout(interval) {
                    Ok(ToAdapter::Config(config)) => {
                        info!(
                            "adaptive: new bounds [{}, {}]",
                            config.minimum, config.maximum
                        );
                        policy.set_config(config);
                        continue;
                    }
                    Ok(ToAdapter::Stop) | Err(RecvTimeoutError::Disconnected) => return,
                    Err(RecvTimeoutError::Timeout) => {}
                }
                let Some(cluster) = cluster.upgrade() else {
                    return;
                };
                if client.is_none() {
                    match cluster.client() {
                        Ok(c) => client = Some(c),
                        Err(e) => {
                            warn!("adaptive: cannot reach the scheduler: {e}");
                            continue;
                        }
                    }
                }
                let c = client.as_ref().expect("set just above");
                let now_ms = started.elapsed().as_millis() as u64;
                if let Err(e) = cluster.adapt_once(c, &mut policy, now_ms) {
                    warn!("adaptive: {e}");
                    if matches!(e, ClusterError::Client(_)) {
                        client = None;
                    }
                }
            }
        })
        .map_err(ClusterError::Thread)?;
        Ok(Adapter {
            to_thread,
            thread: Some(thread),
        })
    }

    /// New bounds and settings from the next decision on; retirement suggestions start
    /// counting again.
    pub fn set_config(&self, config: AdaptConfig) {
        let _ = self.to_thread.send(ToAdapter::Config(config));
    }

    /// Stops adapting; returns once the thread has finished its step.
    pub fn stop(mut self) {
        self.stop_thread();
    }

    fn stop_thread(&mut self) {
        let _ = self.to_thread.send(ToAdapter::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Adapter {
    fn drop(&mut self) {
        self.stop_thread();
    }
}

/// A cluster that starts and stops its own workers (`LocalCluster`, `SshCluster`): what it
/// runs (`C`, shared with the adaptive thread, which holds it weakly) and, while it adapts,
/// that thread. Dropping it stops adapting first, then what it runs.
pub struct ManagedCluster<C> {
    // Declared first so adapting stops before the workers and the scheduler go away.
    adapter: Mutex<Option<Adapter>>,
    pub(crate) inner: Arc<C>,
}

impl<C: Cluster + 'static> ManagedCluster<C> {
    pub(crate) fn managing(inner: Arc<C>) -> ManagedCluster<C> {
        ManagedCluster {
            adapter: Mutex::new(None),
            inner,
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

    /// Does what an operator asked for (`zask scale`, `zask adapt`; see `ScalingFollower`),
    /// logging what and why. Scaling to a number stops adapting first, so the policy does not
    /// undo it.
    pub fn apply(&self, request: &ScalingRequest) -> Result<(), ClusterError> {
        match request {
            ScalingRequest::Scale { workers } => {
                if self.is_adapting() {
                    info!("scaling: an operator asked for {workers} workers: adapting stops");
                    self.stop_adapt();
                }
                info!(
                    "scaling: from {} to {workers} workers, as an operator asked",
                    self.started().len()
                );
                self.scale(*workers as usize)
            }
            ScalingRequest::Adapt {
                minimum,
                maximum,
                target_duration_ms,
            } => {
                info!("scaling: an operator asked to {request}");
                self.adapt(adapt_config(*minimum, *maximum, *target_duration_ms))
            }
            ScalingRequest::StopAdapt => {
                info!(
                    "scaling: an operator asked to stop adapting; {} workers stay",
                    self.started().len()
                );
                self.stop_adapt();
                Ok(())
            }
        }
    }

    /// Whether it is adapting (`adapt` called, `stop_adapt` not since).
    pub fn is_adapting(&self) -> bool {
        self.adapter.lock().expect("never poisoned").is_some()
    }

    /// Stops adapting (the workers stay as they are); returns once its thread has finished
    /// its step. Nothing happens if it was not adapting.
    pub fn stop_adapt(&self) {
        let adapter = self.adapter.lock().expect("never poisoned").take();
        if let Some(adapter) = adapter {
            adapter.stop();
        }
    }
}

/// The cluster's own operations, on what it runs.
impl<C: Cluster + 'static> Cluster for ManagedCluster<C> {
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
        self.inner.threads_per_worker()
    }
}

/// Follows the sizes operators ask a running cluster for (`Client::set_scaling`: `zask
/// scale`, `zask adapt`), which the scheduler only records: a manager polls it every interval
/// and applies each new request once (by its serial).
#[derive(Debug, Default)]
pub struct ScalingFollower {
    /// The serial of the last request handed out (0: none).
    seen: u64,
}

impl ScalingFollower {
    pub fn new() -> ScalingFollower {
        ScalingFollower::default()
    }

    /// The request recorded since the last call, if any.
    pub fn poll(&mut self, client: &Client) -> Result<Option<ScalingRequest>, ClientError> {
        Ok(self.next(client.scaling()?))
    }

    /// What `poll` does with the scheduler's answer. Pure.
    pub fn next(&mut self, wanted: Option<WantedScaling>) -> Option<ScalingRequest> {
        let wanted = wanted?;
        if wanted.serial == self.seen {
            return None;
        }
        // A smaller serial: a new scheduler counting from 1 again; its request is new too.
        self.seen = wanted.serial;
        Some(wanted.request)
    }
}

/// The adaptive settings a `ScalingRequest::Adapt` asks for.
pub fn adapt_config(minimum: u32, maximum: u32, target_duration_ms: Option<u64>) -> AdaptConfig {
    let mut config = AdaptConfig::new(minimum as usize, maximum as usize);
    if let Some(ms) = target_duration_ms {
        config.target_duration_ms = ms.max(1);
    }
    config
}

/// A weak handle to a cluster kept in an `Arc`, as `Adapter::start` takes it.
pub fn downgrade<C: Cluster + 'static>(cluster: &Arc<C>) -> Weak<dyn Cluster> {
    let weak: Weak<C> = Arc::downgrade(cluster);
    weak
}
