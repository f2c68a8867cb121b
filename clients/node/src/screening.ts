// ScreenCohort's answers as values: each patient is either screened (both answers, one decision
// id) or not screened (that patient's error, read like a call's); the stream carries on after
// one. An error that ends the stream itself is thrown as a ConnectError, as for any call.

import type { MessageInitShape } from "@bufbuild/protobuf";
import type { CallOptions, Client } from "@connectrpc/connect";
import type { EvaluateEligibilityResponse } from "./gen/netpathway/v1/eligibility_service_pb.js";
import type { ClassifyFundingResponse } from "./gen/netpathway/v1/funding_service_pb.js";
import {
  type ScreenCohortRequestSchema,
  ScreeningService,
} from "./gen/netpathway/v1/screening_service_pb.js";
import { type ErrorDetails, statusDetails } from "./errors.js";

/** One patient's answers, both carrying the id of the one decision record that holds them. */
export interface Screened {
  kind: "screened";
  correlationId: string;
  decisionId: string;
  eligibility: EvaluateEligibilityResponse;
  funding: ClassifyFundingResponse;
}

/** Why one patient was not decided: INVALID_ARGUMENT with its field violations, or UNAVAILABLE
 * when the decision could not be recorded (send that patient again). */
export interface NotScreened {
  kind: "notScreened";
  correlationId: string;
  error: ErrorDetails;
}

export type ScreeningAnswer = Screened | NotScreened;

/** Screens `patients` on one stream, yielding each answer as it comes (in any order: match them
 * by correlationId). Patients are read from the iterable as the server's flow control allows,
 * so a generator of thousands is never held in memory. */
export async function* screenCohort(
  client: Client<typeof ScreeningService>,
  patients:
    | AsyncIterable<MessageInitShape<typeof ScreenCohortRequestSchema>>
    | Iterable<MessageInitShape<typeof ScreenCohortRequestSchema>>,
  options?: CallOptions,
): AsyncGenerator<ScreeningAnswer> {
  for await (const answer of client.screenCohort(asAsync(patients), options)) {
    const { correlationId, result } = answer;
    if (result.case === "screened" && result.value.eligibility && result.value.funding) {
      const { eligibility, funding } = result.value;
      yield { kind: "screened", correlationId, decisionId: eligibility.decisionId, eligibility, funding };
    } else if (result.case === "error") {
      yield { kind: "notScreened", correlationId, error: statusDetails(result.value) };
    } else {
      throw new Error(`ScreenCohort answer for ${correlationId} carries neither answers nor an error`);
    }
  }
}

async function* asAsync<T>(items: AsyncIterable<T> | Iterable<T>): AsyncIterable<T> {
  yield* items;
}
