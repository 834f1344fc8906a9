//! Gets that wait for a holder. `peer get --wait` of a file no live peer holds now queues
//! it in the home (`HOME/waiting/<id>.json`) instead of failing; the home's node tries each
//! waiting get every `--waiting-every` and fetches it once a holder is back, whether or not
//! the command that queued it still runs. The queue is in the home, so it survives the CLI,
//! node restarts and tracker outages (a node without a tracker looks among peers).

use std::path::PathBuf;

use common::FileId;
use serde::{Deserialize, Serialize};

use crate::home::{Home, HomeError, remove_if_exists, write_json};

/// One waiting get.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaitingGet {
    pub file_id: FileId,
    /// The directory the file goes into (absolute).
    pub output: PathBuf,
    /// Unix ms when it was queued.
    pub queued_at_ms: i64,
    /// Why the last try did not fetch it, if it failed otherwise than for want of a holder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// The waiting gets of one home.
#[derive(Debug, Clone)]
pub struct Waiting {
    home: Home,
}

impl Waiting {
    pub fn new(home: &Home) -> Self {
        Self { home: home.clone() }
    }

    fn dir(&self) -> PathBuf {
        self.home.dir().join("waiting")
    }

    fn path(&self, id: &FileId) -> PathBuf {
        self.dir().join(format!("{id}.json"))
    }

    /// Queues (or re-queues) `w`.
    ///
    /// # Errors
    /// When the home cannot be written.
    pub fn put(&self, w: &WaitingGet) -> Result<(), HomeError> {
        let dir = self.dir();
        std::fs::create_dir_all(&dir).map_err(|source| HomeError::Io {
            action: "create",
            path: dir,
            source,
        })?;
        write_json(&self.path(&w.file_id), w, 0o600)
    }

    /// Every waiting get, oldest first (unreadable entries are skipped with a warning).
    pub fn list(&self) -> Vec<WaitingGet> {
        let Ok(entries) = std::fs::read_dir(self.dir()) else {
            return Vec::new();
        };
        let mut out: Vec<WaitingGet> = entries
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
            .filter_map(|e| {
                let bytes = std::fs::read(e.path()).ok()?;
                serde_json::from_slice(&bytes)
                    .map_err(|err| {
                        tracing::warn!("ignoring {}: {err}", e.path().display());
                    })
                    .ok()
            })
            .collect();
        out.sort_by_key(|w| w.queued_at_ms);
        out
    }

    /// Cancels the waiting get of `id`; whether there was one.
    ///
    /// # Errors
    /// When the home cannot be written.
    pub fn remove(&self, id: &FileId) -> Result<bool, HomeError> {
        remove_if_exists(&self.path(id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn should_keep_waiting_gets_until_removed() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::open(Some(dir.path().join("h"))).unwrap();
        let w = Waiting::new(&home);
        assert!(w.list().is_empty());
        let id = FileId(common::Sha256Digest::of(b"x"));
        let g = WaitingGet {
            file_id: id,
            output: dir.path().to_path_buf(),
            queued_at_ms: 5,
            last_error: None,
        };
        w.put(&g).unwrap();
        w.put(&g).unwrap();
        assert_eq!(w.list(), vec![g]);
        assert!(w.remove(&id).unwrap());
        assert!(!w.remove(&id).unwrap());
        assert!(w.list().is_empty());
    }
}
