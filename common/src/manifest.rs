//! How a file is cut into chunks and how every chunk is checked.
//!
//! A file of `size` bytes is cut into `ceil(size / chunk_size)` chunks; the last one may be
//! short and an empty file has none. [`ChunkLayout`] is that rule, with the chunk size
//! checked once: manifests, replication tasks, the replica store and the chunk server all
//! compute chunk counts and byte ranges through it. The manifest lists the SHA-256 of every chunk and of
//! the whole file (what `sha256sum` prints). The file's id is the SHA-256 of the manifest's
//! layout (size, chunk size, chunk hashes), so a getter who knows the id can check a chunk
//! map before it trusts a single byte of it.

use std::fs::File;
use std::io::{self, Read};
use std::ops::Range;
use std::path::Path;
use std::sync::mpsc::sync_channel;

use sha2::{Digest, Sha256};

use crate::names::{NameError, check_file_name};
use crate::{FileId, Sha256Digest};

/// The smallest chunk: 1 MiB, a good unit for parallel fetching and verification.
pub const MIN_CHUNK_SIZE: u32 = 1 << 20;
/// The largest chunk a peer will send or accept in one message.
pub const MAX_CHUNK_SIZE: u32 = 16 << 20;
/// Chunk sizes grow past 1 MiB only to keep a file under this many chunks.
const TARGET_MAX_CHUNKS: u64 = 8192;

/// The chunk size for a file of `size` bytes: 1 MiB, doubled until the file has at most
/// 8192 chunks, at most 16 MiB.
pub fn chunk_size_for(size: u64) -> u32 {
    let mut cs = MIN_CHUNK_SIZE as u64;
    while size.div_ceil(cs) > TARGET_MAX_CHUNKS && cs < MAX_CHUNK_SIZE as u64 {
        cs *= 2;
    }
    cs as u32
}

/// Number of chunks of a file of `size` bytes.
pub fn chunk_count(size: u64, chunk_size: u32) -> u64 {
    size.div_ceil(chunk_size as u64)
}

/// How a file of `size` bytes is cut into chunks of `chunk_size` bytes. The chunk size
/// passed [`ChunkLayout::new`]'s checks (a power of two within
/// [`MIN_CHUNK_SIZE`]..=[`MAX_CHUNK_SIZE`]), so every count and range below is well defined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChunkLayout {
    size: u64,
    chunk_size: u32,
}

impl ChunkLayout {
    /// The layout of a file of `size` bytes in chunks of `chunk_size` bytes.
    ///
    /// # Errors
    /// [`ManifestError::BadChunkSize`] when `chunk_size` is outside
    /// [`MIN_CHUNK_SIZE`]..=[`MAX_CHUNK_SIZE`] or not a power of two.
    pub fn new(size: u64, chunk_size: u32) -> Result<Self, ManifestError> {
        if !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&chunk_size) || !chunk_size.is_power_of_two()
        {
            return Err(ManifestError::BadChunkSize(chunk_size));
        }
        Ok(Self { size, chunk_size })
    }

    /// The layout a new file of `size` bytes gets ([`chunk_size_for`]).
    pub fn for_size(size: u64) -> Self {
        Self {
            size,
            chunk_size: chunk_size_for(size),
        }
    }

    /// The file's size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The size of every chunk but the last.
    pub fn chunk_size(&self) -> u32 {
        self.chunk_size
    }

    /// Number of chunks.
    pub fn chunk_count(&self) -> u64 {
        chunk_count(self.size, self.chunk_size)
    }

    /// Where chunk `index` lies in the file, as `(offset, len)`; `None` when the file has no
    /// such chunk.
    pub fn range(&self, index: u32) -> Option<(u64, u64)> {
        let start = u64::from(index) * u64::from(self.chunk_size);
        (start < self.size).then(|| (start, (self.size - start).min(u64::from(self.chunk_size))))
    }

    /// Exact length of chunk `index`, or `None` when the file has no such chunk.
    pub fn chunk_len(&self, index: u32) -> Option<u64> {
        self.range(index).map(|(_, len)| len)
    }
}

