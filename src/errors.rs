//! Every error the service answers: a gRPC status whose details carry google.rpc.ErrorInfo with
//! the service's domain and a [`Reason`], so a caller switches on the reason, never on the
//! message (AIP-193). Statuses are built here and nowhere else.

use std::collections::HashMap;

use tonic::codegen::http;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::domain::Violation;

/// google.rpc.ErrorInfo `domain` of every error: the service's name, DNS-style (AIP-193).
pub const ERROR_DOMAIN: &str = "net-pathway.nhs.uk";

/// The most field violations one error lists: their trailer stays well under the 8 KB that
/// common gRPC clients accept for metadata, whatever the request.
pub const MAX_REPORTED_VIOLATIONS: usize = 20;

macro_rules! reasons {
    ($($(#[$doc:meta])* $name:ident = $text:literal, $code:ident;)+) => {
        /// Why a call failed: ErrorInfo's `reason`. Each reason has one gRPC code.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum Reason {
            $($(#[$doc])* $name,)+
        }

        impl Reason {
            /// Every reason, for the test that keeps docs/clients.md in step.
            #[cfg(test)]
            pub const ALL: &[Reason] = &[$(Reason::$name),+];

            /// The UPPER_SNAKE_CASE reason ErrorInfo carries.
            pub fn as_str(self) -> &'static str {
                match self { $(Reason::$name => $text),+ }
            }

            /// The gRPC code a call failing for this reason ends with.
            pub fn code(self) -> Code {
                match self { $(Reason::$name => Code::$code),+ }
            }
        }
    };
}

reasons! {
    /// Field violations, listed in google.rpc.BadRequest.
    InvalidRequest = "INVALID_REQUEST", InvalidArgument;
    /// The request message does not parse.
    MalformedRequest = "MALFORMED_REQUEST", InvalidArgument;
    /// A unary call carried more than one request message.
    MoreThanOneMessage = "MORE_THAN_ONE_MESSAGE", InvalidArgument;
    /// The call carried no credential.
    CredentialMissing = "CREDENTIAL_MISSING", Unauthenticated;
    /// The credential was refused: malformed, expired, unknown key, wrong kind.
    CredentialRefused = "CREDENTIAL_REFUSED", Unauthenticated;
    /// The caller lacks the role the RPC needs (the metadata names it).
    RoleMissing = "ROLE_MISSING", PermissionDenied;
    /// The client certificate maps to no identity.
    CertificateNotMapped = "CERTIFICATE_NOT_MAPPED", PermissionDenied;
    /// The server is full; google.rpc.RetryInfo says when to try again.
    Overloaded = "OVERLOADED", ResourceExhausted;
    /// A ScreenCohort stream reached its patient limit; send the rest on a new stream.
    StreamLimitReached = "STREAM_LIMIT_REACHED", ResourceExhausted;
    /// The call's deadline passed before it could be answered; nothing was recorded.
    DeadlinePassed = "DEADLINE_PASSED", DeadlineExceeded;
    /// The caller read none of its answer in time, so it was dropped (it stays recorded).
    AnswerNotTaken = "ANSWER_NOT_TAKEN", DeadlineExceeded;
    /// The server is shutting down; try again, on another replica.
    ShuttingDown = "SHUTTING_DOWN", Unavailable;
    /// The decision log could not record the decision, so none was returned.
    DecisionLogUnavailable = "DECISION_LOG_UNAVAILABLE", Unavailable;
    /// The request_id was used before for a different request.
    RequestIdReused = "REQUEST_ID_REUSED", AlreadyExists;
    /// No decision has this id (google.rpc.ResourceInfo names it).
    DecisionNotFound = "DECISION_NOT_FOUND", NotFound;
    /// No enrolment has this id (google.rpc.ResourceInfo names it).
    EnrolmentNotFound = "ENROLMENT_NOT_FOUND", NotFound;
    /// The patient is already actively enrolled in the registry.
    AlreadyEnrolled = "ALREADY_ENROLLED", AlreadyExists;
    /// The enrolment is already withdrawn.
    AlreadyWithdrawn = "ALREADY_WITHDRAWN", FailedPrecondition;
    /// The registry has no state on the day under the active policy.
    RegistryNotInEffect = "REGISTRY_NOT_IN_EFFECT", FailedPrecondition;
    /// The registry is closed to new patients.
    RegistryClosed = "REGISTRY_CLOSED", FailedPrecondition;
    /// The registry's capacity for new patients is reached.
    RegistryCapacity = "REGISTRY_CAPACITY", FailedPrecondition;
    /// The path names no RPC of this service.
    NotAnRpc = "NOT_AN_RPC", Unimplemented;
    /// A stored record cannot be read: a fault to report, with the decision id.
    StoredRecordUnreadable = "STORED_RECORD_UNREADABLE", Internal;
    /// A fault of the server's own.
    Internal = "INTERNAL", Internal;
    /// An error raised below the service (the gRPC library's own), named by its code.
    Transport = "TRANSPORT", Unknown;
}

/// A failure for `reason`, with its ErrorInfo.
pub fn error(reason: Reason, message: impl Into<String>) -> Status {
    error_with(reason, message, ErrorDetails::new(), HashMap::new())
}

/// A failure for `reason` with other details (BadRequest, RetryInfo, PreconditionFailure,
/// ResourceInfo) and ErrorInfo metadata.
pub fn error_with(
    reason: Reason,
    message: impl Into<String>,
    mut details: ErrorDetails,
    metadata: HashMap<String, String>,
) -> Status {
    details.set_error_info(reason.as_str(), ERROR_DOMAIN, metadata);
    Status::with_error_details(reason.code(), message, details)
}

/// NOT_FOUND for a resource, named in google.rpc.ResourceInfo by its type (`decision`,
/// `enrolment`) and its resource name (`decisions/{id}`, `enrolments/{id}`).
pub fn not_found(reason: Reason, kind: &str, collection: &str, id: &str) -> Status {
    let mut details = ErrorDetails::new();
    let message = format!("no {kind} {id}");
    details.set_resource_info(kind, format!("{collection}/{id}"), "", message.clone());
    error_with(reason, message, details, HashMap::new())
}

/// INVALID_ARGUMENT listing the violations (the first [`MAX_REPORTED_VIOLATIONS`]; the
/// ErrorInfo's `violation_count` and the message give the total).
pub fn invalid_argument(violations: &[Violation]) -> Status {
    let mut details = ErrorDetails::new();
    let reported = &violations[..violations.len().min(MAX_REPORTED_VIOLATIONS)];
    for v in reported {
        details.add_bad_request_violation(v.field.clone(), v.description.clone());
    }
    let fields: Vec<&str> = reported.iter().map(|v| v.field.as_str()).collect();
    let message = if reported.len() < violations.len() {
        format!(
            "request validation failed: {} violations, the first {}: {}",
            violations.len(),
            reported.len(),
            fields.join(", ")
        )
    } else {
        format!("request validation failed: {}", fields.join(", "))
    };
    error_with(
        Reason::InvalidRequest,
        message,
        details,
        HashMap::from([("violation_count".to_string(), violations.len().to_string())]),
    )
}

/// Gives an error that left the service without ErrorInfo (one the gRPC library raised
/// itself, such as a request with no message) the service's ErrorInfo, reason
/// [`Reason::Transport`] with its code in the metadata, keeping its code and message. Headers
/// that carry no error, or an error with details, are left as they are.
pub fn give_error_info(headers: &mut http::HeaderMap) {
    const DETAILS: http::HeaderName = http::HeaderName::from_static("grpc-status-details-bin");
    if headers.contains_key(&DETAILS) {
        return;
    }
    let Some(status) = Status::from_header_map(headers) else {
        return;
    };
    if status.code() == Code::Ok {
        return;
    }
    let mut details = ErrorDetails::new();
    details.set_error_info(
        Reason::Transport.as_str(),
        ERROR_DOMAIN,
        HashMap::from([("code".to_string(), format!("{:?}", status.code()))]),
    );
    let given = Status::with_error_details(status.code(), status.message(), details);
    // The status's own headers (code, message, details) replace the bare ones; a header value
    // it cannot write leaves the error as it was.
    let _ = given.add_header(headers);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_is_upper_snake_case_and_unique() {
        let mut seen = std::collections::HashSet::new();
        for reason in Reason::ALL {
            let text = reason.as_str();
            assert!(
                text.bytes().all(|b| b.is_ascii_uppercase() || b == b'_'),
                "{text}"
            );
            assert!(seen.insert(text), "{text} twice");
            assert_ne!(reason.code(), Code::Ok);
        }
    }

    /// docs/clients.md's table is what callers switch on: it names every reason.
    #[test]
    fn the_client_guide_lists_every_reason() {
        let guide =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/clients.md"))
                .expect("docs/clients.md");
        for reason in Reason::ALL {
            assert!(
                guide.contains(&format!("| `{}` |", reason.as_str())),
                "docs/clients.md does not list {}",
                reason.as_str()
            );
        }
    }

    #[test]
    fn an_error_carries_its_reason_domain_and_code() {
        let status = error(Reason::ShuttingDown, "draining");
        assert_eq!(status.code(), Code::Unavailable);
        let info = status
            .get_error_details()
            .error_info()
            .cloned()
            .expect("info");
        assert_eq!(info.reason, "SHUTTING_DOWN");
        assert_eq!(info.domain, ERROR_DOMAIN);
    }

    #[test]
    fn a_bare_library_error_is_given_error_info_and_keeps_its_code_and_message() {
        let mut headers = http::HeaderMap::new();
        Status::internal("Missing request message.")
            .add_header(&mut headers)
            .expect("headers");
        give_error_info(&mut headers);
        let status = Status::from_header_map(&headers).expect("status");
        assert_eq!(status.code(), Code::Internal);
        assert_eq!(status.message(), "Missing request message.");
        let info = status
            .get_error_details()
            .error_info()
            .cloned()
            .expect("info");
        assert_eq!(info.reason, "TRANSPORT");
        assert_eq!(
            info.metadata.get("code").map(String::as_str),
            Some("Internal")
        );

        // An answer that is not an error, and an error that has details, are left alone.
        let mut ok = http::HeaderMap::new();
        Status::ok("").add_header(&mut ok).expect("headers");
        give_error_info(&mut ok);
        assert!(!ok.contains_key("grpc-status-details-bin"));
        let mut detailed = http::HeaderMap::new();
        error(Reason::Overloaded, "full")
            .add_header(&mut detailed)
            .expect("headers");
        let before = detailed.clone();
        give_error_info(&mut detailed);
        assert_eq!(detailed, before);
    }
}
