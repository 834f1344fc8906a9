//! `search`, `peers` and `files`: read-only listings, as tables or JSON.

use common::FileType;
use common::units::format_size;
use serde::Serialize;

use super::Ctx;
use crate::cli::SearchArgs;
use crate::error::Result;
use crate::flood::origin;
use crate::home::{Kind, StoreRecord};
use crate::output::{self, safe};
use crate::tracker_client::{FileView, TrackerError};

/// `search`: the tracker's answer; among peers (flooded) with `--peers`, or when no tracker
/// answers at all. A tracker whose database is down still searches from memory, so only
/// a tracker nobody reaches sends the search to the peers.
pub async fn search(cx: &Ctx, a: SearchArgs) -> Result<()> {
    let query = a.query.clone().unwrap_or_default();
    if !a.peers {
        let type_filter = a.kind.map(|k| k.as_str()).unwrap_or("");
        // A search has somewhere else to go when nobody answers.
        let client = cx.client()?.impatient_when_unreachable();
        match client.search(&query, type_filter).await {
            Ok(files) => return print_files(cx, &files),
            Err(e @ TrackerError::Unreachable { .. }) => {
                output::warn(&format!("{e}; searching among peers instead"));
            }
            Err(e) => return Err(e.into()),
        }
    }
    let p = origin::Params {
        query,
        file_type: a.kind,
        ttl: a.ttl,
        wait: a.wait,
    };
    let found = origin::search(&cx.home, cx.tls.clone(), &p).await?;
    eprintln!(
        "{} file(s) from peers, not from a tracker (flooded search: {} contact(s) asked, TTL {}{})",
        found.files.len(),
        found.asked,
        a.ttl,
        found
            .first_answer
            .map(|d| format!(", first answer after {} ms", d.as_millis()))
            .unwrap_or_default()
    );
    if cx.json {
        return Ok(output::json(&found.files)?);
    }
    print_table(
        found
            .files
            .iter()
            .map(|f| (&*f.id, &*f.name, f.size, &*f.kind, f.holders)),
    );
    Ok(())
}

fn print_files(cx: &Ctx, files: &[FileView]) -> Result<()> {
    if cx.json {
        return Ok(output::json(&files)?);
    }
    if files.is_empty() {
        eprintln!("no files match");
        return Ok(());
    }
    print_table(
        files
            .iter()
            .map(|f| (&*f.id, &*f.name, f.size, &*f.kind, f.holders as usize)),
    );
    Ok(())
}

/// The search table: one `(id, name, size, type, holders)` per file, nothing when empty.
fn print_table<'a>(files: impl Iterator<Item = (&'a str, &'a str, u64, &'a str, usize)>) {
    let rows: Vec<Vec<String>> = files
        .map(|(id, name, size, kind, holders)| {
            vec![
                safe(id.get(..12).unwrap_or(id)),
                safe(name),
                format_size(size),
                safe(kind),
                holders.to_string(),
            ]
        })
        .collect();
    if !rows.is_empty() {
        output::print(&output::table(
            &["ID", "NAME", "SIZE", "TYPE", "HOLDERS"],
            &rows,
        ));
    }
}

#[derive(Serialize)]
struct PeerJson<'a> {
    id: &'a str,
    user: &'a str,
    addr: &'a str,
    state: &'a str,
    last_seen: Option<String>,
}

/// "12s ago", "3m ago", "never".
fn ago(ms: i64) -> String {
    if ms <= 0 {
        return "never".into();
    }
    let secs = ((crate::now_ms() - ms).max(0) / 1000) as u64;
    let rounded = if secs < 120 {
        secs
    } else if secs < 7200 {
        secs / 60 * 60
    } else {
        secs / 3600 * 3600
    };
    format!(
        "{} ago",
        humantime::format_duration(std::time::Duration::from_secs(rounded))
    )
}

pub async fn peers(cx: &Ctx) -> Result<()> {
    let peers = cx.client()?.list_peers().await?;
    if cx.json {
        let v: Vec<PeerJson> = peers
            .iter()
            .map(|p| PeerJson {
                id: &p.id,
                user: &p.user,
                addr: &p.addr,
                state: &p.state,
                last_seen: crate::rfc3339_ms(p.last_seen_ms),
            })
            .collect();
        return Ok(output::json(&v)?);
    }
    let rows: Vec<Vec<String>> = peers
        .iter()
        .map(|p| {
            vec![
                safe(p.id.get(..8).unwrap_or(&p.id)),
                safe(&p.user),
                safe(&p.addr),
                safe(&p.state),
                ago(p.last_seen_ms),
            ]
        })
        .collect();
    if rows.is_empty() {
        eprintln!("the tracker knows no peers yet");
        return Ok(());
    }
    output::print(&output::table(
        &["ID", "USER", "ADDR", "STATE", "LAST SEEN"],
        &rows,
    ));
    Ok(())
}

