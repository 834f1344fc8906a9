//! The tracker's command line and settings, and where each setting comes from: the first of
//! command-line flag, `TRACKER_*` environment variable, TOML config file, built-in default.
//!
//! Each setting is declared once, as a clap argument on [`Config`] (or [`TlsArgs`]): its
//! flag, variable, default and parser, with its `///` doc as the help. The config file's
//! keys are the argument ids (the field names). [`Cli::load_from`] lets clap parse the
//! flags, then feeds each setting they leave out from the environment or the file back
//! through clap as that flag, so every source is parsed and checked alike. The environment
//! is read through a lookup function, so the precedence is testable without touching the
//! process environment.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{Arg, ArgAction, Args, CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::Error;

/// Tessera tracker: the directory of users, peers, files and where every chunk lives.
#[derive(Parser, Debug)]
#[command(name = "tracker", version)]
// Every flag works before or after the subcommand. Help names each variable but never shows
// its value: a database URL may hold a password.
#[command(mut_args = |a: Arg| a.global(true).hide_env_values(true))]
pub struct Cli {
    /// TOML file with any of the settings below but --config and --log-format, each under its
    /// option's name with _ for - (listen, database_url, tls_cert, …).
    #[arg(long = "config", env = "TRACKER_CONFIG", value_name = "FILE")]
    pub config_file: Option<PathBuf>,
    /// Log lines on stderr as text or as one JSON object per line (filter with RUST_LOG).
    #[arg(
        long,
        env = "TRACKER_LOG_FORMAT",
        value_enum,
        default_value_t = LogFormat::Text,
        value_name = "FORMAT"
    )]
    pub log_format: LogFormat,
    /// The settings, resolved and checked by [`Cli::load_from`].
    #[command(flatten)]
    pub settings: Config,
    /// Folded into `settings.tls`.
    #[command(flatten)]
    tls: TlsArgs,
    #[command(subcommand)]
    pub command: Option<Command>,
}

pub use common::telemetry::LogFormat;

#[derive(Subcommand, Debug, PartialEq, Eq)]
pub enum Command {
    /// Run the tracker (the default)
    Serve,
    /// Apply database migrations, then exit
    Migrate,
    /// Manage accounts
    #[command(subcommand)]
    User(UserCommand),
}

#[derive(Subcommand, Debug, PartialEq, Eq)]
pub enum UserCommand {
    /// Create an account; the password is the first line of stdin
    Add { name: String },
    /// List accounts
    List,
    /// Delete an account with its sessions, peers and holdings
    Remove { name: String },
}

