//! Waiting out a tracker outage: a command's idempotent calls are retried with back-off
//! while the tracker answers UNAVAILABLE (its database is down, it is shutting down) or
//! cannot be reached (restarting), for a bounded time, said once on stderr.
//!
//! One [`Patience`] is shared by every clone of a client, so a command that makes many
//! calls waits out one outage once: the clock starts at the first failure and stops at the
//! next answer, and once the bound has passed later calls fail at once instead of each
//! waiting again. Background callers (the node, a download's re-Locates and reports) have
//! no patience: they have their own retry loops and must not block on one call.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::TrackerError;

/// The most a command waits for a tracker nobody answers for: a restart takes seconds,
/// and a wrong or dead URL should not cost the full bound.
pub const UNREACHABLE_WAIT: Duration = Duration::from_secs(10);

/// The first pause between attempts; it doubles up to [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(250);
const MAX_PAUSE: Duration = Duration::from_secs(4);

/// Told the one line to show when a command starts waiting.
pub type Notice = Arc<dyn Fn(&str) + Send + Sync>;

/// How long a command waits for the tracker, and where it says so.
#[derive(Clone)]
pub struct Patience {
    bound: Duration,
    /// The most it waits for a tracker nobody answers for ([`UNREACHABLE_WAIT`]).
    unreachable_cap: Duration,
    notice: Notice,
    /// The current outage (`None` while the tracker answers).
    outage: Arc<Mutex<Option<Outage>>>,
}

/// One outage as a command met it.
struct Outage {
    since: Instant,
    /// Since when no tracker URL answered at all (`None` while one answers UNAVAILABLE).
    unreachable_since: Option<Instant>,
    /// The waiting line was shown.
    told: bool,
}

impl Patience {
    /// Waits up to `bound` for a tracker that answers UNAVAILABLE (at most
    /// [`UNREACHABLE_WAIT`] for one nobody answers for); `notice` gets the waiting line.
    pub fn new(bound: Duration, notice: Notice) -> Self {
        Self {
            bound,
            unreachable_cap: UNREACHABLE_WAIT,
            notice,
            outage: Arc::default(),
        }
    }

    /// The same patience, failing at once when no tracker answers at all (for a caller
    /// with somewhere else to go).
    pub fn none_for_unreachable(mut self) -> Self {
        self.unreachable_cap = Duration::ZERO;
        self
    }

