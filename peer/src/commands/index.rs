//! `index` and `unindex`: start and stop sharing files. Hashing runs on a pool of blocking
//! threads sized by the machine's parallelism, one file per thread, streaming (never a
//! whole file in memory); a file whose length and mtime match its store record is not
//! hashed again. `unindex` never touches the user's file, and refuses replicas (the node
//! keeps those for the tracker).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::{Bitfield, FileId, Manifest};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::Ctx;
use crate::error::{Error, Result, Scope};
use crate::home::{Kind, StoreRecord, len_and_mtime};
use crate::output;
use crate::tracker_client::{FileView, TrackerError};

/// Collects the regular files under `path` (recursively for directories). Symlinks to
/// directories inside a tree, special files and non-UTF-8 names are skipped with a warning.
fn collect(path: &Path, top: bool, out: &mut Vec<PathBuf>, errors: &mut usize) {
    let meta = if top {
        std::fs::metadata(path)
    } else {
        std::fs::symlink_metadata(path)
    };
    let meta = match meta {
        Ok(m) => m,
        Err(source) => {
            output::report_error(&Error::Path {
                action: "read",
                path: path.to_path_buf(),
                source,
            });
            *errors += 1;
            return;
        }
    };
    let meta = if meta.file_type().is_symlink() {
        match std::fs::metadata(path) {
            Ok(m) if m.is_dir() => {
                output::warn(&format!(
                    "skipping {}: symlink to a directory",
                    path.display()
                ));
                return;
            }
            Ok(m) => m,
            Err(_) => {
                output::warn(&format!("skipping {}: dangling symlink", path.display()));
                return;
            }
        }
    } else {
        meta
    };
    if meta.is_dir() {
        let mut entries: Vec<PathBuf> = match std::fs::read_dir(path) {
            Ok(rd) => rd.filter_map(|e| e.ok().map(|e| e.path())).collect(),
            Err(source) => {
                output::report_error(&Error::Path {
                    action: "read",
                    path: path.to_path_buf(),
                    source,
                });
                *errors += 1;
                return;
            }
        };
        entries.sort();
        for e in entries {
            if e.file_name().and_then(|n| n.to_str()).is_none() {
                output::warn(&format!(
                    "skipping {}: name is not UTF-8",
                    e.to_string_lossy()
                ));
                continue;
            }
            collect(&e, false, out, errors);
        }
    } else if meta.is_file() {
        if path.file_name().and_then(|n| n.to_str()).is_none() {
            output::warn(&format!(
                "skipping {}: name is not UTF-8",
                path.to_string_lossy()
            ));
            return;
        }
        out.push(path.to_path_buf());
    } else {
        output::warn(&format!("skipping {}: not a regular file", path.display()));
    }
}

/// A hashed (or reused) file, ready to announce.
struct Hashed {
    path: PathBuf,
    manifest: Manifest,
    len: u64,
    mtime: u64,
}

fn hash_one(path: PathBuf, reuse: Option<StoreRecord>) -> Result<Hashed> {
    let failed = |action, path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::Path {
            action,
            path,
            source,
        }
    };
    let meta = std::fs::metadata(&path).map_err(failed("read", &path))?;
    let (len, mtime) = len_and_mtime(&meta);
    if let Some(r) = reuse
        && r.file_len == Some(len)
        && r.mtime_ns == Some(mtime)
        && let Ok(manifest) = r.manifest()
    {
        return Ok(Hashed {
            path,
            manifest,
            len,
            mtime,
        });
    }
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return Err(Error::NameNotUtf8(path));
    };
    let manifest =
        common::manifest::hash_file(&path, name.to_string()).map_err(failed("hash", &path))?;
    let after = std::fs::metadata(&path).map_err(failed("read", &path))?;
    if len_and_mtime(&after) != (len, mtime) {
        return Err(Error::ChangedWhileHashed(path));
    }
    Ok(Hashed {
        path,
        manifest,
        len,
        mtime,
    })
}

