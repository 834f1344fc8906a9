//! How many requests to keep in flight to one source. Too few and a long, fat link idles
//! between answers (with 4 × 1 MiB outstanding, a 1 Gbit/s link at 100 ms round trip runs
//! at a third of its rate); too many and a slow source holds chunks others could send.
//!
//! [`Depth`] aims at twice the source's bandwidth-delay product, the way delay-based
//! congestion control sizes its window: the product is the measured delivery rate times
//! the fastest request seen (one round trip plus one chunk's transfer, with no queue in
//! front of it). While the link is not full, requests come back at that fastest latency and
//! the target doubles each round trip, like slow start; once the source's link is full,
//! the rate stops growing, requests queue, and the target settles at twice the product.
//! Pure: the caller passes the clock.

use std::time::Duration;

use tokio::time::Instant;

/// Deliveries are counted for about one fastest request (a round trip) before the rate is
/// taken, so the target can double every round trip while the link is not full; within
/// these bounds, so a tiny round trip does not make the rate noise.
const WINDOW_MIN: Duration = Duration::from_millis(20);
const WINDOW_MAX: Duration = Duration::from_millis(250);

/// The in-flight target of one source.
#[derive(Debug)]
pub struct Depth {
    min: usize,
    max: usize,
    chunk: u64,
    /// The fastest request seen: one round trip plus one chunk's transfer.
    fastest: Option<Duration>,
    window_start: Instant,
    window_bytes: u64,
    /// The last measured want (twice the product, in chunks), before the bounds.
    want: Option<usize>,
    target: usize,
}

impl Depth {
    /// A source of chunks of about `chunk` bytes, kept between `min` and `max` requests deep.
    pub fn new(min: usize, max: usize, chunk: u64, now: Instant) -> Self {
        let max = max.max(min);
        Self {
            min,
            max,
            chunk: chunk.max(1),
            fastest: None,
            window_start: now,
            window_bytes: 0,
            want: None,
            target: min,
        }
    }

    /// Moves the floor (the source is alone, or one of several), at once.
    pub fn set_min(&mut self, min: usize) {
        if min != self.min {
            self.min = min;
            self.max = self.max.max(min);
            let want = self.want.unwrap_or(min);
            self.target = want.clamp(self.min, self.max);
        }
    }

    /// How many requests to keep in flight now.
    pub fn target(&self) -> usize {
        self.target
    }

    /// A chunk of `bytes` arrived `latency` after its request was sent.
    pub fn delivered(&mut self, bytes: u64, latency: Duration, now: Instant) {
        self.fastest = Some(self.fastest.map_or(latency, |f| f.min(latency)));
        self.window_bytes += bytes;
        let elapsed = now.duration_since(self.window_start);
        let window = self
            .fastest
            .unwrap_or(WINDOW_MAX)
            .clamp(WINDOW_MIN, WINDOW_MAX);
        if elapsed < window {
            return;
        }
        let rate = self.window_bytes as f64 / elapsed.as_secs_f64();
        let fastest = self.fastest.unwrap_or(latency).as_secs_f64();
        let want = (2.0 * rate * fastest / self.chunk as f64).ceil() as usize;
        self.want = Some(want);
        self.target = want.clamp(self.min, self.max);
        self.window_start = now;
        self.window_bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    /// Simulates a source behind a link of `rate` bytes/s and round trip `rtt`, with as
    /// many 1 MiB requests outstanding as the controller says; returns its target after
    /// `for_`. With `n` outstanding, the link delivers `min(rate, n·C / L0)` where `L0` is
    /// a lone request's latency, and requests queue once it is full.
    fn settle(rate: f64, rtt: Duration, for_: Duration) -> usize {
        let c = MIB as f64;
        let start = Instant::now();
        let mut d = Depth::new(4, 64, MIB, start);
        let mut now = start;
        let lone = rtt.as_secs_f64() + c / rate;
        let mut first = true;
        while now.duration_since(start) < for_ {
            let n = d.target() as f64;
            let throughput = rate.min(n * c / lone);
            // The first request of a burst comes back at the lone latency; later ones wait
            // behind those sent before them once the link is full.
            let latency = if first { lone } else { lone.max(n * c / rate) };
            first = false;
            now += Duration::from_secs_f64(c / throughput);
            d.delivered(MIB, Duration::from_secs_f64(latency), now);
        }
        d.target()
    }

    #[test]
    fn should_stay_at_the_minimum_on_a_short_round_trip() {
        // Loopback-like: 1 GB/s, 0.2 ms.
        assert_eq!(
            settle(1e9, Duration::from_micros(200), Duration::from_secs(5)),
            4
        );
    }

    #[test]
    fn should_grow_to_about_twice_the_bandwidth_delay_product() {
        // 1 Gbit/s at 100 ms: the product is 12.5 MB, 12 chunks; twice is about 24.
        let t = settle(125e6, Duration::from_millis(100), Duration::from_secs(10));
        assert!((20..=30).contains(&t), "target {t}");
        // At 50 ms about half of it.
        let t = settle(125e6, Duration::from_millis(50), Duration::from_secs(10));
        assert!((10..=16).contains(&t), "target {t}");
    }

    #[test]
    fn should_reach_the_link_rate_within_a_few_round_trips() {
        // 1 Gbit/s at 100 ms: after 350 ms (three round trips) the depth covers the
        // product (12 chunks); a fixed 250 ms measuring window would still be at 8.
        let t = settle(
            125e6,
            Duration::from_millis(100),
            Duration::from_millis(350),
        );
        assert!(t >= 13, "target {t} after 350 ms");
    }

    #[test]
    fn the_floor_moves_at_once() {
        let start = Instant::now();
        let mut d = Depth::new(4, 64, MIB, start);
        d.set_min(2);
        assert_eq!(d.target(), 2);
        // A measured want above the floor stays.
        d.delivered(
            3 * MIB,
            Duration::from_millis(300),
            start + Duration::from_millis(300),
        );
        let t = d.target();
        assert!(t > 2, "target {t}");
        d.set_min(4);
        assert_eq!(d.target(), t.max(4));
    }

    #[test]
    fn should_respect_the_bounds() {
        let t = settle(1.25e9, Duration::from_millis(200), Duration::from_secs(10));
        assert_eq!(t, 64);
        let now = Instant::now();
        let d = Depth::new(4, 2, MIB, now);
        assert_eq!(d.target(), 4, "max is at least min");
    }
}
