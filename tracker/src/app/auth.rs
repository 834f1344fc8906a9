//! Accounts and sessions: argon2id password hashes, random session tokens stored only as
//! SHA-256, and a throttle on failed logins. Password hashing is slow on purpose, so it runs
//! on the blocking pool, never on an async worker.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use argon2::Argon2;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use rand::RngExt;
use sha2::{Digest, Sha256};

use crate::Error;

/// Longest accepted password, in bytes (argon2 time does not depend on it, memory does).
pub const MAX_PASSWORD_LEN: usize = 1024;
/// Failures within [`THROTTLE_WINDOW`] after which logins are refused.
pub const THROTTLE_LIMIT: usize = 5;
pub const THROTTLE_WINDOW: Duration = Duration::from_secs(60);

/// Checks a user name: 1–64 of `[A-Za-z0-9_.-]`.
///
/// # Errors
/// [`Error::InvalidArgument`] saying what is allowed.
pub fn check_name(name: &str) -> Result<(), Error> {
    let ok = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            "user name must be 1-64 characters of A-Z, a-z, 0-9, '_', '.', '-'",
        ))
    }
}

/// Checks a new password: not empty, at most [`MAX_PASSWORD_LEN`] bytes.
///
/// # Errors
/// [`Error::InvalidArgument`].
pub fn check_password(password: &str) -> Result<(), Error> {
    if password.is_empty() {
        return Err(Error::invalid("password must not be empty"));
    }
    if password.len() > MAX_PASSWORD_LEN {
        return Err(Error::invalid(format!(
            "password must be at most {MAX_PASSWORD_LEN} bytes"
        )));
    }
    Ok(())
}

/// Hashes a password to an argon2id PHC string (on the blocking pool).
///
/// # Errors
/// [`Error::Internal`] if hashing fails.
pub async fn hash_password(password: String) -> Result<String, Error> {
    tokio::task::spawn_blocking(move || {
        Argon2::default()
            .hash_password(password.as_bytes())
            .map(|h| h.to_string())
            .map_err(|e| Error::Internal(format!("hashing a password: {e}")))
    })
    .await
    .map_err(|e| Error::Internal(format!("password hashing task: {e}")))?
}

/// Whether `password` matches the PHC string `hash` (on the blocking pool). A malformed
/// hash never matches.
pub async fn verify_password(password: String, hash: String) -> bool {
    tokio::task::spawn_blocking(move || {
        Argon2::default()
            .verify_password(password.as_bytes(), hash.as_str())
            .is_ok()
    })
    .await
    .unwrap_or(false)
}

/// A fresh session token (32 random bytes as 64 hex digits) and its stored hash.
pub fn new_token() -> (String, String) {
    let mut bytes = [0u8; 32];
    rand::rng().fill(&mut bytes);
    let token = hex::encode(bytes);
    let hash = token_hash(&token);
    (token, hash)
}

/// The hex SHA-256 of a token, which is what the database keeps.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Counts failed logins per key (`user:NAME`, `ip:ADDR`) over a sliding window.
#[derive(Debug, Default)]
pub struct Throttle {
    failures: HashMap<String, VecDeque<Instant>>,
}

impl Throttle {
    /// How long until `key` may try again, if it is throttled now.
    pub fn retry_after(&mut self, key: &str, now: Instant) -> Option<Duration> {
        let q = self.failures.get_mut(key)?;
        while q
            .front()
            .is_some_and(|t| now.duration_since(*t) >= THROTTLE_WINDOW)
        {
            q.pop_front();
        }
        if q.len() < THROTTLE_LIMIT {
            return None;
        }
        // Allowed again once the failure that keeps the count at the limit ages out.
        let t = q[q.len() - THROTTLE_LIMIT];
        let wait = THROTTLE_WINDOW.saturating_sub(now.duration_since(t));
        Some(Duration::from_secs(
            wait.as_secs_f64().ceil().max(1.0) as u64
        ))
    }

    pub fn record_failure(&mut self, key: &str, now: Instant) {
        if self.failures.len() > 100_000 {
            self.failures.retain(|_, q| {
                q.back()
                    .is_some_and(|t| now.duration_since(*t) < THROTTLE_WINDOW)
            });
        }
        self.failures
            .entry(key.to_string())
            .or_default()
            .push_back(now);
    }

    pub fn clear(&mut self, key: &str) {
        self.failures.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn should_accept_only_simple_names() {
        assert!(check_name("alice_1.x-y").is_ok());
        assert!(check_name("").is_err());
        assert!(check_name("a b").is_err());
        assert!(check_name("../x").is_err());
        assert!(check_name("ü").is_err());
        assert!(check_name(&"a".repeat(65)).is_err());
        assert!(check_password("").is_err());
        assert!(check_password(&"p".repeat(1025)).is_err());
    }

    #[test]
    fn should_throttle_after_five_failures_within_the_window() {
        let mut t = Throttle::default();
        let t0 = Instant::now();
        for i in 0..5 {
            assert_eq!(t.retry_after("user:a", t0), None, "attempt {i}");
            t.record_failure("user:a", t0 + Duration::from_secs(i));
        }
        let wait = t
            .retry_after("user:a", t0 + Duration::from_secs(10))
            .unwrap();
        assert_eq!(wait, Duration::from_secs(50));
        assert_eq!(t.retry_after("user:b", t0), None);
        assert_eq!(t.retry_after("user:a", t0 + Duration::from_secs(60)), None);
        t.record_failure("user:a", t0 + Duration::from_secs(61));
        t.clear("user:a");
        assert_eq!(t.retry_after("user:a", t0 + Duration::from_secs(61)), None);
    }

    #[test]
    fn tokens_are_random_and_stored_hashed() {
        let (a, ha) = new_token();
        let (b, _) = new_token();
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
        assert_eq!(ha, token_hash(&a));
        assert_ne!(ha, a);
    }
}
