//! What outside tools get from the tracker's port without our .proto files: the standard
//! gRPC health service (SERVING while the database answers) and server reflection.

use tempfile::TempDir;
use tokio_stream::StreamExt;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

use crate::common::TestTracker;

#[tokio::test]
async fn should_answer_grpc_health_checks_and_list_its_services_by_reflection() {
    let dir = TempDir::new().unwrap();
    let t = TestTracker::start(&dir).await;
    let channel = tonic::transport::Endpoint::from_shared(t.url(""))
        .unwrap()
        .connect()
        .await
        .unwrap();

    let mut health = HealthClient::new(channel.clone());
    // The status follows the database from its first ping on, which runs as the tracker
    // starts: wait for it (bounded), then every service reads SERVING.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    for service in ["", "tracker.v1.Tracker"] {
        loop {
            let answer = health
                .check(HealthCheckRequest {
                    service: service.into(),
                })
                .await;
            match answer {
                Ok(r) if r.get_ref().status == ServingStatus::Serving as i32 => break,
                other => assert!(
                    tokio::time::Instant::now() < deadline,
                    "service {service:?} never SERVING: {other:?}"
                ),
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
    let unknown = health
        .check(HealthCheckRequest {
            service: "no.such.Service".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);

    let mut reflection = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = reflection
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let answer = answers.next().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
        panic!("not a service list: {answer:?}");
    };
    let mut names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection",
            "tracker.v1.Tracker"
        ],
        "the tracker lists what it serves, not the peer's service"
    );
    t.stop().await;
}
