//! Who a peer is and how it proves it: each peer's own Ed25519 key ([`NodeKey`]), the
//! tracker's certificate that binds that key to a peer id and an account
//! ([`Certificate`]), and the signature a request carries to prove the key ([`Proof`]).
//!
//! A ticket (`crate::ticket`) names the requester's key, and every chunk request carries a
//! [`Proof`] made with that key: a node accepts the request only when the proof verifies
//! under the ticket's key. A ticket copied to someone else is then useless, and so is a
//! certificate, which is public: both need the secret key that never leaves the home.
//!
//! A certificate lasts much longer than a ticket (a day by default) and is what a node
//! accepts, with a proof, when no tracker answers: it says that the tracker, not long ago,
//! knew this key as `user`'s peer `peer_id`.
//!
//! Every signed encoding starts with its own tag, so a signature made for one purpose
//! never verifies as another (a proof as a ticket, a ticket as a certificate).

use std::fmt;

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use rand::RngExt;

use crate::ticket::{CLOCK_SKEW_MS, PUBLIC_KEY_LEN, SECRET_KEY_LEN, SIGNATURE_LEN};
use crate::{FileId, PeerId, TicketSigner, TicketVerifier};

/// The first bytes of every signed certificate.
pub const CERTIFICATE_TAG: &[u8] = b"tessera-peer-certificate-v1\0";
/// The first bytes of every request proof.
pub const PROOF_TAG: &[u8] = b"tessera-request-v1\0";
/// How far a proof's time may be from the checking node's clock, either way. A node
/// remembers every proof it accepted for twice this long, so none is accepted twice.
pub const PROOF_WINDOW_MS: i64 = CLOCK_SKEW_MS;
/// Length of a proof's random nonce.
pub const NONCE_LEN: usize = 16;

/// Why a certificate or a proof is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// A field does not parse (bad peer id, key, signature or nonce length).
    #[error("malformed {what}: {why}")]
    Malformed { what: &'static str, why: String },
    /// The certificate's signature does not verify under the tracker's key.
    #[error("certificate signature is not valid (forged, altered or from another tracker)")]
    BadCertificate,
    /// The certificate is past its expiry (plus the clock skew).
    #[error("certificate expired at {expired_at_ms} (unix ms)")]
    CertificateExpired { expired_at_ms: i64 },
    /// The proof's signature does not verify under the key it names.
    #[error("request proof signature is not valid")]
    BadProof,
    /// The proof was made with another key than the ticket or certificate names.
    #[error("request proof is signed with another key than the {of} names")]
    WrongKey { of: &'static str },
    /// The proof's time is too far from this node's clock.
    #[error("request proof is {skew_ms} ms off this node's clock (at most {PROOF_WINDOW_MS})")]
    Stale { skew_ms: i64 },
    /// This node has accepted this proof before.
    #[error("request proof was used before (replayed)")]
    Replayed,
}

/// A peer's own signing key. Generated once per home and kept there, readable by its owner
/// only; the tracker learns only the public half.
#[derive(Clone)]
pub struct NodeKey {
    key: SigningKey,
}

impl fmt::Debug for NodeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeKey({})", hex::encode(self.public_key()))
    }
}

impl NodeKey {
    /// A new random key.
    pub fn generate() -> Self {
        let mut secret = [0u8; SECRET_KEY_LEN];
        rand::rng().fill(&mut secret);
        Self::from_secret(&secret)
    }

    pub fn from_secret(secret: &[u8; SECRET_KEY_LEN]) -> Self {
        Self {
            key: SigningKey::from_bytes(secret),
        }
    }

    /// The 32 secret bytes, to store.
    pub fn secret(&self) -> [u8; SECRET_KEY_LEN] {
        self.key.to_bytes()
    }

    pub fn public_key(&self) -> [u8; PUBLIC_KEY_LEN] {
        self.key.verifying_key().to_bytes()
    }

    /// A fresh proof for one request (`method` on `file`) at `now_ms`.
    pub fn prove(&self, method: Method, file: &FileId, now_ms: i64) -> Proof {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill(&mut nonce);
        let mut p = Proof {
            key: self.public_key(),
            at_ms: now_ms,
            nonce,
            signature: [0; SIGNATURE_LEN],
        };
        p.signature = self.key.sign(&p.signing_bytes(method, file)).to_bytes();
        p
    }
}

