/**
 * The wire contract's typed errors (ARCHITECTURE.md, "Errors"): one class per stable string code, the
 * one code -> HTTP status table, and the way back from the wire form. Shared by every layer and surface.
 * Branch on `.code` (or `instanceof`), never on `.message`: messages are for humans and may change.
 */
export const ERROR_CODES = [
  'not_found',
  'unauthorized',
  'forbidden',
  'policy_denied',
  'bad_request',
  'conflict',
  'quota_exceeded',
  'timeout',
  'runtime_unavailable',
  'internal',
] as const;
export type ErrorCode = (typeof ERROR_CODES)[number];

/** The one table from error code to HTTP status. */
export const HTTP_STATUS: Record<ErrorCode, number> = {
  not_found: 404,
  unauthorized: 401,
  forbidden: 403,
  policy_denied: 403,
  bad_request: 400,
  conflict: 409,
  quota_exceeded: 429,
  timeout: 504,
  runtime_unavailable: 503,
  internal: 500,
};

export interface ErrorOpts {
  hint?: string;
  cause?: unknown;
  /** For overload answers: when to try again (HTTP Retry-After). */
  retryAfterSec?: number;
}

export class AgentboxError extends Error {
  readonly code: ErrorCode;
  readonly hint: string | undefined;
  readonly retryAfterSec: number | undefined;

  constructor(code: ErrorCode, message: string, opts: ErrorOpts = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'AgentboxError';
    this.code = code;
    this.hint = opts.hint;
    this.retryAfterSec = opts.retryAfterSec;
  }

  toJSON(): { code: ErrorCode; message: string; hint?: string } {
    return this.hint === undefined
      ? { code: this.code, message: this.message }
      : { code: this.code, message: this.message, hint: this.hint };
  }
}

function errorClass<C extends ErrorCode>(code: C, name: string) {
  const cls = class extends AgentboxError {
    constructor(message: string, opts: ErrorOpts = {}) {
      super(code, message, opts);
      this.name = name;
    }
  };
  Object.defineProperty(cls, 'name', { value: name });
  return cls;
}

export const NotFoundError = errorClass('not_found', 'NotFoundError');
export const UnauthorizedError = errorClass('unauthorized', 'UnauthorizedError');
export const ForbiddenError = errorClass('forbidden', 'ForbiddenError');
export const PolicyDeniedError = errorClass('policy_denied', 'PolicyDeniedError');
export const BadRequestError = errorClass('bad_request', 'BadRequestError');
export const ConflictError = errorClass('conflict', 'ConflictError');
export const QuotaExceededError = errorClass('quota_exceeded', 'QuotaExceededError');
export const TimeoutError = errorClass('timeout', 'TimeoutError');
export const RuntimeUnavailableError = errorClass('runtime_unavailable', 'RuntimeUnavailableError');
export const InternalError = errorClass('internal', 'InternalError');

export type NotFoundError = InstanceType<typeof NotFoundError>;
export type UnauthorizedError = InstanceType<typeof UnauthorizedError>;
export type ForbiddenError = InstanceType<typeof ForbiddenError>;
export type PolicyDeniedError = InstanceType<typeof PolicyDeniedError>;
export type BadRequestError = InstanceType<typeof BadRequestError>;
export type ConflictError = InstanceType<typeof ConflictError>;
export type QuotaExceededError = InstanceType<typeof QuotaExceededError>;
export type TimeoutError = InstanceType<typeof TimeoutError>;
export type RuntimeUnavailableError = InstanceType<typeof RuntimeUnavailableError>;
export type InternalError = InstanceType<typeof InternalError>;

export const ERROR_CLASSES: Record<ErrorCode, new (message: string, opts?: ErrorOpts) => AgentboxError> = {
  not_found: NotFoundError,
  unauthorized: UnauthorizedError,
  forbidden: ForbiddenError,
  policy_denied: PolicyDeniedError,
  bad_request: BadRequestError,
  conflict: ConflictError,
  quota_exceeded: QuotaExceededError,
  timeout: TimeoutError,
  runtime_unavailable: RuntimeUnavailableError,
  internal: InternalError,
};

export function isErrorCode(value: unknown): value is ErrorCode {
  return typeof value === 'string' && (ERROR_CODES as readonly string[]).includes(value);
}

/** Rebuild a typed error from its wire form (`{code, message, hint}`). */
export function errorFromWire(body: { code?: unknown; message?: unknown; hint?: unknown }): AgentboxError {
  const code: ErrorCode = isErrorCode(body.code) ? body.code : 'internal';
  const message = typeof body.message === 'string' ? body.message : 'unknown error';
  const hint = typeof body.hint === 'string' ? body.hint : undefined;
  return new ERROR_CLASSES[code](message, hint === undefined ? {} : { hint });
}
