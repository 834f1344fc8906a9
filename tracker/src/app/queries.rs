//! Read-only questions on [`TrackerService`]: search, resolve, locate, the peers list, one
//! file's chunk map and the stats. All answer from memory (stats also counts users in the
//! database).

use std::collections::HashMap;

use common::ticket::PUBLIC_KEY_LEN;
use common::{Bitfield, FileId, PeerId};

use super::index::{self, FileEntry, Holding, Search};
use super::limits::{Sample, holder_views};
use super::{
    Caller, ChunkPage, ChunkView, FileDetail, FileView, Located, MAX_CHUNK_PEERS, PeerView,
    SearchPage, SearchQuery, Stats, TrackerService, file_view, file_view_with,
};
use crate::Error;
use crate::model::{HoldingKind, now_ms};

/// Default and largest page of search results.
const DEFAULT_LIMIT: u32 = 50;
const MAX_LIMIT: u32 = 1000;

impl TrackerService {
    /// Searches file names.
    ///
    /// # Errors
    /// `InvalidArgument` for a limit over 1000.
    pub fn search(&self, q: &SearchQuery) -> Result<SearchPage, Error> {
        let limit = match q.limit {
            None | Some(0) => DEFAULT_LIMIT,
            Some(l) if l > MAX_LIMIT => {
                return Err(Error::invalid(format!("limit must be at most {MAX_LIMIT}")));
            }
            Some(l) => l,
        };
        let search = Search {
            terms: q.query.split_whitespace().map(str::to_lowercase).collect(),
            file_type: q.file_type,
            limit: limit as usize,
            offset: q.offset as usize,
        };
        let now = now_ms();
        let ix = self.index();
        let (page, total) = ix.search(&search);
        Ok(SearchPage {
            items: page
                .into_iter()
                .map(|(f, name)| file_view(&ix, f, name, now))
                .collect(),
            total: total as u64,
        })
    }

    /// Every file matching an id, id prefix (6+ hex digits) or exact name (any sharer's).
    /// The term is not trimmed here: a name may begin or end with spaces (the index trims
    /// ids itself). A file found by name is shown under that name, one found by id under
    /// the caller's own or else the most used.
    pub fn resolve(&self, caller: &Caller, term: &str) -> Vec<FileView> {
        let now = now_ms();
        let ix = self.index();
        ix.resolve(term)
            .into_iter()
            .map(|(f, by)| {
                let name = by.unwrap_or_else(|| f.name_for(caller.user_id));
                file_view(&ix, f, name, now)
            })
            .collect()
    }

    /// A file's manifest and the serving peers that hold some of it, with a ticket for the
    /// caller's user to fetch from them with requests proven by `key` (the getter's own
    /// public key, which the ticket names). The file is named for the caller (`names`); the
    /// manifest keeps the last known name, which the adapter replaces with that one.
    ///
    /// The hot path of every getter: one pass over the file's holdings under the read lock
    /// finds the holders and their count, and the manifest, its packed hashes and the ticket
    /// are shared, not rebuilt. Claims not yet audited are handed out too (a getter checks
    /// every chunk and reports a source that fails it), so the count is of claims, where
    /// [`index::Index::holders`] counts verified copies.
    ///
    /// # Errors
    /// `NotFound` for an unknown file.
    pub fn locate(
        &self,
        caller: &Caller,
        file: &FileId,
        key: [u8; PUBLIC_KEY_LEN],
    ) -> Result<Located, Error> {
        let now = now_ms();
        let ix = self.index();
        let f = ix
            .files
            .get(file)
            .ok_or_else(|| Error::not_found(format!("unknown file {file}")))?;
        let chunks = f.manifest.chunk_count();
        // Together they hold every chunk once one holds all (a file of no chunks counts).
        let mut complete = chunks == 0;
        let mut union: Option<Bitfield> = None;
        // A bounded random choice of holders is listed (`limits::Sample`); only the chosen
        // partial holders' bitfields are copied.
        let (mut full, mut partial) = (Sample::new(), Sample::new());
        for (p, h) in &f.holdings {
            let Some(peer) = ix.peers.get(p).filter(|_| ix.is_serving(p, now)) else {
                continue;
            };
            if chunks == 0 || h.have.is_complete() {
                complete = true;
                full.offer((p, peer, None));
            } else if h.have.count() == 0 {
                continue;
            } else {
                if !complete {
                    union
                        .get_or_insert_with(|| Bitfield::new(chunks))
                        .union_with(&h.have);
                }
                partial.offer((p, peer, Some(&h.have)));
            }
        }
        complete = complete || union.is_some_and(|u| u.is_complete());
        let n = if complete {
            (full.seen() + partial.seen()) as u32
        } else {
            0
        };
        let holders = holder_views(full, partial);
        let view = file_view_with(f, f.name_for(caller.user_id), n);
        let (manifest, packed_hashes) = (f.manifest.clone(), f.packed_hashes.clone());
        drop(ix);
        self.inner.metrics.located(caller.user_id, *file);
        Ok(Located {
            file: view,
            manifest,
            packed_hashes,
            holders,
            ticket: self.located_ticket(*file, caller, key, now),
        })
    }

    /// Every peer, up and down, by id.
    pub fn list_peers(&self) -> Vec<PeerView> {
        let now = now_ms();
        let ix = self.index();
        let bytes = held_bytes(&ix);
        let mut peers: Vec<PeerView> = ix
            .peers
            .values()
            .map(|p| PeerView {
                id: p.rec.id.clone(),
                user: p.user.clone(),
                addr: p.rec.addr.clone(),
                up: index::is_up(p.rec.last_seen_ms, now, ix.timeout_ms),
                last_seen_ms: p.rec.last_seen_ms,
                storage_quota: p.rec.storage_quota,
                storage_used: p.rec.storage_used,
                shared_bytes: bytes.get(&p.rec.id).map_or(0, |b| b.0),
                held_bytes: bytes.get(&p.rec.id).map_or(0, |b| b.1),
                demoted_until_ms: ix.demoted.get(&p.rec.id).copied().filter(|&t| t > now),
            })
            .collect();
        peers.sort_by(|a, b| a.id.cmp(&b.id));
        peers
    }

