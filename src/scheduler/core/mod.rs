//! The scheduler's logic as a pure state machine: events (messages from workers and clients, the
//! passing of time) in, commands (messages to send) out. No socket, thread, channel, disk or
//! clock in here: `now` is always passed in, which makes every fault deterministic to test.
//!
//! `SchedulerCore` is a composition of parts, each a type in its own file owning its tables
//! (private fields, a few methods): the task table, the worker registry, membership, clients,
//! computations, scatters, replication, restart, recovery, collections, placement and the
//! outbox. This file holds the parts and routes events to them. An operation that concerns
//! several parts is announced to each (a worker lost: `worker_loss.rs`; a task forgotten:
//! `forget` in `lifecycle.rs`), and each part updates its own table; no part edits another's.
//!
//! Bookkeeping (a task finished, a worker was lost) is kept apart from the decision pass
//! (`schedule`, in `placement`), which the IO layer runs once per batch of events.

mod clients;
mod collections;
mod computations;
mod events;
mod flaky;
mod graphs;
mod invariants;
mod lifecycle;
mod logs;
mod membership;
mod metrics;
mod names;
mod outbox;
mod placement;
mod progress;
mod recovery;
mod replication;
mod restart;
mod retirement;
mod scaling;
mod scatter;
mod status;
mod stories;
mod tasks;
mod violation;
mod worker_loss;
mod workers;

use log::{debug, info};

use crate::graph::Key;
use crate::protocol::{
    ClientRole, ClusterEvent, ClusterStatus, ConnectionId, Frame, FromClient, FromWorker,
    RequestError, Story, ToClient, ToWorker,
};

pub use metrics::{
    CoreMetrics, Counters, PrefixProgress, TaskCounts, TaskRun, WorkerFigures, OTHER_PREFIX,
    PREFIXES_MAX, TASK_STREAM_MAX,
};
pub use recovery::{JournalOp, Recovered, Submission};
pub use tasks::{TaskId, TaskState};
pub use violation::InvariantViolation;
pub use workers::WorkerId;

use tasks::TaskTable;
use workers::WorkerRegistry;

