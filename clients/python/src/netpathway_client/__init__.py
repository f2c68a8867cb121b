"""net-pathway's Python client: the stubs generated from `proto/` (`netpathway.v1`), and the two
things they leave to every caller: reading an error's details (ErrorInfo, BadRequest, RetryInfo,
PreconditionFailure, ResourceInfo) and reading a ScreenCohort stream's answers, where one
patient's error comes in-stream as a google.rpc.Status."""

from netpathway_client.errors import (
    ERROR_DOMAIN,
    ErrorDetails,
    FieldViolation,
    PreconditionViolation,
    error_details,
    status_details,
)
from netpathway_client.screening import (
    NotScreened,
    Screened,
    screen_cohort,
    screen_cohort_async,
)

__all__ = [
    "ERROR_DOMAIN",
    "ErrorDetails",
    "FieldViolation",
    "NotScreened",
    "PreconditionViolation",
    "Screened",
    "error_details",
    "screen_cohort",
    "screen_cohort_async",
    "status_details",
]
