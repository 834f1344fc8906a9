//! Tickets: the tracker's short-lived, Ed25519-signed permission to fetch chunks of one file.
//!
//! A getter obtains a ticket from the tracker (with `Locate`, or with a replication task)
//! and presents it with every `GetChunks`; the serving node checks it against the tracker's
//! public key alone, without asking the tracker. A ticket names the requester's own key
//! ([`TicketClaims::key`]), and a request must prove that key (`crate::identity::Proof`),
//! so a ticket copied to anyone else is useless.
//! The signature covers [`TicketClaims::signing_bytes`], a canonical encoding that starts
//! with a version tag, so a signature over anything else never verifies as a ticket.
//! The tracker holds a [`TicketSigner`]; nodes hold a [`TicketVerifier`].

use std::fmt;

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};

use crate::{FileId, PeerId};

/// The first bytes of every signed ticket: the format and its version.
pub const TICKET_TAG: &[u8] = b"tessera-ticket-v2\0";
/// How far a node's clock may be behind the tracker's: a ticket is accepted until this
/// long after its expiry.
pub const CLOCK_SKEW_MS: i64 = 30_000;
/// Length of a public key on the wire.
pub const PUBLIC_KEY_LEN: usize = 32;
/// Length of a secret key as stored.
pub const SECRET_KEY_LEN: usize = 32;
/// Length of a signature on the wire.
pub const SIGNATURE_LEN: usize = 64;

/// What a ticket grants: chunks of `file_id` to `user` (and, for a replication task, to the
/// node `peer_id`) until `expires_at_ms`, for requests signed with `key`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TicketClaims {
    pub file_id: FileId,
    /// The requester's Ed25519 public key: a request under this ticket must carry a proof
    /// signed with it.
    pub key: [u8; PUBLIC_KEY_LEN],
    /// The node the ticket was issued to (replication tasks); `None` when it was issued to
    /// the user's session (Locate), which any of the user's peers may present.
    pub peer_id: Option<PeerId>,
    /// The account the ticket was issued to.
    pub user: String,
    /// Unix milliseconds after which the ticket is refused (plus [`CLOCK_SKEW_MS`]).
    pub expires_at_ms: i64,
}

impl TicketClaims {
    /// The canonical bytes that are signed: [`TICKET_TAG`], the 32 raw bytes of the file
    /// id, the 32 bytes of the requester's key, the peer id and the user each as a big-endian `u32` length and UTF-8 bytes (an
    /// absent peer id is empty), then the expiry as a big-endian `i64`.
    pub fn signing_bytes(&self) -> Vec<u8> {
        let peer = self.peer_id.as_ref().map_or("", PeerId::as_str);
        let mut out =
            Vec::with_capacity(TICKET_TAG.len() + 64 + 8 + peer.len() + self.user.len() + 8);
        out.extend_from_slice(TICKET_TAG);
        out.extend_from_slice(&self.file_id.0.0);
        out.extend_from_slice(&self.key);
        for field in [peer.as_bytes(), self.user.as_bytes()] {
            let len = u32::try_from(field.len()).unwrap_or(u32::MAX);
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(field);
        }
        out.extend_from_slice(&self.expires_at_ms.to_be_bytes());
        out
    }
}

/// Claims with the tracker's signature over their [`TicketClaims::signing_bytes`].
#[derive(Clone, PartialEq, Eq)]
pub struct Ticket {
    pub claims: TicketClaims,
    pub signature: [u8; SIGNATURE_LEN],
}

impl fmt::Debug for Ticket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ticket")
            .field("claims", &self.claims)
            .finish_non_exhaustive()
    }
}

/// Why a ticket is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TicketError {
    /// The key bytes are not an Ed25519 key.
    #[error("invalid ticket key: {0}")]
    BadKey(String),
    /// The ticket's fields do not parse (a bad file id, key, peer id or signature length).
    #[error("malformed ticket: {0}")]
    Malformed(String),
    /// The signature does not verify under the tracker's key: forged, altered, or from
    /// another tracker.
    #[error("ticket signature is not valid")]
    BadSignature,
    /// Valid, but for another file.
    #[error("ticket is for file {ticket}, not {requested}")]
    WrongFile { ticket: FileId, requested: FileId },
    /// Valid, but too old.
    #[error("ticket expired at {expired_at_ms} (unix ms)")]
    Expired { expired_at_ms: i64 },
}