/// The tracker can prove requests too (its audits fetch chunks like any getter), with the
/// key it signs tickets with.
impl From<&TicketSigner> for NodeKey {
    fn from(s: &TicketSigner) -> Self {
        Self {
            key: s.signing_key().clone(),
        }
    }
}

/// Which request a proof is for: a proof for one never passes for the other.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    GetChunks = 1,
    Holdings = 2,
    /// A flooded search: the subject is the SHA-256 of the query id.
    Query = 3,
    /// An answer to a flooded search, to its origin: the same subject.
    Answer = 4,
    /// Peer exchange: the subject is the SHA-256 of nothing.
    Contacts = 5,
    /// A chunk map asked of a holder: the subject is the file id.
    ChunkMap = 6,
}

/// A signature over one request: the requester's key, the time, a random nonce, which
/// request and which file. It proves the requester holds the secret key a ticket or
/// certificate names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proof {
    pub key: [u8; PUBLIC_KEY_LEN],
    /// Unix milliseconds when it was made.
    pub at_ms: i64,
    pub nonce: [u8; NONCE_LEN],
    pub signature: [u8; SIGNATURE_LEN],
}

impl Proof {
    /// The canonical bytes that are signed: [`PROOF_TAG`], the method as one byte, the 32
    /// raw bytes of the file id, the 32 bytes of the key, the time as a big-endian `i64`,
    /// then the nonce.
    pub fn signing_bytes(&self, method: Method, file: &FileId) -> Vec<u8> {
        let mut out = Vec::with_capacity(PROOF_TAG.len() + 1 + 32 + 32 + 8 + NONCE_LEN);
        out.extend_from_slice(PROOF_TAG);
        out.push(method as u8);
        out.extend_from_slice(&file.0.0);
        out.extend_from_slice(&self.key);
        out.extend_from_slice(&self.at_ms.to_be_bytes());
        out.extend_from_slice(&self.nonce);
        out
    }

    /// A proof from its wire fields; not yet verified.
    ///
    /// # Errors
    /// [`AuthError::Malformed`] for a key, nonce or signature of the wrong length.
    pub fn from_parts(
        key: &[u8],
        at_ms: i64,
        nonce: &[u8],
        signature: &[u8],
    ) -> Result<Self, AuthError> {
        let bad = |why: &str| AuthError::Malformed {
            what: "request proof",
            why: why.to_string(),
        };
        Ok(Self {
            key: key
                .try_into()
                .map_err(|_| bad("the key must be 32 bytes"))?,
            at_ms,
            nonce: nonce
                .try_into()
                .map_err(|_| bad("the nonce must be 16 bytes"))?,
            signature: signature
                .try_into()
                .map_err(|_| bad("the signature must be 64 bytes"))?,
        })
    }

    /// Checks that this proof was made for `method` on `file` with the secret half of
    /// `key`, within [`PROOF_WINDOW_MS`] of `now_ms`. Whether it was seen before is the
    /// checking node's business.
    ///
    /// # Errors
    /// [`AuthError::WrongKey`], [`AuthError::Stale`] or [`AuthError::BadProof`], checked
    /// in that order (the cheap checks first).
    pub fn verify(
        &self,
        key: &[u8; PUBLIC_KEY_LEN],
        of: &'static str,
        method: Method,
        file: &FileId,
        now_ms: i64,
    ) -> Result<(), AuthError> {
        if self.key != *key {
            return Err(AuthError::WrongKey { of });
        }
        let skew_ms = now_ms.saturating_sub(self.at_ms);
        if skew_ms.saturating_abs() > PROOF_WINDOW_MS {
            return Err(AuthError::Stale { skew_ms });
        }
        let vk = VerifyingKey::from_bytes(&self.key).map_err(|_| AuthError::BadProof)?;
        vk.verify_strict(
            &self.signing_bytes(method, file),
            &Signature::from_bytes(&self.signature),
        )
        .map_err(|_| AuthError::BadProof)
    }
}

/// What a certificate states: `key` is the key of `user`'s peer `peer_id`, until
/// `expires_at_ms`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertificateClaims {
    pub peer_id: PeerId,
    pub user: String,
    pub key: [u8; PUBLIC_KEY_LEN],
    /// Unix milliseconds after which it is refused (plus [`CLOCK_SKEW_MS`]).
    pub expires_at_ms: i64,
}

