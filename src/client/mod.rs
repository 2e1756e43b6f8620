//! The client: submits graphs, scatters and gathers data. One IO thread owns the DEALER socket;
//! any number of user threads make requests through a channel, each waiting for its own reply,
//! so several `get`s from one client run at once. A scheduler that stops answering fails every
//! waiting request with a clear error instead of hanging it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::Sender;

use crate::collection::{AsCollection, Collection};
use crate::graph::{Graph, Key, KeySpec};
use crate::net::{self, Endpoint, Waker};
use crate::protocol::codec::{decode_value_owned, encode_value};
use crate::protocol::{
    ClusterEvent, ClusterStatus, Frame, FromClient, RequestId, ScalingRequest, Story, ToClient,
    WantedScaling, WorkerAddress, WorkerInfo, WorkerSelector, PROTOCOL_VERSION,
};
use crate::security::{self, Access, Role, SecurityError};
use crate::value::Value;

mod error;
mod io;
pub mod state;

pub use error::ClientError;
use io::{io_loop, Outgoing};
use state::Awaited;
pub use state::Progress;

/// Client settings.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// How long `connect` waits for the scheduler's welcome.
    pub connect_timeout_ms: u64,
    /// How often the client pings the scheduler while requests are in flight.
    pub ping_interval_ms: u64,
    /// A scheduler silent this long (pings unanswered) is considered gone.
    pub scheduler_timeout_ms: u64,
    /// ZeroMQ high-water mark of the connection to the scheduler, in messages, each way
    /// (default 1,000). Each waiting call has one request and one reply in flight, so only
    /// a client with about that many calls waiting at once comes near it; a request that finds
    /// the queue full is dropped with a warning and then failed through the next ping. The
    /// queue from the caller threads to the IO thread needs no bound of its own: each call
    /// waits for its reply, so it never holds more than one request per calling thread.
    pub queue_max_messages: i32,
    /// How the client proves who it is (and encrypts); see [`ClientSecurity`].
    pub security: ClientSecurity,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            connect_timeout_ms: 5_000,
            ping_interval_ms: 500,
            scheduler_timeout_ms: 5_000,
            queue_max_messages: 1_000,
            security: ClientSecurity::Default,
        }
    }
}

impl From<SecurityError> for ClientError {
    fn from(e: SecurityError) -> Self {
        ClientError::Security {
            reason: e.to_string(),
            retry_may_help: e.retry_may_help(),
        }
    }
}

/// How a client connects: with CURVE and a client's or operator's access, or in plaintext
/// (only a scheduler started `--insecure` lets that in).
#[derive(Clone, Debug, Default)]
pub enum ClientSecurity {
    /// The access file `$ZASK_ACCESS_FILE` names, else `~/.zask/client.access` (where a
    /// `zask-scheduler` on this machine writes it); plaintext when neither exists.
    #[default]
    Default,
    /// This access (a client's or an operator's).
    Access(Access),
    /// Plaintext, for a scheduler started `--insecure`.
    Insecure,
}

impl ClientSecurity {
    /// The access to connect with (None: plaintext), and how to say so in an error.
    fn resolve(&self) -> Result<(Option<Access>, String), ClientError> {
        let roles = [Role::Client, Role::Operator];
        match self {
            ClientSecurity::Insecure => Ok((None, "no security (insecure)".into())),
            ClientSecurity::Access(a) => Ok((Some(a.clone()), format!("the {} key", a.role))),
            ClientSecurity::Default => {
                let path = Access::default_path(Role::Client);
                let explicit = std::env::var_os(crate::security::ACCESS_FILE_ENV).is_some();
                if !explicit && !path.exists() {
                    return Ok((
                        None,
                        format!("no security: no access file at {}", path.display()),
                    ));
                }
                let access = Access::read_for(&path, &roles).map_err(ClientError::from)?;
                let how = format!("the {} key of {}", access.role, path.display());
                Ok((Some(access), how))
            }
        }
    }
}

/// Options of one `get`.
/// The recent log lines of the cluster (`Client::get_logs`), oldest first.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Logs {
    /// The scheduler's lines.
    pub scheduler: Vec<String>,
    /// Each worker's lines, by its address (workers that did not answer in time are absent).
    pub workers: BTreeMap<WorkerAddress, Vec<String>>,
}

