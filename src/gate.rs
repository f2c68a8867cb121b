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
                    let (mut parts, body) = response.into_parts();
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

/// RPCs whose answer is a stream: the call holds its admission until the stream ends. A unary
/// call holds it until its answer is sent, or dropped unread ([`Unread`]).
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

/// The largest piece of an answer handed to the connection at once. Whatever hyper is handed
/// stays with the stream until the caller's window takes it, so an answer is handed over in
/// copied pieces: a caller that stops reading keeps at most a piece there, and the rest is
/// dropped with the answer.
const PIECE_BYTES: usize = 16 * 1024;

/// A unary answer on its way to its caller, holding the call's admission and, if it is FULL, its
/// place among the FULL answers, so the answers waiting for callers are bounded by those. If
/// the caller takes none of it for `--unread-answer-seconds`, the answer is dropped and its
/// places given back; the caller then hears DEADLINE_EXCEEDED when it next reads. What the call
/// recorded stays recorded.
struct Unread {
    sending: Arc<std::sync::Mutex<Sending>>,
    give_up: tokio::task::AbortHandle,
}

enum Sending {
    Answer {
        body: Body,
        /// What is left of a data frame being handed over in pieces.
        rest: tonic::codegen::Bytes,
        /// When the answer was ready, or the caller last took a piece.
        progress: tokio::time::Instant,
        /// The task waiting on the answer's body, woken if the answer is dropped.
        waker: Option<std::task::Waker>,
        _places: (Admission, Option<FullAnswerPlace>),
    },
    GaveUp(std::time::Duration),
    Ended,
}

