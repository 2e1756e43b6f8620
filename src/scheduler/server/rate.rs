//! Per-connection message rate limits of the scheduler's ports: a token bucket per routing
//! identity, kept in a bounded table, and at most one log line per connection per second.
//! Pure: the time is an input (`now_ms`); the socket threads (`sockets.rs`) only call it.

use std::collections::HashMap;

/// How many messages one connection may send: `max_messages_per_second` on average, and up to
/// `burst_messages` at once after a quiet period.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RateLimit {
    pub max_messages_per_second: u32,
    pub burst_messages: u32,
}

/// A connection may send this many seconds' worth of its rate at once.
pub(crate) const BURST_SECONDS: u32 = 2;

impl RateLimit {
    /// `max_messages_per_second` (at least 1) with a burst of `BURST_SECONDS` of it.
    pub(crate) fn per_second(max_messages_per_second: u32) -> RateLimit {
        let rate = max_messages_per_second.max(1);
        RateLimit {
            max_messages_per_second: rate,
            burst_messages: rate.saturating_mul(BURST_SECONDS),
        }
    }
}

/// Connections (routing identities) a table tracks at most. A flood of new identities cannot
/// grow it past this: identities whose bucket has refilled are forgotten first (forgetting
/// them changes nothing: a new entry starts full), then the least recently seen. A forgotten
/// identity that comes back starts with a full bucket. 4,096 entries of at most 255-byte
/// identities stay near a megabyte.
pub(crate) const TRACKED_CONNECTIONS_MAX: usize = 4_096;

/// At most one log line per connection in this many milliseconds.
pub(crate) const LOG_INTERVAL_MS: u64 = 1_000;

/// Tokens are counted in thousandths of a message, so the refill of one millisecond
/// (`max_messages_per_second` thousandths) is exact.
const MESSAGE: u64 = 1_000;

/// What to do with one message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Within the limit: handle it.
    Admit,
    /// Past the limit: drop it (answering with an error where the protocol has one). `log`
    /// is `Some(n)` when a warning is due — at most one per connection per `LOG_INTERVAL_MS`
    /// — with `n` the messages of this connection dropped since its last warning, this one
    /// included.
    Drop { log: Option<u64> },
}

#[derive(Clone, Debug)]
struct Bucket {
    /// Thousandths of a message this connection may still send.
    tokens: u64,
    /// When `tokens` was last brought up to date; also when the connection was last seen.
    updated_ms: u64,
    /// When the last warning about this connection was logged.
    logged_ms: Option<u64>,
    /// Messages dropped since that warning.
    dropped: u64,
    /// Other warnings (`may_log`) left out since that warning.
    unlogged: u64,
}

/// The buckets of one port's connections.
#[derive(Debug)]
pub(crate) struct RateTable {
    limit: RateLimit,
    max_connections: usize,
    /// std's SipHash with a random key, not FxHash: identities are chosen by peers, so the
    /// table must not be open to hash flooding.
    buckets: HashMap<Vec<u8>, Bucket>,
}

impl RateTable {
    /// A table applying `limit` to each of at most `max_connections` (at least 4) identities.
    pub(crate) fn new(limit: RateLimit, max_connections: usize) -> RateTable {
        RateTable {
            limit,
            max_connections: max_connections.max(4),
            buckets: HashMap::new(),
        }
    }

    pub(crate) fn limit(&self) -> RateLimit {
        self.limit
    }

