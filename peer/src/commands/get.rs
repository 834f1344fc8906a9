//! `get`: resolve each term to one file, download them all concurrently with progress
//! bars, then print one summary line (or one JSON object) per file. A failed file does not
//! stop the others; the command exits 1 at the end if any failed. Ctrl-C stops the
//! downloads under way, says for each what is kept and how to resume, and exits 130.

use std::sync::Arc;

use common::FileId;
use common::units::{format_rate, format_size};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use serde::Serialize;

use super::{Ctx, get_folder};
use crate::cli::GetArgs;
use crate::download::{self, DownloadConfig, DownloadError, Job, Outcome};
use crate::error::{Error, Result, Scope};
use crate::flood::origin::PeerLocate;
use crate::identity::Identity;
use crate::output::{self, safe};
use crate::progress::{Bars, FileProgress, Phase, Snapshot, bars_wanted};
use crate::ratelimit::RateLimiter;
use crate::tracker_client::{FileView, TrackerClient, TrackerError};
use crate::transport::GrpcTransport;
use crate::waiting::{Waiting, WaitingGet};

/// The error for a term that matched no file or several.
pub fn resolution_error(term: &str, files: &[FileView]) -> Option<Error> {
    match files.len() {
        1 => None,
        0 => Some(Error::NoSuchFile {
            term: term.to_string(),
            scope: Scope::Tracker,
        }),
        _ => Some(Error::Ambiguous {
            term: term.to_string(),
            scope: Scope::Tracker,
            candidates: files
                .iter()
                .map(|f| {
                    format!(
                        "{} {} ({})",
                        safe(f.id.get(..12).unwrap_or(&f.id)),
                        safe(&f.name),
                        format_size(f.size)
                    )
                })
                .collect(),
        }),
    }
}

/// The fewest and most hex digits the tracker matches as a file id prefix (its Resolve
/// tries a shorter or longer term as a name only).
pub const ID_PREFIX_DIGITS: std::ops::RangeInclusive<usize> = 6..=64;

/// The error for a term that matched nothing: when it is hex digits of a length the
/// tracker never takes as an id prefix, that is the reason to give.
fn no_match(term: &str) -> Error {
    let hex = term.trim();
    if !hex.is_empty()
        && hex.bytes().all(|b| b.is_ascii_hexdigit())
        && !ID_PREFIX_DIGITS.contains(&hex.len())
    {
        return Error::IdPrefixLength {
            term: term.to_string(),
            digits: hex.len(),
            min: *ID_PREFIX_DIGITS.start(),
            max: *ID_PREFIX_DIGITS.end(),
        };
    }
    Error::NoSuchFile {
        term: term.to_string(),
        scope: Scope::Tracker,
    }
}

/// The file a term names, and the name to save it under when the term is one of the names
/// its sharers give it (each sharer names its own listing; otherwise the download takes
/// the tracker's). A full id needs no round trip: the download's Locate finds it (or says
/// it is unknown, see [`unknown_id`]). The term goes to the tracker as given: it trims an
/// id, but a name matches exactly, spaces and all.
async fn resolve(client: &TrackerClient, term: &str) -> Result<(FileId, Option<String>)> {
    if let Some(id) = full_id(term) {
        return Ok((id, None));
    }
    let files = match client.resolve(term).await {
        Ok(f) => f,
        // A term the tracker cannot read matches nothing either.
        Err(TrackerError::InvalidInput { .. } | TrackerError::NotFound { .. }) => Vec::new(),
        Err(e) => return Err(e.into()),
    };
    if files.is_empty() {
        return Err(no_match(term));
    }
    if let Some(e) = resolution_error(term, &files) {
        return Err(e);
    }
    let id = files[0]
        .id
        .parse()
        .map_err(|_| TrackerError::BadAnswer("a malformed file id".into()))?;
    Ok((id, (files[0].name == term).then(|| term.to_string())))
}

/// `term` as a whole file id (64 hex digits), if it is one.
fn full_id(term: &str) -> Option<FileId> {
    (term.len() == 64).then(|| term.parse().ok()).flatten()
}

/// A download of a full id that the tracker does not know fails as a term matching nothing.
fn unknown_id(term: &str, e: download::DownloadError) -> Error {
    match e {
        download::DownloadError::Locate(TrackerError::NotFound { .. })
            if full_id(term).is_some() =>
        {
            Error::NoSuchFile {
                term: term.to_string(),
                scope: Scope::Tracker,
            }
        }
        source => Error::Download(source),
    }
}

