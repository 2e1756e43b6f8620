//! Simulated clients: each follows a script of steps (scatter, submit, cancel, gather,
//! release, replicate, sleep, leave) through the shipped client state machine
//! (`zask::client::state::ClientState`: pending requests, pings while waiting, the
//! silent-scheduler timeout), and checks every answer against the reference evaluation.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use zask::client::state::{Awaited, ClientState, Progress};
use zask::graph::{Expr, Key};
use zask::protocol::codec::{decode_value, encode, encode_value};
use zask::protocol::{
    ConnectionId, Frame, FromClient, RequestError, RequestId, TaskErrorKind, ToClient,
    WorkerSelector, PROTOCOL_VERSION,
};
use zask::{ClientConfig, ClientError, GraphError, Value};

use crate::network::{Chan, Ep};
use crate::sim::Sim;
use crate::{ALLOWED_FAILURES, CLIENT_PING_MS, R};

#[derive(Clone, Debug)]
pub(crate) enum Step {
    Hello,
    Scatter(Vec<(Key, Value)>),
    Submit {
        graph: Vec<(Key, Expr)>,
        outputs: Vec<Key>,
        keep: bool,
        /// Tasks that may only run on these workers (addresses).
        restrictions: Vec<(Key, Vec<WorkerSelector>)>,
    },
    /// Cancels the newest unanswered submit (a timed-out `get`).
    Cancel,
    GatherKept,
    ReleaseKept,
    ReleaseScattered,
    /// Asks for this many copies of every scattered key.
    ReplicateScattered(u32),
    Sleep(u64),
    WaitAll,
    /// Leaves, abandoning whatever is unanswered.
    Goodbye,
    /// Sends again, under a new id, a request a restarted scheduler lost (as a user would).
    Retry(u64),
}

#[derive(Clone, Debug)]
pub(crate) enum ReqKind {
    Submit { outputs: Vec<Key>, keep: bool },
    Gather { outputs: Vec<Key> },
    Scatter { keys: Vec<Key> },
    Release,
    Replicate { keys: Vec<Key> },
}

#[derive(Debug)]
pub(crate) struct Req {
    pub(crate) kind: ReqKind,
    pub(crate) sent_at: u64,
    pub(crate) answers: u32,
    pub(crate) cancelled: bool,
    /// "values" or the error, once answered.
    pub(crate) answer: Option<String>,
    /// What was sent, to send it again.
    pub(crate) sent: Option<(FromClient, Vec<Frame>)>,
    /// The last progress report (a submit asks for them), to check the next against.
    pub(crate) progress: Option<Progress>,
}

pub(crate) struct SimClient {
    pub(crate) identity: ConnectionId,
    pub(crate) script: VecDeque<Step>,
    pub(crate) sleep_until: Option<u64>,
    pub(crate) next_request: u64,
    pub(crate) requests: BTreeMap<u64, Req>,
    pub(crate) scattered: Vec<Key>,
    pub(crate) kept: Vec<Key>,
    pub(crate) hellos: u32,
    pub(crate) welcomes: u32,
    pub(crate) gone: bool,
    pub(crate) finished: bool,
    /// The shipped client's bookkeeping; each waiting call is known by its request id.
    pub(crate) state: ClientState<Awaited>,
    /// When the client's next timer wake is due.
    pub(crate) timer_at: u64,
}

impl SimClient {
    pub(crate) fn waiting(&self) -> bool {
        self.requests
            .values()
            .any(|r| r.answers == 0 && !r.cancelled)
    }
}

impl Sim {
    pub(crate) fn add_client(&mut self, script: Vec<Step>, start_at: u64) -> usize {
        let c = self.clients.len();
        for step in &script {
            match step {
                Step::Scatter(kvs) => {
                    for (k, v) in kvs {
                        self.refs.scattered(k, v);
                    }
                }
                Step::Submit { graph, .. } => self.refs.learn(graph),
                _ => {}
            }
        }
        self.clients.push(SimClient {
            identity: ConnectionId::from(format!("c{c}")),
            script: script.into(),
            sleep_until: None,
            next_request: 1,
            requests: BTreeMap::new(),
            scattered: Vec::new(),
            kept: Vec::new(),
            hellos: 0,
            welcomes: 0,
            gone: false,
            finished: false,
            state: ClientState::new(
                format!("c{c}"),
                CLIENT_PING_MS,
                ClientConfig::default().scheduler_timeout_ms,
                self.now,
            ),
            timer_at: 0,
        });
        self.wake_client(c, start_at);
        c
    }

