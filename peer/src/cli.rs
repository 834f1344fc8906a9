//! The command line, as docs/reference.md documents it. Global options may come before or
//! after the subcommand; usage errors exit 2 (clap's own).

use std::path::PathBuf;

use clap::{Args, CommandFactory, Parser, Subcommand};
pub use clap_complete::Shell;
use common::FileType;

/// The help heading of the options every command takes.
const GLOBAL: &str = "Global options";

/// Share, search and fetch files with Tessera.
#[derive(Debug, Parser)]
#[command(name = "peer", version, about)]
// Help never shows a variable's value (in any command): it would make help depend on the
// shell, and could print a secret.
#[command(mut_args = |a: clap::Arg| a.hide_env_values(true))]
#[command(mut_subcommands = |c: clap::Command| c.mut_args(|a| a.hide_env_values(true)))]
pub struct Cli {
    /// This peer's home: identity, session, settings and local store
    /// [default: $XDG_DATA_HOME/tessera or ~/.local/share/tessera].
    #[arg(long, env = "PEER_HOME", global = true, help_heading = GLOBAL, value_name = "DIR")]
    pub home: Option<PathBuf>,

    /// Tracker URL; repeat or separate with commas to fail over
    /// [default: the trackers saved by login, else http://127.0.0.1:7070].
    #[arg(
        long = "tracker",
        env = "PEER_TRACKER",
        global = true,
        help_heading = GLOBAL,
        value_delimiter = ',',
        value_name = "URL"
    )]
    pub trackers: Vec<String>,

    /// Trust the certificate authorities in this PEM file for https:// trackers and for
    /// nodes that serve TLS (without it, TLS connections are refused).
    #[arg(long, env = "PEER_CA", global = true, help_heading = GLOBAL, value_name = "PEM")]
    pub ca: Option<PathBuf>,

    /// How long a command waits for a tracker that cannot serve (its database down) or,
    /// at most 10s, that nobody answers for (restarting): it says so once on stderr and
    /// retries with back-off, then fails (0 = fail at once).
    #[arg(
        long,
        env = "PEER_TRACKER_WAIT",
        global = true,
        help_heading = GLOBAL,
        default_value = "60s",
        value_parser = parse_wait,
        value_name = "DURATION"
    )]
    pub tracker_wait: std::time::Duration,

    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true, help_heading = GLOBAL)]
    pub json: bool,

    /// Do not draw progress bars.
    #[arg(long, short, global = true, help_heading = GLOBAL)]
    pub quiet: bool,

    /// Log lines on stderr as text or as one JSON object per line (filter with RUST_LOG).
    #[arg(
        long,
        env = "PEER_LOG_FORMAT",
        global = true,
        help_heading = GLOBAL,
        value_enum,
        default_value_t = LogFormat::Text,
        value_name = "FORMAT"
    )]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create an account (then logged in).
    ///
    /// The password needs at least 8 characters (the tracker's rule).
    Register(Credentials),
    /// Start a session; prompts for the password on a terminal.
    Login(Credentials),
    /// End the session.
    Logout,
    /// Run this peer's node in the foreground: serve chunks and send heartbeats.
    Serve(ServeArgs),
    /// Hash files (directories recursively) and share them; each directory named is
    /// also shared as one folder (a collection), which `get` fetches as a tree.
    Index {
        /// Files or directories.
        #[arg(required = true, value_name = "PATH")]
        paths: Vec<PathBuf>,
    },
    /// Stop sharing files (the files themselves are never deleted).
    Unindex {
        /// File ids, unique prefixes, or paths: a shared file, or a folder (its collection
        /// and every file shared from under it).
        #[arg(required = true, value_name = "ID|PATH")]
        ids: Vec<String>,
    },
    /// Search the tracker's files by name; among peers when no tracker answers.
    ///
    /// Without a tracker (or with --peers) the query is flooded: sent to this home's
    /// contacts, which answer from what they hold and pass it on to theirs, up to --ttl hops.
    Search(SearchArgs),
    /// Download files from the peers that hold them.
    Get(GetArgs),
    /// What this peer shares or holds.
    Files,
    /// Peers known to the tracker, up and down.
    Peers,
    /// Session, tracker reachability, node state and transfers.
    Status,
    /// The nodes this peer reaches without a tracker (for searching among peers).
    Contacts {
        #[command(subcommand)]
        action: ContactsAction,
    },
    /// Print a shell completion script (e.g. `peer completions bash > /etc/bash_completion.d/peer`).
    Completions {
        /// The shell to complete for.
        #[arg(value_enum)]
        shell: Shell,
    },
}

