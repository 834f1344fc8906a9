//! Accounts and sessions on [`TrackerService`]: register, login (with the sender's throttle
//! and the constant-work answer for unknown users), logout, and the per-request session check,
//! which reads memory only.

use std::net::IpAddr;
use std::sync::PoisonError;
use std::time::Instant;

use super::{Caller, SessionEntry, SessionView, TrackerService, auth, duration_ms, lock};
use crate::Error;
use crate::error::BAD_CREDENTIALS;
use crate::model::{SessionRecord, now_ms};

impl TrackerService {
    /// Creates an account and logs it in.
    ///
    /// # Errors
    /// `PermissionDenied` when registration is closed, `InvalidArgument` for a bad name or
    /// password, `AlreadyExists` when the name is taken.
    pub async fn register(&self, user: &str, password: &str) -> Result<SessionView, Error> {
        if !self.inner.cfg.open_registration {
            return Err(Error::PermissionDenied(
                "registration is closed; ask the tracker's administrator for an account".into(),
            ));
        }
        auth::check_name(user)?;
        auth::check_password(password)?;
        if self.inner.store.user_by_name(user).await?.is_some() {
            return Err(Error::AlreadyExists(format!(
                "user {user:?} already exists"
            )));
        }
        let hash = auth::hash_password(password.to_string()).await?;
        // The account and its first session commit together: a registration the caller is
        // told failed leaves no account behind.
        let (token, session) = self.session_record(0);
        let rec = (self.inner.store)
            .create_user_with(user, &hash, Some(session.clone()))
            .await?;
        tracing::debug!(user = %rec.name, "registered");
        Ok(self.session_made(
            token,
            rec.id,
            rec.name,
            session.token_hash,
            session.expires_at_ms,
        ))
    }

    /// Starts a session. Unknown users and wrong passwords get the same answer after the
    /// same work. Failures throttle the sender (`ip`, the socket's address, when known), not
    /// the user: see `throttle`. A throttled sender is answered before any password work.
    ///
    /// # Errors
    /// `Unauthenticated` ("invalid user or password"), `Throttled`.
    pub async fn login(
        &self,
        user: &str,
        password: &str,
        ip: Option<IpAddr>,
    ) -> Result<SessionView, Error> {
        let attempt = lock(&self.inner.throttle)
            .admit(user, ip, Instant::now())
            .map_err(|retry_after| Error::Throttled { retry_after })?;
        let checked = async {
            let plausible =
                auth::check_name(user).is_ok() && password.len() <= auth::MAX_PASSWORD_LEN;
            let rec = if plausible {
                self.inner.store.user_by_name(user).await?
            } else {
                None
            };
            let hash = match &rec {
                Some(u) => u.password_hash.clone(),
                None => self
                    .inner
                    .dummy_hash
                    .get_or_try_init(|| auth::hash_password(auth::new_token().0))
                    .await?
                    .clone(),
            };
            let matches = auth::verify_password(password.to_string(), hash).await;
            Ok::<_, Error>(rec.filter(|_| matches))
        };
        match checked.await {
            Ok(Some(rec)) => {
                lock(&self.inner.throttle).succeeded(attempt);
                self.new_session(rec.id, rec.name).await
            }
            // The attempt stays counted as a failure.
            Ok(None) => Err(Error::Unauthenticated(BAD_CREDENTIALS.into())),
            // Not the sender's failure (the database, say): it does not count.
            Err(e) => {
                lock(&self.inner.throttle).forget(attempt);
                Err(e)
            }
        }
    }

    /// A new session for `user_id`, not stored yet, and its token.
    fn session_record(&self, user_id: i32) -> (String, SessionRecord) {
        let (token, token_hash) = auth::new_token();
        let now = now_ms();
        let rec = SessionRecord {
            token_hash,
            user_id,
            created_at_ms: now,
            expires_at_ms: now.saturating_add(duration_ms(self.inner.cfg.session_ttl)),
        };
        (token, rec)
    }

    /// Starts a session: stored first, then known to this tracker's memory.
    async fn new_session(&self, user_id: i32, user: String) -> Result<SessionView, Error> {
        let (token, rec) = self.session_record(user_id);
        self.inner.store.insert_session(&rec, &user).await?;
        Ok(self.session_made(token, user_id, user, rec.token_hash, rec.expires_at_ms))
    }

    /// Adds a stored session to memory; returns what the caller is told.
    fn session_made(
        &self,
        token: String,
        user_id: i32,
        user: String,
        token_hash: String,
        expires_at_ms: i64,
    ) -> SessionView {
        self.inner
            .sessions
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(
                token_hash,
                SessionEntry {
                    user_id,
                    user: user.clone(),
                    expires_at_ms,
                },
            );
        SessionView {
            token,
            user,
            expires_at_ms,
        }
    }

    /// Revokes the session named by `token`.
    ///
    /// # Errors
    /// `Unauthenticated` for an unknown, expired or already revoked token.
    pub async fn logout(&self, token: Option<&str>) -> Result<(), Error> {
        let caller = self.authenticate(token)?;
        let hash = auth::token_hash(token.unwrap_or_default());
        // Revoked in the database first: a logout that fails leaves the session working
        // here as on every other tracker.
        self.inner.store.delete_session(&hash).await?;
        self.inner
            .sessions
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&hash);
        tracing::debug!(user = %caller.user, "logged out");
        Ok(())
    }

    /// The user behind a session token.
    ///
    /// # Errors
    /// `Unauthenticated` for a missing, unknown, expired or revoked token.
    pub fn authenticate(&self, token: Option<&str>) -> Result<Caller, Error> {
        let Some(token) = token.filter(|t| !t.is_empty()) else {
            return Err(Error::Unauthenticated(
                "missing session token; log in first".into(),
            ));
        };
        let hash = auth::token_hash(token);
        let now = now_ms();
        let sessions = self
            .inner
            .sessions
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        match sessions.get(&hash) {
            Some(s) if s.expires_at_ms > now => Ok(Caller {
                user_id: s.user_id,
                user: s.user.clone(),
            }),
            _ => Err(Error::Unauthenticated(
                "invalid or expired session; log in again".into(),
            )),
        }
    }
}
