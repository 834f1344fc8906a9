//! The files a download touches: where it writes (always inside `--output`), the part file
//! it resumes, and the final link into place that never replaces an existing file.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use common::{Bitfield, Manifest};

use super::error::DownloadError;

/// The final path of `name` inside `output`: one sanitised component, so it can never
/// leave `output` whatever the name says.
pub fn final_path(output: &Path, name: &str) -> PathBuf {
    output.join(common::names::safe_file_name(name))
}

/// What is at the final path already.
#[derive(Debug)]
pub enum Existing {
    Nothing,
    /// The same content: nothing to fetch.
    Same,
}

/// Checks the final path: nothing there, or the same content (same size and SHA-256).
///
/// # Errors
/// When something else is there: it is never overwritten.
pub fn check_existing(final_path: &Path, m: &Manifest) -> Result<Existing, DownloadError> {
    let differs = || DownloadError::OutputTaken {
        path: final_path.to_path_buf(),
        name: common::names::printable(&m.name, 200),
    };
    let meta = match std::fs::symlink_metadata(final_path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Existing::Nothing),
        Err(e) => return Err(DownloadError::io("inspect", final_path, e)),
    };
    if !meta.is_file() || meta.len() != m.size {
        return Err(differs());
    }
    let whole = common::manifest::hash_file(final_path, m.name.clone())
        .map_err(|e| DownloadError::io("read", final_path, e))?;
    if whole.sha256 == m.sha256 {
        Ok(Existing::Same)
    } else {
        Err(differs())
    }
}

/// Opens (creating if needed) the part file, locks it against a second `get` of the same
/// file, and cuts it to the file's size if it is longer. Never follows a symlink.
///
/// The file is not extended up front: it grows as chunks are written. A sparse extension
/// would reserve no space anyway, and under a file size limit it would fail before a single
/// chunk was kept, where growing keeps every chunk below the limit for the next `get`.
///
/// # Errors
/// When it cannot be opened, is locked by another process, or cannot be cut.
pub fn open_part(part: &Path, size: u64) -> Result<(File, u64), DownloadError> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW)
        .open(part)
        .map_err(|e| DownloadError::io("open", part, e))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            return Err(DownloadError::PartLocked(part.to_path_buf()));
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(DownloadError::io("lock", part, e)),
    }
    let meta = file
        .metadata()
        .map_err(|e| DownloadError::io("inspect", part, e))?;
    if !meta.is_file() {
        return Err(DownloadError::PartNotAFile(part.to_path_buf()));
    }
    let existing = meta.len();
    if existing > size {
        file.set_len(size)
            .map_err(|e| DownloadError::io("size", part, e))?;
    }
    Ok((file, existing.min(size)))
}

/// The chunks already in a part file of `existing_len` bytes that hash right (read one
/// chunk at a time; call from a blocking thread).
pub fn verified_in_part(file: &File, existing_len: u64, m: &Manifest) -> Bitfield {
    let mut have = Bitfield::new(m.chunk_count());
    let mut buf = Vec::new();
    for i in 0..m.chunk_count() {
        let r = m.chunk_range(i);
        if r.end > existing_len {
            break;
        }
        buf.resize((r.end - r.start) as usize, 0);
        if file.read_exact_at(&mut buf, r.start).is_ok() && m.check_chunk(i, &buf) {
            have.set(i);
        }
    }
    have
}

