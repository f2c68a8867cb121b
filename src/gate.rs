//! The front door: every call's content type, credentials, role and admission are checked from
//! its headers, before a byte of its body is read, so a caller who may not call, or who comes
//! when the server is full, costs a header parse and nothing more.
//!
//! [`RPC_ROLES`] is the one place that says which role each RPC needs; a netpathway RPC missing
//! from it is refused (fail closed), and a test checks the table against the contract.

use std::pin::Pin;
use std::sync::{Arc, PoisonError};
use std::task::{Context, Poll};

use tonic::Status;
use tonic::body::Body;
use tonic::codegen::http;

use crate::admission::{Admission, FullAnswerPlace, HeldUntilSent};
use crate::api::{AppState, Call};
use crate::auth::Role;

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
                return Box::pin(std::future::ready(Ok(Status::unimplemented(format!(
                    "{path} is not an RPC of this service"
                ))
                .into_http())));
            }
            // Health and reflection: open, never shed, so probes answer under load.
            return Box::pin(self.inner.call(request));
        };
        let admitted = self.state.auth.authorize_headers(
            request.headers(),
            || peer_certs(request.extensions()),
            role,
        );
        let connection = remote_address(request.extensions());
        let admitted = admitted.and_then(|caller| Ok((caller, self.state.admit(connection)?)));
        match admitted {
            Ok((caller, admission)) => {
                request.extensions_mut().insert(caller);
                let answer = self.inner.call(request);
                if streams_answers(method) {
                    return Box::pin(async move {
                        let response = answer.await?;
                        Ok(response.map(|body| {
                            Body::new(Held {
                                body,
                                _admission: admission,
                            })
                        }))
                    });
                }
                let state = Arc::clone(&self.state);
                Box::pin(async move {
                    let response = answer.await?;
                    // The call is decided: an answer waiting for its caller to read it is not
                    // a call in progress, so a caller that never reads holds no place.
                    drop(admission);
                    let (mut parts, body) = response.into_parts();
                    let body = match parts
                        .extensions
                        .remove::<HeldUntilSent>()
                        .and_then(|held| held.take())
                    {
                        Some(place) => Body::new(Unread::new(body, place, &state)),
                        None => body,
                    };
                    Ok(http::Response::from_parts(parts, body))
                })
            }
            Err(status) => {
                let refusal = self.refuse(method, request.headers(), status);
                Box::pin(std::future::ready(Ok(refusal)))
            }
        }
    }
}

