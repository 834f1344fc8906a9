//! The `peer` binary: parse the command line, set up logging, run the command, and turn an
//! error into one `error: ...` line on stderr and exit code 1 (clap exits 2 on bad usage).

use std::process::ExitCode;

use clap::Parser;
use peer::cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_filter = match cli.command {
        Command::Serve(_) => "warn,peer=info",
        _ => "warn",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        survive_file_size_limit();
        peer::commands::run(cli).await
    });
    // Don't wait for lingering blocking tasks (hashing threads of a failed command).
    runtime.shutdown_timeout(std::time::Duration::from_millis(100));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.is::<peer::AlreadyReported>() => ExitCode::FAILURE,
        Err(e) => {
            peer::output::report_error(&e);
            ExitCode::FAILURE
        }
    }
}

/// A write past the file size limit (`ulimit -f`) raises SIGXFSZ, whose default action kills
/// the process without a word, leaving no error line. With a handler installed the write
/// fails with `EFBIG` instead, so the download reports it and keeps its part file. (Tokio
/// keeps its handler installed for the life of the process, so dropping the stream is fine.)
fn survive_file_size_limit() {
    use tokio::signal::unix::{SignalKind, signal};
    if let Err(e) = signal(SignalKind::from_raw(libc::SIGXFSZ)) {
        tracing::debug!("cannot handle SIGXFSZ: {e}");
    }
}
