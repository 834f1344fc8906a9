//! Logging set-up shared by both binaries: `tracing` to stderr, filtered by `RUST_LOG`, as
//! text (coloured on a terminal) or one JSON object per line for log collectors.

/// How log lines are written (`--log-format`).
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines
    #[default]
    Text,
    /// One JSON object per line, for log collectors
    Json,
}

/// Installs the global subscriber: `RUST_LOG` when set, else `default_filter`.
pub fn init(format: LogFormat, default_filter: &str) {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => fmt.json().init(),
        LogFormat::Text => fmt
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
    }
}

/// Counts events between log lines, so a flood of them makes one line per period: the
/// first event reports at once, later ones when the period since the last report is over.
#[derive(Debug)]
pub struct Tally {
    every: std::time::Duration,
    last: Option<std::time::Instant>,
    since: u64,
}

impl Tally {
    pub const fn new(every: std::time::Duration) -> Self {
        Self {
            every,
            last: None,
            since: 0,
        }
    }

    /// Counts one event; when a report is due, how many happened since the last one.
    pub fn note(&mut self) -> Option<u64> {
        self.since += 1;
        let now = std::time::Instant::now();
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < self.every)
        {
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.since))
    }
}

#[cfg(test)]
mod tally_tests {
    use super::Tally;
    use std::time::Duration;

    #[test]
    fn should_report_the_first_event_then_once_a_period() {
        let mut t = Tally::new(Duration::from_secs(3600));
        assert_eq!(t.note(), Some(1));
        assert_eq!(t.note(), None);
        assert_eq!(t.note(), None);
        let mut now = Tally::new(Duration::ZERO);
        assert_eq!(now.note(), Some(1));
        assert_eq!(now.note(), Some(1));
    }
}
