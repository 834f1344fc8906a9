//! Progress bars for `get`. The downloader only bumps atomics in a [`FileProgress`]; a
//! separate task renders them with indicatif a few times a second, so the hot path never
//! touches the terminal. Bars are drawn only on a terminal, and never with `--json` or
//! `--quiet`.
//!
//! The bar and the text beside it are ours ([`line`]), not indicatif's bar, byte, rate and
//! ETA keys: a bar shows no byte counts before the file's size is known, its rate and ETA
//! count only the bytes fetched in this run (a resumed part file's are not speed), it
//! prints in the units of every other line `peer` prints (`common::units`, binary), and a
//! frame changes in one step (indicatif draws on the first change of a tick, so a frame
//! built from several would show the others a tick late).

use crate::lock;
use std::collections::VecDeque;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::units::{format_rate, format_size};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio_util::sync::CancellationToken;

/// Where one download is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Asking the tracker for the chunk map: the size is not known yet.
    Locating = 0,
    /// The size is known; checking what an earlier run left on disk.
    Checking = 1,
    Fetching = 2,
    Done = 3,
    Failed = 4,
}

impl Phase {
    fn from_u8(v: u8) -> Self {
        match v {
            1 => Self::Checking,
            2 => Self::Fetching,
            3 => Self::Done,
            4 => Self::Failed,
            _ => Self::Locating,
        }
    }
}

/// Live counters of one download.
#[derive(Debug, Default)]
pub struct FileProgress {
    name: Mutex<String>,
    part: Mutex<Option<PathBuf>>,
    total: AtomicU64,
    /// Verified bytes, resumed ones included.
    done: AtomicU64,
    /// Of those, the bytes found verified on disk at start.
    resumed: AtomicU64,
    sources: AtomicU32,
    phase: AtomicU8,
    /// A folder's total, which counts this file's bytes too.
    parent: Option<Arc<FileProgress>>,
}

/// One look at a [`FileProgress`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    pub name: String,
    /// The part file, once the download has one.
    pub part: Option<PathBuf>,
    pub total: u64,
    pub done: u64,
    pub resumed: u64,
    /// Sources at work while fetching; distinct suppliers once done.
    pub sources: u32,
    pub phase: Phase,
}

impl Snapshot {
    /// Bytes fetched in this run.
    pub fn fetched(&self) -> u64 {
        self.done.saturating_sub(self.resumed)
    }

    /// Whole percent done, 100 only when every byte is.
    pub fn percent(&self) -> u64 {
        match self.total {
            0 => 0,
            t if self.done >= t => 100,
            t => (self.done * 100 / t).min(99),
        }
    }
}

impl FileProgress {
    /// Counters labelled `label` until the manifest gives the real name.
    pub fn new(label: &str) -> Arc<Self> {
        let p = Self::default();
        *lock(&p.name) = label.to_string();
        Arc::new(p)
    }

    /// Counters of one file of a folder, whose bytes also count in `parent`, the folder's.
    pub fn child(label: &str, parent: &Arc<FileProgress>) -> Arc<Self> {
        let p = Self {
            parent: Some(parent.clone()),
            ..Self::default()
        };
        *lock(&p.name) = label.to_string();
        Arc::new(p)
    }

    /// This download turned out to be a folder: from now on it counts the bytes of all its
    /// files (`total`), which its children add; the listing's own bytes are not counted.
    pub fn become_folder(&self, name: &str, total: u64, root: PathBuf) {
        *lock(&self.name) = format!("{name}/");
        *lock(&self.part) = Some(root);
        self.total.store(total, Ordering::Relaxed);
        self.done.store(0, Ordering::Relaxed);
        self.resumed.store(0, Ordering::Relaxed);
        self.set_phase(Phase::Fetching);
    }

    /// The chunk map is in: the file's name, size and part file are known.
    pub fn start(&self, name: &str, total: u64, part: PathBuf) {
        *lock(&self.name) = name.to_string();
        *lock(&self.part) = Some(part);
        self.total.store(total, Ordering::Relaxed);
        self.set_phase(Phase::Checking);
    }

    /// Bytes an earlier run left verified on disk.
    pub fn add_resumed(&self, bytes: u64) {
        self.resumed.fetch_add(bytes, Ordering::Relaxed);
        self.done.fetch_add(bytes, Ordering::Relaxed);
        if let Some(p) = &self.parent {
            p.add_resumed(bytes);
        }
    }

    /// Chunks are being fetched from now on.
    pub fn fetching(&self) {
        self.set_phase(Phase::Fetching);
    }

    pub fn add_done(&self, bytes: u64) {
        self.done.fetch_add(bytes, Ordering::Relaxed);
        if let Some(p) = &self.parent {
            p.add_done(bytes);
        }
    }

