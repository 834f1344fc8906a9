//! The Tessera peer: it shares files (announces their manifests to the tracker), serves their
//! chunks to other peers over gRPC, and fetches files from several peers at once, checking
//! every chunk against its SHA-256 before it is written.
//!
//! # Layout
//! - [`auth`]: who may ask this peer for something: tickets, certificates, request proofs.
//! - [`cli`]: the command line documented in docs/reference.md (clap derive).
//! - [`commands`]: one function per subcommand; the only place that prints to stdout.
//! - [`home`]: the peer's home directory (identity, session, settings, store records,
//!   node.json), written atomically.
//! - [`identity`]: the home's own key and the tracker's certificate of it.
//! - [`tracker_client`]: the tracker's gRPC API with auth and fail-over; converts prost types
//!   to domain types at the edge.
//! - [`node`]: the node that `serve` runs (`node::run(config, listener, shutdown)`):
//!   serving, heartbeats, replication tasks, housekeeping.
//! - [`server`]: the node's Peer gRPC service (streams chunks from a `ChunkSource`).
//! - [`replica`]: the node's replica store and the replication tasks the tracker assigns.
//! - [`transport`]: how a getter fetches chunks (one trait, a gRPC implementation), its
//!   HTTP/2 tuning, and the message limit shared with the server.
//! - [`connector`]: the TCP connections of every gRPC channel, with TCP Fast Open.
//! - [`contacts`]: the peers this home can reach without a tracker.
//! - [`flood`]: search without a tracker: queries flooded over contacts, and their answers.
//! - [`download`]: the downloader (per-file state machine) and its chunk scheduler.
//! - [`metrics`]: Prometheus counters of this process and the node's `/metrics` endpoint.
//! - [`ratelimit`]: a token bucket shared by all transfers of one process.
//! - [`waiting`]: gets queued until a holder is back (`get --wait`), fetched by the node.
//! - [`upload_ledger`]: how often the node sent each chunk, for super-seeding.
//! - [`progress`]: indicatif bars fed from atomics the downloader updates.
//! - [`output`]: tables and JSON shapes of the commands.
//! - [`error`]: why a command failed ([`Error`]), which `main` turns into the exit code.

pub mod auth;
pub mod cli;
pub mod commands;
pub mod connector;
pub mod contacts;
pub mod download;
pub mod error;
pub mod flood;
pub mod folders;
pub mod home;
pub mod identity;
pub mod metrics;
pub mod node;
pub mod output;
pub mod progress;
pub mod ratelimit;
pub mod replica;
pub mod server;
pub mod tracker_client;
pub mod transport;
pub mod upload_ledger;
pub mod waiting;

pub use error::{Error, Result};

/// Locks `m`, taking the data of a poisoned lock as it is (a panicked holder leaves
/// nothing half-done that these plain maps and counters could not live with).
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Current time as Unix milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Formats Unix milliseconds as RFC 3339 (UTC, seconds), or `None` for 0 (never).
pub fn rfc3339_ms(ms: i64) -> Option<String> {
    if ms <= 0 {
        return None;
    }
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms as u64);
    Some(humantime::format_rfc3339_seconds(t).to_string())
}
