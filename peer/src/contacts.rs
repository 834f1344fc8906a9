//! The peers this home knows how to reach without a tracker: its contacts.
//!
//! Two files, so the CLI and the node never overwrite each other's writes:
//! `HOME/contacts.json` holds the addresses the user added (`peer contacts add`, and
//! `serve --bootstrap`), kept until removed; `HOME/contacts_learned.json` holds what the
//! node learnt (from the tracker's peer list and from other peers), at most
//! [`MAX_LEARNED`], the oldest forgotten first. Both survive restarts; a flooded search
//! goes to their union.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::home::{Home, HomeError, write_json};

/// Most learnt contacts kept.
pub const MAX_LEARNED: usize = 256;
/// How stale a learnt contact's "seen" time may get before seeing it again is written down.
const REFRESH_MS: i64 = 60_000;
/// Most contacts a user may add by hand.
pub const MAX_ADDED: usize = 1024;
/// Longest address accepted (`https://` + a long host name + port).
const MAX_ADDR: usize = 300;

/// One contact: where its node listens (`HOST:PORT`, or `https://HOST:PORT`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contact {
    pub addr: String,
    /// Unix ms when it was added or last learnt.
    pub seen_ms: i64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct ContactsFile {
    contacts: Vec<Contact>,
}

/// Why an address cannot be a contact.
#[derive(Debug, thiserror::Error)]
pub enum ContactError {
    #[error("not a node address (HOST:PORT or https://HOST:PORT): {0:?}")]
    BadAddr(String),
    #[error("at most {MAX_ADDED} contacts may be added by hand")]
    TooMany,
    #[error(transparent)]
    Home(#[from] HomeError),
}

/// Checks that `addr` looks like a node address, and returns it trimmed.
///
/// # Errors
/// [`ContactError::BadAddr`] otherwise.
pub fn parse_addr(addr: &str) -> Result<String, ContactError> {
    let a = addr.trim();
    let bad = || ContactError::BadAddr(crate::output::safe(addr));
    let rest = a.strip_prefix("https://").unwrap_or(a);
    let (host, port) = rest.rsplit_once(':').ok_or_else(bad)?;
    let ok = a.len() <= MAX_ADDR
        && !host.is_empty()
        && port.parse::<u16>().is_ok_and(|p| p > 0)
        && !rest.contains('/')
        && rest.chars().all(|c| c.is_ascii_graphic());
    if ok { Ok(a.to_string()) } else { Err(bad()) }
}

/// The contacts of one home.
#[derive(Debug, Clone)]
pub struct Contacts {
    home: Home,
}

impl Contacts {
    pub fn new(home: &Home) -> Self {
        Self { home: home.clone() }
    }

    fn added_path(&self) -> PathBuf {
        self.home.dir().join("contacts.json")
    }

    fn learned_path(&self) -> PathBuf {
        self.home.dir().join("contacts_learned.json")
    }

    fn read(path: &std::path::Path) -> Vec<Contact> {
        match std::fs::read(path) {
            Ok(b) => serde_json::from_slice::<ContactsFile>(&b)
                .map(|f| f.contacts)
                .unwrap_or_else(|e| {
                    tracing::warn!("ignoring {}: {e}", path.display());
                    Vec::new()
                }),
            Err(_) => Vec::new(),
        }
    }

    /// The contacts the user added.
    pub fn added(&self) -> Vec<Contact> {
        Self::read(&self.added_path())
    }

    /// The contacts the node learnt.
    pub fn learned(&self) -> Vec<Contact> {
        Self::read(&self.learned_path())
    }

    /// Every contact address, added ones first, each once.
    pub fn all(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for c in self.added().into_iter().chain(self.learned()) {
            if !out.contains(&c.addr) {
                out.push(c.addr);
            }
        }
        out
    }

    /// Adds `addr` by hand; whether it is new.
    ///
    /// # Errors
    /// A bad address, too many contacts, or a home that cannot be written.
    pub fn add(&self, addr: &str) -> Result<bool, ContactError> {
        let addr = parse_addr(addr)?;
        let mut list = self.added();
        if list.iter().any(|c| c.addr == addr) {
            return Ok(false);
        }
        if list.len() >= MAX_ADDED {
            return Err(ContactError::TooMany);
        }
        list.push(Contact {
            addr,
            seen_ms: crate::now_ms(),
        });
        write_json(&self.added_path(), &ContactsFile { contacts: list }, 0o600)?;
        Ok(true)
    }

