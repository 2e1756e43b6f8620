//! Part: the link to the scheduler. When we last heard from it (and so whether it is gone),
//! when the next heartbeat is due, whether a registration is under way (so an "unknown worker"
//! answer to each heartbeat does not register again each time), and the largest result that
//! can travel once the scheduler has said its own limit.

use log::debug;

use super::ShutdownReason;

/// An "unknown worker" answer within this long of registering again is not answered with
/// yet another registration.
const REGISTER_AGAIN_AFTER_MS: u64 = 1000;

pub(super) struct SchedulerLink {
    heartbeat_interval_ms: u64,
    death_timeout_ms: u64,
    /// Our own `max_message_bytes`.
    own_bytes_max: u64,
    next_heartbeat_ms: u64,
    registering_since: Option<u64>,
    /// 0 until the first registration.
    last_heard_ms: u64,
    /// The largest result that can travel: the smaller of our own and the scheduler's limit.
    result_bytes_max: u64,
}

impl SchedulerLink {
    pub(super) fn new(
        heartbeat_interval_ms: u64,
        death_timeout_ms: u64,
        max_message_bytes: u64,
    ) -> SchedulerLink {
        SchedulerLink {
            heartbeat_interval_ms,
            death_timeout_ms,
            own_bytes_max: max_message_bytes,
            next_heartbeat_ms: 0,
            registering_since: None,
            last_heard_ms: 0,
            result_bytes_max: max_message_bytes,
        }
    }

    pub(super) fn result_bytes_max(&self) -> u64 {
        self.result_bytes_max
    }

    /// A registration leaves at `now_ms`: it counts as a heartbeat, and the death timeout
    /// starts with the first one.
    pub(super) fn registering(&mut self, now_ms: u64) {
        if self.last_heard_ms == 0 {
            self.last_heard_ms = now_ms;
        }
        self.next_heartbeat_ms = now_ms + self.heartbeat_interval_ms;
    }

    /// The scheduler said something at `now_ms`.
    pub(super) fn heard(&mut self, now_ms: u64) {
        self.last_heard_ms = now_ms;
    }

    /// The scheduler accepted the registration, announcing its limit (0: none).
    pub(super) fn registered(&mut self, scheduler_bytes_max: u64) {
        self.registering_since = None;
        let theirs = if scheduler_bytes_max == 0 {
            u64::MAX
        } else {
            scheduler_bytes_max
        };
        self.result_bytes_max = self.own_bytes_max.min(theirs);
        debug!(
            "registered with the scheduler; results up to {} bytes",
            self.result_bytes_max
        )
    }

    /// The scheduler does not know us: whether to register again now (not if we just did).
    pub(super) fn register_again(&mut self, now_ms: u64) -> bool {
        let again = self
            .registering_since
            .is_none_or(|t| now_ms >= t + REGISTER_AGAIN_AFTER_MS);
        if again {
            self.registering_since = Some(now_ms);
        }
        again
    }

    /// Why to stop, if the scheduler has been silent for longer than the death timeout.
    pub(super) fn gone(&self, now_ms: u64) -> Option<ShutdownReason> {
        let silent = now_ms.saturating_sub(self.last_heard_ms);
        (silent > self.death_timeout_ms).then_some(ShutdownReason::SchedulerGone {
            silent_ms: silent,
            death_timeout_ms: self.death_timeout_ms,
        })
    }

    /// Whether a heartbeat is due at `now_ms` (the next one is then due an interval later).
    pub(super) fn heartbeat_due(&mut self, now_ms: u64) -> bool {
        let due = now_ms >= self.next_heartbeat_ms;
        if due {
            self.next_heartbeat_ms = now_ms + self.heartbeat_interval_ms;
        }
        due
    }

    pub(super) fn next_heartbeat_ms(&self) -> u64 {
        self.next_heartbeat_ms
    }
}