/// Settings of the scheduler's logic. Times are in milliseconds of the `now` the IO layer passes.
#[derive(Clone, Debug)]
pub struct CoreConfig {
    /// A worker silent for this long is considered lost (a stopped process: its connection
    /// stays open). Default 3 s: six heartbeats at the default worker interval (500 ms), so
    /// one delayed heartbeat never loses a worker.
    pub heartbeat_timeout_ms: u64,
    /// When a worker connection drops, every worker is pinged; those that do not answer within
    /// this long are lost. This is how a killed worker is noticed well before the heartbeat
    /// timeout. Default 500 ms: a live worker answers a ping within a heartbeat interval.
    pub probe_timeout_ms: u64,
    /// The slowest rate at which a worker's big values are expected to arrive. A worker
    /// announces a big message before sending it (`FromWorker::Sending`); until those bytes
    /// have arrived, its heartbeat timeout (and a probe) is extended by the time they take at
    /// this rate, since its heartbeats queue behind them. Default 8 MiB/s: a 250 MB value gets
    /// about 30 s more, far slower than CurveZMQ on a busy machine; a worker really gone in the
    /// middle is found that much later (its nanny, if any, says so at once).
    pub transfer_min_bytes_per_s: u64,
    /// A client silent this long (no request, no ping) is considered gone: its requests are
    /// cancelled and what it owned belongs to nobody (`zask-scheduler --client-timeout-ms`).
    /// Default 30 s: clients ping every 500 ms while they wait (`ClientConfig::
    /// ping_interval_ms`) and say goodbye when they close, so only a client that vanished
    /// (killed, its machine lost) stays silent this long. A client idle that long with
    /// nothing to wait for is forgotten too; its next request makes it a new client.
    pub client_timeout_ms: u64,
    /// At most this many tasks queued on a worker beyond its thread count, so it never waits
    /// for the scheduler; fewer when tasks are long (about 10 ms of queued work per worker).
    /// Default 64: enough short tasks to keep a worker busy between two scheduling passes.
    pub worker_queue_extra: u32,
    /// How many unexpected worker losses a task may be blamed for before it fails
    /// (`KilledWorker`). Default 3, as dask's `allowed-failures`: one unlucky loss is not the
    /// task's fault, a task taking down worker after worker is.
    pub allowed_failures: u32,
    /// A ready task that no registered worker may run (its restrictions match none, busy or
    /// idle; retiring ones do not count) fails with `TaskErrorKind::NoWorker` once it has
    /// waited this long, so its client gets an error instead of hanging silently (a warning is
    /// logged when the wait starts). Only restricted tasks wait for this: an unrestricted task
    /// waits for the first worker as long as it takes. Default 60 s: long enough for a worker
    /// that is starting, or restarting under its nanny, to connect.
    pub unrunnable_timeout_ms: u64,
    /// Describe durable state changes as `Command::Journal` (the scheduler has a state dir).
    /// Default false: without a state dir nothing is journaled.
    pub journal: bool,
    /// After a restart, how long to wait for workers to report what they hold before the
    /// journaled graphs are resubmitted. Default 1.5 s: workers register again within a
    /// heartbeat or two (500 ms each).
    pub recovery_grace_ms: u64,
    /// How long a retiring worker (SIGTERM) may take to hand its results over before it is
    /// closed anyway. Default 2 s: copying results between workers on one network is quick,
    /// and whoever sent SIGTERM is waiting.
    pub retire_timeout_ms: u64,
    /// How long `restart` waits for restarted workers to register again; also how long the
    /// tokens of processes ended by a nanny are remembered (their stale registrations are
    /// ignored). Default 30 s: a fresh worker process starts well within that.
    pub restart_timeout_ms: u64,
    /// The largest message the scheduler's sockets accept (`--max-message-bytes`); told to
    /// workers at registration, so a result too big to report fails its task instead of
    /// vanishing. Default 2 GiB − 1, libzmq's own practical limit.
    pub max_message_bytes: u64,
    /// Distinguishes this scheduler process's scattered data from an earlier one's (whose
    /// workers may still hold values): the IO layer passes something unpredictable. Default 0
    /// (tests and the simulation, where one scheduler's data is all there is).
    pub instance_token: u64,
    /// Task error texts longer than this (in bytes) are cut, with the cut marked, before they
    /// are kept or sent to clients: a worker cannot make the scheduler hold or forward
    /// megabytes of error text. Default 4 KiB (`protocol::TASK_ERROR_BYTES_MAX`).
    pub task_error_bytes_max: usize,
    /// Reported to clients in `Welcome` and `status` (filled in by the IO layer from its
    /// sockets; empty by default).
    pub address_to_workers: String,
    /// As `address_to_workers`, for the client port.
    pub address_to_clients: String,
    /// A `GetLogs` is answered with what arrived once this long has passed, so a silent
    /// worker cannot hang it. Default 2 s: a live worker answers within a heartbeat or two.
    pub logs_timeout_ms: u64,
    /// How many keys' stories (`zask story`) are kept; the oldest is forgotten when a new key
    /// needs room. Default 16,384: the last few graphs' keys (about what dask's
    /// 100,000-transition log holds), at about 400 bytes each: 7 MB at most, however large
    /// the graphs.
    pub story_keys_max: usize,
    /// How many recent cluster events (`zask events`) are kept. Default 1,000: hours of
    /// joins, losses and retirements, a few hundred KB.
    pub events_max: usize,
    /// A worker identity (its nanny, else its name: what survives a restart) whose worker
    /// died unexpectedly within this long is *flaky*: a result finishing on it that waiting
    /// tasks still need is copied at once to a stable worker, so its next death loses
    /// nothing still needed. 0 turns this off. Default 10 s: a worker killed every few
    /// seconds (a spot instance, a memory-hungry task under a nanny) keeps copying; one
    /// that died once long ago does not. While nobody died, nothing is copied.
    pub flaky_window_ms: u64,
}

impl Default for CoreConfig {
    fn default() -> Self {
        CoreConfig {
            heartbeat_timeout_ms: 3_000,
            probe_timeout_ms: 500,
            transfer_min_bytes_per_s: 8 << 20,
            client_timeout_ms: 30_000,
            worker_queue_extra: 64,
            allowed_failures: 3,
            unrunnable_timeout_ms: 60_000,
            restart_timeout_ms: 30_000,
            retire_timeout_ms: 2_000,
            journal: false,
            recovery_grace_ms: 1_500,
            max_message_bytes: (2u64 << 30) - 1,
            task_error_bytes_max: crate::protocol::TASK_ERROR_BYTES_MAX,
            instance_token: 0,
            address_to_workers: String::new(),
            address_to_clients: String::new(),
            logs_timeout_ms: 2_000,
            story_keys_max: 16_384,
            events_max: 1_000,
            flaky_window_ms: 10_000,
        }
    }
}

