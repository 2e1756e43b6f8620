//! The native wire protocol: one typed message enum per direction, and the errors that cross
//! the wire. Encoding and framing live in `codec`.
//!
//! Every message is a ZeroMQ multipart message whose first frame is `MAGIC`, a version byte and
//! the msgpack-encoded message; values (task results, scattered data) follow as frames of their
//! own, encoded by `codec::encode_value`, so large bytes are never copied into msgpack.

pub mod codec;
mod events;
mod ids;

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::collection::Collection;
use crate::graph::{Expr, GraphError, Key};

pub use codec::{DecodeError, Frame};
pub use events::{
    bytes_text, ClusterEvent, Departure, EventKind, LossCost, Reschedule, Story, StoryEvent,
    StoryStep,
};
pub use ids::{ClientRole, ConnectionId, RequestId, WorkerAddress, WorkerName, WorkerSelector};

/// Checked at registration (workers) and at hello (clients).
pub const PROTOCOL_VERSION: u8 = 8;

/// First bytes of every native header frame. Legacy (2015) messages start with a pickle
/// opcode (0x80), so the two are told apart by their first byte.
pub const MAGIC: &[u8; 4] = b"ZASK";

/// Worker → scheduler, on the scheduler's worker port.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum FromWorker {
    Register(WorkerRegistration),
    Heartbeat,
    /// Tasks that finished; the values of those with `has_value` follow as frames, in order.
    Finished(Vec<FinishedTask>),
    Erred(Vec<ErredTask>),
    /// The worker could not fetch `dependency` of `key` from any of the holders it was told
    /// about; it dropped `key`, which the scheduler must place again. `holders` answered that
    /// they lack it; `unresponsive` holders did not answer in time (they may only be slow).
    MissingDependency {
        key: Key,
        dependency: Key,
        holders: Vec<WorkerAddress>,
        unresponsive: Vec<WorkerAddress>,
    },
    /// Answer to `GetData`: values of `found` follow as frames, in order.
    Data {
        request: u64,
        found: Vec<Key>,
        missing: Vec<Key>,
    },
    /// Answer to `PutData`.
    Stored {
        request: u64,
    },
    /// Answer to `CheckHeld`: which of the asked keys this worker does not hold.
    NotHeld {
        keys: Vec<Key>,
    },
    /// The worker is leaving on purpose: no task is to blame.
    Goodbye,
    /// The worker was asked to stop (SIGTERM) and would like its results moved first; the
    /// scheduler answers with `Close` when they are safe.
    Retire,
    /// From a nanny (on its own connection): it supervises the worker at `worker_address`.
    /// Believed only when `token` equals the `nanny_token` that worker registered with (the
    /// nanny hands the token to the process it starts), so nobody else can speak for a worker.
    NannyOf {
        worker_address: WorkerAddress,
        token: u64,
    },
    /// From a nanny: its worker process ended. Believed only from the connection that sent a
    /// matching `NannyOf`. `expected` when the nanny ended it on request
    /// (a restart), so no task is to blame.
    WorkerDied {
        worker_address: WorkerAddress,
        /// The token the dead process was given: it names that very process (an address may
        /// be shared by its successor, or by a stale registration of it still on the way).
        token: u64,
        expected: bool,
        reason: String,
    },
    /// Answer to `GetLogs`: this worker's recent log lines, oldest first (empty when the
    /// process keeps none: see `crate::logs`).
    Logs {
        request: u64,
        lines: Vec<String>,
    },
    /// The worker's memory: sent when it pauses or resumes, and with a heartbeat when its
    /// figures or the values on disk changed (a worker with a memory limit or values on disk).
    Memory(MemoryReport),
    /// Sent just before a message whose value frames make `bytes` (a big result, a value the
    /// scheduler asked for): the heartbeats that follow wait behind it on the one connection,
    /// so the scheduler waits that much longer for them (`CoreConfig::
    /// transfer_min_bytes_per_s`) until the announced bytes have arrived.
    Sending {
        bytes: u64,
    },
}

