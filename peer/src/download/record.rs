//! The download's store record (kind `downloaded`), written as chunks are verified so a
//! node serving the same home can serve them while the download runs.

use common::{Bitfield, FileId, Manifest};

use crate::home::{Home, Kind, StoreRecord};

/// Writes the `downloaded` store record, unless this home already shares the file.
pub(super) struct RecordWriter {
    home: Home,
    base: Option<StoreRecord>,
}

impl RecordWriter {
    pub(super) fn new(home: &Home, m: &Manifest, final_path: &std::path::Path) -> Self {
        let shared = matches!(
            home.record(&m.id()),
            Ok(Some(r)) if r.kind == Kind::Shared && r.complete && !r.changed
        );
        let base = (!shared).then(|| {
            StoreRecord::new(
                m,
                Kind::Downloaded,
                final_path.to_path_buf(),
                &Bitfield::new(m.chunk_count()),
            )
        });
        Self {
            home: home.clone(),
            base,
        }
    }

    /// Drops the record this download wrote (never a record of a file this home shares).
    pub(super) fn forget(&self, id: &FileId) {
        if self.base.is_some()
            && let Err(e) = self.home.delete_record(id)
        {
            tracing::warn!("cannot remove store record: {e}");
        }
    }

    fn record(&self, have: &Bitfield, complete: bool) -> Option<StoreRecord> {
        let mut r = self.base.clone()?;
        r.have = hex::encode(have.as_bytes());
        r.complete = complete;
        Some(r)
    }

    pub(super) fn write(&self, have: &Bitfield, complete: bool) {
        if let Some(r) = self.record(have, complete)
            && let Err(e) = self.home.save_record(&r)
        {
            tracing::warn!("cannot write store record: {e}");
        }
    }

    pub(super) async fn write_async(&self, have: Bitfield) {
        let Some(r) = self.record(&have, false) else {
            return;
        };
        let home = self.home.clone();
        let res = tokio::task::spawn_blocking(move || home.save_record(&r)).await;
        if let Ok(Err(e)) = res {
            tracing::warn!("cannot write store record: {e}");
        }
    }
}
