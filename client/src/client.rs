//! The typed client: one connection, every service, the caller's deadline and credential.
//!
//! ```no_run
//! use net_pathway_client::{NetPathwayClient, pb};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let client = NetPathwayClient::connect("http://127.0.0.1:50051").await?;
//! let patient = pb::PatientProfile {
//!     demographics: Some(pb::Demographics { nation: pb::Nation::England as i32, age_years: Some(64), ..Default::default() }),
//!     tumour: Some(pb::Tumour {
//!         primary_site: pb::PrimarySite::JejunumIleum as i32,
//!         ki67_percent: Some(8.0),
//!         ..Default::default()
//!     }),
//!     ..Default::default()
//! };
//! let answer = client
//!     .evaluate_eligibility(pb::EvaluateEligibilityRequest {
//!         patient: Some(Box::new(patient)),
//!         therapies: vec![pb::Therapy::PrrtLu177Dotatate as i32],
//!         ..Default::default()
//!     })
//!     .await?;
//! for therapy in answer.therapies {
//!     println!("{}: {}", therapy.therapy().as_str_name(), therapy.summary);
//! }
//! # Ok(())
//! # }
//! ```

use std::time::{Duration, Instant};

use tonic::codec::CompressionEncoding;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::Channel;
use tonic::{Code, Request, Response, Status};
use tonic_types::StatusExt;

use crate::connect::{ClientBuilder, ClientError, ClientOptions};
use crate::pb;
use crate::pb::decision_log_service_client::DecisionLogServiceClient;
use crate::pb::eligibility_service_client::EligibilityServiceClient;
use crate::pb::funding_service_client::FundingServiceClient;
use crate::pb::policy_service_client::PolicyServiceClient;
use crate::pb::registry_service_client::RegistryServiceClient;
use crate::pb::screening_service_client::ScreeningServiceClient;

type Authorization = Option<MetadataValue<Ascii>>;

fn authorization(token: Option<&str>) -> Result<Authorization, ClientError> {
    token
        .map(|t| {
            let mut value: MetadataValue<Ascii> = format!("Bearer {t}")
                .parse()
                .map_err(|_| ClientError::InvalidToken)?;
            // Debug output and HTTP/2 header compression treat it as a secret.
            value.set_sensitive(true);
            Ok(value)
        })
        .transpose()
}

/// A field violation from an INVALID_ARGUMENT answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    /// Proto field path, for example "patient.tumour.ki67_percent".
    pub field: String,
    pub description: String,
}

