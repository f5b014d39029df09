/**
 * The daemon: policy + store + runtimes + manager + HTTP server, wired from the environment.
 * `agentbox serve` runs it in the foreground; the CLI starts it detached on the home's Unix socket.
 */
import { chmodSync, existsSync, mkdirSync, unlinkSync } from 'node:fs';
import { connect } from 'node:net';
import type { Server } from 'node:http';
import type { Logger } from 'pino';
import { resolvePaths, helperPath, socketBaseDir, VERSION, type Paths } from '../core/config.js';
import { BadRequestError } from '../contract/errors.js';
import { SandboxManager } from '../core/manager.js';
import type { RuntimeName } from '../contract/model.js';
import { ImageStore } from '../images/image-store.js';
import { loadPolicy } from '../policy/load.js';
import { LocalRuntime } from '../runtime/local/local-runtime.js';
import { DockerRuntime } from '../runtime/docker/docker-runtime.js';
import type { Runtime } from '../runtime/types.js';
import { Store } from '../store/store.js';
import { Metrics } from '../observability/metrics.js';
import { EgressService } from '../egress/service.js';
import { resolverFromEnv, type Resolver } from '../egress/resolver.js';
import { Authenticator } from './auth.js';
import { createApiServer, type ApiServer, type HttpLimits } from './server.js';
import { RateLimiter } from './rate-limit.js';
import { servedHostNames } from './request-guard.js';

export interface DaemonOpts {
  env?: NodeJS.ProcessEnv;
  logger: Logger;
  /** Unix socket path; default $AGENTBOX_HOME/agentbox.sock. `null` for none. */
  socket?: string | null;
  tcp?: { host: string; port: number };
  policyPath?: string;
  /** How egress proxies resolve names; default the system resolver with AGENTBOX_EGRESS_HOSTS in front. */
  egressResolver?: Resolver;
  reapIntervalMs?: number;
  /** Backpressure on creates (see ManagerOpts). */
  maxConcurrentCreates?: number;
  createQueueLength?: number;
  /**
   * More `Host` names the TCP listener answers to (besides loopback and the bound address), e.g. a
   * reverse proxy's name. @default AGENTBOX_ALLOWED_HOSTS (comma-separated)
   */
  allowedHosts?: string[];
  /** Timeouts and the connection limit of the HTTP servers. @default DEFAULT_HTTP_LIMITS */
  http?: Partial<HttpLimits>;
}

export interface Daemon {
  paths: Paths;
  manager: SandboxManager;
  store: Store;
  images: ImageStore;
  servers: Server[];
  /** The TCP address actually bound (port 0 picks one). */
  tcpAddress?: { host: string; port: number };
  close(): Promise<void>;
}

const LOOPBACK = new Set(['127.0.0.1', '::1', 'localhost']);

export function buildRuntimes(paths: Paths, images: ImageStore, logger?: Logger): Partial<Record<RuntimeName, Runtime>> {
  // busybox builds in well under a second: the quick start needs no image step.
  const ensureImage = async (image: string): Promise<void> => {
    if (image === 'busybox' && !images.get('busybox')) await images.ensure('busybox', {});
  };
  return {
    local: new LocalRuntime({
      scope: `agentbox/${paths.homeTag}`,
      resolveRootfs: (image) => images.resolve(image).rootfs,
      ensureImage,
      helper: helperPath(),
    }),
    // Probed lazily: a host without dockerd still runs the local runtime.
    docker: new DockerRuntime({ images, ensureImage, homeTag: paths.homeTag, version: VERSION, helper: helperPath(), agentDir: socketBaseDir(paths.home, 'agents'), ...(logger ? { logger } : {}) }),
  };
}