#[derive(Serialize)]
struct FileJson {
    id: String,
    name: String,
    size: u64,
    /// Unknown (null) for a replica: a replication task carries no whole-file hash.
    sha256: Option<String>,
    #[serde(rename = "type")]
    kind_of_content: &'static str,
    chunks: u32,
    kind: &'static str,
    held_chunks: u32,
    /// Bytes of the chunks held (replicas only: what they take of the storage quota).
    #[serde(skip_serializing_if = "Option::is_none")]
    held_bytes: Option<u64>,
    complete: bool,
    path: String,
}

/// Bytes of the chunks in `have` of a file of `size` bytes.
fn held_bytes(r: &StoreRecord) -> u64 {
    r.have_bits()
        .iter_ones()
        .map(|c| crate::replica::chunk_len(r.size, r.chunk_size, c).unwrap_or(0))
        .sum()
}

pub fn files(cx: &Ctx) -> Result<()> {
    let mut records = cx.home.records()?;
    // The user's own files first, then the replicas kept for the tracker.
    records.sort_by_key(|r| r.kind == Kind::Replica);
    let listings = cx.home.collections_dir();
    let items: Vec<FileJson> = records
        .iter()
        .map(|r| {
            // A folder shared here, or the listing of one fetched.
            let content = if r.folder.is_some() || r.path.starts_with(&listings) {
                FileType::Collection
            } else {
                FileType::from_name(&r.name)
            };
            let held = if r.complete && !r.changed {
                r.chunk_count()
            } else if r.changed {
                0
            } else {
                r.have_bits().count()
            };
            let replica = r.kind == Kind::Replica;
            FileJson {
                id: r.file_id.to_string(),
                name: r.name.clone(),
                size: r.size,
                sha256: (!replica).then(|| r.sha256.clone()),
                kind_of_content: content.as_str(),
                chunks: r.chunk_count(),
                kind: r.kind.as_str(),
                held_chunks: held,
                held_bytes: replica.then(|| held_bytes(r)),
                complete: r.complete && !r.changed,
                path: r.path.to_string_lossy().into_owned(),
            }
        })
        .collect();
    if cx.json {
        return Ok(output::json(&items)?);
    }
    if items.is_empty() {
        eprintln!("this peer shares nothing yet: run `peer index PATH` or `peer get ID`");
        return Ok(());
    }
    let rows: Vec<Vec<String>> = items
        .iter()
        .zip(&records)
        .map(|(f, r)| {
            let pct = if f.chunks == 0 {
                100
            } else {
                (f.held_chunks as u64 * 100 / f.chunks as u64) as u32
            };
            vec![
                f.id[..12].to_string(),
                safe(&f.name),
                format_size(f.size),
                if r.changed {
                    format!("{} (changed)", f.kind)
                } else {
                    f.kind.to_string()
                },
                format!("{pct}%"),
                safe(&f.path),
            ]
        })
        .collect();
    let mut out = output::table(&["ID", "NAME", "SIZE", "KIND", "HAVE", "PATH"], &rows);
    let replicas: Vec<&FileJson> = items.iter().filter(|f| f.held_bytes.is_some()).collect();
    if !replicas.is_empty() {
        let bytes: u64 = replicas.iter().filter_map(|f| f.held_bytes).sum();
        let chunks: u32 = replicas.iter().map(|f| f.held_chunks).sum();
        let quota = match cx.home.node().ok().flatten().and_then(|n| n.storage_quota) {
            Some(q) => format!(" of a {} quota", format_size(q)),
            None => String::new(),
        };
        out += &format!(
            "\nreplicas: {} in {chunks} chunk(s) of {} file(s){quota}\n",
            format_size(bytes),
            replicas.len()
        );
    }
    for w in crate::waiting::Waiting::new(&cx.home).list() {
        out += &format!(
            "waiting: {} -> {} (get --wait: fetched by the node once a holder is back)\n",
            w.file_id.short(),
            safe(&w.output.to_string_lossy())
        );
    }
    output::print(&out);
    Ok(())
}
