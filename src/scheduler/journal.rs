//! The scheduler's journal on disk (sled): what a restarted scheduler needs to resume —
//! graphs that clients still wait for and the names of scattered data. The core decides what
//! to write (`JournalOp`); this module only stores and reads it back.
//!
//! Durability: `flush` is sled's `flush` (its log buffers written out, then
//! `sync_file_range` on Linux, which does not flush the drive's write cache nor the file's
//! metadata), followed by an `fsync` of sled's data file done here, so what `flush` returned
//! `Ok` for survives a power loss too (on a drive that honours flushes).

use std::fs::File;
use std::path::{Path, PathBuf};

use super::core::{JournalOp, Recovered, Submission};
use crate::graph::Key;
use crate::protocol::codec::{decode_plain, encode_plain};
use crate::protocol::FrameIdentity;

/// Where the scheduler's IO loop makes each batch's journal operations durable before any of
/// the batch's messages leave. A trait so that tests can put a failing journal under the
/// shipped loop.
pub trait JournalWrite {
    fn apply(&self, op: &JournalOp) -> Result<(), String>;
    /// Makes everything applied so far durable.
    fn flush(&self) -> Result<(), String>;
    /// Where the journal lives, for error messages.
    fn location(&self) -> String;
}

impl<T: JournalWrite + ?Sized> JournalWrite for &T {
    fn apply(&self, op: &JournalOp) -> Result<(), String> {
        (**self).apply(op)
    }
    fn flush(&self) -> Result<(), String> {
        (**self).flush()
    }
    fn location(&self) -> String {
        (**self).location()
    }
}

pub struct Journal {
    db: sled::Db,
    dir: PathBuf,
    /// sled's data file, for the `fsync` sled 0.34 leaves to its background flusher.
    data_file: File,
    computations: sled::Tree,
    scattered: sled::Tree,
    collections: sled::Tree,
}

fn io(e: impl std::fmt::Display) -> String {
    format!("state dir: {e}")
}

impl Journal {
    pub fn open(dir: &Path) -> Result<Journal, String> {
        let db = zask_storage::open_sled(dir).map_err(io)?;
        let computations = db.open_tree("computations").map_err(io)?;
        let scattered = db.open_tree("scattered").map_err(io)?;
        let collections = db.open_tree("collections").map_err(io)?;
        let data_file = File::open(dir.join("db")).map_err(io)?;
        Ok(Journal {
            db,
            dir: dir.to_path_buf(),
            data_file,
            computations,
            scattered,
            collections,
        })
    }

    /// Everything written by earlier runs. Unreadable entries are skipped with a warning:
    /// a damaged entry must not keep the scheduler from starting.
    pub fn load(&self) -> Result<Recovered, String> {
        let mut recovered = Recovered::default();
        for entry in self.computations.iter() {
            let (k, v) = entry.map_err(io)?;
            match (
                decode_plain::<(FrameIdentity, u64)>(&k),
                decode_plain::<Submission>(&v),
            ) {
                (Ok((client, request)), Ok(submission)) => {
                    recovered.computations.push((client, request, submission))
                }
                _ => log::warn!("skipping an unreadable journal entry"),
            }
        }
        for entry in self.scattered.iter() {
            let (k, v) = entry.map_err(io)?;
            match (Key::from_store_key(&k), decode_plain::<(Key, u64)>(&v)) {
                (Some(key), Ok((name, nbytes))) => recovered.scattered.push((name, key, nbytes)),
                _ => log::warn!("skipping an unreadable journal entry"),
            }
        }
        for entry in self.collections.iter() {
            let (k, v) = entry.map_err(io)?;
            match (String::from_utf8(k.to_vec()), decode_plain(&v)) {
                (Ok(name), Ok(collection)) => recovered.collections.push((name, collection)),
                _ => log::warn!("skipping an unreadable journal entry"),
            }
        }
        Ok(recovered)
    }

    /// Writes one operation (durable after the next `flush`).
    pub fn apply(&self, op: &JournalOp) -> Result<(), String> {
        match op {
            JournalOp::PutComputation {
                client,
                request,
                submission,
            } => {
                self.computations
                    .insert(encode_plain(&(client, request)), encode_plain(submission))
                    .map_err(io)?;
            }
            JournalOp::DeleteComputation { client, request } => {
                self.computations
                    .remove(encode_plain(&(client, request)))
                    .map_err(io)?;
            }
            JournalOp::PutScattered { name, key, nbytes } => {
                self.scattered
                    .insert(key.to_store_key(), encode_plain(&(name, nbytes)))
                    .map_err(io)?;
            }
            JournalOp::DeleteScattered { key } => {
                self.scattered.remove(key.to_store_key()).map_err(io)?;
            }
            JournalOp::PutCollection { name, collection } => {
                self.collections
                    .insert(name.as_bytes(), encode_plain(collection))
                    .map_err(io)?;
            }
            JournalOp::DeleteCollection { name } => {
                self.collections.remove(name.as_bytes()).map_err(io)?;
            }
            JournalOp::Clear => {
                self.computations.clear().map_err(io)?;
                self.scattered.clear().map_err(io)?;
            }
        }
        Ok(())
    }

    /// Makes everything applied so far durable, also against a power loss.
    pub fn flush(&self) -> Result<(), String> {
        self.db.flush().map_err(io)?;
        self.data_file.sync_all().map_err(io)
    }
}

impl JournalWrite for Journal {
    fn apply(&self, op: &JournalOp) -> Result<(), String> {
        Journal::apply(self, op)
    }

    fn flush(&self) -> Result<(), String> {
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

    #[test]
    fn what_is_written_comes_back_after_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let submission = Submission {
            graph: vec![("x".into(), Expr::Lit(1.into()))],
            outputs: vec!["x".into()],
            keep_results: false,
            restrictions: vec![("x".into(), vec!["w1".into()])],
        };
        {
            let j = Journal::open(dir.path()).unwrap();
            for op in [
                JournalOp::PutComputation {
                    client: b"c1".to_vec(),
                    request: 1,
                    submission: submission.clone(),
                },
                JournalOp::PutComputation {
                    client: b"c1".to_vec(),
                    request: 2,
                    submission: submission.clone(),
                },
                JournalOp::DeleteComputation {
                    client: b"c1".to_vec(),
                    request: 1,
                },
                JournalOp::PutScattered {
                    name: "a".into(),
                    key: 17.into(),
                    nbytes: 9,
                },
            ] {
                j.apply(&op).unwrap();
            }
            j.flush().unwrap();
        }
        let j = Journal::open(dir.path()).unwrap();
        let r = j.load().unwrap();
        assert_eq!(r.computations, vec![(b"c1".to_vec(), 2, submission)]);
        assert_eq!(r.scattered, vec![("a".into(), 17.into(), 9)]);
        j.apply(&JournalOp::Clear).unwrap();
        assert_eq!(j.load().unwrap(), Recovered::default());
    }
}