/// A chunk map that does not add up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("chunk size {0} is outside {MIN_CHUNK_SIZE}..={MAX_CHUNK_SIZE} or not a power of two")]
    BadChunkSize(u32),
    #[error("{got} chunk hashes for a file of {size} bytes (expected {expected})")]
    WrongChunkCount { size: u64, expected: u64, got: u64 },
    #[error("chunk hash list of {0} bytes is not a multiple of 32")]
    RaggedHashes(usize),
    #[error(transparent)]
    BadName(#[from] NameError),
    /// The whole-file digest is not 32 bytes long (the wire carries it as bytes).
    #[error("sha256 of {0} bytes (expected 32)")]
    BadSha256(usize),
    #[error("manifest does not match file id {0}")]
    IdMismatch(FileId),
}

/// Everything needed to fetch and check one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// The name the sharer gave it (untrusted: see [`crate::names`] before using it as a path).
    pub name: String,
    pub size: u64,
    /// SHA-256 of the whole content.
    pub sha256: Sha256Digest,
    pub chunk_size: u32,
    pub chunk_hashes: Vec<Sha256Digest>,
}

impl Manifest {
    /// Builds a manifest from wire parts, refusing any that does not add up.
    ///
    /// # Errors
    /// [`ManifestError`] when the name, chunk size, or number of hashes is wrong.
    pub fn from_parts(
        name: String,
        size: u64,
        sha256: Sha256Digest,
        chunk_size: u32,
        packed_hashes: &[u8],
    ) -> Result<Self, ManifestError> {
        check_file_name(&name)?;
        let layout = ChunkLayout::new(size, chunk_size)?;
        if !packed_hashes.len().is_multiple_of(32) {
            return Err(ManifestError::RaggedHashes(packed_hashes.len()));
        }
        let expected = layout.chunk_count();
        let got = (packed_hashes.len() / 32) as u64;
        if got != expected {
            return Err(ManifestError::WrongChunkCount {
                size,
                expected,
                got,
            });
        }
        let chunk_hashes = packed_hashes
            .chunks_exact(32)
            .map(|c| Sha256Digest::from_slice(c).expect("chunks_exact(32) yields 32 bytes"))
            .collect();
        Ok(Self {
            name,
            size,
            sha256,
            chunk_size,
            chunk_hashes,
        })
    }

    /// Like [`Manifest::from_parts`], and also checks that the layout hashes to `id`.
    ///
    /// # Errors
    /// [`ManifestError::IdMismatch`] when it does not.
    pub fn verified(self, id: &FileId) -> Result<Self, ManifestError> {
        if self.id() != *id {
            return Err(ManifestError::IdMismatch(*id));
        }
        Ok(self)
    }

    /// The content id: SHA-256 over a version tag, the size, the chunk size and the hashes.
    pub fn id(&self) -> FileId {
        let mut h = Sha256::new();
        h.update(b"tessera-manifest-v1\0");
        h.update(self.size.to_be_bytes());
        h.update(self.chunk_size.to_be_bytes());
        for c in &self.chunk_hashes {
            h.update(c.0);
        }
        FileId(Sha256Digest(h.finalize().into()))
    }

    pub fn chunk_count(&self) -> u32 {
        self.chunk_hashes.len() as u32
    }

    /// How the file is cut into chunks. The chunk size is checked by
    /// [`Manifest::from_parts`] and chosen by [`hash_file`], the two ways a manifest is made.
    pub fn layout(&self) -> ChunkLayout {
        ChunkLayout {
            size: self.size,
            chunk_size: self.chunk_size,
        }
    }

    /// The byte range of chunk `index` within the file.
    ///
    /// # Panics
    /// When `index` is not a chunk of this file.
    pub fn chunk_range(&self, index: u32) -> Range<u64> {
        match self.layout().range(index) {
            Some((start, len)) if index < self.chunk_count() => start..start + len,
            _ => panic!("chunk {index} out of range"),
        }
    }

    /// The hashes packed as 32-byte runs, as they travel on the wire and sit in the database.
    pub fn packed_hashes(&self) -> Vec<u8> {
        self.chunk_hashes.iter().flat_map(|d| d.0).collect()
    }

    /// Whether `data` is exactly chunk `index`.
    pub fn check_chunk(&self, index: u32, data: &[u8]) -> bool {
        let Some(expected) = self.chunk_hashes.get(index as usize) else {
            return false;
        };
        let range = self.chunk_range(index);
        data.len() as u64 == range.end - range.start && Sha256Digest::of(data) == *expected
    }
}

