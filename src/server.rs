//! Start-up: the tonic server with health, reflection (v1 and v1alpha), compression and the
//! three netpathway services, serving on a listener the caller bound (port 0 in tests).

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use tonic::codec::CompressionEncoding;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Server, ServerTlsConfig};

use crate::api::{
    AppState, DecisionLogApi, EligibilityApi, FundingApi, PolicyApi, RegistryApi, ScreeningApi,
};
use crate::metrics::ReloadCounters;
use crate::pb::decision_log_service_server::DecisionLogServiceServer;
use crate::pb::eligibility_service_server::EligibilityServiceServer;
use crate::pb::funding_service_server::FundingServiceServer;
use crate::pb::policy_service_server::PolicyServiceServer;
use crate::pb::registry_service_server::RegistryServiceServer;
use crate::pb::screening_service_server::ScreeningServiceServer;

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
    ($server:expr, $limits:expr) => {
        $server
            .max_decoding_message_size($limits.max_message_bytes)
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
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    serve(listener, state, None, shutdown).await
}

/// Like [`serve_with_listener`], with TLS (and, when the configuration names a client CA,
/// mutual TLS) when `tls` is given.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    tls: Option<ServerTlsConfig>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    serve_with_health(listener, None, state, tls, shutdown).await
}

/// Health name that stays SERVING while the process runs (until shutdown), whatever the
/// database does: the liveness probe's, so a database outage takes replicas out of the load
/// balancer (readiness) without restarting them.
pub(crate) const LIVENESS: &str = "liveness";

/// Like [`serve`], and also serves grpc.health.v1 alone, in plaintext, on `health_listener`:
/// the kubelet's native gRPC probes cannot speak TLS.
pub async fn serve_with_health(
    listener: TcpListener,
    health_listener: Option<TcpListener>,
    state: AppState,
    tls: Option<ServerTlsConfig>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    use tonic::server::NamedService;
    use tonic_health::ServingStatus;
    let services = [
        EligibilityServiceServer::<EligibilityApi>::NAME,
        FundingServiceServer::<FundingApi>::NAME,
        PolicyServiceServer::<PolicyApi>::NAME,
        DecisionLogServiceServer::<DecisionLogApi>::NAME,
        RegistryServiceServer::<RegistryApi>::NAME,
        ScreeningServiceServer::<ScreeningApi>::NAME,
    ];
    let (reporter, health) = tonic_health::server::health_reporter();
    for service in services.into_iter().chain([LIVENESS]) {
        reporter
            .set_service_status(service, ServingStatus::Serving)
            .await;
    }
    // Health follows the database: a replica that cannot record decisions must not get traffic.
    let watch_store = {
        let reporter = reporter.clone();
        let store = state.log.store().clone();
        let interval = state.limits.health_check_interval;
        tokio::spawn(async move {
            let mut serving = true;
            let mut ticker = tokio::time::interval(interval);
            loop {
                ticker.tick().await;
                let reachable = tokio::time::timeout(interval, store.ping())
                    .await
                    .is_ok_and(|r| r.is_ok());
                if reachable != serving {
                    serving = reachable;
                    let status = if serving {
                        ServingStatus::Serving
                    } else {
                        ServingStatus::NotServing
                    };
                    for service in services.into_iter().chain([""]) {
                        reporter.set_service_status(service, status).await;
                    }
                    if serving {
                        tracing::info!("database reachable again: health is SERVING");
                    } else {
                        tracing::error!("database unreachable: health is NOT_SERVING");
                    }
                }
            }
        })
    };

    let reflection = || {
        DESCRIPTOR_SETS
            .iter()
            .fold(tonic_reflection::server::Builder::configure(), |b, set| {
                b.register_encoded_file_descriptor_set(set)
            })
    };
    let reflection_v1 = reflection().build_v1()?;
    let reflection_v1alpha = reflection().build_v1alpha()?;

    let (health_stop, health_stopped) = tokio::sync::oneshot::channel::<()>();
    let probes = health_listener.map(|listener| {
        let health = health.clone();
        tokio::spawn(async move {
            let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
            let stopped = async {
                let _ = health_stopped.await;
            };
            if let Err(e) = Server::builder()
                .add_service(health)
                .serve_with_incoming_shutdown(incoming, stopped)
                .await
            {
                tracing::error!("health listener failed: {e}");
            }
        })
    });

    let stopping = std::sync::Arc::clone(&state.stopping);
    let draining = async move {
        shutdown.await;
        stopping.send_replace(true);
        watch_store.abort();
        for service in services.into_iter().chain(["", LIVENESS]) {
            reporter
                .set_service_status(service, ServingStatus::NotServing)
                .await;
        }
        tracing::info!("shutting down: health is NOT_SERVING, draining calls in flight");
    };

    let limits = state.limits.clone();
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let mut builder = Server::builder();
    if let Some(tls) = tls {
        builder = builder.tls_config(tls)?;
    }
    builder
        .timeout(limits.max_deadline)
        .http2_keepalive_interval(Some(limits.http2_keepalive))
        .http2_keepalive_timeout(Some(limits.http2_keepalive))
        .max_concurrent_streams(limits.http2.max_concurrent_streams)
        .initial_stream_window_size(limits.http2.stream_window_bytes)
        .initial_connection_window_size(limits.http2.connection_window_bytes)
        .http2_max_header_list_size(limits.http2.max_header_list_bytes)
        .layer(crate::gate::GateLayer::new(state.clone()))
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(compressed!(
            EligibilityServiceServer::new(EligibilityApi::new(state.clone())),
            limits
        ))
        .add_service(compressed!(
            FundingServiceServer::new(FundingApi::new(state.clone())),
            limits
        ))
        .add_service(compressed!(
            PolicyServiceServer::new(PolicyApi::new(state.clone())),
            limits
        ))
        .add_service(compressed!(
            DecisionLogServiceServer::new(DecisionLogApi::new(state.clone())),
            limits
        ))
        .add_service(compressed!(
            ScreeningServiceServer::new(ScreeningApi::new(state.clone())),
            limits
        ))
        .add_service(compressed!(
            RegistryServiceServer::new(RegistryApi::new(state)),
            limits
        ))
        .serve_with_incoming_shutdown(incoming, draining)
        .await?;
    let _ = health_stop.send(());
    if let Some(probes) = probes {
        let _ = probes.await;
    }
    Ok(())
}

/// Serves `GET /metrics` on `listener` until `shutdown` resolves.
pub async fn serve_admin(
    listener: tokio::net::TcpListener,
    state: AppState,
    reloads: Arc<ReloadCounters>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let (state, reloads) = (state.clone(), Arc::clone(&reloads));
            async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4",
                    )],
                    state.metrics_text(&reloads),
                )
            }
        }),
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}