/// `get --cancel ID...`: forgets waiting gets (whole ids, or a prefix of one), here and at
/// the tracker. A tracker that does not answer within a few seconds is not waited for: the
/// node drops a get the tracker pushes that its home no longer waits for.
async fn cancel(cx: &Ctx, terms: &[String]) -> Result<()> {
    let waiting = Waiting::new(&cx.home);
    let mut failed = 0;
    for t in terms {
        let t = t.to_ascii_lowercase();
        let matching: Vec<FileId> = waiting
            .list()
            .into_iter()
            .map(|w| w.file_id)
            .filter(|id| id.to_string().starts_with(&t))
            .collect();
        match matching.as_slice() {
            [id] => {
                waiting.remove(id)?;
                if let (Ok(client), Ok(peer)) = (cx.client(), cx.home.peer_id()) {
                    let told = client.cancel_get(&peer, id);
                    match tokio::time::timeout(std::time::Duration::from_secs(5), told).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => tracing::debug!(file = %id, "the tracker was not told: {e}"),
                        Err(_) => {
                            tracing::debug!(file = %id, "the tracker did not answer the cancel")
                        }
                    }
                }
                output::println(&format!("cancelled the waiting get of {id}"));
            }
            [] => {
                output::report_error(&Error::NotWaiting(t));
                failed += 1;
            }
            _ => {
                output::report_error(&Error::NotWaiting(format!("{t} (ambiguous)")));
                failed += 1;
            }
        }
    }
    if failed > 0 {
        return Err(Error::AlreadyReported(failed));
    }
    Ok(())
}

/// What one term of a `get` became.
enum Got {
    File(Outcome),
    Folder(get_folder::FolderOutcome),
    /// No live holder now: queued for the node (`--wait`), with the tracker's task id when
    /// the tracker took it.
    Waiting(FileId, Option<u64>),
}

/// One item of `get --json`: a file or folder got, or a get left waiting.
#[derive(Serialize)]
#[serde(untagged)]
enum ItemJson {
    Got(GetJson),
    Waiting {
        id: String,
        waiting: bool,
        output: String,
        /// The tracker's task for it (`null`: the node queues it there later).
        tracker_task: Option<u64>,
    },
}

#[derive(Serialize)]
struct GetJson {
    id: String,
    name: String,
    path: String,
    size: u64,
    sha256: String,
    sources: usize,
    chunks_fetched: u32,
    chunks_reused: u32,
    /// `collection` for a folder (its `sha256` is its listing's, `size` its files' total).
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    files: Option<FolderJson>,
}

/// A folder's files: how many, fetched in this run, kept from an earlier one, failed.
#[derive(Serialize)]
struct FolderJson {
    count: usize,
    dirs: usize,
    fetched: usize,
    kept: usize,
    failed: usize,
}

impl ItemJson {
    fn of(g: &Got, output: &std::path::Path) -> Self {
        match g {
            Got::Waiting(id, task) => ItemJson::Waiting {
                id: id.to_string(),
                waiting: true,
                output: output.to_string_lossy().into_owned(),
                tracker_task: *task,
            },
            other => ItemJson::Got(GetJson::of(other)),
        }
    }
}

impl GetJson {
    fn of(g: &Got) -> Self {
        match g {
            Got::Waiting(..) => unreachable!("ItemJson::of takes waiting gets"),
            Got::File(o) => Self {
                id: o.id.to_string(),
                name: o.name.clone(),
                path: o.path.to_string_lossy().into_owned(),
                size: o.size,
                sha256: o.sha256.clone(),
                sources: o.sources,
                chunks_fetched: o.chunks_fetched,
                chunks_reused: o.chunks_reused,
                kind: None,
                files: None,
            },
            Got::Folder(f) => Self {
                id: f.listing.id.to_string(),
                name: f.name.clone(),
                path: f.root.to_string_lossy().into_owned(),
                size: f.size,
                sha256: f.listing.sha256.clone(),
                sources: f.sources,
                chunks_fetched: f.listing.chunks_fetched,
                chunks_reused: f.listing.chunks_reused,
                kind: Some(common::FileType::Collection.as_str()),
                files: Some(FolderJson {
                    count: f.files,
                    dirs: f.dirs,
                    fetched: f.fetched,
                    kept: f.kept,
                    failed: f.failed,
                }),
            },
        }
    }
}

