//! Accounts: users and their login sessions. Every write here also appends to the change
//! feed, so other trackers on the database learn of it.

use std::collections::HashMap;

use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter,
    QueryOrder, SqlErr, Statement, TransactionTrait,
};

use super::changes::{self, Change};
use super::entities::{holdings, peers, sessions, tasks, users};
use super::{INSERT_CHUNK, Store};
use crate::Error;
use crate::model::{SessionRecord, UserRecord};

impl Store {
    // Users.

    /// Creates a user.
    ///
    /// # Errors
    /// [`Error::AlreadyExists`] when the name is taken.
    pub async fn create_user(&self, name: &str, password_hash: &str) -> Result<UserRecord, Error> {
        self.create_user_with(name, password_hash, None).await
    }

    /// Creates a user and, in the same transaction, `session` (its `user_id` is filled in):
    /// a registration either makes both or neither.
    ///
    /// # Errors
    /// [`Error::AlreadyExists`] when the name is taken.
    pub async fn create_user_with(
        &self,
        name: &str,
        password_hash: &str,
        session: Option<SessionRecord>,
    ) -> Result<UserRecord, Error> {
        let am = users::ActiveModel {
            name: Set(name.to_string()),
            password_hash: Set(password_hash.to_string()),
            created_at: Set(crate::model::now_ms()),
            ..Default::default()
        };
        let txn = self.db.begin().await?;
        let id = match users::Entity::insert(am).exec(&txn).await {
            Ok(res) => res.last_insert_id,
            Err(e) if matches!(e.sql_err(), Some(SqlErr::UniqueConstraintViolation(_))) => {
                return Err(Error::AlreadyExists(format!(
                    "user {name:?} already exists"
                )));
            }
            Err(e) => return Err(e.into()),
        };
        let user = users::Entity::find_by_id(id)
            .one(&txn)
            .await?
            .map(user_record)
            .ok_or_else(|| Error::Internal("inserted user vanished".into()))?;
        if let Some(s) = session {
            let s = SessionRecord {
                user_id: user.id,
                ..s
            };
            insert_session(&txn, &self.origin, &s, &user.name).await?;
        }
        self.commit(txn).await?;
        Ok(user)
    }

    pub async fn user_by_name(&self, name: &str) -> Result<Option<UserRecord>, Error> {
        Ok(users::Entity::find()
            .filter(users::Column::Name.eq(name))
            .one(&self.db)
            .await?
            .map(user_record))
    }

    pub async fn user_by_id(&self, id: i32) -> Result<Option<UserRecord>, Error> {
        Ok(users::Entity::find_by_id(id)
            .one(&self.db)
            .await?
            .map(user_record))
    }

    /// Every user, by name.
    pub async fn list_users(&self) -> Result<Vec<UserRecord>, Error> {
        Ok(users::Entity::find()
            .order_by_asc(users::Column::Name)
            .all(&self.db)
            .await?
            .into_iter()
            .map(user_record)
            .collect())
    }

    pub async fn count_users(&self) -> Result<u64, Error> {
        Ok(users::Entity::find().count(&self.db).await?)
    }

