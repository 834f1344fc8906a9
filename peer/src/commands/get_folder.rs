//! `get` of a collection: its listing, fetched and checked like any file, becomes
//! `--output/NAME/` with every directory and file of it. Paths come from the network and
//! are hostile: the listing is refused unless `common::collection` accepts every path, each
//! directory is made one component at a time without following a symlink
//! (`folders::make_dirs`), and each file is a download of its own (its id checked, written
//! under its exact path with `O_NOFOLLOW`, never over a different file). Files already there
//! and identical are kept, part files resume, and a failed file does not stop the others.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::collection::{Collection, Entry, MAX_LISTING, RelPath};
use common::units::{format_rate, format_size};
use futures::StreamExt;

use crate::download::{self, Job, Outcome};
use crate::error::Error;
use crate::folders::{self, FolderError};
use crate::output::safe;
use crate::progress::{Bars, FileProgress};
use crate::transport::GrpcTransport;

/// Files of one folder fetched at once: enough to hide each file's Locate and connection
/// round trips behind the others' transfers.
const FILES_AT_ONCE: usize = 8;

/// What became of a folder.
pub struct FolderOutcome {
    /// The listing's download (its id is the collection's).
    pub listing: Outcome,
    pub name: String,
    pub root: PathBuf,
    pub files: usize,
    pub dirs: usize,
    /// Bytes of all its files.
    pub size: u64,
    /// Bytes fetched in this run.
    pub bytes_fetched: u64,
    /// Files fetched (wholly or in part) in this run.
    pub fetched: usize,
    /// Files that were there already, identical.
    pub kept: usize,
    /// Distinct peers that supplied some file (the most of any one file).
    pub sources: usize,
    /// Files and directories that failed, each with why.
    pub failures: Vec<(RelPath, Error)>,
    /// How many failed (stays when `failures` is taken to be reported).
    pub failed: usize,
    pub elapsed: Duration,
}

/// Reads and checks the listing a download left at `path`.
fn read_listing(path: &Path, name: &str) -> Result<Collection, FolderError> {
    let bad = |why: String| FolderError::BadListing {
        name: common::names::printable(name, 80),
        why,
    };
    let len = std::fs::metadata(path)
        .map_err(|e| bad(e.to_string()))?
        .len();
    if len > MAX_LISTING as u64 {
        return Err(bad(format!(
            "{len} bytes, more than the {MAX_LISTING} allowed"
        )));
    }
    let bytes = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    Collection::parse(&bytes).map_err(|e| bad(e.to_string()))
}

/// Fetches the folder whose listing `listing` fetched, into `output/NAME/`, where NAME is
/// `name` (the term, when it was one of the sharers' names) or the tracker's, made one
/// safe path component.
#[allow(clippy::too_many_arguments)]
pub async fn fetch(
    dcx: Arc<download::Context<GrpcTransport>>,
    listing: Outcome,
    output: &Path,
    name: Option<&str>,
    from: Option<String>,
    total: Arc<FileProgress>,
    bars: &Bars,
) -> Result<FolderOutcome, FolderError> {
    let started = Instant::now();
    let collection = read_listing(&listing.path, &listing.name)?;
    let name = common::names::safe_file_name(name.unwrap_or(&listing.name));
    let root = output.join(&name);
    folders::make_dirs(&root, [])?;
    total.become_folder(&name, collection.total_size(), root.clone());

    let mut dirs = 0;
    let mut failures = Vec::new();
    for e in collection.entries() {
        if let Entry::Dir(rel) = e {
            dirs += 1;
            if let Err(e) = folders::make_dirs(&root, rel.components()) {
                failures.push((rel.clone(), Error::Folder(e.into())));
            }
        }
    }

    let empty = folders::empty_file_id();
    let runs = collection.files().map(|(rel, id, size)| {
        let (dcx, root, from, total) = (dcx.clone(), root.clone(), from.clone(), total.clone());
        let p = FileProgress::child(rel.as_str(), &total);
        bars.add(p.clone());
        let (rel, id) = (rel.clone(), *id);
        async move {
            let r = fetch_file(dcx, &root, (&rel, id, size), empty, from, p.clone()).await;
            if r.is_err() {
                p.finish(false);
            }
            (rel, r)
        }
    });
    let mut runs = futures::stream::iter(runs).buffer_unordered(FILES_AT_ONCE);
    let (mut files, mut fetched, mut kept, mut bytes_fetched, mut sources) = (0, 0, 0, 0, 0);
    while let Some((rel, r)) = runs.next().await {
        files += 1;
        match r {
            Ok(Some(o)) if o.chunks_fetched == 0 && o.sources == 0 => kept += 1,
            Ok(Some(o)) => {
                fetched += 1;
                bytes_fetched += o.bytes_fetched;
                sources = sources.max(o.sources);
            }
            Ok(None) => kept += 1,
            Err(e) => failures.push((rel, e)),
        }
    }
    drop(runs);
    total.finish(failures.is_empty());
    Ok(FolderOutcome {
        listing,
        name,
        root,
        files,
        dirs,
        size: collection.total_size(),
        bytes_fetched,
        fetched,
        kept,
        sources,
        failed: failures.len(),
        failures,
        elapsed: started.elapsed(),
    })
}

