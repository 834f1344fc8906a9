//! What peers tell the tracker on [`TrackerService`]: heartbeats, full holdings syncs,
//! announces, chunk reports and unindexing. Background facts (heartbeats, syncs, reports)
//! update the in-memory index under one write lock (never held across an await), then
//! queue the matching writes; announce and unindex commit first (`commit`).

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use common::{Bitfield, FileId, Manifest, PeerId};

use super::collections::checked;
use super::commit::{Change, Key, Plan, Planned};
use super::index::{FileEntry, Holding, Index, PeerEntry};
use super::limits::Usage;
use super::names::save_last_name;
use super::replication::{Outcome, plan_withdrawal, withdraw_planned};
use super::{Caller, FileView, HoldingInput, MAX_ADDR_LEN, TrackerService, file_view};
use crate::Error;
use crate::db::writer::WriteOp;
use crate::metrics::Source;
use crate::model::{CollectionRecord, FileRecord, HoldingKind, HoldingRecord, PeerRecord, now_ms};

impl TrackerService {
    /// Records that a peer's node is up at `addr`. Returns how often to heartbeat.
    ///
    /// # Errors
    /// `PermissionDenied` for another user's peer, `InvalidArgument` for a bad address.
    pub async fn heartbeat(
        &self,
        caller: &Caller,
        peer: &PeerId,
        addr: &str,
        storage_quota: u64,
        storage_used: u64,
    ) -> Result<Duration, Error> {
        if addr.len() > MAX_ADDR_LEN || addr.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(Error::invalid(
                "peer address must be host:port without spaces",
            ));
        }
        let now = now_ms();
        {
            let mut ix = self.index_mut();
            claim_peer(&mut ix, caller, peer, now)?;
            let Some(p) = ix.peers.get_mut(peer) else {
                return Err(Error::Internal("claimed peer vanished".into()));
            };
            p.rec.addr = addr.to_string();
            p.rec.storage_quota = storage_quota;
            p.rec.storage_used = storage_used;
            p.rec.last_seen_ms = Some(now);
            self.inner.writer.queue([WriteOp::Peer(p.rec.clone())])?;
        }
        self.inner.writer.ready().await;
        let interval = self.inner.cfg.peer_timeout / 3;
        Ok(interval.max(Duration::from_millis(100)))
    }

    /// Replaces everything recorded as held by `peer`. Returns the file ids it ignored
    /// because they are unknown (or not file ids).
    ///
    /// # Errors
    /// `PermissionDenied` for another user's peer, `InvalidArgument` for a bitfield of the
    /// wrong length (then nothing changes).
    pub async fn sync_holdings(
        &self,
        caller: &Caller,
        peer: &PeerId,
        holdings: Vec<HoldingInput>,
    ) -> Result<Vec<String>, Error> {
        let now = now_ms();
        let mut ops = Vec::new();
        let mut unknown = Vec::new();
        {
            let mut ix = self.index_mut();
            let mut parsed: HashMap<FileId, (HoldingKind, Bitfield)> = HashMap::new();
            for h in holdings {
                let Some(f) = h
                    .file_id
                    .parse::<FileId>()
                    .ok()
                    .and_then(|id| ix.files.get(&id))
                else {
                    unknown.push(h.file_id);
                    continue;
                };
                parsed.insert(f.id, (h.kind, bitfield(&h.have, f)?));
            }
            ops.extend(claim_peer(&mut ix, caller, peer, now)?);
            ops.push(WriteOp::ClearHoldings(peer.clone()));
            let held = ix.files_of(peer);
            for id in &held {
                if !parsed.contains_key(id) {
                    ix.take_holding(id, peer);
                }
            }
            for (id, (kind, have)) in parsed {
                let mut h = Holding::claimed(kind, have, now);
                keep_verified(&ix, &id, peer, &mut h);
                // A sync carries no names: a shared holding keeps the one it was announced
                // with (and, replaced rather than taken, its age).
                if kind == HoldingKind::Shared {
                    h.name = (ix.files.get(&id))
                        .and_then(|f| f.holdings.get(peer))
                        .and_then(|old| old.name.clone());
                }
                ops.push(WriteOp::Holding(holding_record(peer, id, &h)));
                ix.set_holding(id, peer, h);
            }
            for id in &held {
                ops.extend(save_last_name(&mut ix, id));
            }
            self.inner.writer.queue(ops)?;
        }
        self.inner.writer.ready().await;
        self.wake_planner();
        Ok(unknown)
    }

    /// Publishes a file (idempotent for the same content) and records that `peer` shares all
    /// of it under the manifest's name: its own listing, which a later announce renames; the
    /// first announcer names nobody else's (see `names`). Committed before memory changes
    /// and before it returns (see `commit`).
    ///
    /// `listing` (non-empty) makes the file a collection: it must be the file's content and
    /// parse as a listing, which is checked before anything else, and it is committed with
    /// the announce (see `collections`). Without one a file stays what the tracker knows it
    /// as.
    ///
    /// # Errors
    /// `InvalidArgument` for a listing that is refused, `PermissionDenied` for another
    /// user's peer, `LimitReached`; `Database` when the commit failed (then nothing
    /// changed).
    pub async fn announce(
        &self,
        caller: &Caller,
        peer: &PeerId,
        manifest: Manifest,
        listing: Option<Bytes>,
    ) -> Result<FileView, Error> {
        let listing = match listing.filter(|l| !l.is_empty()) {
            Some(bytes) => Some((checked(&manifest, bytes.clone()).await?, bytes)),
            None => None,
        };
        let now = now_ms();
        let id = manifest.id();
        let name = manifest.name.clone();
        let chunks = manifest.chunk_count();
        let view = self
            .write_through(|ix| {
                ix.check_announce(caller, peer, &id, chunks)?;
                let new_peer = check_claim(ix, caller, peer, now)?;
                let known = ix.files.get(&id);
                let shares = !known
                    .and_then(|f| f.holdings.get(peer))
                    .is_some_and(|h| Usage::counts(h.kind));
                // The file's row as memory has it (a known file keeps its name and age).
                let file = match known {
                    Some(f) => FileRecord {
                        manifest: (*f.manifest).clone(),
                        created_at_ms: f.created_at_ms,
                    },
                    None => FileRecord {
                        manifest: manifest.clone(),
                        created_at_ms: now,
                    },
                };
                let mut h = Holding::claimed(HoldingKind::Shared, Bitfield::full(chunks), now);
                h.name = Some(name.clone());
                keep_verified(ix, &id, peer, &mut h);
                let mut keys = vec![Key::File(id)];
                let mut ops = Vec::new();
                if let Some(rec) = &new_peer {
                    keys.push(Key::NewPeer(peer.clone()));
                    ops.push(WriteOp::Peer(rec.clone()));
                }
                // Always written, so a withdrawal folded into the same transaction cannot
                // leave the holding without its file.
                ops.push(WriteOp::FileUpsert(file.clone()));
                ops.push(WriteOp::Holding(holding_record(peer, id, &h)));
                // The listing commits with the announce, unless the file is known as a
                // collection already (its id fixes its content, so the stored one stands).
                let listing = listing.clone().map(|(l, bytes)| {
                    let rec = CollectionRecord {
                        file_id: id,
                        listing: bytes,
                    };
                    (l, rec)
                });
                if let Some((_, rec)) = &listing
                    && known.is_none_or(|f| f.collection.is_none())
                {
                    ops.push(WriteOp::Collection(rec.clone()));
                }
                let (peer, user, name) = (peer.clone(), caller.user.clone(), name.clone());
                let change: Change<FileView> = Box::new(move |ix| {
                    let mut rows = Vec::new();
                    if let Some(rec) = new_peer {
                        if !ix.peers.contains_key(&peer) {
                            ix.insert_peer(PeerEntry { rec, user });
                        }
                        rows.extend(ix.peers.get(&peer).map(|p| WriteOp::Peer(p.rec.clone())));
                    }
                    if !ix.files.contains_key(&id) {
                        rows.push(WriteOp::FileUpsert(file.clone()));
                        ix.insert_file(FileEntry::new(file));
                        tracing::debug!(file = %id, "new file announced");
                    }
                    if let Some((l, rec)) = listing
                        && ix.set_collection(id, l)
                    {
                        rows.push(WriteOp::Collection(rec));
                    }
                    // Verified as far as the holding is now (an audit may have failed since).
                    let mut h = h;
                    h.verified = Bitfield::new(chunks);
                    keep_verified(ix, &id, &peer, &mut h);
                    rows.push(WriteOp::Holding(holding_record(&peer, id, &h)));
                    ix.set_holding(id, &peer, h);
                    let view = file_view(ix, &ix.files[&id], &name, now);
                    (rows, view)
                });
                Ok(Plan {
                    planned: Planned {
                        user: caller.user_id,
                        keys,
                        shares: shares.then_some(chunks),
                        ops,
                    },
                    change,
                })
            })
            .await?;
        self.wake_planner();
        Ok(view)
    }

    /// Adds chunks to what `peer` holds of a file.
    ///
    /// # Errors
    /// `NotFound` for an unknown file, `InvalidArgument` for an index past its end,
    /// `PermissionDenied` for another user's peer.
    pub async fn report_chunks(
        &self,
        caller: &Caller,
        peer: &PeerId,
        file: &FileId,
        kind: HoldingKind,
        chunks: &[u32],
    ) -> Result<(), Error> {
        let now = now_ms();
        let mut ops = Vec::new();
        {
            let mut ix = self.index_mut();
            let count = ix
                .files
                .get(file)
                .ok_or_else(|| Error::not_found(format!("unknown file {file}")))?
                .manifest
                .chunk_count();
            if let Some(bad) = chunks.iter().find(|&&c| c >= count) {
                return Err(Error::invalid(format!(
                    "chunk {bad} is past the end of file {file} ({count} chunks)"
                )));
            }
            ops.extend(claim_peer(&mut ix, caller, peer, now)?);
            let Some(f) = ix.files.get(file) else {
                return Err(Error::not_found(format!("unknown file {file}")));
            };
            let mut h = f
                .holdings
                .get(peer)
                .cloned()
                .unwrap_or_else(|| Holding::claimed(kind, Bitfield::new(count), now));
            // Shared beats downloaded beats replica: a report never demotes a holding.
            h.kind = h.kind.min(kind);
            let (fresh, fresh_bytes) = fresh_chunks(&f.manifest, &h.have, chunks);
            self.inner
                .metrics
                .chunks_reported(Source::Report, fresh, fresh_bytes);
            for &c in chunks {
                h.have.set(c);
            }
            if kind == HoldingKind::Downloaded && h.have.is_complete() {
                // A getter reports the whole file as it finishes: no longer a transfer.
                self.inner.metrics.transfer_ended(caller.user_id, *file);
            }
            h.updated_at_ms = now;
            ops.push(WriteOp::Holding(holding_record(peer, *file, &h)));
            ix.set_holding(*file, peer, h);
            self.inner.writer.queue(ops)?;
        }
        self.inner.writer.ready().await;
        self.wake_planner();
        Ok(())
    }

    /// Removes `peer`'s holding of a file. When no user holds it any more (only replicas
    /// are left, or nothing), the file is withdrawn: its fetches are cancelled, every
    /// replica holder gets a drop task, and the file is forgotten. Committed before memory
    /// changes and before it returns (see `commit`).
    ///
    /// # Errors
    /// `NotFound` when the peer held nothing of it, `PermissionDenied` for another user's
    /// peer; `Database` when the commit failed (then nothing changed).
    pub async fn unindex(
        &self,
        caller: &Caller,
        peer: &PeerId,
        file: &FileId,
    ) -> Result<(), Error> {
        let now = now_ms();
        let file = *file;
        self.write_through(|ix| {
            let not_held = || Error::not_found(format!("peer {peer} holds nothing of file {file}"));
            match ix.peers.get(peer) {
                None => return Err(not_held()),
                Some(p) if p.rec.user_id != caller.user_id => return Err(not_yours(peer)),
                Some(_) => {}
            }
            let f = (ix.files.get(&file))
                .filter(|f| f.holdings.contains_key(peer))
                .ok_or_else(not_held)?;
            let withdraw =
                !(f.holdings.iter()).any(|(p, h)| p != peer && h.kind != HoldingKind::Replica);
            let mut ops = vec![WriteOp::HoldingDelete(peer.clone(), file)];
            let drops = if withdraw {
                plan_withdrawal(ix, &file, peer, now, &mut ops)
            } else {
                Vec::new()
            };
            let (svc, peer) = (self.clone(), peer.clone());
            let change: Change<()> = Box::new(move |ix| {
                let mut out = Outcome::default();
                if ix.take_holding(&file, &peer).is_some() {
                    out.ops.push(WriteOp::HoldingDelete(peer.clone(), file));
                }
                if withdraw {
                    let targets: Vec<PeerId> = drops.iter().map(|t| t.peer_id.clone()).collect();
                    withdraw_planned(ix, &file, drops, &mut out);
                    out.ops.extend(svc.push_due_all(ix, &targets, now_ms()));
                } else {
                    out.ops.extend(save_last_name(ix, &file));
                }
                (out.ops, ())
            });
            Ok(Plan::on_file(caller.user_id, file, ops, change))
        })
        .await?;
        self.wake_planner();
        Ok(())
    }
}

