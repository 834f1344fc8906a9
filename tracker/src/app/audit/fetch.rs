//! One audit on the wire: fetch one chunk from a holder's node with `GetChunks`, as any
//! getter would, and check its SHA-256 against the manifest. Like any getter, the tracker
//! proves the key its ticket names: its own, the ticket signing key.

use std::time::Duration;

use common::{FileId, Method, NodeKey, Sha256Digest, Ticket};
use proto::peer::v1 as pb;
use proto::peer::v1::peer_client::PeerClient;
use sha2::{Digest, Sha256};
use tonic::Code;
use tonic::transport::Endpoint;

/// How long connecting to a node may take; the rest of the audit has its own timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest chunk message accepted (the largest chunk size, plus framing).
const MAX_MESSAGE: usize = 64 << 20;

/// How audits reach nodes.
#[derive(Clone, Debug)]
pub struct Reach {
    /// The whole audit's time limit, connecting included.
    pub timeout: Duration,
    /// The CA that signs TLS nodes' certificates (`--peer-ca`).
    pub ca: Option<tonic::transport::Certificate>,
    /// The key audit requests are proven with (the tracker's ticket key): made once, as
    /// every audit's ticket names it.
    pub key: NodeKey,
}

impl Reach {
    /// From the settings; a CA file that cannot be read is logged, and TLS nodes are then
    /// not audited.
    pub fn new(timeout: Duration, ca: Option<&std::path::Path>, key: NodeKey) -> Self {
        let ca = ca.and_then(|p| match std::fs::read(p) {
            Ok(pem) => Some(tonic::transport::Certificate::from_pem(pem)),
            Err(e) => {
                tracing::error!(path = %p.display(), cause = %e, "cannot read --peer-ca: TLS nodes will not be audited");
                None
            }
        });
        Self { timeout, ca, key }
    }
}

/// What an audit found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Finding {
    /// The chunk came and its hash matches.
    Passed,
    /// The chunk came with other bytes: the holder lies (or its disk does).
    BadData,
    /// The node refused the chunk as not held (`NOT_FOUND`, `FAILED_PRECONDITION`), or
    /// ended the stream without it.
    NotHeld(String),
    /// Nothing (or not the whole chunk) within the audit timeout.
    Stalled,
    /// No answer that says anything about the data: connection refused, TLS failure, the
    /// node not ready or refusing the ticket. Not held against the holder.
    Unreachable(String),
    /// The node is at its stream caps (`RESOURCE_EXHAUSTED`): try later.
    Busy,
}

impl Finding {
    /// The label `/metrics` counts it under.
    pub fn label(&self) -> &'static str {
        match self {
            Finding::Passed => "passed",
            Finding::BadData => "bad_data",
            Finding::NotHeld(_) => "not_held",
            Finding::Stalled => "stalled",
            Finding::Unreachable(_) => "unreachable",
            Finding::Busy => "busy",
        }
    }
}

/// Fetches chunk `index` of `file` from the node at `addr` (its advertised address) and
/// checks it against `expected`. Never fails: every outcome is a [`Finding`].
pub async fn audit_chunk(
    addr: &str,
    file: FileId,
    index: u32,
    expected: Sha256Digest,
    ticket: &Ticket,
    how: &Reach,
) -> Finding {
    let timeout = how.timeout;
    let uri = if addr.starts_with("https://") || addr.starts_with("http://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    };
    let endpoint = match Endpoint::from_shared(uri) {
        Ok(e) => e.connect_timeout(CONNECT_TIMEOUT),
        Err(e) => return Finding::Unreachable(format!("bad address: {e}")),
    };
    let endpoint = if endpoint.uri().scheme_str() == Some("https") {
        let Some(ca) = &how.ca else {
            return Finding::Unreachable("a TLS node, and no --peer-ca to check it".into());
        };
        let tls = tonic::transport::ClientTlsConfig::new().ca_certificate(ca.clone());
        match endpoint.tls_config(tls) {
            Ok(e) => e,
            Err(e) => return Finding::Unreachable(format!("TLS: {e}")),
        }
    } else {
        endpoint
    };
    let fetch = async {
        let channel = endpoint
            .connect()
            .await
            .map_err(|e| Finding::Unreachable(format!("connecting: {e}")))?;
        let mut client = PeerClient::new(channel).max_decoding_message_size(MAX_MESSAGE);
        // Made once connected, so connecting does not eat into the proof's time window.
        let proof = how
            .key
            .prove(Method::GetChunks, &file, crate::model::now_ms());
        let req = pb::GetChunksRequest {
            file_id: file.to_string(),
            indices: vec![index],
            ticket: Some(ticket.into()),
            pick: 0,
            proof: Some((&proof).into()),
            certificate: None,
        };
        let mut stream = client
            .get_chunks(req)
            .await
            .map_err(|s| from_status(&s))?
            .into_inner();
        match stream.message().await {
            Ok(Some(chunk)) if chunk.index == index => {
                let got = Sha256Digest(Sha256::digest(&chunk.data).into());
                Ok(if got == expected {
                    Finding::Passed
                } else {
                    Finding::BadData
                })
            }
            // Another chunk than asked for is as good as wrong bytes.
            Ok(Some(_)) => Ok(Finding::BadData),
            Ok(None) => Err(Finding::NotHeld(
                "the stream ended without the chunk".into(),
            )),
            Err(s) => Err(from_status(&s)),
        }
    };
    match tokio::time::timeout(timeout, fetch).await {
        Ok(Ok(f) | Err(f)) => f,
        Err(_) => Finding::Stalled,
    }
}

/// What a refusal from the node says about its claim.
fn from_status(s: &tonic::Status) -> Finding {
    let msg = format!("{:?}: {}", s.code(), s.message());
    match s.code() {
        // An honest node refuses a valid id and index only when it lacks the chunk; a
        // message too large to decode (OUT_OF_RANGE) is not the chunk either.
        Code::NotFound
        | Code::FailedPrecondition
        | Code::InvalidArgument
        | Code::OutOfRange
        | Code::DataLoss => Finding::NotHeld(msg),
        Code::ResourceExhausted => Finding::Busy,
        Code::DeadlineExceeded => Finding::Stalled,
        _ => Finding::Unreachable(msg),
    }
}
