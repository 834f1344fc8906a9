//! The command line, exactly as CONTRACT.md fixes it. Global options may come before or
//! after the subcommand; usage errors exit 2 (clap's own).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use common::FileType;

/// Share, search and fetch files with Tessera.
#[derive(Debug, Parser)]
#[command(name = "peer", version, about)]
pub struct Cli {
    /// This peer's home: identity, session, settings and local store
    /// [default: $XDG_DATA_HOME/tessera or ~/.local/share/tessera].
    #[arg(long, env = "PEER_HOME", global = true, value_name = "DIR")]
    pub home: Option<PathBuf>,

    /// Tracker URL; repeat or separate with commas to fail over
    /// [default: the trackers saved by login, else http://127.0.0.1:7070].
    #[arg(
        long = "tracker",
        env = "PEER_TRACKER",
        global = true,
        value_delimiter = ',',
        value_name = "URL"
    )]
    pub trackers: Vec<String>,

    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,

    /// Do not draw progress bars.
    #[arg(long, short, global = true)]
    pub quiet: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create an account (then logged in).
    Register(Credentials),
    /// Start a session; prompts for the password on a terminal.
    Login(Credentials),
    /// End the session.
    Logout,
    /// Run this peer's node in the foreground: serve chunks and send heartbeats.
    Serve(ServeArgs),
    /// Hash files (directories recursively) and share them.
    Index {
        /// Files or directories.
        #[arg(required = true, value_name = "PATH")]
        paths: Vec<PathBuf>,
    },
    /// Stop sharing files (the files themselves are never deleted).
    Unindex {
        /// File ids or unique prefixes.
        #[arg(required = true, value_name = "ID")]
        ids: Vec<String>,
    },
    /// Search the tracker's files by name.
    Search {
        /// Words that must all occur in the name (empty: everything).
        query: Option<String>,
        /// Only files of this type: video, audio, image, document, archive, other.
        #[arg(long = "type", value_name = "KIND")]
        kind: Option<FileType>,
    },
    /// Download files from the peers that hold them.
    Get(GetArgs),
    /// What this peer shares or holds.
    Files,
    /// Peers known to the tracker, up and down.
    Peers,
    /// Session, tracker reachability, node state and transfers.
    Status,
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
    /// host:port the tracker tells other peers [default: this machine's address on the
    /// route to the tracker, with the bound port].
    #[arg(long, env = "PEER_ADVERTISE", value_name = "HOST:PORT")]
    pub advertise: Option<String>,
    /// Bytes of storage offered for replicas of other peers' chunks, which the tracker
    /// places here (500M, 2G; 1G = 1,000,000,000 bytes; 0 = host no replicas).
    #[arg(long, env = "PEER_STORAGE_QUOTA", default_value = "1G", value_parser = parse_size, value_name = "SIZE")]
    pub storage_quota: u64,
    /// Upload cap in bytes per second, shared by all uploads (50M = 50 MB/s).
    #[arg(long, env = "PEER_MAX_UPLOAD_RATE", value_parser = parse_rate, value_name = "RATE")]
    pub max_upload_rate: Option<u64>,
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
}

/// Parses a size such as `500M` or `2G`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    common::units::parse_size(s).map_err(|e| e.to_string())
}

/// Parses a rate (bytes per second, same suffixes as sizes; an optional `/s` is allowed).
/// Zero is refused: it would stall every transfer.
pub fn parse_rate(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let t = t.strip_suffix("/s").unwrap_or(t);
    let v = common::units::parse_size(t).map_err(|e| e.to_string())?;
    if v == 0 {
        return Err("a rate must be more than 0 bytes per second".into());
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
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

        let err = Cli::try_parse_from(["peer", "serve", "--max-upload-rate", "x"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        let err = Cli::try_parse_from(["peer", "search", "--type", "movies"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
    }
}