pub use common::telemetry::LogFormat;

/// The completion script of the `peer` command line for `shell`.
pub fn completions(shell: Shell) -> String {
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "peer", &mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[derive(Debug, Args)]
pub struct SearchArgs {
    /// Words that must all occur in the name (empty: everything).
    pub query: Option<String>,
    /// Only files of this type: video, audio, image, document, archive, other, or
    /// collection (shared folders).
    #[arg(long = "type", value_name = "KIND")]
    pub kind: Option<FileType>,
    /// Search among peers (flooding the query to this home's contacts) even when a
    /// tracker answers.
    #[arg(long)]
    pub peers: bool,
    /// Hops a query flooded among peers travels (1 to 7).
    #[arg(long, default_value_t = crate::flood::DEFAULT_TTL, value_parser = clap::value_parser!(u32).range(1..=7), value_name = "N")]
    pub ttl: u32,
    /// How long to wait for peers' answers.
    #[arg(long, env = "PEER_SEARCH_WAIT", default_value = "3s", value_parser = parse_period, value_name = "DURATION")]
    pub wait: std::time::Duration,
}

#[derive(Debug, Subcommand)]
pub enum ContactsAction {
    /// Add a node's address (HOST:PORT, or https://HOST:PORT for a TLS node).
    Add {
        #[arg(required = true, value_name = "HOST:PORT")]
        addrs: Vec<String>,
    },
    /// Forget an address (added or learnt).
    Remove {
        #[arg(required = true, value_name = "HOST:PORT")]
        addrs: Vec<String>,
    },
    /// The contacts: added by hand, and learnt from the tracker and other peers.
    List,
}

#[derive(Debug, Args)]
pub struct Credentials {
    /// Account name.
    #[arg(long, value_name = "NAME")]
    pub user: String,
    /// Read the password from the first line of stdin.
    #[arg(long)]
    pub password_stdin: bool,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(
        long,
        env = "PEER_LISTEN",
        default_value = "0.0.0.0:0",
        value_name = "ADDR"
    )]
    pub listen: std::net::SocketAddr,
    /// The HOST:PORT the tracker tells other peers to dial [default: this machine's address
    /// on the route to the tracker, with the bound port].
    #[arg(long, env = "PEER_ADVERTISE", value_name = "HOST:PORT")]
    pub advertise: Option<String>,
    /// Bytes of storage offered for replicas of other peers' chunks, which the tracker
    /// places here (500M, 2G; 1G = 1,000,000,000 bytes; 0 = host no replicas).
    #[arg(long, env = "PEER_STORAGE_QUOTA", default_value = "1G", value_parser = parse_size, value_name = "SIZE")]
    pub storage_quota: u64,
    /// Upload cap in bytes per second, shared by all uploads (50M = 50 MB/s).
    #[arg(long, env = "PEER_MAX_UPLOAD_RATE", value_parser = parse_rate, value_name = "RATE")]
    pub max_upload_rate: Option<u64>,
    /// Serve chunks over TLS with this certificate chain (PEM); the node then advertises
    /// https://HOST:PORT so getters connect with TLS.
    #[arg(long, env = "PEER_TLS_CERT", requires = "tls_key", value_name = "PEM")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, env = "PEER_TLS_KEY", requires = "tls_cert", value_name = "PEM")]
    pub tls_key: Option<PathBuf>,
    /// Serve Prometheus metrics at http://ADDR/metrics (off unless given; e.g.
    /// 127.0.0.1:9100, or port 0 for any free port, printed at start).
    #[arg(long, env = "PEER_METRICS_ADDR", value_name = "ADDR")]
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// How often shared files are checked for changes on disk (a changed one is withdrawn),
    /// shared folders for new, changed and removed files (the folder is shared again), and
    /// the replica store is reconciled with its chunk files (10s, 2m).
    #[arg(long, env = "PEER_RESCAN_EVERY", default_value = "30s", value_parser = parse_period, value_name = "DURATION")]
    pub rescan_every: std::time::Duration,
    /// How often the node sends the tracker everything it holds, so the tracker's listing
    /// of this peer converges with its disk whatever either lost (also at start and when
    /// the tracker answers again after an outage; 1m, 10m).
    #[arg(long, env = "PEER_SYNC_EVERY", default_value = "5m", value_parser = parse_period, value_name = "DURATION")]
    pub sync_every: std::time::Duration,
    /// Most chunk requests served at once; past it a request is answered "busy" and the
    /// getter tries again later or elsewhere.
    #[arg(long, env = "PEER_MAX_UPLOADS", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..), value_name = "N")]
    pub max_uploads: u32,
    /// Most chunk requests served at once to one client, counted by account and by IP
    /// address (a getter keeps up to 32 in flight per file), so one cannot take them all.
    #[arg(long, env = "PEER_MAX_UPLOADS_PER_CLIENT", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..), value_name = "N")]
    pub max_uploads_per_client: u32,
    /// Memory for chunks being sent, a quarter of it per client; a request waits for room
    /// instead of reading more (64MiB, 1GiB; at least twice the largest chunk, 16MiB).
    #[arg(long, env = "PEER_UPLOAD_BUFFER", default_value = "128MiB", value_parser = parse_size, value_name = "SIZE")]
    pub upload_buffer: u64,
    /// Nodes to know from the start, for searching without a tracker: added to the home's
    /// contacts (repeatable, or comma-separated).
    #[arg(
        long,
        env = "PEER_BOOTSTRAP",
        value_delimiter = ',',
        value_name = "HOST:PORT"
    )]
    pub bootstrap: Vec<String>,
    /// Learn contacts from the tracker's list of peers and from other peers (peer
    /// exchange), every --sync-every. With false, the contacts are only those added.
    #[arg(long, env = "PEER_LEARN_CONTACTS", default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub learn_contacts: bool,
    /// How often the node queues the home's waiting gets (`peer get --wait`) at the tracker
    /// again, and tries those it cannot queue there (no tracker answers) among peers.
    #[arg(long, env = "PEER_WAITING_EVERY", default_value = "15s", value_parser = parse_period, value_name = "DURATION")]
    pub waiting_every: std::time::Duration,
}

