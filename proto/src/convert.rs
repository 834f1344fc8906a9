//! Tickets, certificates, request proofs and manifests to and from the wire. Encoding cannot fail; decoding goes through
//! the `common` constructors ([`Ticket::from_parts`], [`Manifest::from_parts`]), so it
//! refuses exactly what they refuse, plus a whole-file digest that is not 32 bytes.
//! A decoded ticket is not yet verified, and a decoded manifest is not yet checked against
//! a file id: that is the caller's business.

use bytes::Bytes;
use common::{
    AuthError, Certificate, Manifest, ManifestError, Proof, Sha256Digest, Ticket, TicketError,
};

use crate::peer::v1 as peer_pb;
use crate::tracker::v1 as tracker_pb;

impl From<&Ticket> for peer_pb::Ticket {
    fn from(t: &Ticket) -> Self {
        let c = &t.claims;
        Self {
            file_id: c.file_id.to_string(),
            peer_id: c
                .peer_id
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
            user: c.user.clone(),
            expires_at_ms: c.expires_at_ms,
            signature: Bytes::copy_from_slice(&t.signature),
            key: Bytes::copy_from_slice(&c.key),
        }
    }
}

/// A ticket from its wire form (an empty `peer_id` means none); not yet verified.
impl TryFrom<&peer_pb::Ticket> for Ticket {
    type Error = TicketError;

    fn try_from(t: &peer_pb::Ticket) -> Result<Self, TicketError> {
        Ticket::from_parts(
            &t.file_id,
            &t.key,
            &t.peer_id,
            t.user.clone(),
            t.expires_at_ms,
            &t.signature,
        )
    }
}

impl From<&Proof> for peer_pb::Proof {
    fn from(p: &Proof) -> Self {
        Self {
            key: Bytes::copy_from_slice(&p.key),
            at_ms: p.at_ms,
            nonce: Bytes::copy_from_slice(&p.nonce),
            signature: Bytes::copy_from_slice(&p.signature),
        }
    }
}

/// A proof from its wire form; not yet verified.
impl TryFrom<&peer_pb::Proof> for Proof {
    type Error = AuthError;

    fn try_from(p: &peer_pb::Proof) -> Result<Self, AuthError> {
        Proof::from_parts(&p.key, p.at_ms, &p.nonce, &p.signature)
    }
}

impl From<&Certificate> for peer_pb::Certificate {
    fn from(c: &Certificate) -> Self {
        Self {
            peer_id: c.claims.peer_id.to_string(),
            user: c.claims.user.clone(),
            key: Bytes::copy_from_slice(&c.claims.key),
            expires_at_ms: c.claims.expires_at_ms,
            signature: Bytes::copy_from_slice(&c.signature),
        }
    }
}

/// A certificate from its wire form; not yet verified.
impl TryFrom<&peer_pb::Certificate> for Certificate {
    type Error = AuthError;

    fn try_from(c: &peer_pb::Certificate) -> Result<Self, AuthError> {
        Certificate::from_parts(
            &c.peer_id,
            c.user.clone(),
            &c.key,
            c.expires_at_ms,
            &c.signature,
        )
    }
}

impl tracker_pb::Manifest {
    /// The wire form of `m` with its chunk hashes already packed: `chunk_hashes` must be
    /// `m.packed_hashes()`, kept from earlier so a hot path does not pack them again.
    pub fn with_packed_hashes(m: &Manifest, chunk_hashes: Bytes) -> Self {
        Self {
            name: m.name.clone(),
            size: m.size,
            sha256: Bytes::copy_from_slice(&m.sha256.0),
            chunk_size: m.chunk_size,
            chunk_hashes,
        }
    }
}

impl From<&Manifest> for tracker_pb::Manifest {
    fn from(m: &Manifest) -> Self {
        Self::with_packed_hashes(m, m.packed_hashes().into())
    }
}

/// A manifest from its wire form, refusing one that does not add up; not yet checked
/// against a file id ([`Manifest::verified`]).
impl TryFrom<tracker_pb::Manifest> for Manifest {
    type Error = ManifestError;