/// One file of a folder, at its exact path under `root`; `None` for an empty file, which
/// needs no network (its id says it is empty).
async fn fetch_file(
    dcx: Arc<download::Context<GrpcTransport>>,
    root: &Path,
    (rel, id, size): (&RelPath, common::FileId, u64),
    empty: common::FileId,
    from: Option<String>,
    p: Arc<FileProgress>,
) -> Result<Option<Outcome>, Error> {
    let mut parts: Vec<&str> = rel.components().collect();
    let file_name = parts.pop().unwrap_or_default();
    let dir = folders::make_dirs(root, parts).map_err(|e| Error::Folder(e.into()))?;
    let path = dir.join(file_name);
    if id == empty {
        make_empty(&path)?;
        p.finish(true);
        return Ok(None);
    }
    if already_fetched(&dcx.home, &path, id).await {
        p.add_resumed(size);
        p.finish(true);
        return Ok(None);
    }
    let job = Job {
        file_id: id,
        output: dir,
        from,
        name: None,
        path: Some(path),
        listings: None,
    };
    download::download(dcx, job, p)
        .await
        .map(Some)
        .map_err(Error::Download)
}

/// Whether an earlier `get` left this very file at `path` (its record says so) and it is
/// still the same content, checked locally: its id computed from the disk. Such a file
/// needs no Locate, which is most of the cost of getting a folder again.
async fn already_fetched(home: &crate::home::Home, path: &Path, id: common::FileId) -> bool {
    let recorded =
        home.record(&id).ok().flatten().is_some_and(|r| {
            r.kind == crate::home::Kind::Downloaded && r.complete && r.path == path
        });
    if !recorded || std::fs::symlink_metadata(path).map_or(true, |m| !m.is_file()) {
        return false;
    }
    let p = path.to_path_buf();
    tokio::task::spawn_blocking(move || common::manifest::hash_file(&p, String::new()))
        .await
        .is_ok_and(|m| m.is_ok_and(|m| m.id() == id))
}

/// An empty file at `path`: made, or kept if one is there; anything else there is not
/// touched.
fn make_empty(path: &Path) -> Result<(), Error> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_file() && m.len() == 0 => Ok(()),
        Ok(_) => Err(Error::Download(download::DownloadError::OutputTaken {
            path: path.to_path_buf(),
            name: common::names::printable(&path.to_string_lossy(), 200),
        })),
        Err(_) => std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
            .map(drop)
            .map_err(|source| Error::Path {
                action: "create",
                path: path.to_path_buf(),
                source,
            }),
    }
}

/// The line `get` prints for a folder.
pub fn summary(o: &FolderOutcome) -> String {
    let root = safe(&o.root.to_string_lossy());
    let what = format!(
        "{}/  {} file{}, {}",
        safe(&o.name),
        o.files,
        if o.files == 1 { "" } else { "s" },
        format_size(o.size)
    );
    if o.fetched == 0 && o.failed == 0 {
        return format!("{what}  already complete -> {root}");
    }
    let secs = o.elapsed.as_secs_f64().max(0.001);
    let failed = match o.failed {
        0 => String::new(),
        n => format!(", {n} failed"),
    };
    format!(
        "{what}  in {secs:.1}s at {} ({} fetched, {} kept{failed}) -> {root}",
        format_rate(o.bytes_fetched as f64 / secs),
        o.fetched,
        o.kept
    )
}
