//! Framing and encoding: the one place that tells a native message from a legacy (pickle) one or
//! from garbage, and that turns values into frames and back.

use std::fmt;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{PeerReply, MAGIC, PROTOCOL_VERSION};
use crate::value::Value;

/// One ZeroMQ frame.
pub type Frame = Vec<u8>;

/// Why an incoming frame could not be decoded. Never a panic: this is network input.
#[derive(Clone, Debug, PartialEq)]
pub enum DecodeError {
    /// No frames at all, or an empty header frame.
    Empty,
    /// A message of the 2015 protocol (a pickle): served by the compat layer, not here.
    Legacy,
    /// Neither a native nor a legacy message.
    BadMagic,
    /// A native message of another protocol version.
    Version { got: u8 },
    /// The right prefix, but the body is not a valid message of the expected type.
    Malformed(String),
    /// The message announced more value frames than it carried, or the reverse.
    FrameCount { expected: usize, got: usize },
    /// A value sent in chunks adds up to more bytes than the receiver accepts in one value.
    ValueTooLarge { bytes: u64, max: u64 },
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Empty => write!(f, "empty message"),
            DecodeError::Legacy => write!(f, "legacy (2015 pickle) message"),
            DecodeError::BadMagic => write!(f, "not a zask message (bad magic bytes)"),
            DecodeError::Version { got } => write!(
                f,
                "protocol version {got} is not supported (this build speaks {PROTOCOL_VERSION})"
            ),
            DecodeError::Malformed(m) => write!(f, "malformed message: {m}"),
            DecodeError::FrameCount { expected, got } => {
                write!(f, "expected {expected} value frames, got {got}")
            }
            DecodeError::ValueTooLarge { bytes, max } => {
                write!(
                    f,
                    "a value of {bytes} bytes in chunks, over the limit of {max}"
                )
            }
        }
    }
}

impl std::error::Error for DecodeError {}

/// The header frame of a native message.
pub fn encode<M: Serialize>(msg: &M) -> Frame {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(MAGIC);
    out.push(PROTOCOL_VERSION);
    rmp_serde::encode::write(&mut out, msg).expect("protocol messages always encode");
    out
}

/// What kind of message a header frame holds, judged by its first bytes.
pub fn classify(frame: &[u8]) -> Result<(), DecodeError> {
    if frame.is_empty() {
        return Err(DecodeError::Empty);
    }
    if frame[0] == 0x80 {
        return Err(DecodeError::Legacy);
    }
    if frame.len() < MAGIC.len() + 1 || &frame[..MAGIC.len()] != MAGIC {
        return Err(DecodeError::BadMagic);
    }
    let version = frame[MAGIC.len()];
    if version != PROTOCOL_VERSION {
        return Err(DecodeError::Version { got: version });
    }
    Ok(())
}

/// Decodes a header frame into the message type expected on this socket.
pub fn decode<M: DeserializeOwned>(frame: &[u8]) -> Result<M, DecodeError> {
    classify(frame)?;
    rmp_serde::from_slice(&frame[MAGIC.len() + 1..])
        .map_err(|e| DecodeError::Malformed(e.to_string()))
}

const TAG_MSGPACK: u8 = 0;
const TAG_RAW_BYTES: u8 = 1;

/// A value as a frame: msgpack, or the raw bytes themselves for a top-level `Bytes` value,
/// then one tag byte saying which. The tag goes last so that decoding an owned frame of raw
/// bytes only drops it, without copying the bytes. Workers store exactly this.
pub fn encode_value(v: &Value) -> Frame {
    match v {
        Value::Bytes(b) => {
            let mut out = Vec::with_capacity(b.len() + 1);
            out.extend_from_slice(b);
            out.push(TAG_RAW_BYTES);
            out
        }
        other => {
            let mut out = Vec::with_capacity(16);
            rmp_serde::encode::write(&mut out, other).expect("values always encode");
            out.push(TAG_MSGPACK);
            out
        }
    }
}

pub fn decode_value(frame: &[u8]) -> Result<Value, DecodeError> {
    match frame.split_last() {
        Some((&TAG_RAW_BYTES, rest)) => Ok(Value::Bytes(rest.to_vec())),
        Some((&TAG_MSGPACK, rest)) => {
            rmp_serde::from_slice(rest).map_err(|e| DecodeError::Malformed(e.to_string()))
        }
        Some((tag, _)) => Err(DecodeError::Malformed(format!("unknown value tag {tag}"))),
        None => Err(DecodeError::Empty),
    }
}