#[derive(Clone, Debug, Default)]
pub struct GetOptions {
    /// Keep the results on the workers after returning them (legacy `keep_results`).
    pub keep_results: bool,
    /// Give up after this long (the scheduler drops the request).
    pub timeout: Option<Duration>,
    /// Tasks that may only run on the workers selected (by address or by name), like dask's
    /// `workers=`.
    pub restrictions: Vec<(Key, Vec<WorkerSelector>)>,
}

/// A connection to a scheduler's client port.
pub struct Client {
    address: String,
    address_to_workers: String,
    outgoing: Sender<Outgoing>,
    waker: Waker,
    next_request: AtomicU64,
    /// Keys this client scattered: strings naming them in later graphs are references.
    scattered: Mutex<HashSet<Key>>,
    closed: Arc<AtomicBool>,
    io: Mutex<Option<JoinHandle<()>>>,
}

impl Client {
    /// Connects to the scheduler's client port and waits for its welcome.
    pub fn connect(address: &str) -> Result<Client, ClientError> {
        Client::connect_with(address, ClientConfig::default())
    }

    pub fn connect_with(address: &str, config: ClientConfig) -> Result<Client, ClientError> {
        let connect_error = |reason: String| ClientError::Connect {
            address: address.to_owned(),
            reason,
        };
        Endpoint::parse(address).map_err(|e| connect_error(e.to_string()))?;
        let (access, how) = config.security.resolve()?;
        let ctx = zmq::Context::new();
        let socket = ctx
            .socket(zmq::DEALER)
            .map_err(|e| connect_error(e.to_string()))?;
        if let Some(access) = &access {
            security::connect_as(&socket, &access.scheduler_public, &access.key)
                .map_err(ClientError::from)?;
        }
        net::configure_bounded(
            &socket,
            net::DEFAULT_MAX_MESSAGE_BYTES,
            config.queue_max_messages,
        )
        .map_err(|e| connect_error(e.to_string()))?;
        socket
            .set_identity(&net::unique_identity("client"))
            .map_err(|e| connect_error(e.to_string()))?;
        socket
            .connect(address)
            .map_err(|e| connect_error(e.to_string()))?;
        let (waker, wake_rx) = net::waker().map_err(|e| connect_error(e.to_string()))?;
        let (tx, rx) = crossbeam_channel::unbounded();
        let closed = Arc::new(AtomicBool::new(false));
        let io = {
            let closed = closed.clone();
            let address = address.to_owned();
            let config = config.clone();
            std::thread::Builder::new()
                .name("zask-client".into())
                .spawn(move || io_loop(socket, wake_rx, rx, closed, address, config))
                .map_err(|e| connect_error(e.to_string()))?
        };
        let mut client = Client {
            address: address.to_owned(),
            address_to_workers: String::new(),
            outgoing: tx,
            waker,
            next_request: AtomicU64::new(1),
            scattered: Mutex::new(HashSet::new()),
            closed,
            io: Mutex::new(Some(io)),
        };
        let hello = FromClient::Hello {
            protocol_version: PROTOCOL_VERSION,
        };
        let timeout = Duration::from_millis(config.connect_timeout_ms);
        match client.request_with_id(Awaited::Hello, hello, vec![], Some(timeout)) {
            Ok((
                ToClient::Welcome {
                    address_to_workers, ..
                },
                _,
            )) => client.address_to_workers = address_to_workers,
            Ok((other, _)) => return Err(connect_error(format!("unexpected answer {other:?}"))),
            Err(ClientError::Timeout { after_ms }) => {
                // A scheduler that refused our key (or our lack of one) looks the same as
                // none: CURVE tells the client nothing.
                return Err(connect_error(format!(
                    "no scheduler answered within {after_ms} ms (connecting with {how}; a \
                     secure scheduler lets in only its own keys, one started --insecure only \
                     plaintext)"
                )));
            }
            Err(ClientError::Request(e)) => return Err(connect_error(e.to_string())),
            Err(e) => return Err(e),
        }
        Ok(client)
    }

    /// The scheduler's client address this client is connected to.
    pub fn scheduler_address(&self) -> &str {
        &self.address
    }

    /// Where workers connect to the same scheduler.
    pub fn address_to_workers(&self) -> &str {
        &self.address_to_workers
    }

