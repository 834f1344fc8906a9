//! The vocabulary shared by the tracker and the peer: identifiers, SHA-256 digests, file
//! manifests (how a file is cut into chunks and how each chunk is checked), chunk bitfields,
//! size and rate units, and the rules that make names from other machines safe to use.
//!
//! This crate knows nothing about gRPC, HTTP or SQL; the adapters convert at their edges.
//!
//! # Layout
//! - [`ids`]: `FileId` (content id) and `PeerId`.
//! - [`hash`]: the `Sha256Digest` type.
//! - [`manifest`]: the chunk layout ([`ChunkLayout`]), the content id, and streaming file
//!   hashing.
//! - [`bitfield`]: which chunks a holder has.
//! - [`collection`]: a shared folder's listing (relative paths, file ids, sizes), checked.
//! - [`filetype`]: the `type` of a file, from its extension.
//! - [`ticket`]: the tracker's signed, short-lived permission to fetch chunks of a file.
//! - [`identity`]: each peer's own key, the tracker's certificate of it, and the proof a
//!   request carries.
//! - [`units`]: `500M`, `2G`, `1.5GiB`, and human-readable output.
//! - [`names`]: which file names are valid, sanitising hostile ones, and escaping text for
//!   terminals.
//! - [`signals`]: Ctrl-C and SIGTERM, registered before a server says it is ready.
//! - [`telemetry`]: `--log-format` and the binaries' logging set-up.
//! - [`exposition`]: Prometheus text or OpenMetrics, as the scraper asks.
//! - [`fastopen`]: TCP Fast Open on the servers' listeners and the peer's connections.

pub mod bitfield;
pub mod collection;
pub mod exposition;
pub mod fastopen;
pub mod filetype;
pub mod hash;
pub mod identity;
pub mod ids;
pub mod manifest;
pub mod names;
pub mod signals;
pub mod telemetry;
pub mod ticket;
pub mod units;

pub use bitfield::Bitfield;
pub use filetype::FileType;
pub use hash::Sha256Digest;
pub use identity::{AuthError, Certificate, CertificateClaims, Method, NodeKey, Proof};
pub use ids::{FileId, PeerId};
pub use manifest::{ChunkLayout, Manifest, ManifestError};
pub use ticket::{Ticket, TicketClaims, TicketError, TicketSigner, TicketVerifier};
