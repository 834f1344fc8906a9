//! Accounts and sessions on [`TrackerService`]: register, login (with the throttle and the
//! constant-work answer for unknown users), logout, and the per-request session check,
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
        let rec = self.inner.store.create_user(user, &hash).await?;
        tracing::debug!(user = %rec.name, "registered");
        self.new_session(rec.id, rec.name).await
    }

    /// Starts a session. Unknown users and wrong passwords get the same answer after the
    /// same work; `ip` (when known) is throttled along with the user name.
    ///
    /// # Errors
    /// `Unauthenticated` ("invalid user or password"), `Throttled`.
    pub async fn login(
        &self,
        user: &str,
        password: &str,
        ip: Option<IpAddr>,
    ) -> Result<SessionView, Error> {
        let keys = throttle_keys(user, ip);
        let started = Instant::now();
        {
            let mut t = lock(&self.inner.throttle);
            if let Some(retry_after) = keys.iter().filter_map(|k| t.retry_after(k, started)).max() {
                return Err(Error::Throttled { retry_after });
            }
        }
        let plausible = auth::check_name(user).is_ok() && password.len() <= auth::MAX_PASSWORD_LEN;
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
        match rec {
            Some(rec) if matches => {
                lock(&self.inner.throttle).clear(&keys[0]);
                self.new_session(rec.id, rec.name).await
            }
            _ => {
                let mut t = lock(&self.inner.throttle);
                for k in &keys {
                    t.record_failure(k, Instant::now());
                }
                Err(Error::Unauthenticated(BAD_CREDENTIALS.into()))
            }
        }
    }

    async fn new_session(&self, user_id: i32, user: String) -> Result<SessionView, Error> {
        let (token, token_hash) = auth::new_token();
        let now = now_ms();
        let expires_at_ms = now.saturating_add(duration_ms(self.inner.cfg.session_ttl));
        self.inner
            .store
            .insert_session(
                &SessionRecord {
                    token_hash: token_hash.clone(),
                    user_id,
                    created_at_ms: now,
                    expires_at_ms,
                },
                &user,
            )
            .await?;
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
        Ok(SessionView {
            token,
            user,
            expires_at_ms,
        })
    }

    /// Revokes the session named by `token`.
    ///
    /// # Errors
    /// `Unauthenticated` for an unknown, expired or already revoked token.
    pub async fn logout(&self, token: Option<&str>) -> Result<(), Error> {
        let caller = self.authenticate(token)?;
        let hash = auth::token_hash(token.unwrap_or_default());
        self.inner
            .sessions
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&hash);
        self.inner.store.delete_session(&hash).await?;
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

fn throttle_keys(user: &str, ip: Option<IpAddr>) -> Vec<String> {
    let mut keys = vec![format!(
        "user:{}",
        user.chars().take(80).collect::<String>()
    )];
    keys.extend(ip.map(|ip| format!("ip:{ip}")));
    keys
}
