/**
 * agentbox's typed errors in E2B's wire shapes, so the unmodified SDK raises its own classes:
 * the control plane and envd's HTTP routes answer `{code: <HTTP status>, message}`; envd's
 * Connect-RPC services throw a ConnectError whose code the SDK maps (NotFound -> NotFoundError,
 * Unauthenticated -> AuthenticationError, DeadlineExceeded -> TimeoutError, ...).
 */
import type { ServerResponse } from 'node:http';
import { Code, ConnectError } from '@connectrpc/connect';
import type { Logger } from 'pino';
import { AgentboxError, HTTP_STATUS, type ErrorCode } from '../contract/errors.js';
import { PayloadTooLargeError } from '../api/http-util.js';
import { UnsupportedMediaTypeError } from '../api/request-guard.js';

/** An agentbox error code as a Connect code (one table, as HTTP_STATUS is for HTTP). */
const CONNECT_CODE: Record<ErrorCode, Code> = {
  not_found: Code.NotFound,
  unauthorized: Code.Unauthenticated,
  forbidden: Code.PermissionDenied,
  policy_denied: Code.PermissionDenied,
  bad_request: Code.InvalidArgument,
  conflict: Code.FailedPrecondition,
  quota_exceeded: Code.ResourceExhausted,
  timeout: Code.DeadlineExceeded,
  runtime_unavailable: Code.Unavailable,
  internal: Code.Internal,
};

/** The text E2B's clients show: the message, then the hint that names the knob. */
function describe(err: AgentboxError): string {
  return err.hint === undefined ? err.message : `${err.message} (${err.hint})`;
}

/** Any error as the ConnectError an envd service throws; unknown ones become a bare `internal`, logged. */
export function toConnectError(err: unknown, logger: Logger): ConnectError {
  if (err instanceof ConnectError) return err;
  if (err instanceof AgentboxError) return new ConnectError(describe(err), CONNECT_CODE[err.code]);
  logger.error({ err }, 'e2b: unhandled error in an envd service');
  return new ConnectError('internal error (see the agentbox daemon log)', Code.Internal);
}

/** E2B's error body `{code, message}` with `code` the HTTP status; unknown errors become a bare 500, logged. */
export function sendE2bError(res: ServerResponse, err: unknown, logger: Logger, status?: number): void {
  const known = err instanceof AgentboxError ? err : undefined;
  if (!known) logger.error({ err }, 'e2b: unhandled error');
  const code = status ?? (known ? httpStatusOf(known) : 500);
  const message = known ? describe(known) : 'internal error (see the agentbox daemon log)';
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const body = JSON.stringify({ code, message });
  res.writeHead(code, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(body) });
  res.end(body);
}

/** As the /v1 surface answers: 413 and 415 for those two kinds of bad request, 501 for what is not implemented. */
function httpStatusOf(err: AgentboxError): number {
  if (err instanceof PayloadTooLargeError) return 413;
  if (err instanceof UnsupportedMediaTypeError) return 415;
  if (err instanceof NotImplementedError) return 501;
  return HTTP_STATUS[err.code];
}

/** What E2B's API answers for something it does not do: 501, which the SDK raises as a SandboxError carrying the message. */
export class NotImplementedError extends AgentboxError {
  constructor(message: string, hint: string) {
    super('bad_request', message, { hint });
    this.name = 'NotImplementedError';
  }
}