export async function startDaemon(opts: DaemonOpts): Promise<Daemon> {
  const env = opts.env ?? process.env;
  const paths = resolvePaths(env);
  const { policy, source } = loadPolicy({
    ...(opts.policyPath ? { path: opts.policyPath } : {}),
    requirePolicy: env.AGENTBOX_REQUIRE_POLICY === '1',
  });
  const auth = new Authenticator(policy, env.AGENTBOX_TOKEN);
  if (opts.tcp && !LOOPBACK.has(opts.tcp.host) && !auth.required) {
    throw new BadRequestError(`refusing to listen on ${opts.tcp.host} without tokens`, {
      hint: 'set AGENTBOX_TOKEN or add tenants with tokens to the policy, or bind to 127.0.0.1',
    });
  }
  mkdirSync(paths.home, { recursive: true, mode: 0o700 });
  const store = Store.open(paths.db);
  const images = new ImageStore(paths.images);
  const metrics = new Metrics(() => {
    const byTenant: Record<string, number> = {};
    for (const { sandbox } of store.listSandboxes({ states: ['creating', 'running'] })) byTenant[sandbox.tenant] = (byTenant[sandbox.tenant] ?? 0) + 1;
    return byTenant;
  });
  const egress = new EgressService({
    home: paths.home,
    policy: policy.egress,
    resolve: opts.egressResolver ?? resolverFromEnv(env),
    log: store.egress,
    metrics,
    logger: opts.logger,
  });
  const manager = new SandboxManager({
    metrics,
    egress,
    policy,
    store,
    runtimes: buildRuntimes(paths, images, opts.logger),
    logger: opts.logger,
    ...(opts.reapIntervalMs ? { reapIntervalMs: opts.reapIntervalMs } : {}),
    ...(opts.maxConcurrentCreates ? { maxConcurrentCreates: opts.maxConcurrentCreates } : {}),
    ...(opts.createQueueLength !== undefined ? { createQueueLength: opts.createQueueLength } : {}),
  });
  await manager.start();
  // Replaced or removed images stay on disk while a sandbox still has them mounted: sweep later.
  const sweeper = setInterval(() => {
    try {
      images.sweep();
    } catch (err) {
      opts.logger.warn({ err }, 'image sweep failed');
    }
  }, 5 * 60_000);
  sweeper.unref();
  const servers: Server[] = [];
  const apis: ApiServer[] = [];
  // One bucket per tenant across both listeners and /mcp.
  const limiter = new RateLimiter((tenant) => policy.tenants?.find((t) => t.name === tenant)?.quotas?.requestsPerMinute);
  const common = { manager, auth, logger: opts.logger, metrics, images, limiter, ...(opts.http ? { http: opts.http } : {}) };
  const daemon: Daemon = {
    paths,
    manager,
    store,
    images,
    servers,
    async close() {
      clearInterval(sweeper);
      // Stop accepting first; running requests finish; MCP sessions take their sandboxes along.
      const closed = Promise.all(servers.map((s) => new Promise<void>((resolve) => {
        s.close(() => resolve());
        s.closeIdleConnections();
      })));
      await Promise.all(apis.map((a) => a.closeSessions()));
      await closed;
      await manager.close();
      store.close();
      const sock = opts.socket === undefined ? paths.socket : opts.socket;
      if (sock && existsSync(sock)) unlinkSync(sock);
    },
  };
  try {
    const socketPath = opts.socket === undefined ? paths.socket : opts.socket;
    if (socketPath) {
      await clearStaleSocket(socketPath);
      const api = createApiServer({ ...common, listener: 'unix' });
      const server = api.server;
      apis.push(api);
      // Owner-only from the first moment: create with a umask rather than chmod afterwards.
      const oldMask = process.umask(0o177);
      try {
        await listen(server, socketPath);
      } finally {
        process.umask(oldMask);
      }
      chmodSync(socketPath, 0o600);
      servers.push(server);
    }
    if (opts.tcp) {
      const allowedHosts = opts.allowedHosts ?? (env.AGENTBOX_ALLOWED_HOSTS ?? '').split(',').filter((h) => h.trim() !== '');
      const api = createApiServer({ ...common, listener: 'tcp', hostNames: servedHostNames(opts.tcp.host, allowedHosts) });
      const server = api.server;
      apis.push(api);
      await listen(server, opts.tcp.port, opts.tcp.host);
      const addr = server.address();
      if (addr && typeof addr === 'object') daemon.tcpAddress = { host: addr.address, port: addr.port };
      servers.push(server);
    }
  } catch (err) {
    await daemon.close();
    throw err;
  }
  opts.logger.info({ home: paths.home, policy: source ?? 'defaults', socket: opts.socket === undefined ? paths.socket : opts.socket, tcp: daemon.tcpAddress }, 'agentbox daemon ready');
  return daemon;
}

function listen(server: Server, pathOrPort: string | number, host?: string): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    const done = (): void => {
      server.off('error', reject);
      resolve();
    };
    if (typeof pathOrPort === 'string') server.listen(pathOrPort, done);
    else server.listen(pathOrPort, host, done);
  });
}

/** A socket file nobody answers on is left from a crash: remove it. One that answers is a running daemon. */
async function clearStaleSocket(path: string): Promise<void> {
  if (!existsSync(path)) return;
  const alive = await new Promise<boolean>((resolve) => {
    const s = connect(path);
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
  if (alive) throw new BadRequestError(`a daemon is already listening on ${path}`, { hint: 'use it (the CLI finds it), or stop it first' });
  unlinkSync(path);
}
