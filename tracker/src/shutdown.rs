//! Turning Ctrl-C and SIGTERM into a graceful shutdown: the first cancels the token that
//! `run` watches, a second Ctrl-C exits at once.

use tokio_util::sync::CancellationToken;

/// Cancels `token` on the first Ctrl-C or SIGTERM; exits the process on a second Ctrl-C.
pub fn spawn_signal_handler(token: CancellationToken) {
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown requested (press Ctrl-C again to exit now)");
        token.cancel();
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("error: interrupted");
            std::process::exit(130);
        }
    });
}

#[cfg(unix)]
async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(e) => {
            tracing::warn!(cause = %e, "cannot watch SIGTERM; only Ctrl-C stops the tracker");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() {
    let _ = tokio::signal::ctrl_c().await;
}
