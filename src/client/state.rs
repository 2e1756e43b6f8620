//! The client's bookkeeping without its socket or its clock: requests waiting for a reply (by
//! id), pings while any waits, a scheduler silent too long, per-request timeouts. The IO thread
//! (`io.rs`) only moves bytes and reads the clock; the simulation (`tests/simulation`) drives
//! the same type on its virtual clock. Time comes in as `now_ms`; `next_deadline` says when
//! to call `tick` next. Pure: no socket, thread, channel or clock.

use std::collections::BTreeMap;

use super::error::ClientError;
use crate::protocol::codec::{decode, DecodeError};
use crate::protocol::{Frame, FromClient, RequestId, ToClient};

/// What a waiting call gets: the reply and its value frames, or why there is none. A
/// `ToClient::Failed` reply arrives as `ClientError::Request`.
pub type Reply = Result<(ToClient, Vec<Frame>), ClientError>;

/// How far a computation is, as its `ToClient::Progress` says (`Client::get_with_progress`):
/// of its `total` tasks (those it needs, the ones already in memory when it started
/// included), `done` are in memory and `erred` failed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    pub done: u64,
    pub total: u64,
    pub erred: u64,
}

/// What a waiting call waits for: the `Welcome` that answers the hello (which carries no
/// request id), or the reply to one of the client's requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Awaited {
    Hello,
    Reply(RequestId),
}

#[derive(Debug)]
struct Pending<W> {
    waiter: W,
    /// Fail it with `Timeout` (and cancel it on the scheduler) at this time.
    deadline_ms: Option<u64>,
    timeout_ms: u64,
}

/// A reply no waiting request was there for (answered already, cancelled, timed out, never
/// asked), or an answer that belongs to no request (`Rejected` with no hello pending): the IO
/// thread logs it, the simulation checks it.
#[derive(Debug)]
pub struct Unsolicited {
    /// What it answers; `None` for an answer that belongs to no request.
    pub answers: Option<Awaited>,
    pub msg: ToClient,
    pub frames: Vec<Frame>,
}

/// The client's state; `W` is what a waiting call is reached through (a channel for the real
/// client, a request id in the simulation).
#[derive(Debug)]
pub struct ClientState<W> {
    address: String,
    ping_interval_ms: u64,
    scheduler_timeout_ms: u64,
    pending: BTreeMap<Awaited, Pending<W>>,
    last_heard_ms: u64,
    /// A request started the wait (nothing waited before it) and has not been handed to the
    /// socket yet: its silence counts from `sent`, not from when it was asked (encoding a big
    /// request takes time the scheduler cannot answer in).
    wait_unsent: bool,
    last_ping_ms: u64,
    outgoing: Vec<(FromClient, Vec<Frame>)>,
    replies: Vec<(W, Reply)>,
    unsolicited: Vec<Unsolicited>,
    /// Progress reports for requests still waiting, oldest first.
    progress: Vec<(RequestId, Progress)>,
}

impl<W> ClientState<W> {
    /// `ping_interval_ms`: how often to ping the scheduler while requests wait;
    /// `scheduler_timeout_ms`: a scheduler silent this long (pings unanswered) is gone.
    pub fn new(
        address: impl Into<String>,
        ping_interval_ms: u64,
        scheduler_timeout_ms: u64,
        now_ms: u64,
    ) -> ClientState<W> {
        ClientState {
            address: address.into(),
            ping_interval_ms,
            scheduler_timeout_ms,
            pending: BTreeMap::new(),
            last_heard_ms: now_ms,
            wait_unsent: false,
            last_ping_ms: now_ms,
            outgoing: Vec::new(),
            replies: Vec::new(),
            unsolicited: Vec::new(),
            progress: Vec::new(),
        }
    }