/// Whether `caller` may claim `peer`: `Some(row)` for a peer id new to the index (within
/// the caller's limit), `None` for one it owns already.
fn check_claim(
    ix: &Index,
    caller: &Caller,
    peer: &PeerId,
    now: i64,
) -> Result<Option<PeerRecord>, Error> {
    check_owner(ix, caller, peer)?;
    if ix.peers.contains_key(peer) {
        return Ok(None);
    }
    // One a write in flight claims is counted already.
    if ix.reserved.claimant(peer).is_none() {
        ix.check_new_peer(caller)?;
    }
    Ok(Some(PeerRecord {
        id: peer.clone(),
        user_id: caller.user_id,
        addr: String::new(),
        storage_quota: 0,
        storage_used: 0,
        last_seen_ms: None,
        created_at_ms: now,
    }))
}

/// Refuses `peer` when another user owns it, or a write in flight claims it for another
/// user; a peer id nobody has claimed passes.
pub(super) fn check_owner(ix: &Index, caller: &Caller, peer: &PeerId) -> Result<(), Error> {
    let owner = match ix.peers.get(peer) {
        Some(p) => Some(p.rec.user_id),
        None => ix.reserved.claimant(peer),
    };
    match owner {
        Some(u) if u != caller.user_id => Err(not_yours(peer)),
        _ => Ok(()),
    }
}

