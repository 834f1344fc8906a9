//! Accounts and sessions: argon2id password hashes and random session tokens stored only as
//! SHA-256 (the login throttle is in `throttle`). Password hashing is slow on purpose, so it
//! runs on its own threads, never on an async worker.

use std::sync::PoisonError;

use argon2::password_hash::phc::{Output, ParamsString, Salt};
use argon2::{Algorithm, Argon2, Block, Params, PasswordHash, Version};
use rand::RngExt;
use sha2::{Digest, Sha256};

use crate::Error;

/// Shortest accepted new password, in characters (Unicode scalar values): a one-letter
/// password falls to the first guesses. Logins are not checked against it, so an account
/// made before the rule still logs in.
pub const MIN_PASSWORD_CHARS: usize = 8;
/// Longest accepted password, in bytes (argon2 time does not depend on it, memory does).
pub const MAX_PASSWORD_LEN: usize = 1024;

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

/// Checks a new password: at least [`MIN_PASSWORD_CHARS`] characters, at most
/// [`MAX_PASSWORD_LEN`] bytes.
///
/// # Errors
/// [`Error::InvalidArgument`] saying what is allowed.
pub fn check_password(password: &str) -> Result<(), Error> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(Error::invalid(format!(
            "password must have at least {MIN_PASSWORD_CHARS} characters"
        )));
    }
    if password.len() > MAX_PASSWORD_LEN {
        return Err(Error::invalid(format!(
            "password must be at most {MAX_PASSWORD_LEN} bytes"
        )));
    }
    Ok(())
}

/// Threads that run argon2. Each run takes 19 MiB and a core for tens of milliseconds. On
/// the blocking pool a burst of logins ran on many threads at once, and the allocator kept
/// every thread's 19 MiB: a tracker grew by hundreds of MiB after a few dozen logins. A few
/// long-lived threads reuse their memory and queue the rest, which costs no time on a
/// machine with this many cores.
const ARGON2_THREADS: usize = 2;

type Argon2Job = Box<dyn FnOnce() + Send>;

/// Runs one argon2 job on the argon2 threads (started on first use).
async fn with_argon2_slot<T: Send + 'static>(
    job: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Error> {
    static QUEUE: std::sync::OnceLock<std::sync::Mutex<std::sync::mpsc::Sender<Argon2Job>>> =
        std::sync::OnceLock::new();
    let queue = QUEUE.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel::<Argon2Job>();
        let rx = std::sync::Arc::new(std::sync::Mutex::new(rx));
        for i in 0..ARGON2_THREADS {
            let rx = rx.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("argon2-{i}"))
                .spawn(move || {
                    loop {
                        let next = rx.lock().unwrap_or_else(PoisonError::into_inner).recv();
                        match next {
                            Ok(job) => job(),
                            Err(_) => return,
                        }
                    }
                });
            if let Err(e) = spawned {
                tracing::error!(cause = %e, "cannot start a password hashing thread");
            }
        }
        std::sync::Mutex::new(tx)
    });
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let send = queue
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .send(Box::new(move || {
            let _ = done_tx.send(job());
        }));
    send.map_err(|_| Error::Internal("password hashing threads are gone".into()))?;
    done_rx
        .await
        .map_err(|_| Error::Internal("password hashing failed".into()))
}

/// Hashes a password to an argon2id PHC string (default parameters) on the argon2 threads.
///
/// # Errors
/// [`Error::Internal`] if hashing fails.
pub async fn hash_password(password: String) -> Result<String, Error> {
    with_argon2_slot(move || {
        let argon = Argon2::default();
        let mut salt = [0u8; 16];
        rand::rng().fill(&mut salt);
        let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
        let phc = (|| {
            argon2_into(&argon, password.as_bytes(), &salt, &mut out).map_err(|e| e.to_string())?;
            Ok::<_, String>(PasswordHash {
                algorithm: Algorithm::Argon2id.ident(),
                version: Some(Version::V0x13.into()),
                params: ParamsString::try_from(argon.params()).map_err(|e| e.to_string())?,
                salt: Some(Salt::new(&salt).map_err(|e| e.to_string())?),
                hash: Some(Output::new(&out).map_err(|e| e.to_string())?),
            })
        })();
        phc.map(|h| h.to_string())
            .map_err(|e| Error::Internal(format!("hashing a password: {e}")))
    })
    .await?
}

