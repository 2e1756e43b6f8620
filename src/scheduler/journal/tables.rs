//! The journal's logic without its disk: which table entries each `JournalOp` writes, and what
//! a set of tables recovers. `sled.rs` applies the writes to sled trees; `MemoryJournal` keeps
//! them in memory with a disk's crash semantics (what `flush` returned for survives a crash,
//! the rest is lost), for the simulation and tests. Pure: no disk, no clock.

use std::cell::RefCell;
use std::collections::BTreeMap;

use super::write::{JournalError, JournalWrite};
use crate::collection::{Collection, LegacyCollection, StoredCollection};
use crate::graph::Key;
use crate::protocol::codec::{decode_plain, encode_plain};
use crate::protocol::{ConnectionId, RequestId};
use crate::scheduler::core::{JournalOp, Recovered, Submission};

/// The journal's tables (sled trees on disk).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Table {
    /// (client, request) → the submission, for each graph a client still waits for.
    Computations,
    /// Wire key → (the key the client gave, size, the client that scattered it), for each
    /// scattered value (journals written before owners hold (key, size)).
    Scattered,
    /// Name → collection.
    Collections,
    /// Name → the client that stored the collection (none for a collection nobody owns: its
    /// owner left, or it was journaled before owners were). Beside `Collections` rather than
    /// inside its values, so journals written before owners existed read as they always did.
    CollectionOwners,
}

impl Table {
    pub const ALL: [Table; 4] = [
        Table::Computations,
        Table::Scattered,
        Table::Collections,
        Table::CollectionOwners,
    ];

    /// The table's name on disk.
    pub fn name(self) -> &'static str {
        match self {
            Table::Computations => "computations",
            Table::Scattered => "scattered",
            Table::Collections => "collections",
            Table::CollectionOwners => "collection_owners",
        }
    }
}

/// One change to one table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Write {
    Put {
        table: Table,
        key: Vec<u8>,
        value: Vec<u8>,
    },
    Remove {
        table: Table,
        key: Vec<u8>,
    },
    Clear(Table),
}

/// What one operation writes, in order.
pub fn writes(op: &JournalOp) -> Vec<Write> {
    let put = |table, key, value| Write::Put { table, key, value };
    let remove = |table, key| Write::Remove { table, key };
    match op {
        JournalOp::PutComputation {
            client,
            request,
            submission,
        } => vec![put(
            Table::Computations,
            encode_plain(&(client, request)),
            encode_plain(submission),
        )],
        JournalOp::DeleteComputation { client, request } => {
            vec![remove(
                Table::Computations,
                encode_plain(&(client, request)),
            )]
        }
        JournalOp::PutScattered {
            name,
            key,
            nbytes,
            owner,
        } => vec![put(
            Table::Scattered,
            key.to_store_key(),
            encode_plain(&(name, nbytes, owner)),
        )],
        JournalOp::DeleteScattered { key } => vec![remove(Table::Scattered, key.to_store_key())],
        JournalOp::PutCollection {
            name,
            collection,
            owner,
        } => vec![
            put(
                Table::Collections,
                name.as_bytes().to_vec(),
                match collection {
                    // A native collection is written as it always was; a legacy one as its
                    // payload (which never reads as a native collection).
                    StoredCollection::Native(c) => encode_plain(c),
                    StoredCollection::Legacy(l) => encode_plain(l),
                },
            ),
            owner_write(name, owner.as_ref()),
        ],
        JournalOp::SetCollectionOwner { name, owner } => vec![owner_write(name, owner.as_ref())],
        JournalOp::DeleteCollection { name } => vec![
            remove(Table::Collections, name.as_bytes().to_vec()),
            remove(Table::CollectionOwners, name.as_bytes().to_vec()),
        ],
        // Collections are graphs, not data: a restart of the cluster keeps them.
        JournalOp::Clear => vec![
            Write::Clear(Table::Computations),
            Write::Clear(Table::Scattered),
        ],
    }
}

/// The write recording `name`'s owner (none: the entry goes).
fn owner_write(name: &str, owner: Option<&ConnectionId>) -> Write {
    let key = name.as_bytes().to_vec();
    match owner {
        Some(owner) => Write::Put {
            table: Table::CollectionOwners,
            key,
            value: encode_plain(owner),
        },
        None => Write::Remove {
            table: Table::CollectionOwners,
            key,
        },
    }
}