    /// Computes `keys` of `graph` and returns their values in the shape of `keys`.
    pub fn get(&self, graph: &Graph, keys: impl Into<KeySpec>) -> Result<Value, ClientError> {
        self.get_with(graph, keys, GetOptions::default())
    }

    pub fn get_with(
        &self,
        graph: &Graph,
        keys: impl Into<KeySpec>,
        options: GetOptions,
    ) -> Result<Value, ClientError> {
        self.submit(graph, keys.into(), options, None)
    }

    /// `get_with`, calling `on_progress` on this thread as the computation advances: the
    /// scheduler reports it at most every `protocol::PROGRESS_INTERVAL_MS` (100 ms) while it
    /// changes, never once per task, and a last call says `done == total` when the values
    /// arrive. A computation that ends before its first report (a small graph, results in
    /// memory already) may see no call at all but that last one; one that fails sees no last
    /// call. Progress is not journaled: after a scheduler restart it is not reported.
    pub fn get_with_progress(
        &self,
        graph: &Graph,
        keys: impl Into<KeySpec>,
        options: GetOptions,
        on_progress: impl FnMut(Progress),
    ) -> Result<Value, ClientError> {
        self.submit(graph, keys.into(), options, Some(&mut { on_progress }))
    }

    fn submit(
        &self,
        graph: &Graph,
        spec: KeySpec,
        options: GetOptions,
        on_progress: Option<&mut dyn FnMut(Progress)>,
    ) -> Result<Value, ClientError> {
        let outputs = spec.flatten();
        let resolved = {
            let scattered = self.scattered.lock().expect("never poisoned");
            graph.resolve(&|k| scattered.contains(k))
        };
        let msg = |request| FromClient::Submit {
            request,
            graph: resolved.clone(),
            outputs: outputs.clone(),
            keep_results: options.keep_results,
            restrictions: options.restrictions.clone(),
        };
        let (reply, frames) = match on_progress {
            None => self.request(msg, vec![], options.timeout)?,
            Some(on_progress) => self.request_with_progress(msg, options.timeout, on_progress)?,
        };
        match reply {
            ToClient::Values { positions, .. } => shape_values(&spec, frames, &positions),
            other => Err(unexpected(other)),
        }
    }

