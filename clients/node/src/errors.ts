// An error's details, read from its google.rpc.Status (the grpc-status-details-bin trailer, or
// a ScreenCohort answer's in-stream `error`) into plain values.

import type { DescMessage, MessageShape } from "@bufbuild/protobuf";
import { anyUnpack, type Any } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import {
  BadRequestSchema,
  ErrorInfoSchema,
  PreconditionFailureSchema,
  ResourceInfoSchema,
  RetryInfoSchema,
} from "./gen/google/rpc/error_details_pb.js";
import type { Status } from "./gen/google/rpc/status_pb.js";

/** ErrorInfo.domain of every error net-pathway answers. */
export const ERROR_DOMAIN = "net-pathway.nhs.uk";

/** One field of the request that was refused, and why (google.rpc.BadRequest). */
export interface FieldViolation {
  field: string;
  description: string;
}

/** A precondition that failed (google.rpc.PreconditionFailure): its type (the same as the
 * reason), the resource it concerns (`registries/{id}`) and why. */
export interface PreconditionViolation {
  type: string;
  subject: string;
  description: string;
}

/** What a failed call says about itself. Switch on `reason` (with `domain` ERROR_DOMAIN); the
 * message is for people. */
export interface ErrorDetails {
  code: Code;
  message: string;
  reason: string;
  domain: string;
  metadata: Record<string, string>;
  fieldViolations: FieldViolation[];
  retryDelayMs?: number;
  preconditionViolations: PreconditionViolation[];
  resourceName: string;
}

/** The details of a failed call (any thrown value: a ConnectError, or what becomes one). */
export function errorDetails(error: unknown): ErrorDetails {
  const failed = ConnectError.from(error);
  return read(failed.code, failed.rawMessage, (schema) => failed.findDetails(schema));
}

/** The details a google.rpc.Status carries: a screened patient's in-stream error. */
export function statusDetails(status: Status): ErrorDetails {
  // google.rpc.Code and Connect's Code number the codes alike.
  const code = status.code in Code ? (status.code as Code) : Code.Unknown;
  return read(code, status.message, (schema) =>
    status.details.flatMap((any: Any) => anyUnpack(any, schema) ?? []),
  );
}

function read(
  code: Code,
  message: string,
  find: <Desc extends DescMessage>(schema: Desc) => MessageShape<Desc>[],
): ErrorDetails {
  const [info] = find(ErrorInfoSchema);
  const [retry] = find(RetryInfoSchema);
  const [resource] = find(ResourceInfoSchema);
  const delay = retry?.retryDelay;
  return {
    code,
    message,
    reason: info?.reason ?? "",
    domain: info?.domain ?? "",
    metadata: { ...(info?.metadata ?? {}) },
    fieldViolations: find(BadRequestSchema).flatMap((bad) =>
      bad.fieldViolations.map(({ field, description }) => ({ field, description })),
    ),
    retryDelayMs: delay ? Number(delay.seconds) * 1000 + delay.nanos / 1e6 : undefined,
    preconditionViolations: find(PreconditionFailureSchema).flatMap((failure) =>
      failure.violations.map(({ type, subject, description }) => ({ type, subject, description })),
    ),
    resourceName: resource?.resourceName ?? "",
  };
}
