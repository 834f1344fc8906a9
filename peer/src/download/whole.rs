//! The whole-file SHA-256 of a download, computed while it runs.
//!
//! Chunk hashes prove every chunk, and the file id commits to them, but not to the
//! whole-file `sha256` the tracker lists: the sharer announces that value, and a tracker
//! relays it. The contract promises that a finished file's SHA-256 equals the listed one,
//! so the getter hashes the bytes it wrote. A thread of its own reads the part file front
//! to back as its verified prefix grows (from the page cache, while later chunks are still
//! arriving), so when the last chunk lands only the tail is left to hash.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::sync::mpsc;
use std::thread::JoinHandle;

use common::{Bitfield, Manifest, Sha256Digest};
use sha2::{Digest, Sha256};

/// Read size of the hashing thread.
const READ: usize = 1 << 20;

/// Feeds the verified prefix of a part file to a hashing thread.
pub struct WholeHash {
    manifest: Arc<Manifest>,
    landed: Bitfield,
    /// Chunks `0..prefix` are verified and handed to the thread.
    prefix: u32,
    tx: mpsc::Sender<u64>,
    thread: JoinHandle<io::Result<Sha256Digest>>,
}

impl WholeHash {
    /// Starts hashing `file`; the chunks in `have` are already verified in it.
    ///
    /// # Errors
    /// When the thread cannot be started.
    pub fn start(file: Arc<File>, manifest: Arc<Manifest>, have: &Bitfield) -> io::Result<Self> {
        let (tx, rx) = mpsc::channel::<u64>();
        let size = manifest.size;
        let thread = std::thread::Builder::new()
            .name("whole-sha256".into())
            .spawn(move || hash_prefix(&file, size, &rx))?;
        let mut w = Self {
            landed: Bitfield::new(manifest.chunk_count()),
            manifest,
            prefix: 0,
            tx,
            thread,
        };
        for i in have.iter_ones() {
            w.landed.set(i);
        }
        w.advance();
        Ok(w)
    }

    /// Chunk `i` was verified and written.
    pub fn landed(&mut self, i: u32) {
        self.landed.set(i);
        self.advance();
    }

    fn advance(&mut self) {
        let n = self.manifest.chunk_count();
        let before = self.prefix;
        while self.prefix < n && self.landed.get(self.prefix) {
            self.prefix += 1;
        }
        if self.prefix > before {
            let end = self.manifest.chunk_range(self.prefix - 1).end;
            // A closed channel means the thread failed; `finish` reports why.
            let _ = self.tx.send(end);
        }
    }

    /// Waits for the digest of the whole file (call once every chunk has landed).
    ///
    /// # Errors
    /// When reading the part file failed, or not every chunk landed.
    pub async fn finish(self) -> io::Result<Sha256Digest> {
        let Self { tx, thread, .. } = self;
        drop(tx);
        tokio::task::spawn_blocking(move || {
            thread
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("the hashing thread panicked")))
        })
        .await
        .map_err(io::Error::other)?
    }
}

/// Hashes `file` front to back up to each offset received, then checks it reached `size`.
fn hash_prefix(file: &File, size: u64, rx: &mpsc::Receiver<u64>) -> io::Result<Sha256Digest> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; READ];
    let mut done = 0u64;
    for end in rx {
        while done < end {
            let n = (end - done).min(READ as u64) as usize;
            file.read_exact_at(&mut buf[..n], done)?;
            h.update(&buf[..n]);
            done += n as u64;
        }
    }
    if done != size {
        return Err(io::Error::other(format!(
            "hashed {done} of {size} bytes: the download ended early"
        )));
    }
    Ok(Sha256Digest(h.finalize().into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest_of(data: &[u8]) -> (tempfile::TempDir, Arc<Manifest>) {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        std::fs::write(&src, data).unwrap();
        let m = common::manifest::hash_file(&src, "src".into()).unwrap();
        (tmp, Arc::new(m))
    }

    #[tokio::test]
    async fn hashes_chunks_landing_in_any_order_and_resumed_ones() {
        let cs = common::manifest::MIN_CHUNK_SIZE as usize;
        let data: Vec<u8> = (0..cs * 5 + 123).map(|i| (i * 7 % 253) as u8).collect();
        let (tmp, m) = manifest_of(&data);
        let part = tmp.path().join("part");
        std::fs::write(&part, &data).unwrap();
        let file = Arc::new(File::open(&part).unwrap());
        let mut have = Bitfield::new(m.chunk_count());
        have.set(1);
        let mut w = WholeHash::start(file, m.clone(), &have).unwrap();
        for i in [5, 3, 0, 2, 4] {
            w.landed(i);
        }
        assert_eq!(w.finish().await.unwrap(), m.sha256);
    }

    #[tokio::test]
    async fn reports_bytes_that_differ_from_the_listed_hash_and_missing_chunks() {
        let cs = common::manifest::MIN_CHUNK_SIZE as usize;
        let data = vec![9u8; cs * 2];
        let (tmp, m) = manifest_of(&data);
        let part = tmp.path().join("part");
        let mut other = data.clone();
        other[7] ^= 1;
        std::fs::write(&part, &other).unwrap();
        let file = Arc::new(File::open(&part).unwrap());
        let mut w = WholeHash::start(file.clone(), m.clone(), &Bitfield::new(2)).unwrap();
        w.landed(1);
        w.landed(0);
        assert_ne!(w.finish().await.unwrap(), m.sha256);

        let mut w = WholeHash::start(file, m, &Bitfield::new(2)).unwrap();
        w.landed(1);
        let err = w.finish().await.unwrap_err().to_string();
        assert!(err.contains("ended early"), "{err}");
    }
}
