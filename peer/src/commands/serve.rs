//! `serve`: binds the node's sockets, starts the node ([`crate::node`]) and stops it on
//! Ctrl-C or SIGTERM (a second Ctrl-C exits at once).

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::Ctx;
use crate::cli::ServeArgs;
use crate::node::{self, Node, NodeConfig, NodeError, StreamLimits};
use crate::output;

pub async fn serve(cx: &Ctx, a: ServeArgs) -> crate::Result<()> {
    // Before the "serving on" line: a SIGTERM right after it must stop us cleanly.
    let mut signals = common::signals::StopSignals::register();
    let tls = node::tls_identity(a.tls_cert.as_deref(), a.tls_key.as_deref())?;
    let bind = |what, addr| async move {
        TcpListener::bind(addr)
            .await
            .map_err(|source| NodeError::Listen { what, addr, source })
    };
    let listener = bind("", a.listen).await?;
    if common::fastopen::accept_on(&listener) {
        tracing::info!("TCP Fast Open on: returning getters send their first request in the SYN");
    }
    let metrics = match a.metrics_addr {
        Some(addr) => Some(bind("for metrics ", addr).await?),
        None => None,
    };
    let limits = limits(&a);
    let config = NodeConfig {
        client_tls: cx.tls.clone(),
        advertise: a.advertise,
        tls,
        storage_quota: a.storage_quota,
        max_upload_rate: a.max_upload_rate,
        rescan_every: a.rescan_every,
        sync_every: a.sync_every,
        metrics,
        limits,
        learn_contacts: a.learn_contacts,
        waiting_every: a.waiting_every,
        ..NodeConfig::new(cx.home.clone(), cx.trackers.clone())
    };
    let contacts = crate::contacts::Contacts::new(&cx.home);
    for addr in &a.bootstrap {
        contacts.add(addr)?;
    }
    let node = Node::bind(config, listener).await?;
    output::println(&format!(
        "peer {} serving on {}",
        node.peer_id(),
        node.advertised()
    ));
    if let Some(url) = node.metrics_url() {
        output::println(&format!("metrics on {url}"));
        tracing::info!(url = %url, "metrics endpoint up");
    }
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        signals.recv().await;
        stop.cancel();
        signals.interrupted().await;
        std::process::exit(130);
    });
    Ok(node.run(shutdown).await?)
}

/// The node's limits: the defaults with the chunk-request flags applied.
fn limits(a: &ServeArgs) -> StreamLimits {
    let mut l = StreamLimits::default();
    l.uploads.total = a.max_uploads as usize;
    l.uploads.per_client = a.max_uploads_per_client as usize;
    l.upload_buffer = a.upload_buffer;
    l
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command};

    #[test]
    fn the_flags_defaults_are_the_nodes() {
        let Command::Serve(a) = Cli::try_parse_from(["peer", "serve"]).unwrap().command else {
            panic!("not serve")
        };
        let (got, want) = (limits(&a), StreamLimits::default());
        assert_eq!(got.uploads, want.uploads);
        assert_eq!(got.upload_buffer, want.upload_buffer);
    }
}
