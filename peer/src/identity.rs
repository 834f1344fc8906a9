//! This peer's own key and the tracker's certificate of it, kept in the home.
//!
//! `HOME/node_key.json` holds the Ed25519 secret (mode 0600), made on first use and never
//! replaced: the CLI and the node of one home sign with the same key, so a ticket the CLI
//! got from Locate and a certificate the node renewed both name it. Several processes may
//! create it at once; the first to link its file wins and the others read that one.
//!
//! `HOME/certificate.json` holds the tracker's certificate of that key (public, mode 0600
//! like the rest of the home). `peer login` asks for one and the node renews it once half
//! its life has passed, so a certificate is at hand when no tracker answers.

use std::fs;
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use common::{
    Certificate, CertificateClaims, FileId, Method, NodeKey, PeerId, Proof, TicketVerifier,
};
use serde::{Deserialize, Serialize};

use crate::home::{Home, HomeError, write_json, write_temp_beside};

#[derive(Serialize, Deserialize)]
struct KeyFile {
    /// The 32 secret bytes as 64 hex digits.
    secret_key: String,
}

#[derive(Serialize, Deserialize)]
struct CertificateFile {
    peer_id: PeerId,
    user: String,
    /// Hex.
    key: String,
    expires_at_ms: i64,
    /// Hex.
    signature: String,
    /// When this peer received it (its life is judged from then).
    received_at_ms: i64,
}

/// A certificate and when it was received.
#[derive(Clone)]
struct Held {
    certificate: Certificate,
    received_at_ms: i64,
}

/// The key and certificate of one home, shared by everything in one process that makes
/// requests (the getter's transport, the node's replica fetches).
pub struct Identity {
    home: Home,
    key: NodeKey,
    certificate: RwLock<Option<Held>>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// The home's key (made now if it has none) and its certificate, if any.
    ///
    /// # Errors
    /// When the key file cannot be read or written, or is corrupt.
    pub fn load(home: &Home) -> Result<Arc<Self>, HomeError> {
        let key = load_or_create_key(home)?;
        let certificate = read_certificate(home)
            .unwrap_or_else(|e| {
                tracing::warn!("ignoring the stored certificate: {e}");
                None
            })
            .filter(|h| h.certificate.claims.key == key.public_key());
        Ok(Arc::new(Self {
            home: home.clone(),
            key,
            certificate: RwLock::new(certificate),
        }))
    }

    pub fn public_key(&self) -> [u8; 32] {
        self.key.public_key()
    }

    /// A proof for one request, made now.
    pub fn prove(&self, method: Method, file: &FileId) -> Proof {
        self.key.prove(method, file, crate::now_ms())
    }

    pub fn certificate(&self) -> Option<Certificate> {
        self.held().map(|h| h.certificate)
    }

    fn held(&self) -> Option<Held> {
        self.certificate
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Whether to ask the tracker for a certificate now: there is none, half of its life
    /// (from when it was received to its expiry) has passed, or it does not verify under
    /// `tracker_key` (a new tracker).
    pub fn wants_certificate(&self, tracker_key: Option<&TicketVerifier>, now_ms: i64) -> bool {
        let Some(h) = self.held() else {
            return true;
        };
        let c = &h.certificate;
        if tracker_key.is_some_and(|k| k.verify_certificate(c, now_ms).is_err()) {
            return true;
        }
        let life = c.claims.expires_at_ms.saturating_sub(h.received_at_ms);
        now_ms >= c.claims.expires_at_ms.saturating_sub(life / 2)
    }

    /// Keeps `cert`, the tracker's answer to `Certify` for `peer_id`, after checking that
    /// it certifies this key for that peer and verifies under `tracker_key`.
    ///
    /// # Errors
    /// Why the answer is not a certificate of this key (nothing is kept then).
    pub fn keep(
        &self,
        cert: Certificate,
        tracker_key: &[u8],
        peer_id: &PeerId,
    ) -> Result<(), &'static str> {
        let ok = cert.claims.key == self.public_key()
            && cert.claims.peer_id == *peer_id
            && TicketVerifier::from_public(tracker_key)
                .is_ok_and(|k| k.verify_certificate(&cert, crate::now_ms()).is_ok());
        if !ok {
            return Err("the tracker answered with a certificate that is not of this peer's key");
        }
        let held = Held {
            certificate: cert.clone(),
            received_at_ms: crate::now_ms(),
        };
        if let Err(e) = save_certificate(&self.home, &held) {
            tracing::warn!("cannot save the certificate: {e}");
        }
        *self.certificate.write().unwrap_or_else(|p| p.into_inner()) = Some(held);
        Ok(())
    }
}

fn key_path(home: &Home) -> PathBuf {
    home.dir().join("node_key.json")
}