pub async fn index(cx: &Ctx, paths: Vec<PathBuf>) -> Result<()> {
    let client = cx.client()?;
    let peer_id = cx.home.peer_id()?;
    if cx.home.session()?.is_none() {
        return Err(TrackerError::NotLoggedIn.into());
    }
    let mut files = Vec::new();
    let mut failed = 0usize;
    let mut folders = Vec::new();
    for p in &paths {
        let abs = std::path::absolute(p).unwrap_or_else(|_| p.clone());
        collect(&abs, true, &mut files, &mut failed);
        if std::fs::metadata(&abs).is_ok_and(|m| m.is_dir()) {
            folders.push(abs);
        }
    }
    let records = cx.home.records()?;
    let mut by_path: HashMap<PathBuf, Vec<StoreRecord>> = HashMap::new();
    for r in records.into_iter().filter(|r| r.kind == Kind::Shared) {
        by_path.entry(r.path.clone()).or_default().push(r);
    }

    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let pool = Arc::new(Semaphore::new(threads));
    let mut tasks = JoinSet::new();
    for (i, path) in files.iter().enumerate() {
        let reuse = by_path
            .get(path)
            .and_then(|v| v.iter().find(|r| !r.changed).cloned());
        let (path, pool) = (path.clone(), pool.clone());
        tasks.spawn(async move {
            let _permit = pool.acquire_owned().await;
            let r = tokio::task::spawn_blocking(move || hash_one(path, reuse)).await;
            (i, r.map_err(Error::HashTask).and_then(|r| r))
        });
    }

    let mut shown: Vec<Option<FileView>> = vec![None; files.len()];
    while let Some(joined) = tasks.join_next().await {
        let (i, hashed) = joined.map_err(Error::HashTask)?;
        let h = match hashed {
            Ok(h) => h,
            Err(e) => {
                output::report_error(&e);
                failed += 1;
                continue;
            }
        };
        let id = h.manifest.id();
        let mut rec = StoreRecord::new(
            &h.manifest,
            Kind::Shared,
            h.path.clone(),
            &Bitfield::full(h.manifest.chunk_count()),
        );
        rec.complete = true;
        rec.file_len = Some(h.len);
        rec.mtime_ns = Some(h.mtime);
        // The record is written first, so this home's node can serve the file as soon as the
        // tracker hands it out (replication starts at once).
        let existed = cx.home.record(&id).ok().flatten().is_some();
        cx.home.save_record(&rec)?;
        let view = match client.announce(&peer_id, &h.manifest, None).await {
            Ok(v) => {
                cx.home.delete_withdrawal(&id)?;
                v
            }
            Err(e) if e.affects_every_call() => {
                if !existed {
                    cx.home.delete_record(&id)?;
                    // A call whose answer was lost may have taken effect: the node makes
                    // sure it did not, once the tracker answers.
                    cx.home.add_withdrawal(&id)?;
                }
                tasks.abort_all();
                return Err(e.into());
            }
            Err(source) => {
                if !existed {
                    cx.home.delete_record(&id)?;
                }
                output::report_error(&Error::Share {
                    path: h.path.clone(),
                    source,
                });
                failed += 1;
                continue;
            }
        };
        // An older record for the same path (the file changed since) is withdrawn.
        for old in by_path.get(&h.path).into_iter().flatten() {
            if old.file_id != id {
                let _ = client.unindex(&peer_id, &old.file_id).await;
                cx.home.delete_record(&old.file_id)?;
            }
        }
        shown[i] = Some(view);
    }

    // Each folder named is shared as one collection too, once every file in it is shared.
    for root in &folders {
        let under: Vec<(PathBuf, FileId, u64)> = files
            .iter()
            .zip(&shown)
            .filter(|(p, _)| p.starts_with(root))
            .filter_map(|(p, v)| {
                let v = v.as_ref()?;
                Some((p.clone(), v.id.parse().ok()?, v.size))
            })
            .collect();
        let total = files.iter().filter(|p| p.starts_with(root)).count();
        if under.len() < total {
            output::warn(&format!(
                "{} is not shared as a folder: {} of its {total} files could not be shared",
                root.display(),
                total - under.len()
            ));
            continue;
        }
        match share_folder(cx, &client, &peer_id, root, &under).await {
            Ok(view) => shown.push(Some(view)),
            Err(e) if matches!(&e, Error::Tracker(t) if t.affects_every_call()) => return Err(e),
            Err(e) => {
                output::report_error(&e);
                failed += 1;
            }
        }
    }

    let shown: Vec<FileView> = shown.into_iter().flatten().collect();
    if !shown.is_empty() && cx.home.live_node().is_none() {
        output::warn(&no_node_warning(cx.home.dir()));
    }
    if cx.json {
        output::json(&shown)?;
    } else {
        for f in &shown {
            let folder = if f.kind == common::FileType::Collection.as_str() {
                "/  (folder)"
            } else {
                ""
            };
            output::println(&format!(
                "{}  {}  {}{folder}",
                output::safe(f.id.get(..12).unwrap_or(&f.id)),
                common::units::format_size(f.size),
                output::safe(&f.name)
            ));
        }
    }
    if failed > 0 {
        return Err(Error::AlreadyReported(failed));
    }
    Ok(())
}