    /// Sends a request (or the hello) whose reply `waiter` waits for, failed with `Timeout`
    /// (and a request cancelled on the scheduler) after `timeout_ms` if given.
    pub fn request(
        &mut self,
        now_ms: u64,
        request: Awaited,
        msg: FromClient,
        frames: Vec<Frame>,
        waiter: W,
        timeout_ms: Option<u64>,
    ) {
        if self.pending.is_empty() {
            // Silence while nothing was asked means nothing: start counting now (and again
            // once it is sent: `sent`).
            self.last_heard_ms = now_ms;
            self.wait_unsent = true;
        }
        self.pending.insert(
            request,
            Pending {
                waiter,
                deadline_ms: timeout_ms.map(|t| now_ms.saturating_add(t)),
                timeout_ms: timeout_ms.unwrap_or(0),
            },
        );
        self.outgoing.push((msg, frames));
    }

    /// Sends a message no reply is expected to (goodbye, cancel).
    pub fn send(&mut self, msg: FromClient, frames: Vec<Frame>) {
        self.outgoing.push((msg, frames));
    }

    /// Gives up on a request (the scheduler is told to drop it) or on the hello; returns its
    /// waiter if it still waited.
    pub fn cancel(&mut self, awaited: Awaited) -> Option<W> {
        if let Awaited::Reply(request) = awaited {
            self.outgoing.push((FromClient::Cancel { request }, vec![]));
        }
        self.pending.remove(&awaited).map(|p| p.waiter)
    }

    /// Whether the hello still waits for its `Welcome`.
    pub fn awaits_hello(&self) -> bool {
        self.pending.contains_key(&Awaited::Hello)
    }