impl Unread {
    /// Watches the answer: dropped once the caller has taken none of it for `patience`, and
    /// counted in `dropped`.
    fn new(
        body: Body,
        places: (Admission, Option<FullAnswerPlace>),
        patience: std::time::Duration,
        dropped: prometheus::IntCounter,
    ) -> Self {
        let sending = Arc::new(std::sync::Mutex::new(Sending::Answer {
            body,
            rest: tonic::codegen::Bytes::new(),
            progress: tokio::time::Instant::now(),
            waker: None,
            _places: places,
        }));
        let watched = Arc::clone(&sending);
        let give_up = tokio::spawn(async move {
            loop {
                let due = match &*watched.lock().unwrap_or_else(PoisonError::into_inner) {
                    Sending::Answer { progress, .. } => *progress + patience,
                    Sending::GaveUp(_) | Sending::Ended => return,
                };
                tokio::time::sleep_until(due).await;
                let mut sending = watched.lock().unwrap_or_else(PoisonError::into_inner);
                if let Sending::Answer {
                    progress, waker, ..
                } = &mut *sending
                    && *progress + patience <= tokio::time::Instant::now()
                {
                    let waker = waker.take();
                    *sending = Sending::GaveUp(patience);
                    dropped.inc();
                    if let Some(waker) = waker {
                        waker.wake();
                    }
                    return;
                }
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
            Sending::Answer {
                body,
                rest,
                progress,
                waker,
                ..
            } => {
                // Asked for more: the caller has taken what it was handed.
                *progress = tokio::time::Instant::now();
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
                        Err(trailers) => {
                            *sending = Sending::Ended;
                            Poll::Ready(Some(Ok(trailers)))
                        }
                    },
                    Poll::Ready(None) => {
                        *sending = Sending::Ended;
                        Poll::Ready(None)
                    }
                    Poll::Ready(Some(Err(status))) => {
                        *sending = Sending::Ended;
                        Poll::Ready(Some(Err(status)))
                    }
                    Poll::Pending => {
                        *waker = Some(cx.waker().clone());
                        Poll::Pending
                    }
                }
            }
            Sending::GaveUp(waited) => {
                let status = Status::deadline_exceeded(format!(
                    "the caller took none of the answer for {} s, so it was dropped; anything the call recorded stays recorded, and a decision asked again with the same request_id gets the same answer",
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
    use std::time::Duration;

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

    /// An answer that yields `frames`, then ends.
    struct Frames(std::collections::VecDeque<http_body::Frame<tonic::codegen::Bytes>>);

    impl http_body::Body for Frames {
        type Data = tonic::codegen::Bytes;
        type Error = Status;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
            Poll::Ready(self.0.pop_front().map(Ok))
        }
    }

    fn answer(bytes: usize) -> (Body, Vec<u8>) {
        let data: Vec<u8> = (0..bytes).map(|i| (i % 251) as u8).collect();
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
        let frames = [
            http_body::Frame::data(tonic::codegen::Bytes::from(data.clone())),
            http_body::Frame::trailers(trailers),
        ];
        (Body::new(Frames(frames.into())), data)
    }

    fn counter() -> prometheus::IntCounter {
        prometheus::IntCounter::new("dropped", "answers dropped").expect("counter")
    }

    /// A 40 KB answer is handed over as pieces of at most 16 KB that together are the answer,
    /// then its trailers; a caller that takes it all is not counted as not reading.
    #[tokio::test]
    async fn answers_are_handed_over_in_pieces() {
        use http_body_util::BodyExt;
        let (body, data) = answer(40 * 1024);
        let dropped = counter();
        let admissions = crate::admission::Admissions::new(8, Duration::from_millis(100));
        let admission = admissions.admit(None).expect("admitted");
        let mut unread = Unread::new(
            body,
            (admission, None),
            Duration::from_secs(60),
            dropped.clone(),
        );
        let mut sent = Vec::new();
        let mut pieces = Vec::new();
        let trailers = loop {
            let frame = unread.frame().await.expect("a frame").expect("no error");
            match frame.into_data() {
                Ok(piece) => {
                    pieces.push(piece.len());
                    sent.extend_from_slice(&piece);
                }
                Err(frame) => break frame.into_trailers().expect("trailers"),
            }
        };
        assert_eq!(pieces, [16 * 1024, 16 * 1024, 8 * 1024]);
        assert_eq!(sent, data);
        assert_eq!(trailers["grpc-status"], "0");
        assert!(unread.frame().await.is_none());
        assert_eq!(dropped.get(), 0);
        assert_eq!(
            admissions.places().available_permits(),
            8,
            "sent: admission back"
        );
    }

    /// An answer of which the caller takes nothing for its patience is dropped, with its
    /// admission and FULL place: the caller then hears DEADLINE_EXCEEDED, and the drop is
    /// counted.
    #[tokio::test]
    async fn an_answer_nobody_takes_is_dropped_with_its_place() {
        use http_body_util::BodyExt;
        let full = crate::admission::FullAnswers::new(1);
        let place = full
            .place(tokio::time::Instant::now() + Duration::from_secs(1))
            .await
            .expect("the place");
        let (body, _) = answer(40 * 1024);
        let dropped = counter();
        let admissions = crate::admission::Admissions::new(8, Duration::from_millis(100));
        let admission = admissions.admit(None).expect("admitted");
        let mut unread = Unread::new(
            body,
            (admission, Some(place)),
            Duration::from_millis(20),
            dropped.clone(),
        );
        let first = unread.frame().await.expect("a frame").expect("no error");
        assert_eq!(first.data_ref().map(|d| d.len()), Some(16 * 1024));
        // Nothing more is asked for, as when the caller's window stays shut.
        full.place(tokio::time::Instant::now() + Duration::from_secs(10))
            .await
            .expect("the place is given back");
        assert_eq!(dropped.get(), 1);
        assert_eq!(admissions.places().available_permits(), 8, "admission back");
        let frame = unread.frame().await.expect("a frame").expect("no error");
        let trailers = frame
            .into_trailers()
            .expect("trailers, not the rest of the answer");
        assert_eq!(trailers["grpc-status"], "4");
        assert!(unread.frame().await.is_none());
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