    /// One file by full id or unique id prefix, with its chunk map.
    ///
    /// # Errors
    /// `InvalidArgument` for text that is not 6–64 hex digits, `NotFound` for no match or
    /// an ambiguous prefix.
    pub fn file_detail(&self, id: &str, chunks: ChunkPage) -> Result<FileDetail, Error> {
        let now = now_ms();
        let ix = self.index();
        let f = by_unique_prefix(&ix, id)?;
        let mut holders: Vec<(&PeerId, &Holding, bool)> = f
            .holdings
            .iter()
            .map(|(p, h)| (p, h, ix.is_up(p, now)))
            .collect();
        // Up holders first: a chunk lists at most MAX_CHUNK_PEERS of them.
        holders.sort_by(|a, b| b.2.cmp(&a.2).then_with(|| a.0.cmp(b.0)));
        let copies = ix.copies(f, now);
        let end = chunks.end(f.manifest.chunk_count());
        let chunks = (chunks.offset.min(end)..end)
            .map(|i| {
                let range = f.manifest.chunk_range(i);
                let mut held = holders.iter().filter(|(_, h, _)| h.have.get(i));
                let peers = held
                    .by_ref()
                    .take(MAX_CHUNK_PEERS)
                    .map(|(p, h, up)| ((*p).clone(), *up, h.kind))
                    .collect::<Vec<_>>();
                ChunkView {
                    index: i,
                    offset: range.start,
                    size: range.end - range.start,
                    sha256: f.manifest.chunk_hashes[i as usize],
                    copies: copies[i as usize],
                    holders: (peers.len() + held.count()) as u32,
                    peers,
                }
            })
            .collect();
        Ok(FileDetail {
            file: file_view(&ix, f, f.display_name(), now),
            chunks,
        })
    }

    /// Counters over users, peers, files and replication health.
    ///
    /// # Errors
    /// [`Error::Database`] when the user count fails.
    pub async fn stats(&self) -> Result<Stats, Error> {
        let users = self.inner.store.count_users().await?;
        let now = now_ms();
        let replication = self.inner.cfg.replication;
        let t = self.inner.metrics.transfers();
        let ix = self.index();
        let mut s = Stats {
            users,
            replication,
            active_transfers: t.active,
            transfer_bytes_per_sec: t.bytes_per_sec,
            bytes_transferred_total: t.bytes_total,
            chunks_transferred_total: t.chunks_total,
            files: ix.files.len() as u64,
            pending_tasks: ix.tasks.len() as u64,
            delivered_tasks: ix.tasks.delivered() as u64,
            ..Stats::default()
        };
        for p in ix.peers.values() {
            if index::is_up(p.rec.last_seen_ms, now, ix.timeout_ms) {
                s.peers_up += 1;
            } else {
                s.peers_down += 1;
            }
        }
        let reachable = replication.min(ix.copy_capable_peers(now));
        s.reachable_replication = reachable;
        s.unreachable_target = reachable < replication;
        for f in ix.files.values() {
            s.chunks += f.manifest.chunk_count() as u64;
            for c in ix.copies(f, now) {
                s.under_replicated_chunks += u64::from(c < replication);
                s.under_reachable_chunks += u64::from(c < reachable);
            }
        }
        Ok(s)
    }
}

/// The one file whose id is `id` or starts with it (6 to 64 hex digits, any case,
/// surrounding whitespace ignored).
///
/// # Errors
/// `InvalidArgument` for other text, `NotFound` for no match or an ambiguous prefix.
pub(super) fn by_unique_prefix<'a>(ix: &'a index::Index, id: &str) -> Result<&'a FileEntry, Error> {
    let id = id.trim().to_ascii_lowercase();
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Error::invalid(format!(
            "file id {:?} is not hex digits",
            common::names::printable(&id, 80)
        )));
    }
    if !(6..=64).contains(&id.len()) {
        return Err(Error::invalid(
            "a file id prefix must have 6 to 64 hex digits",
        ));
    }
    match ix.by_id_prefix(&id).as_slice() {
        [] => Err(Error::not_found(format!("unknown file {id}"))),
        [f] => Ok(*f),
        many => Err(Error::not_found(format!(
            "file id prefix {id} is ambiguous: it matches {} files",
            many.len()
        ))),
    }
}

/// Per peer: (bytes of the files it shares, bytes of every chunk it holds).
fn held_bytes(ix: &index::Index) -> HashMap<PeerId, (u64, u64)> {
    let mut out: HashMap<PeerId, (u64, u64)> = HashMap::new();
    for f in ix.files.values() {
        let m = &f.manifest;
        let last = m.chunk_count().checked_sub(1);
        for (peer, h) in &f.holdings {
            let e = out.entry(peer.clone()).or_default();
            if h.kind == HoldingKind::Shared {
                e.0 += m.size;
            }
            let n = u64::from(h.have.count());
            let short = match last {
                // The last chunk may be shorter than the others.
                Some(l) if h.have.get(l) => {
                    let r = m.chunk_range(l);
                    u64::from(m.chunk_size) - (r.end - r.start)
                }
                _ => 0,
            };
            e.1 += n * u64::from(m.chunk_size) - short;
        }
    }
    out
}