#[derive(Debug, Args)]
pub struct GetArgs {
    /// File ids, unique id prefixes, or exact names.
    #[arg(required = true, value_name = "ID|NAME")]
    pub terms: Vec<String>,
    /// Directory to write into (created if missing).
    #[arg(long, short, default_value = ".", value_name = "DIR")]
    pub output: PathBuf,
    /// Fetch only from this peer (id or prefix).
    #[arg(long, value_name = "PEER_ID")]
    pub from: Option<String>,
    /// Download cap in bytes per second, shared by all files (50M = 50 MB/s).
    #[arg(long, env = "PEER_MAX_DOWNLOAD_RATE", value_parser = parse_rate, value_name = "RATE")]
    pub max_download_rate: Option<u64>,
    /// Drop a source that sends nothing for this long, and fetch its chunks elsewhere.
    #[arg(long, env = "PEER_STALL_TIMEOUT", default_value = "20s", value_parser = parse_period, value_name = "DURATION")]
    pub stall_timeout: std::time::Duration,
    /// Fail when no chunk arrived and no source was usable for this long.
    #[arg(long, env = "PEER_GIVE_UP_AFTER", default_value = "2m", value_parser = parse_period, value_name = "DURATION")]
    pub give_up_after: std::time::Duration,
    /// When no live peer holds a file now, queue it (at the tracker, for this home's node,
    /// which fetches it once a holder is back, with or without this command) instead of
    /// failing.
    #[arg(long)]
    pub wait: bool,
    /// Cancel the waiting gets of these file ids instead of getting anything.
    #[arg(long, conflicts_with = "wait")]
    pub cancel: bool,
    /// When no tracker answers, how long to wait for peers' answers to a flooded search
    /// for the file (a whole file id is needed then).
    #[arg(long, env = "PEER_SEARCH_WAIT", default_value = "3s", value_parser = parse_period, value_name = "DURATION")]
    pub peers_wait: std::time::Duration,
}