impl CertificateClaims {
    /// The canonical bytes that are signed: [`CERTIFICATE_TAG`], the peer id and the user
    /// each as a big-endian `u32` length and UTF-8 bytes, the 32 bytes of the key, then the
    /// expiry as a big-endian `i64`.
    pub fn signing_bytes(&self) -> Vec<u8> {
        let peer = self.peer_id.as_str();
        let mut out = Vec::with_capacity(
            CERTIFICATE_TAG.len() + 8 + peer.len() + self.user.len() + PUBLIC_KEY_LEN + 8,
        );
        out.extend_from_slice(CERTIFICATE_TAG);
        for field in [peer.as_bytes(), self.user.as_bytes()] {
            let len = u32::try_from(field.len()).unwrap_or(u32::MAX);
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(field);
        }
        out.extend_from_slice(&self.key);
        out.extend_from_slice(&self.expires_at_ms.to_be_bytes());
        out
    }
}

/// Claims with the tracker's signature over their [`CertificateClaims::signing_bytes`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Certificate {
    pub claims: CertificateClaims,
    pub signature: [u8; SIGNATURE_LEN],
}

impl Certificate {
    /// A certificate from its wire fields; not yet verified.
    ///
    /// # Errors
    /// [`AuthError::Malformed`] for a bad peer id, or a key or signature of the wrong length.
    pub fn from_parts(
        peer_id: &str,
        user: String,
        key: &[u8],
        expires_at_ms: i64,
        signature: &[u8],
    ) -> Result<Self, AuthError> {
        let bad = |why: String| AuthError::Malformed {
            what: "certificate",
            why,
        };
        Ok(Self {
            claims: CertificateClaims {
                peer_id: peer_id
                    .parse()
                    .map_err(|e: crate::ids::PeerIdParseError| bad(e.to_string()))?,
                user,
                key: key
                    .try_into()
                    .map_err(|_| bad("the key must be 32 bytes".into()))?,
                expires_at_ms,
            },
            signature: signature
                .try_into()
                .map_err(|_| bad("the signature must be 64 bytes".into()))?,
        })
    }
}

impl TicketSigner {
    /// Certifies `claims` (the tracker's side).
    pub fn certify(&self, claims: CertificateClaims) -> Certificate {
        let signature = self.signing_key().sign(&claims.signing_bytes()).to_bytes();
        Certificate { claims, signature }
    }
}