/// What a worker says of its memory (`FromWorker::Memory`). The scheduler believes the keys
/// only for values it knows that worker holds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MemoryReport {
    /// Past its pause fraction: it starts no new task, so it is given none.
    pub paused: bool,
    /// The bytes of the values it holds in memory.
    pub memory_bytes: u64,
    /// The bytes of the values it holds on disk (spilled, or in a store on disk).
    pub spilled_bytes: u64,
    /// Values that moved to disk (or were stored there) since the last report.
    pub spilled: Vec<Key>,
    /// Values back in memory since the last report (a spill that failed).
    pub unspilled: Vec<Key>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WorkerRegistration {
    pub protocol_version: u8,
    /// Where peers fetch data from: the worker's own ROUTER endpoint.
    pub address: WorkerAddress,
    pub name: WorkerName,
    pub nthreads: u32,
    pub memory_limit_bytes: u64,
    pub pid: u32,
    pub store: String,
    /// What the worker's store already holds (non-empty after a reconnect).
    pub keys: Vec<HeldKey>,
    /// The secret its nanny gave it (`None` without a nanny): the scheduler believes
    /// `NannyOf`/`WorkerDied` about this worker only from a nanny that knows it.
    pub nanny_token: Option<u64>,
    /// Whether it runs Python functions (`WorkerSelector::Python`): only the bridge the
    /// scheduler starts for a 2015 Python worker does.
    pub runs_python: bool,
}

/// A value a worker holds, with what it was computed from, so a restarted scheduler only
/// adopts results of the definitions it knows.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HeldKey {
    pub key: Key,
    /// `codec::spec_hash` of the task spec it was computed from, `SCATTERED` for scattered
    /// data, `UNKNOWN_ORIGIN` for a copy fetched from a peer.
    pub origin: u64,
    pub nbytes: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FinishedTask {
    pub key: Key,
    pub nbytes: u64,
    /// Dependencies this worker fetched from peers to run the task: it now holds copies.
    pub fetched: Vec<(Key, u64)>,
    pub has_value: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ErredTask {
    pub key: Key,
    pub error: TaskError,
}

/// Why a task failed, as the function (or the worker running it) reported it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskError {
    pub kind: TaskErrorKind,
    pub message: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TaskErrorKind {
    /// The function returned an error.
    Failed,
    /// The function panicked.
    Panicked,
    /// No function of that name is registered on the worker.
    UnknownFunction,
    /// The arguments did not fit the function's signature.
    BadArguments,
    /// The task spec could not be decoded or a dependency value was unreadable.
    BadInput,
    /// The task took down the workers that ran it too many times.
    KilledWorker,
    /// No connected worker may run the task (its restrictions match none), and none that may
    /// connected within the scheduler's `unrunnable_timeout_ms`. Submitting it again can help
    /// once such a worker is connected.
    NoWorker,
    /// The result would have taken the worker's held data past its memory limit
    /// (`zask-worker --memory-limit`), so the worker did not keep it; the message names the
    /// limit, what the worker held and the result's size. The worker and every value it held
    /// stay. Submitting it again can help once other values are released, or on a worker with
    /// more room.
    MemoryLimit,
}

impl fmt::Display for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            TaskErrorKind::Failed => "",
            TaskErrorKind::Panicked => "panicked: ",
            TaskErrorKind::UnknownFunction => "unknown function: ",
            TaskErrorKind::BadArguments => "bad arguments: ",
            TaskErrorKind::BadInput => "bad input: ",
            TaskErrorKind::KilledWorker => "killed worker: ",
            TaskErrorKind::NoWorker => "no worker: ",
            TaskErrorKind::MemoryLimit => "memory limit: ",
        };
        write!(f, "{kind}{}", self.message)
    }
}

/// Task error texts are cut to this many bytes (the cut marked with how much was left out)
/// before they leave a worker, and again by the scheduler (`CoreConfig::task_error_bytes_max`,
/// this by default), so a long error never travels whole.
pub const TASK_ERROR_BYTES_MAX: usize = 4096;