/// Whether `password` matches the PHC string `hash` (on the argon2 threads). A malformed
/// hash never matches.
pub async fn verify_password(password: String, hash: String) -> bool {
    with_argon2_slot(move || {
        let Ok(parsed) = PasswordHash::new(&hash) else {
            return false;
        };
        let (Some(salt), Some(expected)) = (&parsed.salt, &parsed.hash) else {
            return false;
        };
        let Ok(algorithm) = Algorithm::try_from(parsed.algorithm.as_str()) else {
            return false;
        };
        let version = match parsed.version.map(Version::try_from).transpose() {
            Ok(v) => v.unwrap_or_default(),
            Err(_) => return false,
        };
        let Ok(params) = Params::try_from(&parsed) else {
            return false;
        };
        let argon = Argon2::new(algorithm, version, params);
        let mut out = vec![0u8; expected.len()];
        if argon2_into(&argon, password.as_bytes(), salt.as_ref(), &mut out).is_err() {
            return false;
        }
        // `Output`'s equality is constant-time.
        Output::new(&out).is_ok_and(|c| c == *expected)
    })
    .await
    .unwrap_or(false)
}

/// Runs argon2 over this thread's reused working memory (see [`ARGON2_THREADS`]).
fn argon2_into(argon: &Argon2, password: &[u8], salt: &[u8], out: &mut [u8]) -> argon2::Result<()> {
    thread_local! {
        static MEMORY: std::cell::RefCell<Vec<Block>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    MEMORY.with_borrow_mut(|memory| {
        let blocks = argon.params().block_count();
        if memory.len() < blocks {
            memory.resize(blocks, Block::new());
        }
        argon.hash_password_into_with_memory(password, salt, out, &mut memory[..blocks])
    })
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
    // Every authenticated request hashes its token: a table beats `hex`'s char iterator.
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digest = Sha256::digest(token.as_bytes());
    let mut out = Vec::with_capacity(2 * digest.len());
    for b in digest {
        out.push(HEX[usize::from(b >> 4)]);
        out.push(HEX[usize::from(b & 0xf)]);
    }
    String::from_utf8(out).expect("hex digits are ASCII")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn should_verify_its_own_hashes_and_the_library_s() {
        let hash = hash_password("correct horse".into()).await.unwrap();
        assert!(
            hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{hash}"
        );
        assert!(verify_password("correct horse".into(), hash.clone()).await);
        assert!(!verify_password("correct horsf".into(), hash.clone()).await);
        // Databases hold hashes made by the library's own PHC path: they still verify.
        let library = argon2::PasswordHasher::hash_password(&Argon2::default(), b"battery")
            .unwrap()
            .to_string();
        assert!(verify_password("battery".into(), library.clone()).await);
        assert!(!verify_password("staple".into(), library).await);
        assert!(!verify_password("x".into(), "$argon2id$v=19$garbage".into()).await);
        assert!(!verify_password("x".into(), String::new()).await);
    }

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
    fn should_refuse_passwords_shorter_than_eight_characters() {
        for short in ["", "x", "1234567", "ééééééé"] {
            let err = check_password(short).unwrap_err();
            assert!(
                err.to_string()
                    .contains("password must have at least 8 characters"),
                "{short:?}: {err}"
            );
        }
        assert!(check_password("12345678").is_ok());
        // Characters, not bytes: four two-byte letters are still four.
        assert!(check_password("éééé").is_err());
        assert!(check_password("éééééééé").is_ok());
    }

    #[test]
    fn tokens_are_random_and_stored_hashed() {
        let (a, ha) = new_token();
        let (b, _) = new_token();
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
        assert_eq!(ha, token_hash(&a));
        assert_ne!(ha, a);
        // Hashes already in databases were made with `hex::encode`.
        assert_eq!(ha, hex::encode(Sha256::digest(a.as_bytes())));
    }
}
