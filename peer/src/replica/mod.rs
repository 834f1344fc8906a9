//! The node's replica store: chunks the tracker asked this node to keep for other people's
//! files, within `--storage-quota`.
//!
//! Each chunk is one file, `HOME/replicas/<file_id>/<chunk>.chunk`, holding exactly that
//! chunk's bytes (verified before it was written). A `replica` store record per file
//! (`HOME/store/<file_id>.json`) says which chunks are there, so the node serves them like
//! any other holding and reports them in SyncHoldings.
//!
//! Accounting: `used` counts the bytes of the chunks the records list (each at the chunk's
//! exact length), recomputed from disk at start and by [`ReplicaStore::rescan`]; a fetch
//! first [`ReplicaStore::reserve`]s its bytes, so concurrent fetches can never together pass
//! the quota, and a failed fetch gives them back when its [`Reservation`] is dropped.
//!
//! Every change to the chunk files and replica records happens under one lock, so a drop
//! never races a fetch of the same file. The user's shared and downloaded files and their
//! records are never touched: a record that is not a replica is left as it is.
//!
//! - [`tasks`]: carrying out the tracker's fetch and drop tasks, and the task stream.

pub mod tasks;

use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use common::{Bitfield, ChunkLayout, FileId};

use crate::home::{Home, HomeError, Kind, StoreRecord};
pub use crate::tracker_client::{FileMeta, MAX_REPLICA_CHUNKS};

/// Why the replica store could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    /// A store record could not be read or written.
    #[error(transparent)]
    Home(#[from] HomeError),
    /// A chunk file or directory under `replicas/` could not be created, renamed, read or
    /// removed; `action` is e.g. "create", "remove".
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A chunk index past the end of the file.
    #[error("chunk {chunk} is past the end of the file")]
    NoSuchChunk { chunk: u32 },
    /// The bytes given are not the chunk's exact length.
    #[error("chunk {chunk} has {got} bytes, expected {expected}")]
    WrongLength { chunk: u32, got: u64, expected: u64 },
    /// The fetch reserved less of the quota than the chunk takes.
    #[error("chunk {chunk} needs {needed} bytes of the storage quota, {reserved} were reserved")]
    OverReservation {
        chunk: u32,
        needed: u64,
        reserved: u64,
    },
    /// The file's replica record says another size or chunk size than the task.
    #[error("the replica record of {0} has another layout")]
    LayoutChanged(FileId),
}

fn io_error(action: &'static str, path: &Path, source: io::Error) -> ReplicaError {
    ReplicaError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// Exact length of chunk `i` of a store record's file of `size` bytes cut into `chunk_size`
/// chunks; `None` when the file has no such chunk or the record's chunk size is not a valid
/// one (see [`ChunkLayout`]).
pub fn chunk_len(size: u64, chunk_size: u32, i: u32) -> Option<u64> {
    ChunkLayout::new(size, chunk_size).ok()?.chunk_len(i)
}

/// What this node holds of a chunk, as a fetch task sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holding {
    /// Nothing: the chunk may be fetched.
    Nothing,
    /// A replica of this chunk is already here.
    Replica,
    /// The file is one of the user's own (shared or downloaded): never replicated here.
    OwnFile,
}

/// How [`ReplicaStore::store_chunk`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// The chunk is now kept here.
    New,
    /// Another task stored it meanwhile.
    AlreadyHeld,
    /// The file became one of the user's own meanwhile (a `peer get`); nothing was kept.
    OwnFile,
}

#[derive(Debug, Default)]
struct Acct {
    /// Bytes of the chunks on disk that replica records list.
    used: u64,
    /// Bytes promised to fetches in progress.
    reserved: u64,
}

/// The replica store of one home. Its methods do blocking I/O: call them off the async
/// threads (`spawn_blocking`).
#[derive(Debug)]
pub struct ReplicaStore {
    home: Home,
    quota: u64,
    acct: Mutex<Acct>,
    /// Held while chunk files or replica records change (lock order: `disk`, then `acct`).
    disk: Mutex<()>,
}

