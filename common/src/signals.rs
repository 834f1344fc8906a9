//! Ctrl-C and SIGTERM as one awaitable "please stop", registered before a server says it is
//! ready: a supervisor that sends SIGTERM right after reading the ready line must get a
//! clean shutdown, not the default action (death by signal, exit status 143).

/// The process's stop signals, watched from the moment [`StopSignals::register`] returns.
pub struct StopSignals {
    #[cfg(unix)]
    interrupt: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    terminate: Option<tokio::signal::unix::Signal>,
}

impl StopSignals {
    /// Installs the handlers now (synchronously). Must be called inside a tokio runtime.
    /// A handler that cannot be installed is logged and left out; Ctrl-C still works
    /// through tokio's own handler then.
    pub fn register() -> StopSignals {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let watch = |kind: SignalKind, name: &str| match signal(kind) {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::warn!(cause = %e, "cannot watch {name}");
                    None
                }
            };
            StopSignals {
                interrupt: watch(SignalKind::interrupt(), "SIGINT"),
                terminate: watch(SignalKind::terminate(), "SIGTERM"),
            }
        }
        #[cfg(not(unix))]
        StopSignals {}
    }

    /// Waits for the next Ctrl-C or SIGTERM.
    pub async fn recv(&mut self) {
        #[cfg(unix)]
        {
            async fn next(s: &mut Option<tokio::signal::unix::Signal>) {
                match s {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending().await,
                }
            }
            if self.interrupt.is_none() {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    () = next(&mut self.terminate) => {}
                }
            } else {
                tokio::select! {
                    () = next(&mut self.interrupt) => {}
                    () = next(&mut self.terminate) => {}
                }
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }

    /// Waits for the next Ctrl-C only (the "press Ctrl-C again to exit now" signal).
    pub async fn interrupted(&mut self) {
        #[cfg(unix)]
        if let Some(s) = &mut self.interrupt {
            s.recv().await;
            return;
        }
        let _ = tokio::signal::ctrl_c().await;
    }
}
