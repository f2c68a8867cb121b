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

use std::time::Duration;

use tonic::codec::CompressionEncoding;
use tonic::transport::{Channel, Endpoint};
use tonic::{IntoRequest, Request, Status};
use tonic_types::StatusExt;

use crate::pb;
use crate::pb::decision_log_service_client::DecisionLogServiceClient;
use crate::pb::eligibility_service_client::EligibilityServiceClient;
use crate::pb::funding_service_client::FundingServiceClient;
use crate::pb::policy_service_client::PolicyServiceClient;
use crate::pb::registry_service_client::RegistryServiceClient;
use crate::pb::screening_service_client::ScreeningServiceClient;

/// Connect timeout used by [`NetPathwayClient::connect`].
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Deadline sent with every call unless [`ClientOptions::deadline`] says otherwise.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(10);

/// Why a client could not be created.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid endpoint '{endpoint}': {source}")]
    InvalidEndpoint {
        endpoint: String,
        source: tonic::transport::Error,
    },
    #[error("cannot connect to {endpoint}: {source}")]
    Connect {
        endpoint: String,
        source: tonic::transport::Error,
    },
    #[error("the bearer token is not a valid header value")]
    InvalidToken,
}

impl std::fmt::Debug for ClientOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut out = f.debug_struct("ClientOptions");
        out.field("connect_timeout", &self.connect_timeout)
            .field("deadline", &self.deadline);
        #[cfg(feature = "gzip")]
        out.field("gzip", &self.gzip);
        #[cfg(feature = "tls")]
        out.field("tls", &self.tls.is_some());
        out.field(
            "bearer_token",
            &self.bearer_token.as_ref().map(|_| "(redacted)"),
        )
        .finish()
    }
}

type Authorization = Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>;

fn authorization(token: Option<&str>) -> Result<Authorization, ClientError> {
    token
        .map(|t| {
            let mut value: tonic::metadata::MetadataValue<tonic::metadata::Ascii> =
                format!("Bearer {t}")
                    .parse()
                    .map_err(|_| ClientError::InvalidToken)?;
            // Debug output and HTTP/2 header compression treat it as a secret.
            value.set_sensitive(true);
            Ok(value)
        })
        .transpose()
}

/// How the client connects and calls.
#[derive(Clone)]
pub struct ClientOptions {
    pub connect_timeout: Duration,
    /// Deadline for each call (sent as grpc-timeout so the server can honour it too).
    pub deadline: Duration,
    /// Compress requests and accept compressed responses with gzip.
    #[cfg(feature = "gzip")]
    pub gzip: bool,
    /// TLS settings (CA, domain name, and a client identity for mutual TLS); `None` for plaintext.
    #[cfg(feature = "tls")]
    pub tls: Option<tonic::transport::ClientTlsConfig>,
    /// Bearer token (a JWT from the hospital's identity provider) sent with every call as
    /// `authorization: Bearer <token>`. Replace it with [`NetPathwayClient::with_bearer_token`].
    pub bearer_token: Option<String>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            deadline: DEFAULT_DEADLINE,
            #[cfg(feature = "gzip")]
            gzip: false,
            #[cfg(feature = "tls")]
            tls: None,
            bearer_token: None,
        }
    }
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

/// A cheap-to-clone client for all net-pathway services over one HTTP/2 connection.
#[derive(Debug, Clone)]
pub struct NetPathwayClient {
    channel: Channel,
    options: ClientOptions,
    authorization: Authorization,
}

impl NetPathwayClient {
    /// Connects with [`ClientOptions::default`].
    pub async fn connect(endpoint: impl Into<String>) -> Result<Self, ClientError> {
        Self::connect_with(endpoint, ClientOptions::default()).await
    }

    /// Connects with the given options. `endpoint` is a URI such as `http://127.0.0.1:50051`.
    pub async fn connect_with(
        endpoint: impl Into<String>,
        options: ClientOptions,
    ) -> Result<Self, ClientError> {
        let endpoint = endpoint.into();
        let authorization = authorization(options.bearer_token.as_deref())?;
        #[cfg_attr(not(feature = "tls"), allow(unused_mut))]
        let mut builder = Endpoint::from_shared(endpoint.clone()).map_err(|source| {
            ClientError::InvalidEndpoint {
                endpoint: endpoint.clone(),
                source,
            }
        })?;
        #[cfg(feature = "tls")]
        if let Some(tls) = options.tls.clone() {
            builder = builder
                .tls_config(tls)
                .map_err(|source| ClientError::InvalidEndpoint {
                    endpoint: endpoint.clone(),
                    source,
                })?;
        }
        let channel = builder
            .connect_timeout(options.connect_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_while_idle(true)
            .connect()
            .await
            .map_err(|source| ClientError::Connect { endpoint, source })?;
        Ok(NetPathwayClient {
            channel,
            options,
            authorization,
        })
    }

    /// Wraps an existing channel (for TLS or custom settings).
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

    /// A unary request: the client's deadline and credential.
    fn request<T>(&self, message: impl IntoRequest<T>) -> Request<T> {
        let mut request = self.authorised(message.into_request());
        request.set_timeout(self.options.deadline);
        request
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
}

/// Typed methods: each sends the call with the client's deadline (and gzip if configured).
macro_rules! rpc {
    ($(#[$doc:meta])* $method:ident, $client:ident, $request:ident => $response:ident) => {
        impl NetPathwayClient {
            $(#[$doc])*
            pub async fn $method(&self, request: pb::$request) -> Result<pb::$response, Status> {
                let mut client = self.compress($client::new(self.channel.clone()), |c, encoding| {
                    c.send_compressed(encoding).accept_compressed(encoding)
                });
                Ok(client.$method(self.request(request)).await?.into_inner())
            }
        }
    };
}

rpc!(
    /// Which therapies the patient can be considered for.
    evaluate_eligibility, EligibilityServiceClient, EvaluateEligibilityRequest => EvaluateEligibilityResponse
);
rpc!(
    /// How each therapy would be funded.
    classify_funding, FundingServiceClient, ClassifyFundingRequest => ClassifyFundingResponse
);
rpc!(
    /// The active policy: version, hash, therapies, criteria, routes and sources.
    get_active_policy, PolicyServiceClient, GetActivePolicyRequest => GetActivePolicyResponse
);
rpc!(
    /// One stored decision.
    get_decision, DecisionLogServiceClient, GetDecisionRequest => GetDecisionResponse
);
rpc!(
    /// Stored decisions, filtered and paginated.
    list_decisions, DecisionLogServiceClient, ListDecisionsRequest => ListDecisionsResponse
);
rpc!(
    /// A stored decision re-evaluated under the active policy.
    replay_decision, DecisionLogServiceClient, ReplayDecisionRequest => ReplayDecisionResponse
);
rpc!(
    /// Enrols a patient in an audit registry.
    enrol_patient, RegistryServiceClient, EnrolPatientRequest => EnrolPatientResponse
);
rpc!(
    /// Records a patient agreed into a registry before its hold.
    record_prior_agreement, RegistryServiceClient, RecordPriorAgreementRequest => RecordPriorAgreementResponse
);
rpc!(
    /// One enrolment.
    get_enrolment, RegistryServiceClient, GetEnrolmentRequest => GetEnrolmentResponse
);
rpc!(
    /// Enrolments, newest first.
    list_enrolments, RegistryServiceClient, ListEnrolmentsRequest => ListEnrolmentsResponse
);
rpc!(
    /// Withdraws an enrolment.
    withdraw_enrolment, RegistryServiceClient, WithdrawEnrolmentRequest => WithdrawEnrolmentResponse
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