    /// Identities tracked now.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.buckets.len()
    }

    fn capacity(&self) -> u64 {
        u64::from(self.limit.burst_messages.max(1)) * MESSAGE
    }

    /// Takes one message of `identity` at `now_ms` and says whether it is within the limit.
    pub(crate) fn admit(&mut self, identity: &[u8], now_ms: u64) -> Verdict {
        let capacity = self.capacity();
        let rate = u64::from(self.limit.max_messages_per_second);
        if !self.buckets.contains_key(identity) {
            if self.buckets.len() >= self.max_connections {
                self.make_room(now_ms);
            }
            self.buckets.insert(
                identity.to_vec(),
                Bucket {
                    tokens: capacity,
                    updated_ms: now_ms,
                    logged_ms: None,
                    dropped: 0,
                    unlogged: 0,
                },
            );
        }
        let bucket = self
            .buckets
            .get_mut(identity)
            .expect("inserted just above if it was missing");
        // A time before this bucket's last one (never from a monotonic clock) counts as that.
        let now_ms = now_ms.max(bucket.updated_ms);
        let elapsed_ms = now_ms - bucket.updated_ms;
        bucket.tokens = bucket
            .tokens
            .saturating_add(elapsed_ms.saturating_mul(rate))
            .min(capacity);
        bucket.updated_ms = now_ms;
        if bucket.tokens >= MESSAGE {
            bucket.tokens -= MESSAGE;
            return Verdict::Admit;
        }
        bucket.dropped += 1;
        let due = bucket
            .logged_ms
            .is_none_or(|at| now_ms.saturating_sub(at) >= LOG_INTERVAL_MS);
        if !due {
            return Verdict::Drop { log: None };
        }
        bucket.logged_ms = Some(now_ms);
        Verdict::Drop {
            log: Some(std::mem::take(&mut bucket.dropped)),
        }
    }

    /// Whether another warning about `identity` (a malformed message) may be logged at
    /// `now_ms`: the same limit of one line per connection per `LOG_INTERVAL_MS` as the
    /// drops. `Some(n)`: log it, saying `n` such warnings were left out since the last line.
    /// Call after `admit` for the same message (an identity the table does not know may log).
    pub(crate) fn may_log(&mut self, identity: &[u8], now_ms: u64) -> Option<u64> {
        let Some(bucket) = self.buckets.get_mut(identity) else {
            return Some(0);
        };
        let now_ms = now_ms.max(bucket.updated_ms);
        let due = bucket
            .logged_ms
            .is_none_or(|at| now_ms.saturating_sub(at) >= LOG_INTERVAL_MS);
        if !due {
            bucket.unlogged += 1;
            return None;
        }
        bucket.logged_ms = Some(now_ms);
        Some(std::mem::take(&mut bucket.unlogged))
    }

    /// Frees at least a quarter of the table: first the identities whose bucket would be full
    /// by now (idle for long enough: forgetting them loses nothing), then, if that is not
    /// enough, the least recently seen. Each call frees a quarter of the table, so a flood of
    /// new identities costs O(1) per identity on average.
    fn make_room(&mut self, now_ms: u64) {
        let capacity = self.capacity();
        let rate = u64::from(self.limit.max_messages_per_second);
        self.buckets.retain(|_, b| {
            let refill = now_ms.saturating_sub(b.updated_ms).saturating_mul(rate);
            b.tokens.saturating_add(refill) < capacity
        });
        let keep = self.max_connections - self.max_connections / 4;
        if self.buckets.len() <= keep {
            return;
        }
        let mut seen: Vec<u64> = self.buckets.values().map(|b| b.updated_ms).collect();
        let evict = self.buckets.len() - keep;
        // The `evict`-th smallest time: everything seen at or before it goes (ties may take a
        // few more, which only frees more room).
        let (_, cutoff, _) = seen.select_nth_unstable(evict - 1);
        let cutoff = *cutoff;
        self.buckets.retain(|_, b| b.updated_ms > cutoff);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(rate: u32, burst: u32) -> RateTable {
        RateTable::new(
            RateLimit {
                max_messages_per_second: rate,
                burst_messages: burst,
            },
            TRACKED_CONNECTIONS_MAX,
        )
    }

    fn admitted(t: &mut RateTable, id: &[u8], now_ms: u64, n: usize) -> usize {
        (0..n)
            .filter(|_| t.admit(id, now_ms) == Verdict::Admit)
            .count()
    }

    #[test]
    fn a_burst_is_admitted_then_the_rate() {
        let mut t = table(10, 20);
        assert_eq!(admitted(&mut t, b"a", 0, 100), 20, "the burst");
        assert_eq!(
            admitted(&mut t, b"a", 99, 10),
            0,
            "not yet one message's worth"
        );
        assert_eq!(
            admitted(&mut t, b"a", 100, 10),
            1,
            "100 ms at 10/s: one message"
        );
        assert_eq!(
            admitted(&mut t, b"a", 1_100, 100),
            10,
            "one second: ten messages"
        );
        // A long pause refills up to the burst, no further.
        assert_eq!(admitted(&mut t, b"a", 1_000_000, 100), 20);
    }

    #[test]
    fn a_steady_sender_within_the_rate_is_never_dropped() {
        let mut t = table(1_000, 2_000);
        // 1,000 messages per second, one per millisecond, for a minute.
        for ms in 0..60_000 {
            assert_eq!(t.admit(b"steady", ms), Verdict::Admit, "at {ms} ms");
        }
    }

    #[test]
    fn one_connection_past_its_limit_does_not_limit_another() {
        let mut t = table(5, 5);
        assert_eq!(admitted(&mut t, b"flood", 0, 1_000), 5);
        assert_eq!(admitted(&mut t, b"calm", 0, 5), 5);
    }

    #[test]
    fn drops_are_logged_at_most_once_per_second_with_their_count() {
        let mut t = table(1, 1);
        assert_eq!(t.admit(b"a", 0), Verdict::Admit);
        assert_eq!(t.admit(b"a", 0), Verdict::Drop { log: Some(1) });
        for ms in [1, 10, 500, 999] {
            assert_eq!(t.admit(b"a", ms), Verdict::Drop { log: None }, "at {ms}");
        }
        // 1,000 ms later the next drop logs, counting the four silent ones and itself. (At
        // 1,000 ms one message's worth came back: that one is admitted.)
        assert_eq!(t.admit(b"a", 1_000), Verdict::Admit);
        assert_eq!(t.admit(b"a", 1_000), Verdict::Drop { log: Some(5) });
        assert_eq!(t.admit(b"a", 1_001), Verdict::Drop { log: None });
        // Another connection has its own log interval.
        assert_eq!(t.admit(b"b", 1_001), Verdict::Admit);
        assert_eq!(t.admit(b"b", 1_001), Verdict::Drop { log: Some(1) });
    }

    #[test]
    fn other_warnings_share_the_one_line_per_second() {
        let mut t = table(100, 100);
        assert_eq!(t.admit(b"a", 0), Verdict::Admit);
        assert_eq!(t.may_log(b"a", 0), Some(0));
        for ms in [0, 1, 999] {
            assert_eq!(t.admit(b"a", ms), Verdict::Admit);
            assert_eq!(t.may_log(b"a", ms), None, "at {ms}");
        }
        assert_eq!(t.may_log(b"a", 1_000), Some(3), "the three left out");
        assert_eq!(t.may_log(b"a", 1_500), None);
        // A drop does not log within the same second either.
        let mut t = table(1, 1);
        assert_eq!(t.admit(b"b", 0), Verdict::Admit);
        assert_eq!(t.may_log(b"b", 0), Some(0));
        assert_eq!(t.admit(b"b", 10), Verdict::Drop { log: None });
        assert_eq!(t.admit(b"b", 1_000), Verdict::Admit);
        assert_eq!(t.admit(b"b", 1_000), Verdict::Drop { log: Some(2) });
        // An identity the table does not know (never the case after `admit`) may log.
        assert_eq!(t.may_log(b"unknown", 0), Some(0));
    }

    #[test]
    fn time_going_backwards_neither_refills_nor_panics() {
        let mut t = table(10, 1);
        assert_eq!(t.admit(b"a", 5_000), Verdict::Admit);
        assert_eq!(t.admit(b"a", 1_000), Verdict::Drop { log: Some(1) });
        assert_eq!(t.admit(b"a", 5_099), Verdict::Drop { log: None });
        assert_eq!(t.admit(b"a", 5_100), Verdict::Admit);
    }

    #[test]
    fn huge_rates_and_times_saturate() {
        let mut t = table(u32::MAX, u32::MAX);
        assert_eq!(t.admit(b"a", 0), Verdict::Admit);
        assert_eq!(t.admit(b"a", u64::MAX), Verdict::Admit);
        assert_eq!(RateLimit::per_second(u32::MAX).burst_messages, u32::MAX);
        assert_eq!(
            RateLimit::per_second(0),
            RateLimit {
                max_messages_per_second: 1,
                burst_messages: BURST_SECONDS
            }
        );
    }

    #[test]
    fn a_flood_of_new_identities_stays_within_the_table_bound() {
        let mut t = RateTable::new(RateLimit::per_second(10), 100);
        for i in 0..100_000u32 {
            // Every identity sends once and stays busy (its bucket not yet full again).
            t.admit(&i.to_le_bytes(), u64::from(i / 1_000));
            assert!(t.len() <= 100, "{} identities after {i}", t.len());
        }
    }

    #[test]
    fn eviction_forgets_idle_identities_before_busy_ones() {
        let mut t = RateTable::new(RateLimit::per_second(1), 8);
        // A busy identity: it used its whole burst and keeps sending.
        assert_eq!(admitted(&mut t, b"busy", 0, 10), 2);
        // Idle ones, seen once at time 0: full again after 1 s.
        for i in 0..7u8 {
            t.admit(&[i], 0);
        }
        assert_eq!(t.len(), 8);
        // At 1.5 s the busy one has half a message back; a new identity makes room.
        assert_eq!(t.admit(b"busy", 1_500), Verdict::Admit);
        t.admit(b"new", 1_500);
        assert_eq!(t.len(), 2, "the idle ones were forgotten, not the busy one");
        // The busy one kept its (empty) bucket: nothing new to send until it refills.
        assert_eq!(
            t.admit(b"busy", 1_500),
            Verdict::Drop { log: Some(8) },
            "its drops were still counted"
        );
    }

    #[test]
    fn when_every_identity_is_busy_the_least_recently_seen_go() {
        let mut t = RateTable::new(RateLimit::per_second(1), 8);
        for i in 0..8u8 {
            // Each uses its burst at time i: none is idle at time 8.
            assert_eq!(admitted(&mut t, &[i], u64::from(i), 3), 2);
        }
        t.admit(b"new", 8);
        assert!(t.len() <= 7, "{}", t.len());
        // The oldest (seen at 0 and 1) were forgotten: they start again with a full burst.
        assert_eq!(admitted(&mut t, &[0], 8, 3), 2);
        // The most recent kept its empty bucket.
        assert_eq!(admitted(&mut t, &[7], 8, 3), 0);
    }
}