/// Something that happened, as the IO layer decoded it.
#[derive(Debug)]
pub enum Event {
    FromWorker {
        identity: ConnectionId,
        msg: FromWorker,
        frames: Vec<Frame>,
    },
    FromClient {
        identity: ConnectionId,
        /// What the connection may do (from the key it authenticated with).
        role: ClientRole,
        msg: FromClient,
        frames: Vec<Frame>,
    },
    /// A connection on the worker port dropped (which worker's, ZeroMQ does not say).
    WorkerConnectionLost,
}

/// Something to send, for the IO layer to encode.
#[derive(Debug, PartialEq)]
pub enum Command {
    ToWorker {
        identity: ConnectionId,
        msg: ToWorker,
        frames: Vec<Frame>,
    },
    ToClient {
        identity: ConnectionId,
        msg: ToClient,
        frames: Vec<Frame>,
    },
    /// Make this durable before sending anything that follows it.
    Journal(JournalOp),
}

/// The scheduler core: its parts, and the routing of events between them.
pub struct SchedulerCore {
    config: CoreConfig,
    /// Every task, by id and wire key (a freed slot is reused only under a new generation, so
    /// an id never names another task).
    tasks: TaskTable,
    /// What each key names on the cluster (scattered, kept, persisted).
    names: names::Names,
    /// Registered workers: what each holds, runs, and has queued to receive.
    workers: WorkerRegistry,
    /// Held registrations, nanny claims, dead tokens, the liveness probe.
    membership: membership::Membership,
    clients: clients::Clients,
    /// Client requests waiting for values (or, for persists, for memory), and value fetches.
    computations: computations::Computations,
    /// Scatters: puts in flight and those waiting for a worker.
    scatters: scatter::Scatters,
    /// Copies being made (`replicate`, retirement) and `replicate` requests waiting for them.
    replication: replication::Replication,
    restart: restart::Restart,
    /// Journaled graphs to resubmit after a restart, and held results to adopt.
    recovery: recovery::Recovery,
    /// Stored collections and published datasets.
    collections: collections::Collections,
    /// The ready queue, restrictions, unrunnable waits, the task-duration average, the
    /// assignment counter.
    placement: placement::Placement,
    /// `GetLogs` requests waiting for workers' lines.
    logs: logs::LogRequests,
    /// Computations whose progress their client watches.
    progress: progress::ProgressWatches,
    /// `retire_workers` requests waiting for their workers to leave, the workers to dismiss
    /// for good, and whether the cluster is shutting down.
    dismissals: retirement::Dismissals,
    /// The size an operator last asked for, for the cluster manager to apply.
    scaling: scaling::Scaling,
    /// Counters, per-prefix done/erred counts and the recent task runs (the dashboard's).
    metrics: metrics::Metrics,
    /// Recent cluster events and what their costs are computed from.
    events: events::Events,
    /// The recorded transitions of recent keys.
    stories: stories::Stories,
    /// Worker identities that died recently, whose results are copied to stable workers.
    flaky: flaky::Flaky,
    outbox: outbox::Outbox,
    now_ms: u64,
    /// A worker was lost or scheduling is needed: run `schedule` before flushing.
    needs_scheduling: bool,
}

impl SchedulerCore {
    pub fn new(config: CoreConfig) -> SchedulerCore {
        SchedulerCore {
            outbox: outbox::Outbox::new(config.journal),
            events: events::Events::new(config.events_max),
            stories: stories::Stories::new(config.story_keys_max),
            config,
            tasks: TaskTable::default(),
            names: names::Names::default(),
            workers: WorkerRegistry::default(),
            membership: Default::default(),
            clients: Default::default(),
            computations: Default::default(),
            scatters: Default::default(),
            replication: Default::default(),
            restart: Default::default(),
            recovery: Default::default(),
            collections: Default::default(),
            placement: Default::default(),
            logs: Default::default(),
            progress: Default::default(),
            dismissals: Default::default(),
            scaling: Default::default(),
            metrics: Default::default(),
            flaky: Default::default(),
            now_ms: 0,
            needs_scheduling: false,
        }
    }

    pub fn config(&self) -> &CoreConfig {
        &self.config
    }