impl Ticket {
    /// A ticket from its wire fields (an empty `peer_id` means none).
    ///
    /// # Errors
    /// [`TicketError::Malformed`] for a bad file id, key, peer id or signature length.
    pub fn from_parts(
        file_id: &str,
        key: &[u8],
        peer_id: &str,
        user: String,
        expires_at_ms: i64,
        signature: &[u8],
    ) -> Result<Ticket, TicketError> {
        let file_id = file_id
            .parse()
            .map_err(|e: crate::ids::FileIdParseError| TicketError::Malformed(e.to_string()))?;
        let key = <[u8; PUBLIC_KEY_LEN]>::try_from(key).map_err(|_| {
            TicketError::Malformed(format!(
                "the requester's key must be {PUBLIC_KEY_LEN} bytes"
            ))
        })?;
        let peer_id = match peer_id {
            "" => None,
            p => Some(p.parse().map_err(|e: crate::ids::PeerIdParseError| {
                TicketError::Malformed(e.to_string())
            })?),
        };
        let signature = <[u8; SIGNATURE_LEN]>::try_from(signature).map_err(|_| {
            TicketError::Malformed(format!("signature must be {SIGNATURE_LEN} bytes"))
        })?;
        Ok(Ticket {
            claims: TicketClaims {
                file_id,
                key,
                peer_id,
                user,
                expires_at_ms,
            },
            signature,
        })
    }
}

/// The tracker's signing key.
#[derive(Clone)]
pub struct TicketSigner {
    key: SigningKey,
}

impl fmt::Debug for TicketSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TicketSigner")
            .field("public_key", &hex::encode(self.public_key()))
            .finish_non_exhaustive()
    }
}

impl TicketSigner {
    /// The signer for a 32-byte Ed25519 secret (generate it from a CSPRNG).
    pub fn from_secret(secret: &[u8; SECRET_KEY_LEN]) -> Self {
        Self {
            key: SigningKey::from_bytes(secret),
        }
    }

    pub(crate) fn signing_key(&self) -> &SigningKey {
        &self.key
    }

    /// The public key that nodes verify tickets with.
    pub fn public_key(&self) -> [u8; PUBLIC_KEY_LEN] {
        self.key.verifying_key().to_bytes()
    }

    /// The verifier for this signer's tickets.
    pub fn verifier(&self) -> TicketVerifier {
        TicketVerifier {
            key: self.key.verifying_key(),
        }
    }

    /// Signs `claims`.
    pub fn sign(&self, claims: TicketClaims) -> Ticket {
        let signature = self.key.sign(&claims.signing_bytes()).to_bytes();
        Ticket { claims, signature }
    }
}

/// A tracker's public key, as nodes hold it.
#[derive(Clone, PartialEq, Eq)]
pub struct TicketVerifier {
    key: VerifyingKey,
}

impl fmt::Debug for TicketVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TicketVerifier({})", hex::encode(self.public_key()))
    }
}

impl TicketVerifier {
    /// The verifier for a 32-byte public key.
    ///
    /// # Errors
    /// [`TicketError::BadKey`] when the bytes are not an Ed25519 public key.
    pub fn from_public(bytes: &[u8]) -> Result<Self, TicketError> {
        let bytes = <[u8; PUBLIC_KEY_LEN]>::try_from(bytes)
            .map_err(|_| TicketError::BadKey(format!("expected {PUBLIC_KEY_LEN} bytes")))?;
        let key =
            VerifyingKey::from_bytes(&bytes).map_err(|e| TicketError::BadKey(e.to_string()))?;
        Ok(Self { key })
    }

    pub fn public_key(&self) -> [u8; PUBLIC_KEY_LEN] {
        self.key.to_bytes()
    }

    pub(crate) fn verifying_key(&self) -> &VerifyingKey {
        &self.key
    }