/// Buffers circulating between the reading thread and the whole-file hashing thread: one
/// being read, one being hashed, and spares so neither thread waits on the other.
const HASH_BUFFERS: usize = 4;

/// The manifest of `bytes` held in memory (a collection's listing), cut as [`hash_file`]
/// would cut a file of that content.
pub fn hash_bytes(bytes: &[u8], name: String) -> Manifest {
    let layout = ChunkLayout::for_size(bytes.len() as u64);
    let chunk_hashes = (0..layout.chunk_count() as u32)
        .map(|i| {
            let (start, len) = layout.range(i).expect("a chunk of the layout");
            Sha256Digest::of(&bytes[start as usize..(start + len) as usize])
        })
        .collect();
    Manifest {
        name,
        size: layout.size(),
        sha256: Sha256Digest::of(bytes),
        chunk_size: layout.chunk_size(),
        chunk_hashes,
    }
}

/// Hashes a file into a manifest, reading it once and never holding more than a few chunks
/// in memory. The chunk hashes are computed on the reading thread while a second thread
/// computes the whole-file hash, so one file keeps two cores busy. The chunk buffers are
/// allocated once and passed back and forth, so no chunk is zeroed or faulted in again.
///
/// # Errors
/// Any I/O error, or `InvalidData` if the file changed size while it was read.
pub fn hash_file(path: &Path, name: String) -> io::Result<Manifest> {
    let mut file = File::open(path)?;
    let size = file.metadata()?.len();
    let layout = ChunkLayout::for_size(size);
    let (chunk_size, count) = (layout.chunk_size(), layout.chunk_count());
    // Full buffers go to the whole-file thread, empty ones come back.
    let (full_tx, full_rx) = sync_channel::<(Vec<u8>, usize)>(HASH_BUFFERS);
    let (empty_tx, empty_rx) = sync_channel::<Vec<u8>>(HASH_BUFFERS);
    let whole = std::thread::spawn(move || {
        let mut h = Sha256::new();
        for (block, n) in full_rx {
            h.update(&block[..n]);
            // The reader may have stopped taking buffers back; that is fine.
            let _ = empty_tx.try_send(block);
        }
        Sha256Digest(h.finalize().into())
    });
    let buf_len = (chunk_size as u64).min(size.max(1)) as usize;
    let mut made = 0usize;
    let mut chunk_hashes = Vec::with_capacity(count as usize);
    let mut total = 0u64;
    let result = loop {
        let mut buf = if made < HASH_BUFFERS.min(count.max(1) as usize) {
            made += 1;
            vec![0u8; buf_len]
        } else {
            match empty_rx.recv() {
                Ok(b) => b,
                Err(_) => break Ok(()),
            }
        };
        // One byte past the expected end shows a file that grew while it was read.
        let want = buf_len.min((size - total.min(size)) as usize).max(1);
        let n = match read_full(&mut file, &mut buf[..want]) {
            Ok(n) => n,
            Err(e) => break Err(e),
        };
        if n == 0 {
            break Ok(());
        }
        total += n as u64;
        if total > size {
            break Ok(());
        }
        chunk_hashes.push(Sha256Digest::of(&buf[..n]));
        if full_tx.send((buf, n)).is_err() {
            break Ok(());
        }
    };
    drop(full_tx);
    let sha256 = whole.join().expect("the hashing thread does not panic");
    result?;
    if total != size {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} changed size while it was hashed", path.display()),
        ));
    }
    Ok(Manifest {
        name,
        size,
        sha256,
        chunk_size,
        chunk_hashes,
    })
}

