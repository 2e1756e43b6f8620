//! Typed names for the things the protocol acts on: a connection (`ConnectionId`), a worker's
//! peer address (`WorkerAddress`) and name (`WorkerName`), a restriction naming either
//! (`WorkerSelector`), a client's request (`RequestId`) and what a client may do
//! (`ClientRole`). The ids are serde-transparent, so the wire carries the bare value; the
//! types only keep the distinctions apart in the code.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A ZeroMQ routing identity: how a ROUTER socket names the connection a message came from.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ConnectionId(Vec<u8>);

impl ConnectionId {
    pub fn new(bytes: impl Into<Vec<u8>>) -> ConnectionId {
        ConnectionId(bytes.into())
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl From<Vec<u8>> for ConnectionId {
    fn from(bytes: Vec<u8>) -> ConnectionId {
        ConnectionId(bytes)
    }
}

impl From<String> for ConnectionId {
    fn from(text: String) -> ConnectionId {
        ConnectionId(text.into_bytes())
    }
}

impl From<&str> for ConnectionId {
    fn from(text: &str) -> ConnectionId {
        ConnectionId(text.as_bytes().to_vec())
    }
}

impl fmt::Display for ConnectionId {
    /// Readable identities (tests, the simulation) as text, ZeroMQ's binary ones in hex.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match std::str::from_utf8(&self.0) {
            Ok(text) if text.chars().all(|c| c.is_ascii_graphic()) => f.write_str(text),
            _ => {
                f.write_str("0x")?;
                self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
            }
        }
    }
}

impl fmt::Debug for ConnectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ConnectionId({self})")
    }
}

macro_rules! text_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn new(text: impl Into<String>) -> $name {
                $name(text.into())
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }

            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl From<String> for $name {
            fn from(text: String) -> $name {
                $name(text)
            }
        }

        impl From<&str> for $name {
            fn from(text: &str) -> $name {
                $name(text.to_owned())
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, text: &str) -> bool {
                self.0 == text
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, text: &&str) -> bool {
                self.0 == *text
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&self.0, f)
            }
        }
    };
}

text_id!(
    /// Where a worker's peers fetch data from: its own ROUTER endpoint (`tcp://host:port`).
    /// Also how `status` and errors name a worker.
    WorkerAddress
);

text_id!(
    /// A worker's name, for logs, `status` and restrictions; defaults to its address's text.
    WorkerName
);

/// Which workers a task may run on: the one at an address, the one with a name, or any that
/// runs Python. Each kind is matched against its own field, never against another.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum WorkerSelector {
    Address(WorkerAddress),
    Name(WorkerName),
    /// Any worker that runs Python functions: a 2015 Python worker, through the bridge the
    /// scheduler keeps for it (`WorkerRegistration::runs_python`).
    Python,
}

impl WorkerSelector {
    /// Whether the worker at `address` named `name` (running Python or not) is one this
    /// selects.
    pub fn matches(&self, address: &WorkerAddress, name: &WorkerName, runs_python: bool) -> bool {
        match self {
            WorkerSelector::Address(a) => a == address,
            WorkerSelector::Name(n) => n == name,
            WorkerSelector::Python => runs_python,
        }
    }
}

impl fmt::Display for WorkerSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WorkerSelector::Address(a) => write!(f, "{a}"),
            WorkerSelector::Name(n) => write!(f, "{n}"),
            WorkerSelector::Python => write!(f, "a worker that runs Python"),
        }
    }
}

/// What a client connection may do, as the scheduler learns it from the key the connection
/// authenticated with (a plain client key or an operator key).
///
/// - `Client`: submit, compute, scatter, gather, read every collection, dataset and the
///   cluster's status; release its own pins, delete or replace its own collections and
///   datasets.
/// - `Operator`: everything a client may do, and what concerns the whole cluster or other
///   clients' things: restart the cluster, release names other clients pinned (dropping every
///   pin of the name), delete or replace any collection or dataset, including those whose
///   owner has left.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ClientRole {
    Client,
    Operator,
}

impl fmt::Display for ClientRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ClientRole::Client => "client",
            ClientRole::Operator => "operator",
        })
    }
}

/// A client's number for one of its requests; replies carry it back, so one client can have
/// many requests in flight. Messages that expect no reply carry none.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RequestId(pub u64);

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

impl fmt::Debug for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RequestId({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::codec::{decode, encode};

    fn round_trip<T>(value: &T) -> T
    where
        T: Serialize + for<'de> Deserialize<'de>,
    {
        decode(&encode(value)).expect("what was encoded decodes")
    }

    #[test]
    fn ids_travel_as_their_bare_values() {
        let identity = ConnectionId::new(vec![0u8, 159, 7]);
        assert_eq!(round_trip(&identity), identity);
        assert_eq!(encode(&identity), encode(&vec![0u8, 159, 7]));
        let address = WorkerAddress::from("tcp://h:1");
        assert_eq!(round_trip(&address), address);
        assert_eq!(encode(&address), encode(&"tcp://h:1".to_owned()));
        let name = WorkerName::from("alice");
        assert_eq!(round_trip(&name), name);
        assert_eq!(encode(&name), encode(&"alice".to_owned()));
        assert_eq!(round_trip(&RequestId(7)), RequestId(7));
        assert_eq!(encode(&RequestId(7)), encode(&7u64));
        for selector in [
            WorkerSelector::Address(address.clone()),
            WorkerSelector::Name(name.clone()),
        ] {
            assert_eq!(round_trip(&selector), selector);
        }
    }

    #[test]
    fn a_selector_matches_only_its_own_kind() {
        let address = WorkerAddress::from("tcp://h:1");
        let name = WorkerName::from("tcp://h:1");
        let by_name = WorkerSelector::Name(WorkerName::from("tcp://h:1"));
        let by_address = WorkerSelector::Address(WorkerAddress::from("alice"));
        // The text equals the worker's address, but a name selects by name only.
        assert!(!by_name.matches(&address, &WorkerName::from("alice"), false));
        // The text equals the worker's name, but an address selects by address only.
        assert!(!by_address.matches(&WorkerAddress::from("tcp://x:2"), &"alice".into(), false));
        assert!(by_name.matches(&WorkerAddress::from("tcp://x:2"), &name, false));
        assert!(WorkerSelector::Address(address.clone()).matches(&address, &"b".into(), false));
        // Python selects by what the worker runs, never by a name or an address.
        assert!(WorkerSelector::Python.matches(&address, &name, true));
        assert!(!WorkerSelector::Python.matches(&address, &"python".into(), false));
    }

    #[test]
    fn roles_print_as_their_names_and_travel() {
        assert_eq!(ClientRole::Client.to_string(), "client");
        assert_eq!(ClientRole::Operator.to_string(), "operator");
        for role in [ClientRole::Client, ClientRole::Operator] {
            assert_eq!(round_trip(&role), role);
        }
    }

    #[test]
    fn connection_ids_print_readably() {
        assert_eq!(ConnectionId::from("w1").to_string(), "w1");
        assert_eq!(ConnectionId::new(vec![0u8, 0xab]).to_string(), "0x00ab");
    }
}
