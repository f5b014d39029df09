/**
 * The composition root: policy + store + runtimes + manager + HTTP servers, wired from the
 * environment, under the home's lock (one daemon per home). `agentbox serve` runs it in the
 * foreground; the CLI starts it detached on the home's Unix socket.
 */
import { chmodSync, existsSync, mkdirSync, readlinkSync, statSync, unlinkSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import type { Server } from 'node:http';
import type { Logger } from 'pino';
import { resolvePaths, helperPath, socketBaseDir, VERSION, type Paths } from '../core/config.js';
import { BadRequestError } from '../contract/errors.js';
import { SandboxManager, type ReplicaIdentity } from '../core/manager.js';
import type { RuntimeName } from '../contract/model.js';
import { ImageStore } from '../images/image-store.js';
import { DiskStore } from '../storage/disk-store.js';
import { VolumeStore } from '../storage/volume-store.js';
import { VolumeFiles } from '../runtime/volume-files.js';
import { loadPolicy } from '../policy/load.js';
import { LocalRuntime } from '../runtime/local/local-runtime.js';
import { DockerRuntime } from '../runtime/docker/docker-runtime.js';
import { MicroVmRuntime } from '../runtime/microvm/microvm-runtime.js';
import { KubernetesRuntime } from '../runtime/kubernetes/kubernetes-runtime.js';
import type { Policy } from '../policy/schema.js';
import { RUN_DIR } from '../runtime/staged-binary.js';
import type { ProbeResult, Runtime } from '../runtime/types.js';
import { Store } from '../store/store.js';
import { Metrics, type PoolGaugeSource } from '../observability/metrics.js';
import { Tracing, tracingConfig } from '../observability/tracing.js';
import { EgressService } from '../egress/service.js';
import { resolverFromEnv, type Resolver } from '../egress/resolver.js';
import { Authenticator } from '../api/auth.js';
import { createApiServer, type ApiServer, type HttpLimits } from '../api/server.js';
import { createSandboxGateway, type SandboxGateway } from '../api/sandbox-gateway.js';
import { createGatewayRelay } from '../api/gateway-relay.js';
import { RateLimiter } from '../api/rate-limit.js';
import { servedHostNames } from '../api/request-guard.js';
import type { DaemonInfo, RuntimeHealth } from '../contract/daemon.js';
import { buildInfo, versionTag } from './build-info.js';
import { EnvdTokens } from '../e2b/envd-token.js';
import { createE2bSurface } from '../e2b/surface.js';
import { PortProxy } from '../api/port-proxy.js';
import { HomeLock, type DaemonRecord } from './home-lock.js';
import { replicaIdentity } from './replica-identity.js';
import { resolveWebhookTargets } from '../webhooks/targets.js';
import { WebhookDispatcher, type DeliveryOpts } from '../webhooks/dispatcher.js';

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
  /** See ManagerOpts.terminalGraceMs (tests only). */
  terminalGraceMs?: number;
  /**
   * More `Host` names the TCP listener answers to (besides loopback and the bound address), e.g. a
   * reverse proxy's name. @default AGENTBOX_ALLOWED_HOSTS (comma-separated)
   */
  allowedHosts?: string[];
  /** Timeouts and the connection limit of the HTTP servers. @default DEFAULT_HTTP_LIMITS */
  http?: Partial<HttpLimits>;
  /**
   * With a TCP listener: requests to `PORT-ID.<portsDomain>` reach that sandbox's port (the port
   * proxy), e.g. `localhost` (browsers resolve *.localhost to loopback). @default AGENTBOX_PORTS_DOMAIN
   */
  portsDomain?: string;
  /** Webhook delivery timing (tests). @default DEFAULT_DELIVERY_OPTS */
  webhookDelivery?: Partial<DeliveryOpts>;
  /**
   * Per-sandbox CPU and memory gauges on /metrics (at most PER_SANDBOX_SERIES_CAP sandboxes).
   * @default AGENTBOX_METRICS_PER_SANDBOX=1
   */
  perSandboxMetrics?: boolean;
  /** Time between usage samples (tests shorten it). @default 2000 */
  usageIntervalMs?: number;
}

export interface Daemon {
  paths: Paths;
  manager: SandboxManager;
  store: Store;
  images: ImageStore;
  servers: Server[];
  /** The TCP address actually bound (port 0 picks one). */
  tcpAddress?: { host: string; port: number };
  /**
   * Graceful stop: listeners close, running requests finish, then the manager closes (see
   * `SandboxManager.close()`). `sandboxes: 'stop'` (the default, for an embedder that owns its
   * sandboxes) ends every sandbox; `'leave'` (what `agentbox serve` does on SIGTERM) leaves them
   * running for the next daemon.
   */
  close(opts?: { sandboxes?: 'stop' | 'leave' }): Promise<void>;
}