/// Reads until `buf` is full or the file ends; returns the bytes read.
pub fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_in_memory_hash_as_the_same_file_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        for len in [0usize, 1, (1 << 20) + 3] {
            let data: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            let p = dir.path().join("f");
            std::fs::write(&p, &data).unwrap();
            assert_eq!(
                hash_bytes(&data, "f".into()),
                hash_file(&p, "f".into()).unwrap()
            );
        }
    }
    use std::io::Write;

    fn manifest_of(data: &[u8]) -> Manifest {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(data).unwrap();
        hash_file(f.path(), "x".into()).unwrap()
    }

    #[test]
    fn chunk_boundaries_add_up() {
        let cs = MIN_CHUNK_SIZE as usize;
        for size in [0, 1, cs - 1, cs, cs + 1, 3 * cs + 7] {
            let data: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
            let m = manifest_of(&data);
            assert_eq!(m.size, size as u64);
            assert_eq!(m.sha256, Sha256Digest::of(&data));
            assert_eq!(m.chunk_count() as usize, size.div_ceil(cs));
            for i in 0..m.chunk_count() {
                let r = m.chunk_range(i);
                assert!(m.check_chunk(i, &data[r.start as usize..r.end as usize]));
            }
            let again = Manifest::from_parts(
                m.name.clone(),
                m.size,
                m.sha256,
                m.chunk_size,
                &m.packed_hashes(),
            )
            .unwrap();
            assert_eq!(again.clone().verified(&m.id()).unwrap(), m);
        }
    }

    #[test]
    fn refuses_maps_that_do_not_add_up() {
        let d = Sha256Digest::of(b"");
        let cs = MIN_CHUNK_SIZE;
        assert!(matches!(
            Manifest::from_parts("a".into(), cs as u64 + 1, d, cs, &[0; 32]),
            Err(ManifestError::WrongChunkCount {
                expected: 2,
                got: 1,
                ..
            })
        ));
        assert!(Manifest::from_parts("a".into(), 1, d, cs, &[0; 31]).is_err());
        assert!(Manifest::from_parts("a".into(), 1, d, 1000, &[0; 32]).is_err());
        assert!(Manifest::from_parts(String::new(), 1, d, cs, &[0; 32]).is_err());
        let m = Manifest::from_parts("a".into(), 1, d, cs, &[0; 32]).unwrap();
        let other = FileId(Sha256Digest::of(b"other"));
        assert!(m.verified(&other).is_err());
    }

    #[test]
    fn wrong_bytes_fail_the_check() {
        let m = manifest_of(b"hello world");
        assert!(m.check_chunk(0, b"hello world"));
        assert!(!m.check_chunk(0, b"hello worle"));
        assert!(!m.check_chunk(0, b"hello worl"));
        assert!(!m.check_chunk(1, b"hello world"));
    }

    #[test]
    fn layout_ranges_tile_the_file() {
        let cs = MIN_CHUNK_SIZE;
        let l = ChunkLayout::new(2 * cs as u64 + 5, cs).unwrap();
        assert_eq!(l.chunk_count(), 3);
        assert_eq!(l.range(0), Some((0, cs as u64)));
        assert_eq!(l.range(1), Some((cs as u64, cs as u64)));
        assert_eq!(l.range(2), Some((2 * cs as u64, 5)));
        assert_eq!(l.range(3), None);
        assert_eq!(l.chunk_len(2), Some(5));
        let empty = ChunkLayout::new(0, cs).unwrap();
        assert_eq!((empty.chunk_count(), empty.range(0)), (0, None));
        let huge = ChunkLayout::new(u64::MAX, MAX_CHUNK_SIZE).unwrap();
        assert_eq!(
            huge.range(u32::MAX).map(|(_, len)| len),
            Some(MAX_CHUNK_SIZE as u64)
        );
        assert_eq!(ChunkLayout::for_size(1).chunk_size(), MIN_CHUNK_SIZE);
    }

    #[test]
    fn layout_refuses_bad_chunk_sizes() {
        for bad in [
            0,
            1,
            1000,
            MIN_CHUNK_SIZE / 2,
            MIN_CHUNK_SIZE + 1,
            2 * MAX_CHUNK_SIZE,
        ] {
            assert_eq!(
                ChunkLayout::new(1, bad),
                Err(ManifestError::BadChunkSize(bad)),
                "{bad}"
            );
        }
        assert!(ChunkLayout::new(1, MAX_CHUNK_SIZE).is_ok());
    }

    #[test]
    fn chunk_size_grows_for_huge_files() {
        assert_eq!(chunk_size_for(0), MIN_CHUNK_SIZE);
        assert_eq!(chunk_size_for(8 << 30), MIN_CHUNK_SIZE);
        assert_eq!(chunk_size_for((8 << 30) + 1), 2 * MIN_CHUNK_SIZE);
        assert_eq!(chunk_size_for(u64::MAX / 2), MAX_CHUNK_SIZE);
    }
}