    pub fn set_sources(&self, n: usize) {
        self.sources
            .store(u32::try_from(n).unwrap_or(u32::MAX), Ordering::Relaxed);
    }

    pub fn finish(&self, ok: bool) {
        self.set_phase(if ok { Phase::Done } else { Phase::Failed });
    }

    fn set_phase(&self, p: Phase) {
        self.phase.store(p as u8, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            name: lock(&self.name).clone(),
            part: lock(&self.part).clone(),
            total: self.total.load(Ordering::Relaxed),
            done: self.done.load(Ordering::Relaxed),
            resumed: self.resumed.load(Ordering::Relaxed),
            sources: self.sources.load(Ordering::Relaxed),
            phase: Phase::from_u8(self.phase.load(Ordering::Relaxed)),
        }
    }
}

/// How far back the rate looks: long enough to smooth chunk-sized steps, short enough to
/// follow a change of speed.
const RATE_WINDOW: Duration = Duration::from_secs(3);
/// No rate is shown before this much time has been watched.
const RATE_MIN_SPAN: Duration = Duration::from_millis(500);

/// Bytes per second over the last [`RATE_WINDOW`], from samples of the bytes fetched.
#[derive(Debug, Default)]
struct Meter {
    samples: VecDeque<(Instant, u64)>,
}

impl Meter {
    /// Records `fetched` at `now`; the rate, once [`RATE_MIN_SPAN`] has been watched.
    fn sample(&mut self, now: Instant, fetched: u64) -> Option<f64> {
        self.samples.push_back((now, fetched));
        // Keep one sample at or before the window's start.
        while self.samples.len() > 2
            && now.saturating_duration_since(self.samples[1].0) >= RATE_WINDOW
        {
            self.samples.pop_front();
        }
        let &(t0, b0) = self.samples.front()?;
        let span = now.saturating_duration_since(t0);
        (span >= RATE_MIN_SPAN).then(|| fetched.saturating_sub(b0) as f64 / span.as_secs_f64())
    }
}

/// Width of the bar between its brackets.
const BAR: usize = 30;

/// `=====>      `: `done` of `total` in [`BAR`] columns.
fn bar(done: u64, total: u64) -> String {
    let full = match total {
        0 => BAR,
        t => (u128::from(done.min(t)) * BAR as u128 / u128::from(t)) as usize,
    };
    if full >= BAR {
        "=".repeat(BAR)
    } else {
        format!("{}>{}", "=".repeat(full), " ".repeat(BAR - full - 1))
    }
}

/// What follows the file's name: the bar once the size is known, then [`status`].
pub fn line(s: &Snapshot, rate: Option<f64>) -> String {
    match s.phase {
        Phase::Locating => status(s, rate),
        _ => format!("[{}] {}", bar(s.done, s.total), status(s, rate)),
    }
}

/// `42s`, `3m 05s`, `2h 07m`.
fn format_eta(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {:02}s", s / 60, s % 60),
        _ => format!("{}h {:02}m", s / 3600, s % 3600 / 60),
    }
}

fn sources(n: u32) -> String {
    format!("{n} source{}", if n == 1 { "" } else { "s" })
}

/// The text beside a bar: what is known so far, nothing made up before it is.
pub fn status(s: &Snapshot, rate: Option<f64>) -> String {
    let of = format!("{}/{}", format_size(s.done), format_size(s.total));
    match s.phase {
        Phase::Locating => "locating…".to_string(),
        Phase::Checking => format!("{of} · checking what is on disk"),
        Phase::Fetching => {
            let mut out = of;
            if let Some(r) = rate {
                out.push_str("  ");
                out.push_str(&format_rate(r));
                let left = s.total.saturating_sub(s.done);
                if r >= 1.0 && left > 0 {
                    // Rounded up: "0s" while bytes are still missing would be wrong.
                    let eta = Duration::from_secs_f64((left as f64 / r).ceil().min(1e7));
                    out.push_str(&format!("  ETA {}", format_eta(eta)));
                }
            }
            match s.sources {
                0 => out.push_str(" · waiting for a source"),
                n => out.push_str(&format!(" · {}", sources(n))),
            }
            out
        }
        Phase::Done if s.sources == 0 => format!("{} · already complete", format_size(s.total)),
        Phase::Done => format!(
            "{} · done from {}",
            format_size(s.total),
            sources(s.sources)
        ),
        Phase::Failed => format!("{of} · failed"),
    }
}

/// Whether bars should be drawn: stderr is a terminal, and neither `--json` nor `--quiet`.
pub fn bars_wanted(json: bool, quiet: bool) -> bool {
    !json && !quiet && std::io::stderr().is_terminal()
}