/// Like `decode_value`, reusing the frame's memory for raw bytes (no copy of a large result).
pub fn decode_value_owned(mut frame: Frame) -> Result<Value, DecodeError> {
    if frame.last() == Some(&TAG_RAW_BYTES) {
        frame.pop();
        return Ok(Value::Bytes(frame));
    }
    decode_value(&frame)
}

/// Checks that a value frame is well-formed without keeping the decoded value.
pub fn validate_value(frame: &[u8]) -> Result<(), DecodeError> {
    match frame.last() {
        Some(&TAG_RAW_BYTES) => Ok(()),
        _ => decode_value(frame).map(drop),
    }
}

/// Encodes an `Expr` the way the scheduler stores task specs.
pub fn encode_plain<M: Serialize>(m: &M) -> Vec<u8> {
    rmp_serde::to_vec(m).expect("specs always encode")
}

pub fn decode_plain<M: DeserializeOwned>(bytes: &[u8]) -> Result<M, DecodeError> {
    rmp_serde::from_slice(bytes).map_err(|e| DecodeError::Malformed(e.to_string()))
}

/// Splits a received multipart message into its decoded header and its value frames, checking
/// that the header announced as many value frames as arrived.
pub fn split<M: DeserializeOwned>(
    mut frames: Vec<Frame>,
    value_frames: impl Fn(&M) -> usize,
) -> Result<(M, Vec<Frame>), DecodeError> {
    if frames.is_empty() {
        return Err(DecodeError::Empty);
    }
    let rest = frames.split_off(1);
    let msg: M = decode(&frames[0])?;
    let expected = value_frames(&msg);
    if expected != rest.len() {
        return Err(DecodeError::FrameCount {
            expected,
            got: rest.len(),
        });
    }
    Ok((msg, rest))
}

/// How many frames a value of `len` bytes is sent in when cut in chunks of `chunk_bytes` (at
/// least one: an empty value is one empty frame).
pub fn chunk_count(len: usize, chunk_bytes: usize) -> usize {
    len.div_ceil(chunk_bytes.max(1)).max(1)
}

/// Splits a peer's reply into its header and its values, each joined from the
/// `chunks[i]` frames that carry it into one buffer (one copy of each byte, from the
/// received frames). Network input: a reply whose chunk counts do not match its values or
/// its frames, or whose value would exceed `value_bytes_max`, is an error, never a panic, and
/// nothing is allocated beyond the bytes received and that limit.
pub fn split_peer_reply<F: std::ops::Deref<Target = [u8]>>(
    frames: Vec<F>,
    value_bytes_max: u64,
) -> Result<(PeerReply, Vec<Frame>), DecodeError> {
    let Some((header, rest)) = frames.split_first() else {
        return Err(DecodeError::Empty);
    };
    let msg: PeerReply = decode(header)?;
    let chunks: &[u32] = match &msg {
        PeerReply::Data { found, chunks, .. } => {
            if chunks.len() != found.len() {
                return Err(DecodeError::Malformed(format!(
                    "{} chunk counts for {} values",
                    chunks.len(),
                    found.len()
                )));
            }
            if chunks.contains(&0) {
                return Err(DecodeError::Malformed("a value in 0 chunks".into()));
            }
            chunks
        }
        PeerReply::Error { .. } => &[],
    };
    let expected: u64 = chunks.iter().map(|&c| u64::from(c)).sum();
    if expected != rest.len() as u64 {
        return Err(DecodeError::FrameCount {
            expected: usize::try_from(expected).unwrap_or(usize::MAX),
            got: rest.len(),
        });
    }
    let mut values = Vec::with_capacity(chunks.len());
    let mut at = 0;
    for &count in chunks {
        // Within `rest`: the counts add up to its length (checked above).
        let parts = &rest[at..at + count as usize];
        at += count as usize;
        let bytes: u64 = parts.iter().map(|p| p.len() as u64).sum();
        if bytes > value_bytes_max {
            return Err(DecodeError::ValueTooLarge {
                bytes,
                max: value_bytes_max,
            });
        }
        let mut value = Vec::with_capacity(bytes as usize);
        for p in parts {
            value.extend_from_slice(p);
        }
        values.push(value);
    }
    Ok((msg, values))
}

/// Origin of a value a worker holds when it was scattered rather than computed.
pub const SCATTERED: u64 = 1;
/// Origin of a copy fetched from a peer: the fetcher cannot vouch for its definition.
pub const UNKNOWN_ORIGIN: u64 = 0;