/// Everything `tracker::run` needs to know. The clap attributes declare the settings; the
/// fields without them are not configurable.
#[derive(Args, Clone, Debug)]
pub struct Config {
    /// Address for gRPC and HTTP (one port serves both).
    #[arg(
        long,
        env = "TRACKER_LISTEN",
        default_value = "127.0.0.1:7070",
        value_name = "ADDR"
    )]
    pub listen: String,
    /// sqlite://… or postgres://….
    #[arg(
        long,
        env = "TRACKER_DATABASE_URL",
        default_value = "sqlite://tracker.db?mode=rwc",
        value_name = "URL"
    )]
    pub database_url: String,
    /// Target number of live copies of every chunk.
    #[arg(
        long,
        env = "TRACKER_REPLICATION",
        default_value_t = 3,
        value_name = "N"
    )]
    pub replication: u32,
    /// A peer with no heartbeat for this long is down, e.g. 30s, 2m.
    #[arg(
        long,
        env = "TRACKER_PEER_TIMEOUT",
        default_value = "30s",
        value_name = "DUR",
        value_parser = parse_duration,
    )]
    pub peer_timeout: Duration,
    /// How much longer than the peer timeout a down holder still counts as a copy before its
    /// chunks are re-placed.
    #[arg(
        long,
        env = "TRACKER_REPAIR_GRACE",
        default_value = "60s",
        value_name = "DUR",
        value_parser = parse_duration,
    )]
    pub repair_grace: Duration,
    /// How long a node has to complete a replication task before it is pushed again.
    #[arg(
        long,
        env = "TRACKER_TASK_LEASE",
        default_value = "60s",
        value_name = "DUR",
        value_parser = parse_duration,
    )]
    pub task_lease: Duration,
    /// Whether holders' claims count only once an audit has seen them served. Turn it off
    /// only when every account is trusted (closed registration, one organisation): then a
    /// claim counts as a copy as soon as it is made, and no audit traffic is spent.
    #[arg(
        long,
        env = "TRACKER_AUDIT",
        default_value = "true",
        value_name = "BOOL",
        value_parser = parse_bool,
        action = ArgAction::Set,
    )]
    pub audit: bool,
    /// How often the tracker re-audits one holding already verified, chosen at random (it
    /// fetches one chunk from the holder and checks its SHA-256; new claims are audited at
    /// once). Each audit costs one chunk of download; 0s turns re-audits off.
    #[arg(
        long,
        env = "TRACKER_AUDIT_INTERVAL",
        default_value = "10s",
        value_name = "DUR",
        value_parser = parse_duration,
    )]
    pub audit_interval: Duration,
    /// CA certificates (PEM) that sign the certificates of nodes serving TLS (`peer serve
    /// --tls-cert`), for audits of those nodes; without it such nodes cannot be audited and
    /// their copies never count.
    #[arg(long, env = "TRACKER_PEER_CA", value_name = "PEM")]
    pub peer_ca: Option<PathBuf>,
    /// How long an audited holder has to deliver the chunk before the audit fails as a stall.
    #[arg(
        long,
        env = "TRACKER_AUDIT_TIMEOUT",
        default_value = "30s",
        value_name = "DUR",
        value_parser = parse_duration,
    )]
    pub audit_timeout: Duration,
    /// Whether peers may create accounts.
    #[arg(
        long,
        env = "TRACKER_OPEN_REGISTRATION",
        default_value = "true",
        value_name = "BOOL",
        value_parser = parse_bool,
        action = ArgAction::Set,
    )]
    pub open_registration: bool,
    /// How long a session token stays valid.
    #[arg(skip = Duration::from_secs(30 * 24 * 3600))]
    pub session_ttl: Duration,
    /// How long a ticket to fetch chunks of a file stays valid.
    ///
    /// Getters renew theirs by calling Locate again.
    #[arg(
        long,
        env = "TRACKER_TICKET_TTL",
        default_value = "10m",
        value_name = "DUR",
        value_parser = parse_duration,
    )]
    pub ticket_ttl: Duration,
    /// How long a peer's certificate stays valid (the tracker's signature binding a peer's
    /// own key to its peer id and user).
    ///
    /// While its tracker does not answer, a node takes a valid certificate, with a proof of
    /// its key, in place of a ticket. Peers renew theirs before half of it has passed.
    #[arg(
        long,
        env = "TRACKER_CERT_TTL",
        default_value = "24h",
        value_name = "DUR",
        value_parser = parse_duration,
    )]
    pub cert_ttl: Duration,
    /// How long a new connection has to send its first request's headers (TLS handshake
    /// included), and an HTTP/1 connection each next request's.
    #[arg(
        long,
        env = "TRACKER_HEADER_TIMEOUT",
        default_value = "10s",
        value_name = "DUR",
        value_parser = parse_duration,
    )]
    pub header_timeout: Duration,
    /// A connection with no request open, or whose open requests move no bytes, for this
    /// long is closed. HTTP/2 clients are pinged every third of it and closed when they do
    /// not answer, so a long-lived stream of a live client stays open.
    #[arg(
        long,
        env = "TRACKER_IDLE_TIMEOUT",
        default_value = "60s",
        value_name = "DUR",
        value_parser = parse_duration,
    )]
    pub idle_timeout: Duration,
    /// Connections served at once (every peer's node keeps one); one more is closed as soon
    /// as it is accepted. Keep it under the open-file limit.
    #[arg(
        long,
        env = "TRACKER_MAX_CONNECTIONS",
        default_value_t = 10_000,
        value_name = "N"
    )]
    pub max_connections: u32,
    /// Peer ids one user may own (each machine running `peer` is one).
    #[arg(
        long,
        env = "TRACKER_MAX_PEERS_PER_USER",
        default_value_t = 64,
        value_name = "N"
    )]
    pub max_peers_per_user: u32,
    /// Files one user's peers may share (a file shared from two of its peers counts twice).
    #[arg(
        long,
        env = "TRACKER_MAX_FILES_PER_USER",
        default_value_t = 10_000,
        value_name = "N"
    )]
    pub max_files_per_user: u32,
    /// Chunks a newly announced file may have. The default lets a 4 TiB file through at the
    /// chunk size peers pick for it (16 MiB); its chunk hashes are 8 MiB.
    #[arg(
        long,
        env = "TRACKER_MAX_CHUNKS_PER_FILE",
        default_value_t = 262_144,
        value_name = "N"
    )]
    pub max_chunks_per_file: u32,
    /// Chunks of all the files one user's peers share together (1 TiB of 1 MiB chunks).
    #[arg(
        long,
        env = "TRACKER_MAX_CHUNKS_PER_USER",
        default_value_t = 1_048_576,
        value_name = "N"
    )]
    pub max_chunks_per_user: u64,
    /// Certificate chain and private key to serve TLS with; plain when `None`. On the
    /// command line these are two settings, [`TlsArgs`].
    #[arg(skip)]
    pub tls: Option<TlsFiles>,
}

