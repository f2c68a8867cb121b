"""The Python client against a running net-pathway: every RPC, a screened cohort, and the
details of its errors, as a hospital integration team would call them.

    NETPATHWAY_TARGET=127.0.0.1:50051 NETPATHWAY_EXAMPLES=examples/requests \
        python -m unittest discover -s clients/python/tests

The server must run without authentication (every caller holds every role) on a fresh
database: the registry checks expect no earlier enrolment for their patient.
"""

from __future__ import annotations

import asyncio
import os
import unittest
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
from google.protobuf import json_format
from google.type import date_pb2

from netpathway.v1 import (
    common_pb2,
    decision_log_service_pb2,
    decision_log_service_pb2_grpc,
    eligibility_service_pb2,
    eligibility_service_pb2_grpc,
    funding_service_pb2,
    funding_service_pb2_grpc,
    policy_service_pb2,
    policy_service_pb2_grpc,
    registry_service_pb2,
    registry_service_pb2_grpc,
    screening_service_pb2,
    screening_service_pb2_grpc,
)
from netpathway_client import (
    ERROR_DOMAIN,
    NotScreened,
    Screened,
    error_details,
    screen_cohort,
    screen_cohort_async,
)

TARGET = os.environ.get("NETPATHWAY_TARGET", "127.0.0.1:50051")
EXAMPLES = Path(os.environ.get("NETPATHWAY_EXAMPLES", "examples/requests"))
DEADLINE = 30.0
LU177 = common_pb2.THERAPY_PRRT_LU177_DOTATATE
REGISTRY = "non-gep-prrt-registry"


def example(name: str) -> eligibility_service_pb2.EvaluateEligibilityRequest:
    """A request from the README's examples, read from its JSON as grpcurl reads it."""
    request = eligibility_service_pb2.EvaluateEligibilityRequest()
    json_format.Parse((EXAMPLES / name).read_text(), request)
    return request


def ta539_patient() -> eligibility_service_pb2.EvaluateEligibilityRequest:
    """README: a progressive, well-differentiated, SSTR-positive (Krenning 4), metastatic
    small-bowel NET in England, Ki-67 8 %, on lanreotide: eligible for Lu-177 DOTATATE
    under NICE TA539."""
    request = example("ta539-small-bowel-england.json")
    request.request_id = str(uuid.uuid4())
    return request


