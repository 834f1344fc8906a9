//! Shared folders (collections, `common::collection`) on the peer's side: the listing of a
//! folder being indexed, kept in the home so the node serves it like any shared file, and
//! the directories of a fetched folder, made inside `--output` without ever following a
//! symlink out of it.

use std::collections::HashSet;
use std::io;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use common::collection::{Collection, Entry, RelPath};
use common::{Bitfield, FileId, Manifest, PeerId};

use crate::home::{Home, HomeError, Kind, StoreRecord, len_and_mtime, write_atomic};
use crate::tracker_client::{FileView, TrackerClient, TrackerError};

/// The directories under `root` (not `root` itself), every level, in path order. Symlinks
/// are not followed, as `index` does not follow them into directories.
pub fn directories(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                out.push(e.path());
                stack.push(e.path());
            }
        }
    }
    out.sort();
    out
}

/// `path` relative to `root`, as a collection path, or why it cannot be one.
fn relative(root: &Path, path: &Path) -> Result<RelPath, String> {
    let rel = path
        .strip_prefix(root)
        .map_err(|_| "not under the folder".to_string())?;
    let parts: Option<Vec<&str>> = rel.components().map(|c| c.as_os_str().to_str()).collect();
    let parts = parts.ok_or_else(|| "its name is not UTF-8".to_string())?;
    RelPath::parse(&parts.join("/")).map_err(|e| e.to_string())
}

/// The collection of the folder `root`: the `files` shared from under it (path, id, size)
/// and its `dirs`. What cannot be listed (a name no other system could take, or one that
/// differs only in case from one listed before it) is left out, with a warning each.
pub fn listing(
    root: &Path,
    files: &[(PathBuf, FileId, u64)],
    dirs: &[PathBuf],
) -> (Collection, Vec<String>) {
    let mut warnings = Vec::new();
    let mut entries = Vec::new();
    let candidates = dirs
        .iter()
        .map(|d| (d, None))
        .chain(files.iter().map(|(p, id, size)| (p, Some((*id, *size)))));
    for (path, file) in candidates {
        match relative(root, path) {
            Ok(rel) => entries.push(match file {
                Some((id, size)) => Entry::File {
                    path: rel,
                    id,
                    size,
                },
                None => Entry::Dir(rel),
            }),
            Err(why) => warnings.push(format!(
                "{} is shared, but not as part of the folder: {why}",
                path.display()
            )),
        }
    }
    entries.sort_by(|a, b| a.path().cmp(b.path()));
    let mut folded = HashSet::new();
    entries.retain(|e| {
        let keep = folded.insert(e.path().as_str().to_lowercase());
        if !keep {
            warnings.push(format!(
                "{} is left out of the folder: its path differs only in case from another's, and would be the same file on a case-insensitive disk",
                root.join(e.path().as_str()).display()
            ));
        }
        keep
    });
    match Collection::new(entries) {
        Ok(c) => (c, warnings),
        // The entries were made to keep every rule; should one still be broken, the folder
        // is shared empty rather than not at all, and says why.
        Err(e) => {
            warnings.push(format!("the folder cannot be listed: {e}"));
            (
                Collection::new(Vec::new()).expect("an empty collection"),
                warnings,
            )
        }
    }
}

/// A listing written to `collections/<id>` in the home: its path, manifest (named `name`,
/// the folder's name) and bytes.
pub struct SavedListing {
    pub path: PathBuf,
    pub manifest: Manifest,
    pub bytes: Bytes,
}

/// Writes `c`'s listing into the home (atomically; the same listing twice is one file,
/// written once).
///
/// # Errors
/// When the home cannot be written.
pub fn save_listing(home: &Home, name: &str, c: &Collection) -> io::Result<SavedListing> {
    let bytes = c.encode();
    let manifest = common::manifest::hash_bytes(&bytes, name.to_string());
    let dir = home.collections_dir();
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(manifest.id().to_string());
    // Named by its content: one already there is kept as is, since a rewrite would change
    // its mtime under a node that serves it (which would take it for a changed file).
    if std::fs::read(&path).ok().as_deref() != Some(bytes.as_slice()) {
        write_atomic(&path, &bytes, 0o644)?;
    }
    Ok(SavedListing {
        path,
        manifest,
        bytes: Bytes::from(bytes),
    })
}

