//! The front door: every call's content type, credentials, role and admission are checked from
//! its headers, before a byte of its body is read, so a caller who may not call, or who comes
//! when the server is full, costs a header parse and nothing more.
//!
//! [`RPC_ROLES`] is the one place that says which role each RPC needs; a netpathway RPC missing
//! from it is refused (fail closed), and a test checks the table against the contract.
//!
//! The gate is also the call layer ([`call`]): every RPC runs in a span it opens (method, trace
//! id, caller, decision id), is counted and logged once when it ends, refused or answered, and
//! tells its caller its trace id. The handlers do none of this themselves.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::Status;
use tonic::body::Body;
use tonic::codegen::http;

mod call;
mod unread;

use crate::admission::HeldUntilSent;
use crate::api::AppState;
use crate::auth::Role;
use crate::errors::give_error_info;
use crate::telemetry::tell_trace_id;
use call::{Call, Streamed, status_in};
use unread::Unread;

/// Every RPC of the netpathway services (service, method) and the role its caller must hold.
/// The method is also the name its calls are logged and counted under.
pub const RPC_ROLES: &[(&str, &str, Role)] = &[
    ("EligibilityService", "EvaluateEligibility", Role::Evaluate),
    ("FundingService", "ClassifyFunding", Role::Evaluate),
    ("ScreeningService", "ScreenCohort", Role::Evaluate),
    ("PolicyService", "GetActivePolicy", Role::Evaluate),
    ("DecisionLogService", "GetDecision", Role::DecisionLogRead),
    ("DecisionLogService", "ListDecisions", Role::DecisionLogRead),
    (
        "DecisionLogService",
        "ReplayDecision",
        Role::DecisionLogRead,
    ),
    ("RegistryService", "EnrolPatient", Role::RegistryWrite),
    (
        "RegistryService",
        "RecordPriorAgreement",
        Role::RegistryWrite,
    ),
    ("RegistryService", "WithdrawEnrolment", Role::RegistryWrite),
    ("RegistryService", "GetEnrolment", Role::RegistryRead),
    ("RegistryService", "ListEnrolments", Role::RegistryRead),
];

/// The package every gated service is in: its paths are `/netpathway.v1.<Service>/<Method>`.
const PACKAGE_PREFIX: &str = "/netpathway.v1.";

/// The RPC a request path names, if it is one of the table's: its method name and role.
pub fn rpc_of(path: &str) -> Option<(&'static str, Role)> {
    let rest = path.strip_prefix(PACKAGE_PREFIX)?;
    let (service, method) = rest.split_once('/')?;
    RPC_ROLES
        .iter()
        .find(|(s, m, _)| *s == service && *m == method)
        .map(|(_, m, role)| (*m, *role))
}

/// Whether the path is in a netpathway service (gated), whatever the method.
fn is_netpathway(path: &str) -> bool {
    path.starts_with(PACKAGE_PREFIX)
}

/// The layer that puts [`Gate`] in front of the services.
#[derive(Clone)]
pub struct GateLayer {
    state: Arc<AppState>,
}

impl GateLayer {
    pub fn new(state: AppState) -> Self {
        GateLayer {
            state: Arc::new(state),
        }
    }
}

impl<S> tower::Layer<S> for GateLayer {
    type Service = Gate<S>;

    fn layer(&self, inner: S) -> Gate<S> {
        Gate {
            inner,
            state: Arc::clone(&self.state),
        }
    }
}

/// Checks a call from its headers; passes it on with its caller (a [`crate::auth::Caller`] in
/// the request's extensions) and its admission (held by the answer's body until the call ends),
/// or answers it at once.
#[derive(Clone)]
pub struct Gate<S> {
    inner: S,
    state: Arc<AppState>,
}

type GateFuture<E> = Pin<Box<dyn Future<Output = Result<http::Response<Body>, E>> + Send>>;

impl<S> tower::Service<http::Request<Body>> for Gate<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>> + Send,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = GateFuture<S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        if !is_grpc(request.headers()) {
            return Box::pin(std::future::ready(Ok(unsupported_media_type())));
        }
        let path = request.uri().path();
        let Some((method, role)) = rpc_of(path) else {
            if is_netpathway(path) {
                // A netpathway path with no role in the table: refused, never open.
                return Box::pin(std::future::ready(Ok(crate::errors::error(
                    crate::errors::Reason::NotAnRpc,
                    format!("{path} is not an RPC of this service"),
                )
                .into_http())));
            }
            // Health and reflection: open, never shed, so probes answer under load.
            return Box::pin(self.inner.call(request));
        };
        let (call, span) = Call::start(method, request.headers(), Arc::clone(&self.state.metrics));
        let admitted = span.in_scope(|| {
            let caller = self.state.auth.authorize_headers(
                request.headers(),
                || peer_certs(request.extensions()),
                role,
            )?;
            let admission = self.state.admit(remote_address(request.extensions()))?;
            Ok::<_, Status>((caller, admission))
        });
        let (caller, admission) = match admitted {
            Ok(admitted) => admitted,
            Err(status) => {
                let code = status.code();
                let mut refusal = status.into_http();
                tell_trace_id(refusal.headers_mut(), call.trace_id());
                span.in_scope(|| call.finish(code));
                return Box::pin(std::future::ready(Ok(refusal)));
            }
        };
        span.record("caller", caller.identity.as_str());
        request.extensions_mut().insert(caller);
        let answer = span.in_scope(|| self.inner.call(request));
        if streams_answers(method) {
            let stream_span = span.clone();
            return Box::pin(tracing::Instrument::instrument(
                async move {
                    let mut response = answer.await?;
                    tell_trace_id(response.headers_mut(), call.trace_id());
                    if let Some(code) = status_in(response.headers()) {
                        // Refused before its first answer: the call ends here.
                        give_error_info(response.headers_mut());
                        call.finish(code);
                        return Ok(response);
                    }
                    Ok(response
                        .map(|body| Body::new(Streamed::new(body, call, stream_span, admission))))
                },
                span,
            ));
        }
        let state = Arc::clone(&self.state);
        Box::pin(tracing::Instrument::instrument(
            async move {
                let response = answer.await?;
                let (mut parts, body) = response.into_parts();
                tell_trace_id(&mut parts.headers, call.trace_id());
                let code = status_in(&parts.headers).unwrap_or(tonic::Code::Ok);
                if code != tonic::Code::Ok {
                    give_error_info(&mut parts.headers);
                }
                call.finish(code);
                let place = parts
                    .extensions
                    .remove::<HeldUntilSent>()
                    .and_then(|held| held.take());
                let body = Body::new(Unread::new(
                    body,
                    (admission, place),
                    state.limits.unread_answer,
                    state.metrics.unread_answers(),
                ));
                Ok(http::Response::from_parts(parts, body))
            },
            span,
        ))
    }
}

