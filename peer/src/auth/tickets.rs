//! What the node knows of the tracker's signatures: its key, and which tickets and
//! certificates already verified.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use common::ticket::SIGNATURE_LEN;
use common::{TicketError, TicketVerifier};

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

/// Most signatures remembered as verified; past it, expired ones are forgotten (all of them
/// if none has expired).
const MAX_VERIFIED: usize = 4096;

/// Tickets or certificates whose signature verified, by signature, with the key that
/// verified them: a getter presents the same ticket (and certificate) with every request,
/// one per chunk, and an Ed25519 check per request cost the node more than its read. A hit
/// needs the same claims and key, so an altered one or a new tracker key goes through the
/// full check again.
pub(super) struct VerifiedSignatures<C>(Mutex<HashMap<[u8; SIGNATURE_LEN], Verified<C>>>);

impl<C> Default for VerifiedSignatures<C> {
    fn default() -> Self {
        Self(Mutex::default())
    }
}

/// What a remembered signature was verified over, with which key, and until when it holds.
struct Verified<C> {
    claims: C,
    key: [u8; 32],
    /// Unix ms, clock skew included.
    until_ms: i64,
}

impl<C: PartialEq + Clone> VerifiedSignatures<C> {
    /// Whether `claims` with `signature` verified under `key` before and hold at `now`.
    pub(super) fn accepts(
        &self,
        signature: &[u8; SIGNATURE_LEN],
        claims: &C,
        key: &TicketVerifier,
        now: i64,
    ) -> bool {
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.get(signature)
            .is_some_and(|v| v.claims == *claims && now <= v.until_ms && v.key == key.public_key())
    }

    /// Remembers that `claims` with `signature` verified under `key`, until `until_ms`.
    pub(super) fn insert(
        &self,
        signature: &[u8; SIGNATURE_LEN],
        claims: &C,
        key: &TicketVerifier,
        until_ms: i64,
        now: i64,
    ) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_VERIFIED {
            map.retain(|_, v| now <= v.until_ms);
            if map.len() >= MAX_VERIFIED {
                map.clear();
            }
        }
        let v = Verified {
            claims: claims.clone(),
            key: key.public_key(),
            until_ms,
        };
        map.insert(*signature, v);
    }
}
