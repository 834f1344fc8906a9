//! Who may ask this peer for something: the ticket or certificate a request carries, and
//! the proof that the requester holds the key it names. Everything is checked here, with
//! the tracker's public key alone and no call to the tracker. The node's server admits
//! chunk requests ([`Gate::admit`]) and requests between peers that need no ticket
//! ([`Gate::admit_peer`]: flooded searches, peer exchange); a searching `peer search`
//! admits the answers it receives the same way.
//!
//! - A **ticket** (from Locate or a replication task) grants one file for minutes. The
//!   request's proof must be made with the key the ticket names, so a copied ticket is
//!   useless.
//! - A **certificate** grants nothing by itself while the tracker answers: the tracker,
//!   which can refuse a user, stays the one that hands out access. Once this node's own
//!   heartbeats fail ([`TrackerReach`]), a valid certificate with a proof made with its key
//!   stands in for a ticket that is missing or has expired, so peers keep serving each
//!   other until the tracker is back.
//! - A **proof** is accepted once ([`ReplayGuard`]) and only within
//!   [`PROOF_WINDOW_MS`] of this node's clock, so one seen on the wire cannot be sent again.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use common::identity::{NONCE_LEN, PROOF_WINDOW_MS};
use common::ticket::CLOCK_SKEW_MS;
use common::{
    AuthError, Certificate, CertificateClaims, FileId, Method, Proof, Ticket, TicketClaims,
    TicketError, TicketVerifier,
};
use proto::peer::v1 as pb;
use tonic::Status;

mod tickets;

pub use tickets::TrackerKey;
use tickets::VerifiedSignatures;

/// Whether this node's tracker answers, as its heartbeats find. Until the first failed
/// heartbeat it is taken to answer, so certificates alone are refused.
#[derive(Clone, Debug, Default)]
pub struct TrackerReach(Arc<AtomicBool>);

impl TrackerReach {
    /// Records the outcome of a heartbeat (or any call that tells).
    pub fn set_answering(&self, answering: bool) {
        self.0.store(!answering, Ordering::Relaxed);
    }

