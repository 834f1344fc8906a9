//! What peers tell the tracker on [`TrackerService`]: heartbeats, full holdings syncs,
//! announces, chunk reports and unindexing. Each updates the in-memory index under one
//! write lock (never held across an await), then queues the matching writes.

use std::collections::HashMap;
use std::time::Duration;

use common::{Bitfield, FileId, Manifest, PeerId};

use super::index::{FileEntry, Holding, Index, PeerEntry};
use super::replication::{Outcome, withdraw_if_unheld};
use super::{Caller, FileView, HoldingInput, MAX_ADDR_LEN, TrackerService, file_view};
use crate::Error;
use crate::db::writer::WriteOp;
use crate::metrics::Source;
use crate::model::{FileRecord, HoldingKind, HoldingRecord, PeerRecord, now_ms};

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
            for id in ix.files_of(peer) {
                ix.take_holding(&id, peer);
            }
            for (id, (kind, have)) in parsed {
                let h = Holding {
                    kind,
                    have,
                    updated_at_ms: now,
                };
                ops.push(WriteOp::Holding(holding_record(peer, id, &h)));
                ix.set_holding(id, peer, h);
            }
            self.inner.writer.queue(ops)?;
        }
        self.inner.writer.ready().await;
        self.wake_planner();
        Ok(unknown)
    }

    /// Publishes a file (idempotent for the same content: the first name stays) and records
    /// that `peer` holds all of it as shared. Durable when it returns.
    ///
    /// # Errors
    /// `PermissionDenied` for another user's peer.
    pub async fn announce(
        &self,
        caller: &Caller,
        peer: &PeerId,
        manifest: Manifest,
    ) -> Result<FileView, Error> {
        let now = now_ms();
        let id = manifest.id();
        let mut ops = Vec::new();
        let view = {
            let mut ix = self.index_mut();
            ops.extend(claim_peer(&mut ix, caller, peer, now)?);
            if !ix.files.contains_key(&id) {
                let rec = FileRecord {
                    manifest,
                    created_at_ms: now,
                };
                ops.push(WriteOp::FileUpsert(rec.clone()));
                ix.insert_file(FileEntry::new(rec));
                tracing::debug!(file = %id, user = %caller.user, "new file announced");
            }
            let Some(f) = ix.files.get(&id) else {
                return Err(Error::Internal("announced file vanished".into()));
            };
            let h = Holding {
                kind: HoldingKind::Shared,
                have: Bitfield::full(f.manifest.chunk_count()),
                updated_at_ms: now,
            };
            ops.push(WriteOp::Holding(holding_record(peer, id, &h)));
            ix.set_holding(id, peer, h);
            self.inner.writer.queue(ops)?;
            file_view(&ix, &ix.files[&id], now)
        };
        self.inner.writer.flush().await?;
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
            let mut h = f.holdings.get(peer).cloned().unwrap_or_else(|| Holding {
                kind,
                have: Bitfield::new(count),
                updated_at_ms: now,
            });
            // Shared beats downloaded beats replica: a report never demotes a holding.
            h.kind = h.kind.min(kind);
            let (fresh, fresh_bytes) = fresh_chunks(&f.manifest, &h.have, chunks);
            self.inner
                .metrics
                .chunks_reported(Source::Report, fresh, fresh_bytes);
            for &c in chunks {
                h.have.set(c);
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
    /// replica holder gets a drop task, and the file is forgotten. Durable when it returns.
    ///
    /// # Errors
    /// `NotFound` when the peer held nothing of it, `PermissionDenied` for another user's
    /// peer.
    pub async fn unindex(
        &self,
        caller: &Caller,
        peer: &PeerId,
        file: &FileId,
    ) -> Result<(), Error> {
        let now = now_ms();
        let mut out = Outcome::default();
        {
            let mut ix = self.index_mut();
            let not_held = || Error::not_found(format!("peer {peer} holds nothing of file {file}"));
            match ix.peers.get(peer) {
                None => return Err(not_held()),
                Some(p) if p.rec.user_id != caller.user_id => return Err(not_yours(peer)),
                Some(_) => {}
            }
            ix.take_holding(file, peer).ok_or_else(not_held)?;
            out.ops.push(WriteOp::HoldingDelete(peer.clone(), *file));
            withdraw_if_unheld(&mut ix, file, now, &mut out);
            out.queue(&self.inner.writer)?;
        }
        self.apply_outcome(out).await?;
        self.wake_planner();
        Ok(())
    }
}

/// Makes `caller` the owner of `peer` if nobody is; returns the op that persists a new peer.
pub(super) fn claim_peer(
    ix: &mut Index,
    caller: &Caller,
    peer: &PeerId,
    now: i64,
) -> Result<Option<WriteOp>, Error> {
    match ix.peers.get(peer) {
        Some(p) if p.rec.user_id != caller.user_id => Err(not_yours(peer)),
        Some(_) => Ok(None),
        None => {
            let rec = PeerRecord {
                id: peer.clone(),
                user_id: caller.user_id,
                addr: String::new(),
                storage_quota: 0,
                storage_used: 0,
                last_seen_ms: None,
                created_at_ms: now,
            };
            ix.peers.insert(
                peer.clone(),
                PeerEntry {
                    rec: rec.clone(),
                    user: caller.user.clone(),
                },
            );
            Ok(Some(WriteOp::Peer(rec)))
        }
    }
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

pub(super) fn holding_record(peer: &PeerId, file: FileId, h: &Holding) -> HoldingRecord {
    HoldingRecord {
        peer_id: peer.clone(),
        file_id: file,
        kind: h.kind,
        have: h.have.as_bytes().to_vec(),
        updated_at_ms: h.updated_at_ms,
    }
}

pub(super) fn not_yours(peer: &PeerId) -> Error {
    Error::PermissionDenied(format!("peer {peer} belongs to another user"))
}
