//! The 2015 protocol's messages (legacy-protocol.md §1–§3): typed access to what a legacy peer
//! sends, and builders for what Zask answers. A message is exactly two frames on the DEALER
//! side, `[header, payload]` (the ROUTER strips and adds the routing identity); both are
//! pickles. The header is a dict with `function` (the opcode), `address`, `timestamp` and
//! optional `jobid`, `status`, `loads`/`dumps`; the payload is kept as the decoded tree.
//!
//! Nothing here executes anything, and nothing here knows about Zask's own protocol.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::pickle::helpers::DateTime;
use crate::pickle::{decode, encode, Node, NodeId, Pickle, PickleError};

/// One frame of a ZeroMQ message.
pub type Frame = Vec<u8>;

/// Why frames are not a legacy message. The data itself is at fault: sending it again
/// unchanged cannot help.
#[derive(Debug, Clone, PartialEq)]
pub enum LegacyError {
    /// Not the two frames `[header, payload]`.
    FrameCount { got: usize },
    /// The header is not a pickle we can read.
    Header(PickleError),
    /// The payload is not a pickle we can read.
    Payload(PickleError),
    /// The header is not a dict with a string `function`.
    NoFunction,
    /// A reply could not be encoded (a tree no pickle can express).
    Encode(PickleError),
}

impl LegacyError {
    /// Whether sending the same message again can succeed: never, the data is at fault.
    pub fn retry_may_help(&self) -> bool {
        false
    }
}

impl std::fmt::Display for LegacyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LegacyError::FrameCount { got } => {
                write!(f, "expected 2 frames [header, payload], got {got}")
            }
            LegacyError::Header(e) => write!(f, "unreadable header pickle: {e}"),
            LegacyError::Payload(e) => write!(f, "unreadable payload pickle: {e}"),
            LegacyError::NoFunction => write!(f, "the header is not a dict with a 'function'"),
            LegacyError::Encode(e) => write!(f, "cannot encode the reply: {e}"),
        }
    }
}

impl std::error::Error for LegacyError {}

/// A decoded legacy message: the header's fields, and both pickle trees (to echo parts of
/// them, e.g. a `jobid` that is a tuple key).
#[derive(Debug, Clone, PartialEq)]
pub struct LegacyMessage {
    /// The opcode: `register`, `status`, `schedule`, `heartbeat`...; empty for a bare reply
    /// (`is_bare_reply`).
    pub function: String,
    /// The sender's advertised address (bytes in the 2015 system; a str is taken as its UTF-8).
    pub address: Option<Vec<u8>>,
    /// The header's `timestamp` (naive UTC), when it is a datetime.
    pub timestamp: Option<DateTime>,
    /// The header's `status`, when it is a string.
    pub status: Option<String>,
    /// The header's `jobid` (any pickle: str, tuple key, None), in `header`.
    pub jobid: Option<NodeId>,
    /// Whether the header names a `loads` / `dumps` function (dill for client payloads).
    pub has_loads: bool,
    pub has_dumps: bool,
    /// The header as decoded.
    pub header: Pickle,
    /// The payload as decoded (never executed).
    pub payload: Pickle,
}

impl LegacyMessage {
    /// A reply that names no function, only the `jobid` of what it answers (the 2015 worker's
    /// answer to a `delitem` with `reply`).
    pub fn is_bare_reply(&self) -> bool {
        self.function.is_empty()
    }

    /// The header's `jobid` as a string, when it is one.
    pub fn jobid_str(&self) -> Option<&str> {
        self.jobid.and_then(|id| self.header.str_of(id))
    }