/// `text` cut to at most `max` bytes in all (on a character boundary), the cut marked with how
/// much was left out. The marker fits within `max`, so a text cut once passes a second cut at
/// the same limit unchanged.
pub fn cut_text(text: String, max: usize) -> String {
    if text.len() <= max {
        return text;
    }
    // The marker with the most digits it can need, so what is kept never grows past `max`.
    let longest_marker = format!("… [cut: {} more bytes]", text.len()).len();
    let mut end = max.saturating_sub(longest_marker);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… [cut: {} more bytes]", &text[..end], text.len() - end)
}

/// Scheduler → worker.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ToWorker {
    /// Registration accepted. `max_message_bytes` is the largest message the scheduler
    /// accepts: a result bigger than that cannot be reported and fails its task instead.
    Registered {
        max_message_bytes: u64,
    },
    /// Registration refused; the worker must stop and must not be restarted as it is.
    Rejected {
        reason: RejectReason,
    },
    Compute(Vec<ComputeTask>),
    /// Forget these keys: delete their data, drop them if queued.
    Release(Vec<Key>),
    /// These workers are gone: stop waiting on them for data, try other holders now.
    PeersLost(Vec<WorkerAddress>),
    /// Answer with a heartbeat at once (the scheduler is checking who is still alive).
    Ping,
    /// The answer to a heartbeat: the scheduler is alive.
    HeartbeatAck,
    /// Drop every task and every stored value (the cluster restarts without this worker's
    /// process being restarted: it has no nanny).
    Reset,
    /// To a nanny: kill the worker process and start a fresh one.
    Restart,
    GetData {
        request: u64,
        keys: Vec<Key>,
    },
    /// Answer with `NotHeld` listing those of these keys the worker does not hold. The
    /// scheduler asks a holder itself before believing another worker that it lacks a value.
    CheckHeld {
        keys: Vec<Key>,
    },
    /// Store these values (frames follow, in order), then answer `Stored`.
    PutData {
        request: u64,
        keys: Vec<Key>,
    },
    /// The scheduler does not know this connection as a worker (it restarted, or it removed
    /// the worker): register again.
    UnknownWorker,
    /// The scheduler could not decode a message from this worker (dropped; nothing else
    /// changes).
    Malformed {
        message: String,
    },
    /// Shut down (a retirement asked for by the worker itself, SIGTERM, is complete); a
    /// nanny starts a new worker.
    Close,
    /// Shut down for good: a client retired this worker (`retire_workers`, its results moved
    /// first) or the cluster shuts down. Its nanny stops too instead of starting a new one.
    Dismiss,
    /// Answer with `Logs`: the worker's recent log lines.
    GetLogs {
        request: u64,
    },
}

/// Why the scheduler refused a worker's registration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RejectReason {
    /// The worker speaks another protocol revision.
    ProtocolVersion { scheduler: u8, worker: u8 },
    /// Another live worker is registered under this name.
    NameTaken { name: WorkerName },
    /// Another live worker is registered at this peer address.
    AddressTaken { address: WorkerAddress },
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RejectReason::ProtocolVersion { scheduler, worker } => write!(
                f,
                "protocol version {worker} is not supported; this scheduler speaks {scheduler}"
            ),
            RejectReason::NameTaken { name } => write!(
                f,
                "name taken: a worker named {name:?} is already registered"
            ),
            RejectReason::AddressTaken { address } => write!(
                f,
                "address taken: a worker at {address} is already registered"
            ),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ComputeTask {
    pub key: Key,
    /// The msgpack-encoded `Expr`, kept encoded by the scheduler.
    #[serde(with = "serde_bytes")]
    pub spec: Vec<u8>,
    /// Where each dependency can be fetched from (peer addresses).
    pub dependencies: Vec<(Key, Vec<WorkerAddress>)>,
    /// Send the value back with the completion: a client waits for it.
    pub report_value: bool,
}

/// Worker → worker, on the serving worker's peer ROUTER.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum PeerRequest {
    GetData { request: u64, keys: Vec<Key> },
}

/// The answer on the same connection; values of `found` follow as frames, in order, each
/// value in `chunks[i]` consecutive frames (at least one; a large value in several, so that
/// encrypting, sending and decrypting them overlap: `codec::split_peer_reply` joins them).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum PeerReply {
    Data {
        request: u64,
        found: Vec<Key>,
        missing: Vec<Key>,
        /// How many frames carry each value of `found` (as many entries as `found`).
        chunks: Vec<u32>,
    },
    Error {
        message: String,
    },
}

