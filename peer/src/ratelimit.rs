//! One token bucket per process direction: `serve --max-upload-rate` shares one among all
//! uploads, `get --max-download-rate` one among all files. A transfer asks for its bytes
//! before it moves them; the bucket may go into debt by one request (chunks are up to
//! 16 MiB, larger than any sensible burst) and the caller then sleeps until the debt is
//! paid, so the long-run rate is the cap whatever the chunk size.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A shared rate cap in bytes per second.
#[derive(Debug)]
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    tokens: f64,
    last: Instant,
}

impl RateLimiter {
    /// A bucket that refills at `rate` bytes per second and holds at most a quarter second
    /// of traffic (at least 64 KiB), starting full.
    pub fn new(rate: u64) -> Self {
        let rate = rate.max(1) as f64;
        let burst = (rate / 4.0).max(65_536.0);
        Self {
            rate,
            burst,
            state: Mutex::new(State {
                tokens: burst,
                last: Instant::now(),
            }),
        }
    }

    /// Takes `bytes` from the bucket at time `now` and says how long the caller must wait
    /// before sending them.
    pub fn reserve_at(&self, bytes: u64, now: Instant) -> Duration {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let elapsed = now.saturating_duration_since(s.last).as_secs_f64();
        s.last = s.last.max(now);
        s.tokens = (s.tokens + elapsed * self.rate).min(self.burst);
        s.tokens -= bytes as f64;
        if s.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-s.tokens / self.rate)
        }
    }

    /// Waits until `bytes` may be sent.
    pub async fn acquire(&self, bytes: u64) {
        let wait = self.reserve_at(bytes, Instant::now());
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

/// Waits on `limiter` if there is one.
pub async fn acquire(limiter: Option<&RateLimiter>, bytes: u64) {
    if let Some(l) = limiter {
        l.acquire(bytes).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bursts_then_paces_at_the_rate() {
        let l = RateLimiter::new(1_000_000);
        let t0 = Instant::now();
        // The initial burst (250 kB) passes at once.
        assert_eq!(l.reserve_at(250_000, t0), Duration::ZERO);
        // The next megabyte must wait a second.
        let w = l.reserve_at(1_000_000, t0);
        assert!((w.as_secs_f64() - 1.0).abs() < 1e-6, "{w:?}");
        // Queued behind it: another 500 kB waits 1.5 s in total.
        let w = l.reserve_at(500_000, t0);
        assert!((w.as_secs_f64() - 1.5).abs() < 1e-6, "{w:?}");
        // Once the debt is paid, the bucket refills but never beyond its burst.
        let later = t0 + Duration::from_secs(10);
        assert_eq!(l.reserve_at(250_000, later), Duration::ZERO);
        assert!(l.reserve_at(1, later) > Duration::ZERO);
    }

    #[test]
    fn long_run_rate_is_the_cap() {
        let l = RateLimiter::new(10_000_000);
        let t0 = Instant::now();
        let mut last = Duration::ZERO;
        for _ in 0..100 {
            last = l.reserve_at(1 << 20, t0);
        }
        // 100 MiB at 10 MB/s, minus the initial burst.
        let expected = (100.0 * (1 << 20) as f64 - 2_500_000.0) / 10_000_000.0;
        assert!((last.as_secs_f64() - expected).abs() < 1e-3, "{last:?}");
    }

    #[tokio::test]
    async fn acquire_sleeps_for_the_debt() {
        let l = RateLimiter::new(1_000_000);
        let t = Instant::now();
        l.acquire(250_000).await;
        l.acquire(100_000).await;
        let e = t.elapsed();
        assert!(e >= Duration::from_millis(90), "{e:?}");
        assert!(e < Duration::from_secs(2), "{e:?}");
    }
}
