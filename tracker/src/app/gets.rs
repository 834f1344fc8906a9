//! Waiting gets (`peer get --wait`) on [`TrackerService`]: a file the getter could not fetch
//! because no peer that is up holds it is queued here as a task of kind get for the
//! getter's node, in the same durable task table as replication work. It is pushed on the
//! node's `Tasks` stream when peers that are up hold every chunk of the file, verified (see
//! `delivery`), retried with back-off when the node could not fetch it after all, and
//! never given up: it ends when the node completes it or its user cancels it.

use common::{FileId, PeerId};

use super::commit::{Change, Plan, Planned};
use super::holdings::not_yours;
use super::{Caller, TrackerService};
use crate::Error;
use crate::db::writer::WriteOp;
use crate::model::{TaskKind, now_ms};

/// Waiting gets one peer may have: enough for any person, and a bound on what a hostile
/// account can make the tracker check.
pub const MAX_WAITING_GETS: usize = 256;

impl TrackerService {
    /// Queues a waiting get of `file` for `peer` (idempotent); returns its task id.
    /// Committed before it returns.
    ///
    /// # Errors
    /// `NotFound` for a peer the tracker has not seen (its node has never run),
    /// `PermissionDenied` for another user's peer, `LimitReached` past
    /// [`MAX_WAITING_GETS`], `Database` when the commit failed.
    pub async fn queue_get(
        &self,
        caller: &Caller,
        peer: &PeerId,
        file: FileId,
    ) -> Result<u64, Error> {
        let now = now_ms();
        let id = self
            .write_through(|ix| {
                own_peer(ix, caller, peer)?;
                let mut waiting = 0;
                for t in ix.tasks.gets_of(peer) {
                    if t.file_id == file {
                        return Ok(plan_nothing(caller, t.id));
                    }
                    waiting += 1;
                }
                if waiting >= MAX_WAITING_GETS {
                    return Err(Error::LimitReached(format!(
                        "peer {peer} has {MAX_WAITING_GETS} waiting gets already; cancel some first"
                    )));
                }
                let rec = ix.tasks.draft(peer, TaskKind::Get, file, Vec::new(), now);
                let (svc, id) = (self.clone(), rec.id);
                let ops = vec![WriteOp::Task(rec.clone())];
                let change: Change<u64> = Box::new(move |ix| {
                    let peer = rec.peer_id.clone();
                    ix.tasks.insert(rec, 0, true);
                    (svc.push_due(ix, &peer, now), id)
                });
                Ok(Plan::on_file(caller.user_id, file, ops, change))
            })
            .await?;
        tracing::debug!(peer = %peer, file = %file, task = id, "waiting get queued");
        Ok(id)
    }

    /// Cancels `peer`'s waiting get of `file`; returns whether there was one. Committed
    /// before it returns.
    ///
    /// # Errors
    /// As [`Self::queue_get`], but for the limit.
    pub async fn cancel_get(
        &self,
        caller: &Caller,
        peer: &PeerId,
        file: FileId,
    ) -> Result<bool, Error> {
        self.write_through(|ix| {
            own_peer(ix, caller, peer)?;
            let Some(id) = (ix.tasks.gets_of(peer))
                .find(|t| t.file_id == file)
                .map(|t| t.id)
            else {
                return Ok(plan_nothing(caller, false));
            };
            let change: Change<bool> = Box::new(move |ix| {
                ix.tasks.remove(id);
                (Vec::new(), true)
            });
            Ok(Plan::on_file(
                caller.user_id,
                file,
                vec![WriteOp::TaskDelete(id)],
                change,
            ))
        })
        .await
    }
}

/// Refuses a peer that is unknown or not the caller's.
fn own_peer(ix: &super::index::Index, caller: &Caller, peer: &PeerId) -> Result<(), Error> {
    match ix.peers.get(peer) {
        None => Err(Error::not_found(format!(
            "peer {peer} is not known to the tracker yet: start its node (`peer serve`)"
        ))),
        Some(p) if p.rec.user_id != caller.user_id => Err(not_yours(peer)),
        Some(_) => Ok(()),
    }
}

/// A plan that writes nothing and answers `answer`.
fn plan_nothing<T: Send + 'static>(caller: &Caller, answer: T) -> Plan<T> {
    Plan {
        planned: Planned {
            user: caller.user_id,
            keys: Vec::new(),
            shares: None,
            ops: Vec::new(),
        },
        change: Box::new(move |_| (Vec::new(), answer)),
    }
}