    /// Decodes the DEALER-side frames `[header, payload]`.
    pub fn decode(frames: &[Frame]) -> Result<LegacyMessage, LegacyError> {
        let [header, payload] = frames else {
            return Err(LegacyError::FrameCount { got: frames.len() });
        };
        let header = decode(header).map_err(LegacyError::Header)?;
        let field = |name: &str| header.dict_get(header.root, name);
        // A header with a `jobid` and no `function` is a bare reply: the 2015 worker answers a
        // `delitem` asking for a reply (and `status`) so. Its function is empty.
        let function = match field("function").and_then(|id| header.str_of(id)) {
            Some(f) => f.to_owned(),
            None if field("jobid").is_some() => String::new(),
            None => return Err(LegacyError::NoFunction),
        };
        let address = field("address").and_then(|id| match header.get(id)? {
            Node::Bytes(b) => Some(b.clone()),
            Node::Str(s) => Some(s.as_bytes().to_vec()),
            _ => None,
        });
        let timestamp = field("timestamp").and_then(|id| header.datetime_of(id));
        let status = field("status")
            .and_then(|id| header.str_of(id))
            .map(str::to_owned);
        let jobid = field("jobid");
        let has_loads = field("loads").is_some();
        let has_dumps = field("dumps").is_some();
        let payload = decode(payload).map_err(LegacyError::Payload)?;
        Ok(LegacyMessage {
            function,
            address,
            timestamp,
            status,
            jobid,
            has_loads,
            has_dumps,
            header,
            payload,
        })
    }

    /// The payload's value under the string key `key`, if the payload is a dict that has it.
    pub fn payload_get(&self, key: &str) -> Option<NodeId> {
        self.payload.dict_get(self.payload.root, key)
    }

    /// The payload's `key` as a string.
    pub fn payload_str(&self, key: &str) -> Option<&str> {
        self.payload_get(key).and_then(|id| self.payload.str_of(id))
    }

    /// The payload's `key` as an integer that fits an i64.
    pub fn payload_int(&self, key: &str) -> Option<i64> {
        match self.payload.get(self.payload_get(key)?)? {
            Node::Int(i) => Some(*i),
            _ => None,
        }
    }
}

/// A worker as the legacy `register` / `get_workers` replies list it.
#[derive(Debug, Clone, PartialEq)]
pub struct LegacyWorker {
    /// Its address, the dict key (bytes, as the 2015 workers' identities were).
    pub address: Vec<u8>,
    pub pid: u32,
    pub last_seen: DateTime,
}

/// Builds a reply header: `address` (the replier's advertised address, bytes) and `timestamp`
/// always, then whatever fields are added, in order.
#[derive(Debug, Clone)]
pub struct ReplyHeader {
    pickle: Pickle,
    pairs: Vec<(NodeId, NodeId)>,
}

impl ReplyHeader {
    pub fn new(address: &[u8], timestamp: DateTime) -> ReplyHeader {
        let mut pickle = Pickle::new();
        let mut pairs = Vec::new();
        let k = pickle.add(Node::Str("address".into()));
        let v = pickle.add(Node::Bytes(address.to_vec()));
        pairs.push((k, v));
        let k = pickle.add(Node::Str("timestamp".into()));
        let v = pickle.add_datetime(&timestamp);
        pairs.push((k, v));
        ReplyHeader { pickle, pairs }
    }

    fn field(mut self, name: &str, value: Node) -> ReplyHeader {
        let k = self.pickle.add(Node::Str(name.into()));
        let v = self.pickle.add(value);
        self.pairs.push((k, v));
        self
    }

    /// `function`: what the reply is (e.g. `schedule-ack`).
    pub fn function(self, name: &str) -> ReplyHeader {
        self.field("function", Node::Str(name.into()))
    }

    /// `jobid`: a string id the answer will carry (a `delitem` asking for a reply).
    pub fn jobid(self, id: &str) -> ReplyHeader {
        self.field("jobid", Node::Str(id.into()))
    }

    /// `status`: `'OK'` or `'Error'`.
    pub fn status(self, status: &str) -> ReplyHeader {
        self.field("status", Node::Str(status.into()))
    }

    /// `jobid`, echoing the request's (None when it had none, as the 2015 scheduler did).
    pub fn jobid_of(mut self, request: &LegacyMessage) -> ReplyHeader {
        let k = self.pickle.add(Node::Str("jobid".into()));
        let v = match request.jobid {
            Some(id) => graft(&mut self.pickle, &request.header, id),
            None => self.pickle.add(Node::None),
        };
        self.pairs.push((k, v));
        self
    }

