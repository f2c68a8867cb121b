"""ScreenCohort's answers as values: each patient is either Screened (both answers, one decision
id) or NotScreened (that patient's error, read like a call's); the stream carries on after a
NotScreened. An error that ends the stream itself is raised as grpc.RpcError, as for any call."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass

from netpathway.v1 import (
    eligibility_service_pb2,
    funding_service_pb2,
    screening_service_pb2,
    screening_service_pb2_grpc,
)
from netpathway_client.errors import ErrorDetails, status_details


@dataclass(frozen=True)
class Screened:
    """One patient's answers: eligibility and funding, both carrying the id of the one
    decision record that holds them."""

    correlation_id: str
    eligibility: eligibility_service_pb2.EvaluateEligibilityResponse
    funding: funding_service_pb2.ClassifyFundingResponse

    @property
    def decision_id(self) -> str:
        return self.eligibility.decision_id


@dataclass(frozen=True)
class NotScreened:
    """Why one patient was not decided: INVALID_ARGUMENT with its field violations, or
    UNAVAILABLE when the decision could not be recorded (send that patient again)."""

    correlation_id: str
    error: ErrorDetails


def _answer(answer: screening_service_pb2.ScreenCohortResponse) -> Screened | NotScreened:
    if answer.HasField("screened"):
        return Screened(
            answer.correlation_id, answer.screened.eligibility, answer.screened.funding
        )
    # The contract sets exactly one of `screened` and `error`.
    return NotScreened(answer.correlation_id, status_details(answer.error))


def screen_cohort(
    stub: screening_service_pb2_grpc.ScreeningServiceStub,
    patients: Iterable[screening_service_pb2.ScreenCohortRequest],
    *,
    timeout: float | None = None,
    metadata: tuple[tuple[str, str], ...] | None = None,
) -> Iterator[Screened | NotScreened]:
    """Screens `patients` on one stream of a blocking stub, yielding each answer as it comes
    (in any order: match them by correlation_id). Requests are read lazily, so a generator of
    thousands of patients is never held in memory, and the server's flow control paces it."""
    for answer in stub.ScreenCohort(iter(patients), timeout=timeout, metadata=metadata):
        yield _answer(answer)


async def screen_cohort_async(
    stub: screening_service_pb2_grpc.ScreeningServiceAsyncStub,
    patients: AsyncIterator[screening_service_pb2.ScreenCohortRequest]
    | Iterator[screening_service_pb2.ScreenCohortRequest],
    *,
    timeout: float | None = None,
    metadata: tuple[tuple[str, str], ...] | None = None,
) -> AsyncIterator[Screened | NotScreened]:
    """As screen_cohort, on a grpc.aio channel's stub; `patients` may be an async iterator."""
    call = stub.ScreenCohort(patients, timeout=timeout, metadata=metadata)
    async for answer in call:
        yield _answer(answer)
