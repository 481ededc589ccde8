// Errors as typed exceptions: one class per gRPC status, with the google.rpc details the server
// put in `grpc-status-details-bin` decoded (AIP-193; docs/errors.md lists which come with which).
import { Code, ConnectError } from "@connectrpc/connect";
import {
  BadRequestSchema,
  ErrorInfoSchema,
  PreconditionFailureSchema,
  ResourceInfoSchema,
  RetryInfoSchema,
  type BadRequest,
  type ErrorInfo,
  type PreconditionFailure,
  type ResourceInfo,
  type RetryInfo,
} from "./gen/google/rpc/error_details_pb.js";

/** The error domain of every ErrorInfo this service sends. */
export const ERROR_DOMAIN = "orders.v1";

/** The google.rpc details of an error, decoded; absent ones are undefined. */
export interface ErrorDetails {
  badRequest?: BadRequest;
  errorInfo?: ErrorInfo;
  preconditionFailure?: PreconditionFailure;
  resourceInfo?: ResourceInfo;
  retryInfo?: RetryInfo;
}

/** Any failed call. `code` is the gRPC status; subclasses name it. */
export class OrdersError extends Error {
  readonly code: Code;
  readonly details: ErrorDetails;
  /** The server's message, without connect's "[code]" prefix. */
  readonly rawMessage: string;

  constructor(code: Code, rawMessage: string, details: ErrorDetails, options?: { cause?: unknown }) {
    super(`[${Code[code]}] ${rawMessage}`, options);
    this.name = new.target.name;
    this.code = code;
    this.rawMessage = rawMessage;
    this.details = details;
  }

  /** ErrorInfo.reason (e.g. "VERSION_CONFLICT", "TOKEN_MISSING"), or "" when none was sent. */
  get reason(): string {
    return this.details.errorInfo?.reason ?? "";
  }

  /** ErrorInfo.metadata, or an empty record. */
  get metadata(): Record<string, string> {
    return this.details.errorInfo?.metadata ?? {};
  }

  /** BadRequest field violations as field -> description. */
  get fieldViolations(): Record<string, string> {
    const out: Record<string, string> = {};
    for (const v of this.details.badRequest?.fieldViolations ?? []) {
      out[v.field] = v.description;
    }
    return out;
  }

  /** The delay RetryInfo asks for, in milliseconds, or undefined when none was sent. */
  get retryDelayMs(): number | undefined {
    const delay = this.details.retryInfo?.retryDelay;
    if (delay === undefined) return undefined;
    return Number(delay.seconds) * 1000 + Math.floor(delay.nanos / 1e6);
  }
}

export class CancelledError extends OrdersError {}
export class UnknownError extends OrdersError {}
export class InvalidArgumentError extends OrdersError {}
export class DeadlineExceededError extends OrdersError {}
export class NotFoundError extends OrdersError {}
export class AlreadyExistsError extends OrdersError {}
export class PermissionDeniedError extends OrdersError {}
export class ResourceExhaustedError extends OrdersError {}
export class FailedPreconditionError extends OrdersError {}
export class AbortedError extends OrdersError {}
export class OutOfRangeError extends OrdersError {}
export class UnimplementedError extends OrdersError {}
export class InternalError extends OrdersError {}
export class UnavailableError extends OrdersError {}
export class DataLossError extends OrdersError {}
export class UnauthenticatedError extends OrdersError {}

type ErrorClass = new (code: Code, rawMessage: string, details: ErrorDetails, options?: { cause?: unknown }) => OrdersError;

const CLASSES: Record<Code, ErrorClass> = {
  [Code.Canceled]: CancelledError,
  [Code.Unknown]: UnknownError,
  [Code.InvalidArgument]: InvalidArgumentError,
  [Code.DeadlineExceeded]: DeadlineExceededError,
  [Code.NotFound]: NotFoundError,
  [Code.AlreadyExists]: AlreadyExistsError,
  [Code.PermissionDenied]: PermissionDeniedError,
  [Code.ResourceExhausted]: ResourceExhaustedError,
  [Code.FailedPrecondition]: FailedPreconditionError,
  [Code.Aborted]: AbortedError,
  [Code.OutOfRange]: OutOfRangeError,
  [Code.Unimplemented]: UnimplementedError,
  [Code.Internal]: InternalError,
  [Code.Unavailable]: UnavailableError,
  [Code.DataLoss]: DataLossError,
  [Code.Unauthenticated]: UnauthenticatedError,
};

/** The typed exception for anything a call threw (a ConnectError, an abort, a network error). */
export function toOrdersError(err: unknown): OrdersError {
  if (err instanceof OrdersError) return err;
  const cause = ConnectError.from(err);
  const details: ErrorDetails = {
    badRequest: cause.findDetails(BadRequestSchema)[0],
    errorInfo: cause.findDetails(ErrorInfoSchema)[0],
    preconditionFailure: cause.findDetails(PreconditionFailureSchema)[0],
    resourceInfo: cause.findDetails(ResourceInfoSchema)[0],
    retryInfo: cause.findDetails(RetryInfoSchema)[0],
  };
  const cls = CLASSES[cause.code] ?? UnknownError;
  return new cls(cause.code, cause.rawMessage, details, { cause: err });
}