/// Parses a duration such as `500ms`, `20s` or `2m`; at least 100 ms, so a typo cannot
/// make a loop spin.
pub fn parse_period(s: &str) -> Result<std::time::Duration, String> {
    let d = humantime::parse_duration(s.trim())
        .map_err(|e| format!("{e} (a duration such as 500ms, 20s or 2m)"))?;
    Ok(d.max(std::time::Duration::from_millis(100)))
}

/// Parses a duration such as `0`, `10s` or `2m` (zero allowed: no waiting).
pub fn parse_wait(s: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(s.trim())
        .or_else(|e| {
            if s.trim() == "0" {
                Ok(std::time::Duration::ZERO)
            } else {
                Err(e)
            }
        })
        .map_err(|e| format!("{e} (a duration such as 0, 10s or 2m)"))
}

/// Parses a size such as `500M` or `2G`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    common::units::parse_size(s).map_err(|e| e.to_string())
}

/// Parses a rate (bytes per second, same suffixes as sizes; an optional `/s` is allowed).
/// Zero is refused: it would stall every transfer.
pub fn parse_rate(s: &str) -> Result<u64, String> {
    common::units::parse_rate(s).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn completions_cover_every_shell_and_command() {
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let script = completions(shell);
            for word in ["get", "serve", "metrics-addr", "log-format"] {
                assert!(script.contains(word), "{shell}: no {word}");
            }
        }
        let cli = Cli::try_parse_from(["peer", "completions", "fish"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Completions { shell: Shell::Fish }
        ));
        let err = Cli::try_parse_from(["peer", "completions", "tcsh"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
    }

    #[test]
    fn log_format_and_metrics_addr_parse() {
        let cli = Cli::try_parse_from(["peer", "status"]).unwrap();
        assert_eq!(cli.log_format, LogFormat::Text);
        let cli = Cli::try_parse_from([
            "peer",
            "serve",
            "--log-format",
            "json",
            "--metrics-addr",
            "127.0.0.1:9100",
        ])
        .unwrap();
        assert_eq!(cli.log_format, LogFormat::Json);
        let Command::Serve(s) = cli.command else {
            panic!("not serve")
        };
        assert_eq!(s.metrics_addr, Some("127.0.0.1:9100".parse().unwrap()));
        assert!(Cli::try_parse_from(["peer", "--log-format", "xml", "status"]).is_err());
    }

    #[test]
    fn upload_limits_parse_with_sane_defaults() {
        let Command::Serve(s) = Cli::try_parse_from(["peer", "serve"]).unwrap().command else {
            panic!("not serve")
        };
        assert_eq!((s.max_uploads, s.max_uploads_per_client), (256, 64));
        assert_eq!(s.upload_buffer, 128 << 20);
        let cli = Cli::try_parse_from([
            "peer",
            "serve",
            "--max-uploads",
            "32",
            "--max-uploads-per-client",
            "8",
            "--upload-buffer",
            "64MiB",
        ])
        .unwrap();
        let Command::Serve(s) = cli.command else {
            panic!("not serve")
        };
        assert_eq!((s.max_uploads, s.max_uploads_per_client), (32, 8));
        assert_eq!(s.upload_buffer, 64 << 20);
        let err = Cli::try_parse_from(["peer", "serve", "--max-uploads", "0"]).unwrap_err();
        assert_eq!(err.exit_code(), 2, "no uploads at all is bad usage");
    }

    #[test]
    fn tracker_wait_and_sync_period_parse_with_their_defaults() {
        let cli = Cli::try_parse_from(["peer", "serve"]).unwrap();
        assert_eq!(cli.tracker_wait, std::time::Duration::from_secs(60));
        let Command::Serve(s) = cli.command else {
            panic!("not serve")
        };
        assert_eq!(s.sync_every, std::time::Duration::from_secs(300));
        let cli = Cli::try_parse_from(["peer", "search", "--tracker-wait", "0"]).unwrap();
        assert_eq!(cli.tracker_wait, std::time::Duration::ZERO);
        assert!(Cli::try_parse_from(["peer", "search", "--tracker-wait", "soon"]).is_err());
    }

    #[test]
    fn sizes_and_rates_parse() {
        assert_eq!(parse_size("1G"), Ok(1_000_000_000));
        assert_eq!(parse_rate("50M"), Ok(50_000_000));
        assert_eq!(parse_rate("2MB/s"), Ok(2_000_000));
        assert!(parse_rate("0").is_err());
        assert!(parse_rate("fast").is_err());
        assert!(parse_size("-1").is_err());
    }

    #[test]
    fn flags_parse_like_the_contract() {
        let cli = Cli::try_parse_from([
            "peer",
            "--tracker",
            "http://a:1,http://b:2",
            "--tracker",
            "c:3",
            "get",
            "abc",
            "--max-download-rate",
            "10M",
            "--json",
        ])
        .unwrap();
        assert_eq!(cli.trackers, ["http://a:1", "http://b:2", "c:3"]);
        assert!(cli.json);
        let Command::Get(g) = cli.command else {
            panic!("not get")
        };
        assert_eq!(g.max_download_rate, Some(10_000_000));
        assert_eq!(g.output, PathBuf::from("."));

        let cli = Cli::try_parse_from(["peer", "serve", "--storage-quota", "500M"]).unwrap();
        let Command::Serve(s) = cli.command else {
            panic!("not serve")
        };
        assert_eq!(s.storage_quota, 500_000_000);
        let cli = Cli::try_parse_from(["peer", "serve"]).unwrap();
        let Command::Serve(s) = cli.command else {
            panic!("not serve")
        };
        assert_eq!(s.storage_quota, 1_000_000_000, "the default quota is 1G");
        let cli = Cli::try_parse_from(["peer", "serve", "--storage-quota", "0"]).unwrap();
        let Command::Serve(s) = cli.command else {
            panic!("not serve")
        };
        assert_eq!(s.storage_quota, 0);
        assert_eq!(s.listen.to_string(), "0.0.0.0:0");

        let cli = Cli::try_parse_from([
            "peer",
            "serve",
            "--tls-cert",
            "c.pem",
            "--tls-key",
            "k.pem",
            "--ca",
            "ca.pem",
        ])
        .unwrap();
        assert_eq!(cli.ca, Some(PathBuf::from("ca.pem")));
        let Command::Serve(s) = cli.command else {
            panic!("not serve")
        };
        assert_eq!(s.tls_cert, Some(PathBuf::from("c.pem")));
        let err = Cli::try_parse_from(["peer", "serve", "--tls-cert", "c.pem"]).unwrap_err();
        assert_eq!(
            err.exit_code(),
            2,
            "--tls-cert without --tls-key is bad usage"
        );

        let err = Cli::try_parse_from(["peer", "serve", "--max-upload-rate", "x"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        let err = Cli::try_parse_from(["peer", "search", "--type", "movies"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
    }
}