/// Where the tracker's TLS certificate chain and private key are (both PEM).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The two settings behind [`Config::tls`]: each may come from a different source, and
/// only both together mean TLS.
#[derive(Args, Clone, Debug, Default)]
pub struct TlsArgs {
    /// Serve TLS with this certificate chain (PEM; needs --tls-key).
    #[arg(long, env = "TRACKER_TLS_CERT", value_name = "PEM")]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, env = "TRACKER_TLS_KEY", value_name = "PEM")]
    tls_key: Option<PathBuf>,
}

/// Why [`Cli::load_from`] gave no command line.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// A bad command line, or `--help` or `--version`: clap prints it and picks the exit
    /// code (`clap::Error::exit`).
    #[error(transparent)]
    Usage(#[from] clap::Error),
    /// The config file is unreadable, or a value from it or from a variable is bad, or the
    /// settings together are.
    #[error(transparent)]
    Settings(#[from] Error),
}

impl Default for Config {
    /// The defaults the settings declare.
    fn default() -> Self {
        let cmd = Config::augment_args(clap::Command::new("tracker")).mut_args(|a| a.env(None));
        let matches = cmd
            .try_get_matches_from(["tracker"])
            .expect("every declared default parses (tested)");
        Config::from_arg_matches(&matches).expect("clap fills every setting (tested)")
    }
}

impl Config {
    /// A configuration for tests: an SQLite file inside `dir` and port 0.
    pub fn ephemeral(dir: &Path) -> Config {
        Config {
            listen: "127.0.0.1:0".to_string(),
            database_url: format!("sqlite://{}?mode=rwc", dir.join("tracker.db").display()),
            ..Config::default()
        }
    }

    /// Refuses values each of which parses but which the tracker cannot run with. A message
    /// names the flag, the variable and the file key, as it cannot know which was used.
    fn validate(&self) -> Result<(), Error> {
        let refuse = |msg: &str| Err(Error::Config(msg.into()));
        if self.replication == 0 {
            return refuse(
                "replication must be at least 1 (--replication, TRACKER_REPLICATION, replication)",
            );
        }
        if self.peer_timeout.is_zero() {
            return refuse(
                "peer timeout must be positive (--peer-timeout, TRACKER_PEER_TIMEOUT, peer_timeout)",
            );
        }
        if self.task_lease.is_zero() {
            return refuse(
                "task lease must be positive (--task-lease, TRACKER_TASK_LEASE, task_lease)",
            );
        }
        if self.ticket_ttl.is_zero() {
            return refuse(
                "ticket ttl must be positive (--ticket-ttl, TRACKER_TICKET_TTL, ticket_ttl)",
            );
        }
        if self.cert_ttl.is_zero() {
            return refuse("cert ttl must be positive (--cert-ttl, TRACKER_CERT_TTL, cert_ttl)");
        }
        if self.header_timeout.is_zero() || self.idle_timeout.is_zero() {
            return refuse(
                "header and idle timeouts must be positive (--header-timeout, --idle-timeout, \
                 TRACKER_HEADER_TIMEOUT, TRACKER_IDLE_TIMEOUT, header_timeout, idle_timeout)",
            );
        }
        let limits = [
            ("--max-connections", u64::from(self.max_connections)),
            ("--max-peers-per-user", u64::from(self.max_peers_per_user)),
            ("--max-files-per-user", u64::from(self.max_files_per_user)),
            ("--max-chunks-per-file", u64::from(self.max_chunks_per_file)),
            ("--max-chunks-per-user", self.max_chunks_per_user),
        ];
        if let Some((flag, _)) = limits.iter().find(|(_, n)| *n == 0) {
            let var = format!("TRACKER_{}", flag[2..].replace('-', "_").to_uppercase());
            let key = flag[2..].replace('-', "_");
            return Err(Error::Config(format!(
                "{} must be at least 1 ({flag}, {var}, {key})",
                &flag[2..]
            )));
        }
        Ok(())
    }
}

impl TlsArgs {
    fn files(self) -> Result<Option<TlsFiles>, Error> {
        match (self.tls_cert, self.tls_key) {
            (Some(cert), Some(key)) => Ok(Some(TlsFiles { cert, key })),
            (None, None) => Ok(None),
            (Some(_), None) => Err(Error::Config(
                "--tls-cert needs --tls-key (TRACKER_TLS_KEY, tls_key)".into(),
            )),
            (None, Some(_)) => Err(Error::Config(
                "--tls-key needs --tls-cert (TRACKER_TLS_CERT, tls_cert)".into(),
            )),
        }
    }
}

impl Cli {
    /// Parses `args` (the program name first) and fills each setting they leave out from
    /// `env`, then from the config file (`--config`, else `TRACKER_CONFIG`), else its
    /// default. An empty variable counts as unset. Every value in the file is checked, even
    /// one that a flag or variable overrides.
    ///
    /// # Errors
    /// [`LoadError::Usage`] for a bad command line and for `--help` and `--version`;
    /// [`LoadError::Settings`] when the config file cannot be read, is not TOML or has an
    /// unknown key, when a value from a variable or the file does not parse, or when the
    /// settings together are unusable.
    pub fn load_from<I, T>(args: I, env: impl Fn(&str) -> Option<String>) -> Result<Cli, LoadError>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString>,
    {
        let argv = args.into_iter().map(Into::into).collect();
        load(argv, env, |path| std::fs::read_to_string(path))
    }
}

/// [`Cli::load_from`] with the file system as a parameter too.
fn load(
    argv: Vec<OsString>,
    env: impl Fn(&str) -> Option<String>,
    read: impl Fn(&Path) -> std::io::Result<String>,
) -> Result<Cli, LoadError> {
    let declared = Cli::command();
    // clap read the process environment when it built `declared`; the layers read `env`.
    let cmd = declared.clone().mut_args(|a| a.env(None));
    let given = cmd
        .clone()
        .try_get_matches_from(&argv)
        .map_err(|e| help_naming_variables(e, &declared, &argv))?;
    let on_command_line =
        |a: &Arg| given.value_source(a.get_id().as_str()) == Some(ValueSource::CommandLine);

    // The settings a config file may hold (not --config and --log-format).
    let keys = TlsArgs::augment_args(Config::augment_args(clap::Command::new("tracker")));
    // Each setting the command line leaves out, with the value a layer below gives it.
    let mut layered: Vec<(&Arg, String)> = Vec::new();
    for arg in declared.get_arguments().filter(|a| !on_command_line(a)) {
        let Some(var) = arg.get_env().and_then(OsStr::to_str) else {
            continue;
        };
        let Some(value) = env(var).filter(|v| !v.is_empty()) else {
            continue;
        };
        check(arg, &value).map_err(|m| Error::Config(format!("{var}: {m}")))?;
        layered.push((arg, value));
    }

    let path = given
        .get_one::<PathBuf>("config_file")
        .cloned()
        .or_else(|| {
            layered
                .iter()
                .find(|(a, _)| a.get_id() == "config_file")
                .map(|(_, v)| PathBuf::from(v))
        });
    if let Some(path) = path {
        let text = read(&path)
            .map_err(|e| Error::io(format!("reading config file {}", path.display()), e))?;
        for (line, key, value) in file::entries(&text)? {
            let at = |m: String| Error::Config(format!("config file, line {line} ({key}): {m}"));
            let Some(arg) = keys.get_arguments().find(|a| a.get_id() == key.as_str()) else {
                let known: Vec<_> = keys.get_arguments().map(|a| a.get_id().as_str()).collect();
                return Err(
                    at(format!("unknown key, expected one of {}", known.join(", "))).into(),
                );
            };
            let value = file::text(value).map_err(at)?;
            check(arg, &value).map_err(at)?;
            let from_env = layered.iter().any(|(a, _)| a.get_id() == arg.get_id());
            if !on_command_line(arg) && !from_env {
                layered.push((arg, value));
            }
        }
    }

    // The layered values go right after the program name: before a subcommand and its
    // positional arguments, where a flag is always a flag.
    let flags = layered.iter().filter_map(|(arg, value)| {
        let long = arg.get_long()?;
        Some(OsString::from(format!("--{long}={value}")))
    });
    let mut argv = argv;
    let at = argv.len().min(1);
    argv.splice(at..at, flags.collect::<Vec<_>>());
    let mut cli = Cli::from_arg_matches(&cmd.try_get_matches_from(argv)?)?;
    cli.settings.tls = std::mem::take(&mut cli.tls).files()?;
    cli.settings.validate()?;
    Ok(cli)
}

/// Runs `value` through the parser `arg` declares, as if it were given as the flag, so a
/// value from any layer meets the flag's rules. The message is clap's, on one line.
fn check(arg: &Arg, value: &str) -> Result<(), String> {
    let long = arg.get_long().unwrap_or_default();
    clap::Command::new("tracker")
        .arg(arg.clone().env(None))
        .try_get_matches_from(["tracker".to_string(), format!("--{long}={value}")])
        .map(drop)
        .map_err(|e| {
            let text = e.to_string();
            let first = text.split("\n\n").next().unwrap_or_default();
            let first = first.strip_prefix("error: ").unwrap_or(first);
            first
                .split('\n')
                .map(str::trim)
                .collect::<Vec<_>>()
                .join(" ")
        })
}

/// Help drawn from `declared`, which still names each option's variable (the command that
/// parsed has none); any other error as it is.
fn help_naming_variables(
    e: clap::Error,
    declared: &clap::Command,
    argv: &[OsString],
) -> clap::Error {
    use clap::error::ErrorKind::{DisplayHelp, DisplayHelpOnMissingArgumentOrSubcommand};
    if !matches!(
        e.kind(),
        DisplayHelp | DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        return e;
    }
    match declared.clone().try_get_matches_from(argv) {
        Err(help) if help.kind() == e.kind() => help,
        _ => e,
    }
}

/// `30s`, `2m`, `1h 30m`, `500ms`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim()).map_err(|e| format!("invalid duration {s:?}: {e}"))
}