impl TicketVerifier {
    /// Checks that `cert` was signed by this tracker key and has not expired at `now_ms`
    /// (allowing [`CLOCK_SKEW_MS`]); returns its claims.
    ///
    /// # Errors
    /// [`AuthError::BadCertificate`] or [`AuthError::CertificateExpired`].
    pub fn verify_certificate<'c>(
        &self,
        cert: &'c Certificate,
        now_ms: i64,
    ) -> Result<&'c CertificateClaims, AuthError> {
        self.verifying_key()
            .verify_strict(
                &cert.claims.signing_bytes(),
                &Signature::from_bytes(&cert.signature),
            )
            .map_err(|_| AuthError::BadCertificate)?;
        let c = &cert.claims;
        if now_ms > c.expires_at_ms.saturating_add(CLOCK_SKEW_MS) {
            return Err(AuthError::CertificateExpired {
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

    fn tracker() -> TicketSigner {
        TicketSigner::from_secret(&[1; SECRET_KEY_LEN])
    }

    fn claims(key: &NodeKey) -> CertificateClaims {
        CertificateClaims {
            peer_id: PeerId::from_random([3; 16]),
            user: "alice".into(),
            key: key.public_key(),
            expires_at_ms: NOW + 86_400_000,
        }
    }

    #[test]
    fn should_accept_a_proof_only_with_its_key_method_file_and_time() {
        let k = NodeKey::generate();
        let f = file(b"a");
        let p = k.prove(Method::GetChunks, &f, NOW);
        let pk = k.public_key();
        assert_eq!(
            p.verify(&pk, "ticket", Method::GetChunks, &f, NOW + 1),
            Ok(())
        );
        let other = NodeKey::generate().public_key();
        assert_eq!(
            p.verify(&other, "ticket", Method::GetChunks, &f, NOW),
            Err(AuthError::WrongKey { of: "ticket" })
        );
        assert_eq!(
            p.verify(&pk, "ticket", Method::Holdings, &f, NOW),
            Err(AuthError::BadProof)
        );
        assert_eq!(
            p.verify(&pk, "ticket", Method::GetChunks, &file(b"b"), NOW),
            Err(AuthError::BadProof)
        );
        for late in [PROOF_WINDOW_MS + 1, -PROOF_WINDOW_MS - 1] {
            assert!(matches!(
                p.verify(&pk, "ticket", Method::GetChunks, &f, NOW + late),
                Err(AuthError::Stale { .. })
            ));
        }
        let mut altered = p.clone();
        altered.at_ms += 1;
        assert_eq!(
            altered.verify(&pk, "ticket", Method::GetChunks, &f, NOW),
            Err(AuthError::BadProof)
        );
    }

    #[test]
    fn should_make_a_new_nonce_for_every_proof() {
        let k = NodeKey::generate();
        let f = file(b"a");
        let a = k.prove(Method::GetChunks, &f, NOW);
        let b = k.prove(Method::GetChunks, &f, NOW);
        assert_ne!(a.nonce, b.nonce);
        assert_ne!(a.signature, b.signature);
    }

    #[test]
    fn should_accept_a_certificate_until_it_expires_and_refuse_it_altered() {
        let t = tracker();
        let k = NodeKey::generate();
        let c = t.certify(claims(&k));
        let v = t.verifier();
        assert_eq!(v.verify_certificate(&c, NOW), Ok(&claims(&k)));
        let exp = c.claims.expires_at_ms;
        assert!(v.verify_certificate(&c, exp + CLOCK_SKEW_MS).is_ok());
        assert_eq!(
            v.verify_certificate(&c, exp + CLOCK_SKEW_MS + 1),
            Err(AuthError::CertificateExpired { expired_at_ms: exp })
        );
        let mut other_user = c.clone();
        other_user.claims.user = "mallory".into();
        let mut other_key = c.clone();
        other_key.claims.key = NodeKey::generate().public_key();
        for bad in [other_user, other_key] {
            assert_eq!(
                v.verify_certificate(&bad, NOW),
                Err(AuthError::BadCertificate)
            );
        }
        let forged = TicketSigner::from_secret(&[2; 32]).certify(claims(&k));
        assert_eq!(
            v.verify_certificate(&forged, NOW),
            Err(AuthError::BadCertificate)
        );
    }

    #[test]
    fn signatures_for_one_purpose_never_pass_for_another() {
        // The tracker's own proof (audits) is made with its ticket key: a proof's bytes
        // must never verify as a certificate, and the tags keep them apart.
        let t = tracker();
        let as_node = NodeKey::from(&t);
        let p = as_node.prove(Method::GetChunks, &file(b"a"), NOW);
        assert_eq!(as_node.public_key(), t.public_key());
        let fake = Certificate {
            claims: claims(&as_node),
            signature: p.signature,
        };
        assert_eq!(
            t.verifier().verify_certificate(&fake, NOW),
            Err(AuthError::BadCertificate)
        );
        for tag in [PROOF_TAG, crate::ticket::TICKET_TAG] {
            assert!(!CERTIFICATE_TAG.starts_with(tag) && !tag.starts_with(CERTIFICATE_TAG));
        }
    }

    #[test]
    fn should_parse_wire_fields_and_refuse_bad_lengths() {
        let k = NodeKey::generate();
        let c = tracker().certify(claims(&k));
        let back = Certificate::from_parts(
            c.claims.peer_id.as_str(),
            c.claims.user.clone(),
            &c.claims.key,
            c.claims.expires_at_ms,
            &c.signature,
        )
        .unwrap();
        assert_eq!(back, c);
        assert!(Certificate::from_parts("xyz", String::new(), &[0; 32], 0, &[0; 64]).is_err());
        let peer = c.claims.peer_id.as_str();
        assert!(Certificate::from_parts(peer, String::new(), &[0; 31], 0, &[0; 64]).is_err());
        assert!(Certificate::from_parts(peer, String::new(), &[0; 32], 0, &[0; 63]).is_err());
        let p = k.prove(Method::Holdings, &file(b"a"), NOW);
        assert_eq!(
            Proof::from_parts(&p.key, p.at_ms, &p.nonce, &p.signature),
            Ok(p.clone())
        );
        assert!(Proof::from_parts(&p.key, 0, &p.nonce[1..], &p.signature).is_err());
        assert!(Proof::from_parts(&p.key[1..], 0, &p.nonce, &p.signature).is_err());
        assert!(Proof::from_parts(&p.key, 0, &p.nonce, &p.signature[1..]).is_err());
    }
}