/// Client → scheduler, on the scheduler's client port. `request` ids are the client's own;
/// replies carry them back so one client can have many requests in flight.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum FromClient {
    Hello {
        protocol_version: u8,
    },
    /// Liveness check, listing the requests the client still waits for: the scheduler fails
    /// those it does not know (it restarted and lost them).
    Ping {
        pending: Vec<RequestId>,
    },
    Submit {
        request: RequestId,
        graph: Vec<(Key, Expr)>,
        outputs: Vec<Key>,
        keep_results: bool,
        /// Tasks that may only run on the workers these select.
        restrictions: Vec<(Key, Vec<WorkerSelector>)>,
    },
    Gather {
        request: RequestId,
        keys: Vec<Key>,
    },
    /// Values follow as frames, in order.
    Scatter {
        request: RequestId,
        keys: Vec<Key>,
    },
    WhoHas {
        request: RequestId,
        keys: Vec<Key>,
    },
    Status {
        request: RequestId,
    },
    /// Drop kept results and scattered data.
    Release {
        request: RequestId,
        keys: Vec<Key>,
    },
    /// Keep `replicas` copies of each key (on distinct workers), now and after losses.
    Replicate {
        request: RequestId,
        keys: Vec<Key>,
        replicas: u32,
    },
    /// Store a collection (its graph, not its data) under a name; replaces an existing one.
    SetCollection {
        request: RequestId,
        name: String,
        collection: Collection,
    },
    GetCollection {
        request: RequestId,
        name: String,
    },
    ListCollections {
        request: RequestId,
    },
    /// Store a 2015 (dask 0.7) client's `set-collection` payload verbatim under a name (sent
    /// by the scheduler's legacy layer on behalf of a legacy connection).
    SetLegacyCollection {
        request: RequestId,
        name: String,
        #[serde(with = "serde_bytes")]
        payload: Vec<u8>,
    },
    /// Read back a collection a 2015 client stored (answered with `LegacyCollection`).
    GetLegacyCollection {
        request: RequestId,
        name: String,
    },
    DeleteCollection {
        request: RequestId,
        name: String,
    },
    /// Compute a graph's outputs and keep them on the workers, returning no values.
    Persist {
        request: RequestId,
        graph: Vec<(Key, Expr)>,
        outputs: Vec<Key>,
    },
    /// Name persisted results (`collection`'s keys) so they outlive the client.
    Publish {
        request: RequestId,
        name: String,
        collection: Collection,
    },
    GetDataset {
        request: RequestId,
        name: String,
    },
    Unpublish {
        request: RequestId,
        name: String,
    },
    /// Restart every worker (through its nanny) and drop all tasks and data.
    Restart {
        request: RequestId,
    },
    /// Cancel requests this client no longer waits for (e.g. a timed-out `get`).
    Cancel {
        request: RequestId,
    },
    Goodbye,
    /// The recent log lines of the scheduler and of the workers `worker` selects (every
    /// worker when `None`); answered with `Logs`.
    GetLogs {
        request: RequestId,
        #[serde(default)]
        worker: Option<WorkerSelector>,
    },
    /// Report the progress of this client's computation `request` (a `Submit` sent just
    /// before, on the same connection) with `Progress` messages, at most one every
    /// `PROGRESS_INTERVAL_MS` while it changes. Answers nothing itself: a computation that
    /// already ended is ignored.
    WatchProgress {
        request: RequestId,
    },
    /// The names of the published datasets, sorted; answered with `Names`.
    ListDatasets {
        request: RequestId,
    },
    /// Retire these workers gracefully (an operator's request): they take no new task, the
    /// results only they hold that are still needed are copied to other workers, then they
    /// are dismissed for good (their nannies stop too). Answered with `Retired` once every
    /// one of them has left.
    RetireWorkers {
        request: RequestId,
        workers: Vec<WorkerSelector>,
    },
    /// Shut the cluster down (an operator's request): every worker is dismissed for good
    /// and the scheduler process exits after answering `Done`.
    Shutdown {
        request: RequestId,
    },
    /// Record the size an operator wants (`zask scale`, `zask adapt`) for the cluster manager
    /// to apply (operators only; answered with `Done`).
    SetScaling {
        request: RequestId,
        scaling: ScalingRequest,
    },
    /// The size last asked for (answered with `Scaling`).
    GetScaling {
        request: RequestId,
    },
    /// The recorded transitions of `key` (every definition of it); answered with `Story`.
    GetStory {
        request: RequestId,
        key: Key,
    },
    /// The scheduler's recent cluster events, oldest first; answered with `Events`.
    GetEvents {
        request: RequestId,
    },
}