const LOOPBACK = new Set(['127.0.0.1', '::1', 'localhost']);

export function buildRuntimes(paths: Paths, images: ImageStore, disks: DiskStore, logger?: Logger, kubernetes?: Policy['kubernetes']): Partial<Record<RuntimeName, Runtime>> {
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
      disks,
    }),
    // Probed lazily: a host without dockerd still runs the local runtime.
    docker: new DockerRuntime({ images, ensureImage, homeTag: paths.homeTag, version: VERSION, helper: helperPath(), agentDir: socketBaseDir(paths.home, 'agents'), disks, ...(logger ? { logger } : {}) }),
    microvm: new MicroVmRuntime({ images, ensureImage, homeTag: paths.homeTag, dir: join(paths.home, 'microvm'), runRoot: join(RUN_DIR, `vm-${paths.homeTag}`), disks, ...(logger ? { logger } : {}) }),
    // Connects on first use: without a cluster configured its probe says so, and nothing else changes.
    // Scoped by the store, not the home: replicas on one database see one set of pods and one warm pool.
    kubernetes: new KubernetesRuntime({ homeTag: paths.storeTag, ...dropUndefined(kubernetes ?? {}), ...(logger ? { logger } : {}) }),
  };
}

/** The policy's kubernetes section without its absent keys (exactOptionalPropertyTypes). */
function dropUndefined<T extends object>(o: T): { [K in keyof T]: Exclude<T[K], undefined> } {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as { [K in keyof T]: Exclude<T[K], undefined> };
}

