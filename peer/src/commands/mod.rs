//! One function per subcommand. Commands are the only code that prints to stdout; they turn
//! domain results into the text and JSON shapes of docs/reference.md (see `output`).

mod account;
mod contacts;
mod get;
pub mod get_folder;
mod index;
mod query;
mod serve;
mod status;

use std::sync::Arc;

use crate::cli::{Cli, Command};
use crate::error::Result;
use crate::home::Home;
use crate::output;
use crate::tracker_client::{DEFAULT_TRACKER, Patience, TrackerClient};

/// What every command needs: the home, the tracker URLs, the output mode.
pub struct Ctx {
    pub home: Home,
    pub trackers: Vec<String>,
    pub json: bool,
    pub quiet: bool,
    /// The CAs trusted for https:// trackers and TLS nodes (`--ca`).
    pub tls: crate::transport::ClientTls,
    /// How the command's tracker calls wait out an outage (`--tracker-wait`).
    pub patience: Patience,
}

impl Ctx {
    /// Opens the home and picks the tracker URLs: `--tracker`/`PEER_TRACKER`, else the ones
    /// saved by login, else the default. Only `register` and `login` make a missing home;
    /// every other command needs one that exists, so a mistyped `--home` is said to be one.
    ///
    /// # Errors
    /// When the home is missing (for a command other than register/login), cannot be
    /// created or read, or `--ca` is unusable.
    pub fn new(cli: &Cli) -> Result<Self> {
        let home = match cli.command {
            Command::Register(_) | Command::Login(_) => Home::open(cli.home.clone())?,
            _ => Home::open_existing(cli.home.clone())?,
        };
        let mut trackers = clean(&cli.trackers);
        if trackers.is_empty() {
            trackers = clean(&home.settings()?.trackers);
        }
        if trackers.is_empty() {
            trackers = vec![DEFAULT_TRACKER.to_string()];
        }
        Ok(Self {
            home,
            trackers,
            json: cli.json,
            quiet: cli.quiet,
            tls: crate::transport::ClientTls::load(cli.ca.as_deref())?,
            patience: Patience::new(cli.tracker_wait, Arc::new(|line: &str| output::warn(line))),
        })
    }

    /// A tracker client carrying the saved session's token (none if logged out or expired:
    /// calls that need one then fail with "not logged in"), waiting out outages for its
    /// idempotent calls as `--tracker-wait` says.
    ///
    /// # Errors
    /// For a malformed tracker URL or an unreadable session file.
    pub fn client(&self) -> Result<TrackerClient> {
        let token = self
            .home
            .session()?
            .filter(|s| s.expires_at_ms <= 0 || s.expires_at_ms > crate::now_ms())
            .map(|s| s.token);
        Ok(TrackerClient::with_tls(&self.trackers, token, &self.tls)?
            .with_patience(self.patience.clone()))
    }
}

fn clean(urls: &[String]) -> Vec<String> {
    urls.iter()
        .map(|u| u.trim())
        .filter(|u| !u.is_empty())
        .map(crate::tracker_client::normalize_url)
        .collect()
}

/// Runs the command line.
///
/// # Errors
/// Whatever the command failed on; [`crate::Error::AlreadyReported`] when failures were
/// already printed.
pub async fn run(cli: Cli) -> Result<()> {
    // Needs no home and no tracker.
    if let Command::Completions { shell } = cli.command {
        crate::output::print(&crate::cli::completions(shell));
        return Ok(());
    }
    let cx = Ctx::new(&cli)?;
    match cli.command {
        Command::Register(c) => account::register(&cx, c).await,
        Command::Login(c) => account::login(&cx, c).await,
        Command::Logout => account::logout(&cx).await,
        Command::Serve(a) => serve::serve(&cx, a).await,
        Command::Index { paths } => index::index(&cx, paths).await,
        Command::Unindex { ids } => index::unindex(&cx, ids).await,
        Command::Search(a) => query::search(&cx, a).await,
        Command::Contacts { action } => contacts::contacts(&cx, action),
        Command::Get(a) => get::get(&cx, a).await,
        Command::Files => query::files(&cx),
        Command::Peers => query::peers(&cx).await,
        Command::Status => status::status(&cx).await,
        // Printed above, before the home was opened.
        Command::Completions { .. } => Ok(()),
    }
}
