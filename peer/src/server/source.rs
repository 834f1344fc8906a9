//! Where a node's chunks come from: the [`ChunkSource`] trait the service reads through,
//! and [`StoreSource`], the home's store (shared files, downloads, replica chunk files).
//! Tests wrap a source to inject faults (see `NodeConfig::source_layer`); release code has
//! no fault switch of its own.
//!
//! Records are cached by file id and re-read from disk when a file id is unknown or a
//! requested chunk is not in the cached `have` (a `peer get` in the same home writes its
//! record every quarter second, and this node serves those chunks while the download runs);
//! re-reads of one record happen at most every [`RELOAD_EVERY`] (about that often while a
//! Holdings stream follows it, so `GetChunks` looks again once before refusing a chunk).
//!
//! A shared file is the user's own file: before serving it the node checks that its length
//! and mtime still match the record. A changed or vanished file is refused, the record is
//! marked `changed`, and the holding is withdrawn at the tracker, so nobody is handed bytes
//! that no longer match the manifest. The same check runs over every shared file
//! periodically ([`StoreSource::check_shared_files`], called by the node), one code path.
//!
//! Replica chunks (kind `replica`) are served from their chunk files
//! (`HOME/replicas/<id>/<chunk>.chunk`), only the chunks the record lists.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Bitfield, ChunkLayout, FileId, PeerId};

use crate::home::{Home, Kind, StoreRecord, len_and_mtime};
use crate::tracker_client::TrackerClient;

/// How often one record may be re-read from disk.
pub const RELOAD_EVERY: Duration = Duration::from_millis(200);

/// What a node holds of one file now.
#[derive(Debug)]
pub struct Holding {
    pub(crate) rec: StoreRecord,
    /// The chunks that may be served.
    pub have: Bitfield,
}

impl Holding {
    pub fn chunk_count(&self) -> u32 {
        self.rec.chunk_count()
    }

    /// Whether the file changed on disk since it was indexed (nothing may be served).
    pub fn changed(&self) -> bool {
        self.rec.changed
    }

    /// Where chunk `index` starts in the file and how long it is; `(0, 0)` when the record's
    /// layout has no such chunk (callers check indices against [`Holding::chunk_count`]).
    pub fn span(&self, index: u32) -> (u64, u64) {
        ChunkLayout::new(self.rec.size, self.rec.chunk_size)
            .ok()
            .and_then(|l| l.range(index))
            .unwrap_or((0, 0))
    }
}

/// Why a holding's bytes cannot be opened.
#[derive(Debug)]
pub enum Refused {
    /// The shared file changed or vanished (it has been withdrawn).
    Changed(&'static str),
    Unreadable(std::io::Error),
}

/// The opened bytes of one holding, read one chunk at a time on a blocking thread.
pub trait ChunkReader: Send + Sync {
    /// Exactly `len` bytes of chunk `index`, which starts at `start` in the file.
    ///
    /// # Errors
    /// When the bytes cannot be read (a short read is `UnexpectedEof`).
    fn read(&self, index: u32, start: u64, len: u64) -> std::io::Result<Vec<u8>>;
}

/// What a node serves from.
pub trait ChunkSource: Send + Sync {
    /// What is held of `file`, or `None`. `needed` are the chunks a request asks for: a
    /// source may look again for ones its cached view lacks.
    fn holding(&self, file: &FileId, needed: &[u32]) -> Option<Arc<Holding>>;

    /// Opens a holding's bytes. Blocking: called off the async threads.
    ///
    /// # Errors
    /// [`Refused`] when the bytes are gone, changed or unreadable.
    fn open(&self, file: &FileId, holding: &Holding) -> Result<Box<dyn ChunkReader>, Refused>;

    /// How many files are held (for `Status`).
    fn file_count(&self) -> u32;
}

struct Cached {
    holding: Option<Arc<Holding>>,
    loaded_at: Instant,
}

/// The home's store as a chunk source.
pub struct StoreSource {
    home: Home,
    peer_id: PeerId,
    /// Told when a shared file changed on disk, so it stops listing this node.
    tracker: Option<TrackerClient>,
    cache: Mutex<HashMap<FileId, Cached>>,
}

impl StoreSource {
    pub fn new(home: Home, peer_id: PeerId, tracker: Option<TrackerClient>) -> Self {
        Self {
            home,
            peer_id,
            tracker,
            cache: Mutex::default(),
        }
    }

    fn reload(&self, id: &FileId) -> Option<Arc<Holding>> {
        let holding = match self.home.record(id) {
            Ok(r) => r.map(|rec| {
                let have = if rec.complete && !rec.changed {
                    Bitfield::full(rec.chunk_count())
                } else if rec.changed {
                    Bitfield::new(rec.chunk_count())
                } else {
                    rec.have_bits()
                };
                Arc::new(Holding { rec, have })
            }),
            Err(e) => {
                tracing::warn!(file = %id, "cannot read store record: {e:#}");
                None
            }
        };
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache.insert(
            *id,
            Cached {
                holding: holding.clone(),
                loaded_at: Instant::now(),
            },
        );
        holding
    }