    /// Sends a request through the client's state machine (which now waits for its reply).
    pub(crate) fn client_send(&mut self, c: usize, msg: &FromClient, frames: Vec<Frame>) {
        let now = self.now;
        let cl = &mut self.clients[c];
        match request_of(msg) {
            Some(r) => {
                if let Some(req) = cl.requests.get_mut(&r) {
                    req.sent = Some((msg.clone(), frames.clone()));
                }
                let awaited = Awaited::Reply(RequestId(r));
                cl.state
                    .request(now, awaited, msg.clone(), frames, awaited, None);
            }
            None => cl.state.send(msg.clone(), frames),
        }
        self.client_flush(c);
    }

    /// Puts what the client's state machine wants sent on the network.
    pub(crate) fn client_flush(&mut self, c: usize) {
        for (msg, frames) in self.clients[c].state.take_outgoing() {
            let mut all = vec![encode(&msg)];
            all.extend(frames);
            self.send(Ep::Client(c), Ep::Scheduler, Chan::Net, all);
        }
    }

    pub(crate) fn new_request(&mut self, c: usize, kind: ReqKind) -> RequestId {
        let cl = &mut self.clients[c];
        let r = cl.next_request;
        cl.next_request += 1;
        cl.requests.insert(
            r,
            Req {
                kind,
                sent_at: self.now,
                answers: 0,
                cancelled: false,
                answer: None,
                sent: None,
                progress: None,
            },
        );
        self.stats.requests += 1;
        RequestId(r)
    }

    pub(crate) fn client_poll(&mut self, c: usize) -> R {
        if self.clients[c].gone || self.clients[c].finished {
            return Ok(());
        }
        while let Some(step) = self.clients[c].script.front().cloned() {
            match step {
                Step::Sleep(ms) => match self.clients[c].sleep_until {
                    None => {
                        let until = self.now + ms;
                        self.clients[c].sleep_until = Some(until);
                        self.wake_client(c, until);
                        break;
                    }
                    Some(until) if self.now >= until => {
                        self.clients[c].sleep_until = None;
                    }
                    Some(_) => break,
                },
                Step::WaitAll => {
                    if self.clients[c].waiting() {
                        break;
                    }
                }
                Step::Hello => {
                    let now = self.now;
                    let cl = &mut self.clients[c];
                    cl.hellos += 1;
                    let msg = FromClient::Hello {
                        protocol_version: PROTOCOL_VERSION,
                    };
                    let hello = Awaited::Hello;
                    cl.state.request(now, hello, msg, vec![], hello, None);
                    self.client_flush(c);
                }
                Step::Scatter(kvs) => {
                    let keys: Vec<Key> = kvs.iter().map(|(k, _)| k.clone()).collect();
                    let frames = kvs.iter().map(|(_, v)| encode_value(v)).collect();
                    self.clients[c].scattered.extend(keys.iter().cloned());
                    let request = self.new_request(c, ReqKind::Scatter { keys: keys.clone() });
                    self.client_send(c, &FromClient::Scatter { request, keys }, frames);
                }
                Step::Submit {
                    graph,
                    outputs,
                    keep,
                    restrictions,
                } => {
                    let request = self.new_request(
                        c,
                        ReqKind::Submit {
                            outputs: outputs.clone(),
                            keep,
                        },
                    );
                    let msg = FromClient::Submit {
                        request,
                        graph,
                        outputs,
                        keep_results: keep,
                        restrictions,
                    };
                    self.client_send(c, &msg, vec![]);
                    // Every submit asks for its progress: reports are checked as they come.
                    self.client_send(c, &FromClient::WatchProgress { request }, vec![]);
                }
                Step::Cancel => {
                    let target = self.clients[c]
                        .requests
                        .iter()
                        .rev()
                        .find(|(_, r)| {
                            r.answers == 0
                                && !r.cancelled
                                && matches!(r.kind, ReqKind::Submit { keep: false, .. })
                        })
                        .map(|(id, _)| *id);
                    if let Some(request) = target {
                        let cl = &mut self.clients[c];
                        cl.requests.get_mut(&request).unwrap().cancelled = true;
                        cl.state.cancel(Awaited::Reply(RequestId(request)));
                        self.client_flush(c);
                    }
                }
                Step::GatherKept => {
                    let keys = self.clients[c].kept.clone();
                    if !keys.is_empty() {
                        let request = self.new_request(
                            c,
                            ReqKind::Gather {
                                outputs: keys.clone(),
                            },
                        );
                        self.client_send(c, &FromClient::Gather { request, keys }, vec![]);
                    }
                }
                Step::ReplicateScattered(replicas) => {
                    let keys = self.clients[c].scattered.clone();
                    if !keys.is_empty() {
                        let request =
                            self.new_request(c, ReqKind::Replicate { keys: keys.clone() });
                        let msg = FromClient::Replicate {
                            request,
                            keys,
                            replicas,
                        };
                        self.client_send(c, &msg, vec![]);
                    }
                }
                Step::ReleaseKept | Step::ReleaseScattered => {
                    let keys = if matches!(step, Step::ReleaseKept) {
                        std::mem::take(&mut self.clients[c].kept)
                    } else {
                        std::mem::take(&mut self.clients[c].scattered)
                    };
                    if !keys.is_empty() {
                        let request = self.new_request(c, ReqKind::Release);
                        self.client_send(c, &FromClient::Release { request, keys }, vec![]);
                    }
                }
                Step::Retry(old) => {
                    let req = &self.clients[c].requests[&old];
                    let kind = req.kind.clone();
                    let (mut msg, frames) = req.sent.clone().expect("a sent request");
                    let request = self.new_request(c, kind);
                    set_request(&mut msg, request);
                    self.note(|| format!("c{c} sends request {old} again as {request}"));
                    self.client_send(c, &msg, frames);
                }
                Step::Goodbye => {
                    self.client_send(c, &FromClient::Goodbye, vec![]);
                    self.clients[c].gone = true;
                    self.clients[c].script.clear();
                    self.note(|| format!("c{c} leaves"));
                    return Ok(());
                }
            }
            self.clients[c].script.pop_front();
        }
        let cl = &self.clients[c];
        if cl.script.is_empty() && !cl.waiting() {
            self.clients[c].finished = true;
            self.note(|| format!("c{c} is done"));
            return Ok(());
        }
        // Time passes for the client's state machine: pings while it waits.
        let now = self.now;
        self.clients[c].state.tick(now);
        self.client_flush(c);
        self.client_answers(c)?;
        if let Some(at) = self.clients[c].state.next_deadline() {
            let at = at.max(now + 1);
            let cl = &mut self.clients[c];
            if cl.timer_at <= now || at < cl.timer_at {
                cl.timer_at = at;
                self.wake_client(c, at);
            }
        }
        Ok(())
    }