    /// Removes `addr` from both lists; whether it was there.
    ///
    /// # Errors
    /// When the home cannot be written.
    pub fn remove(&self, addr: &str) -> Result<bool, ContactError> {
        let addr = addr.trim();
        let mut found = false;
        for path in [self.added_path(), self.learned_path()] {
            let mut list = Self::read(&path);
            let before = list.len();
            list.retain(|c| c.addr != addr);
            if list.len() != before {
                found = true;
                write_json(&path, &ContactsFile { contacts: list }, 0o600)?;
            }
        }
        Ok(found)
    }

    /// Learns `addrs` (the node's side), skipping `own` and bad addresses; keeps the
    /// [`MAX_LEARNED`] most recent. Returns how many were new.
    ///
    /// # Errors
    /// When the home cannot be written.
    pub fn learn<'a>(
        &self,
        addrs: impl IntoIterator<Item = &'a str>,
        own: &str,
    ) -> Result<usize, ContactError> {
        let now = crate::now_ms();
        let mut list = self.learned();
        let mut new = 0;
        // Whether the file must be written: something new, or a contact seen again after a
        // while (not on every exchange: a busy node would rewrite it many times a second).
        let mut changed = false;
        for a in addrs {
            let Ok(a) = parse_addr(a) else { continue };
            if a == own {
                continue;
            }
            match list.iter_mut().find(|c| c.addr == a) {
                Some(c) => {
                    if now - c.seen_ms >= REFRESH_MS {
                        c.seen_ms = now;
                        changed = true;
                    }
                }
                // In front, so among contacts seen in the same millisecond the new stay.
                None => {
                    list.insert(
                        0,
                        Contact {
                            addr: a,
                            seen_ms: now,
                        },
                    );
                    new += 1;
                    changed = true;
                }
            }
        }
        if !changed {
            return Ok(0);
        }
        list.sort_by_key(|c| std::cmp::Reverse(c.seen_ms));
        list.truncate(MAX_LEARNED);
        write_json(
            &self.learned_path(),
            &ContactsFile { contacts: list },
            0o600,
        )?;
        Ok(new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn should_take_node_addresses_only() {
        for good in ["127.0.0.1:7000", "https://node.example:443", "[::1]:9"] {
            assert!(parse_addr(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "host",
            "host:0",
            "host:x",
            "http://a:1/x",
            "a b:1",
            ":1",
        ] {
            assert!(parse_addr(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn should_keep_added_and_learnt_contacts_apart_and_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::open(Some(dir.path().to_path_buf())).unwrap();
        let c = Contacts::new(&home);
        assert!(c.add("127.0.0.1:1").unwrap());
        assert!(!c.add(" 127.0.0.1:1 ").unwrap());
        let many: Vec<String> = (0..MAX_LEARNED + 10)
            .map(|i| format!("10.0.0.1:{}", i + 2))
            .collect();
        let n = c
            .learn(
                many.iter().map(String::as_str).chain(["me:5", "bad"]),
                "me:5",
            )
            .unwrap();
        assert_eq!(n, MAX_LEARNED + 10);
        assert_eq!(c.learned().len(), MAX_LEARNED);
        c.learn(["127.0.0.1:1"], "me:5").unwrap();
        let all = c.all();
        assert_eq!(all[0], "127.0.0.1:1");
        assert_eq!(all.len(), MAX_LEARNED, "added and learnt: listed once");
        assert!(!all.iter().any(|a| a == "me:5"));
        assert!(c.remove("127.0.0.1:1").unwrap());
        assert!(!c.remove("127.0.0.1:1").unwrap());
        assert!(c.added().is_empty());
    }

    #[test]
    fn should_not_rewrite_learnt_contacts_for_a_contact_seen_again_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::open(Some(dir.path().to_path_buf())).unwrap();
        let c = Contacts::new(&home);
        assert_eq!(c.learn(["10.0.0.1:2"], "me:5").unwrap(), 1);
        let before = std::fs::read(c.learned_path()).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(5));
        assert_eq!(c.learn(["10.0.0.1:2"], "me:5").unwrap(), 0);
        assert_eq!(std::fs::read(c.learned_path()).unwrap(), before);
        assert_eq!(c.learn(["10.0.0.1:3"], "me:5").unwrap(), 1);
        assert_eq!(c.learned().len(), 2);
    }
}