fn summary(o: &Outcome) -> String {
    let name = safe(&o.name);
    let path = safe(&o.path.to_string_lossy());
    if o.chunks_fetched == 0 && o.sources == 0 {
        return format!(
            "{name}  {}  already complete -> {path}",
            format_size(o.size)
        );
    }
    let secs = o.elapsed.as_secs_f64().max(0.001);
    // The rate is of the bytes fetched in this run: resumed ones are not speed.
    let resumed = o.size.saturating_sub(o.bytes_fetched);
    let resumed = if resumed > 0 {
        format!(", {} resumed", format_size(resumed))
    } else {
        String::new()
    };
    format!(
        "{name}  {}  in {secs:.1}s at {} from {} source{}{resumed} -> {path}",
        format_size(o.size),
        format_rate(o.bytes_fetched as f64 / secs),
        o.sources,
        if o.sources == 1 { "" } else { "s" }
    )
}

/// What Ctrl-C leaves of one download: what is kept and how to go on. Running the same
/// command is right whatever the state: it resumes a part file and checks a finished one.
fn interrupted(p: &Snapshot) -> String {
    let name = safe(&p.name);
    let Some(part) = &p.part else {
        return format!("interrupted: {name} had not started; run the same command to get it");
    };
    let path = safe(&part.to_string_lossy());
    if !part.exists() {
        // Published (or refused by the whole-file hash) as it was stopped.
        return format!("interrupted: {name} was finishing; run the same command to check it");
    }
    if p.phase == Phase::Checking {
        // What the part holds was still being checked: no share of it is known.
        return format!("interrupted: {name} is kept in {path}; run the same command to resume");
    }
    format!(
        "interrupted: {}% of {name} kept in {path}; run the same command to resume",
        p.percent()
    )
}

