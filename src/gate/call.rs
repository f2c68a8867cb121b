//! The call layer: each call's span, its metrics, its trace id and its one `call finished` line,
//! kept here for every RPC so that no handler opens, counts or logs its own call.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::Status;
use tonic::body::Body;
use tonic::codegen::http;

use crate::admission::Admission;
use crate::metrics::Metrics;

/// One call as operators see it: its `call finished` line and its metrics, written when the
/// call ends, inside the call's span (method, trace id, caller, decision id), which
/// [`Call::start`] makes and the gate runs the call in. A unary call ends when it answers; a
/// ScreenCohort stream when its trailers are sent. A call that is dropped before it ends (its
/// caller reset the stream, so hyper dropped the call) is logged and counted as CANCELLED, so a
/// caller's give-up is seen rather than lost from the logs and metrics.
pub struct Call {
    method: &'static str,
    started: std::time::Instant,
    trace_id: String,
    metrics: Arc<Metrics>,
    ended: bool,
}

impl Call {
    /// The call and its span. The span is returned rather than kept, so that it can be moved
    /// into the future it instruments: a clone would cost a unary call about 1k instructions.
    pub fn start(
        method: &'static str,
        headers: &http::HeaderMap,
        metrics: Arc<Metrics>,
    ) -> (Self, tracing::Span) {
        let started = std::time::Instant::now();
        let trace_id = crate::telemetry::trace_id(headers);
        let span = tracing::info_span!(
            "call",
            // Method and decision id are bare tokens: written as they are, not quoted and escaped.
            method = %method,
            trace_id = %trace_id,
            caller = tracing::field::Empty,
            decision_id = tracing::field::Empty,
        );
        let call = Call {
            method,
            started,
            trace_id,
            metrics,
            ended: false,
        };
        (call, span)
    }

    /// The trace id, for the answer's `x-trace-id`.
    pub fn trace_id(&self) -> &str {
        &self.trace_id
    }

    /// Counts the call and writes its `call finished` (or refused, or failed) line in the
    /// current span, which is the call's.
    pub fn finish(mut self, code: tonic::Code) {
        self.end(code);
    }

    fn end(&mut self, code: tonic::Code) {
        self.ended = true;
        let elapsed = self.started.elapsed();
        self.metrics.call(self.method, code, elapsed);
        crate::telemetry::call_finished(code, elapsed);
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        if !self.ended {
            self.end(tonic::Code::Cancelled);
        }
    }
}

/// The status an answer's headers carry: an error answered at once is trailers-only, its
/// `grpc-status` in the headers (gRPC over HTTP/2, "Responses"); any other answer's status comes
/// in its trailers.
pub fn status_in(headers: &http::HeaderMap) -> Option<tonic::Code> {
    // A ready-made header name: looking up by text parses and checks the name on every call.
    const GRPC_STATUS: http::HeaderName = http::HeaderName::from_static("grpc-status");
    headers
        .get(&GRPC_STATUS)
        .map(|value| tonic::Code::from_bytes(value.as_bytes()))
}

/// A streamed answer's body: holds the call's admission until the stream ends, and ends the
/// call, in its span, with the status its trailers carry, or as CANCELLED if the body is
/// dropped before them.
pub struct Streamed {
    body: Body,
    call: Option<Call>,
    span: tracing::Span,
    _admission: Admission,
}

impl Streamed {
    pub fn new(body: Body, call: Call, span: tracing::Span, admission: Admission) -> Self {
        Streamed {
            body,
            call: Some(call),
            span,
            _admission: admission,
        }
    }

    fn end(&mut self, code: tonic::Code) {
        if let Some(call) = self.call.take() {
            self.span.in_scope(|| call.finish(code));
        }
    }
}

impl Drop for Streamed {
    fn drop(&mut self) {
        if let Some(call) = self.call.take() {
            self.span.in_scope(|| drop(call));
        }
    }
}

impl http_body::Body for Streamed {
    type Data = tonic::codegen::Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let mut polled = Pin::new(&mut self.body).poll_frame(cx);
        match &mut polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_mut() {
                    let code = status_in(trailers).unwrap_or(tonic::Code::Unknown);
                    if code != tonic::Code::Ok {
                        crate::errors::give_error_info(trailers);
                    }
                    self.end(code);
                }
            }
            Poll::Ready(Some(Err(status))) => self.end(status.code()),
            // An answer that ends without trailers reaches its caller as an error.
            Poll::Ready(None) => self.end(tonic::Code::Unknown),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}
