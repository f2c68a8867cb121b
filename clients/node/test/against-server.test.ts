// The TypeScript client against a running net-pathway: every RPC, a screened cohort, and the
// details of its errors, as a hospital integration team would call them.
//
//   NETPATHWAY_TARGET=127.0.0.1:50051 NETPATHWAY_EXAMPLES=examples/requests npm test --prefix clients/node
//
// The server must run without authentication (every caller holds every role) on a fresh
// database: the registry checks expect no earlier enrolment for their patient.

import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, it } from "node:test";

import { equals, fromJson, type JsonValue } from "@bufbuild/protobuf";
import { Code, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";

import { ERROR_DOMAIN, errorDetails, screenCohort, type ScreeningAnswer } from "../src/index.js";
import { CitationStyle, EvaluationView, Therapy } from "../src/gen/netpathway/v1/common_pb.js";
import { DecisionLogService } from "../src/gen/netpathway/v1/decision_log_service_pb.js";
import {
  EligibilityService,
  EligibilityStatus,
  EvaluateEligibilityResponseSchema,
  EvaluateEligibilityRequestSchema,
  type EvaluateEligibilityRequest,
} from "../src/gen/netpathway/v1/eligibility_service_pb.js";
import { FundingRoute, FundingService } from "../src/gen/netpathway/v1/funding_service_pb.js";
import { PolicyService } from "../src/gen/netpathway/v1/policy_service_pb.js";
import {
  EnrolmentReason,
  EnrolmentState,
  RegistryService,
} from "../src/gen/netpathway/v1/registry_service_pb.js";
import { ScreeningService } from "../src/gen/netpathway/v1/screening_service_pb.js";

const target = process.env.NETPATHWAY_TARGET ?? "127.0.0.1:50051";
const examples = process.env.NETPATHWAY_EXAMPLES ?? "examples/requests";
const timeoutMs = 30_000;
const registryId = "non-gep-prrt-registry";
// Every therapy the contract names, which an empty `therapies` list asks for.
const everyTherapy = Object.values(Therapy).filter((v) => typeof v === "number" && v !== 0).length;

const transport = createGrpcTransport({ baseUrl: `http://${target}` });
const eligibility = createClient(EligibilityService, transport);
const funding = createClient(FundingService, transport);
const screening = createClient(ScreeningService, transport);
const policy = createClient(PolicyService, transport);
const decisionLog = createClient(DecisionLogService, transport);
const registry = createClient(RegistryService, transport);

/** A request from the README's examples, read from its JSON (proto field names, as grpcurl
 * sends them): fromJson accepts both proto and JSON field names, so nothing is dropped. */
function example(name: string): EvaluateEligibilityRequest {
  const json = JSON.parse(readFileSync(join(examples, name), "utf8")) as JsonValue;
  return fromJson(EvaluateEligibilityRequestSchema, json);
}

/** README: a progressive, well-differentiated, SSTR-positive (Krenning 4), metastatic
 * small-bowel NET in England, Ki-67 8 %, on lanreotide: eligible for Lu-177 DOTATATE under
 * NICE TA539. */
function ta539Patient(): EvaluateEligibilityRequest {
  const request = example("ta539-small-bowel-england.json");
  request.requestId = randomUUID();
  return request;
}

async function refusal(call: Promise<unknown>) {
  try {
    await call;
  } catch (error) {
    return errorDetails(error);
  }
  assert.fail("the call was answered");
}

describe("the TypeScript client against the server", () => {
  it("the TA539 patient is eligible, routinely commissioned and recorded as answered", async () => {
    const request = ta539Patient();
    assert.equal(request.patient?.tumour?.ki67Percent, 8, "snake_case JSON fields are read");
    const answer = await eligibility.evaluateEligibility(request, { timeoutMs });
    const [lu177] = answer.therapies;
    assert.equal(lu177?.therapy, Therapy.PRRT_LU177_DOTATATE);
    assert.equal(lu177?.status, EligibilityStatus.ELIGIBLE);
    assert.ok(lu177.criteria.length > 0, "FULL answers explain each criterion");

    const funded = await funding.classifyFunding(
      { patient: request.patient, therapies: [Therapy.PRRT_LU177_DOTATATE], requestId: randomUUID() },
      { timeoutMs },
    );
    assert.equal(funded.therapies[0]?.route, FundingRoute.ROUTINELY_COMMISSIONED_NICE_TA);

    // The decision log returns exactly what the caller was sent.
    const stored = await decisionLog.getDecision({ decisionId: answer.decisionId }, { timeoutMs });
    const response = stored.decision?.response;
    assert.equal(response?.case, "eligibilityResponse");
    assert.ok(equals(EvaluateEligibilityResponseSchema, response.value, answer));
    const listed = await decisionLog.listDecisions(
      { patientNhsNumber: request.patient?.identifiers?.nhsNumber ?? "", pageSize: 1000 },
      { timeoutMs },
    );
    assert.ok(listed.decisions.some((d) => d.decisionId === answer.decisionId));
    const replayed = await decisionLog.replayDecision({ decisionId: answer.decisionId }, { timeoutMs });
    assert.ok(replayed.therapies.every((t) => !t.changed));

    // A retry with the same requestId gets the recorded answer, not a second decision.
    const again = await eligibility.evaluateEligibility(request, { timeoutMs });
    assert.equal(again.decisionId, answer.decisionId);
  });

  it("a shared answer cites each source once and gives numbers as numbers", async () => {
    const request = ta539Patient();
    request.therapies = [];
    request.citations = CitationStyle.SHARED;
    const answer = await eligibility.evaluateEligibility(request, { timeoutMs });
    const statements = new Map(answer.statements.map((s) => [s.criterionId, s]));
    const sources = new Map(answer.sources.map((s) => [s.id, s]));
    assert.equal(statements.size, answer.statements.length, "each statement once");
    assert.equal(sources.size, answer.sources.length, "each source once");
    for (const therapy of answer.therapies) {
      for (const criterion of therapy.criteria) {
        assert.ok(sources.has(statements.get(criterion.criterionId)?.sourceId ?? ""));
      }
    }
    const ki67 = answer.therapies
      .flatMap((t) => t.criteria)
      .flatMap((c) => c.valuesUsed)
      .find((v) => v.field === "patient.tumour.ki67_percent");
    assert.deepEqual([ki67?.quantity?.value, ki67?.quantity?.unit], [8, "%"]);
  });

  it("Ki-67 of 140 % is refused with its field violation", async () => {
    const details = await refusal(eligibility.evaluateEligibility(example("invalid-ki67.json"), { timeoutMs }));
    assert.equal(details.code, Code.InvalidArgument);
    assert.deepEqual([details.reason, details.domain], ["INVALID_REQUEST", ERROR_DOMAIN]);
    assert.deepEqual(
      details.fieldViolations.map((v) => v.field),
      ["patient.tumour.ki67_percent"],
    );
    assert.equal(details.metadata.violation_count, "1");
  });

  it("an unknown decision is NOT_FOUND, named by its resource name", async () => {
    const missing = randomUUID();
    const details = await refusal(decisionLog.getDecision({ decisionId: missing }, { timeoutMs }));
    assert.equal(details.code, Code.NotFound);
    assert.equal(details.reason, "DECISION_NOT_FOUND");
    assert.equal(details.resourceName, `decisions/${missing}`);
  });

  it("the active policy describes every therapy with its sources", async () => {
    const active = await policy.getActivePolicy({}, { timeoutMs });
    assert.equal(active.therapies.length, everyTherapy);
    assert.ok(active.sources.length > 0);
    assert.ok(active.policy?.version);
  });

  it("the registry closed to new patients keeps those agreed before the hold", async () => {
    const patient = { nhsNumber: "9434765889" };
    const reason = EnrolmentReason.NON_GEP_NET;
    const closed = await refusal(
      registry.enrolPatient(
        {
          registryId,
          patient,
          reason,
          mdtReference: "RF-NET-MDT 2026-11-20 #4",
          decisionDate: { year: 2026, month: 11, day: 20 },
        },
        { timeoutMs },
      ),
    );
    assert.equal(closed.code, Code.FailedPrecondition);
    assert.equal(closed.reason, "REGISTRY_CLOSED");
    assert.deepEqual(
      closed.preconditionViolations.map((v) => [v.type, v.subject]),
      [["REGISTRY_CLOSED", `registries/${registryId}`]],
    );

    const agreed = (
      await registry.recordPriorAgreement(
        {
          registryId,
          patient,
          reason,
          mdtReference: "RF-NET-MDT 2024-03-14 #8",
          decisionDate: { year: 2024, month: 3, day: 14 },
        },
        { timeoutMs },
      )
    ).enrolment;
    assert.ok(agreed?.agreedBeforeHold);
    const fetched = await registry.getEnrolment({ enrolmentId: agreed.enrolmentId }, { timeoutMs });
    assert.equal(fetched.enrolment?.enrolmentId, agreed.enrolmentId);
    const listed = await registry.listEnrolments({ registryId, pageSize: 1000 }, { timeoutMs });
    assert.ok(listed.enrolments.some((e) => e.enrolmentId === agreed.enrolmentId));
    const withdraw = { enrolmentId: agreed.enrolmentId, reason: "moved abroad" };
    const withdrawn = await registry.withdrawEnrolment(withdraw, { timeoutMs });
    assert.equal(withdrawn.enrolment?.state, EnrolmentState.WITHDRAWN);
    const again = await refusal(registry.withdrawEnrolment(withdraw, { timeoutMs }));
    assert.equal(again.reason, "ALREADY_WITHDRAWN");
  });

  it("a cohort streams, and one invalid patient does not stop it", async () => {
    const size = 200;
    // The TA539 patient over and over, with the Ki-67 140 % patient as patient 7.
    async function* cohort() {
      for (let i = 0; i < size; i++) {
        const source = i === 7 ? example("invalid-ki67.json") : ta539Patient();
        if (source.patient?.identifiers) source.patient.identifiers.nhsNumber = "";
        yield { correlationId: `p${i}`, patient: source.patient, view: EvaluationView.BASIC };
      }
    }
    const answers: ScreeningAnswer[] = [];
    for await (const answer of screenCohort(screening, cohort(), { timeoutMs })) answers.push(answer);
    assert.deepEqual(
      answers.map((a) => a.correlationId).sort(),
      Array.from({ length: size }, (_, i) => `p${i}`).sort(),
    );
    const refused = answers.filter((a) => a.kind === "notScreened");
    assert.deepEqual(
      refused.map((a) => [a.correlationId, a.error.code, a.error.fieldViolations.map((v) => v.field)]),
      [["p7", Code.InvalidArgument, ["patient.tumour.ki67_percent"]]],
    );
    for (const answer of answers) {
      if (answer.kind !== "screened") continue;
      assert.equal(answer.funding.decisionId, answer.decisionId);
      assert.equal(answer.eligibility.therapies.length, everyTherapy);
    }
  });
});

