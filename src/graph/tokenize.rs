//! Stable names for graph content: the same bytes give the same token in every process and
//! every run (unlike std's hasher), which deterministic keys and collection names need.

use serde::Serialize;

/// A stable 64-bit FNV-1a hash over fields, each prefixed by its length so that field
/// boundaries count (`["ab", "c"]` and `["a", "bc"]` differ), as 16 hex digits. Unlike std's
/// hasher it is the same in every process and every run, which keys need.
pub fn tokenize(fields: &[&[u8]]) -> String {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut hash = OFFSET_BASIS;
    for field in fields {
        for &byte in (field.len() as u64)
            .to_le_bytes()
            .iter()
            .chain(field.iter())
        {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(PRIME);
        }
    }
    format!("{hash:016x}")
}

/// The msgpack encoding of something that always encodes (values, keys, expressions).
pub fn encoded(v: &impl Serialize) -> Vec<u8> {
    rmp_serde::to_vec(v).expect("values, keys and expressions always encode")
}