/// `true`/`false` (also `1`/`0`, `yes`/`no`, `on`/`off`).
pub fn parse_bool(s: &str) -> Result<bool, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(format!("invalid boolean {s:?} (expected true or false)")),
    }
}

/// Reading the TOML config file.
mod file {
    use std::collections::BTreeMap;

    use toml::{Spanned, Value};

    use crate::Error;

    /// The file's settings in file order, each with the line it is on.
    pub(super) fn entries(text: &str) -> Result<Vec<(usize, String, Value)>, Error> {
        let table: BTreeMap<Spanned<String>, Value> =
            toml::from_str(text).map_err(|e| syntax_error(text, &e))?;
        let mut entries: Vec<_> = table
            .into_iter()
            .map(|(key, value)| (line_of(text, key.span().start), key.into_inner(), value))
            .collect();
        entries.sort_by_key(|e| e.0);
        Ok(entries)
    }

    /// A value as it would be written on the command line: `replication = 3` and
    /// `replication = "3"` mean the same.
    pub(super) fn text(value: Value) -> Result<String, String> {
        match value {
            Value::String(s) => Ok(s),
            Value::Integer(n) => Ok(n.to_string()),
            Value::Boolean(b) => Ok(b.to_string()),
            other => Err(format!(
                "expected a string, an integer or a boolean, found {}",
                other.type_str()
            )),
        }
    }

    fn line_of(text: &str, offset: usize) -> usize {
        text.bytes().take(offset).filter(|&b| b == b'\n').count() + 1
    }

    /// A TOML error as one line naming where in the file it is and, when the line sets a
    /// key, which key (the error alone says only what was wrong).
    fn syntax_error(text: &str, e: &toml::de::Error) -> Error {
        let Some(span) = e.span() else {
            return Error::Config(format!("config file: {}", e.message()));
        };
        let line = line_of(text, span.start);
        let key = text
            .lines()
            .nth(line - 1)
            .and_then(|l| l.split_once('='))
            .map(|(k, _)| k.trim())
            .filter(|k| !k.is_empty() && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'));
        match key {
            Some(k) => Error::Config(format!("config file, line {line} ({k}): {}", e.message())),
            None => Error::Config(format!("config file, line {line}: {}", e.message())),
        }
    }
}

#[cfg(test)]
mod tests;