    /// Checks every shared file against its record (length and mtime, as when serving it)
    /// and withdraws those that changed or vanished. Blocking: call it off the async
    /// threads. Returns how many were withdrawn.
    pub fn check_shared_files(&self) -> usize {
        let records = match self.home.records() {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!("cannot read the store: {e:#}");
                return 0;
            }
        };
        let mut n = 0;
        for rec in records
            .iter()
            .filter(|r| r.kind == Kind::Shared && !r.changed)
        {
            if let Err(why) = check_shared(rec) {
                self.shared_file_changed(rec, why);
                n += 1;
            }
        }
        n
    }

    /// Marks a shared record as changed on disk (once), and withdraws it at the tracker.
    fn shared_file_changed(&self, rec: &StoreRecord, why: &str) {
        let mut cur = match self.home.record(&rec.file_id) {
            Ok(Some(r)) if !r.changed && r.kind == Kind::Shared && r.path == rec.path => r,
            _ => return,
        };
        tracing::warn!(
            file = %rec.file_id,
            path = %rec.path.display(),
            "shared file {why}; no longer serving it (run `peer index` again to share the new content)"
        );
        cur.changed = true;
        cur.complete = false;
        if let Err(e) = self.home.save_record(&cur) {
            tracing::warn!("cannot update store record: {e:#}");
        }
        self.reload(&rec.file_id);
        if let Some(t) = self.tracker.clone() {
            let (peer, id) = (self.peer_id.clone(), rec.file_id);
            // Called from blocking threads too: spawn on the runtime this source lives in.
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    if let Err(e) = t.unindex(&peer, &id).await {
                        tracing::warn!(file = %id, "cannot withdraw changed file at the tracker: {e}");
                    }
                });
            }
        }
    }
}

impl ChunkSource for StoreSource {
    fn holding(&self, id: &FileId, needed: &[u32]) -> Option<Arc<Holding>> {
        {
            let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(c) = cache.get(id) {
                let fresh = c.loaded_at.elapsed() < RELOAD_EVERY;
                let sufficient = c
                    .holding
                    .as_ref()
                    .is_some_and(|h| needed.iter().all(|&i| h.have.get(i)));
                if sufficient || fresh {
                    return c.holding.clone();
                }
            }
        }
        self.reload(id)
    }

    fn open(&self, id: &FileId, holding: &Holding) -> Result<Box<dyn ChunkReader>, Refused> {
        let rec = &holding.rec;
        if rec.kind == Kind::Replica {
            return Ok(Box::new(ReplicaChunks(self.home.replica_dir(id))));
        }
        if rec.kind == Kind::Shared {
            if let Err(why) = check_shared(rec) {
                self.shared_file_changed(rec, why);
                return Err(Refused::Changed(why));
            }
            return File::open(&rec.path)
                .map(|f| Box::new(WholeFile(f)) as Box<dyn ChunkReader>)
                .map_err(|_| {
                    self.shared_file_changed(rec, "cannot be opened");
                    Refused::Changed("cannot be opened")
                });
        }
        let f = match File::open(rec.data_path()) {
            Ok(f) => f,
            // The download may have just finished and renamed its part file.
            Err(_) if !rec.complete => File::open(&rec.path).map_err(Refused::Unreadable)?,
            Err(e) => return Err(Refused::Unreadable(e)),
        };
        Ok(Box::new(WholeFile(f)))
    }

    fn file_count(&self) -> u32 {
        self.home.records().map(|r| r.len()).unwrap_or(0) as u32
    }
}

/// Whether a shared file still has the length and mtime it was indexed with; `Err` says
/// what happened to it.
fn check_shared(rec: &StoreRecord) -> Result<(), &'static str> {
    let meta = std::fs::metadata(&rec.path).map_err(|_| "vanished")?;
    if let (Some(len), Some(mtime)) = (rec.file_len, rec.mtime_ns)
        && len_and_mtime(&meta) != (len, mtime)
    {
        return Err("changed on disk");
    }
    Ok(())
}

/// One file holding the whole content (shared or downloaded). Chunks of one request are
/// read one after another, so moving the file's cursor is safe.
struct WholeFile(File);

impl ChunkReader for WholeFile {
    fn read(&self, _index: u32, start: u64, len: u64) -> std::io::Result<Vec<u8>> {
        read_exact_uninit(&self.0, start, len)
    }
}

/// A directory of replica chunk files.
struct ReplicaChunks(PathBuf);

impl ChunkReader for ReplicaChunks {
    fn read(&self, index: u32, _start: u64, len: u64) -> std::io::Result<Vec<u8>> {
        let f = File::open(self.0.join(format!("{index}.chunk")))?;
        if f.metadata()?.len() != len {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "replica chunk has the wrong length",
            ));
        }
        read_exact_uninit(&f, 0, len)
    }
}

/// Reads `len` bytes at `start` into a fresh buffer without zeroing it first (`read_to_end`
/// reads into spare capacity); a zeroed `vec![0; len]` cost the node ~6 % of its time.
fn read_exact_uninit(f: &File, start: u64, len: u64) -> std::io::Result<Vec<u8>> {
    let mut r = f;
    r.seek(SeekFrom::Start(start))?;
    let mut buf = Vec::with_capacity(len as usize);
    r.take(len).read_to_end(&mut buf)?;
    if buf.len() as u64 != len {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    Ok(buf)
}
