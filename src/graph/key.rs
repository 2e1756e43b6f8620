//! Keys name results in a graph: strings, integers, or tuples of those, such as `("x", 1)`.

use std::fmt;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::ser::{SerializeSeq, Serializer};
use serde::{Deserialize, Serialize};

/// A graph key. Encoded in msgpack as a str, an int or an array, like the Python keys it mirrors.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Key {
    Str(String),
    Int(i64),
    Tuple(Vec<Key>),
}

impl Key {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Key::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The bytes a worker's store files this key under.
    pub fn to_store_key(&self) -> Vec<u8> {
        rmp_serde::to_vec(self).expect("a key always encodes")
    }

    pub fn from_store_key(bytes: &[u8]) -> Option<Key> {
        rmp_serde::from_slice(bytes).ok()
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Key::Str(s) => write!(f, "{s}"),
            Key::Int(i) => write!(f, "{i}"),
            Key::Tuple(parts) => {
                write!(f, "(")?;
                for (i, p) in parts.iter().enumerate() {
                    if i > 0 {
                        write!(f, ", ")?;
                    }
                    match p {
                        Key::Str(s) => write!(f, "'{s}'")?,
                        other => write!(f, "{other}")?,
                    }
                }
                if parts.len() == 1 {
                    write!(f, ",")?;
                }
                write!(f, ")")
            }
        }
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Key::Str(s) => write!(f, "{s:?}"),
            other => write!(f, "{other}"),
        }
    }
}

impl Serialize for Key {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Key::Str(st) => s.serialize_str(st),
            Key::Int(i) => s.serialize_i64(*i),
            Key::Tuple(parts) => {
                let mut seq = s.serialize_seq(Some(parts.len()))?;
                for p in parts {
                    seq.serialize_element(p)?;
                }
                seq.end()
            }
        }
    }
}

struct KeyVisitor;

impl<'de> Visitor<'de> for KeyVisitor {
    type Value = Key;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a key: a string, an integer or an array of those")
    }
    fn visit_i64<E>(self, v: i64) -> Result<Key, E> {
        Ok(Key::Int(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Key, E> {
        i64::try_from(v)
            .map(Key::Int)
            .map_err(|_| E::custom("key integer out of range"))
    }
    fn visit_str<E>(self, v: &str) -> Result<Key, E> {
        Ok(Key::Str(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Key, E> {
        Ok(Key::Str(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Key, A::Error> {
        let mut parts = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(16));
        while let Some(p) = seq.next_element()? {
            parts.push(p);
        }
        Ok(Key::Tuple(parts))
    }
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Key, D::Error> {
        d.deserialize_any(KeyVisitor)
    }
}

impl From<&str> for Key {
    fn from(s: &str) -> Key {
        Key::Str(s.to_owned())
    }
}
impl From<String> for Key {
    fn from(s: String) -> Key {
        Key::Str(s)
    }
}
impl From<&String> for Key {
    fn from(s: &String) -> Key {
        Key::Str(s.clone())
    }
}
impl From<&Key> for Key {
    fn from(k: &Key) -> Key {
        k.clone()
    }
}
impl From<i64> for Key {
    fn from(i: i64) -> Key {
        Key::Int(i)
    }
}
impl From<i32> for Key {
    fn from(i: i32) -> Key {
        Key::Int(i as i64)
    }
}
impl From<usize> for Key {
    fn from(i: usize) -> Key {
        Key::Int(i as i64)
    }
}
impl<A: Into<Key>, B: Into<Key>> From<(A, B)> for Key {
    fn from((a, b): (A, B)) -> Key {
        Key::Tuple(vec![a.into(), b.into()])
    }
}
impl<A: Into<Key>, B: Into<Key>, C: Into<Key>> From<(A, B, C)> for Key {
    fn from((a, b, c): (A, B, C)) -> Key {
        Key::Tuple(vec![a.into(), b.into(), c.into()])
    }
}

/// The keys a `get` asks for: one key, or (nested) lists of keys. Results come back in the same
/// shape.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum KeySpec {
    One(Key),
    Many(Vec<KeySpec>),
}

impl KeySpec {
    /// Every key, in order, with repeats.
    pub fn flatten(&self) -> Vec<Key> {
        let mut out = Vec::new();
        self.collect_into(&mut out);
        out
    }

    fn collect_into(&self, out: &mut Vec<Key>) {
        match self {
            KeySpec::One(k) => out.push(k.clone()),
            KeySpec::Many(l) => l.iter().for_each(|s| s.collect_into(out)),
        }
    }
}

macro_rules! keyspec_from_key {
    ($($t:ty),*) => {$(
        impl From<$t> for KeySpec {
            fn from(k: $t) -> KeySpec {
                KeySpec::One(k.into())
            }
        }
    )*};
}
keyspec_from_key!(&str, String, &String, Key, &Key, i64, i32);

impl<A: Into<Key>, B: Into<Key>> From<(A, B)> for KeySpec {
    fn from(k: (A, B)) -> KeySpec {
        KeySpec::One(k.into())
    }
}

impl<T: Into<KeySpec>> From<Vec<T>> for KeySpec {
    fn from(items: Vec<T>) -> KeySpec {
        KeySpec::Many(items.into_iter().map(Into::into).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_display_like_python() {
        assert_eq!(Key::from("x").to_string(), "x");
        assert_eq!(Key::from(("x", 1)).to_string(), "('x', 1)");
    }

    #[test]
    fn keys_roundtrip_through_msgpack() {
        for k in [Key::from("x"), Key::from(("x", 1)), Key::Int(-3)] {
            assert_eq!(Key::from_store_key(&k.to_store_key()), Some(k));
        }
    }

    #[test]
    fn keyspec_flattens_in_order() {
        let spec = KeySpec::from(vec![KeySpec::from(vec!["a", "b"]), KeySpec::from("c")]);
        assert_eq!(spec.flatten(), vec![Key::from("a"), "b".into(), "c".into()]);
    }
}