pub async fn get(cx: &Ctx, a: GetArgs) -> Result<()> {
    if a.cancel {
        return cancel(cx, &a.terms).await;
    }
    let client = cx.client()?;
    let peer_id = cx.home.peer_id()?;
    let cfg = DownloadConfig {
        stall_timeout: a.stall_timeout,
        give_up_after: a.give_up_after,
        ..DownloadConfig::default()
    };
    let output_dir = std::path::absolute(&a.output).unwrap_or_else(|_| a.output.clone());
    std::fs::create_dir_all(&output_dir).map_err(|source| Error::Path {
        action: "create",
        path: output_dir.clone(),
        source,
    })?;
    if !output_dir.is_dir() {
        return Err(Error::NotADirectory(output_dir));
    }

    let mut failed = 0usize;
    let mut ids: Vec<(String, FileId, Option<String>)> = Vec::new();
    for term in &a.terms {
        match resolve(&client, term).await {
            Ok((id, _)) if ids.iter().any(|(_, x, _)| *x == id) => {}
            Ok((id, name)) => ids.push((term.clone(), id, name)),
            Err(Error::Tracker(e)) if e.affects_every_call() => return Err(e.into()),
            Err(e) => {
                output::report_error(&e);
                failed += 1;
            }
        }
    }

    let identity = Identity::load(&cx.home)?;
    let dcx = Arc::new(download::Context {
        home: cx.home.clone(),
        peer_id,
        tracker: client,
        key: identity.public_key(),
        transport: Arc::new(GrpcTransport::new(cx.tls.clone(), identity)),
        rate: a.max_download_rate.map(|r| Arc::new(RateLimiter::new(r))),
        cfg,
        offline: Some(PeerLocate {
            home: cx.home.clone(),
            tls: cx.tls.clone(),
            wait: a.peers_wait,
        }),
    });
    let progress: Vec<Arc<FileProgress>> =
        ids.iter().map(|(t, _, _)| FileProgress::new(t)).collect();
    let bars = Arc::new(Bars::spawn(
        progress.clone(),
        bars_wanted(cx.json, cx.quiet),
    ));
    let several = ids.len() > 1;
    let runs = ids.iter().zip(&progress).map(|((term, id, name), p)| {
        let from = a.from.clone().map(|f| f.to_ascii_lowercase());
        let job = Job {
            file_id: *id,
            output: output_dir.clone(),
            from: from.clone(),
            name: name.clone(),
            path: None,
            listings: Some(cx.home.collections_dir()),
        };
        let (dcx, p, term, bars, out) = (
            dcx.clone(),
            p.clone(),
            term.clone(),
            bars.clone(),
            output_dir.clone(),
        );
        let (wait, waiting, id) = (a.wait, Waiting::new(&cx.home), *id);
        async move {
            let r = download::download(dcx.clone(), job, p.clone()).await;
            if r.is_err() {
                p.finish(false);
            }
            if wait && r.as_ref().is_err_and(DownloadError::no_holder_now) {
                waiting.put(&WaitingGet {
                    file_id: id,
                    output: out.clone(),
                    queued_at_ms: crate::now_ms(),
                    last_error: None,
                })?;
                let task = match dcx.tracker.queue_get(&dcx.peer_id, &id).await {
                    Ok(t) => Some(t),
                    Err(e) => {
                        tracing::debug!(file = %id, "the tracker did not queue the get: {e}");
                        None
                    }
                };
                return Ok(Got::Waiting(id, task));
            }
            let o = r.map_err(|source| match unknown_id(&term, source) {
                Error::Download(source) if several => Error::Get { term, source },
                e => e,
            })?;
            if !o.collection {
                return Ok(Got::File(o));
            }
            let folder =
                get_folder::fetch(dcx, o, &out, name.as_deref(), from, p.clone(), &bars).await;
            if folder.is_err() {
                p.finish(false);
            }
            Ok(Got::Folder(folder?))
        }
    });
    // Ctrl-C drops the downloads under way (their part files stay, verified chunks and
    // all) instead of killing the process before it can say so.
    let mut interrupt = interrupt_signal();
    let mut runs: FuturesUnordered<_> = runs
        .enumerate()
        .map(|(i, run)| async move { (i, run.await) })
        .collect();
    let mut results: Vec<Option<Result<Got>>> = ids.iter().map(|_| None).collect();
    let mut stopped = false;
    loop {
        tokio::select! {
            // Downloads that have ended are taken first: they print as usual.
            biased;
            next = runs.next() => match next {
                Some((i, r)) => results[i] = Some(r),
                None => break,
            },
            () = interrupt.recv() => {
                stopped = true;
                break;
            }
        }
    }
    drop(runs);
    if let Ok(bars) = Arc::try_unwrap(bars) {
        bars.stop().await;
    }

    let mut done = Vec::new();
    let mut cut = Vec::new();
    for (r, p) in results.into_iter().zip(&progress) {
        match r {
            Some(Ok(Got::Folder(mut f))) => {
                for (path, e) in std::mem::take(&mut f.failures) {
                    output::report_error(&Error::InFolder {
                        path: format!("{}/{path}", f.name),
                        source: Box::new(e),
                    });
                }
                failed += f.failed;
                done.push(Got::Folder(f));
            }
            Some(Ok(o)) => done.push(o),
            Some(Err(e)) => {
                output::report_error(&e);
                failed += 1;
            }
            None => cut.push(interrupted(&p.snapshot())),
        }
    }
    if cx.json {
        let v: Vec<ItemJson> = done.iter().map(|g| ItemJson::of(g, &output_dir)).collect();
        output::json(&v)?;
    } else {
        for o in &done {
            output::println(&match o {
                Got::File(o) => summary(o),
                Got::Folder(f) => get_folder::summary(f),
                Got::Waiting(id, task) => format!(
                    "{id}  waiting: no live peer holds it now; {}, and this home's node fetches it into {} once one is back (cancel with `peer get --cancel {id}`)",
                    if task.is_some() {
                        "queued at the tracker"
                    } else {
                        "queued in this home (the node queues it at the tracker when it can)"
                    },
                    safe(&output_dir.to_string_lossy())
                ),
            });
        }
    }
    if done.iter().any(|g| matches!(g, Got::Waiting(..))) && cx.home.live_node().is_none() {
        output::warn(
            "no node is serving this home: start `peer serve` so it can fetch waiting gets",
        );
    }
    for line in &cut {
        eprintln!("{line}");
    }
    if stopped {
        return Err(Error::Interrupted);
    }
    if failed > 0 {
        return Err(Error::AlreadyReported(failed));
    }
    Ok(())
}

/// SIGINT, watched from now on (its default action, death without a word, is replaced).
struct Interrupt(Option<tokio::signal::unix::Signal>);

fn interrupt_signal() -> Interrupt {
    use tokio::signal::unix::{SignalKind, signal};
    Interrupt(
        signal(SignalKind::interrupt())
            .inspect_err(|e| tracing::debug!("cannot watch SIGINT: {e}"))
            .ok(),
    )
}