    /// Whether the last heartbeat failed.
    pub fn unreachable(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// What a request was admitted under.
pub struct Admitted {
    /// Unix ms (clock skew included) until which the grant holds: a Holdings stream ends then.
    pub until: i64,
    /// The account it was granted to, for the per-client limits.
    pub user: String,
}

/// The node's door: the tracker's key, what already verified, the proofs seen, and whether
/// the tracker answers. A searching `peer search` keeps one too, for the answers it takes.
#[derive(Default)]
pub struct Gate {
    key: TrackerKey,
    reach: TrackerReach,
    tickets: VerifiedSignatures<TicketClaims>,
    certificates: VerifiedSignatures<CertificateClaims>,
    replay: ReplayGuard,
}

fn unauthenticated(e: impl std::fmt::Display) -> Status {
    Status::unauthenticated(e.to_string())
}

impl Gate {
    pub fn new(key: TrackerKey, reach: TrackerReach) -> Self {
        Self {
            key,
            reach,
            ..Self::default()
        }
    }

    /// Admits one `method` request on `file`, or says why not.
    pub fn admit(
        &self,
        method: Method,
        file: &FileId,
        ticket: Option<&pb::Ticket>,
        proof: Option<&pb::Proof>,
        certificate: Option<&pb::Certificate>,
    ) -> Result<Admitted, Status> {
        let Some(key) = self.key.get() else {
            return Err(Status::unavailable(
                "not ready: this node does not know the tracker's ticket key yet",
            ));
        };
        let Some(proof) = proof else {
            return Err(Status::unauthenticated(
                "a proof of the requester's key is required with every request",
            ));
        };
        let proof = Proof::try_from(proof).map_err(unauthenticated)?;
        let now = crate::now_ms();
        let by_ticket = ticket.map(|t| self.ticket(&key, t, file, now));
        let (granted_key, of, admitted) = match (by_ticket, certificate) {
            (Some(Ok((k, a))), _) => (k, "ticket", a),
            (refused, Some(c)) if self.reach.unreachable() => {
                match self.certificate(&key, c, now) {
                    Ok((k, a)) => (k, "certificate", a),
                    // The ticket's reason says more than the certificate's.
                    Err(e) => {
                        return Err(match refused {
                            Some(Err(t)) => t,
                            _ => e,
                        });
                    }
                }
            }
            (Some(Err(e)), _) => return Err(e),
            (None, _) => {
                return Err(Status::unauthenticated(
                    "a ticket from the tracker is required (Locate the file first)",
                ));
            }
        };
        proof
            .verify(&granted_key, of, method, file, now)
            .map_err(unauthenticated)?;
        self.replay.check(&proof, now)?;
        tracing::trace!(file = %file, user = %admitted.user, of, "request admitted");
        Ok(admitted)
    }

    /// Admits a request between peers that needs no ticket (a flooded search, an answer to
    /// one, peer exchange): a valid certificate and a fresh proof of its key for `method` on
    /// `subject`, whether or not the tracker answers. Returns who sent it.
    ///
    /// # Errors
    /// UNAVAILABLE before the tracker's key is known; UNAUTHENTICATED for a missing, forged
    /// or expired certificate, or a missing, wrong or replayed proof.
    pub fn admit_peer(
        &self,
        method: Method,
        subject: &FileId,
        proof: Option<&pb::Proof>,
        certificate: Option<&pb::Certificate>,
    ) -> Result<CertificateClaims, Status> {
        let Some(key) = self.key.get() else {
            return Err(Status::unavailable(
                "not ready: this peer does not know the tracker's key yet",
            ));
        };
        let (Some(proof), Some(c)) = (proof, certificate) else {
            return Err(Status::unauthenticated(
                "a certificate from the tracker and a proof of its key are required",
            ));
        };
        let proof = Proof::try_from(proof).map_err(unauthenticated)?;
        let now = crate::now_ms();
        let cert = Certificate::try_from(c).map_err(unauthenticated)?;
        self.check_certificate(&key, &cert, now)?;
        proof
            .verify(&cert.claims.key, "certificate", method, subject, now)
            .map_err(unauthenticated)?;
        self.replay.check(&proof, now)?;
        Ok(cert.claims)
    }

    /// Checks a ticket for `file`: the key it names and what it grants.
    fn ticket(
        &self,
        key: &TicketVerifier,
        t: &pb::Ticket,
        file: &FileId,
        now: i64,
    ) -> Result<([u8; 32], Admitted), Status> {
        let ticket = Ticket::try_from(t).map_err(unauthenticated)?;
        let until = ticket.claims.expires_at_ms.saturating_add(CLOCK_SKEW_MS);
        let fresh = ticket.claims.file_id == *file
            && self
                .tickets
                .accepts(&ticket.signature, &ticket.claims, key, now);
        if !fresh {
            match key.verify(&ticket, file, now) {
                Ok(_) => self
                    .tickets
                    .insert(&ticket.signature, &ticket.claims, key, until, now),
                Err(e @ TicketError::WrongFile { .. }) => {
                    return Err(Status::permission_denied(e.to_string()));
                }
                Err(TicketError::BadSignature) => {
                    return Err(Status::unauthenticated(
                        "ticket signature is not valid (forged, altered or from another tracker)",
                    ));
                }
                Err(e @ TicketError::Expired { .. }) => {
                    return Err(Status::unauthenticated(format!(
                        "{e}; Locate the file again for a fresh one"
                    )));
                }
                Err(e) => return Err(unauthenticated(e)),
            }
        }
        let Ticket { claims, .. } = ticket;
        Ok((
            claims.key,
            Admitted {
                until,
                user: claims.user,
            },
        ))
    }

    /// Checks a certificate: the key it names and the account it vouches for.
    fn certificate(
        &self,
        key: &TicketVerifier,
        c: &pb::Certificate,
        now: i64,
    ) -> Result<([u8; 32], Admitted), Status> {
        let cert = Certificate::try_from(c).map_err(unauthenticated)?;
        let until = self.check_certificate(key, &cert, now)?;
        let Certificate { claims, .. } = cert;
        Ok((
            claims.key,
            Admitted {
                until,
                user: claims.user,
            },
        ))
    }
}

impl Gate {
    /// Checks that the tracker's key signed `cert` and that it is current (verdicts are
    /// cached by signature); returns until when it holds, clock skew included.
    fn check_certificate(
        &self,
        key: &TicketVerifier,
        cert: &Certificate,
        now: i64,
    ) -> Result<i64, Status> {
        let until = cert.claims.expires_at_ms.saturating_add(CLOCK_SKEW_MS);
        if !self
            .certificates
            .accepts(&cert.signature, &cert.claims, key, now)
        {
            key.verify_certificate(cert, now).map_err(unauthenticated)?;
            self.certificates
                .insert(&cert.signature, &cert.claims, key, until, now);
        }
        Ok(until)
    }
}

/// Most proofs remembered per generation: at one request per 1 MiB chunk, a node sending
/// 1 GB/s sees about 60,000 a minute. Past it, new requests are refused until the next
/// rotation rather than forgetting proofs that could then be replayed.
const MAX_PROOFS: usize = 1 << 18;

/// The proofs this node accepted lately, by key and nonce, in two generations that rotate
/// every `2 ×` [`PROOF_WINDOW_MS`]: a proof is remembered for at least that long, and one
/// older than [`PROOF_WINDOW_MS`] is refused by its time anyway.
#[derive(Default)]
struct ReplayGuard(Mutex<Generations>);

#[derive(Default)]
struct Generations {
    current: HashSet<[u8; 32 + NONCE_LEN]>,
    previous: HashSet<[u8; 32 + NONCE_LEN]>,
    rotated_at_ms: i64,
}

impl ReplayGuard {
    /// Records `proof` as used at `now`.
    ///
    /// # Errors
    /// UNAUTHENTICATED when it was used before ([`AuthError::Replayed`]);
    /// RESOURCE_EXHAUSTED when the memory of proofs is full.
    fn check(&self, proof: &Proof, now: i64) -> Result<(), Status> {
        let mut id = [0u8; 32 + NONCE_LEN];
        id[..32].copy_from_slice(&proof.key);
        id[32..].copy_from_slice(&proof.nonce);
        let mut g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if now.saturating_sub(g.rotated_at_ms) >= 2 * PROOF_WINDOW_MS {
            g.previous = std::mem::take(&mut g.current);
            g.rotated_at_ms = now;
        }
        if g.current.contains(&id) || g.previous.contains(&id) {
            return Err(unauthenticated(AuthError::Replayed));
        }
        if g.current.len() >= MAX_PROOFS {
            return Err(Status::resource_exhausted(
                "this node is answering too many requests; try again shortly",
            ));
        }
        g.current.insert(id);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::{NodeKey, Sha256Digest};

    #[test]
    fn should_take_a_proof_once_and_remember_it_for_the_whole_window() {
        let guard = ReplayGuard::default();
        let k = NodeKey::generate();
        let f = FileId(Sha256Digest::of(b"x"));
        let t0 = 1_800_000_000_000;
        let p = k.prove(Method::GetChunks, &f, t0);
        let replayed = |r: Result<(), Status>| {
            r.is_err_and(|s| {
                s.code() == tonic::Code::Unauthenticated && s.message().contains("replayed")
            })
        };
        assert!(guard.check(&p, t0).is_ok());
        assert!(replayed(guard.check(&p, t0 + 1)));
        // Still remembered when its time would still pass (t0 + window), across a rotation.
        let q = k.prove(Method::GetChunks, &f, t0 + 2 * PROOF_WINDOW_MS);
        assert!(guard.check(&q, t0 + 2 * PROOF_WINDOW_MS).is_ok());
        assert!(replayed(guard.check(&p, t0 + PROOF_WINDOW_MS)));
        assert!(replayed(guard.check(&q, t0 + 3 * PROOF_WINDOW_MS)));
    }

    fn tracker() -> common::TicketSigner {
        common::TicketSigner::from_secret(&[5; 32])
    }

    fn gate(reach: &TrackerReach) -> Gate {
        let key = TrackerKey::default();
        key.set(&tracker().public_key()).unwrap();
        Gate::new(key, reach.clone())
    }

    fn file() -> FileId {
        FileId(Sha256Digest::of(b"f"))
    }

    fn ticket_for(key: &NodeKey, expires_at_ms: i64) -> pb::Ticket {
        pb::Ticket::from(&tracker().sign(TicketClaims {
            file_id: file(),
            key: key.public_key(),
            peer_id: None,
            user: "alice".into(),
            expires_at_ms,
        }))
    }

    fn certificate_for(signer: &common::TicketSigner, key: &NodeKey) -> pb::Certificate {
        pb::Certificate::from(&signer.certify(CertificateClaims {
            peer_id: common::PeerId::from_random([2; 16]),
            user: "bob".into(),
            key: key.public_key(),
            expires_at_ms: crate::now_ms() + 86_400_000,
        }))
    }

    fn proof(key: &NodeKey, method: Method) -> pb::Proof {
        pb::Proof::from(&key.prove(method, &file(), crate::now_ms()))
    }

    fn refusal(r: Result<Admitted, Status>) -> (tonic::Code, String) {
        let e = r.err().expect("refused");
        (e.code(), e.message().to_string())
    }

    #[test]
    fn should_admit_a_ticket_only_with_a_fresh_proof_of_its_key() {
        let reach = TrackerReach::default();
        let g = gate(&reach);
        let alice = NodeKey::generate();
        let t = ticket_for(&alice, crate::now_ms() + 60_000);
        let p = proof(&alice, Method::GetChunks);
        let ok = g.admit(Method::GetChunks, &file(), Some(&t), Some(&p), None);
        assert_eq!(ok.unwrap().user, "alice");

        // The same proof again: replayed.
        let (code, msg) = refusal(g.admit(Method::GetChunks, &file(), Some(&t), Some(&p), None));
        assert_eq!(code, tonic::Code::Unauthenticated);
        assert!(msg.contains("replayed"), "{msg}");
        // No proof at all.
        let (code, msg) = refusal(g.admit(Method::GetChunks, &file(), Some(&t), None, None));
        assert_eq!(code, tonic::Code::Unauthenticated);
        assert!(msg.contains("proof"), "{msg}");
        // The ticket copied to mallory, who proves her own key.
        let mallory = NodeKey::generate();
        let p = proof(&mallory, Method::GetChunks);
        let (code, msg) = refusal(g.admit(Method::GetChunks, &file(), Some(&t), Some(&p), None));
        assert_eq!(code, tonic::Code::Unauthenticated);
        assert!(msg.contains("another key than the ticket"), "{msg}");
        // A proof made for Holdings does not pass for GetChunks.
        let p = proof(&alice, Method::Holdings);
        let (code, _) = refusal(g.admit(Method::GetChunks, &file(), Some(&t), Some(&p), None));
        assert_eq!(code, tonic::Code::Unauthenticated);
        assert!(
            g.admit(Method::Holdings, &file(), Some(&t), Some(&p), None)
                .is_ok()
        );
    }

    #[test]
    fn should_take_a_certificate_for_a_ticket_only_while_the_tracker_does_not_answer() {
        let reach = TrackerReach::default();
        let g = gate(&reach);
        let bob = NodeKey::generate();
        let cert = certificate_for(&tracker(), &bob);
        let expired = ticket_for(&bob, crate::now_ms() - 120_000);
        let admit = |t: Option<&pb::Ticket>, c: &pb::Certificate, k: &NodeKey| {
            let p = proof(k, Method::GetChunks);
            g.admit(Method::GetChunks, &file(), t, Some(&p), Some(c))
        };

        // The tracker answers: a certificate grants nothing; the ticket's reason is given.
        let (code, msg) = refusal(admit(None, &cert, &bob));
        assert_eq!(code, tonic::Code::Unauthenticated);
        assert!(msg.contains("ticket from the tracker is required"), "{msg}");
        let (_, msg) = refusal(admit(Some(&expired), &cert, &bob));
        assert!(msg.contains("expired"), "{msg}");

        reach.set_answering(false);
        assert_eq!(admit(None, &cert, &bob).unwrap().user, "bob");
        assert_eq!(admit(Some(&expired), &cert, &bob).unwrap().user, "bob");
        // Copied: the certificate is public, the key is not.
        let mallory = NodeKey::generate();
        let (_, msg) = refusal(admit(None, &cert, &mallory));
        assert!(msg.contains("another key than the certificate"), "{msg}");
        // Another tracker's certificate, or an altered one.
        let forged = certificate_for(&common::TicketSigner::from_secret(&[6; 32]), &mallory);
        let (_, msg) = refusal(admit(None, &forged, &mallory));
        assert!(msg.contains("certificate signature is not valid"), "{msg}");
        let mut renamed = cert.clone();
        renamed.user = "carol".into();
        assert!(admit(None, &renamed, &bob).is_err());

        reach.set_answering(true);
        assert!(
            admit(None, &cert, &bob).is_err(),
            "the tracker is back: tickets again"
        );
    }
}