    /// The ids of the requests waiting for a reply (the hello aside).
    pub fn waiting(&self) -> impl Iterator<Item = RequestId> + '_ {
        self.pending.keys().filter_map(|a| match a {
            Awaited::Reply(r) => Some(*r),
            Awaited::Hello => None,
        })
    }

    /// A message from the scheduler: a reply goes to its waiter (`take_replies`), a reply
    /// nobody waits for to `take_unsolicited`. An undecodable message is dropped (the error
    /// says why); it still shows the scheduler is alive.
    pub fn receive(&mut self, now_ms: u64, mut frames: Vec<Frame>) -> Result<(), DecodeError> {
        self.last_heard_ms = now_ms;
        if frames.is_empty() {
            return Ok(());
        }
        let values = frames.split_off(1);
        let msg: ToClient = decode(&frames[0])?;
        if let ToClient::Progress {
            request,
            done,
            total,
            erred,
        } = msg
        {
            // Not the answer: the request still waits. Kept only while it does.
            if self.pending.contains_key(&Awaited::Reply(request)) {
                let progress = Progress { done, total, erred };
                self.progress.push((request, progress));
            }
            return Ok(());
        }
        let awaited = match (&msg, msg.request()) {
            (ToClient::Pong, _) => return Ok(()),
            (_, Some(request)) => Awaited::Reply(request),
            // `Welcome`, or `Rejected`, which answers no request: it fails the hello if one
            // waits (a refused hello, or one the scheduler could not read), else it is logged.
            (_, None) => Awaited::Hello,
        };
        match self.pending.remove(&awaited) {
            Some(p) => {
                let reply = match msg {
                    ToClient::Failed { error, .. } | ToClient::Rejected { error } => {
                        Err(ClientError::Request(error))
                    }
                    msg => Ok((msg, values)),
                };
                self.replies.push((p.waiter, reply));
            }
            None => self.unsolicited.push(Unsolicited {
                answers: match msg {
                    ToClient::Rejected { .. } => None,
                    _ => Some(awaited),
                },
                msg,
                frames: values,
            }),
        }
        Ok(())
    }

    /// Lets time pass: pings while requests wait, fails them all when the scheduler has been
    /// silent too long, fails (and cancels) requests past their timeout.
    pub fn tick(&mut self, now_ms: u64) {
        let expired: Vec<Awaited> = self
            .pending
            .iter()
            .filter(|(_, p)| p.deadline_ms.is_some_and(|d| now_ms >= d))
            .map(|(r, _)| *r)
            .collect();
        for request in expired {
            let after_ms = self.pending[&request].timeout_ms;
            if let Some(waiter) = self.cancel(request) {
                self.replies
                    .push((waiter, Err(ClientError::Timeout { after_ms })));
            }
        }
        if !self.pending.is_empty() && now_ms >= self.last_ping_ms + self.ping_interval_ms {
            let pending = self.waiting().collect();
            self.outgoing.push((FromClient::Ping { pending }, vec![]));
            self.last_ping_ms = now_ms;
        }
        // The hello has its own connect timeout: only established requests fail here, so a
        // failed connect reports one clear error.
        let silent_ms = now_ms.saturating_sub(self.last_heard_ms);
        if self.established() && silent_ms > self.scheduler_timeout_ms {
            log::warn!(
                "scheduler at {} silent for {silent_ms} ms: failing {} request(s)",
                self.address,
                self.pending.len()
            );
            self.pending.remove(&Awaited::Hello);
            for (_, p) in std::mem::take(&mut self.pending) {
                let error = ClientError::SchedulerLost {
                    address: self.address.clone(),
                    silent_ms,
                };
                self.replies.push((p.waiter, Err(error)));
            }
        }
    }

    fn established(&self) -> bool {
        self.pending.keys().any(|a| *a != Awaited::Hello)
    }

    /// When `tick` has something to do next, if anything waits.
    pub fn next_deadline(&self) -> Option<u64> {
        if self.pending.is_empty() {
            return None;
        }
        let mut at = self.last_ping_ms + self.ping_interval_ms;
        if self.established() {
            at = at.min(self.last_heard_ms + self.scheduler_timeout_ms + 1);
        }
        for p in self.pending.values() {
            if let Some(d) = p.deadline_ms {
                at = at.min(d);
            }
        }
        Some(at)
    }

    /// Messages to send to the scheduler, in order.
    pub fn take_outgoing(&mut self) -> Vec<(FromClient, Vec<Frame>)> {
        std::mem::take(&mut self.outgoing)
    }

    /// The messages taken by `take_outgoing` were handed to the socket at `now_ms`. If one of
    /// them started the wait, the scheduler's silence counts from here: it could not answer a
    /// request the client was still encoding. Only that first request moves the count, so a
    /// client sending request after request to a scheduler that is gone still finds it gone.
    pub fn sent(&mut self, now_ms: u64) {
        if std::mem::take(&mut self.wait_unsent) {
            self.last_heard_ms = self.last_heard_ms.max(now_ms);
            self.last_ping_ms = self.last_ping_ms.max(now_ms);
        }
    }

    /// Replies for waiting calls.
    pub fn take_replies(&mut self) -> Vec<(W, Reply)> {
        std::mem::take(&mut self.replies)
    }

    /// Progress reports of waiting requests (`WatchProgress`), oldest first.
    pub fn take_progress(&mut self) -> Vec<(RequestId, Progress)> {
        std::mem::take(&mut self.progress)
    }

    /// The waiter of a request that still waits.
    pub fn waiter(&self, awaited: Awaited) -> Option<&W> {
        self.pending.get(&awaited).map(|p| &p.waiter)
    }

    /// Replies nobody waited for.
    pub fn take_unsolicited(&mut self) -> Vec<Unsolicited> {
        std::mem::take(&mut self.unsolicited)
    }

    /// The client stops: every waiting call fails with `Closed`.
    pub fn close(&mut self) -> Vec<(W, Reply)> {
        let mut replies = self.take_replies();
        for (_, p) in std::mem::take(&mut self.pending) {
            replies.push((p.waiter, Err(ClientError::Closed)));
        }
        replies
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::codec::encode;
    use crate::protocol::RequestError;

    fn state() -> ClientState<&'static str> {
        ClientState::new("tcp://s", 100, 1_000, 0)
    }

    fn status(request: u64) -> FromClient {
        FromClient::Status {
            request: RequestId(request),
        }
    }

    fn hello() -> FromClient {
        FromClient::Hello {
            protocol_version: crate::protocol::PROTOCOL_VERSION,
        }
    }

    fn reply(request: u64) -> Awaited {
        Awaited::Reply(RequestId(request))
    }

    #[test]
    fn silence_counts_from_when_the_first_request_was_sent_not_asked() {
        let mut s = state();
        s.request(0, reply(1), status(1), vec![], "a", None);
        // Encoding the request took 900 ms: the scheduler could not answer meanwhile.
        s.take_outgoing();
        s.sent(900);
        s.tick(1_800);
        assert!(s.take_replies().is_empty());
        // A second request sent while the first waits moves nothing: silence since 900 ms.
        s.request(1_850, reply(2), status(2), vec![], "b", None);
        s.take_outgoing();
        s.sent(1_900);
        s.tick(1_900);
        assert!(s.take_replies().is_empty());
        assert_eq!(s.next_deadline(), Some(900 + 1_000 + 1));
        s.tick(1_901);
        let lost: Vec<_> = s.take_replies();
        assert_eq!(lost.len(), 2);
        assert!(lost.iter().all(|(_, r)| matches!(
            r,
            Err(ClientError::SchedulerLost {
                silent_ms: 1_001,
                ..
            })
        )));
    }

    #[test]
    fn a_reply_goes_to_its_waiter_and_a_second_one_is_unsolicited() {
        let mut s = state();
        s.request(0, reply(1), status(1), vec![], "a", None);
        assert_eq!(s.take_outgoing(), vec![(status(1), vec![])]);
        s.receive(
            5,
            vec![encode(&ToClient::Done {
                request: RequestId(1),
            })],
        )
        .unwrap();
        s.receive(
            6,
            vec![encode(&ToClient::Done {
                request: RequestId(1),
            })],
        )
        .unwrap();
        let replies = s.take_replies();
        assert!(matches!(
            replies[..],
            [(
                "a",
                Ok((
                    ToClient::Done {
                        request: RequestId(1)
                    },
                    _
                ))
            )]
        ));
        let u = s.take_unsolicited();
        assert_eq!(u.len(), 1);
        assert_eq!(u[0].answers, Some(reply(1)));
        assert_eq!(s.next_deadline(), None, "nothing waits");
    }

    #[test]
    fn a_failed_request_arrives_as_a_request_error() {
        let mut s = state();
        s.request(0, reply(3), status(3), vec![], "a", None);
        let failed = ToClient::Failed {
            request: RequestId(3),
            error: RequestError::SchedulerRestarted,
        };
        s.receive(1, vec![encode(&failed)]).unwrap();
        assert!(matches!(
            s.take_replies()[..],
            [(
                "a",
                Err(ClientError::Request(RequestError::SchedulerRestarted))
            )]
        ));
    }

    #[test]
    fn pings_while_waiting_then_fails_requests_of_a_silent_scheduler() {
        let mut s = state();
        s.request(0, Awaited::Hello, hello(), vec![], "hello", None);
        s.request(0, reply(7), status(7), vec![], "b", None);
        s.take_outgoing();
        assert_eq!(s.next_deadline(), Some(100));
        s.tick(100);
        assert_eq!(
            s.take_outgoing(),
            vec![(
                FromClient::Ping {
                    pending: vec![RequestId(7)]
                },
                vec![]
            )],
            "the hello is not listed"
        );
        s.receive(150, vec![encode(&ToClient::Pong)]).unwrap();
        s.tick(1_150);
        assert!(s.take_replies().is_empty(), "silent for exactly the limit");
        s.tick(1_151);
        let replies = s.take_replies();
        assert!(matches!(
            replies[..],
            [(
                "b",
                Err(ClientError::SchedulerLost {
                    silent_ms: 1_001,
                    ..
                })
            )]
        ));
        assert_eq!(s.waiting().count(), 0);
        assert!(!s.awaits_hello(), "the hello is dropped too");
    }

    #[test]
    fn a_hello_alone_is_never_failed_for_silence() {
        let mut s = state();
        s.request(0, Awaited::Hello, hello(), vec![], "hello", None);
        s.tick(10_000);
        assert!(s.take_replies().is_empty());
        assert!(s.awaits_hello());
    }

    #[test]
    fn a_request_past_its_timeout_fails_and_is_cancelled() {
        let mut s = state();
        s.request(10, reply(4), status(4), vec![], "c", Some(50));
        s.take_outgoing();
        assert_eq!(s.next_deadline(), Some(60));
        s.tick(60);
        assert!(matches!(
            s.take_replies()[..],
            [("c", Err(ClientError::Timeout { after_ms: 50 }))]
        ));
        assert_eq!(
            s.take_outgoing(),
            vec![(
                FromClient::Cancel {
                    request: RequestId(4)
                },
                vec![]
            )]
        );
    }

    #[test]
    fn a_rejection_fails_the_hello() {
        let mut s = state();
        s.request(0, Awaited::Hello, hello(), vec![], "hello", None);
        let error = RequestError::Protocol {
            message: "protocol version 1 is not supported".into(),
        };
        s.receive(
            1,
            vec![encode(&ToClient::Rejected {
                error: error.clone(),
            })],
        )
        .unwrap();
        let replies = s.take_replies();
        assert!(
            matches!(&replies[..], [("hello", Err(ClientError::Request(e)))] if *e == error),
            "{replies:?}"
        );
        assert!(!s.awaits_hello());
    }

    #[test]
    fn a_rejection_with_no_hello_waiting_fails_no_request() {
        let mut s = state();
        s.request(0, reply(1), status(1), vec![], "a", None);
        let error = RequestError::Protocol {
            message: "malformed message".into(),
        };
        s.receive(1, vec![encode(&ToClient::Rejected { error })])
            .unwrap();
        assert!(s.take_replies().is_empty());
        assert_eq!(s.waiting().collect::<Vec<_>>(), vec![RequestId(1)]);
        let u = s.take_unsolicited();
        assert!(
            matches!(
                &u[..],
                [Unsolicited {
                    answers: None,
                    msg: ToClient::Rejected { .. },
                    ..
                }]
            ),
            "{u:?}"
        );
    }

    #[test]
    fn a_hello_past_its_timeout_fails_and_sends_no_cancel() {
        let mut s = state();
        s.request(0, Awaited::Hello, hello(), vec![], "hello", Some(50));
        s.take_outgoing();
        s.tick(50);
        assert!(matches!(
            s.take_replies()[..],
            [("hello", Err(ClientError::Timeout { after_ms: 50 }))]
        ));
        assert!(
            s.take_outgoing().is_empty(),
            "the hello has no request id to cancel"
        );
    }

    #[test]
    fn closing_fails_every_waiting_call() {
        let mut s = state();
        s.request(0, reply(1), status(1), vec![], "a", None);
        s.request(0, reply(2), status(2), vec![], "b", None);
        let closed = s.close();
        assert_eq!(closed.len(), 2);
        assert!(closed
            .iter()
            .all(|(_, r)| matches!(r, Err(ClientError::Closed))));
    }

    #[test]
    fn progress_reports_leave_the_request_waiting_and_stray_ones_are_dropped() {
        let mut s = state();
        s.request(0, reply(1), status(1), vec![], "a", None);
        let progress = |request: u64, done: u64| {
            vec![encode(&ToClient::Progress {
                request: RequestId(request),
                done,
                total: 10,
                erred: 0,
            })]
        };
        s.receive(5, progress(1, 3)).unwrap();
        s.receive(6, progress(7, 3)).unwrap(); // no such request
        let p = Progress {
            done: 3,
            total: 10,
            erred: 0,
        };
        assert_eq!(s.take_progress(), vec![(RequestId(1), p)]);
        assert!(s.take_replies().is_empty(), "still waiting for its answer");
        assert!(s.take_unsolicited().is_empty());
        assert_eq!(s.waiter(reply(1)), Some(&"a"));
        s.receive(
            7,
            vec![encode(&ToClient::Done {
                request: RequestId(1),
            })],
        )
        .unwrap();
        assert_eq!(s.take_replies().len(), 1);
        // A report after the answer is nobody's.
        s.receive(8, progress(1, 10)).unwrap();
        assert!(s.take_progress().is_empty());
        assert!(s.take_unsolicited().is_empty());
    }
}