/// Shares the folder `root` as a collection of its `files` (all shared already), saying
/// what it leaves out.
async fn share_folder(
    cx: &Ctx,
    client: &crate::tracker_client::TrackerClient,
    peer_id: &common::PeerId,
    root: &Path,
    files: &[(PathBuf, FileId, u64)],
) -> Result<FileView> {
    use crate::folders::PublishError;
    match crate::folders::publish(&cx.home, client, peer_id, root, files).await {
        Ok((view, warnings)) => {
            for w in &warnings {
                output::warn(w);
            }
            Ok(view)
        }
        Err(PublishError::Tracker(source)) => Err(Error::Share {
            path: root.to_path_buf(),
            source,
        }),
        Err(PublishError::Home(e)) => Err(e.into()),
        Err(PublishError::Listing(source)) => Err(Error::Path {
            action: "write",
            path: cx.home.collections_dir(),
            source,
        }),
    }
}

/// What `index` says when no node serves this home: the tracker counts only serving
/// holders, so the files show HOLDERS 0 and nobody can fetch them until one runs.
fn no_node_warning(home: &Path) -> String {
    let default = crate::home::default_dir().and_then(|d| std::path::absolute(d).ok());
    let serve = if default.as_deref() == Some(home) {
        "peer serve".to_string()
    } else {
        format!("peer --home {} serve", shell_word(&home.to_string_lossy()))
    };
    format!(
        "no node is serving this home, so no peer can fetch these files yet (they show HOLDERS 0); start one with `{serve}`"
    )
}

/// `s` as one shell word: as is when it holds only characters no shell treats specially,
/// else in single quotes (control characters escaped for the terminal).
fn shell_word(s: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "/._-+,:@=%".contains(c);
    if !s.is_empty() && s.chars().all(plain) {
        return s.to_string();
    }
    format!("'{}'", output::safe(&s.replace('\'', r"'\''")))
}

/// The shared folder (not itself in `leaving`) that the shared file `id` lies in, if any.
fn folder_keeping<'a>(
    records: &'a [StoreRecord],
    id: &FileId,
    leaving: &[FileId],
) -> Option<&'a Path> {
    let file = records
        .iter()
        .find(|r| r.file_id == *id && r.kind == Kind::Shared && r.folder.is_none())?;
    records
        .iter()
        .filter(|r| r.kind == Kind::Shared && !leaving.contains(&r.file_id))
        .filter_map(|r| r.folder.as_deref())
        .find(|dir| file.path.starts_with(dir))
}

/// A file to unindex, with its name in this home when it has a record.
type Target = (FileId, Option<String>);

/// The shared files and folders a path names: the file shared from it, or for a directory
/// its collection and every file shared from under it (collections first). `None` when
/// `term` is no path this home shares from and nothing is on disk there: it is an id then.
fn by_path(records: &[StoreRecord], term: &str) -> Option<Result<Vec<Target>>> {
    let path = Path::new(term);
    let abs = std::path::absolute(path).ok()?;
    let mut hits: Vec<&StoreRecord> = records
        .iter()
        .filter(|r| r.kind == Kind::Shared)
        .filter(|r| {
            r.folder.as_ref().is_some_and(|f| f.starts_with(&abs))
                || (r.folder.is_none() && r.path.starts_with(&abs))
        })
        .collect();
    if hits.is_empty() {
        return path.exists().then(|| Err(Error::NotShared(abs)));
    }
    hits.sort_by_key(|r| (r.folder.is_none(), r.path.clone()));
    Some(Ok(hits
        .into_iter()
        .map(|r| (r.file_id, Some(r.name.clone())))
        .collect()))
}

/// Finds the one store record `term` names (full id or unique prefix); a full id not in
/// the store is accepted as is.
fn pick(records: &[StoreRecord], term: &str) -> Result<Target> {
    let t = term.trim().to_ascii_lowercase();
    let hits: Vec<&StoreRecord> = records
        .iter()
        .filter(|r| !t.is_empty() && r.file_id.to_string().starts_with(&t))
        .collect();
    match hits.as_slice() {
        [one] => Ok((one.file_id, Some(one.name.clone()))),
        [] => t
            .parse::<FileId>()
            .map(|id| (id, None))
            .map_err(|_| Error::NoSuchFile {
                term: term.to_string(),
                scope: Scope::Home,
            }),
        many => Err(Error::Ambiguous {
            term: term.to_string(),
            scope: Scope::Home,
            candidates: many
                .iter()
                .map(|r| format!("{} {}", r.file_id.short(), output::safe(&r.name)))
                .collect(),
        }),
    }
}

