//! Shared folders kept in sync by the running node. Every `--rescan-every`, after the check
//! that withdraws shared files that changed or vanished, each folder this home shares as a
//! collection is walked again. When what is on disk differs from its listing (a file new,
//! changed or gone, a directory made or removed), new and changed files are hashed and
//! announced, and the folder's new listing replaces the old one. A folder that is gone is
//! withdrawn. Rescanning rather than watching keeps one mechanism for every file system
//! (network mounts included) at the cost of up to one period of delay.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use common::collection::{Collection, Entry};
use common::{Bitfield, FileId, PeerId};

use crate::folders;
use crate::home::{Home, Kind, StoreRecord, len_and_mtime};
use crate::tracker_client::TrackerClient;

/// One pass over every shared folder of `home`.
pub async fn sync_all(home: &Home, client: &TrackerClient, peer_id: &PeerId) {
    let records = match home.records() {
        Ok(r) => r,
        Err(e) => return tracing::warn!("cannot read the store: {e:#}"),
    };
    for rec in records.iter().filter(|r| r.kind == Kind::Shared) {
        let Some(root) = rec.folder.clone() else {
            continue;
        };
        if let Err(e) = sync_one(home, client, peer_id, rec, &root, &records).await {
            tracing::warn!(folder = %root.display(), "cannot bring a shared folder up to date: {e}");
        }
    }
}

/// What is under a folder now: its files (with length and mtime) and directories.
struct OnDisk {
    files: Vec<(PathBuf, (u64, u64))>,
    dirs: BTreeSet<PathBuf>,
}

/// Walks `root` as `index` does: regular files and symlinks to files, no symlinked
/// directories, no names that are not UTF-8.
fn walk(root: &Path) -> OnDisk {
    let mut files = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = e.path();
            if e.file_name().to_str().is_none() {
                continue;
            }
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(path),
                Ok(_) => {
                    if let Ok(m) = std::fs::metadata(&path)
                        && m.is_file()
                    {
                        files.push((path, len_and_mtime(&m)));
                    }
                }
                Err(_) => {}
            }
        }
    }
    files.sort();
    OnDisk {
        files,
        dirs: folders::directories(root).into_iter().collect(),
    }
}

/// Why a folder could not be synced.
#[derive(Debug, thiserror::Error)]
enum SyncError {
    #[error(transparent)]
    Publish(#[from] folders::PublishError),
    #[error("cannot hash {path}: {source}")]
    Hash {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the hashing task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

async fn sync_one(
    home: &Home,
    client: &TrackerClient,
    peer_id: &PeerId,
    listing: &StoreRecord,
    root: &Path,
    records: &[StoreRecord],
) -> Result<(), SyncError> {
    if !root.is_dir() {
        tracing::info!(folder = %root.display(), "a shared folder is gone; it is withdrawn");
        if client.unindex(peer_id, &listing.file_id).await.is_err() {
            home.add_withdrawal(&listing.file_id)
                .map_err(folders::PublishError::from)?;
        }
        home.delete_record(&listing.file_id)
            .map_err(folders::PublishError::from)?;
        let _ = std::fs::remove_file(&listing.path);
        return Ok(());
    }
    let root2 = root.to_path_buf();
    let disk = tokio::task::spawn_blocking(move || walk(&root2)).await?;
    // Files shared as they are now, by path.
    let current: BTreeMap<&Path, &StoreRecord> = records
        .iter()
        .filter(|r| r.kind == Kind::Shared && !r.changed && r.folder.is_none())
        .map(|r| (r.path.as_path(), r))
        .collect();
    let mut shared = Vec::new();
    let mut to_hash = Vec::new();
    for (path, stat) in &disk.files {
        match current.get(path.as_path()) {
            Some(r) if r.file_len.zip(r.mtime_ns) == Some(*stat) => {
                shared.push((path.clone(), r.file_id, r.size));
            }
            _ => to_hash.push((path.clone(), *stat)),
        }
    }
    if to_hash.is_empty() && same_as_listing(listing, root, &shared, &disk.dirs) {
        return Ok(());
    }
    for (path, stat) in to_hash {
        let Some((id, size)) = share_file(home, client, peer_id, &path, stat).await? else {
            continue;
        };
        // The file's earlier record (it changed: the rescan withdrew it) goes.
        for old in records.iter().filter(|r| r.path == path && r.file_id != id) {
            if r_is_live(old) && client.unindex(peer_id, &old.file_id).await.is_err() {
                home.add_withdrawal(&old.file_id)
                    .map_err(folders::PublishError::from)?;
            }
            home.delete_record(&old.file_id)
                .map_err(folders::PublishError::from)?;
        }
        shared.push((path, id, size));
    }
    shared.sort();
    let (view, warnings) = folders::publish(home, client, peer_id, root, &shared).await?;
    for w in warnings {
        tracing::warn!(folder = %root.display(), "{w}");
    }
    tracing::info!(folder = %root.display(), id = %view.id, files = shared.len(), "a shared folder changed; its new listing is shared");
    Ok(())
}

/// Whether a shared record is still listed by the tracker as far as this node knows.
fn r_is_live(r: &StoreRecord) -> bool {
    r.kind == Kind::Shared && !r.changed
}

/// Whether the folder's current listing lists exactly `files` and `dirs`.
fn same_as_listing(
    listing: &StoreRecord,
    root: &Path,
    files: &[(PathBuf, FileId, u64)],
    dirs: &BTreeSet<PathBuf>,
) -> bool {
    let Ok(bytes) = std::fs::read(&listing.path) else {
        return false;
    };
    let Ok(c) = Collection::parse(&bytes) else {
        return false;
    };
    let (listed, _) = folders::listing(root, files, &dirs.iter().cloned().collect::<Vec<_>>());
    let key = |c: &Collection| -> Vec<Entry> { c.entries().to_vec() };
    key(&c) == key(&listed)
}

/// Hashes, records and announces one new or changed file of a folder; `None` when it
/// changed while hashed (the next pass takes it) or the tracker refused it.
async fn share_file(
    home: &Home,
    client: &TrackerClient,
    peer_id: &PeerId,
    path: &Path,
    stat: (u64, u64),
) -> Result<Option<(FileId, u64)>, SyncError> {
    let Some(name) = path
        .file_name()
        .and_then(|n| n.to_str())
        .map(str::to_string)
    else {
        return Ok(None);
    };
    let p = path.to_path_buf();
    let manifest = tokio::task::spawn_blocking(move || common::manifest::hash_file(&p, name))
        .await?
        .map_err(|source| SyncError::Hash {
            path: path.to_path_buf(),
            source,
        })?;
    let after = std::fs::metadata(path).map(|m| len_and_mtime(&m));
    if after.ok() != Some(stat) {
        return Ok(None);
    }
    let id = manifest.id();
    let mut rec = StoreRecord::new(
        &manifest,
        Kind::Shared,
        path.to_path_buf(),
        &Bitfield::full(manifest.chunk_count()),
    );
    rec.complete = true;
    (rec.file_len, rec.mtime_ns) = (Some(stat.0), Some(stat.1));
    home.save_record(&rec)
        .map_err(folders::PublishError::from)?;
    match client.announce(peer_id, &manifest, None).await {
        Ok(_) => Ok(Some((id, manifest.size))),
        Err(e) => {
            tracing::warn!(file = %path.display(), "cannot share a new file of a shared folder: {e}");
            home.delete_record(&id)
                .map_err(folders::PublishError::from)?;
            Ok(None)
        }
    }
}