/// Why a folder could not be shared as a collection.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error(transparent)]
    Home(#[from] HomeError),
    #[error("cannot write the folder's listing into the home: {0}")]
    Listing(#[from] io::Error),
    #[error(transparent)]
    Tracker(#[from] TrackerError),
}

/// Shares the folder `root` as the collection of `files` (all shared already: path, id,
/// size) and its directories: the listing is written to the home, recorded (so the node
/// serves it) and announced with its bytes; the folder's earlier listing, if it changed, is
/// withdrawn. Returns the tracker's view and the warnings of [`listing`].
///
/// # Errors
/// When the home cannot be written or the tracker refuses; a new listing's record is then
/// taken back (and left for the node to withdraw when the tracker did not answer).
pub async fn publish(
    home: &Home,
    client: &TrackerClient,
    peer_id: &PeerId,
    root: &Path,
    files: &[(PathBuf, FileId, u64)],
) -> Result<(FileView, Vec<String>), PublishError> {
    let dirs = directories(root);
    let (collection, warnings) = listing(root, files, &dirs);
    let name = root
        .file_name()
        .and_then(|n| n.to_str())
        .map_or_else(|| "folder".to_string(), common::names::safe_file_name);
    let saved = save_listing(home, &name, &collection)?;
    let id = saved.manifest.id();
    let (len, mtime) = len_and_mtime(&std::fs::metadata(&saved.path)?);
    let mut rec = StoreRecord::new(
        &saved.manifest,
        Kind::Shared,
        saved.path.clone(),
        &Bitfield::full(saved.manifest.chunk_count()),
    );
    rec.complete = true;
    rec.file_len = Some(len);
    rec.mtime_ns = Some(mtime);
    rec.folder = Some(root.to_path_buf());
    let existed = home.record(&id).ok().flatten().is_some();
    home.save_record(&rec)?;
    let view = match client
        .announce(peer_id, &saved.manifest, Some(saved.bytes))
        .await
    {
        Ok(v) => v,
        Err(e) => {
            if !existed {
                home.delete_record(&id)?;
                if e.affects_every_call() {
                    // Its answer may have been lost after it took effect.
                    home.add_withdrawal(&id)?;
                }
            }
            return Err(e.into());
        }
    };
    home.delete_withdrawal(&id)?;
    for old in home.records()? {
        if old.folder.as_deref() == Some(root) && old.file_id != id {
            if client.unindex(peer_id, &old.file_id).await.is_err() {
                home.add_withdrawal(&old.file_id)?;
            }
            home.delete_record(&old.file_id)?;
            let _ = std::fs::remove_file(home.collections_dir().join(old.file_id.to_string()));
        }
    }
    Ok((view, warnings))
}

/// The id of the empty file: an entry with it needs no network to be made.
pub fn empty_file_id() -> FileId {
    common::manifest::hash_bytes(&[], String::new()).id()
}

/// Why a fetched folder's directory cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum DirError {
    #[error("{0} is a symlink: a fetched folder is never written through one")]
    Symlink(PathBuf),
    #[error("{0} is in the way: it is not a directory")]
    NotADir(PathBuf),
    #[error("cannot create {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

/// Why a folder could not be started at all.
#[derive(Debug, thiserror::Error)]
pub enum FolderError {
    #[error("{name} is listed as a folder, but its listing is not one: {why}")]
    BadListing { name: String, why: String },
    #[error(transparent)]
    Dir(#[from] DirError),
}

/// Makes `root` and then each directory of `rel` under it, one component at a time,
/// refusing a symlink or a non-directory at any step, so nothing lands outside `root`
/// whatever is already on disk. `root` itself must not be a symlink either.
pub fn make_dirs<'a>(
    root: &Path,
    rel: impl IntoIterator<Item = &'a str>,
) -> Result<PathBuf, DirError> {
    make_one(root)?;
    let mut at = root.to_path_buf();
    for c in rel {
        at.push(c);
        make_one(&at)?;
    }
    Ok(at)
}

fn make_one(path: &Path) -> Result<(), DirError> {
    let io = |source| DirError::Io {
        path: path.to_path_buf(),
        source,
    };
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => Err(DirError::Symlink(path.to_path_buf())),
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(DirError::NotADir(path.to_path_buf())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => match std::fs::create_dir(path) {
            Ok(()) => Ok(()),
            // Made meanwhile (another file of the folder): check what it is.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                match std::fs::symlink_metadata(path) {
                    Ok(m) if m.is_dir() && !m.file_type().is_symlink() => Ok(()),
                    Ok(m) if m.file_type().is_symlink() => {
                        Err(DirError::Symlink(path.to_path_buf()))
                    }
                    Ok(_) => Err(DirError::NotADir(path.to_path_buf())),
                    Err(e) => Err(io(e)),
                }
            }
            Err(e) => Err(io(e)),
        },
        Err(e) => Err(io(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(c: char) -> FileId {
        c.to_string().repeat(64).parse().unwrap()
    }

    #[test]
    fn a_folder_lists_its_files_and_every_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("album");
        std::fs::create_dir_all(root.join("cd1")).unwrap();
        std::fs::create_dir_all(root.join("empty/deeper")).unwrap();
        std::os::unix::fs::symlink(tmp.path(), root.join("loop")).unwrap();
        let dirs = directories(&root);
        let files = vec![
            (root.join("cd1/01.flac"), id('a'), 10),
            (root.join(".cover.jpg"), id('b'), 3),
            (root.join("Cd1/01.flac"), id('c'), 4),
        ];
        let (c, warnings) = listing(&root, &files, &dirs);
        let paths: Vec<&str> = c.entries().iter().map(|e| e.path().as_str()).collect();
        // Of two paths that differ only in case, the first in byte order stays.
        assert_eq!(
            paths,
            [".cover.jpg", "Cd1/01.flac", "cd1", "empty", "empty/deeper"]
        );
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].contains("cd1/01.flac") && warnings[0].contains("differs only in case"),
            "{warnings:?}"
        );
    }

    #[test]
    fn directories_are_never_made_through_a_symlink() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("out");
        let elsewhere = tmp.path().join("elsewhere");
        std::fs::create_dir_all(&out).unwrap();
        std::fs::create_dir_all(&elsewhere).unwrap();
        let made = make_dirs(&out.join("f"), ["a", "b"]).unwrap();
        assert!(made.is_dir() && made.starts_with(&out));
        std::os::unix::fs::symlink(&elsewhere, out.join("f/a/link")).unwrap();
        let e = make_dirs(&out.join("f"), ["a", "link", "x"]).unwrap_err();
        assert!(matches!(e, DirError::Symlink(_)), "{e}");
        std::os::unix::fs::symlink(&elsewhere, out.join("g")).unwrap();
        assert!(matches!(
            make_dirs(&out.join("g"), ["x"]).unwrap_err(),
            DirError::Symlink(_)
        ));
        std::fs::write(out.join("f/file"), b"x").unwrap();
        assert!(matches!(
            make_dirs(&out.join("f"), ["file", "x"]).unwrap_err(),
            DirError::NotADir(_)
        ));
        assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);
    }
}
