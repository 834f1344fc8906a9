//! The login throttle: failures slow down the address that sends them, never the account
//! they name, so nobody can lock a user out by guessing wrong on purpose.
//!
//! Failures are counted over [`THROTTLE_WINDOW`] per source address (any user, to slow a
//! guesser that sprays one password over many names) and per (user, address). A guesser
//! spread over many addresses is met by a per-user count: once a user has
//! [`USER_LIMIT`] failures in the window, only addresses with no failure of their own get
//! their password checked, so each address costs the guesser one try per window while the
//! user, from an address that has not been failing, still gets in at once.
//!
//! An attempt counts as a failure from the moment it is admitted (a success takes it back),
//! so a burst of concurrent guesses cannot all pass the check before the first one fails,
//! and a throttled sender never costs an argon2 run.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Failures of one user from one address within the window after which that pair waits.
pub const PAIR_LIMIT: usize = 5;
/// Failures from one address (any users) within the window after which it waits: above
/// [`PAIR_LIMIT`], so a few people behind one NAT mistyping do not stop each other.
pub const ADDRESS_LIMIT: usize = 20;
/// Failures of one user (any addresses) within the window after which only addresses
/// without failures of their own are heard for that user.
pub const USER_LIMIT: usize = 20;
pub const THROTTLE_WINDOW: Duration = Duration::from_secs(60);

/// Longest user name kept as a key; longer ones are refused anyway, but still counted.
const MAX_KEY_CHARS: usize = 80;

/// Where an attempt comes from: the socket's address, an IPv4-mapped IPv6 one as IPv4, and
/// an IPv6 one as its /64, which one host usually holds whole. `None` when unknown.
type Source = Option<IpAddr>;

fn source(ip: Option<IpAddr>) -> Source {
    ip.map(|ip| match ip.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into()),
        v4 => v4,
    })
}

/// The failures of one key, oldest first. Not capped at a limit: a success takes its
/// attempt back, and a cap would have dropped an older failure for it. Each entry is an
/// attempt admitted to an argon2 run, so the two argon2 threads bound how fast they grow.
#[derive(Debug, Default)]
struct Window(VecDeque<Instant>);

impl Window {
    fn expire(&mut self, now: Instant) {
        while self
            .0
            .front()
            .is_some_and(|t| now.duration_since(*t) >= THROTTLE_WINDOW)
        {
            self.0.pop_front();
        }
    }

    fn push(&mut self, at: Instant) {
        self.0.push_back(at);
    }

    /// Takes back the failure recorded `at` (an attempt that turned out right).
    fn take_back(&mut self, at: Instant) {
        if let Some(i) = self.0.iter().rposition(|t| *t == at) {
            self.0.remove(i);
        }
    }

    /// How long until it holds fewer than `limit` failures (`None`: it does now).
    fn full_for(&self, limit: usize, now: Instant) -> Option<Duration> {
        (self.0.len() >= limit).then(|| until_aged(self.0[self.0.len() - limit], now))
    }

    fn is_stale(&self, now: Instant) -> bool {
        self.0
            .back()
            .is_none_or(|t| now.duration_since(*t) >= THROTTLE_WINDOW)
    }
}

fn until_aged(t: Instant, now: Instant) -> Duration {
    THROTTLE_WINDOW.saturating_sub(now.duration_since(t))
}

/// An admitted attempt; hand it back to [`Throttle::succeeded`] when the password was right.
#[derive(Debug)]
pub struct Attempt {
    user: String,
    source: Source,
    at: Instant,
}

/// Failed logins per address, per (user, address) and per user; see the module doc.
#[derive(Debug)]
pub struct Throttle {
    by_source: HashMap<Source, Window>,
    by_pair: HashMap<(String, Source), Window>,
    by_user: HashMap<String, Window>,
    /// Key count above which stale keys are dropped (grows with the live ones, so a flood
    /// does not make every failure scan the maps).
    prune_at: usize,
}

impl Default for Throttle {
    fn default() -> Self {
        Self {
            by_source: HashMap::new(),
            by_pair: HashMap::new(),
            by_user: HashMap::new(),
            prune_at: 10_000,
        }
    }
}

