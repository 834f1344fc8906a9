//! What an audit sends a holder: the tracker fetches a chunk like any getter, so its
//! `GetChunks` carries a ticket naming the tracker's own key and a proof made with it. A
//! fake node records the request (the other harness tests run with audits off; audits end
//! to end, with real nodes, are in the peer's suite).

use std::pin::Pin;
use std::time::Duration;

use common::{Method, Proof, Ticket, TicketVerifier};
use futures::Stream;
use proto::peer::v1 as peer_pb;
use proto::tracker::v1 as pb;
use proto::tracker::v1::tracker_client::TrackerClient;
use tempfile::TempDir;
use tokio::sync::mpsc;
use tonic::{Request, Response, Status};
use tracker::Config;
use tracker::testing::InProcessTracker;

use crate::common::{announce, backend_url, heartbeat, manifest, peer_id, within};

type ChunkStream = Pin<Box<dyn Stream<Item = Result<peer_pb::Chunk, Status>> + Send>>;
type HoldingsStream = Pin<Box<dyn Stream<Item = Result<peer_pb::HoldingsUpdate, Status>> + Send>>;

/// A node that hands every `GetChunks` to the test and holds nothing.
struct Recorder(mpsc::UnboundedSender<peer_pb::GetChunksRequest>);

#[tonic::async_trait]
impl peer_pb::peer_server::Peer for Recorder {
    type GetChunksStream = ChunkStream;
    type HoldingsStream = HoldingsStream;

    async fn get_chunks(
        &self,
        req: Request<peer_pb::GetChunksRequest>,
    ) -> Result<Response<ChunkStream>, Status> {
        let _ = self.0.send(req.into_inner());
        Err(Status::unavailable("recorded"))
    }

    async fn holdings(
        &self,
        _req: Request<peer_pb::HoldingsRequest>,
    ) -> Result<Response<HoldingsStream>, Status> {
        Err(Status::unimplemented("no holdings stream"))
    }

    async fn query(
        &self,
        _request: Request<peer_pb::QueryRequest>,
    ) -> Result<Response<peer_pb::QueryReply>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn contacts(
        &self,
        _request: Request<peer_pb::ContactsRequest>,
    ) -> Result<Response<peer_pb::ContactsReply>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn chunk_map(
        &self,
        _request: Request<peer_pb::ChunkMapRequest>,
    ) -> Result<Response<peer_pb::ChunkMapReply>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn status(
        &self,
        _req: Request<peer_pb::StatusRequest>,
    ) -> Result<Response<peer_pb::StatusResponse>, Status> {
        Err(Status::unimplemented("no status"))
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[tokio::test(flavor = "multi_thread")]
async fn an_audit_should_prove_the_tracker_key_its_ticket_names() {
    within(async {
        let dir = TempDir::new().unwrap();
        let mut cfg = Config::ephemeral(dir.path());
        cfg.database_url = backend_url(&cfg.database_url).await;
        cfg.audit = true;
        let t = InProcessTracker::start(cfg).await.unwrap();
        let mut c = TrackerClient::connect(format!("http://{}", t.addr))
            .await
            .unwrap();
        let session = c
            .register(pb::Credentials {
                user: "alice".into(),
                password: "pw-of-alice".into(),
            })
            .await
            .unwrap()
            .into_inner();

        let (tx, mut rx) = mpsc::unbounded_channel();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let node_addr = listener.local_addr().unwrap().to_string();
        let node = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(peer_pb::peer_server::PeerServer::new(Recorder(tx)))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        let p = peer_id(1);
        heartbeat(&mut c, &session.token, &p, &node_addr).await;
        // A new claim is audited at once.
        let f = announce(&mut c, &session.token, &p, manifest("a.bin", 2, 1)).await;

        let req = tokio::time::timeout(Duration::from_secs(20), rx.recv())
            .await
            .expect("the tracker audits the new claim")
            .unwrap();
        let file = f.id.parse().unwrap();
        assert_eq!(req.file_id, f.id);
        assert!(req.certificate.is_none());
        let ticket = Ticket::try_from(req.ticket.as_ref().expect("a ticket")).unwrap();
        let tracker_key = TicketVerifier::from_public(&session.ticket_public_key).unwrap();
        let claims = tracker_key.verify(&ticket, &file, now_ms()).unwrap();
        assert_eq!(
            claims.key.as_slice(),
            session.ticket_public_key.as_ref(),
            "an audit's ticket names the tracker's own key"
        );
        let proof = Proof::try_from(req.proof.as_ref().expect("a proof")).unwrap();
        proof
            .verify(&claims.key, "ticket", Method::GetChunks, &file, now_ms())
            .expect("the proof is made with the key the ticket names, for this request");
        node.abort();
        t.stop().await.unwrap();
    })
    .await;
}