pub async fn unindex(cx: &Ctx, terms: Vec<String>) -> Result<()> {
    let client = cx.client()?;
    let peer_id = cx.home.peer_id()?;
    let records = cx.home.records()?;
    let mut failed = 0;
    let mut done = Vec::new();
    let mut targets = Vec::new();
    for term in &terms {
        match by_path(&records, term).unwrap_or_else(|| pick(&records, term).map(|t| vec![t])) {
            Ok(found) => targets.extend(found),
            Err(e) => {
                output::report_error(&e);
                failed += 1;
            }
        }
    }
    targets.dedup_by_key(|(id, _)| *id);
    let leaving: Vec<FileId> = targets.iter().map(|(id, _)| *id).collect();
    for (id, name) in targets {
        if records
            .iter()
            .any(|r| r.file_id == id && r.kind == Kind::Replica)
        {
            output::report_error(&Error::IsReplica(id));
            failed += 1;
            continue;
        }
        // A file of a folder that stays shared would be shared again by the node's next
        // rescan of the folder: say so instead of answering with what will not last.
        if let Some(folder) = folder_keeping(&records, &id, &leaving) {
            output::report_error(&Error::InSharedFolder {
                id,
                folder: folder.to_path_buf(),
            });
            failed += 1;
            continue;
        }
        let tracker_note = match client.unindex(&peer_id, &id).await {
            Ok(()) => None,
            Err(TrackerError::NotFound { .. }) => Some("the tracker listed no holding".to_string()),
            Err(e @ TrackerError::NotLoggedIn) => return Err(e.into()),
            Err(e) => {
                // This home's node tells the tracker once it answers.
                cx.home.add_withdrawal(&id)?;
                Some(format!(
                    "the tracker was not told: {e}; this home's node tells it once it answers"
                ))
            }
        };
        cx.home.delete_record(&id)?;
        // A collection's listing lives in the home: it goes with its record.
        let _ = std::fs::remove_file(cx.home.collections_dir().join(id.to_string()));
        if !cx.json {
            let label = name.as_deref().map(output::safe).unwrap_or_default();
            let note = tracker_note
                .as_deref()
                .map(|n| format!(" ({n})"))
                .unwrap_or_default();
            output::println(&format!("unindexed {}  {label}{note}", id.short()));
        }
        done.push(serde_json::json!({
            "id": id.to_string(),
            "name": name,
            "tracker_notified": tracker_note.is_none(),
        }));
    }
    if cx.json {
        output::json(&done)?;
    }
    if failed > 0 {
        return Err(Error::AlreadyReported(failed));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::Sha256Digest;

    fn rec(content: &[u8], name: &str) -> StoreRecord {
        let d = Sha256Digest::of(content);
        let m = Manifest::from_parts(name.into(), 1, d, 1 << 20, &d.0).unwrap();
        StoreRecord::new(&m, Kind::Shared, "/x".into(), &Bitfield::full(1))
    }

    #[test]
    fn ids_resolve_by_unique_prefix() {
        let a = rec(b"a", "a");
        let b = rec(b"b", "b");
        let records = vec![a.clone(), b.clone()];
        let (id, name) = pick(&records, &a.file_id.to_string()[..8]).unwrap();
        assert_eq!((id, name.as_deref()), (a.file_id, Some("a")));
        let err = pick(&records, "").unwrap_err().to_string();
        assert!(err.contains("no file in this home"), "{err}");
        let full = FileId(Sha256Digest::of(b"elsewhere"));
        assert_eq!(pick(&records, &full.to_string()).unwrap(), (full, None));
        assert!(pick(&records, "zz").is_err());
    }

    #[test]
    fn the_no_node_warning_names_the_command_to_run() {
        let w = no_node_warning(Path::new("/srv/peer homes/it's"));
        assert!(w.contains("HOLDERS 0"), "{w}");
        assert!(
            w.ends_with(r"start one with `peer --home '/srv/peer homes/it'\''s' serve`"),
            "{w}"
        );
        assert!(no_node_warning(Path::new("/srv/a")).ends_with("`peer --home /srv/a serve`"));
    }

    #[test]
    fn collects_files_recursively_and_skips_dir_symlinks() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path().join("d");
        std::fs::create_dir_all(d.join("sub")).unwrap();
        std::fs::write(d.join("a.txt"), b"a").unwrap();
        std::fs::write(d.join("sub/b.txt"), b"b").unwrap();
        std::os::unix::fs::symlink(&d, d.join("loop")).unwrap();
        std::os::unix::fs::symlink(d.join("a.txt"), d.join("link.txt")).unwrap();
        let mut out = Vec::new();
        let mut errors = 0;
        collect(&d, true, &mut out, &mut errors);
        let names: Vec<_> = out
            .iter()
            .map(|p| p.strip_prefix(&d).unwrap().to_string_lossy().to_string())
            .collect();
        assert_eq!(names, ["a.txt", "link.txt", "sub/b.txt"]);
        assert_eq!(errors, 0);
    }
}