/// gRPC's content types: `application/grpc`, optionally `+proto` or another codec suffix
/// (gRPC over HTTP/2, "Requests"). gRPC-Web is a different protocol and is not served.
fn is_grpc(headers: &http::HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.strip_prefix("application/grpc").is_some_and(|rest| {
                rest.is_empty() || rest.starts_with('+') || rest.starts_with(';')
            }) && !v.starts_with("application/grpc-web")
        })
}

/// HTTP 415, as the gRPC protocol asks of a server sent a request that is not gRPC.
fn unsupported_media_type() -> http::Response<Body> {
    let mut response = http::Response::new(Body::empty());
    *response.status_mut() = http::StatusCode::UNSUPPORTED_MEDIA_TYPE;
    response.headers_mut().insert(
        http::header::ACCEPT,
        http::HeaderValue::from_static("application/grpc"),
    );
    response
}

fn peer_certs(
    extensions: &http::Extensions,
) -> Option<Arc<Vec<tonic::transport::CertificateDer<'static>>>> {
    use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
    extensions
        .get::<TlsConnectInfo<TcpConnectInfo>>()
        .and_then(TlsConnectInfo::peer_certs)
}

/// The caller's address, which names its connection.
fn remote_address(extensions: &http::Extensions) -> Option<std::net::SocketAddr> {
    use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
    extensions
        .get::<TcpConnectInfo>()
        .or_else(|| {
            extensions
                .get::<TlsConnectInfo<TcpConnectInfo>>()
                .map(TlsConnectInfo::get_ref)
        })
        .and_then(TcpConnectInfo::remote_addr)
}

/// RPCs whose answer is a stream: the call holds its admission until the stream ends. A unary
/// call holds it until its answer is sent, or dropped unread ([`Unread`]).
const STREAMING_ANSWERS: &[&str] = &["ScreenCohort"];

fn streams_answers(method: &str) -> bool {
    STREAMING_ANSWERS.contains(&method)
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    /// Every RPC the contract declares in a netpathway service has a role in the table, and
    /// the table names no RPC the contract lacks: a new RPC cannot be open by omission.
    #[test]
    fn every_rpc_in_the_contract_has_exactly_one_role() {
        let set = prost_types::FileDescriptorSet::decode(crate::FILE_DESCRIPTOR_SET)
            .expect("descriptor set");
        let mut declared = Vec::new();
        for file in set.file.iter().filter(|f| f.package() == "netpathway.v1") {
            for service in &file.service {
                for method in &service.method {
                    declared.push(format!(
                        "/netpathway.v1.{}/{}",
                        service.name(),
                        method.name()
                    ));
                }
            }
        }
        assert!(declared.len() >= 12, "{declared:?}");
        for path in &declared {
            assert!(rpc_of(path).is_some(), "{path} has no role in RPC_ROLES");
        }
        assert_eq!(
            declared.len(),
            RPC_ROLES.len(),
            "RPC_ROLES names an RPC the contract lacks"
        );
        for file in set.file.iter().filter(|f| f.package() == "netpathway.v1") {
            for method in file.service.iter().flat_map(|s| &s.method) {
                assert_eq!(
                    streams_answers(method.name()),
                    method.server_streaming(),
                    "{}: STREAMING_ANSWERS disagrees with the contract",
                    method.name()
                );
            }
        }
        assert_eq!(rpc_of("/netpathway.v1.EligibilityService/Nope"), None);
        assert_eq!(rpc_of("/grpc.health.v1.Health/Check"), None);
    }

    #[test]
    fn only_grpc_content_types_are_served() {
        let with = |value: &str| {
            let mut headers = http::HeaderMap::new();
            headers.insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_str(value).expect("header"),
            );
            is_grpc(&headers)
        };
        assert!(with("application/grpc"));
        assert!(with("application/grpc+proto"));
        assert!(!with("application/grpc-web"));
        assert!(!with("application/grpc-web+proto"));
        assert!(!with("application/json"));
        assert!(!with("application/grpcx"));
        assert!(!is_grpc(&http::HeaderMap::new()));
    }
}