export async function startDaemon(opts: DaemonOpts): Promise<Daemon> {
  const env = opts.env ?? process.env;
  const paths = resolvePaths(env);
  const { policy, source } = loadPolicy({
    ...(opts.policyPath ? { path: opts.policyPath } : {}),
    requirePolicy: env.AGENTBOX_REQUIRE_POLICY === '1',
  });
  // Sandbox tokens are looked up in the store through the manager, made further down (used only once requests come).
  const auth = new Authenticator(policy, env.AGENTBOX_TOKEN, (sha256) => manager.sandboxTokenCaller(sha256));
  // Secrets read before anything is touched: a webhook that cannot sign stops the start, as a bad policy does.
  const webhookTargets = resolveWebhookTargets(policy, { env });
  if (opts.tcp && !LOOPBACK.has(opts.tcp.host) && !auth.required) {
    throw new BadRequestError(`refusing to listen on ${opts.tcp.host} without tokens`, {
      hint: 'set AGENTBOX_TOKEN or add tenants with tokens to the policy, or bind to 127.0.0.1',
    });
  }
  mkdirSync(paths.home, { recursive: true, mode: 0o700 });
  // Before anything touches the store or the host: a second daemon on this home stops here.
  const lock = HomeLock.acquire(paths.home);
  const socketPath = opts.socket === undefined ? paths.socket : opts.socket;
  const startedAt = new Date();
  const { version, build } = buildInfo();
  const record = (tcp: DaemonRecord['tcp'], listening: boolean): DaemonRecord => ({ pid: process.pid, version, build, startedAt: startedAt.toISOString(), socket: listening ? socketPath : null, tcp });
  lock.publish(record(null, false));
  let store: Store;
  let replica: ReplicaIdentity;
  try {
    replica = replicaIdentity(paths.home, env);
    store = Store.openAt(paths.databaseUrl === null ? { path: paths.db } : { databaseUrl: paths.databaseUrl });
  } catch (err) {
    lock.release();
    throw err;
  }
  const images = new ImageStore(paths.images);
  // Off (no provider at all) unless an OTLP endpoint is set in the environment or the policy.
  const tracing = Tracing.create(tracingConfig(env, policy.telemetry), { version, logger: opts.logger });
  if (tracing.config) opts.logger.info({ url: tracing.config.url, from: tracing.config.from, service: tracing.config.serviceName }, 'exporting traces over OTLP/HTTP');
  const metrics = new Metrics({
    countActive: () => {
      const byTenant: Record<string, number> = {};
      for (const { sandbox } of store.listSandboxes({ states: ['creating', 'running'] })) byTenant[sandbox.tenant] = (byTenant[sandbox.tenant] ?? 0) + 1;
      return byTenant;
    },
    // Read at scrape time, once the manager exists.
    pools: (): PoolGaugeSource[] => manager.poolStatus(),
  });
  const egress = new EgressService({
    home: paths.home,
    policy: policy.egress,
    resolve: opts.egressResolver ?? resolverFromEnv(env),
    log: store.egress,
    metrics,
    logger: opts.logger,
    tracing,
    // Bound once the gateway exists (it needs the manager and the limiter); no sandbox is served before.
    gateway: (id, req, res) => (gateway ? gateway(id, req, res) : Promise.reject(new Error('the daemon is not serving yet'))),
  });
  let gateway: SandboxGateway | undefined;
  const disks = new DiskStore({ dir: paths.storage });
  const runtimes = buildRuntimes(paths, images, disks, opts.logger, policy.kubernetes);
  // The port proxy's address of a sandbox's port (the TCP port is known once listening).
  let tcpPort: number | undefined;
  const portsDomain = opts.tcp ? (opts.portsDomain ?? env.AGENTBOX_PORTS_DOMAIN ?? '').trim().replace(/^\.+|\.+$/g, '') : '';
  const portUrl = portsDomain ? (id: string, port: number): string => `http://${port}-${id}.${portsDomain}:${tcpPort ?? opts.tcp?.port ?? 80}/` : undefined;
  const webhooks = new WebhookDispatcher({ log: store.webhooks, targets: webhookTargets, logger: opts.logger, userAgent: `agentbox/${version}`, ...(opts.webhookDelivery ? { delivery: opts.webhookDelivery } : {}) });
  webhooks.start();
  const manager = new SandboxManager({
    ...(portUrl ? { portUrl } : {}),
    disks,
    volumes: { store: new VolumeStore({ disks, mountDir: join(paths.storage, 'volmnt') }), files: new VolumeFiles(helperPath()) },
    metrics,
    egress,
    policy,
    store,
    runtimes,
    logger: opts.logger,
    events: webhooks,
    tracing,
    replica,
    ...(opts.reapIntervalMs ? { reapIntervalMs: opts.reapIntervalMs } : {}),
    ...(opts.maxConcurrentCreates ? { maxConcurrentCreates: opts.maxConcurrentCreates } : {}),
    ...(opts.createQueueLength !== undefined ? { createQueueLength: opts.createQueueLength } : {}),
    ...(opts.terminalGraceMs !== undefined ? { terminalGraceMs: opts.terminalGraceMs } : {}),
    usage: {
      perSandboxMetrics: opts.perSandboxMetrics ?? env.AGENTBOX_METRICS_PER_SANDBOX === '1',
      ...(opts.usageIntervalMs !== undefined ? { intervalMs: opts.usageIntervalMs } : {}),
    },
  });
  try {
    await manager.start();
  } catch (err) {
    await manager.close().catch(() => undefined);
    await webhooks.close();
    await tracing.shutdown();
    store.close();
    lock.release();
    throw err;
  }
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
  gateway = createSandboxGateway({ manager, auth, limiter, logger: opts.logger });
  const log = logFile();
  const info = async (): Promise<DaemonInfo> => ({
    pid: process.pid,
    version,
    build,
    startedAt: startedAt.toISOString(),
    uptimeMs: Date.now() - startedAt.getTime(),
    home: paths.home,
    socket: listeningOnSocket ? socketPath : null,
    tcp: daemon.tcpAddress ?? null,
    log,
    runtimes: await runtimeHealth(runtimes),
    sandboxes: store.countByState(),
    pools: manager.poolStatus(),
  });
  const portsHost = portsDomain ? (): string => `${portsDomain}:${tcpPort ?? opts.tcp?.port ?? 80}` : undefined;
  const e2b = createE2bSurface({ manager, auth, tokens: EnvdTokens.forHome(paths.home), home: paths.home, limiter, logger: opts.logger, ...(portsHost ? { portsHost } : {}) });
  // agentbox.internal of kubernetes sandboxes, relayed by the cluster's egress proxy: the same gateway, once the proxy's proof holds.
  const gatewayRelay = createGatewayRelay({ secret: env.AGENTBOX_EGRESS_SECRET, gateway });
  const common = { manager, auth, logger: opts.logger, metrics, images, limiter, daemonInfo: info, e2b, tracing, gatewayRelay, ...(opts.http ? { http: opts.http } : {}) };
  const daemon: Daemon = {
    paths,
    manager,
    store,
    images,
    servers,
    async close(closeOpts = {}) {
      clearInterval(sweeper);
      // E2B's tracked commands and open streams end first: the servers and the manager wait for them.
      e2b.close();
      // Stop accepting first; running requests finish; MCP sessions take their sandboxes along.
      const closed = Promise.all(servers.map((s) => new Promise<void>((resolve) => {
        s.close(() => resolve());
        s.closeIdleConnections();
      })));
      await Promise.all(apis.map((a) => a.closeSessions()));
      await closed;
      await manager.close(closeOpts);
      // After the manager: the ends it records on the way out are queued (sent now or by the next daemon).
      await webhooks.close(2000);
      // Last: the spans of everything above (the ends recorded on the way out) are exported before the process goes.
      await tracing.shutdown();
      // The store stays mounted while a sandbox (which outlives the daemon) has its disk in it.
      await disks.closeIfIdle().catch((err: unknown) => opts.logger.warn({ err }, 'could not unmount the disk store'));
      store.close();
      if (socketPath && listeningOnSocket && existsSync(socketPath)) unlinkSync(socketPath);
      lock.release();
    },
  };
  let listeningOnSocket = false;
  try {
    if (socketPath) {
      await clearStaleSocket(socketPath);
      const api = createApiServer({ ...common, listener: 'unix', versionTag: versionTag({ version, build }) });
      const server = api.server;
      apis.push(api);
      // Owner-only from the first moment: create with a umask rather than chmod afterwards.
      const oldMask = process.umask(0o177);
      try {
        await listen(server, socketPath);
      } finally {
        process.umask(oldMask);
      }
      listeningOnSocket = true;
      chmodSync(socketPath, 0o600);
      servers.push(server);
    }
    if (opts.tcp) {
      const allowedHosts = [
        ...(opts.allowedHosts ?? (env.AGENTBOX_ALLOWED_HOSTS ?? '').split(',').filter((h) => h.trim() !== '')),
        // The name this replica advertises is one it serves: the others forward requests to it with that Host.
        ...(replica.url ? [new URL(replica.url).hostname] : []),
      ];
      const portProxy = portsDomain ? new PortProxy({ domain: portsDomain, manager, auth, listener: 'tcp', logger: opts.logger, fallback: e2b.portAccess }) : undefined;
      const api = createApiServer({ ...common, listener: 'tcp', hostNames: servedHostNames(opts.tcp.host, allowedHosts), ...(portProxy ? { portProxy } : {}) });
      const server = api.server;
      apis.push(api);
      await listen(server, opts.tcp.port, opts.tcp.host);
      const addr = server.address();
      if (addr && typeof addr === 'object') {
        daemon.tcpAddress = { host: addr.address, port: addr.port };
        tcpPort = addr.port;
      }
      servers.push(server);
    }
  } catch (err) {
    await daemon.close();
    throw err;
  }
  lock.publish(record(daemon.tcpAddress ?? null, socketPath !== null));
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

/**
 * We hold the home's lock, so a socket file here is left by a daemon that died, unless one still
 * answers: a daemon of an agentbox too old to take the lock. Never take a live daemon's socket over.
 */
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
  if (alive) throw new BadRequestError(`a daemon that does not take the home's lock (an older agentbox?) is listening on ${path}`, { hint: 'stop it (find its pid with: fuser ' + path + '), then start again' });
  unlinkSync(path);
}

async function runtimeHealth(runtimes: Partial<Record<RuntimeName, Runtime>>): Promise<Record<string, RuntimeHealth>> {
  const out: Record<string, RuntimeHealth> = {};
  for (const [name, rt] of Object.entries(runtimes)) {
    if (!rt) continue;
    const probe = await rt.probe();
    out[name] = { ok: probe.ok, detail: describeProbe(probe), ...(!probe.ok && probe.hint ? { hint: probe.hint } : {}) };
  }
  return out;
}

/** A probe in one line: what was found (versions) when the runtime works, else why not. */
export function describeProbe(probe: ProbeResult): string {
  return probe.ok ? Object.entries(probe.details ?? {}).map(([k, v]) => `${k} ${v}`).join(', ') : (probe.reason ?? 'unavailable');
}

/** Where this process's stdout goes, when that is a file: the log of a daemon the CLI started. */
function logFile(): string | null {
  try {
    const target = readlinkSync('/proc/self/fd/1');
    return target.startsWith('/') && statSync(target).isFile() ? target : null;
  } catch {
    return null;
  }
}
