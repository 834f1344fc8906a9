//! Identifiers. A file is named by its content id (so identical content shared by many
//! peers is one file with many holders); a peer by a random id kept in its home.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::Sha256Digest;

/// A file's content id: the SHA-256 of its manifest (size, chunk size and chunk hashes),
/// so whoever knows the id can check the chunk map a tracker hands out.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct FileId(pub Sha256Digest);

impl FileId {
    /// The first 12 hex digits, for tables; commands accept any unique prefix.
    pub fn short(&self) -> String {
        self.0.to_hex()[..12].to_string()
    }
}

impl fmt::Display for FileId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// The text is not a file id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid file id {0:?}: expected 64 hex digits")]
pub struct FileIdParseError(pub String);

impl FromStr for FileId {
    type Err = FileIdParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse::<Sha256Digest>()
            .map(FileId)
            .map_err(|_| FileIdParseError(crate::names::printable(s, 80)))
    }
}

impl Serialize for FileId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for FileId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A peer's id: 32 lowercase hex digits (128 random bits), created once per home.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PeerId(String);

/// The text is not a peer id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid peer id {0:?}: expected 32 hex digits")]
pub struct PeerIdParseError(pub String);

impl PeerId {
    /// Builds a peer id from 16 random bytes (the caller brings the randomness, so this crate
    /// needs no RNG).
    pub fn from_random(bytes: [u8; 16]) -> Self {
        Self(hex::encode(bytes))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first 8 hex digits, for tables.
    pub fn short(&self) -> &str {
        &self.0[..8]
    }
}

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for PeerId {
    type Err = PeerIdParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() == 32 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            Ok(Self(s.to_string()))
        } else {
            Err(PeerIdParseError(crate::names::printable(s, 80)))
        }
    }
}

impl TryFrom<String> for PeerId {
    type Error = PeerIdParseError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<PeerId> for String {
    fn from(p: PeerId) -> String {
        p.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_ids_are_strict() {
        let id = PeerId::from_random([0xab; 16]);
        assert_eq!(id.as_str().parse::<PeerId>().unwrap(), id);
        assert!("ABAB".parse::<PeerId>().is_err());
        assert!(
            "../../etc/passwd0000000000000000"
                .parse::<PeerId>()
                .is_err()
        );
    }

    #[test]
    fn file_ids_round_trip_through_text() {
        let id = FileId(Sha256Digest::of(b"x"));
        assert_eq!(id.to_string().parse::<FileId>().unwrap(), id);
        assert_eq!(id.short().len(), 12);
        assert!("not-an-id".parse::<FileId>().is_err());
    }
}
