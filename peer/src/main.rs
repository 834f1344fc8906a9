//! The `peer` binary: parse the command line, set up logging, run the command, and turn an
//! error into one `error: ...` line on stderr and exit code 1 (clap exits 2 on bad usage;
//! a `get` stopped by Ctrl-C has said what it kept, and exits 130).

use std::process::ExitCode;

use clap::Parser;
use peer::cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Needs no home and no tracker: answer before either is touched.
    if let Command::Completions { shell } = cli.command {
        peer::output::print(&peer::cli::completions(shell));
        return ExitCode::SUCCESS;
    }
    if let Command::Serve(_) = cli.command {
        limit_malloc_arenas();
    }
    init_logging(&cli);

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
        // Each failed item has its line already.
        Err(peer::Error::AlreadyReported(_)) => ExitCode::FAILURE,
        Err(peer::Error::Interrupted) => ExitCode::from(130),
        Err(e) => {
            peer::output::report_error(&e);
            ExitCode::FAILURE
        }
    }
}

/// Logs to stderr, filtered by `RUST_LOG` (default: the node's own events for `serve`,
/// warnings otherwise), as text or JSON lines (`--log-format`).
fn init_logging(cli: &Cli) {
    let default_filter = match cli.command {
        Command::Serve(_) => "warn,peer=info",
        _ => "warn",
    };
    common::telemetry::init(cli.log_format, default_filter);
}

/// Two malloc arenas for the node instead of glibc's eight per core. Chunk buffers are a
/// megabyte or more, served from the arenas' heaps once glibc has seen a few freed; spread
/// over many arenas by the threads that read and send them, the holes they leave kept a
/// node tens of MiB above its idle size after each burst of uploads (measured: 20-50 MiB,
/// creeping up; with two, under 10). Must run before any other thread starts.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[allow(unsafe_code)]
    // SAFETY: mallopt takes no pointer; it is called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
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