/// Bytes reserved for one fetch; given back on drop unless the chunk was stored.
#[derive(Debug)]
pub struct Reservation {
    store: Arc<ReplicaStore>,
    bytes: u64,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.bytes > 0 {
            let mut a = self.store.acct();
            a.reserved = a.reserved.saturating_sub(self.bytes);
        }
    }
}

impl ReplicaStore {
    /// Opens the store of `home` offering `quota` bytes, and counts what is on disk (see
    /// [`ReplicaStore::rescan`]).
    ///
    /// # Errors
    /// When the home's store cannot be read.
    pub fn open(home: Home, quota: u64) -> Result<Arc<Self>, ReplicaError> {
        let store = Arc::new(Self {
            home,
            quota,
            acct: Mutex::default(),
            disk: Mutex::default(),
        });
        store.reconcile(true)?;
        Ok(store)
    }

    fn acct(&self) -> MutexGuard<'_, Acct> {
        self.acct.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn disk(&self) -> MutexGuard<'_, ()> {
        self.disk.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn quota(&self) -> u64 {
        self.quota
    }

    /// Bytes of replica chunks held on disk.
    pub fn used(&self) -> u64 {
        self.acct().used
    }

    /// Bytes promised to fetches in progress.
    pub fn reserved(&self) -> u64 {
        self.acct().reserved
    }

    /// Reserves `bytes` for a fetch, or `None` if held plus reserved bytes would pass the
    /// quota.
    pub fn reserve(self: &Arc<Self>, bytes: u64) -> Option<Reservation> {
        let mut a = self.acct();
        let total = a.used.checked_add(a.reserved)?.checked_add(bytes)?;
        if total > self.quota {
            return None;
        }
        a.reserved += bytes;
        Some(Reservation {
            store: self.clone(),
            bytes,
        })
    }

    /// What this node holds of chunk `chunk` of `id`.
    ///
    /// # Errors
    /// When the record cannot be read.
    pub fn holding(&self, id: &FileId, chunk: u32) -> Result<Holding, ReplicaError> {
        Ok(match self.home.record(id)? {
            None => Holding::Nothing,
            Some(r) if r.kind != Kind::Replica => Holding::OwnFile,
            Some(r) if chunk < r.chunk_count() && r.have_bits().get(chunk) => Holding::Replica,
            Some(_) => Holding::Nothing,
        })
    }