    /// Feeds one event. Call `take_commands` after a batch of events.
    pub fn handle(&mut self, now_ms: u64, event: Event) {
        self.now_ms = self.now_ms.max(now_ms);
        self.metrics.message();
        match event {
            Event::FromWorker {
                identity,
                msg,
                frames,
            } => self.handle_worker(identity, msg, frames),
            Event::FromClient {
                identity,
                role,
                msg,
                frames,
            } => self.handle_client(identity, role, msg, frames),
            Event::WorkerConnectionLost => self.probe_workers(),
        }
    }

    /// The scheduler itself did not listen for `deaf_ms` before `now_ms` (one long batch kept
    /// the runner from reading): the workers' messages of that time wait in the queues, so it
    /// does not count against their heartbeats. Never moves a worker past `now_ms`. A worker
    /// really gone is found that much later, and only across such stalls.
    pub fn was_deaf(&mut self, now_ms: u64, deaf_ms: u64) {
        self.now_ms = self.now_ms.max(now_ms);
        self.workers.credit_silence(deaf_ms, self.now_ms);
    }

    /// Lets time pass: detects silent workers and clients, fails tasks no worker may run that
    /// waited too long.
    pub fn tick(&mut self, now_ms: u64) {
        self.now_ms = self.now_ms.max(now_ms);
        self.check_restart();
        self.replay_if_due();
        if self.workers.any_retiring() {
            self.check_retirements();
        }
        self.check_probe();
        self.retry_held_registrations();
        self.drop_silent_workers();
        self.drop_silent_clients();
        self.fail_unrunnable();
        self.expire_log_requests();
        self.send_progress();
    }