/// The renderer task; dropping it without [`Bars::stop`] leaves the last frame.
pub struct Bars {
    stop: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
    /// Bars to add at the next frame: the files of a folder, shown while they are active.
    added: Arc<Mutex<Vec<Arc<FileProgress>>>>,
}

/// One file's bar and what its renderer remembers.
struct Drawn {
    bar: ProgressBar,
    meter: Meter,
    prefix: String,
    /// A folder's file: its bar goes away when it ends, and the folder's total stays.
    transient: bool,
}

impl Bars {
    /// Starts drawing one bar per file (nothing when `visible` is false).
    pub fn spawn(files: Vec<Arc<FileProgress>>, visible: bool) -> Self {
        let stop = CancellationToken::new();
        let added = Arc::new(Mutex::new(Vec::new()));
        if !visible {
            return Self {
                stop,
                task: None,
                added,
            };
        }
        let mp = MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(8));
        let style = ProgressStyle::with_template("{prefix:.bold} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar());
        // Complete from the first frame: the term asked for, and what is happening.
        let mut drawn: Vec<Drawn> = files
            .iter()
            .map(|f| {
                let s = f.snapshot();
                let prefix = common::names::printable(&s.name, 32);
                let bar = ProgressBar::new(0)
                    .with_style(style.clone())
                    .with_prefix(prefix.clone())
                    .with_message(line(&s, None));
                Drawn {
                    bar: mp.add(bar),
                    meter: Meter::default(),
                    prefix,
                    transient: false,
                }
            })
            .collect();
        let mut files = files;
        let token = stop.clone();
        let incoming = added.clone();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(150));
            loop {
                let stopping = tokio::select! {
                    _ = tick.tick() => false,
                    _ = token.cancelled() => true,
                };
                for f in std::mem::take(&mut *lock(&incoming)) {
                    let prefix = common::names::printable(&f.snapshot().name, 32);
                    let bar = ProgressBar::new(0)
                        .with_style(style.clone())
                        .with_prefix(prefix.clone());
                    drawn.push(Drawn {
                        bar: mp.add(bar),
                        meter: Meter::default(),
                        prefix,
                        transient: true,
                    });
                    files.push(f);
                }
                let now = Instant::now();
                for (f, d) in files.iter().zip(&mut drawn) {
                    if d.bar.is_finished() {
                        continue;
                    }
                    let s = f.snapshot();
                    let rate = d.meter.sample(now, s.fetched());
                    // The message first: a frame drawn between the two changes shows the
                    // new numbers beside the term the user typed, which is still true.
                    d.bar.set_message(line(&s, rate));
                    let prefix = common::names::printable(&s.name, 32);
                    if prefix != d.prefix {
                        d.bar.set_prefix(prefix.clone());
                        d.prefix = prefix;
                    }
                    match s.phase {
                        Phase::Done | Phase::Failed if d.transient => d.bar.finish_and_clear(),
                        Phase::Done => d.bar.finish(),
                        Phase::Failed => d.bar.abandon(),
                        _ => {}
                    }
                }
                if stopping {
                    for d in &drawn {
                        if d.transient {
                            d.bar.finish_and_clear();
                        } else if !d.bar.is_finished() {
                            d.bar.abandon();
                        }
                    }
                    break;
                }
            }
        });
        Self {
            stop,
            task: Some(task),
            added,
        }
    }

    /// Shows `file` from the next frame until it ends (a folder's file under way).
    pub fn add(&self, file: Arc<FileProgress>) {
        if self.task.is_some() {
            lock(&self.added).push(file);
        }
    }

    /// Draws the last frame and stops.
    pub async fn stop(mut self) {
        self.stop.cancel();
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn snap(phase: Phase, total: u64, done: u64, resumed: u64, sources: u32) -> Snapshot {
        Snapshot {
            name: "x.bin".into(),
            part: None,
            total,
            done,
            resumed,
            sources,
            phase,
        }
    }

    #[test]
    fn the_first_frame_claims_no_sizes_before_the_chunk_map() {
        let p = FileProgress::new("x.bin");
        let s = p.snapshot();
        assert_eq!(s.phase, Phase::Locating);
        assert_eq!(status(&s, None), "locating…");
        assert_eq!(
            status(&snap(Phase::Checking, 10 * MIB, 0, 0, 0), None),
            "0 B/10 MiB · checking what is on disk"
        );
    }

    #[test]
    fn fetching_shows_bytes_rate_eta_and_sources_in_one_unit_system() {
        let s = snap(Phase::Fetching, 10 * MIB, 4 * MIB, 0, 2);
        assert_eq!(
            status(&s, Some(2.0 * MIB as f64)),
            "4.0 MiB/10 MiB  2.0 MiB/s  ETA 3s · 2 sources"
        );
        // Before a rate is known: no made-up 0 B/s and no ETA.
        assert_eq!(status(&s, None), "4.0 MiB/10 MiB · 2 sources");
        let slow = snap(Phase::Fetching, 10 * MIB, 0, 0, 1);
        assert_eq!(
            status(&slow, Some(1024.0)),
            "0 B/10 MiB  1.0 KiB/s  ETA 2h 50m · 1 source"
        );
    }

    #[test]
    fn no_source_at_work_reads_as_waiting_not_as_zero_sources() {
        let s = snap(Phase::Fetching, 10 * MIB, 3 * MIB, 0, 0);
        assert_eq!(status(&s, None), "3.0 MiB/10 MiB · waiting for a source");
    }

    #[test]
    fn the_last_frame_says_how_it_ended() {
        assert_eq!(
            status(&snap(Phase::Done, 10 * MIB, 10 * MIB, 0, 1), None),
            "10 MiB · done from 1 source"
        );
        assert_eq!(
            status(&snap(Phase::Done, 10 * MIB, 10 * MIB, 10 * MIB, 0), None),
            "10 MiB · already complete"
        );
        assert_eq!(
            status(&snap(Phase::Failed, 10 * MIB, MIB, 0, 0), None),
            "1.0 MiB/10 MiB · failed"
        );
    }

    #[test]
    fn resumed_bytes_are_progress_but_not_speed() {
        let p = FileProgress::new("x.bin");
        p.start("x.bin", 10 * MIB, "x.bin.tessera-part".into());
        p.add_resumed(6 * MIB);
        p.fetching();
        let mut m = Meter::default();
        let t0 = Instant::now();
        assert_eq!(m.sample(t0, p.snapshot().fetched()), None);
        p.add_done(MIB);
        let s = p.snapshot();
        assert_eq!((s.done, s.fetched(), s.percent()), (7 * MIB, MIB, 70));
        let rate = m.sample(t0 + Duration::from_secs(1), s.fetched()).unwrap();
        assert!((rate - MIB as f64).abs() < 1.0, "{rate}");
    }

    #[test]
    fn the_rate_follows_the_last_seconds_only() {
        let mut m = Meter::default();
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        assert_eq!(m.sample(at(0), 0), None);
        assert_eq!(m.sample(at(200), 0), None, "too short to tell");
        // 10 MiB/s for 5 s, then nothing for 4 s.
        for i in 1..=50 {
            let _ = m.sample(at(i * 100), i * MIB);
        }
        let fast = m.sample(at(5000), 50 * MIB).unwrap();
        assert!((fast / MIB as f64 - 10.0).abs() < 0.5, "{fast}");
        for i in 51..=90 {
            let _ = m.sample(at(i * 100), 50 * MIB);
        }
        let idle = m.sample(at(9000), 50 * MIB).unwrap();
        assert!(
            idle < 1.0,
            "a stall shows as no speed within the window: {idle}"
        );
    }

    #[test]
    fn percent_is_whole_and_never_100_before_the_end() {
        let s = |done| snap(Phase::Fetching, 1000, done, 0, 1);
        assert_eq!(s(0).percent(), 0);
        assert_eq!(s(415).percent(), 41);
        assert_eq!(s(999).percent(), 99);
        assert_eq!(s(1000).percent(), 100);
        assert_eq!(snap(Phase::Locating, 0, 0, 0, 0).percent(), 0);
    }

    #[test]
    fn the_bar_fills_with_the_bytes_verified_once_the_size_is_known() {
        let half = format!("{}>{}", "=".repeat(15), " ".repeat(14));
        assert_eq!(bar(0, 100), format!(">{}", " ".repeat(29)));
        assert_eq!(bar(50, 100), half);
        assert_eq!(bar(100, 100), "=".repeat(30));
        assert_eq!(bar(0, 0), "=".repeat(30), "an empty file is all there");
        assert_eq!(line(&snap(Phase::Locating, 0, 0, 0, 0), None), "locating…");
        assert_eq!(
            line(&snap(Phase::Fetching, 100, 50, 0, 1), None),
            format!("[{half}] 50 B/100 B · 1 source")
        );
    }

    #[test]
    fn etas_read_as_people_write_them() {
        assert_eq!(format_eta(Duration::from_secs(42)), "42s");
        assert_eq!(format_eta(Duration::from_secs(185)), "3m 05s");
        assert_eq!(format_eta(Duration::from_secs(7620)), "2h 07m");
    }
}
