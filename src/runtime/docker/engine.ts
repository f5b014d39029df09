/**
 * The Docker Engine API client (dockerode) and the one table that turns its failures into typed errors.
 */
import Docker from 'dockerode';
import type { AgentboxError, ErrorOpts } from '../../contract/errors.js';
import { BadRequestError, ConflictError, InternalError, NotFoundError, RuntimeUnavailableError } from '../../contract/errors.js';

export const DEFAULT_SOCKET = '/var/run/docker.sock';
export const START_HINT = 'start dockerd (scripts/start-dockerd.sh)';

/** Where the Engine is: explicit options, else DOCKER_HOST, else the default socket. */
export function engineAddress(opts: Docker.DockerOptions | undefined, env: NodeJS.ProcessEnv = process.env): string {
  if (opts?.socketPath) return opts.socketPath;
  if (opts?.host) return `${opts.protocol ?? 'http'}://${opts.host}${opts.port ? `:${opts.port}` : ''}`;
  return env.DOCKER_HOST ?? DEFAULT_SOCKET;
}

/** docker-modem fills in DOCKER_HOST (and its TLS settings) for whatever `opts` leaves out. */
export function newClient(opts: Docker.DockerOptions | undefined, extra: Docker.DockerOptions = {}): Docker {
  return new Docker({ ...opts, ...extra });
}

/** The shape of a dockerode / docker-modem failure. */
interface EngineFailure {
  statusCode?: number;
  code?: string;
  message?: string;
  json?: unknown;
}

function asFailure(err: unknown): EngineFailure {
  return typeof err === 'object' && err !== null ? (err as EngineFailure) : { message: String(err) };
}

/** Socket-level failures that mean "no Engine there", not "the Engine said no". */
const UNREACHABLE = new Set(['ECONNREFUSED', 'ENOENT', 'EACCES', 'ECONNRESET', 'EPIPE', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENOTFOUND', 'ESOCKETTIMEDOUT']);

type ErrorClass = new (message: string, opts?: ErrorOpts) => AgentboxError;
/** Engine status → error class (dockerode's own `statusCodes` tables name the same codes). */
const BY_STATUS: Record<number, ErrorClass> = {
  400: BadRequestError,
  404: NotFoundError,
  409: ConflictError,
};

export function statusOf(err: unknown): number | undefined {
  return asFailure(err).statusCode;
}

export function isUnreachable(err: unknown): boolean {
  const code = asFailure(err).code;
  return code !== undefined && UNREACHABLE.has(code);
}

/** The Engine's own sentence, without docker-modem's "(HTTP code N) ..." wrapping. */
export function engineMessage(err: unknown): string {
  const f = asFailure(err);
  const json = f.json as { message?: unknown } | undefined;
  if (json && typeof json.message === 'string') return json.message;
  return (f.message ?? 'unknown error').replace(/^\(HTTP code \d+\) [^-]*- /, '').trim();
}

/** Map an Engine failure while doing `what` to a typed error. */
export function engineError(err: unknown, what: string, address: string, opts: ErrorOpts = {}): AgentboxError {
  if (isUnreachable(err)) {
    return new RuntimeUnavailableError(`dockerd is not reachable at ${address} (${asFailure(err).code})`, { hint: START_HINT, cause: err });
  }
  const status = statusOf(err);
  const cls = (status !== undefined ? BY_STATUS[status] : undefined) ?? InternalError;
  return new cls(`${what}: ${engineMessage(err)}`, { ...opts, cause: err });
}
