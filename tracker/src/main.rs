//! The `tracker` binary: parses the command line, sets up logging and hands over to the
//! library (`tracker::run` for `serve`, `tracker::admin` for the rest).

use std::io::{BufRead, Write};
use std::process::ExitCode;

use tokio_util::sync::CancellationToken;
use tracker::config::{Cli, Command, LoadError, UserCommand};
use tracker::{Config, admin};

fn main() -> ExitCode {
    keep_big_buffers_apart();
    let cli = match Cli::load_from(std::env::args_os(), |var| std::env::var(var).ok()) {
        Ok(cli) => cli,
        Err(LoadError::Usage(e)) => e.exit(),
        Err(LoadError::Settings(e)) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let serving = matches!(cli.command, None | Some(Command::Serve));
    let default_level = if serving { "info" } else { "warn" };
    common::telemetry::init(cli.log_format, default_level);
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

/// Buffers of 1 MiB and more get mappings of their own, given back when freed. glibc
/// otherwise raises that threshold to the largest buffer freed so far, and a giant
/// announce's copies (decoded, stored, fed to other trackers) then stay in the heap: after
/// one of 200,000 chunks the tracker kept 121 MiB resident instead of 66.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn keep_big_buffers_apart() {
    // SAFETY: mallopt takes two integers and changes only malloc's settings; no other
    // thread runs yet.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn keep_big_buffers_apart() {}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let cfg = cli.settings;
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
    let token = CancellationToken::new();
    tracker::shutdown::spawn_signal_handler(token.clone());
    // Migrate before binding, so a bad database URL fails before anyone is told to connect;
    // an unavailable database is waited for (logged), with the port still closed, so
    // clients try another tracker meanwhile.
    let migrated = tracker::when_db_up(&token, || admin::migrate(&cfg.database_url)).await?;
    if migrated.is_none() {
        return Ok(());
    }
    // Likewise unusable TLS files.
    if let Some(files) = &cfg.tls {
        tracker::tls::server_config(&files.cert, &files.key)?;
    }
    let listener = tokio::net::TcpListener::bind(&cfg.listen)
        .await
        .map_err(|e| anyhow::anyhow!("binding {}: {e}", cfg.listen))?;
    let addr = listener.local_addr()?;
    if common::fastopen::accept_on(&listener) {
        tracing::info!("TCP Fast Open on: returning clients send their first call in the SYN");
    } else {
        tracing::debug!("TCP Fast Open off (net.ipv4.tcp_fastopen lacks the server bit, 2)");
    }
    let scheme = if cfg.tls.is_some() { "https" } else { "http" };
    println!("tracker listening on {scheme}://{addr}");
    std::io::stdout().flush()?;
    tracker::run(cfg, listener, token).await?;
    Ok(())
}
