//! Error mapping: request violations become INVALID_ARGUMENT with google.rpc.BadRequest.

use std::collections::HashMap;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::domain::Violation;

/// google.rpc.ErrorInfo domain for this service's errors.
pub const ERROR_DOMAIN: &str = "netpathway.v1";

/// The most field violations one error lists: their trailer stays well under the 8 KB that
/// common gRPC clients accept for metadata, whatever the request.
pub const MAX_REPORTED_VIOLATIONS: usize = 20;

/// INVALID_ARGUMENT listing the violations (the first [`MAX_REPORTED_VIOLATIONS`]; the
/// ErrorInfo's `violation_count` and the message give the total), with an ErrorInfo reason.
pub fn invalid_argument(violations: &[Violation]) -> Status {
    let mut details = ErrorDetails::new();
    let reported = &violations[..violations.len().min(MAX_REPORTED_VIOLATIONS)];
    for v in reported {
        details.add_bad_request_violation(v.field.clone(), v.description.clone());
    }
    let fields: Vec<&str> = reported.iter().map(|v| v.field.as_str()).collect();
    details.set_error_info(
        "INVALID_REQUEST",
        ERROR_DOMAIN,
        HashMap::from([("violation_count".to_string(), violations.len().to_string())]),
    );
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
    Status::with_error_details(Code::InvalidArgument, message, details)
}