    /// Keeps `data` (already verified as chunk `chunk` of `meta`) as a replica: written to
    /// a temporary file, synced, renamed into place, then recorded. The reservation becomes
    /// used bytes if the chunk is new, and is given back otherwise.
    ///
    /// # Errors
    /// On I/O errors (nothing is then kept and the reservation is given back), or when
    /// `data` is not the chunk's exact length or `res` holds less than that.
    pub fn store_chunk(
        &self,
        meta: &FileMeta,
        chunk: u32,
        data: &[u8],
        mut res: Reservation,
    ) -> Result<Stored, ReplicaError> {
        let len = meta
            .layout
            .chunk_len(chunk)
            .ok_or(ReplicaError::NoSuchChunk { chunk })?;
        if data.len() as u64 != len {
            return Err(ReplicaError::WrongLength {
                chunk,
                got: data.len() as u64,
                expected: len,
            });
        }
        if res.bytes < len {
            return Err(ReplicaError::OverReservation {
                chunk,
                needed: len,
                reserved: res.bytes,
            });
        }
        let dir = self.home.replica_dir(&meta.file_id);
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|e| io_error("create", &dir, e))?;
        let tmp = crate::home::write_temp_beside(&dir.join(format!("{chunk}.chunk")), data, 0o600)
            .map_err(|e| io_error("write a chunk into", &dir, e))?;
        let result = self.commit_chunk(meta, chunk, len, &tmp, &mut res);
        if !matches!(result, Ok(Stored::New)) {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    /// Renames the temp file into place and records the chunk, under the disk lock.
    fn commit_chunk(
        &self,
        meta: &FileMeta,
        chunk: u32,
        len: u64,
        tmp: &Path,
        res: &mut Reservation,
    ) -> Result<Stored, ReplicaError> {
        let _disk = self.disk();
        let mut rec = match self.home.record(&meta.file_id)? {
            Some(r) if r.kind != Kind::Replica => return Ok(Stored::OwnFile),
            Some(r) => {
                if r.size != meta.layout.size() || r.chunk_size != meta.layout.chunk_size() {
                    return Err(ReplicaError::LayoutChanged(meta.file_id));
                }
                r
            }
            None => new_record(&self.home, meta),
        };
        let mut have = rec.have_bits();
        if have.get(chunk) {
            return Ok(Stored::AlreadyHeld);
        }
        let path = self.home.replica_chunk_path(&meta.file_id, chunk);
        fs::rename(tmp, &path).map_err(|e| io_error("create", &path, e))?;
        sync_dir(path.parent().unwrap_or(Path::new(".")));
        have.set(chunk);
        set_have(&mut rec, &have);
        if let Err(e) = self.home.save_record(&rec) {
            let _ = fs::remove_file(&path);
            return Err(e.into());
        }
        let mut a = self.acct();
        a.reserved = a.reserved.saturating_sub(res.bytes);
        a.used += len;
        res.bytes = 0;
        Ok(Stored::New)
    }

    /// Deletes the replica copies of `chunks` of `id` and returns the bytes freed. The
    /// record and the directory go when no chunk is left. A file that is not a replica here
    /// (the user's own, or unknown) is left alone and frees nothing.
    ///
    /// # Errors
    /// When the record cannot be read or written, or a chunk file cannot be deleted.
    pub fn drop_chunks(&self, id: &FileId, chunks: &[u32]) -> Result<u64, ReplicaError> {
        let _disk = self.disk();
        let mut rec = match self.home.record(id)? {
            Some(r) if r.kind == Kind::Replica => r,
            _ => return Ok(0),
        };
        let mut have = rec.have_bits();
        let mut freed = 0;
        for &c in chunks {
            if c >= have.len() || !have.get(c) {
                continue;
            }
            remove_file_if_exists(&self.home.replica_chunk_path(id, c))?;
            have.clear(c);
            freed += chunk_len(rec.size, rec.chunk_size, c).unwrap_or(0);
        }
        let result = if have.count() == 0 {
            self.home.delete_record(id).map(|_| ())
        } else {
            set_have(&mut rec, &have);
            self.home.save_record(&rec)
        };
        {
            let mut a = self.acct();
            a.used = a.used.saturating_sub(freed);
        }
        result?;
        if have.count() == 0 {
            // Fails (and is left) while a fetch of another chunk still has a temp file in it.
            let _ = fs::remove_dir(self.home.replica_dir(id));
        }
        Ok(freed)
    }

    /// Deletes every replica chunk of `id` (the tracker no longer knows the file).
    ///
    /// # Errors
    /// As [`ReplicaStore::drop_chunks`].
    pub fn forget(&self, id: &FileId) -> Result<u64, ReplicaError> {
        let all: Vec<u32> = match self.home.record(id)? {
            Some(r) if r.kind == Kind::Replica => (0..r.chunk_count()).collect(),
            _ => return Ok(0),
        };
        self.drop_chunks(id, &all)
    }

    /// Makes the disk and the records agree, and recounts `used`: a listed chunk whose file
    /// is missing or has the wrong length is unlisted; chunk files no record lists, leftover
    /// temp files, and directories of files that are no longer replicas (a `peer get` took
    /// the file over) are deleted; temp files only at start, when no fetch is running.
    /// Returns the bytes held.
    ///
    /// # Errors
    /// When the store cannot be read.
    pub fn rescan(&self) -> Result<u64, ReplicaError> {
        self.reconcile(false)
    }

    fn reconcile(&self, at_start: bool) -> Result<u64, ReplicaError> {
        let _disk = self.disk();
        let mut used = 0u64;
        let records = self.home.records()?;
        let mut kept: HashMap<FileId, Bitfield> = HashMap::new();
        for mut rec in records.into_iter().filter(|r| r.kind == Kind::Replica) {
            let id = &rec.file_id.clone();
            let mut have = rec.have_bits();
            let before = have.count();
            for c in have.clone().iter_ones() {
                let want = chunk_len(rec.size, rec.chunk_size, c);
                let got = fs::metadata(self.home.replica_chunk_path(id, c)).map(|m| m.len());
                match (want, got) {
                    (Some(w), Ok(g)) if w == g => used += w,
                    _ => {
                        tracing::warn!(file = %id, chunk = c, "replica chunk missing or damaged; forgetting it");
                        let _ = fs::remove_file(self.home.replica_chunk_path(id, c));
                        have.clear(c);
                    }
                }
            }
            if have.count() == 0 {
                self.home.delete_record(id)?;
            } else if have.count() != before {
                set_have(&mut rec, &have);
                self.home.save_record(&rec)?;
            }
            kept.insert(*id, have);
        }
        self.sweep(&kept, at_start)?;
        self.acct().used = used;
        Ok(used)
    }

    /// Deletes what no replica record accounts for under `replicas/`: chunk files not
    /// listed (all of them for a file that is not a replica), stray entries, and, when
    /// `temps` (at start, when no fetch can be running), leftover temp files.
    fn sweep(&self, kept: &HashMap<FileId, Bitfield>, temps: bool) -> Result<(), ReplicaError> {
        let root = self.home.replicas_dir();
        let entries = match fs::read_dir(&root) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_error("read", &root, e)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| io_error("read", &root, e))?;
            let path = entry.path();
            let kind = entry
                .file_type()
                .map_err(|e| io_error("inspect", &path, e))?;
            if !kind.is_dir() {
                fs::remove_file(&path).map_err(|e| io_error("remove", &path, e))?;
                continue;
            }
            let id = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<FileId>().ok());
            let empty = Bitfield::new(0);
            let have = id.and_then(|id| kept.get(&id)).unwrap_or(&empty);
            for f in fs::read_dir(&path).map_err(|e| io_error("read", &path, e))? {
                let f = f.map_err(|e| io_error("read", &path, e))?;
                let (name, fpath) = (f.file_name(), f.path());
                let name = name.to_str().unwrap_or("");
                if name.ends_with(".tmp") && !temps {
                    continue;
                }
                let listed = name
                    .strip_suffix(".chunk")
                    .and_then(|n| n.parse::<u32>().ok())
                    .is_some_and(|c| c < have.len() && have.get(c));
                if listed {
                    continue;
                }
                let kind = f.file_type().map_err(|e| io_error("inspect", &fpath, e))?;
                let removed = if kind.is_dir() {
                    fs::remove_dir_all(&fpath)
                } else {
                    fs::remove_file(&fpath)
                };
                removed.map_err(|e| io_error("remove", &fpath, e))?;
            }
            if have.count() == 0 {
                // Fails (and is left) while a fetch still has a temp file in it.
                let _ = fs::remove_dir(&path);
            }
        }
        Ok(())
    }
}

/// A new, empty replica record for `meta`.
fn new_record(home: &Home, meta: &FileMeta) -> StoreRecord {
    StoreRecord {
        file_id: meta.file_id,
        name: meta.name.clone(),
        size: meta.layout.size(),
        sha256: String::new(),
        chunk_size: meta.layout.chunk_size(),
        chunk_hashes: Vec::new(),
        kind: Kind::Replica,
        path: home.replica_dir(&meta.file_id),
        complete: false,
        have: hex::encode(Bitfield::new(meta.layout.chunk_count() as u32).as_bytes()),
        file_len: None,
        mtime_ns: None,
        changed: false,
        folder: None,
    }
}

fn set_have(rec: &mut StoreRecord, have: &Bitfield) {
    rec.have = hex::encode(have.as_bytes());
    rec.complete = have.is_complete();
}

/// Makes a rename in `dir` durable (best effort).
fn sync_dir(dir: &Path) {
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

fn remove_file_if_exists(path: &Path) -> Result<(), ReplicaError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_error("remove", path, e)),
    }
}

#[cfg(test)]
pub(crate) mod tests;