/// Everything the tables hold, read through `read` (a table's entries in key order).
/// Unreadable entries are skipped with a warning: a damaged entry must not keep the scheduler
/// from starting.
pub fn recover(
    mut read: impl FnMut(Table) -> Result<Vec<(Vec<u8>, Vec<u8>)>, JournalError>,
) -> Result<Recovered, JournalError> {
    let mut recovered = Recovered::default();
    for (k, v) in read(Table::Computations)? {
        match (
            decode_plain::<(ConnectionId, RequestId)>(&k),
            decode_plain::<Submission>(&v),
        ) {
            (Ok((client, request)), Ok(submission)) => {
                recovered.computations.push((client, request, submission))
            }
            _ => log::warn!("skipping an unreadable journal entry"),
        }
    }
    for (k, v) in read(Table::Scattered)? {
        let entry = decode_plain::<(Key, u64, ConnectionId)>(&v)
            .map(|(name, nbytes, owner)| (name, nbytes, Some(owner)))
            .or_else(|_| decode_plain::<(Key, u64)>(&v).map(|(name, nbytes)| (name, nbytes, None)));
        match (Key::from_store_key(&k), entry) {
            (Some(key), Ok((name, nbytes, owner))) => {
                recovered.scattered.push((name, key, nbytes, owner))
            }
            _ => log::warn!("skipping an unreadable journal entry"),
        }
    }
    for (k, v) in read(Table::Collections)? {
        let collection = decode_plain::<Collection>(&v)
            .map(StoredCollection::Native)
            .or_else(|_| decode_plain::<LegacyCollection>(&v).map(StoredCollection::Legacy));
        match (String::from_utf8(k), collection) {
            (Ok(name), Ok(collection)) => recovered.collections.push((name, collection)),
            _ => log::warn!("skipping an unreadable journal entry"),
        }
    }
    for (k, v) in read(Table::CollectionOwners)? {
        match (String::from_utf8(k), decode_plain::<ConnectionId>(&v)) {
            (Ok(name), Ok(owner)) => recovered.collection_owners.push((name, owner)),
            _ => log::warn!("skipping an unreadable journal entry"),
        }
    }
    Ok(recovered)
}

type Tables = BTreeMap<Table, BTreeMap<Vec<u8>, Vec<u8>>>;

fn write(tables: &mut Tables, w: Write) {
    match w {
        Write::Put { table, key, value } => {
            tables.entry(table).or_default().insert(key, value);
        }
        Write::Remove { table, key } => {
            if let Some(t) = tables.get_mut(&table) {
                t.remove(&key);
            }
        }
        Write::Clear(table) => {
            tables.remove(&table);
        }
    }
}

/// A journal in memory with a disk's crash semantics: `crash` forgets everything applied
/// since the last `flush`.
#[derive(Debug, Default)]
pub struct MemoryJournal {
    /// What a running scheduler sees (applied, maybe not yet durable).
    applied: RefCell<Tables>,
    /// What survives a crash.
    durable: RefCell<Tables>,
}

impl MemoryJournal {
    pub fn new() -> MemoryJournal {
        MemoryJournal::default()
    }

    /// The process died: what was not flushed is gone.
    pub fn crash(&mut self) {
        let durable = self.durable.borrow().clone();
        *self.applied.get_mut() = durable;
    }

    /// What a scheduler started on this journal recovers.
    pub fn load(&self) -> Result<Recovered, JournalError> {
        let tables = self.applied.borrow();
        recover(|table| {
            Ok(tables
                .get(&table)
                .map(|t| t.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                .unwrap_or_default())
        })
    }

    /// How many entries each table holds (applied), by table name.
    pub fn sizes(&self) -> BTreeMap<&'static str, usize> {
        let tables = self.applied.borrow();
        Table::ALL
            .iter()
            .map(|t| (t.name(), tables.get(t).map_or(0, |t| t.len())))
            .collect()
    }
}

impl JournalWrite for MemoryJournal {
    fn apply(&self, op: &JournalOp) -> Result<(), JournalError> {
        let mut tables = self.applied.borrow_mut();
        for w in writes(op) {
            write(&mut tables, w);
        }
        Ok(())
    }

    fn flush(&self) -> Result<(), JournalError> {
        *self.durable.borrow_mut() = self.applied.borrow().clone();
        Ok(())
    }