    /// A request whose progress the scheduler reports (`WatchProgress`, sent right after it
    /// on the same connection), each report handed to `on_progress` on this thread.
    fn request_with_progress(
        &self,
        msg: impl Fn(RequestId) -> FromClient,
        timeout: Option<Duration>,
        on_progress: &mut dyn FnMut(Progress),
    ) -> Result<(ToClient, Vec<Frame>), ClientError> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(ClientError::Closed);
        }
        let id = RequestId(self.next_request.fetch_add(1, Ordering::Relaxed));
        let (tx, rx) = crossbeam_channel::bounded(1);
        // Unbounded, but at most one report per PROGRESS_INTERVAL_MS arrives while we wait.
        let (progress_tx, progress_rx) = crossbeam_channel::unbounded();
        self.send(Outgoing::Request {
            awaited: Awaited::Reply(id),
            msg: msg(id),
            frames: vec![],
            reply: tx,
            timeout_ms: timeout.map(|t| t.as_millis() as u64),
            progress: Some(progress_tx),
        })?;
        self.send(Outgoing::Notice(FromClient::WatchProgress { request: id }))?;
        let mut last: Option<Progress> = None;
        let reply = loop {
            crossbeam_channel::select! {
                recv(progress_rx) -> p => match p {
                    Ok(p) => {
                        last = Some(p);
                        on_progress(p);
                    }
                    // The IO thread dropped the sender after handing over the reply (or
                    // stopped): only the reply is left to wait for.
                    Err(_) => break rx.recv().map_err(|_| ClientError::Closed)?,
                },
                recv(rx) -> reply => break reply.map_err(|_| ClientError::Closed)?,
            }
        };
        for p in progress_rx.try_iter() {
            last = Some(p);
            on_progress(p);
        }
        if reply.is_ok() {
            // The values are here: every task they needed is done.
            let total = last.map_or(0, |p| p.total);
            let erred = last.map_or(0, |p| p.erred);
            let finished = Progress {
                done: total.saturating_sub(erred),
                total,
                erred,
            };
            if last != Some(finished) || last.is_none() {
                on_progress(finished);
            }
        }
        reply
    }

    /// Sends values to the workers; returns their keys, usable in later graphs.
    pub fn scatter<K: Into<Key>, V: Into<Value>>(
        &self,
        data: impl IntoIterator<Item = (K, V)>,
    ) -> Result<Vec<Key>, ClientError> {
        let (keys, frames): (Vec<Key>, Vec<Frame>) = data
            .into_iter()
            .map(|(k, v)| (k.into(), encode_value(&v.into())))
            .unzip();
        let msg = |request| FromClient::Scatter {
            request,
            keys: keys.clone(),
        };
        match self.request(msg, frames, None)? {
            (ToClient::Scattered { keys, .. }, _) => {
                self.scattered
                    .lock()
                    .expect("never poisoned")
                    .extend(keys.iter().cloned());
                Ok(keys)
            }
            (other, _) => Err(unexpected(other)),
        }
    }

    /// Scatters, then keeps `replicas` copies of each value on distinct workers, so losing
    /// a worker does not lose scattered data (which cannot be recomputed).
    pub fn scatter_with_replicas<K: Into<Key>, V: Into<Value>>(
        &self,
        data: impl IntoIterator<Item = (K, V)>,
        replicas: u32,
    ) -> Result<Vec<Key>, ClientError> {
        let keys = self.scatter(data)?;
        self.replicate(keys.clone(), replicas)?;
        Ok(keys)
    }

    /// Keeps `replicas` copies of each key on distinct workers (as many as there are workers),
    /// now and after worker losses. Returns once the copies exist.
    pub fn replicate(&self, keys: impl Into<KeySpec>, replicas: u32) -> Result<(), ClientError> {
        let keys = keys.into().flatten();
        let msg = |request| FromClient::Replicate {
            request,
            keys: keys.clone(),
            replicas,
        };
        match self.request(msg, vec![], None)? {
            (ToClient::Done { .. }, _) => Ok(()),
            (other, _) => Err(unexpected(other)),
        }
    }

    /// Fetches the values of keys held on the cluster, in the shape of `keys`.
    pub fn gather(&self, keys: impl Into<KeySpec>) -> Result<Value, ClientError> {
        let spec = keys.into();
        let keys = spec.flatten();
        let msg = |request| FromClient::Gather {
            request,
            keys: keys.clone(),
        };
        match self.request(msg, vec![], None)? {
            (ToClient::Values { positions, .. }, frames) => shape_values(&spec, frames, &positions),
            (other, _) => Err(unexpected(other)),
        }
    }

    /// Which workers hold each key (empty when none does).
    pub fn who_has(
        &self,
        keys: impl Into<KeySpec>,
    ) -> Result<HashMap<Key, Vec<WorkerAddress>>, ClientError> {
        let keys = keys.into().flatten();
        let msg = |request| FromClient::WhoHas {
            request,
            keys: keys.clone(),
        };
        match self.request(msg, vec![], None)? {
            (ToClient::WhoHas { who_has, .. }, _) => Ok(who_has.into_iter().collect()),
            (other, _) => Err(unexpected(other)),
        }
    }

    pub fn status(&self) -> Result<ClusterStatus, ClientError> {
        match self.request(|request| FromClient::Status { request }, vec![], None)? {
            (ToClient::Status { status, .. }, _) => Ok(status),
            (other, _) => Err(unexpected(other)),
        }
    }

    /// The recent log lines (oldest first) of the scheduler and of the workers `worker`
    /// selects (every worker with `None`). A worker that does not answer within the
    /// scheduler's logs timeout (2 s by default) is left out; a process that did not install
    /// `zask::logs` (a `LocalCluster` embedded in a program) has no lines.
    pub fn get_logs(&self, worker: Option<WorkerSelector>) -> Result<Logs, ClientError> {
        let msg = |request| FromClient::GetLogs {
            request,
            worker: worker.clone(),
        };
        match self.request(msg, vec![], None)? {
            (
                ToClient::Logs {
                    scheduler, workers, ..
                },
                _,
            ) => Ok(Logs {
                scheduler,
                workers: workers.into_iter().collect(),
            }),
            (other, _) => Err(unexpected(other)),
        }
    }

    /// The recorded transitions of `key` on the scheduler, oldest first, with their times
    /// (ms since the scheduler started) and causes: submitted, waiting, ready, assigned,
    /// done, lost with a worker, rescheduled... (`Story::summary` reads it as one line). A key
    /// the scheduler keeps no story of (never submitted, or among the oldest: it keeps
    /// `CoreConfig::story_keys_max` keys) has no steps.
    pub fn story(&self, key: impl Into<Key>) -> Result<Story, ClientError> {
        let key = key.into();
        let msg = |request| FromClient::GetStory {
            request,
            key: key.clone(),
        };
        match self.request(msg, vec![], None)? {
            (ToClient::Story { story, .. }, _) => Ok(story),
            (other, _) => Err(unexpected(other)),
        }
    }

    /// The scheduler's recent cluster events, oldest first: workers joined, left, lost (with
    /// what that cost), retired (with what they moved); tasks rescheduled, marked bad, erred.
    pub fn events(&self) -> Result<Vec<ClusterEvent>, ClientError> {
        match self.request(|request| FromClient::GetEvents { request }, vec![], None)? {
            (ToClient::Events { events, .. }, _) => Ok(events),
            (other, _) => Err(unexpected(other)),
        }
    }

    pub fn workers(&self) -> Result<Vec<WorkerInfo>, ClientError> {
        Ok(self.status()?.workers)
    }

    /// Drops kept results and scattered data from the cluster.
    pub fn release(&self, keys: impl Into<KeySpec>) -> Result<(), ClientError> {
        let keys = keys.into().flatten();
        {
            let mut scattered = self.scattered.lock().expect("never poisoned");
            for k in &keys {
                scattered.remove(k);
            }
        }
        let msg = |request| FromClient::Release {
            request,
            keys: keys.clone(),
        };
        match self.request(msg, vec![], None)? {
            (ToClient::Done { .. }, _) => Ok(()),
            (other, _) => Err(unexpected(other)),
        }
    }

    /// Stores a collection's graph (not its data) on the scheduler under `name`, replacing
    /// any collection of that name; other clients fetch it with `get_collection`.
    pub fn set_collection(
        &self,
        name: &str,
        collection: &impl AsCollection,
    ) -> Result<(), ClientError> {
        let collection = collection.as_collection();
        let msg = |request| FromClient::SetCollection {
            request,
            name: name.to_owned(),
            collection: collection.clone(),
        };
        self.expect_done(msg)
    }

    /// The collection stored under `name` (turn it back into a bag with `Bag::from_collection`).
    pub fn get_collection(&self, name: &str) -> Result<Collection, ClientError> {
        let msg = |request| FromClient::GetCollection {
            request,
            name: name.to_owned(),
        };
        self.expect_collection(msg)
    }

    pub fn list_collections(&self) -> Result<Vec<String>, ClientError> {
        match self.request(
            |request| FromClient::ListCollections { request },
            vec![],
            None,
        )? {
            (ToClient::Names { names, .. }, _) => Ok(names),
            (other, _) => Err(unexpected(other)),
        }
    }

    pub fn delete_collection(&self, name: &str) -> Result<(), ClientError> {
        self.expect_done(|request| FromClient::DeleteCollection {
            request,
            name: name.to_owned(),
        })
    }

    /// Computes a collection and keeps its results on the workers (nothing is sent back);
    /// returns it, ready to `publish` or to compute cheaply.
    pub fn persist(&self, collection: &impl AsCollection) -> Result<Collection, ClientError> {
        let collection = collection.as_collection();
        let msg = |request| FromClient::Persist {
            request,
            graph: collection.graph.clone(),
            outputs: collection.keys.clone(),
        };
        self.expect_done(msg)?;
        Ok(collection)
    }

    /// Names persisted results so that they outlive this client; any client can then use
    /// them through `get_dataset` without recomputing. Lost results are recomputed from their
    /// lineage.
    pub fn publish(&self, name: &str, persisted: &Collection) -> Result<(), ClientError> {
        self.expect_done(|request| FromClient::Publish {
            request,
            name: name.to_owned(),
            collection: persisted.clone(),
        })
    }

    pub fn get_dataset(&self, name: &str) -> Result<Collection, ClientError> {
        self.expect_collection(|request| FromClient::GetDataset {
            request,
            name: name.to_owned(),
        })
    }

    /// Releases a published dataset's results.
    pub fn unpublish(&self, name: &str) -> Result<(), ClientError> {
        self.expect_done(|request| FromClient::Unpublish {
            request,
            name: name.to_owned(),
        })
    }

    /// The names of the published datasets, sorted (dask's `list_datasets`).
    pub fn list_datasets(&self) -> Result<Vec<String>, ClientError> {
        match self.request(|request| FromClient::ListDatasets { request }, vec![], None)? {
            (ToClient::Names { names, .. }, _) => Ok(names),
            (other, _) => Err(unexpected(other)),
        }
    }

    /// Retires workers gracefully (dask's `retire_workers`; an operator's call): each worker
    /// a selector matches takes no new task, its results that exist nowhere else and are
    /// still needed are copied to other workers, then it is dismissed for good (its nanny
    /// stops too instead of starting a new one). Returns the addresses retired, once all
    /// have left. A selector matching no worker is `RequestError::NoSuchWorker` and nothing
    /// is retired.
    pub fn retire_workers(
        &self,
        workers: Vec<WorkerSelector>,
    ) -> Result<Vec<WorkerAddress>, ClientError> {
        let msg = |request| FromClient::RetireWorkers {
            request,
            workers: workers.clone(),
        };
        match self.request(msg, vec![], None)? {
            (ToClient::Retired { workers, .. }, _) => Ok(workers),
            (other, _) => Err(unexpected(other)),
        }
    }

    /// Shuts the cluster down (dask's `Client.shutdown`; an operator's call): the scheduler
    /// dismisses every worker for good (nannies stop too, a `zask local` exits) and exits
    /// after answering. Other clients' waiting calls then fail with `SchedulerLost`.
    pub fn shutdown(&self) -> Result<(), ClientError> {
        self.expect_done(|request| FromClient::Shutdown { request })
    }

    fn expect_done(&self, msg: impl Fn(RequestId) -> FromClient) -> Result<(), ClientError> {
        match self.request(msg, vec![], None)? {
            (ToClient::Done { .. }, _) => Ok(()),
            (other, _) => Err(unexpected(other)),
        }
    }

    fn expect_collection(
        &self,
        msg: impl Fn(RequestId) -> FromClient,
    ) -> Result<Collection, ClientError> {
        match self.request(msg, vec![], None)? {
            (ToClient::Collection { collection, .. }, _) => Ok(collection),
            (other, _) => Err(unexpected(other)),
        }
    }

    /// Restarts every worker (through its nanny; workers without one are emptied) and drops
    /// all tasks and data on the scheduler; pending requests fail with `Restarted`. Returns
    /// when the workers are back. Stored collections are kept: they are graphs, not data.
    pub fn restart(&self) -> Result<(), ClientError> {
        match self.request(|request| FromClient::Restart { request }, vec![], None)? {
            (ToClient::Done { .. }, _) => Ok(()),
            (other, _) => Err(unexpected(other)),
        }
    }

    /// Asks the cluster's manager for a size (`zask scale`, `zask adapt`): the scheduler
    /// records it and the manager applies it at its next interval. Needs the operator role
    /// (`RequestError::Forbidden` otherwise).
    pub fn set_scaling(&self, scaling: ScalingRequest) -> Result<(), ClientError> {
        let msg = |request| FromClient::SetScaling {
            request,
            scaling: scaling.clone(),
        };
        match self.request(msg, vec![], None)? {
            (ToClient::Done { .. }, _) => Ok(()),
            (other, _) => Err(unexpected(other)),
        }
    }

    /// The size an operator last asked for, with its serial (None: never asked).
    pub fn scaling(&self) -> Result<Option<WantedScaling>, ClientError> {
        match self.request(|request| FromClient::GetScaling { request }, vec![], None)? {
            (ToClient::Scaling { wanted, .. }, _) => Ok(wanted),
            (other, _) => Err(unexpected(other)),
        }
    }

    /// Says goodbye to the scheduler (which drops this client's pending requests) and stops.
    pub fn close(self) {
        drop(self);
    }

    /// Says goodbye now and stops the connection, for a client shared where it cannot be
    /// dropped (a process about to exit); later calls fail with `ClientError::Closed`.
    /// Returns once the goodbye has left (or after 1 s if the scheduler cannot be reached).
    pub fn disconnect(&self) {
        let Some(io) = self.io.lock().expect("never poisoned").take() else {
            return; // disconnected already
        };
        let _ = self.send(Outgoing::Notice(FromClient::Goodbye));
        self.closed.store(true, Ordering::SeqCst);
        self.waker.wake();
        let _ = io.join();
    }

    fn request(
        &self,
        msg: impl Fn(RequestId) -> FromClient,
        frames: Vec<Frame>,
        timeout: Option<Duration>,
    ) -> Result<(ToClient, Vec<Frame>), ClientError> {
        let id = RequestId(self.next_request.fetch_add(1, Ordering::Relaxed));
        self.request_with_id(Awaited::Reply(id), msg(id), frames, timeout)
    }

    fn request_with_id(
        &self,
        awaited: Awaited,
        msg: FromClient,
        frames: Vec<Frame>,
        timeout: Option<Duration>,
    ) -> Result<(ToClient, Vec<Frame>), ClientError> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(ClientError::Closed);
        }
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.send(Outgoing::Request {
            awaited,
            msg,
            frames,
            reply: tx,
            // The IO thread times the request out (and cancels it on the scheduler).
            timeout_ms: timeout.map(|t| t.as_millis() as u64),
            progress: None,
        })?;
        match crate::net::spin_until(|| rx.try_recv().ok()) {
            Some(reply) => reply,
            None => rx.recv().map_err(|_| ClientError::Closed)?,
        }
    }

    fn send(&self, o: Outgoing) -> Result<(), ClientError> {
        self.outgoing.send(o).map_err(|_| ClientError::Closed)?;
        self.waker.wake();
        Ok(())
    }

    /// Computes a collection (a `Bag`: its partitions concatenated into one list; an `Item`:
    /// its value): gets its output keys, then assembles their values. Values that do not make
    /// the collection (a bag partition that is not a list) are a `ClientError::Protocol`.
    pub fn compute(
        &self,
        collection: &impl crate::collection::Computable,
    ) -> Result<Value, ClientError> {
        let keys = collection.output_keys();
        let spec = KeySpec::Many(keys.into_iter().map(KeySpec::One).collect());
        let values = match self.get(collection.graph(), spec)? {
            Value::List(values) => values,
            other => vec![other],
        };
        collection
            .assemble(values)
            .map_err(|e| ClientError::Protocol(e.to_string()))
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.disconnect();
    }
}