impl Throttle {
    /// Admits an attempt to log in as `user` from `ip`, counting it as a failure until
    /// [`Throttle::succeeded`] takes it back; or says how long the sender must wait.
    ///
    /// # Errors
    /// The wait (whole seconds, at least one) when the sender is throttled.
    pub fn admit(
        &mut self,
        user: &str,
        ip: Option<IpAddr>,
        now: Instant,
    ) -> Result<Attempt, Duration> {
        let user: String = user.chars().take(MAX_KEY_CHARS).collect();
        let source = source(ip);
        if let Some(wait) = self.wait(&user, source, now) {
            return Err(Duration::from_secs(
                wait.as_secs_f64().ceil().max(1.0) as u64
            ));
        }
        self.prune(now);
        self.by_source.entry(source).or_default().push(now);
        self.by_pair
            .entry((user.clone(), source))
            .or_default()
            .push(now);
        self.by_user.entry(user.clone()).or_default().push(now);
        Ok(Attempt {
            user,
            source,
            at: now,
        })
    }

    /// The password was right: the attempt was no failure, and the pair starts afresh. The
    /// address's other failures and the user's count stay, so logging into one's own account
    /// does not buy more guesses at another.
    pub fn succeeded(&mut self, attempt: Attempt) {
        self.by_pair.remove(&(attempt.user.clone(), attempt.source));
        self.forget(attempt);
    }

    /// The attempt ended without a verdict on the password (a database error): it does not
    /// count.
    pub fn forget(&mut self, attempt: Attempt) {
        if let Some(w) = self.by_source.get_mut(&attempt.source) {
            w.take_back(attempt.at);
        }
        if let Some(w) = self
            .by_pair
            .get_mut(&(attempt.user.clone(), attempt.source))
        {
            w.take_back(attempt.at);
        }
        if let Some(w) = self.by_user.get_mut(&attempt.user) {
            w.take_back(attempt.at);
        }
    }

    fn wait(&mut self, user: &str, source: Source, now: Instant) -> Option<Duration> {
        let mut wait = None;
        let mut own_failures = false;
        if let Some(w) = self.by_source.get_mut(&source) {
            w.expire(now);
            own_failures = !w.0.is_empty();
            wait = wait.max(w.full_for(ADDRESS_LIMIT, now));
        }
        if let Some(w) = self.by_pair.get_mut(&(user.to_string(), source)) {
            w.expire(now);
            wait = wait.max(w.full_for(PAIR_LIMIT, now));
        }
        if let Some(w) = self.by_user.get_mut(user) {
            w.expire(now);
            if let Some(user_wait) = w.full_for(USER_LIMIT, now)
                && own_failures
            {
                // Heard again once its own failures age out, or the user's count drops.
                let clean = self.by_source[&source]
                    .0
                    .back()
                    .map(|t| until_aged(*t, now));
                wait = wait.max(clean.map(|c| c.min(user_wait)));
            }
        }
        wait
    }

