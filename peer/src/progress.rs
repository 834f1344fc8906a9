//! Progress bars for `get`. The downloader only bumps atomics in a [`FileProgress`]; a
//! separate task renders them with indicatif a few times a second, so the hot path never
//! touches the terminal. Bars are drawn only on a terminal, and never with `--json` or
//! `--quiet`.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio_util::sync::CancellationToken;

/// `state` values (0 = running).
const DONE: u8 = 1;
const FAILED: u8 = 2;

/// Live counters of one download.
#[derive(Debug, Default)]
pub struct FileProgress {
    name: Mutex<String>,
    total: AtomicU64,
    done: AtomicU64,
    sources: AtomicU32,
    state: AtomicU8,
}

impl FileProgress {
    /// Counters labelled `label` until the manifest gives the real name.
    pub fn new(label: &str) -> Arc<Self> {
        let p = Self::default();
        *p.name.lock().unwrap_or_else(|e| e.into_inner()) = label.to_string();
        Arc::new(p)
    }

    pub fn start(&self, name: &str, total: u64) {
        *self.name.lock().unwrap_or_else(|e| e.into_inner()) = name.to_string();
        self.total.store(total, Ordering::Relaxed);
    }

    pub fn add_done(&self, bytes: u64) {
        self.done.fetch_add(bytes, Ordering::Relaxed);
    }

    pub fn set_sources(&self, n: usize) {
        self.sources.store(n as u32, Ordering::Relaxed);
    }

    pub fn finish(&self, ok: bool) {
        self.state
            .store(if ok { DONE } else { FAILED }, Ordering::Relaxed);
    }

    pub fn done_bytes(&self) -> u64 {
        self.done.load(Ordering::Relaxed)
    }

    fn name(&self) -> String {
        self.name.lock().unwrap_or_else(|e| e.into_inner()).clone()
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
}

impl Bars {
    /// Starts drawing one bar per file (nothing when `visible` is false).
    pub fn spawn(files: Vec<Arc<FileProgress>>, visible: bool) -> Self {
        let stop = CancellationToken::new();
        if !visible {
            return Self { stop, task: None };
        }
        let mp = MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(8));
        let style = ProgressStyle::with_template(
            "{prefix:.bold} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta} · {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        let bars: Vec<ProgressBar> = files
            .iter()
            .map(|_| mp.add(ProgressBar::new(0).with_style(style.clone())))
            .collect();
        let token = stop.clone();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(150));
            loop {
                let stopping = tokio::select! {
                    _ = tick.tick() => false,
                    _ = token.cancelled() => true,
                };
                for (f, bar) in files.iter().zip(&bars) {
                    if bar.is_finished() {
                        continue;
                    }
                    bar.set_prefix(common::names::printable(&f.name(), 32));
                    bar.set_length(f.total.load(Ordering::Relaxed));
                    bar.set_position(f.done_bytes());
                    let n = f.sources.load(Ordering::Relaxed);
                    bar.set_message(format!("{n} source{}", if n == 1 { "" } else { "s" }));
                    match f.state.load(Ordering::Relaxed) {
                        DONE => bar.finish(),
                        FAILED => bar.abandon_with_message("failed"),
                        _ => {}
                    }
                }
                if stopping {
                    for bar in &bars {
                        if !bar.is_finished() {
                            bar.abandon();
                        }
                    }
                    break;
                }
            }
        });
        Self {
            stop,
            task: Some(task),
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