fn unexpected(reply: ToClient) -> ClientError {
    ClientError::Protocol(format!("unexpected reply {reply:?}"))
}

/// Rebuilds the requested shape from values in flattened order.
/// The values of a `Values` reply in the shape asked for. A key asked for more than once came
/// once (`positions` says where); it is decoded once and cloned here, in the client.
fn shape_values(
    spec: &KeySpec,
    frames: Vec<Frame>,
    positions: &[u32],
) -> Result<Value, ClientError> {
    let decode = |f: Frame| {
        decode_value_owned(f).map_err(|e| ClientError::Protocol(format!("unreadable value: {e}")))
    };
    let mut values: Box<dyn Iterator<Item = Result<Value, ClientError>>> = if positions.is_empty() {
        Box::new(frames.into_iter().map(decode))
    } else {
        let distinct: Vec<Value> = frames.into_iter().map(decode).collect::<Result<_, _>>()?;
        let picked: Vec<Result<Value, ClientError>> = positions
            .iter()
            .map(|&i| {
                distinct.get(i as usize).cloned().ok_or_else(|| {
                    ClientError::Protocol(format!("value position {i} out of range"))
                })
            })
            .collect();
        Box::new(picked.into_iter())
    };
    fn build(
        spec: &KeySpec,
        values: &mut dyn Iterator<Item = Result<Value, ClientError>>,
    ) -> Result<Value, ClientError> {
        match spec {
            KeySpec::One(_) => values
                .next()
                .unwrap_or_else(|| Err(ClientError::Protocol("too few values".into()))),
            KeySpec::Many(items) => items
                .iter()
                .map(|s| build(s, values))
                .collect::<Result<Vec<_>, _>>()
                .map(Value::List),
        }
    }
    build(spec, &mut *values)
}
