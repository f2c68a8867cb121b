//! Start-up: the tonic server with health, reflection (v1 and v1alpha), compression and the
//! three netpathway services, serving on a listener the caller bound (port 0 in tests).

use std::future::Future;

use tokio::net::TcpListener;
use tonic::codec::CompressionEncoding;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;

use crate::api::{ActivePolicy, EligibilityApi, FundingApi, PolicyApi};
use crate::pb::eligibility_service_server::EligibilityServiceServer;
use crate::pb::funding_service_server::FundingServiceServer;
use crate::pb::policy_service_server::PolicyServiceServer;

/// Descriptor sets served by reflection: ours, health's, and google.rpc's (so grpcurl can
/// print BadRequest details).
const DESCRIPTOR_SETS: [&[u8]; 3] = [
    crate::FILE_DESCRIPTOR_SET,
    tonic_health::pb::FILE_DESCRIPTOR_SET,
    tonic_types::pb::FILE_DESCRIPTOR_SET,
];

/// Errors that stop the server.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("reflection setup failed: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("transport failed: {0}")]
    Transport(#[from] tonic::transport::Error),
}

macro_rules! compressed {
    ($server:expr) => {
        $server
            .accept_compressed(CompressionEncoding::Gzip)
            .accept_compressed(CompressionEncoding::Zstd)
            .send_compressed(CompressionEncoding::Gzip)
            .send_compressed(CompressionEncoding::Zstd)
    };
}

/// Serves until `shutdown` resolves, then stops accepting calls and lets calls in flight finish.
/// Health reports SERVING once the services are wired (a policy is already active: the caller
/// loaded it) and NOT_SERVING as soon as shutdown begins.
pub async fn serve_with_listener(
    listener: TcpListener,
    policy: ActivePolicy,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_serving::<EligibilityServiceServer<EligibilityApi>>()
        .await;
    reporter
        .set_serving::<FundingServiceServer<FundingApi>>()
        .await;
    reporter
        .set_serving::<PolicyServiceServer<PolicyApi>>()
        .await;

    let reflection = || {
        DESCRIPTOR_SETS
            .iter()
            .fold(tonic_reflection::server::Builder::configure(), |b, set| {
                b.register_encoded_file_descriptor_set(set)
            })
    };
    let reflection_v1 = reflection().build_v1()?;
    let reflection_v1alpha = reflection().build_v1alpha()?;

    let draining = async move {
        shutdown.await;
        reporter
            .set_not_serving::<EligibilityServiceServer<EligibilityApi>>()
            .await;
        reporter
            .set_not_serving::<FundingServiceServer<FundingApi>>()
            .await;
        reporter
            .set_not_serving::<PolicyServiceServer<PolicyApi>>()
            .await;
        reporter
            .set_service_status("", tonic_health::ServingStatus::NotServing)
            .await;
        tracing::info!("shutting down: health is NOT_SERVING, draining calls in flight");
    };

    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    Server::builder()
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(compressed!(EligibilityServiceServer::new(
            EligibilityApi::new(policy.clone())
        )))
        .add_service(compressed!(FundingServiceServer::new(FundingApi::new(
            policy.clone()
        ))))
        .add_service(compressed!(PolicyServiceServer::new(PolicyApi::new(
            policy
        ))))
        .serve_with_incoming_shutdown(incoming, draining)
        .await?;
    Ok(())
}