/// The field violations in a status's google.rpc.BadRequest details (empty if none).
pub fn field_violations(status: &Status) -> Vec<FieldViolation> {
    status
        .get_error_details()
        .bad_request()
        .map(|b| {
            b.field_violations
                .iter()
                .map(|v| FieldViolation {
                    field: v.field.clone(),
                    description: v.description.clone(),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// An in-stream error (a `google.rpc.Status` in a ScreenCohort answer) as a [`Status`], so
/// [`field_violations`] and `tonic_types::StatusExt` read its details like a call's error.
pub fn stream_error(error: &tonic_types::pb::Status) -> Status {
    use prost::Message;
    Status::with_details(
        tonic::Code::from_i32(error.code),
        error.message.clone(),
        error.encode_to_vec().into(),
    )
}

/// A cheap-to-clone client for all net-pathway services, over one HTTP/2 connection or
/// balanced over several (see [`ClientBuilder`]).
///
/// Every call carries the client's deadline (unless the caller's request sets `grpc-timeout`)
/// and credential (unless it sets `authorization`), and is given up when its deadline passes,
/// also when no server can be reached. A call is tried again, up to
/// [`ClientOptions::retries`] times and within its deadline, when the server shed it before deciding anything (RESOURCE_EXHAUSTED or
/// UNAVAILABLE with a `google.rpc.RetryInfo`: after the delay it asks for), and, for calls that
/// are safe to repeat, when it did not answer (UNAVAILABLE without RetryInfo: after 100 ms).
/// Calls safe to repeat are the reads and the two evaluations; an evaluation without a
/// `request_id` is given a new one first, so a repeat that reaches a server which had already
/// decided it gets the recorded answer rather than a second decision. Registry writes are
/// repeated only when shed.
#[derive(Debug, Clone)]
pub struct NetPathwayClient {
    channel: Channel,
    options: ClientOptions,
    authorization: Authorization,
}

impl NetPathwayClient {
    /// A builder for `target` (`http(s)://host:port` or `dns:///host:port`).
    pub fn builder(target: impl Into<String>) -> ClientBuilder {
        ClientBuilder::new(target)
    }

    /// Connects to one `http(s)://` target, or resolves a `dns:///` one, with
    /// [`ClientOptions::default`].
    pub async fn connect(target: impl Into<String>) -> Result<Self, ClientError> {
        Self::builder(target).connect().await
    }

    /// Connects with the given options. `target` is a URI such as `http://127.0.0.1:50051`
    /// or `dns:///net-pathway:50051`.
    pub async fn connect_with(
        target: impl Into<String>,
        options: ClientOptions,
    ) -> Result<Self, ClientError> {
        Self::builder(target).options(options).connect().await
    }

    /// Wraps an existing channel (for custom transport settings).
    pub fn from_channel(channel: Channel, options: ClientOptions) -> Result<Self, ClientError> {
        let authorization = authorization(options.bearer_token.as_deref())?;
        Ok(NetPathwayClient {
            channel,
            options,
            authorization,
        })
    }

    /// The same connection, calling with another bearer token (tokens expire; connections need not).
    pub fn with_bearer_token(&self, token: &str) -> Result<Self, ClientError> {
        Ok(NetPathwayClient {
            channel: self.channel.clone(),
            options: ClientOptions {
                bearer_token: Some(token.to_string()),
                ..self.options.clone()
            },
            authorization: authorization(Some(token))?,
        })
    }

    /// The underlying channel, for other gRPC clients such as grpc.health.v1.
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    /// The options the client calls with.
    pub fn options(&self) -> &ClientOptions {
        &self.options
    }

    /// Adds the bearer token, if the client has one.
    fn authorised<T>(&self, mut request: Request<T>) -> Request<T> {
        if let Some(value) = &self.authorization {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        request
    }

    /// Sets gzip on a generated client when the options ask for it.
    #[cfg(feature = "gzip")]
    fn compress<C>(&self, client: C, configure: impl FnOnce(C, CompressionEncoding) -> C) -> C {
        if self.options.gzip {
            configure(client, CompressionEncoding::Gzip)
        } else {
            client
        }
    }

    /// Built without gzip: calls are sent and answered uncompressed.
    #[cfg(not(feature = "gzip"))]
    fn compress<C>(&self, client: C, _configure: impl FnOnce(C, CompressionEncoding) -> C) -> C {
        client
    }

    /// Sends `request` with `send`, and again while [`retry_after`] allows, all within one
    /// deadline: the caller's own `grpc-timeout` when its request sets one, else the client's.
    /// Each attempt is sent with what is left of it and given up when that runs out, also when
    /// no server can be reached at all. The caller's metadata (a `traceparent`, its own
    /// `authorization`) goes with every attempt; its extensions with the first only.
    async fn unary<Q, A, F, Fut>(&self, request: Request<Q>, send: F) -> Result<Response<A>, Status>
    where
        Q: Repeatable + Clone,
        F: Fn(Request<Q>) -> Fut,
        Fut: std::future::Future<Output = Result<Response<A>, Status>>,
    {
        let started = Instant::now();
        let (metadata, extensions, mut message) = request.into_parts();
        let deadline = metadata
            .get("grpc-timeout")
            .and_then(|v| v.to_str().ok())
            .and_then(grpc_timeout)
            .unwrap_or(self.options.deadline);
        if self.options.retries > 0 {
            message.name_the_request();
        }
        let mut tries = 0;
        let mut extensions = Some(extensions);
        loop {
            let left = deadline.saturating_sub(started.elapsed());
            let mut request = Request::from_parts(
                metadata.clone(),
                extensions.take().unwrap_or_default(),
                if tries < self.options.retries {
                    message.clone()
                } else {
                    std::mem::take(&mut message)
                },
            );
            request.set_timeout(left);
            if !request.metadata().contains_key("authorization") {
                request = self.authorised(request);
            }
            let result = match tokio::time::timeout(left, send(request)).await {
                Ok(result) => result,
                Err(_) => Err(Status::deadline_exceeded(format!(
                    "no answer within the call's deadline of {} ms",
                    deadline.as_millis()
                ))),
            };
            let status = match result {
                Err(status) if tries < self.options.retries => status,
                done => return done,
            };
            let Some(delay) = retry_after(&status, Q::REPEATABLE) else {
                return Err(status);
            };
            if started.elapsed() + delay >= deadline {
                return Err(status);
            }
            tokio::time::sleep(delay).await;
            tries += 1;
        }
    }
}

/// A `grpc-timeout` value (digits and a unit: H, M, S, m, u or n) as a duration.
fn grpc_timeout(value: &str) -> Option<Duration> {
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount.checked_mul(3600)?),
        "M" => Duration::from_secs(amount.checked_mul(60)?),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

/// How long to wait before trying a failed call again, or `None` if it must not be: a call the
/// server shed before deciding anything (its RetryInfo says when), or a repeatable call that
/// got no answer.
fn retry_after(status: &Status, repeatable: bool) -> Option<Duration> {
    let asked = status
        .get_error_details()
        .retry_info()
        .and_then(|r| r.retry_delay);
    match (status.code(), asked) {
        (Code::ResourceExhausted | Code::Unavailable, Some(delay)) => Some(delay),
        (Code::Unavailable, None) if repeatable => Some(Duration::from_millis(100)),
        _ => None,
    }
}

/// A request the client may send more than once.
pub(crate) trait Repeatable: Default {
    /// Whether a repeat after a lost answer changes nothing on the server.
    const REPEATABLE: bool;
    /// Gives the request the id that makes a repeat return the recorded answer, if it has none.
    fn name_the_request(&mut self) {}
}

macro_rules! repeatable {
    ($($request:ident: $repeatable:literal),+ $(,)?) => {
        $(impl Repeatable for pb::$request {
            const REPEATABLE: bool = $repeatable;
        })+
    };
}

repeatable!(
    GetActivePolicyRequest: true,
    GetDecisionRequest: true,
    ListDecisionsRequest: true,
    ReplayDecisionRequest: true,
    GetEnrolmentRequest: true,
    ListEnrolmentsRequest: true,
    EnrolPatientRequest: false,
    RecordPriorAgreementRequest: false,
    WithdrawEnrolmentRequest: false,
);

/// The evaluations: repeatable once they carry a `request_id`, which they are given if they
/// have none.
macro_rules! named_by_request_id {
    ($($request:ident),+ $(,)?) => {
        $(impl Repeatable for pb::$request {
            const REPEATABLE: bool = true;
            fn name_the_request(&mut self) {
                if self.request_id.is_empty() {
                    self.request_id = new_request_id();
                }
            }
        })+
    };
}

named_by_request_id!(EvaluateEligibilityRequest, ClassifyFundingRequest);

/// A random (version 4) UUID, the form the contract asks a `request_id` to take.
fn new_request_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Typed methods: `method(message)` answers the message; `method_with(request)` takes a
/// `tonic::Request` whose metadata (a `traceparent`, a `grpc-timeout`) the caller sets, and
/// returns the `tonic::Response`, whose metadata carries the call's `x-trace-id`.
macro_rules! rpc {
    ($(#[$doc:meta])* $method:ident, $with:ident, $client:ident, $request:ident => $response:ident) => {
        impl NetPathwayClient {
            $(#[$doc])*
            pub async fn $method(&self, request: pb::$request) -> Result<pb::$response, Status> {
                Ok(self.$with(Request::new(request)).await?.into_inner())
            }

            $(#[$doc])*
            ///
            /// With the caller's request metadata, answering the response's metadata too.
            pub async fn $with(
                &self,
                request: Request<pb::$request>,
            ) -> Result<Response<pb::$response>, Status> {
                self.unary(request, |request| {
                    let mut client = self.compress($client::new(self.channel.clone()), |c, encoding| {
                        c.send_compressed(encoding).accept_compressed(encoding)
                    });
                    async move { client.$method(request).await }
                })
                .await
            }
        }
    };
}

rpc!(
    /// Which therapies the patient can be considered for.
    evaluate_eligibility, evaluate_eligibility_with, EligibilityServiceClient, EvaluateEligibilityRequest => EvaluateEligibilityResponse
);
rpc!(
    /// How each therapy would be funded.
    classify_funding, classify_funding_with, FundingServiceClient, ClassifyFundingRequest => ClassifyFundingResponse
);
rpc!(
    /// The active policy: version, hash, therapies, criteria, routes and sources.
    get_active_policy, get_active_policy_with, PolicyServiceClient, GetActivePolicyRequest => GetActivePolicyResponse
);
rpc!(
    /// One stored decision.
    get_decision, get_decision_with, DecisionLogServiceClient, GetDecisionRequest => GetDecisionResponse
);
rpc!(
    /// Stored decisions, filtered and paginated.
    list_decisions, list_decisions_with, DecisionLogServiceClient, ListDecisionsRequest => ListDecisionsResponse
);
rpc!(
    /// A stored decision re-evaluated under the active policy.
    replay_decision, replay_decision_with, DecisionLogServiceClient, ReplayDecisionRequest => ReplayDecisionResponse
);
rpc!(
    /// Enrols a patient in an audit registry.
    enrol_patient, enrol_patient_with, RegistryServiceClient, EnrolPatientRequest => EnrolPatientResponse
);
rpc!(
    /// Records a patient agreed into a registry before its hold.
    record_prior_agreement, record_prior_agreement_with, RegistryServiceClient, RecordPriorAgreementRequest => RecordPriorAgreementResponse
);
rpc!(
    /// One enrolment.
    get_enrolment, get_enrolment_with, RegistryServiceClient, GetEnrolmentRequest => GetEnrolmentResponse
);
rpc!(
    /// Enrolments, newest first.
    list_enrolments, list_enrolments_with, RegistryServiceClient, ListEnrolmentsRequest => ListEnrolmentsResponse
);
rpc!(
    /// Withdraws an enrolment.
    withdraw_enrolment, withdraw_enrolment_with, RegistryServiceClient, WithdrawEnrolmentRequest => WithdrawEnrolmentResponse
);

impl NetPathwayClient {
    /// Screens a cohort: sends `patients` on one stream and returns the stream of answers, each
    /// carrying its request's correlation_id (answers may come in a different order). A
    /// patient's error arrives in-stream as that answer's `error`. No deadline is set: a cohort
    /// may take as long as it takes; drop the returned stream to cancel.
    pub async fn screen_cohort<S>(
        &self,
        patients: S,
    ) -> Result<tonic::Streaming<pb::ScreenCohortResponse>, Status>
    where
        S: tokio_stream::Stream<Item = pb::ScreenCohortRequest> + Send + 'static,
    {
        let mut client = self.compress(
            ScreeningServiceClient::new(self.channel.clone()),
            |c, encoding| c.send_compressed(encoding).accept_compressed(encoding),
        );
        let mut request = Request::new(patients);
        if let Some(value) = &self.authorization {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(client.screen_cohort(request).await?.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_are_read_in_every_unit() {
        assert_eq!(grpc_timeout("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(grpc_timeout("3M"), Some(Duration::from_secs(180)));
        assert_eq!(grpc_timeout("1S"), Some(Duration::from_secs(1)));
        assert_eq!(grpc_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(grpc_timeout("7u"), Some(Duration::from_micros(7)));
        assert_eq!(grpc_timeout("1n"), Some(Duration::from_nanos(1)));
        for bad in ["", "S", "12", "1x", "-1S", "99999999999999999999H"] {
            assert_eq!(grpc_timeout(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn only_a_shed_call_or_an_unanswered_repeatable_one_is_tried_again() {
        let shed = tonic_types::ErrorDetails::with_retry_info(Some(Duration::from_millis(250)));
        let exhausted = Status::with_error_details(Code::ResourceExhausted, "full", shed.clone());
        let unavailable = Status::with_error_details(Code::Unavailable, "draining", shed);
        for repeatable in [true, false] {
            assert_eq!(
                retry_after(&exhausted, repeatable),
                Some(Duration::from_millis(250))
            );
            assert_eq!(
                retry_after(&unavailable, repeatable),
                Some(Duration::from_millis(250))
            );
        }
        let refused = Status::unavailable("connection refused");
        assert_eq!(
            retry_after(&refused, true),
            Some(Duration::from_millis(100))
        );
        assert_eq!(retry_after(&refused, false), None);
        assert_eq!(retry_after(&Status::internal("bug"), true), None);
        assert_eq!(
            retry_after(&Status::resource_exhausted("no RetryInfo"), true),
            None
        );
    }
}