    /// Deletes a user with their sessions, peers and those peers' holdings, then every file
    /// nobody holds any more (with its collection row). Returns false if there was no such
    /// user.
    pub async fn remove_user(&self, name: &str) -> Result<bool, Error> {
        let Some(user) = self.user_by_name(name).await? else {
            return Ok(false);
        };
        let txn = self.db.begin().await?;
        let peer_ids: Vec<String> = peers::Entity::find()
            .filter(peers::Column::UserId.eq(user.id))
            .all(&txn)
            .await?
            .into_iter()
            .map(|p| p.id)
            .collect();
        for ids in peer_ids.chunks(INSERT_CHUNK) {
            holdings::Entity::delete_many()
                .filter(holdings::Column::PeerId.is_in(ids.iter().cloned()))
                .exec(&txn)
                .await?;
            tasks::Entity::delete_many()
                .filter(tasks::Column::PeerId.is_in(ids.iter().cloned()))
                .exec(&txn)
                .await?;
        }
        peers::Entity::delete_many()
            .filter(peers::Column::UserId.eq(user.id))
            .exec(&txn)
            .await?;
        sessions::Entity::delete_many()
            .filter(sessions::Column::UserId.eq(user.id))
            .exec(&txn)
            .await?;
        users::Entity::delete_by_id(user.id).exec(&txn).await?;
        let backend = txn.get_database_backend();
        txn.execute_raw(Statement::from_string(
            backend,
            "DELETE FROM files WHERE id NOT IN (SELECT file_id FROM holdings)",
        ))
        .await?;
        txn.execute_raw(Statement::from_string(
            backend,
            "DELETE FROM collections WHERE file_id NOT IN (SELECT id FROM files)",
        ))
        .await?;
        let change = Change::UserRemoved { user_id: user.id };
        changes::append(&txn, &self.origin, &change).await?;
        self.commit(txn).await?;
        Ok(true)
    }

    // Sessions.

    /// Stores a session and tells other trackers about it (`user` is its user's name).
    pub async fn insert_session(&self, s: &SessionRecord, user: &str) -> Result<(), Error> {
        let txn = self.db.begin().await?;
        insert_session(&txn, &self.origin, s, user).await?;
        self.commit(txn).await?;
        Ok(())
    }

    /// Deletes a session; returns whether it existed.
    pub async fn delete_session(&self, token_hash: &str) -> Result<bool, Error> {
        let txn = self.db.begin().await?;
        let res = sessions::Entity::delete_by_id(token_hash.to_string())
            .exec(&txn)
            .await?;
        let change = Change::SessionDel {
            token_hash: token_hash.to_string(),
        };
        changes::append(&txn, &self.origin, &change).await?;
        self.commit(txn).await?;
        Ok(res.rows_affected > 0)
    }

    /// Sessions that have not expired at `now_ms` (expired ones are deleted on the way).
    pub async fn load_sessions(&self, now_ms: i64) -> Result<Vec<SessionRecord>, Error> {
        sessions::Entity::delete_many()
            .filter(sessions::Column::ExpiresAt.lte(now_ms))
            .exec(&self.db)
            .await?;
        Ok(sessions::Entity::find()
            .all(&self.db)
            .await?
            .into_iter()
            .map(|m| SessionRecord {
                token_hash: m.token_hash,
                user_id: m.user_id,
                created_at_ms: m.created_at,
                expires_at_ms: m.expires_at,
            })
            .collect())
    }

    /// user id → name, for everyone.
    pub async fn user_names(&self) -> Result<HashMap<i32, String>, Error> {
        Ok(users::Entity::find()
            .all(&self.db)
            .await?
            .into_iter()
            .map(|u| (u.id, u.name))
            .collect())
    }
}

/// Inserts a session with its change-feed entry inside the open transaction `txn`.
async fn insert_session<C: ConnectionTrait>(
    txn: &C,
    origin: &str,
    s: &SessionRecord,
    user: &str,
) -> Result<(), Error> {
    let am = sessions::ActiveModel {
        token_hash: Set(s.token_hash.clone()),
        user_id: Set(s.user_id),
        created_at: Set(s.created_at_ms),
        expires_at: Set(s.expires_at_ms),
    };
    sessions::Entity::insert(am)
        .exec_without_returning(txn)
        .await?;
    let change = Change::SessionAdd {
        token_hash: s.token_hash.clone(),
        user_id: s.user_id,
        user: user.to_string(),
        expires_at_ms: s.expires_at_ms,
    };
    changes::append(txn, origin, &change).await?;
    Ok(())
}

fn user_record(m: users::Model) -> UserRecord {
    UserRecord {
        id: m.id,
        name: m.name,
        password_hash: m.password_hash,
        created_at_ms: m.created_at,
    }
}