    /// When `tick` next has something to do.
    pub fn next_deadline(&self) -> Option<u64> {
        let workers = self
            .workers
            .iter()
            .map(|(_, w)| self.silent_after_ms(w) + 1)
            .min();
        let retire = self
            .workers
            .iter()
            .filter(|(_, w)| w.retiring)
            .map(|(_, w)| w.retire_deadline_ms)
            .min();
        [
            workers,
            retire,
            self.membership.next_deadline(),
            self.clients.next_deadline(self.config.client_timeout_ms),
            self.restart.deadline(),
            self.recovery.deadline(),
            self.placement
                .unrunnable_deadline(self.config.unrunnable_timeout_ms),
            self.logs.next_deadline(),
            self.progress.next_deadline(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Runs the decision pass if needed and returns everything to send, in order.
    pub fn take_commands(&mut self) -> Vec<Command> {
        if self.replication.has_requests() {
            // Values can be released or fail anywhere in a batch: answer what became moot.
            self.check_replications();
        }
        if self.dismissals.has_requests() {
            // Workers leave anywhere in a batch (closed, lost): answer the retirements done.
            self.answer_retirements();
        }
        if self.needs_scheduling {
            self.needs_scheduling = false;
            self.schedule();
        }
        let mut commands = self.outbox.take();
        self.workers.drain_outboxes(&mut commands);
        commands
    }

    fn handle_worker(&mut self, identity: ConnectionId, msg: FromWorker, frames: Vec<Frame>) {
        let id = self.workers.by_identity(&identity);
        if let Some(id) = id {
            let bytes = frames.iter().map(|f| f.len() as u64).sum();
            self.workers.heard_from(id, self.now_ms, bytes);
        }
        match (msg, id) {
            (FromWorker::Register(reg), _) => self.register_worker(identity, reg),
            (
                FromWorker::NannyOf {
                    worker_address,
                    token,
                },
                _,
            ) => self.nanny_of(identity, worker_address, token),
            (
                FromWorker::WorkerDied {
                    worker_address,
                    token,
                    expected,
                    reason,
                },
                _,
            ) => self.worker_died(identity, worker_address, token, expected, reason),
            (_, None) => {
                debug!(
                    "message from unregistered worker {}: asking it to register",
                    identity
                );
                self.outbox
                    .send_to_connection(identity, ToWorker::UnknownWorker);
            }
            (FromWorker::Heartbeat, Some(w)) => {
                self.workers.push(w, ToWorker::HeartbeatAck, vec![])
            }
            (FromWorker::Sending { bytes }, Some(w)) => {
                let max = self.config.max_message_bytes;
                self.workers.announced(w, bytes, max)
            }
            (FromWorker::Finished(done), Some(w)) => self.tasks_finished(w, done, frames),
            (FromWorker::Erred(erred), Some(w)) => {
                for e in erred {
                    self.task_erred(w, e.key, e.error);
                }
            }
            (
                FromWorker::MissingDependency {
                    key,
                    dependency,
                    holders,
                    unresponsive,
                },
                Some(w),
            ) => {
                if !self.assigned_to(w, &key) {
                    self.distrust(w, "a missing dependency of a task it was not given", &key);
                    return;
                }
                if !unresponsive.is_empty() {
                    // Slow or dead? A ping tells; their data is not given up on meanwhile.
                    self.probe_workers();
                }
                self.missing_dependency(w, &key, &dependency, &holders);
            }
            (
                FromWorker::Data {
                    request,
                    found,
                    missing,
                },
                Some(w),
            ) => self.data_arrived(w, request, found, missing, frames),
            (FromWorker::NotHeld { keys }, Some(w)) => self.not_held(w, keys),
            (FromWorker::Stored { request }, Some(w)) => self.put_stored(w, request),
            (FromWorker::Retire, Some(w)) => self.retire_worker(w),
            (FromWorker::Logs { request, lines }, Some(w)) => self.logs_arrived(w, request, lines),
            (FromWorker::Memory(report), Some(w)) => self.memory_reported(w, report),
            (FromWorker::Goodbye, Some(w)) => {
                info!("worker {} is leaving", self.workers.address(w));
                self.remove_worker(w, crate::protocol::Departure::Goodbye);
            }
        }
    }

    /// Routes a client's message. Reading is open to every client; what changes the whole
    /// cluster (restart) or another client's things (releasing its names, deleting or
    /// replacing its collections and datasets) needs `ClientRole::Operator`: the owning part
    /// checks ownership and answers `RequestError::Forbidden` otherwise.
    fn handle_client(
        &mut self,
        identity: ConnectionId,
        role: ClientRole,
        msg: FromClient,
        frames: Vec<Frame>,
    ) {
        if !matches!(msg, FromClient::Goodbye) {
            self.clients.seen(&identity, self.now_ms);
        }
        match msg {
            FromClient::Hello { protocol_version } => self.hello(&identity, protocol_version),
            FromClient::Ping { pending } => self.client_ping(&identity, pending),
            FromClient::Submit {
                request,
                graph,
                outputs,
                keep_results,
                restrictions,
            } => self.submit(
                identity,
                request,
                Submission {
                    graph,
                    outputs,
                    keep_results,
                    restrictions,
                },
            ),
            FromClient::Gather { request, keys } => self.gather(identity, request, keys),
            FromClient::Scatter { request, keys } => {
                self.start_scatter(scatter::PendingScatter {
                    client: identity,
                    request,
                    keys,
                    values: frames,
                });
            }
            FromClient::WhoHas { request, keys } => {
                let who_has = self.who_has(keys);
                self.reply(&identity, ToClient::WhoHas { request, who_has });
            }
            FromClient::Status { request } => {
                let status = self.status();
                self.reply(&identity, ToClient::Status { request, status });
            }
            FromClient::Release { request, keys } => {
                let reply = match self.release_names(&keys, &identity, role) {
                    Ok(()) => ToClient::Done { request },
                    Err(error) => ToClient::Failed { request, error },
                };
                self.reply(&identity, reply);
            }
            FromClient::Cancel { request } => self.cancel(&identity, request),
            FromClient::Goodbye => self.remove_client(&identity),
            FromClient::Restart { request } if role != ClientRole::Operator => {
                let error = RequestError::Forbidden {
                    action: "restarting the cluster".into(),
                    needs: ClientRole::Operator,
                };
                self.reply(&identity, ToClient::Failed { request, error });
            }
            FromClient::Restart { request } => self.restart(identity, request),
            FromClient::SetCollection {
                request,
                name,
                collection,
            } => self.set_collection(&identity, role, request, name, collection),
            FromClient::GetCollection { request, name } => {
                self.get_collection(&identity, request, name)
            }
            FromClient::ListCollections { request } => self.list_collections(&identity, request),
            FromClient::SetLegacyCollection {
                request,
                name,
                payload,
            } => self.set_legacy_collection(&identity, role, request, name, payload),
            FromClient::GetLegacyCollection { request, name } => {
                self.get_legacy_collection(&identity, request, name)
            }
            FromClient::DeleteCollection { request, name } => {
                self.delete_collection(&identity, role, request, name)
            }
            FromClient::Persist {
                request,
                graph,
                outputs,
            } => self.persist(identity, request, graph, outputs),
            FromClient::Publish {
                request,
                name,
                collection,
            } => self.publish(&identity, role, request, name, collection),
            FromClient::GetDataset { request, name } => self.get_dataset(&identity, request, name),
            FromClient::Unpublish { request, name } => {
                self.unpublish(&identity, role, request, name)
            }
            FromClient::Replicate {
                request,
                keys,
                replicas,
            } => self.replicate(identity, request, keys, replicas),
            FromClient::GetLogs { request, worker } => self.get_logs(identity, request, worker),
            FromClient::WatchProgress { request } => self.watch_progress(&identity, request),
            FromClient::ListDatasets { request } => self.list_datasets(&identity, request),
            FromClient::RetireWorkers { request, workers } => {
                self.retire_workers(identity, role, request, workers)
            }
            FromClient::Shutdown { request } => self.shut_down(identity, role, request),
            FromClient::SetScaling { request, .. } if role != ClientRole::Operator => {
                let error = RequestError::Forbidden {
                    action: "scaling the cluster".into(),
                    needs: ClientRole::Operator,
                };
                self.reply(&identity, ToClient::Failed { request, error });
            }
            FromClient::SetScaling { request, scaling } => {
                let reply = match self.scaling.set(scaling.clone()) {
                    Ok(serial) => {
                        log::info!("scaling asked for (#{serial}): {scaling}");
                        ToClient::Done { request }
                    }
                    Err(error) => ToClient::Failed { request, error },
                };
                self.reply(&identity, reply);
            }
            FromClient::GetScaling { request } => {
                let wanted = self.scaling.wanted().cloned();
                self.reply(&identity, ToClient::Scaling { request, wanted });
            }
            FromClient::GetStory { request, key } => {
                let story = self.story(&key);
                self.reply(&identity, ToClient::Story { request, story });
            }
            FromClient::GetEvents { request } => {
                let events = self.recent_events();
                self.reply(&identity, ToClient::Events { request, events });
            }
        }
    }

    fn reply(&mut self, identity: &ConnectionId, msg: ToClient) {
        self.outbox.reply(identity, msg);
    }

    fn journal(&mut self, op: JournalOp) {
        self.outbox.journal(op);
    }

    /// Logs a message a worker had no standing to send; it changes nothing.
    fn distrust(&self, w: WorkerId, what: &str, key: &Key) {
        log::warn!(
            "ignoring {what} ({key:?}) from worker {}",
            self.workers.address(w)
        );
    }

    /// The cluster as clients see it (`zask status`).
    pub fn status(&self) -> ClusterStatus {
        status::cluster_status(
            &self.config,
            &self.tasks,
            &self.workers,
            &self.placement,
            self.clients.len(),
        )
    }

    /// The recent cluster events, oldest first (`zask events`; what a dashboard shows).
    pub fn recent_events(&self) -> Vec<ClusterEvent> {
        self.events.recent().cloned().collect()
    }

    /// The recorded transitions of `key` (`zask story`): no steps when none are kept.
    pub fn story(&self, key: &Key) -> Story {
        self.stories.story(key)
    }

    /// Checks the internal invariants, each part's own and those between parts; used by tests
    /// and the simulator after every step.
    pub fn check_invariants(&self) -> Result<(), InvariantViolation> {
        invariants::check(self)
    }

    /// The key (as clients write it) of the task workers know by `wire_key` (for tests and
    /// diagnostics).
    pub fn key_of(&self, wire_key: &Key) -> Option<Key> {
        self.tasks
            .id(wire_key)
            .map(|t| self.tasks.get(t).name().clone())
    }

    /// The state of the task `key` names, else of some task of that key (for tests).
    pub fn task_state(&self, key: &Key) -> Option<TaskState> {
        match self.names.get(key) {
            Some(t) => Some(self.tasks.get(t).state),
            None => self
                .tasks
                .iter()
                .filter(|(_, t)| t.name() == key)
                .map(|(_, t)| t.state)
                .next(),
        }
    }

    /// Whether an operator shut the cluster down (`FromClient::Shutdown`): the IO layer
    /// sends this batch's messages, then stops.
    pub fn is_shut_down(&self) -> bool {
        self.dismissals.shut_down()
    }

    pub fn task_count(&self) -> usize {
        self.tasks.len()
    }
}

fn warn_or_info(warn: bool, msg: &str) {
    if warn {
        log::warn!("{msg}");
    } else {
        log::info!("{msg}");
    }
}

#[cfg(test)]
mod tests;
