//! The `tracker` binary: parses the command line, sets up logging and hands over to the
//! library (`tracker::run` for `serve`, `tracker::admin` for the rest).

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;
use tracker::config::ConfigArgs;
use tracker::{Config, admin};

/// Tessera tracker: the directory of users, peers, files and where every chunk lives.
#[derive(Parser, Debug)]
#[command(name = "tracker", version)]
struct Cli {
    /// TOML file with any of: listen, database_url, replication, peer_timeout,
    /// repair_grace, task_lease, open_registration, tls_cert, tls_key [env: TRACKER_CONFIG]
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Log lines on stderr as text or as one JSON object per line (filter with RUST_LOG)
    #[arg(
        long,
        env = "TRACKER_LOG_FORMAT",
        global = true,
        value_enum,
        default_value_t = LogFormat::Text,
        value_name = "FORMAT"
    )]
    log_format: LogFormat,
    #[command(flatten)]
    settings: ConfigArgs,
    #[command(subcommand)]
    command: Option<Command>,
}

/// How log lines are written.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum LogFormat {
    /// Human-readable lines
    Text,
    /// One JSON object per line, for log collectors
    Json,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the tracker (the default)
    Serve,
    /// Apply database migrations, then exit
    Migrate,
    /// Manage accounts
    #[command(subcommand)]
    User(UserCommand),
}

#[derive(Subcommand, Debug)]
enum UserCommand {
    /// Create an account; the password is the first line of stdin
    Add { name: String },
    /// List accounts
    List,
    /// Delete an account with its sessions, peers and holdings
    Remove { name: String },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let serving = matches!(cli.command, None | Some(Command::Serve));
    let default_level = if serving { "info" } else { "warn" };
    let fmt = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level)),
        );
    match cli.log_format {
        LogFormat::Json => fmt.json().init(),
        LogFormat::Text => fmt
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn load_config(cli: &Cli) -> anyhow::Result<Config> {
    let path = cli.config.clone().or_else(|| {
        std::env::var_os("TRACKER_CONFIG")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    });
    let text = match &path {
        Some(p) => Some(
            std::fs::read_to_string(p)
                .map_err(|e| anyhow::anyhow!("reading config file {}: {e}", p.display()))?,
        ),
        None => None,
    };
    Ok(Config::resolve(
        &cli.settings,
        |k| std::env::var(k).ok(),
        text.as_deref(),
    )?)
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let cfg = load_config(&cli)?;
    match cli.command {
        None | Some(Command::Serve) => serve(cfg).await,
        Some(Command::Migrate) => {
            admin::migrate(&cfg.database_url).await?;
            println!("migrations applied");
            Ok(())
        }
        Some(Command::User(UserCommand::Add { name })) => {
            let mut line = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut line)
                .map_err(|e| anyhow::anyhow!("reading the password from stdin: {e}"))?;
            let password = line.trim_end_matches(['\n', '\r']);
            admin::user_add(&cfg.database_url, &name, password).await?;
            println!("user {name} added");
            Ok(())
        }
        Some(Command::User(UserCommand::List)) => {
            let users = admin::user_list(&cfg.database_url).await?;
            let width = users.iter().map(|u| u.name.len()).max().unwrap_or(0).max(4);
            let mut out = std::io::stdout().lock();
            writeln!(out, "{:<width$}  CREATED", "NAME")?;
            for u in users {
                let created = chrono::DateTime::from_timestamp_millis(u.created_at_ms)
                    .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
                    .unwrap_or_default();
                writeln!(out, "{:<width$}  {created}", u.name)?;
            }
            Ok(())
        }
        Some(Command::User(UserCommand::Remove { name })) => {
            admin::user_remove(&cfg.database_url, &name).await?;
            println!("user {name} removed");
            Ok(())
        }
    }
}

async fn serve(cfg: Config) -> anyhow::Result<()> {
    // Migrate before binding, so a bad database URL fails before anyone is told to connect.
    admin::migrate(&cfg.database_url).await?;
    // Likewise unusable TLS files.
    if let Some(files) = &cfg.tls {
        tracker::tls::server_config(&files.cert, &files.key)?;
    }
    let listener = tokio::net::TcpListener::bind(&cfg.listen)
        .await
        .map_err(|e| anyhow::anyhow!("binding {}: {e}", cfg.listen))?;
    let addr = listener.local_addr()?;
    let scheme = if cfg.tls.is_some() { "https" } else { "http" };
    let token = CancellationToken::new();
    tracker::shutdown::spawn_signal_handler(token.clone());
    println!("tracker listening on {scheme}://{addr}");
    std::io::stdout().flush()?;
    tracker::run(cfg, listener, token).await?;
    Ok(())
}
