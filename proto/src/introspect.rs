//! What outside tools ask of any gRPC server of ours, without our .proto files: server
//! reflection (`grpcurl list`, `grpcurl describe`) and the standard health service
//! (`grpc.health.v1.Health`, for load balancers and Kubernetes probes). Both the tracker and
//! the nodes serve them.

use tonic_health::pb::health_server::HealthServer;
use tonic_health::server::HealthReporter;
use tonic_reflection::server::v1::{ServerReflection, ServerReflectionServer};

/// The reflection service, listing `services` (the ones this server really serves, plus
/// health and reflection themselves) with their descriptors.
///
/// # Panics
/// Never in practice: the descriptors are compiled in, and a failure to decode them is a
/// build defect that every test run would show.
pub fn reflection(services: &[&str]) -> ServerReflectionServer<impl ServerReflection> {
    let mut b = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .with_service_name("grpc.health.v1.Health")
        .with_service_name("grpc.reflection.v1.ServerReflection");
    for s in services {
        b = b.with_service_name(*s);
    }
    b.build_v1()
        .expect("the compiled-in descriptors decode (build defect otherwise)")
}

/// The health service and the reporter that sets its statuses; every service starts
/// unknown until the server says it is serving.
pub fn health() -> (
    HealthReporter,
    HealthServer<impl tonic_health::pb::health_server::Health>,
) {
    tonic_health::server::health_reporter()
}

/// Sets `services` and the whole server ("") serving or not.
pub async fn report(reporter: &HealthReporter, services: &[&str], serving: bool) {
    let status = if serving {
        tonic_health::ServingStatus::Serving
    } else {
        tonic_health::ServingStatus::NotServing
    };
    reporter.set_service_status("", status).await;
    for s in services {
        reporter.set_service_status(*s, status).await;
    }
}