    /// A message from the scheduler reaches the client's state machine.
    pub(crate) fn client_receive(&mut self, c: usize, frames: Vec<Frame>) -> R {
        let now = self.now;
        self.clients[c]
            .state
            .receive(now, frames)
            .map_err(|e| format!("c{c} cannot decode a reply: {e}"))?;
        self.client_answers(c)?;
        self.client_poll(c)
    }

    /// Checks every reply the state machine handed out (to a waiting request or to nobody).
    fn client_answers(&mut self, c: usize) -> R {
        let cl = &mut self.clients[c];
        let mut answers = Vec::new();
        for (awaited, reply) in cl.state.take_replies() {
            let (msg, values) = match (awaited, reply) {
                (_, Ok(r)) => r,
                (Awaited::Reply(request), Err(ClientError::Request(error))) => {
                    (ToClient::Failed { request, error }, vec![])
                }
                (_, Err(e)) => return Err(format!("c{c} {awaited:?} failed: {e}")),
            };
            answers.push((msg, values));
        }
        for u in cl.state.take_unsolicited() {
            answers.push((u.msg, u.frames));
        }
        // Progress only grows, never past a total that does not change.
        let reports = cl.state.take_progress();
        self.stats.progress_reports += reports.len() as u64;
        let cl = &mut self.clients[c];
        for (request, p) in reports {
            let req = cl
                .requests
                .get_mut(&request.0)
                .ok_or_else(|| format!("c{c} got progress of request {request} it never sent"))?;
            if p.done + p.erred > p.total {
                return Err(format!(
                    "c{c} request {request}: progress past its total: {p:?}"
                ));
            }
            if let Some(last) = req.progress {
                if p.total != last.total || p.done < last.done || p.erred < last.erred {
                    return Err(format!(
                        "c{c} request {request}: progress went from {last:?} to {p:?}"
                    ));
                }
            }
            req.progress = Some(p);
        }
        for (msg, values) in answers {
            self.client_answer(c, msg, values)?;
        }
        Ok(())
    }