/// A size an operator asks a running cluster for. The scheduler only records it
/// (`WantedScaling`); the cluster manager (`zask local`) reads it every interval and applies
/// it, logging what and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ScalingRequest {
    /// Exactly this many workers (adapting stops).
    Scale { workers: u32 },
    /// Adapt between the bounds, with this target duration (ms; None: the policy's default).
    Adapt {
        minimum: u32,
        maximum: u32,
        target_duration_ms: Option<u64>,
    },
    /// Stop adapting; the workers stay as they are.
    StopAdapt,
}

/// The last `ScalingRequest` the scheduler recorded; `serial` grows by one with each, so a
/// manager applies each request once.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WantedScaling {
    pub serial: u64,
    pub request: ScalingRequest,
}

impl std::fmt::Display for ScalingRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ScalingRequest::Scale { workers } => write!(f, "scale to {workers} workers"),
            ScalingRequest::Adapt {
                minimum,
                maximum,
                target_duration_ms,
            } => {
                write!(f, "adapt between {minimum} and {maximum} workers")?;
                match target_duration_ms {
                    Some(ms) => write!(f, ", target duration {ms} ms"),
                    None => Ok(()),
                }
            }
            ScalingRequest::StopAdapt => write!(f, "stop adapting"),
        }
    }
}

/// How often, at most, a computation's `Progress` is sent while it changes (the scheduler
/// core's clock): a 100,000-task graph gets about ten messages a second, not one per task.
pub const PROGRESS_INTERVAL_MS: u64 = 100;

/// Scheduler → client.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ToClient {
    Welcome {
        protocol_version: u8,
        address_to_workers: String,
        address_to_clients: String,
    },
    Pong,
    /// Values of the requested keys follow as frames, in request order. A key asked for
    /// more than once travels once: then `positions[i]` is the frame of the i-th key asked
    /// for (empty: one frame per key, in order).
    Values {
        request: RequestId,
        positions: Vec<u32>,
    },
    Failed {
        request: RequestId,
        error: RequestError,
    },
    Scattered {
        request: RequestId,
        keys: Vec<Key>,
    },
    WhoHas {
        request: RequestId,
        who_has: Vec<(Key, Vec<WorkerAddress>)>,
    },
    Status {
        request: RequestId,
        status: ClusterStatus,
    },
    Done {
        request: RequestId,
    },
    Collection {
        request: RequestId,
        collection: Collection,
    },
    Names {
        request: RequestId,
        names: Vec<String>,
    },
    /// The payload a 2015 client stored, verbatim (the answer to `GetLegacyCollection`).
    LegacyCollection {
        request: RequestId,
        #[serde(with = "serde_bytes")]
        payload: Vec<u8>,
    },
    /// An answer that belongs to no request: the message could not be read (so its request
    /// id is unknown), or the hello was refused (another protocol version). The client fails
    /// its pending hello with `error`; otherwise it logs it.
    Rejected {
        error: RequestError,
    },
    /// The answer to `GetLogs`: the scheduler's recent log lines and each asked worker's
    /// (oldest first). A worker that did not answer within the scheduler's
    /// `logs_timeout_ms` is left out.
    Logs {
        request: RequestId,
        scheduler: Vec<String>,
        workers: Vec<(WorkerAddress, Vec<String>)>,
    },
    /// How far computation `request` is (asked for with `WatchProgress`; not its answer,
    /// which comes later): of its `total` tasks (those it needs, counting the ones already in
    /// memory when it started), `done` are in memory and `erred` failed.
    Progress {
        request: RequestId,
        done: u64,
        total: u64,
        erred: u64,
    },
    /// The answer to `RetireWorkers`: the workers retired, by address.
    Retired {
        request: RequestId,
        workers: Vec<WorkerAddress>,
    },
    /// The answer to `GetScaling`: the last size an operator asked for, if any.
    Scaling {
        request: RequestId,
        wanted: Option<WantedScaling>,
    },
    /// The answer to `GetStory` (no steps when the scheduler remembers none of the key).
    Story {
        request: RequestId,
        story: Story,
    },
    /// The answer to `GetEvents`: the recent cluster events, oldest first.
    Events {
        request: RequestId,
        events: Vec<ClusterEvent>,
    },
}

