//! Certificates: the tracker's signed statement that a public key is one user's peer's
//! (`common::identity`), which nodes accept, with a proof of the key, in place of a ticket
//! while their tracker does not answer.
//!
//! Nothing is stored: a certificate is signed with the ticket key, which every tracker on
//! the database shares, so any of them can issue one and every node can check it. Nor does
//! certifying create the peer (the first heartbeat does): it only must not be another
//! user's.

use common::ticket::PUBLIC_KEY_LEN;
use common::{Certificate, CertificateClaims, PeerId};

use super::holdings::check_owner;
use super::{Caller, TrackerService, duration_ms};
use crate::Error;
use crate::model::now_ms;

impl TrackerService {
    /// Certifies `key` as the key of `caller`'s peer `peer`, for `--cert-ttl` from now.
    /// `key` must be an Ed25519 public key (the adapter checks it).
    ///
    /// # Errors
    /// `PermissionDenied` when the peer id belongs to another user, as Heartbeat would
    /// refuse it.
    pub fn certify(
        &self,
        caller: &Caller,
        peer: &PeerId,
        key: [u8; PUBLIC_KEY_LEN],
    ) -> Result<Certificate, Error> {
        check_owner(&self.index(), caller, peer)?;
        let ttl = duration_ms(self.inner.cfg.cert_ttl);
        Ok(self.inner.tickets.certify(CertificateClaims {
            peer_id: peer.clone(),
            user: caller.user.clone(),
            key,
            expires_at_ms: now_ms().saturating_add(ttl),
        }))
    }
}
