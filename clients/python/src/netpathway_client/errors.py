"""An error's details, read from its google.rpc.Status (the `grpc-status-details-bin` trailer,
or a ScreenCohort answer's in-stream `error`) into plain values."""

from __future__ import annotations

from dataclasses import dataclass, field

import grpc
from google.rpc import error_details_pb2, status_pb2

# ErrorInfo.domain of every error net-pathway answers.
ERROR_DOMAIN = "net-pathway.nhs.uk"

_DETAILS_TRAILER = "grpc-status-details-bin"


@dataclass(frozen=True)
class FieldViolation:
    """One field of the request that was refused, and why (google.rpc.BadRequest)."""

    field: str
    description: str


@dataclass(frozen=True)
class PreconditionViolation:
    """A precondition that failed (google.rpc.PreconditionFailure): its type (the same as the
    reason), the resource it concerns (`registries/{id}`) and why."""

    type: str
    subject: str
    description: str


@dataclass(frozen=True)
class ErrorDetails:
    """What a failed call says about itself. `reason` (with `domain` ERROR_DOMAIN) is what to
    switch on; the message is for people."""

    code: grpc.StatusCode
    message: str
    reason: str = ""
    domain: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    field_violations: list[FieldViolation] = field(default_factory=list)
    retry_delay_seconds: float | None = None
    precondition_violations: list[PreconditionViolation] = field(default_factory=list)
    resource_name: str = ""


# google.rpc.Code and grpc.StatusCode number the codes alike.
_CODES = {code.value[0]: code for code in grpc.StatusCode}


def status_details(status: status_pb2.Status) -> ErrorDetails:
    """The details a google.rpc.Status carries (unknown detail types are skipped)."""
    reason, domain, metadata = "", "", {}
    violations: list[FieldViolation] = []
    preconditions: list[PreconditionViolation] = []
    retry: float | None = None
    resource = ""
    for any_detail in status.details:
        if any_detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            any_detail.Unpack(info)
            reason, domain, metadata = info.reason, info.domain, dict(info.metadata)
        elif any_detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            any_detail.Unpack(bad)
            violations += [FieldViolation(v.field, v.description) for v in bad.field_violations]
        elif any_detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info_retry = error_details_pb2.RetryInfo()
            any_detail.Unpack(info_retry)
            retry = info_retry.retry_delay.ToTimedelta().total_seconds()
        elif any_detail.Is(error_details_pb2.PreconditionFailure.DESCRIPTOR):
            failure = error_details_pb2.PreconditionFailure()
            any_detail.Unpack(failure)
            preconditions += [
                PreconditionViolation(v.type, v.subject, v.description) for v in failure.violations
            ]
        elif any_detail.Is(error_details_pb2.ResourceInfo.DESCRIPTOR):
            info_resource = error_details_pb2.ResourceInfo()
            any_detail.Unpack(info_resource)
            resource = info_resource.resource_name
    return ErrorDetails(
        code=_CODES.get(status.code, grpc.StatusCode.UNKNOWN),
        message=status.message,
        reason=reason,
        domain=domain,
        metadata=metadata,
        field_violations=violations,
        retry_delay_seconds=retry,
        precondition_violations=preconditions,
        resource_name=resource,
    )


def error_details(error: grpc.RpcError) -> ErrorDetails:
    """The details of a failed call, from a blocking (`grpc`) or an asyncio (`grpc.aio`) stub.
    An error without details (one raised by the client library itself, such as a deadline that
    passed before an answer) gives its code and message alone."""
    call: grpc.Call = error  # type: ignore[assignment]
    for key, value in call.trailing_metadata() or ():
        if key == _DETAILS_TRAILER and isinstance(value, bytes):
            return status_details(status_pb2.Status.FromString(value))
    return ErrorDetails(code=call.code(), message=call.details() or "")