    /// One answer, checked against what was asked and against the reference.
    fn client_answer(&mut self, c: usize, msg: ToClient, values: Vec<Frame>) -> R {
        self.note(|| format!("scheduler -> c{c}: {msg:?} + {} value(s)", values.len()));
        let request = match &msg {
            ToClient::Pong => return Ok(()),
            ToClient::Welcome {
                protocol_version, ..
            } => {
                let cl = &mut self.clients[c];
                cl.welcomes += 1;
                if cl.welcomes > cl.hellos || *protocol_version != PROTOCOL_VERSION {
                    return Err(format!("c{c}: unexpected {msg:?}"));
                }
                return Ok(());
            }
            ToClient::Values { request, .. }
            | ToClient::Failed { request, .. }
            | ToClient::Scattered { request, .. }
            | ToClient::Done { request } => request.0,
            other => return Err(format!("c{c}: unexpected {other:?}")),
        };
        let what = format!("c{c} request {request}");
        let Some(req) = self.clients[c].requests.get_mut(&request) else {
            return Err(format!(
                "{what}: an answer to a request never made: {msg:?}"
            ));
        };
        if req.answers > 0
            && matches!(
                msg,
                ToClient::Failed {
                    error: RequestError::SchedulerRestarted,
                    ..
                }
            )
        {
            // A ping listed the request while its answer was on the way; the answer came
            // first (one connection is FIFO), so a real client ignores this.
            self.stats.late_restarted += 1;
            return Ok(());
        }
        if let ToClient::Failed {
            error: RequestError::SchedulerRestarted,
            ..
        } = &msg
        {
            // Only for a request the dead scheduler had (or had on the wire) and the new one
            // does not know.
            let sent_at = req.sent_at;
            if !self.sched_restarts.iter().any(|&t| t >= sent_at) {
                return Err(format!("{what}: {msg:?} but no scheduler restarted since"));
            }
            let req = self.clients[c].requests.get_mut(&request).unwrap();
            req.answers += 1;
            req.answer = Some("SchedulerRestarted".into());
            if !req.cancelled {
                self.clients[c].script.push_front(Step::Retry(request));
            }
            return Ok(());
        }
        req.answers += 1;
        if req.answers > 1 {
            return Err(format!("{what}: answered twice; second answer {msg:?}"));
        }
        req.answer = Some(match &msg {
            ToClient::Failed { error, .. } => format!("{error:?}"),
            _ => "values".into(),
        });
        let kind = req.kind.clone();
        match (&kind, msg) {
            (
                ReqKind::Submit { outputs, .. } | ReqKind::Gather { outputs },
                ToClient::Values { positions, .. },
            ) => {
                let mut values: Vec<Value> = values
                    .iter()
                    .map(|f| decode_value(f))
                    .collect::<Result<_, _>>()
                    .map_err(|e| format!("{what}: undecodable value: {e}"))?;
                if !positions.is_empty() {
                    // A key asked for more than once travels once.
                    values = positions
                        .iter()
                        .map(|&i| values.get(i as usize).cloned())
                        .collect::<Option<_>>()
                        .ok_or_else(|| format!("{what}: value position out of range"))?;
                }
                self.check_outcome(&what, outputs, Ok(values))?;
                if let ReqKind::Submit { keep: true, .. } = kind {
                    let cl = &mut self.clients[c];
                    for o in outputs {
                        if !cl.kept.contains(o) {
                            cl.kept.push(o.clone());
                        }
                    }
                }
            }
            (
                ReqKind::Submit { outputs, .. } | ReqKind::Gather { outputs },
                ToClient::Failed { error, .. },
            ) => self.check_outcome(&what, outputs, Err(error))?,
            (ReqKind::Scatter { keys }, ToClient::Scattered { keys: got, .. }) if *keys == got => {}
            (ReqKind::Release, ToClient::Done { .. }) => {}
            (ReqKind::Replicate { .. }, ToClient::Done { .. }) => {}
            (ReqKind::Replicate { keys }, ToClient::Failed { error, .. }) => {
                // Only when a copy was lost before the request arrived.
                let lost = matches!(&error, RequestError::NotFound { key } if keys.contains(key))
                    && (self.workers_lost > 0 || !self.sched_restarts.is_empty());
                if !lost {
                    return Err(format!("{what}: replicate {keys:?} failed: {error:?}"));
                }
            }
            (kind, msg) => return Err(format!("{what}: {msg:?} does not answer {kind:?}")),
        }
        Ok(())
    }

