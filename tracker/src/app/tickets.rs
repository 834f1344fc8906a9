//! Tickets: the tracker signs short-lived permissions to fetch chunks of one file
//! (`common::ticket`), which serving nodes check with the tracker's public key alone.
//!
//! The signing key is an Ed25519 secret kept in the database (`tracker_keys`, row
//! [`TICKET_KEY`]): the first tracker to start inserts a random one, and every tracker on the
//! same database reads back and uses that one, so their tickets are interchangeable.
//!
//! Every ticket names the requester's own public key (`TicketClaims::key`), which the
//! requester proves with each request to a node: a getter's (Locate), a replicating node's
//! (its `Tasks` stream), or the tracker's own (audits).

use std::collections::HashMap;
use std::sync::Mutex;

use common::ticket::PUBLIC_KEY_LEN;
use common::{FileId, PeerId, Ticket, TicketClaims, TicketSigner};
use rand::RngExt;

use super::{Caller, TrackerService, duration_ms, lock};
use crate::Error;
use crate::db::Store;
use crate::model::now_ms;

/// The `tracker_keys` row of the ticket signing key.
pub const TICKET_KEY: &str = "ticket";

/// Loads the ticket signing key, creating it if the database has none yet.
///
/// # Errors
/// [`Error::Database`]; [`Error::Internal`] when the stored secret is not 32 bytes.
pub async fn load_signer(store: &Store) -> Result<TicketSigner, Error> {
    let mut fresh = [0u8; common::ticket::SECRET_KEY_LEN];
    rand::rng().fill(&mut fresh);
    let secret = store.key_or_insert(TICKET_KEY, &fresh).await?;
    let secret = <[u8; common::ticket::SECRET_KEY_LEN]>::try_from(secret.as_slice())
        .map_err(|_| Error::Internal("the stored ticket key is not 32 bytes".into()))?;
    Ok(TicketSigner::from_secret(&secret))
}

impl TrackerService {
    /// The public key nodes check tickets with.
    pub fn ticket_public_key(&self) -> [u8; common::ticket::PUBLIC_KEY_LEN] {
        self.inner.tickets.public_key()
    }

    /// A Locate ticket for `user` to fetch chunks of `file` with requests proven by `key`:
    /// valid for at least half of `--ticket-ttl` from `now`.
    pub(super) fn located_ticket(
        &self,
        file: FileId,
        caller: &Caller,
        key: [u8; PUBLIC_KEY_LEN],
        now: i64,
    ) -> Ticket {
        let ttl = duration_ms(self.inner.cfg.ticket_ttl);
        self.inner
            .located_tickets
            .get_or_sign(&self.inner.tickets, ttl, file, caller, key, now)
    }

    /// A ticket for `user` (and, for replication, the node `peer`) to fetch chunks of
    /// `file` with requests proven by `key`, valid for `--ticket-ttl` from now.
    pub fn issue_ticket(
        &self,
        file: FileId,
        key: [u8; PUBLIC_KEY_LEN],
        peer: Option<PeerId>,
        user: &str,
    ) -> Ticket {
        issue(
            &self.inner.tickets,
            duration_ms(self.inner.cfg.ticket_ttl),
            file,
            key,
            peer,
            user,
        )
    }
}

/// Tickets handed out by Locate, by file, user and requester key. A getter calls Locate
/// every few seconds and a popular file is located by many; signing each time would be most
/// of Locate's cost. Keyed by user id and the raw key, so a lookup allocates nothing; the
/// key is part of it because each of a user's nodes has its own, and a ticket naming one
/// is useless to the others.
#[derive(Default)]
pub(super) struct TicketCache {
    tickets: Mutex<HashMap<CacheKey, Ticket>>,
}

/// File, user id, requester key.
type CacheKey = (FileId, i32, [u8; PUBLIC_KEY_LEN]);

/// Entries kept before the cache starts over (each is a few hundred bytes).
const TICKET_CACHE_MAX: usize = 65_536;

impl TicketCache {
    /// The cached ticket when more than half of `ttl_ms` is left on it, else a new one.
    fn get_or_sign(
        &self,
        signer: &TicketSigner,
        ttl_ms: i64,
        file: FileId,
        caller: &Caller,
        key: [u8; PUBLIC_KEY_LEN],
        now: i64,
    ) -> Ticket {
        let entry = (file, caller.user_id, key);
        let mut tickets = lock(&self.tickets);
        // The name is checked too, in case a removed user's id is given to a new one.
        if let Some(t) = tickets.get(&entry)
            && t.claims.expires_at_ms - now > ttl_ms / 2
            && t.claims.user == caller.user
        {
            return t.clone();
        }
        let t = issue(signer, ttl_ms, file, key, None, &caller.user);
        if tickets.len() >= TICKET_CACHE_MAX {
            tickets.clear();
        }
        tickets.insert(entry, t.clone());
        t
    }
}

/// Signs a ticket valid for `ttl_ms` from now.
pub(super) fn issue(
    signer: &TicketSigner,
    ttl_ms: i64,
    file: FileId,
    key: [u8; PUBLIC_KEY_LEN],
    peer: Option<PeerId>,
    user: &str,
) -> Ticket {
    signer.sign(TicketClaims {
        file_id: file,
        key,
        peer_id: peer,
        user: user.to_string(),
        expires_at_ms: now_ms().saturating_add(ttl_ms),
    })
}
