//! What the node knows of tickets: the tracker's key, and which tickets already verified.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use common::ticket::{CLOCK_SKEW_MS, SIGNATURE_LEN};
use common::{FileId, Ticket, TicketClaims, TicketError, TicketVerifier};

/// The tracker's ticket key as this node knows it: none until learnt, then replaced when
/// the tracker sends another. Cheap to clone; the clones share it.
#[derive(Clone, Default)]
pub struct TrackerKey(Arc<RwLock<Option<TicketVerifier>>>);

impl TrackerKey {
    pub fn get(&self) -> Option<TicketVerifier> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Takes `key` (32 bytes); returns whether it differs from the one held.
    ///
    /// # Errors
    /// When the bytes are not an Ed25519 public key (the held key stays).
    pub fn set(&self, key: &[u8]) -> Result<bool, TicketError> {
        let v = TicketVerifier::from_public(key)?;
        let mut cur = self.0.write().unwrap_or_else(|p| p.into_inner());
        if cur.as_ref() == Some(&v) {
            return Ok(false);
        }
        *cur = Some(v);
        Ok(true)
    }
}

/// Most tickets remembered as verified; past it, expired ones are forgotten (all of them if
/// none has expired).
const MAX_VERIFIED: usize = 4096;

/// Tickets whose signature verified, by signature, with the key that verified them: a
/// getter presents the same ticket with every request (one per chunk), and an Ed25519
/// check per request cost the node more than its read. A hit needs the same claims and key,
/// so an altered ticket or a new tracker key goes through the full check again.
#[derive(Default)]
pub(super) struct VerifiedTickets(Mutex<HashMap<[u8; SIGNATURE_LEN], Verified>>);

/// What a remembered signature was verified over, and with which key.
struct Verified {
    claims: TicketClaims,
    key: [u8; 32],
}

impl VerifiedTickets {
    /// Whether `ticket` verified under `key` before and is for `file` and unexpired at `now`.
    pub(super) fn accepts(
        &self,
        ticket: &Ticket,
        key: &TicketVerifier,
        file: &FileId,
        now: i64,
    ) -> bool {
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.get(&ticket.signature).is_some_and(|v| {
            v.claims == ticket.claims
                && v.claims.file_id == *file
                && now <= v.claims.expires_at_ms.saturating_add(CLOCK_SKEW_MS)
                && v.key == key.public_key()
        })
    }

    pub(super) fn insert(&self, ticket: &Ticket, key: &TicketVerifier, now: i64) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_VERIFIED {
            map.retain(|_, v| now <= v.claims.expires_at_ms.saturating_add(CLOCK_SKEW_MS));
            if map.len() >= MAX_VERIFIED {
                map.clear();
            }
        }
        let v = Verified {
            claims: ticket.claims.clone(),
            key: key.public_key(),
        };
        map.insert(ticket.signature, v);
    }
}