/// Makes `caller` the owner of `peer` if nobody is; returns the op that persists a new peer.
pub(super) fn claim_peer(
    ix: &mut Index,
    caller: &Caller,
    peer: &PeerId,
    now: i64,
) -> Result<Option<WriteOp>, Error> {
    let Some(rec) = check_claim(ix, caller, peer, now)? else {
        return Ok(None);
    };
    ix.insert_peer(PeerEntry {
        rec: rec.clone(),
        user: caller.user.clone(),
    });
    Ok(Some(WriteOp::Peer(rec)))
}

/// How many of `chunks` (indexes checked by the caller) `have` lacks, and their bytes:
/// what a report or a replica fetch newly adds, for the transfer counters.
pub(super) fn fresh_chunks(m: &Manifest, have: &Bitfield, chunks: &[u32]) -> (u64, u64) {
    let mut fresh: Vec<u32> = chunks.iter().copied().filter(|&c| !have.get(c)).collect();
    fresh.sort_unstable();
    fresh.dedup();
    let bytes = fresh
        .iter()
        .map(|&c| {
            let r = m.chunk_range(c);
            r.end - r.start
        })
        .sum();
    (fresh.len() as u64, bytes)
}

/// A holding's bitfield from wire bytes (empty = every chunk).
fn bitfield(have: &[u8], f: &FileEntry) -> Result<Bitfield, Error> {
    let n = f.manifest.chunk_count();
    if have.is_empty() {
        return Ok(Bitfield::full(n));
    }
    Bitfield::from_bytes(have, n)
        .map_err(|e| Error::invalid(format!("holding of file {}: {e}", f.id)))
}

/// What audits verified of `peer`'s previous holding of `file` stays verified in `h`, as
/// far as `h` still claims it: a node's sync at every start or a re-announce must not send
/// every holding back to be audited.
fn keep_verified(ix: &Index, file: &FileId, peer: &PeerId, h: &mut Holding) {
    if let Some(old) = ix.files.get(file).and_then(|f| f.holdings.get(peer)) {
        let mut v = old.verified.clone();
        v.intersect_with(&h.have);
        h.verified = v;
    }
}

pub(super) fn holding_record(peer: &PeerId, file: FileId, h: &Holding) -> HoldingRecord {
    HoldingRecord {
        peer_id: peer.clone(),
        file_id: file,
        kind: h.kind,
        have: h.have.as_bytes().to_vec(),
        updated_at_ms: h.updated_at_ms,
        verified: h.verified.as_bytes().to_vec(),
        name: h.name.clone(),
    }
}

pub(super) fn not_yours(peer: &PeerId) -> Error {
    Error::PermissionDenied(format!("peer {peer} belongs to another user"))
}