impl ToClient {
    /// The request this message answers: none for `Welcome`, `Pong` and `Rejected`.
    pub fn request(&self) -> Option<RequestId> {
        match self {
            ToClient::Welcome { .. } | ToClient::Pong | ToClient::Rejected { .. } => None,
            ToClient::Values { request, .. }
            | ToClient::Failed { request, .. }
            | ToClient::Scattered { request, .. }
            | ToClient::WhoHas { request, .. }
            | ToClient::Status { request, .. }
            | ToClient::Done { request }
            | ToClient::Collection { request, .. }
            | ToClient::Names { request, .. }
            | ToClient::LegacyCollection { request, .. }
            | ToClient::Logs { request, .. }
            | ToClient::Progress { request, .. }
            | ToClient::Retired { request, .. }
            | ToClient::Scaling { request, .. }
            | ToClient::Story { request, .. }
            | ToClient::Events { request, .. } => Some(*request),
        }
    }
}

/// Why a client request failed. Carries data a caller can match on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum RequestError {
    /// The graph is malformed: missing key or cycle.
    Graph(GraphError),
    /// A task failed; `key` is the task that failed (the one asked for, or one it depends on).
    Task { key: Key, error: TaskError },
    /// Data with no lineage (scattered) was lost with the workers that held it.
    DataLost {
        key: Key,
        workers: Vec<WorkerAddress>,
    },
    /// A key asked for by `gather` is not on the cluster.
    NotFound { key: Key },
    /// No stored collection (or published dataset) has this name.
    NoSuchCollection { name: String },
    /// The collection was stored by a 2015 (dask 0.7) client: a pickle only that client can
    /// rebuild. Retrying cannot help.
    LegacyCollection { name: String },
    /// A 2015 client asked for a collection a Zask client stored, which it cannot rebuild.
    /// Retrying cannot help.
    NativeCollection { name: String },
    /// The cluster was restarted while the request was pending.
    Restarted,
    /// The scheduler restarted and does not know this request (it runs without a state
    /// directory, or the request was still on the way when it stopped). Resubmitting works.
    SchedulerRestarted,
    /// A restart did not see every worker come back in time.
    RestartIncomplete { expected: u32, back: u32 },
    /// The request itself was malformed or unsupported.
    Protocol { message: String },
    /// The connection's role may not do this: `action` names what was refused and on what
    /// (`releasing key "x" (pinned by other clients)`, `deleting collection "c" (owned by
    /// another client)`, `restarting the cluster`), `needs` the role that may. Retrying
    /// cannot help.
    Forbidden { action: String, needs: ClientRole },
    /// The client's connection sent more than `max_messages_per_second` (the scheduler's
    /// per-connection rate limit, with a burst of twice that): this request was dropped
    /// unread. Retrying more slowly helps.
    RateLimited { max_messages_per_second: u32 },
    /// No registered worker matches `worker` (a `retire_workers` naming a worker that is not
    /// there, or has left already). Retrying cannot help until such a worker registers.
    NoSuchWorker { worker: WorkerSelector },
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestError::Graph(e) => write!(f, "{e}"),
            RequestError::Task { key, error } => write!(f, "task {key:?} failed: {error}"),
            RequestError::DataLost { key, workers } => write!(
                f,
                "scattered key {key:?} was lost with worker(s) {} and cannot be recomputed",
                workers
                    .iter()
                    .map(WorkerAddress::as_str)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            RequestError::NotFound { key } => write!(f, "key {key:?} is not on the cluster"),
            RequestError::SchedulerRestarted => write!(
                f,
                "the scheduler restarted and lost this request; submit it again (a scheduler with --state-dir keeps submissions)"
            ),
            RequestError::NoSuchCollection { name } => {
                write!(f, "no collection or dataset named {name:?}")
            }
            RequestError::LegacyCollection { name } => write!(
                f,
                "collection {name:?} holds a pickled dask 0.7 (2015) collection, stored by a \
                 legacy Python client; Zask's client cannot read it (use the 2015 client's \
                 get_collection)"
            ),
            RequestError::NativeCollection { name } => write!(
                f,
                "collection {name:?} was stored by a Zask client; the dask 0.7 (2015) client \
                 cannot read it"
            ),
            RequestError::Restarted => {
                write!(f, "the cluster was restarted while this request was pending")
            }
            RequestError::RestartIncomplete { expected, back } => write!(
                f,
                "restart: only {back} of {expected} workers came back in time"
            ),
            RequestError::Protocol { message } => write!(f, "protocol error: {message}"),
            RequestError::Forbidden { action, needs } => write!(
                f,
                "forbidden: {action} needs the {needs} role"
            ),
            RequestError::RateLimited {
                max_messages_per_second,
            } => write!(
                f,
                "the scheduler dropped this request: the connection sent more than \
                 {max_messages_per_second} messages per second (its rate limit); retry more slowly"
            ),
            RequestError::NoSuchWorker { worker } => {
                write!(f, "no registered worker matches {worker}")
            }
        }
    }
}