    /// `loads` = `dill.loads`: the receiver decodes the payload with dill.
    pub fn loads_dill(mut self) -> ReplyHeader {
        let k = self.pickle.add(Node::Str("loads".into()));
        let v = self.pickle.add_dill_loads();
        self.pairs.push((k, v));
        self
    }

    /// The header frame.
    pub fn encode(mut self) -> Result<Frame, LegacyError> {
        self.pickle.root = self.pickle.add(Node::Dict(self.pairs));
        encode(&self.pickle, self.pickle.root).map_err(LegacyError::Encode)
    }
}

/// Copies the subtree of `from` at `id` into `into` (sharing inside it kept) and returns its id
/// there. Cycles are kept too: every node is copied once.
pub fn graft(into: &mut Pickle, from: &Pickle, id: NodeId) -> NodeId {
    use std::collections::HashMap;
    let mut map: HashMap<NodeId, NodeId> = HashMap::new();
    // First pass: reserve a slot for every reachable node; second: copy with renumbering.
    let mut stack = vec![id];
    let mut order = Vec::new();
    while let Some(n) = stack.pop() {
        if map.contains_key(&n) {
            continue;
        }
        let Some(node) = from.get(n) else { continue };
        map.insert(n, into.add(Node::None));
        order.push(n);
        stack.extend(node.children());
    }
    for n in order {
        let mut node = from.get(n).cloned().unwrap_or(Node::None);
        node.map_children(|c| map.get(&c).copied().unwrap_or(c));
        into.nodes[map[&n].index()] = node;
    }
    map.get(&id)
        .copied()
        .unwrap_or_else(|| into.add(Node::None))
}

/// Payload `'OK'` (the answer to `status`).
pub fn ok_payload() -> Pickle {
    let mut p = Pickle::new();
    p.root = p.add(Node::Str("OK".into()));
    p
}

/// Payload `{}`.
pub fn empty_payload() -> Pickle {
    let mut p = Pickle::new();
    p.root = p.add(Node::Dict(vec![]));
    p
}

/// Payload `{'workers': {address: {'pid': pid, 'last-seen': datetime}}}` (`register`,
/// `get_workers`).
pub fn workers_payload(workers: &[LegacyWorker]) -> Pickle {
    let mut p = Pickle::new();
    let mut entries = Vec::new();
    for w in workers {
        let addr = p.add(Node::Bytes(w.address.clone()));
        let kp = p.add(Node::Str("pid".into()));
        let vp = p.add(Node::Int(i64::from(w.pid)));
        let kl = p.add(Node::Str("last-seen".into()));
        let vl = p.add_datetime(&w.last_seen);
        let info = p.add(Node::Dict(vec![(kp, vp), (kl, vl)]));
        entries.push((addr, info));
    }
    let k = p.add(Node::Str("workers".into()));
    let v = p.add(Node::Dict(entries));
    p.root = p.add(Node::Dict(vec![(k, v)]));
    p
}

/// Payload `{'keys': <the request's keys>, 'result': module.name(message)}`: a failed
/// `schedule`, which the 2015 client raises (`raise payload['result']`) when the header's
/// status is not `'OK'`.
pub fn schedule_error_payload(
    request: &LegacyMessage,
    module: &str,
    name: &str,
    message: &str,
) -> Pickle {
    let mut p = Pickle::new();
    let kk = p.add(Node::Str("keys".into()));
    let keys = match request.payload_get("keys") {
        Some(id) => graft(&mut p, &request.payload, id),
        None => p.add(Node::None),
    };
    let kr = p.add(Node::Str("result".into()));
    let exc = p.add_exception(module, name, message);
    p.root = p.add(Node::Dict(vec![(kk, keys), (kr, exc)]));
    p
}

