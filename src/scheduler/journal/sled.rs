//! The journal's tables on disk: one sled tree per `Table`; `tables.rs` decides what each
//! operation writes and what the trees recover.
//!
//! Durability: `flush` is sled's `flush` (its log buffers written out, then
//! `sync_file_range` on Linux, which does not flush the drive's write cache nor the file's
//! metadata), followed by an `fsync` of sled's data file done here, so what `flush` returned
//! `Ok` for survives a power loss too (on a drive that honours flushes).

use std::fs::File;
use std::path::{Path, PathBuf};

use zask_storage::StoreError;

use super::tables::{self, Table, Write};
use super::write::{JournalError, JournalWrite};
use crate::scheduler::core::{JournalOp, Recovered};

pub struct Journal {
    db: sled::Db,
    dir: PathBuf,
    /// sled's data file, for the `fsync` sled 0.34 leaves to its background flusher.
    data_file: File,
    computations: sled::Tree,
    scattered: sled::Tree,
    collections: sled::Tree,
    collection_owners: sled::Tree,
}

fn io(e: impl std::fmt::Display) -> JournalError {
    JournalError::Io(e.to_string())
}

fn sled_error(e: sled::Error) -> JournalError {
    match e {
        sled::Error::Corruption { .. } => JournalError::Corrupted(e.to_string()),
        other => io(other),
    }
}

impl Journal {
    pub fn open(dir: &Path) -> Result<Journal, JournalError> {
        let db = zask_storage::open_sled(dir).map_err(|e| match e {
            StoreError::Locked { path } => JournalError::Locked { path },
            StoreError::Corrupted(message) => JournalError::Corrupted(message),
            other => io(other),
        })?;
        let tree = |t: Table| db.open_tree(t.name()).map_err(sled_error);
        let computations = tree(Table::Computations)?;
        let scattered = tree(Table::Scattered)?;
        let collections = tree(Table::Collections)?;
        let collection_owners = tree(Table::CollectionOwners)?;
        let data_file = File::open(dir.join("db")).map_err(io)?;
        Ok(Journal {
            db,
            dir: dir.to_path_buf(),
            data_file,
            computations,
            scattered,
            collections,
            collection_owners,
        })
    }

    fn tree(&self, table: Table) -> &sled::Tree {
        match table {
            Table::Computations => &self.computations,
            Table::Scattered => &self.scattered,
            Table::Collections => &self.collections,
            Table::CollectionOwners => &self.collection_owners,
        }
    }

    /// Everything written by earlier runs (unreadable entries are skipped with a warning).
    pub fn load(&self) -> Result<Recovered, JournalError> {
        tables::recover(|table| {
            self.tree(table)
                .iter()
                .map(|entry| {
                    entry
                        .map(|(k, v)| (k.to_vec(), v.to_vec()))
                        .map_err(sled_error)
                })
                .collect()
        })
    }

    /// Writes one operation (durable after the next `flush`).
    pub fn apply(&self, op: &JournalOp) -> Result<(), JournalError> {
        for w in tables::writes(op) {
            match w {
                Write::Put { table, key, value } => {
                    self.tree(table).insert(key, value).map_err(sled_error)?;
                }
                Write::Remove { table, key } => {
                    self.tree(table).remove(key).map_err(sled_error)?;
                }
                Write::Clear(table) => self.tree(table).clear().map_err(sled_error)?,
            }
        }
        Ok(())
    }

    /// Makes everything applied so far durable, also against a power loss.
    pub fn flush(&self) -> Result<(), JournalError> {
        self.db.flush().map_err(sled_error)?;
        self.data_file.sync_all().map_err(io)
    }
}

impl JournalWrite for Journal {
    fn apply(&self, op: &JournalOp) -> Result<(), JournalError> {
        Journal::apply(self, op)
    }

    fn flush(&self) -> Result<(), JournalError> {
        Journal::flush(self)
    }

    fn location(&self) -> String {
        self.dir.display().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::Expr;
    use crate::protocol::{ConnectionId, RequestId, WorkerSelector};
    use crate::scheduler::core::Submission;

    #[test]
    fn what_is_written_comes_back_after_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let submission = Submission {
            graph: vec![("x".into(), Expr::Lit(1.into()))],
            outputs: vec!["x".into()],
            keep_results: false,
            restrictions: vec![("x".into(), vec![WorkerSelector::Name("w1".into())])],
        };
        {
            let j = Journal::open(dir.path()).unwrap();
            for op in [
                JournalOp::PutComputation {
                    client: ConnectionId::from("c1"),
                    request: RequestId(1),
                    submission: submission.clone(),
                },
                JournalOp::PutComputation {
                    client: ConnectionId::from("c1"),
                    request: RequestId(2),
                    submission: submission.clone(),
                },
                JournalOp::DeleteComputation {
                    client: ConnectionId::from("c1"),
                    request: RequestId(1),
                },
                JournalOp::PutScattered {
                    name: "a".into(),
                    key: 17.into(),
                    nbytes: 9,
                    owner: ConnectionId::from("c1"),
                },
            ] {
                j.apply(&op).unwrap();
            }
            j.flush().unwrap();
        }
        let j = Journal::open(dir.path()).unwrap();
        let r = j.load().unwrap();
        assert_eq!(
            r.computations,
            vec![(ConnectionId::from("c1"), RequestId(2), submission)]
        );
        assert_eq!(
            r.scattered,
            vec![("a".into(), 17.into(), 9, Some(ConnectionId::from("c1")))]
        );
        j.apply(&JournalOp::Clear).unwrap();
        assert_eq!(j.load().unwrap(), Recovered::default());
    }

    #[test]
    fn a_held_state_dir_is_locked_and_worth_retrying() {
        let dir = tempfile::tempdir().unwrap();
        let _first = Journal::open(dir.path()).unwrap();
        let Err(e) = Journal::open(dir.path()) else {
            panic!("a second journal opened the same state dir");
        };
        assert!(matches!(e, JournalError::Locked { .. }), "{e:?}");
        assert!(e.retry_may_help());
    }
}