    fn try_from(m: tracker_pb::Manifest) -> Result<Self, ManifestError> {
        let sha256 =
            Sha256Digest::from_slice(&m.sha256).ok_or(ManifestError::BadSha256(m.sha256.len()))?;
        Manifest::from_parts(m.name, m.size, sha256, m.chunk_size, &m.chunk_hashes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::manifest::MIN_CHUNK_SIZE;
    use common::ticket::TicketClaims;
    use common::{FileId, PeerId, TicketSigner};

    fn ticket(peer_id: Option<PeerId>) -> Ticket {
        TicketSigner::from_secret(&[1; 32]).sign(TicketClaims {
            file_id: FileId(Sha256Digest::of(b"file")),
            key: [9; 32],
            peer_id,
            user: "alice".into(),
            expires_at_ms: 1_800_000_000_000,
        })
    }

    /// A manifest of `chunks` full chunks.
    fn manifest(chunks: u8) -> Manifest {
        let hashes: Vec<u8> = (0..chunks).flat_map(|i| [i; 32]).collect();
        let size = u64::from(chunks) * u64::from(MIN_CHUNK_SIZE);
        let sha = Sha256Digest::of(b"whole");
        Manifest::from_parts("a.bin".into(), size, sha, MIN_CHUNK_SIZE, &hashes).unwrap()
    }

    #[test]
    fn should_round_trip_tickets_with_and_without_a_peer() {
        for t in [ticket(None), ticket(Some(PeerId::from_random([3; 16])))] {
            let wire = peer_pb::Ticket::from(&t);
            assert_eq!(wire.file_id, t.claims.file_id.to_string());
            assert_eq!(wire.peer_id.is_empty(), t.claims.peer_id.is_none());
            assert_eq!(Ticket::try_from(&wire).unwrap(), t);
        }
    }

    #[test]
    fn should_refuse_malformed_wire_tickets() {
        let good = peer_pb::Ticket::from(&ticket(None));
        let cases = [
            (
                "file id",
                peer_pb::Ticket {
                    file_id: "xyz".into(),
                    ..good.clone()
                },
            ),
            (
                "peer id",
                peer_pb::Ticket {
                    peer_id: "nope".into(),
                    ..good.clone()
                },
            ),
            (
                "signature",
                peer_pb::Ticket {
                    signature: good.signature.slice(..63),
                    ..good.clone()
                },
            ),
            (
                "key",
                peer_pb::Ticket {
                    key: Bytes::new(),
                    ..good.clone()
                },
            ),
        ];
        for (what, t) in cases {
            let err = Ticket::try_from(&t).unwrap_err();
            assert!(matches!(err, TicketError::Malformed(_)), "{what}: {err}");
        }
    }

    #[test]
    fn should_round_trip_manifests() {
        for chunks in [0, 1, 3] {
            let m = manifest(chunks);
            let wire = tracker_pb::Manifest::from(&m);
            assert_eq!(wire.chunk_hashes.len(), 32 * usize::from(chunks));
            let packed = tracker_pb::Manifest::with_packed_hashes(&m, m.packed_hashes().into());
            assert_eq!(packed, wire);
            let back = Manifest::try_from(wire).unwrap();
            assert_eq!(back.clone().verified(&m.id()).unwrap(), m);
        }
    }

    #[test]
    fn should_refuse_manifests_that_do_not_add_up() {
        let good = tracker_pb::Manifest::from(&manifest(2));
        let refused = |m: tracker_pb::Manifest| Manifest::try_from(m).unwrap_err();
        assert_eq!(
            refused(tracker_pb::Manifest {
                sha256: good.sha256.slice(..31),
                ..good.clone()
            }),
            ManifestError::BadSha256(31)
        );
        assert_eq!(
            refused(tracker_pb::Manifest {
                chunk_hashes: good.chunk_hashes.slice(..32),
                ..good.clone()
            }),
            ManifestError::WrongChunkCount {
                size: good.size,
                expected: 2,
                got: 1
            }
        );
        assert_eq!(
            refused(tracker_pb::Manifest {
                chunk_hashes: good.chunk_hashes.slice(..63),
                ..good.clone()
            }),
            ManifestError::RaggedHashes(63)
        );
        assert_eq!(
            refused(tracker_pb::Manifest {
                chunk_size: 1000,
                ..good.clone()
            }),
            ManifestError::BadChunkSize(1000)
        );
        assert_eq!(
            refused(tracker_pb::Manifest {
                name: "a\0b".into(),
                ..good.clone()
            }),
            ManifestError::BadName(common::names::NameError::Nul(1))
        );
        assert!(matches!(
            refused(tracker_pb::Manifest {
                size: u64::MAX,
                ..good
            }),
            ManifestError::WrongChunkCount { .. }
        ));
    }

    #[test]
    fn should_round_trip_proofs_and_certificates() {
        let key = common::NodeKey::generate();
        let file = FileId(Sha256Digest::of(b"file"));
        let p = key.prove(common::Method::GetChunks, &file, 5);
        assert_eq!(Proof::try_from(&peer_pb::Proof::from(&p)), Ok(p));
        let c = TicketSigner::from_secret(&[1; 32]).certify(common::CertificateClaims {
            peer_id: PeerId::from_random([4; 16]),
            user: "bob".into(),
            key: key.public_key(),
            expires_at_ms: 7,
        });
        let wire = peer_pb::Certificate::from(&c);
        assert_eq!(Certificate::try_from(&wire), Ok(c));
        let short = peer_pb::Certificate {
            key: wire.key.slice(..31),
            ..wire
        };
        assert!(Certificate::try_from(&short).is_err());
    }
}