impl<S> Gate<S> {
    /// The call's answer when it is refused at the door: logged and counted like any other
    /// call, with its trace id.
    fn refuse(
        &self,
        method: &'static str,
        headers: &http::HeaderMap,
        status: Status,
    ) -> http::Response<Body> {
        let metadata = tonic::metadata::MetadataMap::from_headers(headers.clone());
        let (call, span) = Call::start(method, &metadata, &*self.state.metrics);
        let trace_id = span.in_scope(|| call.finish(status.code()));
        let status = match crate::telemetry::with_trace_id::<()>(Err(status), &trace_id) {
            Err(status) => status,
            Ok(_) => Status::internal("refused"),
        };
        status.into_http()
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

/// RPCs whose answer is a stream: the call is in progress, and holds its admission, until the
/// stream ends. A unary call gives its admission back once its answer is ready.
const STREAMING_ANSWERS: &[&str] = &["ScreenCohort"];

fn streams_answers(method: &str) -> bool {
    STREAMING_ANSWERS.contains(&method)
}

/// A streamed answer's body, holding the call's admission until the body is finished or
/// dropped.
struct Held {
    body: Body,
    _admission: Admission,
}

/// The largest piece of a FULL answer handed to the connection at once. HTTP/2 keeps what it
/// is handed until the caller's window lets it go, so an answer is handed over in copied
/// pieces: a caller that stops reading leaves at most a piece there, and the rest is dropped
/// with the answer when it has waited too long.
const PIECE_BYTES: usize = 16 * 1024;

/// A FULL answer on its way to its caller, holding its place among the FULL answers until it
/// is sent. If the caller has not read it within `--unread-answer-seconds` the answer is
/// dropped and its place given back; the caller then hears DEADLINE_EXCEEDED when it reads.
/// The decision was recorded before the answer was sent, so a retry with its request_id gets it.
struct Unread {
    sending: Arc<std::sync::Mutex<Sending>>,
    give_up: tokio::task::AbortHandle,
}

enum Sending {
    Answer {
        body: Body,
        /// What is left of a data frame being handed over in pieces.
        rest: tonic::codegen::Bytes,
        _place: FullAnswerPlace,
    },
    GaveUp(std::time::Duration),
    Ended,
}

impl Unread {
    fn new(body: Body, place: FullAnswerPlace, state: &AppState) -> Self {
        let sending = Arc::new(std::sync::Mutex::new(Sending::Answer {
            body,
            rest: tonic::codegen::Bytes::new(),
            _place: place,
        }));
        let waited = state.limits.unread_answer;
        let metrics = Arc::clone(&state.metrics);
        let watched = Arc::clone(&sending);
        let give_up = tokio::spawn(async move {
            tokio::time::sleep(waited).await;
            let mut sending = watched.lock().unwrap_or_else(PoisonError::into_inner);
            if matches!(*sending, Sending::Answer { .. }) {
                *sending = Sending::GaveUp(waited);
                metrics.unread_answer_dropped();
            }
        })
        .abort_handle();
        Unread { sending, give_up }
    }
}

impl Drop for Unread {
    fn drop(&mut self) {
        self.give_up.abort();
    }
}

impl http_body::Body for Unread {
    type Data = tonic::codegen::Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let mut sending = self.sending.lock().unwrap_or_else(PoisonError::into_inner);
        match &mut *sending {
            Sending::Answer { body, rest, .. } => {
                if !rest.is_empty() {
                    return Poll::Ready(Some(Ok(http_body::Frame::data(next_piece(rest)))));
                }
                match Pin::new(body).poll_frame(cx) {
                    Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                        Ok(mut data) => {
                            let piece = next_piece(&mut data);
                            *rest = data;
                            Poll::Ready(Some(Ok(http_body::Frame::data(piece))))
                        }
                        Err(frame) => Poll::Ready(Some(Ok(frame))),
                    },
                    Poll::Ready(None) => {
                        *sending = Sending::Ended;
                        Poll::Ready(None)
                    }
                    other => other,
                }
            }
            Sending::GaveUp(waited) => {
                let status = Status::deadline_exceeded(format!(
                    "the answer waited {} s for the caller to read it and was dropped; the decision is recorded: ask again with the same request_id to get it",
                    waited.as_secs()
                ));
                *sending = Sending::Ended;
                let mut trailers = http::HeaderMap::new();
                match status.add_header(&mut trailers) {
                    Ok(()) => Poll::Ready(Some(Ok(http_body::Frame::trailers(trailers)))),
                    Err(status) => Poll::Ready(Some(Err(status))),
                }
            }
            Sending::Ended => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &*self.sending.lock().unwrap_or_else(PoisonError::into_inner) {
            Sending::Answer { body, rest, .. } => rest.is_empty() && body.is_end_stream(),
            Sending::GaveUp(_) => false,
            Sending::Ended => true,
        }
    }
}

/// The next piece of `data`, at most `PIECE_BYTES`, copied so that it does not keep the whole
/// answer's buffer alive.
fn next_piece(data: &mut tonic::codegen::Bytes) -> tonic::codegen::Bytes {
    let piece = data.split_to(data.len().min(PIECE_BYTES));
    tonic::codegen::Bytes::copy_from_slice(&piece)
}

impl http_body::Body for Held {
    type Data = tonic::codegen::Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
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
