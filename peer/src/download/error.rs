//! Why a download failed, by meaning.

use std::fmt;
use std::io;
use std::path::PathBuf;

use common::{FileId, ManifestError, Sha256Digest};

use crate::tracker_client::TrackerError;

/// Why a download failed.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    /// The first Locate failed.
    #[error(transparent)]
    Locate(#[from] TrackerError),
    /// No tracker answered, and the file could not be found among peers either.
    #[error("no tracker answers, and among peers: {0}")]
    AmongPeers(#[from] crate::flood::origin::SearchError),
    /// The tracker's chunk map does not hash to the requested file id.
    #[error("the tracker's chunk map does not match file id {id}; refusing it: {source}")]
    ChunkMap {
        id: FileId,
        #[source]
        source: ManifestError,
    },
    /// Something else is at the final path; it is never overwritten. `name` is the file's
    /// name from the tracker, already escaped for a terminal.
    #[error(
        "{} exists and differs from {name}; move it away or choose another --output",
        path.display()
    )]
    OutputTaken { path: PathBuf, name: String },
    /// The final path appeared while the file was being fetched.
    #[error(
        "{} appeared while downloading; the data stays in {}",
        final_path.display(),
        part.display()
    )]
    OutputAppeared { final_path: PathBuf, part: PathBuf },
    /// Another `peer get` holds the lock on the part file.
    #[error("another `peer get` is already writing {}", .0.display())]
    PartLocked(PathBuf),
    /// The part file's path names something other than a regular file.
    #[error("{} is not a regular file", .0.display())]
    PartNotAFile(PathBuf),
    /// Reading, writing, flushing or moving a file of the download failed; `action` is
    /// e.g. "open", "write", "flush".
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The finished part file could not be renamed to its final name.
    #[error("cannot rename {} into place: {source}", part.display())]
    Publish {
        part: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The thread that hashes the whole file could not be started.
    #[error("cannot start hashing the file: {0}")]
    HashThread(#[source] io::Error),
    /// Some chunks have no source left. `name` is already escaped for a terminal.
    #[error("no live source for {missing} of {total} chunks of {name}{why}")]
    NoLiveSource {
        missing: u32,
        total: u32,
        name: String,
        why: NoSource,
    },
    /// Every chunk matched its hash but the whole file does not have the SHA-256 the
    /// tracker lists (its sharer announced a wrong one); nothing was kept. `name` is
    /// already escaped for a terminal.
    #[error(
        "{name}: the downloaded bytes match every chunk hash but their SHA-256 is {got}, \
         not the {listed} the tracker lists; the file's listing is wrong, nothing was saved"
    )]
    WholeFileHash {
        name: String,
        got: Sha256Digest,
        listed: Sha256Digest,
    },
    /// A blocking task of the download (`what`) panicked or was cancelled.
    #[error("the download's {what} task failed: {source}")]
    Task {
        what: &'static str,
        #[source]
        source: tokio::task::JoinError,
    },
}

impl DownloadError {
    /// Whether this failure is only that no live peer holds the file now (a holder may come
    /// back): what `get --wait` queues instead of failing.
    pub fn no_holder_now(&self) -> bool {
        matches!(
            self,
            DownloadError::NoLiveSource {
                why: NoSource::Offline,
                ..
            } | DownloadError::AmongPeers(crate::flood::origin::SearchError::NotFound(_))
        )
    }
}

/// Why [`DownloadError::NoLiveSource`] has no source; displayed as the end of its message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoSource {
    /// At start: every holder the tracker lists for the missing chunks is offline.
    Offline,
    /// Nothing arrived for the give-up time; why the last source was dropped (already
    /// escaped for a terminal), if one was.
    GaveUp { last_error: Option<String> },
    /// Every source the tracker listed sent bad data or refused chunks it is listed for,
    /// and the tracker had no other (the last error is already escaped).
    AllBad {
        sources: usize,
        last_error: Option<String>,
    },
}

impl fmt::Display for NoSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NoSource::Offline => f.write_str(": every holder of them is offline"),
            NoSource::GaveUp {
                last_error: Some(e),
            } => write!(f, " (last source error: {e})"),
            NoSource::GaveUp { last_error: None } => Ok(()),
            NoSource::AllBad {
                sources,
                last_error,
            } => {
                let s = if *sources == 1 { "" } else { "s" };
                write!(
                    f,
                    ": its {sources} listed source{s} sent bad data or refused chunks they are \
                     listed for, and the tracker lists no other (reported to the tracker)"
                )?;
                match last_error {
                    Some(e) => write!(f, "; last: {e}"),
                    None => Ok(()),
                }
            }
        }
    }
}

impl DownloadError {
    pub(super) fn io(action: &'static str, path: &std::path::Path, source: io::Error) -> Self {
        Self::Io {
            action,
            path: path.to_path_buf(),
            source,
        }
    }

    pub(super) fn task(what: &'static str) -> impl FnOnce(tokio::task::JoinError) -> Self {
        move |source| Self::Task { what, source }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `main` prints one line from `Display` alone: every cause must be in it.
    #[test]
    fn messages_carry_their_causes() {
        let id: FileId = "a".repeat(64).parse().unwrap();
        let e = DownloadError::ChunkMap {
            id,
            source: ManifestError::IdMismatch(id),
        };
        assert_eq!(
            e.to_string(),
            format!(
                "the tracker's chunk map does not match file id {id}; refusing it: \
                 manifest does not match file id {id}"
            )
        );
        let e = DownloadError::io(
            "write",
            std::path::Path::new("/o/a.bin.tessera-part"),
            io::Error::from_raw_os_error(28),
        );
        let line = e.to_string();
        assert!(
            line.starts_with("cannot write /o/a.bin.tessera-part: No space left on device"),
            "{line}"
        );
        let gone = |last_error: Option<&str>| DownloadError::NoLiveSource {
            missing: 2,
            total: 3,
            name: "a.bin".into(),
            why: NoSource::GaveUp {
                last_error: last_error.map(str::to_string),
            },
        };
        assert_eq!(
            gone(Some("refused")).to_string(),
            "no live source for 2 of 3 chunks of a.bin (last source error: refused)"
        );
        assert_eq!(
            gone(None).to_string(),
            "no live source for 2 of 3 chunks of a.bin"
        );
        let offline = DownloadError::NoLiveSource {
            missing: 3,
            total: 3,
            name: "a.bin".into(),
            why: NoSource::Offline,
        };
        assert_eq!(
            offline.to_string(),
            "no live source for 3 of 3 chunks of a.bin: every holder of them is offline"
        );
    }
}