/// Moves the finished part file to its final name without replacing anything there.
///
/// # Errors
/// When the final path appeared meanwhile, or the move fails.
pub fn publish(part: &Path, final_path: &Path) -> Result<(), DownloadError> {
    let appeared = || DownloadError::OutputAppeared {
        final_path: final_path.to_path_buf(),
        part: part.to_path_buf(),
    };
    match std::fs::hard_link(part, final_path) {
        Ok(()) => {
            std::fs::remove_file(part).map_err(|e| DownloadError::io("remove", part, e))?;
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Err(appeared()),
        // Filesystems without hard links: check, then rename.
        Err(_) => {
            if std::fs::symlink_metadata(final_path).is_ok() {
                return Err(appeared());
            }
            std::fs::rename(part, final_path).map_err(|source| DownloadError::Publish {
                part: part.to_path_buf(),
                source,
            })?;
        }
    }
    if let Some(dir) = final_path.parent()
        && let Ok(d) = File::open(dir)
    {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn final_paths_stay_inside_output() {
        let out = Path::new("/o");
        for hostile in ["../../etc/passwd", "/abs", "..", "a/../../b", "x\0y", "\n"] {
            let p = final_path(out, hostile);
            assert_eq!(p.parent(), Some(out), "{hostile:?} -> {}", p.display());
        }
        assert_eq!(final_path(out, "song.mp3"), Path::new("/o/song.mp3"));
    }

    #[test]
    fn existing_files_are_never_overwritten() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src.bin");
        std::fs::write(&src, b"hello").unwrap();
        let m = common::manifest::hash_file(&src, "src.bin".into()).unwrap();
        assert!(matches!(
            check_existing(&tmp.path().join("none"), &m),
            Ok(Existing::Nothing)
        ));
        assert!(matches!(check_existing(&src, &m), Ok(Existing::Same)));
        let other = tmp.path().join("other");
        std::fs::write(&other, b"hellO").unwrap();
        let err = check_existing(&other, &m).unwrap_err().to_string();
        assert!(err.contains("exists and differs"), "{err}");

        let part = tmp.path().join("x.part");
        std::fs::write(&part, b"data").unwrap();
        let err = publish(&part, &other).unwrap_err().to_string();
        assert!(err.contains("appeared"), "{err}");
        assert_eq!(std::fs::read(&other).unwrap(), b"hellO");
        publish(&part, &tmp.path().join("final")).unwrap();
        assert!(!part.exists());
    }

    #[test]
    fn part_files_resume_only_good_chunks() {
        let tmp = tempfile::tempdir().unwrap();
        let cs = common::manifest::MIN_CHUNK_SIZE as usize;
        let data: Vec<u8> = (0..cs * 3 + 10).map(|i| (i % 251) as u8).collect();
        let src = tmp.path().join("src");
        std::fs::write(&src, &data).unwrap();
        let m = common::manifest::hash_file(&src, "src".into()).unwrap();
        // A part file with chunk 0 right, chunk 1 wrong, and half of chunk 2.
        let mut part_data = data[..cs * 2 + cs / 2].to_vec();
        part_data[cs + 5] ^= 1;
        let part = tmp.path().join("p");
        std::fs::write(&part, &part_data).unwrap();
        let (f, len) = open_part(&part, m.size).unwrap();
        assert_eq!(len, part_data.len() as u64);
        assert_eq!(f.metadata().unwrap().len(), len, "not extended up front");
        let have = verified_in_part(&f, len, &m);
        assert_eq!(have.iter_ones().collect::<Vec<_>>(), vec![0]);
        // A second opener is refused while the first holds the lock.
        let err = open_part(&part, m.size).unwrap_err().to_string();
        assert!(err.contains("already writing"), "{err}");
        drop(f);
        // A part file longer than the content is cut.
        std::fs::write(&part, vec![0u8; m.size as usize + 99]).unwrap();
        let (f, len) = open_part(&part, m.size).unwrap();
        assert_eq!((len, f.metadata().unwrap().len()), (m.size, m.size));
    }
}

/// Starts writing a part file's data to disk while the download goes on, so the `fsync`
/// before the final rename waits for the last few chunks instead of the whole file (about
/// 0.3 s per GiB here). One `fdatasync` at a time runs on a blocking thread every
/// [`Writeback::EVERY`] bytes written; a failure is left for the final `fsync` to report.
#[derive(Debug, Default)]
pub struct Writeback {
    unsynced: AtomicU64,
    running: Arc<AtomicBool>,
}

impl Writeback {
    pub const EVERY: u64 = 64 << 20;

    /// Counts `bytes` just written to `file`; starts a background sync when due.
    pub fn wrote(&self, file: &Arc<File>, bytes: u64) {
        let total = self.unsynced.fetch_add(bytes, Ordering::Relaxed) + bytes;
        if total < Self::EVERY || self.running.swap(true, Ordering::AcqRel) {
            return;
        }
        self.unsynced.store(0, Ordering::Relaxed);
        let (file, running) = (file.clone(), self.running.clone());
        tokio::task::spawn_blocking(move || {
            let _ = file.sync_data();
            running.store(false, Ordering::Release);
        });
    }
}
