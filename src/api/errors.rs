//! Error mapping: request violations become INVALID_ARGUMENT with google.rpc.BadRequest.

use std::collections::HashMap;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::domain::Violation;

/// google.rpc.ErrorInfo domain for this service's errors.
pub const ERROR_DOMAIN: &str = "netpathway.v1";

/// INVALID_ARGUMENT listing every violation, with an ErrorInfo reason.
pub fn invalid_argument(violations: &[Violation]) -> Status {
    let mut details = ErrorDetails::new();
    for v in violations {
        details.add_bad_request_violation(v.field.clone(), v.description.clone());
    }
    let fields: Vec<&str> = violations.iter().map(|v| v.field.as_str()).collect();
    details.set_error_info(
        "INVALID_REQUEST",
        ERROR_DOMAIN,
        HashMap::from([("violation_count".to_string(), violations.len().to_string())]),
    );
    Status::with_error_details(
        Code::InvalidArgument,
        format!("request validation failed: {}", fields.join(", ")),
        details,
    )
}