    /// The tracker answered: an outage is over.
    pub(super) fn answered(&self) {
        *self.outage.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// How long to pause before trying again after `e` (the `attempt`-th failure of one
    /// call, from 0), or `None` to fail now: `e` is not about the tracker's availability,
    /// the outage has lasted the bound, or nobody has answered for [`UNREACHABLE_WAIT`].
    pub(super) fn pause(&self, e: &TrackerError, attempt: u32) -> Option<Duration> {
        self.pause_at(e, attempt, Instant::now())
    }

    fn pause_at(&self, e: &TrackerError, attempt: u32, now: Instant) -> Option<Duration> {
        let unreachable = match e {
            TrackerError::Unavailable { .. } => false,
            TrackerError::Unreachable { .. } => true,
            _ => return None,
        };
        let mut outage = self.outage.lock().unwrap_or_else(|p| p.into_inner());
        let o = outage.get_or_insert(Outage {
            since: now,
            unreachable_since: None,
            told: false,
        });
        let mut left = self.bound.checked_sub(now.duration_since(o.since))?;
        let limit = if unreachable {
            let cap = self.bound.min(self.unreachable_cap);
            let since = *o.unreachable_since.get_or_insert(now);
            left = left.min(cap.checked_sub(now.duration_since(since))?);
            cap
        } else {
            o.unreachable_since = None;
            self.bound
        };
        if left.is_zero() {
            return None;
        }
        if !o.told {
            o.told = true;
            (self.notice)(&waiting_line(e, limit));
        }
        let pause = FIRST_PAUSE
            .saturating_mul(1 << attempt.min(5))
            .min(MAX_PAUSE);
        // Spread clients that met the same outage, so they do not come back in step.
        let jitter = rand::random_range(0.75..1.25);
        Some(pause.mul_f64(jitter).min(left))
    }
}

/// "waiting for the tracker: WHY (retrying for up to 1m)".
fn waiting_line(e: &TrackerError, limit: Duration) -> String {
    let why = match e {
        TrackerError::Unavailable { urls, message } => {
            format!("{urls} cannot serve now: {message}")
        }
        TrackerError::Unreachable { urls, .. } => format!("cannot reach it at {urls}"),
        other => other.to_string(),
    };
    format!(
        "waiting for the tracker: {why} (retrying for up to {})",
        humantime::format_duration(limit)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counting(bound: Duration) -> (Patience, Arc<Mutex<Vec<String>>>) {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let l = lines.clone();
        let p = Patience::new(
            bound,
            Arc::new(move |s: &str| l.lock().unwrap().push(s.to_string())),
        );
        (p, lines)
    }

    fn unavailable() -> TrackerError {
        TrackerError::Unavailable {
            urls: "http://t:1".into(),
            message: "the tracker's database is unavailable; try again".into(),
        }
    }

    /// Pauses as a call failing with `e` would, on a simulated clock; returns the time
    /// waited and the attempts made.
    fn wait_out(p: &Patience, e: &TrackerError, start: Instant) -> (Duration, u32) {
        let (mut now, mut attempt) = (start, 0);
        while let Some(d) = p.pause_at(e, attempt, now) {
            assert!(d <= MAX_PAUSE.mul_f64(1.25), "{d:?}");
            now += d;
            attempt += 1;
        }
        (now - start, attempt)
    }

    #[test]
    fn should_wait_out_an_outage_once_and_say_so_once() {
        let (p, lines) = counting(Duration::from_secs(60));
        let start = Instant::now();
        let (waited, attempt) = wait_out(&p, &unavailable(), start);
        assert_eq!(waited, Duration::from_secs(60));
        assert!(attempt > 10, "back-off, not a single long sleep: {attempt}");
        let lines = lines.lock().unwrap().clone();
        assert_eq!(
            lines,
            [
                "waiting for the tracker: http://t:1 cannot serve now: the tracker's database is \
              unavailable; try again (retrying for up to 1m)"
            ]
        );
        // The bound is spent: the next call of the same command fails at once.
        let later = start + Duration::from_secs(61);
        assert_eq!(p.clone().pause_at(&unavailable(), 0, later), None);
        // Once the tracker answers, a new outage is waited out (and said) again.
        p.answered();
        assert!(p.pause(&unavailable(), 0).is_some());
    }

    #[test]
    fn should_wait_less_for_a_tracker_nobody_answers_for() {
        let (p, lines) = counting(Duration::from_secs(60));
        let gone = TrackerError::Unreachable {
            urls: "http://t:1".into(),
            reason: "connection refused".into(),
        };
        let (waited, _) = wait_out(&p, &gone, Instant::now());
        assert_eq!(waited, UNREACHABLE_WAIT);
        assert!(lines.lock().unwrap()[0].ends_with("(retrying for up to 10s)"));
    }

    #[test]
    fn should_wait_through_a_restart_after_a_long_database_outage() {
        let (p, _) = counting(Duration::from_secs(60));
        let start = Instant::now();
        let gone = TrackerError::Unreachable {
            urls: "http://t:1".into(),
            reason: "connection refused".into(),
        };
        assert!(p.pause_at(&unavailable(), 0, start).is_some());
        // 30 s of UNAVAILABLE, then the tracker restarts: nobody answers for a moment.
        let restart = start + Duration::from_secs(30);
        assert!(p.pause_at(&gone, 5, restart).is_some());
        let d = p.pause_at(&gone, 6, restart + Duration::from_secs(9));
        assert!(
            d.is_some_and(|d| d <= Duration::from_secs(1)),
            "{d:?}: 1 s of the 10 left"
        );
        assert_eq!(p.pause_at(&gone, 7, restart + UNREACHABLE_WAIT), None);
    }

    #[test]
    fn should_not_retry_answers_about_the_call() {
        let (p, lines) = counting(Duration::from_secs(60));
        for e in [
            TrackerError::NotLoggedIn,
            TrackerError::NotFound {
                message: "m".into(),
            },
            TrackerError::Protocol("internal error".into()),
            TrackerError::Tls {
                urls: "u".into(),
                reason: "r".into(),
            },
        ] {
            assert_eq!(p.pause(&e, 0), None, "{e}");
        }
        assert!(lines.lock().unwrap().is_empty());
        let (none, _) = counting(Duration::ZERO);
        assert_eq!(
            none.pause(&unavailable(), 0),
            None,
            "a zero bound never waits"
        );
    }

    /// A tracker that answers every call with the gRPC status `codes[i]` for its i-th
    /// call (the last one from then on), with the database outage's message. Returns its
    /// URL and the count of calls.
    async fn scripted(codes: &'static [u8]) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let calls = Arc::new(AtomicUsize::new(0));
        let n = calls.clone();
        let answer = move || {
            let i = n.fetch_add(1, Ordering::SeqCst);
            let code = codes[i.min(codes.len() - 1)];
            axum::http::Response::builder()
                .header("content-type", "application/grpc")
                .header("grpc-status", code.to_string())
                .header("grpc-message", "the%20database%20is%20unavailable")
                .body(axum::body::Body::empty())
                .unwrap()
        };
        let app = axum::Router::new().fallback(move || std::future::ready(answer()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (url, calls)
    }

    fn patient(
        url: &str,
        bound: Duration,
    ) -> (super::super::TrackerClient, Arc<Mutex<Vec<String>>>) {
        let (p, lines) = counting(bound);
        let c = super::super::TrackerClient::new(&[url.to_string()], Some("t".into()))
            .unwrap()
            .with_patience(p);
        (c, lines)
    }

    #[tokio::test]
    async fn should_retry_an_unindex_and_take_not_found_after_a_retry_as_done() {
        use std::sync::atomic::Ordering;
        // UNAVAILABLE twice, then NOT_FOUND: an earlier try may have taken effect.
        let (url, calls) = scripted(&[14, 14, 5]).await;
        let (c, lines) = patient(&url, Duration::from_secs(30));
        let (peer, file) = (
            common::PeerId::from_random([1; 16]),
            common::FileId(common::Sha256Digest::of(b"f")),
        );
        c.unindex(&peer, &file).await.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        assert_eq!(lines.lock().unwrap().len(), 1, "said once");
        // A NOT_FOUND at the first try is an answer.
        let err = c.unindex(&peer, &file).await.unwrap_err();
        assert!(matches!(err, TrackerError::NotFound { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn should_not_retry_background_calls_or_wait_past_the_bound() {
        use std::sync::atomic::Ordering;
        let (url, calls) = scripted(&[14]).await;
        let (c, lines) = patient(&url, Duration::from_millis(600));
        let peer = common::PeerId::from_random([1; 16]);
        // A heartbeat's loop retries on its own.
        let err = c.heartbeat(&peer, "a:1", 0, 0).await.unwrap_err();
        assert!(matches!(err, TrackerError::Unavailable { .. }), "{err:?}");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert!(lines.lock().unwrap().is_empty());
        // A search waits out the bound, says so once, then fails with the tracker's words.
        let err = c.search("", "").await.unwrap_err();
        assert!(
            err.to_string().contains("the database is unavailable"),
            "{err}"
        );
        assert!(calls.load(Ordering::SeqCst) > 2);
        assert_eq!(lines.lock().unwrap().len(), 1);
    }
}