fn certificate_path(home: &Home) -> PathBuf {
    home.dir().join("certificate.json")
}

fn corrupt(path: PathBuf, why: &str) -> HomeError {
    HomeError::Io {
        action: "read",
        path,
        source: io::Error::new(io::ErrorKind::InvalidData, why.to_string()),
    }
}

fn read_key(path: &std::path::Path) -> Result<Option<NodeKey>, HomeError> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(HomeError::Io {
                action: "read",
                path: path.to_path_buf(),
                source,
            });
        }
    };
    let f: KeyFile = serde_json::from_slice(&bytes).map_err(|source| HomeError::Corrupt {
        path: path.to_path_buf(),
        source,
    })?;
    let secret = hex::decode(&f.secret_key)
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .ok_or_else(|| corrupt(path.to_path_buf(), "the secret key is not 64 hex digits"))?;
    Ok(Some(NodeKey::from_secret(&secret)))
}

/// The home's key, made and stored (0600) if it has none. The new file is linked into
/// place, which fails if another process got there first; then that one's key is used.
fn load_or_create_key(home: &Home) -> Result<NodeKey, HomeError> {
    let path = key_path(home);
    if let Some(k) = read_key(&path)? {
        return Ok(k);
    }
    let key = NodeKey::generate();
    let f = KeyFile {
        secret_key: hex::encode(key.secret()),
    };
    let bytes = serde_json::to_vec_pretty(&f).map_err(|source| HomeError::Encode {
        path: path.clone(),
        source,
    })?;
    let io = |source| HomeError::Io {
        action: "write",
        path: path.clone(),
        source,
    };
    let tmp = write_temp_beside(&path, &bytes, 0o600).map_err(io)?;
    let linked = fs::hard_link(&tmp, &path);
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(key),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => read_key(&path)?
            .ok_or_else(|| corrupt(path.clone(), "the key file vanished while it was made")),
        Err(e) => Err(io(e)),
    }
}

fn read_certificate(home: &Home) -> Result<Option<Held>, String> {
    let path = certificate_path(home);
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    let f: CertificateFile = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
    let key = hex::decode(&f.key).map_err(|e| e.to_string())?;
    let signature = hex::decode(&f.signature).map_err(|e| e.to_string())?;
    let certificate = Certificate::from_parts(
        f.peer_id.as_str(),
        f.user,
        &key,
        f.expires_at_ms,
        &signature,
    )
    .map_err(|e| e.to_string())?;
    Ok(Some(Held {
        certificate,
        received_at_ms: f.received_at_ms,
    }))
}

fn save_certificate(home: &Home, h: &Held) -> Result<(), HomeError> {
    let c = &h.certificate;
    let CertificateClaims {
        peer_id,
        user,
        key,
        expires_at_ms,
    } = &c.claims;
    let f = CertificateFile {
        peer_id: peer_id.clone(),
        user: user.clone(),
        key: hex::encode(key),
        expires_at_ms: *expires_at_ms,
        signature: hex::encode(c.signature),
        received_at_ms: h.received_at_ms,
    };
    write_json(&certificate_path(home), &f, 0o600)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn should_make_one_private_key_per_home_and_keep_it() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::open(Some(dir.path().to_path_buf())).unwrap();
        let keys: Vec<[u8; 32]> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..8)
                .map(|_| s.spawn(|| load_or_create_key(&home).unwrap().public_key()))
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(
            keys.iter().all(|k| *k == keys[0]),
            "racing processes agree on one key"
        );
        assert_eq!(Identity::load(&home).unwrap().public_key(), keys[0]);
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(key_path(&home)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let leftovers = fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(".tmp")
            })
            .count();
        assert_eq!(leftovers, 0);
    }

    #[test]
    fn should_want_a_certificate_when_missing_half_spent_or_from_another_tracker() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::open(Some(dir.path().to_path_buf())).unwrap();
        let id = Identity::load(&home).unwrap();
        let now = 1_800_000_000_000;
        assert!(id.wants_certificate(None, now));
        let tracker = common::TicketSigner::from_secret(&[5; 32]);
        let cert = tracker.certify(CertificateClaims {
            peer_id: PeerId::from_random([1; 16]),
            user: "alice".into(),
            key: id.public_key(),
            expires_at_ms: now + 1000,
        });
        let held = Held {
            certificate: cert,
            received_at_ms: now,
        };
        save_certificate(&home, &held).unwrap();
        let id = Identity::load(&home).unwrap();
        let v = tracker.verifier();
        assert!(!id.wants_certificate(Some(&v), now + 499));
        assert!(id.wants_certificate(Some(&v), now + 500));
        let other = common::TicketSigner::from_secret(&[6; 32]).verifier();
        assert!(id.wants_certificate(Some(&other), now));
    }
}
