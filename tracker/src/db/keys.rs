//! The tracker's persistent keys (the ticket signing key), shared by every tracker on the
//! database.

use sea_orm::ActiveValue::Set;
use sea_orm::EntityTrait;
use sea_orm::sea_query::OnConflict;

use super::Store;
use super::entities::tracker_keys;
use crate::Error;

impl Store {
    /// The secret of the key `name`: the stored one, or `fresh` when none is stored yet.
    /// Insert-if-absent then read back, so trackers starting together on one database all
    /// end up with the first one's key.
    ///
    /// # Errors
    /// [`Error::Database`]; [`Error::Internal`] when the row vanished after the insert.
    pub async fn key_or_insert(&self, name: &str, fresh: &[u8]) -> Result<Vec<u8>, Error> {
        let am = tracker_keys::ActiveModel {
            name: Set(name.to_string()),
            secret: Set(fresh.to_vec()),
            created_at: Set(crate::model::now_ms()),
        };
        tracker_keys::Entity::insert(am)
            .on_conflict(
                OnConflict::column(tracker_keys::Column::Name)
                    .do_nothing()
                    .to_owned(),
            )
            .exec_without_returning(&self.db)
            .await?;
        tracker_keys::Entity::find_by_id(name.to_string())
            .one(&self.db)
            .await?
            .map(|m| m.secret)
            .ok_or_else(|| Error::Internal(format!("the {name} key vanished after its insert")))
    }
}