/// A stable 64-bit FNV-1a hash of an encoded task spec (never one of the reserved origins).
pub fn spec_hash(spec: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in spec {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h.max(SCATTERED + 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{FromClient, FromWorker, RequestId};

    #[test]
    fn messages_roundtrip_and_are_recognised_by_their_prefix() {
        let m = FromClient::Status {
            request: RequestId(7),
        };
        let f = encode(&m);
        assert_eq!(&f[..4], b"ZASK");
        assert_eq!(decode::<FromClient>(&f), Ok(m));
    }

    #[test]
    fn garbage_legacy_and_wrong_direction_are_errors_not_panics() {
        assert_eq!(decode::<FromClient>(b""), Err(DecodeError::Empty));
        assert_eq!(
            decode::<FromClient>(b"\x80\x03}q\x00."),
            Err(DecodeError::Legacy)
        );
        assert_eq!(
            decode::<FromClient>(b"hello world"),
            Err(DecodeError::BadMagic)
        );
        let mut wrong_version = encode(&FromClient::Ping { pending: vec![] });
        wrong_version[4] = 99;
        assert_eq!(
            decode::<FromClient>(&wrong_version),
            Err(DecodeError::Version { got: 99 })
        );
        let worker_msg = encode(&FromWorker::Heartbeat);
        assert!(matches!(
            decode::<FromClient>(&worker_msg),
            Err(DecodeError::Malformed(_))
        ));
        let mut truncated = encode(&FromClient::Status {
            request: RequestId(1),
        });
        truncated.truncate(6);
        assert!(decode::<FromClient>(&truncated).is_err());
    }

    #[test]
    fn values_roundtrip_and_bytes_travel_raw() {
        let big = Value::Bytes(vec![7; 1 << 20]);
        let f = encode_value(&big);
        assert_eq!(f.len(), (1 << 20) + 1);
        assert_eq!(decode_value(&f), Ok(big));
        let v = Value::from(vec![1, 2, 3]);
        assert_eq!(decode_value(&encode_value(&v)), Ok(v));
        assert!(decode_value(&[1, 2, 9]).is_err());
        let big = Value::Bytes(vec![3; 1000]);
        assert_eq!(decode_value_owned(encode_value(&big)), Ok(big));
    }

    #[test]
    fn peer_replies_join_their_chunks_and_refuse_wrong_ones() {
        let reply = |chunks: Vec<u32>| {
            encode(&PeerReply::Data {
                request: 1,
                found: vec!["a".into(), "b".into()],
                missing: vec![],
                chunks,
            })
        };
        let frames = vec![
            reply(vec![3, 1]),
            b"ab".to_vec(),
            b"cd".to_vec(),
            b"e".to_vec(),
            vec![],
        ];
        let (msg, values) = split_peer_reply(frames.clone(), 5).unwrap();
        assert!(matches!(msg, PeerReply::Data { .. }));
        assert_eq!(values, vec![b"abcde".to_vec(), vec![]]);
        // One byte over the limit.
        assert_eq!(
            split_peer_reply(frames.clone(), 4),
            Err(DecodeError::ValueTooLarge { bytes: 5, max: 4 })
        );
        // A chunk missing, a chunk too many.
        let mut short = frames.clone();
        short.pop();
        assert_eq!(
            split_peer_reply(short, 5),
            Err(DecodeError::FrameCount {
                expected: 4,
                got: 3
            })
        );
        let mut long = frames.clone();
        long.push(b"x".to_vec());
        assert!(matches!(
            split_peer_reply(long, 5),
            Err(DecodeError::FrameCount { .. })
        ));
        // Counts that do not match the values, a value in no chunk, counts past any length.
        for bad in [vec![4], vec![4, 0], vec![u32::MAX, u32::MAX]] {
            let mut f = frames.clone();
            f[0] = reply(bad);
            assert!(split_peer_reply(f, 5).is_err());
        }
        let error = encode(&PeerReply::Error {
            message: "no".into(),
        });
        assert!(split_peer_reply(vec![error.clone()], 0).is_ok());
        assert!(split_peer_reply(vec![error, vec![1]], 0).is_err());
        assert_eq!(
            split_peer_reply(Vec::<Frame>::new(), 0),
            Err(DecodeError::Empty)
        );
    }

    #[test]
    fn chunk_counts() {
        assert_eq!(chunk_count(0, 4), 1);
        assert_eq!(chunk_count(4, 4), 1);
        assert_eq!(chunk_count(5, 4), 2);
        assert_eq!(chunk_count(5, 0), 5);
    }

    #[test]
    fn split_checks_frame_counts() {
        let header = encode(&FromClient::Scatter {
            request: RequestId(1),
            keys: vec!["a".into()],
        });
        let count = |m: &FromClient| match m {
            FromClient::Scatter { keys, .. } => keys.len(),
            _ => 0,
        };
        assert!(split(vec![header.clone()], count).is_err());
        let (_, values) = split(vec![header, encode_value(&Value::from(1))], count).unwrap();
        assert_eq!(values.len(), 1);
    }
}
