//! The administrative commands (`tracker migrate`, `tracker user add|list|remove`). They
//! work on the database directly, so they can run next to a serving tracker: a user added
//! here can log in at once, because login reads users from the database. Removing a user
//! takes full effect on a running tracker's in-memory state at its next restart.

use crate::Error;
use crate::app::auth;
use crate::db::Store;

/// A user as `tracker user list` shows it.
#[derive(Clone, Debug)]
pub struct UserSummary {
    pub name: String,
    pub created_at_ms: i64,
}

async fn open(database_url: &str) -> Result<Store, Error> {
    let store = Store::connect(database_url).await?;
    store.migrate().await?;
    Ok(store)
}

/// Applies every pending migration.
///
/// # Errors
/// [`Error::Database`].
pub async fn migrate(database_url: &str) -> Result<(), Error> {
    open(database_url).await?.close().await;
    Ok(())
}

/// Creates a user.
///
/// # Errors
/// `InvalidArgument` for a bad name or password, `AlreadyExists` when the name is taken.
pub async fn user_add(database_url: &str, name: &str, password: &str) -> Result<(), Error> {
    auth::check_name(name)?;
    auth::check_password(password)?;
    let store = open(database_url).await?;
    let res = async {
        if store.user_by_name(name).await?.is_some() {
            return Err(Error::AlreadyExists(format!(
                "user {name:?} already exists"
            )));
        }
        let hash = auth::hash_password(password.to_string()).await?;
        store.create_user(name, &hash).await.map(|_| ())
    }
    .await;
    store.close().await;
    res
}

/// Every user, by name.
///
/// # Errors
/// [`Error::Database`].
pub async fn user_list(database_url: &str) -> Result<Vec<UserSummary>, Error> {
    let store = open(database_url).await?;
    let users = store.list_users().await;
    store.close().await;
    Ok(users?
        .into_iter()
        .map(|u| UserSummary {
            name: u.name,
            created_at_ms: u.created_at_ms,
        })
        .collect())
}

/// Deletes a user with their sessions, peers and holdings (and files nobody holds then).
///
/// # Errors
/// `NotFound` when there is no such user.
pub async fn user_remove(database_url: &str, name: &str) -> Result<(), Error> {
    let store = open(database_url).await?;
    let removed = store.remove_user(name).await;
    store.close().await;
    if removed? {
        Ok(())
    } else {
        Err(Error::not_found(format!("no user {name:?}")))
    }
}

/// The key that signs tickets (created if the database has none yet), as every tracker on
/// this database uses it. For operators' tools and tests that need to mint tickets.
///
/// # Errors
/// [`Error::Database`].
pub async fn ticket_signer(database_url: &str) -> Result<common::TicketSigner, Error> {
    let store = open(database_url).await?;
    let signer = crate::app::tickets::load_signer(&store).await;
    store.close().await;
    signer
}