    /// Checks an answer against the reference evaluation.
    pub(crate) fn check_outcome(
        &self,
        what: &str,
        outputs: &[Key],
        got: Result<Vec<Value>, RequestError>,
    ) -> R {
        let mut fails = BTreeSet::new();
        let mut scattered = BTreeSet::new();
        let mut closure = BTreeSet::new();
        for o in outputs {
            let i = &self.refs.info[o];
            fails.extend(i.fails.iter().cloned());
            scattered.extend(i.scattered.iter().cloned());
            closure.extend(i.closure.iter().cloned());
        }
        // Scattered data has no lineage: lost with its workers, or forgotten by a scheduler
        // that restarted without a journal.
        let any_loss = self.workers_lost > 0 || !self.sched_restarts.is_empty();
        let loss_possible = !scattered.is_empty() && any_loss;
        let killed_possible = self.workers_lost > ALLOWED_FAILURES;
        match got {
            Ok(values) => {
                if !fails.is_empty() {
                    return Err(format!(
                        "{what}: got values for {outputs:?}, but {fails:?} fail(s)"
                    ));
                }
                if values.len() != outputs.len() {
                    return Err(format!(
                        "{what}: {} values for {} outputs",
                        values.len(),
                        outputs.len()
                    ));
                }
                for (o, v) in outputs.iter().zip(values) {
                    let expected = self.refs.info[o].value.as_ref();
                    if expected != Some(&v) {
                        return Err(format!(
                            "{what}: {o:?} = {v:?}, but the reference says {expected:?}"
                        ));
                    }
                }
                Ok(())
            }
            Err(error) => {
                let allowed = match &error {
                    // A task that fails by itself may also have been running on workers that
                    // died one after the other before its error got out: then it is blamed.
                    RequestError::Task { key, error } => {
                        (fails.contains(key) && self.refs.errors.get(key) == Some(error))
                            || (error.kind == TaskErrorKind::KilledWorker
                                && killed_possible
                                && closure.contains(key))
                    }
                    RequestError::DataLost { key, .. }
                    | RequestError::Graph(GraphError::MissingKey { key, .. }) => {
                        loss_possible && scattered.contains(key)
                    }
                    // Kept results are not journaled: a gather after a restart may miss them.
                    RequestError::NotFound { key } => {
                        (loss_possible || !self.sched_restarts.is_empty()) && outputs.contains(key)
                    }
                    _ => false,
                };
                if allowed {
                    Ok(())
                } else {
                    let expected: Vec<_> = outputs
                        .iter()
                        .map(|o| (o, self.refs.info[o].value.clone()))
                        .collect();
                    Err(format!(
                        "{what}: unexpected failure {error:?}; the reference says {expected:?}, failing keys {fails:?}, workers lost {}",
                        self.workers_lost
                    ))
                }
            }
        }
    }

    pub(crate) fn clients_finished(&self) -> bool {
        self.clients.iter().all(|c| c.finished || c.gone)
    }

    pub(crate) fn describe_pending(&self) -> String {
        let mut s = String::new();
        for (i, c) in self.clients.iter().enumerate() {
            for (id, r) in &c.requests {
                if r.answers == 0 && !r.cancelled && !c.gone {
                    s += &format!("c{i} request {id} (sent at {}): {:?}; ", r.sent_at, r.kind);
                }
            }
            if !c.finished && !c.gone && !c.script.is_empty() {
                s += &format!("c{i} still has {} step(s) to do; ", c.script.len());
            }
        }
        let status = self.sched.status();
        s += &format!(
            "scheduler: {} tasks, {} processing, {} in memory, workers {:?}",
            status.tasks,
            status.processing,
            status.in_memory,
            status
                .workers
                .iter()
                .map(|w| (&w.name, w.processing, w.keys.len()))
                .collect::<Vec<_>>()
        );
        s
    }
}

pub(crate) fn request_of(m: &FromClient) -> Option<u64> {
    match m {
        FromClient::Submit { request, .. }
        | FromClient::Gather { request, .. }
        | FromClient::Scatter { request, .. }
        | FromClient::Release { request, .. }
        | FromClient::Replicate { request, .. } => Some(request.0),
        _ => None,
    }
}

pub(crate) fn set_request(m: &mut FromClient, new: RequestId) {
    match m {
        FromClient::Submit { request, .. }
        | FromClient::Gather { request, .. }
        | FromClient::Scatter { request, .. }
        | FromClient::Release { request, .. }
        | FromClient::Replicate { request, .. } => *request = new,
        other => panic!("not a request: {other:?}"),
    }
}