class AgainstTheServer(unittest.TestCase):
    channel: grpc.Channel

    @classmethod
    def setUpClass(cls) -> None:
        cls.channel = grpc.insecure_channel(TARGET)
        grpc.channel_ready_future(cls.channel).result(timeout=DEADLINE)

    @classmethod
    def tearDownClass(cls) -> None:
        cls.channel.close()

    def setUp(self) -> None:
        self.eligibility = eligibility_service_pb2_grpc.EligibilityServiceStub(self.channel)
        self.funding = funding_service_pb2_grpc.FundingServiceStub(self.channel)
        self.screening = screening_service_pb2_grpc.ScreeningServiceStub(self.channel)
        self.policy = policy_service_pb2_grpc.PolicyServiceStub(self.channel)
        self.log = decision_log_service_pb2_grpc.DecisionLogServiceStub(self.channel)
        self.registry = registry_service_pb2_grpc.RegistryServiceStub(self.channel)

    def test_the_ta539_patient_is_eligible_and_routinely_commissioned_and_recorded(self) -> None:
        request = ta539_patient()
        answer = self.eligibility.EvaluateEligibility(request, timeout=DEADLINE)
        [lu177] = answer.therapies
        self.assertEqual(lu177.therapy, LU177)
        self.assertEqual(lu177.status, eligibility_service_pb2.ELIGIBILITY_STATUS_ELIGIBLE)
        self.assertTrue(lu177.criteria, "FULL answers explain each criterion")

        funding_request = funding_service_pb2.ClassifyFundingRequest(
            patient=request.patient, therapies=[LU177], request_id=str(uuid.uuid4())
        )
        funded = self.funding.ClassifyFunding(funding_request, timeout=DEADLINE)
        self.assertEqual(
            funded.therapies[0].route,
            funding_service_pb2.FUNDING_ROUTE_ROUTINELY_COMMISSIONED_NICE_TA,
        )

        # The decision log returns exactly what the caller was sent.
        stored = self.log.GetDecision(
            decision_log_service_pb2.GetDecisionRequest(decision_id=answer.decision_id),
            timeout=DEADLINE,
        )
        self.assertEqual(stored.decision.eligibility_response, answer)
        listed = self.log.ListDecisions(
            decision_log_service_pb2.ListDecisionsRequest(
                patient_nhs_number=request.patient.identifiers.nhs_number, page_size=1000
            ),
            timeout=DEADLINE,
        )
        self.assertIn(answer.decision_id, [d.decision_id for d in listed.decisions])
        replayed = self.log.ReplayDecision(
            decision_log_service_pb2.ReplayDecisionRequest(decision_id=answer.decision_id),
            timeout=DEADLINE,
        )
        self.assertFalse(any(t.changed for t in replayed.therapies))

        # A retry with the same request_id gets the recorded answer, not a second decision.
        again = self.eligibility.EvaluateEligibility(request, timeout=DEADLINE)
        self.assertEqual(again.decision_id, answer.decision_id)

    def test_a_shared_answer_cites_each_source_once_and_gives_numbers_as_numbers(self) -> None:
        request = ta539_patient()
        del request.therapies[:]
        request.citations = common_pb2.CITATION_STYLE_SHARED
        answer = self.eligibility.EvaluateEligibility(request, timeout=DEADLINE)
        statements = {s.criterion_id: s for s in answer.statements}
        sources = {s.id: s for s in answer.sources}
        self.assertEqual(len(statements), len(answer.statements), "each statement once")
        self.assertEqual(len(sources), len(answer.sources), "each source once")
        for therapy in answer.therapies:
            for criterion in therapy.criteria:
                self.assertIn(statements[criterion.criterion_id].source_id, sources)
        ki67 = [
            value
            for therapy in answer.therapies
            for criterion in therapy.criteria
            for value in criterion.values_used
            if value.field == "patient.tumour.ki67_percent"
        ]
        self.assertTrue(ki67)
        self.assertEqual((ki67[0].quantity.value, ki67[0].quantity.unit), (8.0, "%"))

    def test_ki67_of_140_percent_is_refused_with_its_field_violation(self) -> None:
        with self.assertRaises(grpc.RpcError) as refused:
            self.eligibility.EvaluateEligibility(example("invalid-ki67.json"), timeout=DEADLINE)
        details = error_details(refused.exception)
        self.assertEqual(details.code, grpc.StatusCode.INVALID_ARGUMENT)
        self.assertEqual((details.reason, details.domain), ("INVALID_REQUEST", ERROR_DOMAIN))
        self.assertEqual(
            [v.field for v in details.field_violations], ["patient.tumour.ki67_percent"]
        )
        self.assertEqual(details.metadata["violation_count"], "1")

    def test_an_unknown_decision_is_not_found_by_its_resource_name(self) -> None:
        missing = str(uuid.uuid4())
        with self.assertRaises(grpc.RpcError) as refused:
            self.log.GetDecision(
                decision_log_service_pb2.GetDecisionRequest(decision_id=missing),
                timeout=DEADLINE,
            )
        details = error_details(refused.exception)
        self.assertEqual(details.code, grpc.StatusCode.NOT_FOUND)
        self.assertEqual(details.reason, "DECISION_NOT_FOUND")
        self.assertEqual(details.resource_name, f"decisions/{missing}")

    def test_the_active_policy_describes_every_therapy_with_its_sources(self) -> None:
        policy = self.policy.GetActivePolicy(
            policy_service_pb2.GetActivePolicyRequest(), timeout=DEADLINE
        )
        self.assertEqual(len(policy.therapies), len(common_pb2.Therapy.values()) - 1)
        self.assertTrue(policy.sources)
        self.assertTrue(policy.policy.version)

    def test_the_registry_closed_to_new_patients_keeps_those_agreed_before_the_hold(
        self,
    ) -> None:
        patient = registry_service_pb2.RegistryPatient(nhs_number="9434765870")
        decided = date_pb2.Date(year=2024, month=3, day=14)
        reason = registry_service_pb2.ENROLMENT_REASON_NON_GEP_NET
        with self.assertRaises(grpc.RpcError) as closed:
            self.registry.EnrolPatient(
                registry_service_pb2.EnrolPatientRequest(
                    registry_id=REGISTRY,
                    patient=patient,
                    reason=reason,
                    mdt_reference="RF-NET-MDT 2026-11-20 #3",
                    decision_date=date_pb2.Date(year=2026, month=11, day=20),
                ),
                timeout=DEADLINE,
            )
        details = error_details(closed.exception)
        self.assertEqual(details.code, grpc.StatusCode.FAILED_PRECONDITION)
        self.assertEqual(details.reason, "REGISTRY_CLOSED")
        self.assertEqual(
            [(v.type, v.subject) for v in details.precondition_violations],
            [("REGISTRY_CLOSED", f"registries/{REGISTRY}")],
        )

        agreed = self.registry.RecordPriorAgreement(
            registry_service_pb2.RecordPriorAgreementRequest(
                registry_id=REGISTRY,
                patient=patient,
                reason=reason,
                mdt_reference="RF-NET-MDT 2024-03-14 #7",
                decision_date=decided,
            ),
            timeout=DEADLINE,
        ).enrolment
        self.assertTrue(agreed.agreed_before_hold)
        fetched = self.registry.GetEnrolment(
            registry_service_pb2.GetEnrolmentRequest(enrolment_id=agreed.enrolment_id),
            timeout=DEADLINE,
        ).enrolment
        self.assertEqual(fetched, agreed)
        listed = self.registry.ListEnrolments(
            registry_service_pb2.ListEnrolmentsRequest(registry_id=REGISTRY, page_size=1000),
            timeout=DEADLINE,
        )
        self.assertIn(agreed.enrolment_id, [e.enrolment_id for e in listed.enrolments])
        withdraw = registry_service_pb2.WithdrawEnrolmentRequest(
            enrolment_id=agreed.enrolment_id, reason="moved abroad"
        )
        withdrawn = self.registry.WithdrawEnrolment(withdraw, timeout=DEADLINE).enrolment
        self.assertEqual(withdrawn.state, registry_service_pb2.ENROLMENT_STATE_WITHDRAWN)
        with self.assertRaises(grpc.RpcError) as again:
            self.registry.WithdrawEnrolment(withdraw, timeout=DEADLINE)
        self.assertEqual(error_details(again.exception).reason, "ALREADY_WITHDRAWN")

    def cohort(self, size: int) -> Iterator[screening_service_pb2.ScreenCohortRequest]:
        """`size` patients, the TA539 patient over and over, with the Ki-67 140 % patient
        as patient 7."""
        for i in range(size):
            source = example("invalid-ki67.json") if i == 7 else ta539_patient()
            source.patient.identifiers.nhs_number = ""
            yield screening_service_pb2.ScreenCohortRequest(
                correlation_id=f"p{i}",
                patient=source.patient,
                view=common_pb2.EVALUATION_VIEW_BASIC,
            )

    def check_cohort(self, answers: list[Screened | NotScreened], size: int) -> None:
        self.assertEqual(sorted(a.correlation_id for a in answers), sorted(f"p{i}" for i in range(size)))
        refused = [a for a in answers if isinstance(a, NotScreened)]
        self.assertEqual([a.correlation_id for a in refused], ["p7"])
        self.assertEqual(refused[0].error.code, grpc.StatusCode.INVALID_ARGUMENT)
        self.assertEqual(
            [v.field for v in refused[0].error.field_violations],
            ["patient.tumour.ki67_percent"],
        )
        for answer in answers:
            if isinstance(answer, Screened):
                self.assertEqual(answer.funding.decision_id, answer.decision_id)
                self.assertEqual(len(answer.eligibility.therapies), len(common_pb2.Therapy.values()) - 1)

    def test_a_cohort_streams_and_one_invalid_patient_does_not_stop_it(self) -> None:
        answers = list(screen_cohort(self.screening, self.cohort(200), timeout=DEADLINE))
        self.check_cohort(answers, 200)

    def test_a_cohort_streams_on_an_asyncio_channel(self) -> None:
        async def run() -> list[Screened | NotScreened]:
            async with grpc.aio.insecure_channel(TARGET) as channel:
                stub = screening_service_pb2_grpc.ScreeningServiceStub(channel)
                return [a async for a in screen_cohort_async(stub, self.cohort(50), timeout=DEADLINE)]

        self.check_cohort(asyncio.run(run()), 50)


if __name__ == "__main__":
    unittest.main()