    fn prune(&mut self, now: Instant) {
        let keys = self.by_source.len() + self.by_pair.len() + self.by_user.len();
        if keys < self.prune_at {
            return;
        }
        self.by_source.retain(|_, w| !w.is_stale(now));
        self.by_pair.retain(|_, w| !w.is_stale(now));
        self.by_user.retain(|_, w| !w.is_stale(now));
        let live = self.by_source.len() + self.by_pair.len() + self.by_user.len();
        self.prune_at = self.prune_at.max(2 * live);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    fn fail(t: &mut Throttle, user: &str, from: Option<IpAddr>, at: Instant) {
        t.admit(user, from, at).expect("admitted");
    }

    #[test]
    fn should_throttle_the_pair_after_five_failures_and_not_the_user_elsewhere() {
        let mut t = Throttle::default();
        let t0 = Instant::now();
        let (eve, alice) = (ip("127.0.0.2"), ip("127.0.0.1"));
        for i in 0..5 {
            fail(&mut t, "alice", eve, t0 + Duration::from_secs(i));
        }
        let at = t0 + Duration::from_secs(10);
        assert_eq!(
            t.admit("alice", eve, at).unwrap_err(),
            Duration::from_secs(50)
        );
        let ok = t.admit("alice", alice, at).expect("alice's own address");
        t.succeeded(ok);
        // The same address for another user is not throttled yet (below the address limit).
        assert!(t.admit("bob", eve, at).is_ok());
        // Once the oldest failure ages out, the pair may try again.
        assert!(t.admit("alice", eve, t0 + Duration::from_secs(60)).is_ok());
    }

    #[test]
    fn should_throttle_an_address_spraying_many_users() {
        let mut t = Throttle::default();
        let t0 = Instant::now();
        let eve = ip("10.0.0.9");
        for i in 0..ADDRESS_LIMIT {
            fail(&mut t, &format!("user{i}"), eve, t0);
        }
        assert!(t.admit("someone", eve, t0).is_err());
        assert!(t.admit("someone", ip("10.0.0.8"), t0).is_ok());
    }

    #[test]
    fn should_hear_only_clean_addresses_for_a_user_under_a_spread_attack() {
        let mut t = Throttle::default();
        let t0 = Instant::now();
        for i in 0..USER_LIMIT {
            fail(&mut t, "alice", ip(&format!("10.0.1.{i}")), t0);
        }
        let at = t0 + Duration::from_secs(1);
        // Every guessing address has failed once: it waits until that failure ages out.
        assert_eq!(
            t.admit("alice", ip("10.0.1.3"), at).unwrap_err(),
            Duration::from_secs(59)
        );
        // An address that failed for someone else is not clean either.
        fail(&mut t, "bob", ip("10.0.2.1"), at);
        assert!(t.admit("alice", ip("10.0.2.1"), at).is_err());
        // A clean address is heard, and a right password takes the attempt back.
        let ok = t.admit("alice", ip("192.168.1.5"), at).unwrap();
        t.succeeded(ok);
        assert!(t.admit("alice", ip("192.168.1.5"), at).is_ok());
        // Below the user limit again, the pair and address limits alone apply.
        assert!(
            t.admit("alice", ip("10.0.1.3"), t0 + THROTTLE_WINDOW)
                .is_ok()
        );
    }

    #[test]
    fn should_count_admitted_attempts_before_they_fail() {
        let mut t = Throttle::default();
        let now = Instant::now();
        let eve = ip("127.0.0.2");
        let in_flight: Vec<_> = (0..PAIR_LIMIT)
            .map(|_| t.admit("alice", eve, now).unwrap())
            .collect();
        assert!(t.admit("alice", eve, now).is_err(), "no sixth in flight");
        drop(in_flight);
    }

    #[test]
    fn should_key_ipv6_by_its_64_and_mapped_ipv4_as_ipv4() {
        let mut t = Throttle::default();
        let now = Instant::now();
        for i in 0..PAIR_LIMIT {
            fail(&mut t, "alice", ip(&format!("2001:db8::{i:x}")), now);
        }
        assert!(t.admit("alice", ip("2001:db8::ffff:1"), now).is_err());
        assert!(t.admit("alice", ip("2001:db8:0:1::1"), now).is_ok());
        for _ in 0..PAIR_LIMIT {
            fail(&mut t, "bob", ip("::ffff:127.0.0.2"), now);
        }
        assert!(t.admit("bob", ip("127.0.0.2"), now).is_err());
    }

    #[test]
    fn should_forget_stale_keys_when_the_maps_grow() {
        let mut t = Throttle {
            prune_at: 30,
            ..Throttle::default()
        };
        let t0 = Instant::now();
        for i in 0..10 {
            fail(&mut t, &format!("u{i}"), ip(&format!("10.0.3.{i}")), t0);
        }
        fail(&mut t, "late", ip("10.0.4.1"), t0 + THROTTLE_WINDOW);
        assert_eq!(t.by_user.len(), 1, "{:?}", t.by_user.keys());
        assert_eq!(t.by_source.len(), 1);
        assert_eq!(t.by_pair.len(), 1);
    }
}