    /// Checks that `ticket` was signed by this key, is for `file`, and has not expired at
    /// `now_ms` (allowing [`CLOCK_SKEW_MS`]); returns its claims.
    ///
    /// # Errors
    /// [`TicketError::BadSignature`], [`TicketError::WrongFile`] or
    /// [`TicketError::Expired`], checked in that order.
    pub fn verify<'t>(
        &self,
        ticket: &'t Ticket,
        file: &FileId,
        now_ms: i64,
    ) -> Result<&'t TicketClaims, TicketError> {
        let signature = Signature::from_bytes(&ticket.signature);
        self.key
            .verify_strict(&ticket.claims.signing_bytes(), &signature)
            .map_err(|_| TicketError::BadSignature)?;
        let c = &ticket.claims;
        if c.file_id != *file {
            return Err(TicketError::WrongFile {
                ticket: c.file_id,
                requested: *file,
            });
        }
        if now_ms > c.expires_at_ms.saturating_add(CLOCK_SKEW_MS) {
            return Err(TicketError::Expired {
                expired_at_ms: c.expires_at_ms,
            });
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Sha256Digest;

    const NOW: i64 = 1_800_000_000_000;

    fn file(b: &[u8]) -> FileId {
        FileId(Sha256Digest::of(b))
    }

    fn signer(seed: u8) -> TicketSigner {
        TicketSigner::from_secret(&[seed; SECRET_KEY_LEN])
    }

    fn claims() -> TicketClaims {
        TicketClaims {
            file_id: file(b"a"),
            key: [7; 32],
            peer_id: Some(PeerId::from_random([3; 16])),
            user: "alice".into(),
            expires_at_ms: NOW + 600_000,
        }
    }

    #[test]
    fn should_accept_a_valid_ticket() {
        let s = signer(1);
        let t = s.sign(claims());
        let got = s.verifier().verify(&t, &file(b"a"), NOW).unwrap();
        assert_eq!(*got, claims());
        let via_wire = TicketVerifier::from_public(&s.public_key()).unwrap();
        assert!(via_wire.verify(&t, &file(b"a"), NOW).is_ok());
    }

    #[test]
    fn should_refuse_an_expired_ticket_after_the_clock_skew() {
        let s = signer(1);
        let t = s.sign(claims());
        let exp = t.claims.expires_at_ms;
        let v = s.verifier();
        assert!(v.verify(&t, &file(b"a"), exp + CLOCK_SKEW_MS).is_ok());
        assert_eq!(
            v.verify(&t, &file(b"a"), exp + CLOCK_SKEW_MS + 1),
            Err(TicketError::Expired { expired_at_ms: exp })
        );
    }

    #[test]
    fn should_refuse_a_ticket_for_another_file() {
        let s = signer(1);
        let t = s.sign(claims());
        let err = s.verifier().verify(&t, &file(b"b"), NOW).unwrap_err();
        assert!(matches!(err, TicketError::WrongFile { .. }), "{err}");
    }

    #[test]
    fn should_refuse_a_tampered_ticket() {
        let s = signer(1);
        let v = s.verifier();
        let good = s.sign(claims());

        let mut later = good.clone();
        later.claims.expires_at_ms += 1;
        let mut other_file = good.clone();
        other_file.claims.file_id = file(b"b");
        let mut other_user = good.clone();
        other_user.claims.user = "mallory".into();
        let mut no_peer = good.clone();
        no_peer.claims.peer_id = None;
        let mut other_key = good.clone();
        other_key.claims.key = [8; 32];
        let mut flipped = good.clone();
        flipped.signature[10] ^= 1;
        for (what, t) in [
            ("expiry", later),
            ("user", other_user),
            ("peer", no_peer),
            ("key", other_key),
            ("signature", flipped),
        ] {
            assert_eq!(
                v.verify(&t, &t.claims.file_id.clone(), NOW),
                Err(TicketError::BadSignature),
                "{what}"
            );
        }
        assert_eq!(
            v.verify(&other_file, &file(b"b"), NOW),
            Err(TicketError::BadSignature)
        );
    }

    #[test]
    fn should_refuse_a_ticket_signed_by_another_key() {
        let forged = signer(2).sign(claims());
        assert_eq!(
            signer(1).verifier().verify(&forged, &file(b"a"), NOW),
            Err(TicketError::BadSignature)
        );
    }

    #[test]
    fn signing_bytes_are_unambiguous_and_tagged() {
        let a = TicketClaims {
            user: "ab".into(),
            peer_id: None,
            ..claims()
        };
        let b = TicketClaims {
            user: "a".into(),
            peer_id: None,
            ..claims()
        };
        assert_ne!(a.signing_bytes(), b.signing_bytes());
        assert!(a.signing_bytes().starts_with(TICKET_TAG));
        assert_eq!(
            a.signing_bytes().len(),
            TICKET_TAG.len() + 32 + 32 + 4 + 4 + 2 + 8
        );
    }

    #[test]
    fn should_parse_wire_fields_and_refuse_bad_ones() {
        let s = signer(1);
        let t = s.sign(claims());
        let peer = t.claims.peer_id.as_ref().unwrap().to_string();
        let back = Ticket::from_parts(
            &t.claims.file_id.to_string(),
            &t.claims.key,
            &peer,
            t.claims.user.clone(),
            t.claims.expires_at_ms,
            &t.signature,
        )
        .unwrap();
        assert_eq!(back, t);
        let id = t.claims.file_id.to_string();
        let k = [7; 32];
        assert!(Ticket::from_parts("xyz", &k, "", String::new(), 0, &t.signature).is_err());
        assert!(Ticket::from_parts(&id, &k[1..], "", String::new(), 0, &t.signature).is_err());
        assert!(Ticket::from_parts(&id, &k, "nope", String::new(), 0, &t.signature).is_err());
        assert!(Ticket::from_parts(&id, &k, "", String::new(), 0, &[0; 63]).is_err());
        assert!(TicketVerifier::from_public(&[0; 31]).is_err());
    }
}