impl std::error::Error for RequestError {}

/// What `status()` reports.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClusterStatus {
    pub address_to_workers: String,
    pub address_to_clients: String,
    pub workers: Vec<WorkerInfo>,
    pub tasks: u64,
    pub processing: u64,
    pub in_memory: u64,
    pub clients: u64,
    /// Tasks whose inputs are all in memory, not yet given to a worker.
    #[serde(default)]
    pub ready: u64,
    /// Tasks needed that wait for an input.
    #[serde(default)]
    pub waiting: u64,
    /// Per task prefix (the key's name up to its first '-', or a tuple key's first
    /// element's): the tasks not yet finished and the average run time. Sorted by prefix;
    /// what adaptive scaling sizes the cluster from.
    #[serde(default)]
    pub prefixes: Vec<TaskPrefixInfo>,
}

/// The figures of one task prefix (`ClusterStatus::prefixes`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskPrefixInfo {
    pub prefix: String,
    /// Its tasks waiting, ready or processing.
    pub pending: u64,
    /// How long one of its tasks took from assignment to report, averaged (ms); None when
    /// none has finished yet.
    pub average_ms: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WorkerInfo {
    pub address: WorkerAddress,
    pub name: WorkerName,
    pub pid: u32,
    pub nthreads: u32,
    pub memory_limit_bytes: u64,
    pub store: String,
    pub keys: Vec<Key>,
    pub processing: u64,
    /// It runs Python functions: the bridge of a 2015 Python worker, `name` its address.
    #[serde(default)]
    pub runs_python: bool,
    /// The bytes of the results it holds (as the workers reported their sizes).
    #[serde(default)]
    pub nbytes: u64,
    /// It runs nothing and has nothing queued (and is not retiring).
    #[serde(default)]
    pub idle: bool,
    /// Its memory as it last reported it (all zero for a worker without a memory limit or
    /// values on disk).
    #[serde(default)]
    pub memory: WorkerMemory,
}

/// A worker's memory in `status` (`WorkerInfo::memory`), as it last reported it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerMemory {
    /// Past its pause fraction: it starts no new task and is given none.
    pub paused: bool,
    /// The bytes of the values it holds in memory.
    pub memory_bytes: u64,
    /// The bytes of the values it holds on disk.
    pub spilled_bytes: u64,
    /// The keys of the values it holds on disk (of those in `keys`), sorted.
    pub spilled_keys: Vec<Key>,
}