impl Interrupt {
    async fn recv(&mut self) {
        match &mut self.0 {
            Some(s) => {
                s.recv().await;
            }
            None => std::future::pending().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(id: char, name: &str) -> FileView {
        FileView {
            id: id.to_string().repeat(64),
            name: name.into(),
            size: 2048,
            sha256: String::new(),
            kind: "other".into(),
            chunks: 1,
            chunk_size: 1 << 20,
            holders: 1,
        }
    }

    #[test]
    fn resolution_errors_name_the_candidates() {
        assert!(resolution_error("x", &[file('a', "x")]).is_none());
        assert_eq!(
            resolution_error("x\n", &[]).unwrap().to_string(),
            "no file matches 'x\\n'"
        );
        let e = resolution_error("song", &[file('a', "song"), file('b', "song")]).unwrap();
        assert_eq!(
            e.to_string(),
            "'song' matches 2 files: aaaaaaaaaaaa song (2.0 KiB), bbbbbbbbbbbb song (2.0 KiB)"
        );
    }

    #[test]
    fn a_hex_term_of_the_wrong_length_says_why_it_matched_nothing() {
        assert_eq!(
            no_match("0211").to_string(),
            "no file is named '0211', and 4 hex digits are too few for a file id prefix, which takes 6 to 64"
        );
        assert_eq!(
            no_match(&"a".repeat(65)).to_string(),
            format!(
                "no file is named '{}', and 65 hex digits are too many for a file id prefix, which takes 6 to 64",
                "a".repeat(65)
            )
        );
        for plain in ["021122", "song.flac", "", " "] {
            assert!(
                matches!(no_match(plain), Error::NoSuchFile { .. }),
                "{plain:?}"
            );
        }
    }

    #[test]
    fn summaries_read_well() {
        let o = Outcome {
            id: "a".repeat(64).parse().unwrap(),
            name: "x.bin".into(),
            path: "/o/x.bin".into(),
            size: 10 << 20,
            sha256: String::new(),
            sources: 2,
            chunks_fetched: 10,
            bytes_fetched: 10 << 20,
            chunks_reused: 0,
            elapsed: std::time::Duration::from_secs(2),
            collection: false,
        };
        // One unit system: 10 MiB in 2 s reads as 5 MiB/s.
        assert_eq!(
            summary(&o),
            "x.bin  10 MiB  in 2.0s at 5.0 MiB/s from 2 sources -> /o/x.bin"
        );
        // Resumed bytes are said, and not counted as speed.
        let resumed = Outcome {
            sources: 1,
            chunks_fetched: 4,
            bytes_fetched: 4 << 20,
            chunks_reused: 6,
            ..o.clone()
        };
        assert_eq!(
            summary(&resumed),
            "x.bin  10 MiB  in 2.0s at 2.0 MiB/s from 1 source, 6.0 MiB resumed -> /o/x.bin"
        );
        let held = Outcome {
            sources: 0,
            chunks_fetched: 0,
            bytes_fetched: 0,
            chunks_reused: 10,
            ..o
        };
        assert_eq!(
            summary(&held),
            "x.bin  10 MiB  already complete -> /o/x.bin"
        );
    }

    #[test]
    fn an_interrupt_says_what_is_kept_and_how_to_resume() {
        let dir = tempfile::tempdir().unwrap();
        let part = dir.path().join("x\u{202e}.bin.tessera-part");
        let p = FileProgress::new("x");
        assert_eq!(
            interrupted(&p.snapshot()),
            "interrupted: x had not started; run the same command to get it"
        );
        p.start("x\u{202e}.bin", 1000, part.clone());
        std::fs::write(&part, b"").unwrap();
        assert_eq!(
            interrupted(&p.snapshot()),
            format!(
                "interrupted: x\\u{{202e}}.bin is kept in {}; run the same command to resume",
                safe(&part.to_string_lossy())
            ),
            "what the part holds is not known yet"
        );
        p.add_resumed(200);
        p.fetching();
        p.add_done(215);
        assert_eq!(
            interrupted(&p.snapshot()),
            format!(
                "interrupted: 41% of x\\u{{202e}}.bin kept in {}; run the same command to resume",
                safe(&part.to_string_lossy())
            )
        );
        std::fs::remove_file(&part).unwrap();
        assert_eq!(
            interrupted(&p.snapshot()),
            "interrupted: x\\u{202e}.bin was finishing; run the same command to check it"
        );
    }
}