/// A payload whose unpickling raises `KeyError(message)` in the receiver
/// (`operator.getitem({}, message)`): the one way to make the 2015 client's
/// `set_collection` and `get_collection` raise with a message, since they read no error
/// status (`set_collection` only asserts the header's status; `get_collection` calls what
/// the payload names). Nothing but `operator.getitem` on an empty dict is called.
pub fn raising_key_error_payload(message: &str) -> Pickle {
    let mut p = Pickle::new();
    let getitem = p.add_global("operator", "getitem");
    let empty = p.add(Node::Dict(vec![]));
    let msg = p.add(Node::Str(message.into()));
    let args = p.add(Node::Tuple(vec![empty, msg]));
    p.root = p.add(Node::Reduce {
        callable: getitem,
        args,
    });
    p
}

/// The two frames of a reply: `[header, payload]` (the ROUTER adds the identity).
pub fn reply_frames(header: ReplyHeader, payload: &Pickle) -> Result<Vec<Frame>, LegacyError> {
    let header = header.encode()?;
    let payload = encode(payload, payload.root).map_err(LegacyError::Encode)?;
    Ok(vec![header, payload])
}

impl DateTime {
    /// The naive UTC datetime of a moment (the 2015 system's `datetime.utcnow()`); moments
    /// before 1970 give 1970-01-01.
    pub fn from_system_time(t: SystemTime) -> DateTime {
        let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
        let secs = d.as_secs();
        let days = (secs / 86_400) as i64;
        let rem = secs % 86_400;
        // Howard Hinnant's civil_from_days.
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u8;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
        let year = (yoe + era * 400 + i64::from(month <= 2)) as u16;
        DateTime {
            year,
            month,
            day,
            hour: (rem / 3600) as u8,
            minute: (rem % 3600 / 60) as u8,
            second: (rem % 60) as u8,
            microsecond: d.subsec_micros(),
        }
    }

    /// Now, as a naive UTC datetime.
    pub fn now_utc() -> DateTime {
        DateTime::from_system_time(SystemTime::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn civil_dates() {
        let dt =
            DateTime::from_system_time(UNIX_EPOCH + Duration::from_micros(1_795_619_184_454_878));
        assert_eq!(
            dt,
            DateTime {
                year: 2026,
                month: 11,
                day: 25,
                hour: 15,
                minute: 6,
                second: 24,
                microsecond: 454_878
            }
        );
        let leap = DateTime::from_system_time(UNIX_EPOCH + Duration::from_secs(951_782_400));
        assert_eq!((leap.year, leap.month, leap.day), (2000, 2, 29));
        assert_eq!(
            DateTime::from_system_time(UNIX_EPOCH),
            DateTime {
                year: 1970,
                month: 1,
                day: 1,
                hour: 0,
                minute: 0,
                second: 0,
                microsecond: 0
            }
        );
    }

    #[test]
    fn wrong_frame_counts_and_headers_are_errors() {
        assert_eq!(
            LegacyMessage::decode(&[b"\x80\x03}q\x00.".to_vec()]),
            Err(LegacyError::FrameCount { got: 1 })
        );
        // A header that is a dict without 'function'.
        let e = LegacyMessage::decode(&[b"\x80\x03}q\x00.".to_vec(), b"\x80\x03}q\x00.".to_vec()]);
        assert_eq!(e, Err(LegacyError::NoFunction));
        // A header with a jobid and no function: a bare reply.
        let reply = ReplyHeader::new(b"tcp://w", DateTime::now_utc()).jobid("zask-7");
        let mut ok = Pickle::new();
        ok.root = ok.add(Node::Str("OK".into()));
        let frames = reply_frames(reply, &ok).unwrap();
        let m = LegacyMessage::decode(&frames[frames.len() - 2..]).unwrap();
        assert!(m.is_bare_reply());
        assert_eq!(m.jobid_str(), Some("zask-7"));
        let e = LegacyMessage::decode(&[b"\x80\x03}q".to_vec(), b"\x80\x03}q\x00.".to_vec()]);
        assert!(matches!(e, Err(LegacyError::Header(_))));
    }

    #[test]
    fn graft_keeps_sharing() {
        let mut from = Pickle::new();
        let a = from.add(Node::Str("x".into()));
        let t = from.add(Node::Tuple(vec![a, a]));
        let mut into = Pickle::new();
        into.add(Node::None);
        let g = graft(&mut into, &from, t);
        assert!(from.isomorphic(t, &into, g));
    }
}
