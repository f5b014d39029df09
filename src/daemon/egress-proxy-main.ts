/**
 * `agentbox egress-proxy`: the cluster's egress proxy as a process of its own (egress/cluster-proxy.ts),
 * on the replicas' store (AGENTBOX_DATABASE_URL, else the home's file) with the policy's egress
 * section (deny list, opened ranges, byte quota), keyed by AGENTBOX_EGRESS_SECRET, which the daemon
 * replicas share to give each sandbox its credential. Requests for agentbox.internal are relayed
 * to AGENTBOX_API_URL (a daemon replica's API, e.g. its Service).
 */
import type { AddressInfo } from 'node:net';
import type { Logger } from 'pino';
import { BadRequestError } from '../contract/errors.js';
import { resolvePaths } from '../core/config.js';
import { ClusterEgressProxy, MIN_EGRESS_SECRET_LENGTH } from '../egress/cluster-proxy.js';
import { parseApiUrl } from '../egress/api-relay.js';
import { resolverFromEnv } from '../egress/resolver.js';
import { loadPolicy } from '../policy/load.js';
import { Store } from '../store/store.js';

export interface EgressProxyOpts {
  host: string;
  port: number;
  policyPath?: string | undefined;
  logger: Logger;
  env?: NodeJS.ProcessEnv;
}

export interface RunningEgressProxy {
  address: AddressInfo;
  close(): Promise<void>;
}

export function egressSecret(env: NodeJS.ProcessEnv): string {
  const secret = env.AGENTBOX_EGRESS_SECRET ?? '';
  if (secret.length < MIN_EGRESS_SECRET_LENGTH) {
    throw new BadRequestError(`AGENTBOX_EGRESS_SECRET must be set, with at least ${MIN_EGRESS_SECRET_LENGTH} characters (it has ${secret.length})`, {
      hint: 'give the proxy and every daemon replica the same secret, e.g. from a Kubernetes Secret: openssl rand -hex 32',
    });
  }
  return secret;
}

export async function startEgressProxy(opts: EgressProxyOpts): Promise<RunningEgressProxy> {
  const env = opts.env ?? process.env;
  const secret = egressSecret(env);
  const apiUrl = parseApiUrl(env.AGENTBOX_API_URL);
  const { policy } = loadPolicy({ ...(opts.policyPath ? { path: opts.policyPath } : {}), requirePolicy: env.AGENTBOX_REQUIRE_POLICY === '1', env });
  const paths = resolvePaths(env);
  const store = Store.openAt(paths.databaseUrl === null ? { path: paths.db } : { databaseUrl: paths.databaseUrl });
  const proxy = new ClusterEgressProxy({ store, secret, policy: policy.egress, resolve: resolverFromEnv(env), logger: opts.logger, apiUrl });
  try {
    const address = await proxy.listen(opts.port, opts.host);
    opts.logger.info({ host: address.address, port: address.port, api: apiUrl?.origin ?? null }, 'egress proxy ready');
    if (!apiUrl) opts.logger.warn('no AGENTBOX_API_URL: sandboxes calling http://agentbox.internal get a 503 saying so');
    return {
      address,
      close: async () => {
        await proxy.close();
        store.close();
      },
    };
  } catch (err) {
    store.close();
    throw err;
  }
}
