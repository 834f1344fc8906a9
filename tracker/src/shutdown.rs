//! Turning Ctrl-C and SIGTERM into a graceful shutdown: the first cancels the token that
//! `run` watches, a second Ctrl-C exits at once.

use common::signals::StopSignals;
use tokio_util::sync::CancellationToken;

/// Cancels `token` on the first Ctrl-C or SIGTERM; exits the process on a second Ctrl-C.
/// The handlers are installed before this returns, so call it before printing the
/// listening line.
pub fn spawn_signal_handler(token: CancellationToken) {
    let mut signals = StopSignals::register();
    tokio::spawn(async move {
        signals.recv().await;
        tracing::info!("shutdown requested (press Ctrl-C again to exit now)");
        token.cancel();
        signals.interrupted().await;
        eprintln!("error: interrupted");
        std::process::exit(130);
    });
}