    fn location(&self) -> String {
        "memory".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::Expr;

    fn submission() -> Submission {
        Submission {
            graph: vec![("x".into(), Expr::Lit(1.into()))],
            outputs: vec!["x".into()],
            keep_results: false,
            restrictions: vec![],
        }
    }

    #[test]
    fn a_crash_keeps_what_was_flushed_and_loses_the_rest() {
        let mut j = MemoryJournal::new();
        let put = |request| JournalOp::PutComputation {
            client: ConnectionId::from("c"),
            request,
            submission: submission(),
        };
        j.apply(&put(RequestId(1))).unwrap();
        j.flush().unwrap();
        j.apply(&put(RequestId(2))).unwrap();
        j.apply(&JournalOp::PutScattered {
            name: "a".into(),
            key: 5.into(),
            nbytes: 3,
            owner: ConnectionId::from("c"),
        })
        .unwrap();
        assert_eq!(j.load().unwrap().computations.len(), 2);
        j.crash();
        let r = j.load().unwrap();
        assert_eq!(
            r.computations,
            vec![(ConnectionId::from("c"), RequestId(1), submission())]
        );
        assert!(r.scattered.is_empty());
    }

    #[test]
    fn clear_keeps_collections() {
        let j = MemoryJournal::new();
        j.apply(&JournalOp::PutCollection {
            name: "n".into(),
            collection: StoredCollection::Native(Collection::from_graph(
                &crate::graph::Graph::new(),
                vec![],
            )),
            owner: Some(ConnectionId::from("alice")),
        })
        .unwrap();
        j.apply(&JournalOp::Clear).unwrap();
        let r = j.load().unwrap();
        assert_eq!(r.collections.len(), 1);
        assert_eq!(
            r.collection_owners,
            vec![("n".to_owned(), ConnectionId::from("alice"))]
        );
    }

    #[test]
    fn collection_owners_follow_their_collections() {
        let mut j = MemoryJournal::new();
        let c =
            StoredCollection::Native(Collection::from_graph(&crate::graph::Graph::new(), vec![]));
        for name in ["kept", "disowned", "deleted"] {
            j.apply(&JournalOp::PutCollection {
                name: name.into(),
                collection: c.clone(),
                owner: Some(ConnectionId::from("alice")),
            })
            .unwrap();
        }
        j.apply(&JournalOp::SetCollectionOwner {
            name: "disowned".into(),
            owner: None,
        })
        .unwrap();
        j.apply(&JournalOp::DeleteCollection {
            name: "deleted".into(),
        })
        .unwrap();
        j.flush().unwrap();
        j.crash();
        let r = j.load().unwrap();
        let names: Vec<&str> = r.collections.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["disowned", "kept"]);
        assert_eq!(
            r.collection_owners,
            vec![("kept".to_owned(), ConnectionId::from("alice"))]
        );
        assert_eq!(j.sizes()["collection_owners"], 1);
    }

    #[test]
    fn native_and_legacy_collections_read_back_as_stored() {
        let mut j = MemoryJournal::new();
        let native = StoredCollection::Native(Collection::from_graph(
            &crate::graph::Graph::new(),
            vec![Key::from("x")],
        ));
        let legacy = StoredCollection::Legacy(LegacyCollection {
            payload: vec![0x80, 4, 0x95, 1, 2, 3, b'.'],
        });
        for (name, c) in [("a", &native), ("b", &legacy)] {
            j.apply(&JournalOp::PutCollection {
                name: name.into(),
                collection: c.clone(),
                owner: None,
            })
            .unwrap();
        }
        j.flush().unwrap();
        j.crash();
        let r = j.load().unwrap();
        assert_eq!(
            r.collections,
            vec![("a".to_owned(), native), ("b".to_owned(), legacy)]
        );
    }

    #[test]
    fn scattered_entries_of_journals_without_owners_read_as_nobodys() {
        let old = Write::Put {
            table: Table::Scattered,
            key: Key::from(5).to_store_key(),
            value: encode_plain(&(Key::from("a"), 3u64)),
        };
        let mut tables = Tables::new();
        write(&mut tables, old);
        for w in writes(&JournalOp::PutScattered {
            name: "b".into(),
            key: 6.into(),
            nbytes: 4,
            owner: ConnectionId::from("c"),
        }) {
            write(&mut tables, w);
        }
        let r = recover(|table| {
            Ok(tables
                .get(&table)
                .map(|t| t.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                .unwrap_or_default())
        })
        .unwrap();
        assert_eq!(
            r.scattered,
            vec![
                ("a".into(), 5.into(), 3, None),
                ("b".into(), 6.into(), 4, Some(ConnectionId::from("c")))
            ]
        );
    }
}
