/**
 * The connection to the API server: which cluster (kubeconfig or in-cluster), the typed clients of
 * @kubernetes/client-node, and the one place that turns API failures into agentbox's typed errors.
 *
 * A transient outage (connection refused or reset, 429, 5xx) is retried with backoff for a bounded
 * time (`retryForMs`) before it becomes RuntimeUnavailableError: a restarting API server loses no
 * sandbox and fails no request that fits in the window.
 */
import { existsSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { ApiException, AuthorizationV1Api, CoreV1Api, KubeConfig, NetworkingV1Api } from '@kubernetes/client-node';
import { AgentboxError, ConflictError, InternalError, NotFoundError, RuntimeUnavailableError } from '../../contract/errors.js';

export const KUBECONFIG_ENV = 'AGENTBOX_KUBECONFIG';
export const UNAVAILABLE_HINT = `check that the cluster answers (kubectl --kubeconfig FILE get --raw /version); the driver reads kubernetes.kubeconfig in the policy, else ${KUBECONFIG_ENV}, else the in-cluster service account`;

export interface ClusterSource {
  /** A kubeconfig file. @default the policy's kubernetes.kubeconfig, else AGENTBOX_KUBECONFIG, else in-cluster */
  kubeconfig?: string;
  /** A context of that kubeconfig. @default its current-context */
  context?: string;
}

/** The KubeConfig to use, or undefined (with the reason) when no cluster is configured. */
export function loadKubeConfig(src: ClusterSource, env: NodeJS.ProcessEnv = process.env): { kc: KubeConfig } | { reason: string } {
  const kc = new KubeConfig();
  const file = src.kubeconfig ?? env[KUBECONFIG_ENV];
  try {
    if (file) {
      if (!existsSync(file)) return { reason: `the kubeconfig ${file} does not exist` };
      kc.loadFromFile(file);
      if (src.context) kc.setCurrentContext(src.context);
    } else if (env.KUBERNETES_SERVICE_HOST && existsSync('/var/run/secrets/kubernetes.io/serviceaccount/token')) {
      kc.loadFromCluster();
    } else {
      return { reason: 'no Kubernetes cluster is configured' };
    }
  } catch (err) {
    return { reason: `cannot load the kubeconfig${file ? ` ${file}` : ''}: ${messageOf(err)}` };
  }
  if (!kc.getCurrentCluster()) return { reason: `the kubeconfig${file ? ` ${file}` : ''} has no current cluster` };
  return { kc };
}

export function messageOf(err: unknown): string {
  if (err instanceof ApiException) {
    const body = err.body as unknown;
    const msg = typeof body === 'string' ? safeStatusMessage(body) : (body as { message?: string } | undefined)?.message;
    return `HTTP ${err.code}${msg ? `: ${msg}` : ''}`;
  }
  return err instanceof Error ? err.message : String(err);
}

function safeStatusMessage(body: string): string | undefined {
  try {
    return (JSON.parse(body) as { message?: string }).message;
  } catch {
    return body.slice(0, 200) || undefined;
  }
}

/** The HTTP status of a failed API call, undefined when it never got an answer. */
export function statusOf(err: unknown): number | undefined {
  if (err instanceof ApiException) return err.code;
  const s = (err as { statusCode?: unknown; code?: unknown } | undefined)?.statusCode;
  return typeof s === 'number' ? s : undefined;
}

const NETWORK_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'EHOSTUNREACH', 'ENETUNREACH', 'EAI_AGAIN', 'ENOTFOUND', 'UND_ERR_SOCKET']);

/** A failure worth retrying: no answer at all, or one that says "later". */
export function isTransient(err: unknown): boolean {
  // A failure that knows (pod-exec.ts ExecStartError).
  const own = (err as { transient?: unknown } | undefined)?.transient;
  if (typeof own === 'boolean') return own;
  const status = statusOf(err);
  if (status !== undefined) return status === 429 || status === 500 || status === 502 || status === 503 || status === 504;
  const e = err as { code?: unknown; type?: unknown; cause?: { code?: unknown } } | undefined;
  if (typeof e?.code === 'string' && NETWORK_CODES.has(e.code)) return true;
  if (typeof e?.cause?.code === 'string' && NETWORK_CODES.has(e.cause.code)) return true;
  // node-fetch's FetchError: `system` is a failed socket; `request-timeout` no answer in time.
  return e?.type === 'system' || e?.type === 'request-timeout' || /socket hang up|ECONNREFUSED|ECONNRESET/.test(messageOf(err));
}

export interface ClusterOpts {
  kc: KubeConfig;
  /** How long a transient failure is retried before it becomes RuntimeUnavailableError. @default 30000 */
  retryForMs?: number;
}

export class Cluster {
  readonly kc: KubeConfig;
  readonly core: CoreV1Api;
  readonly net: NetworkingV1Api;
  readonly authz: AuthorizationV1Api;
  readonly server: string;
  private readonly retryForMs: number;

  constructor(opts: ClusterOpts) {
    this.kc = opts.kc;
    this.core = opts.kc.makeApiClient(CoreV1Api);
    this.net = opts.kc.makeApiClient(NetworkingV1Api);
    this.authz = opts.kc.makeApiClient(AuthorizationV1Api);
    this.server = opts.kc.getCurrentCluster()?.server ?? 'unknown';
    this.retryForMs = opts.retryForMs ?? 30_000;
  }

  /**
   * `fn` with transient failures retried (100 ms doubling to 2 s) for at most `retryForMs`; then a
   * RuntimeUnavailableError that says what was tried. Other failures are thrown as they are (see `apiError`).
   */
  async call<T>(what: string, fn: () => Promise<T>, retryForMs = this.retryForMs): Promise<T> {
    const deadline = Date.now() + retryForMs;
    let delay = 100;
    for (;;) {
      try {
        return await fn();
      } catch (err) {
        if (!isTransient(err)) throw err;
        if (Date.now() + delay > deadline) throw this.unavailable(what, err);
        await sleep(delay);
        delay = Math.min(delay * 2, 2000);
      }
    }
  }

  unavailable(what: string, err: unknown): AgentboxError {
    return new RuntimeUnavailableError(`the Kubernetes API server at ${this.server} is unreachable (${what}): ${messageOf(err)}`, { hint: UNAVAILABLE_HINT, cause: err });
  }
}

/**
 * An API failure as a typed error (SANDBOX names the sandbox for the message): 404 NotFoundError,
 * 409 ConflictError, 401/403 RuntimeUnavailableError (the daemon's own credentials or RBAC, not the
 * caller's), already-typed errors as they are, InternalError otherwise.
 */
export function apiError(err: unknown, what: string): Error {
  if (err instanceof AgentboxError) return err;
  const status = statusOf(err);
  if (status === 404) return new NotFoundError(`${what}: not found (${messageOf(err)})`, { cause: err });
  if (status === 409) return new ConflictError(`${what}: ${messageOf(err)}`, { cause: err });
  if (status === 401 || status === 403) {
    return new RuntimeUnavailableError(`${what}: the API server refused the daemon's credentials (${messageOf(err)})`, {
      hint: 'grant the daemon\'s service account or user get/list/watch/create/delete/patch on pods, pods/exec and networkpolicies in the namespace',
      cause: err,
    });
  }
  return new InternalError(`${what}: ${messageOf(err)}`, { cause: err });
}
