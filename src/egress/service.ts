/**
 * The egress proxies of one daemon: one SandboxProxy per sandbox with network, each on a Unix
 * socket in a directory of its own, which the runtime binds into the sandbox
 * (runtime/egress-plumbing.ts), so the proxy is the sandbox's only way out. Because the directory, not the socket, is bound, a proxy can
 * start after the sandbox (warm-pool claims, a restarted daemon) and appear inside.
 */
import { mkdirSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Logger } from 'pino';
import { SANDBOX_API_URL } from '../contract/tokens.js';
import { socketBaseDir } from '../core/config.js';
import type { Egress } from '../contract/model.js';
import type { Metrics } from '../observability/metrics.js';
import { SpanKind, SpanStatusCode, Tracing } from '../observability/tracing.js';
import type { EgressEvents } from '../store/egress-events.js';
import { EGRESS_PORT, EGRESS_SOCKET } from '../runtime/egress-plumbing.js';
import { AddressRules } from './addresses.js';
import { SandboxProxy, type ProxyAttempt } from './proxy.js';
import type { Resolver } from './resolver.js';
import type { HostRules } from './rules.js';


/** The environment every exec of a sandbox with network gets (AGENTBOX_URL: the API through its proxy, for its sandbox tokens). */
export function proxyEnv(): Record<string, string> {
  const url = `http://127.0.0.1:${EGRESS_PORT}`;
  const noProxy = 'localhost,127.0.0.1,::1';
  return { HTTP_PROXY: url, HTTPS_PROXY: url, http_proxy: url, https_proxy: url, NO_PROXY: noProxy, no_proxy: noProxy, AGENTBOX_URL: SANDBOX_API_URL };
}

export interface EgressPolicy {
  globalDeny: readonly string[];
  allowRanges: readonly string[];
  byteQuotaMb: number;
}

export interface EgressServiceOpts {
  /** AGENTBOX_HOME: socket directories go to $home/egress (or a short path under /run when that is too long). */
  home: string;
  policy: EgressPolicy;
  resolve: Resolver;
  log: EgressEvents;
  metrics?: Metrics;
  logger: Logger;
  /**
   * Each decided connection is an `egress.connection` span. It happens in the proxy, not in a
   * request: a root span carrying the sandbox's id. @default Tracing.disabled()
   */
  tracing?: Tracing;
  /** Serves `http://agentbox.internal` for a sandbox's code (src/api/sandbox-gateway.ts); absent: not served. */
  gateway?: (sandboxId: string, req: IncomingMessage, res: ServerResponse) => Promise<void>;
}

interface Entry {
  proxy: SandboxProxy;
  rules: HostRules;
  tenant: string;
  bytesUsed: number;
}

export class EgressService {
  readonly baseDir: string;
  private readonly addresses: AddressRules;
  private readonly live = new Map<string, Entry>();
  private readonly recorder: EgressRecorder;

  constructor(private readonly opts: EgressServiceOpts) {
    this.recorder = new EgressRecorder(opts);
    this.baseDir = socketBaseDir(opts.home, 'egress');
    mkdirSync(this.baseDir, { recursive: true, mode: 0o700 });
    this.addresses = new AddressRules(opts.policy.allowRanges);
  }

  /** The host directory to bind into sandbox `id`; created empty (mode 0755: the sandbox user must traverse it). */
  dirFor(id: string): string {
    const dir = join(this.baseDir, id);
    mkdirSync(dir, { recursive: true, mode: 0o755 });
    return dir;
  }

  isOpen(id: string): boolean {
    return this.live.has(id);
  }

  /**
   * Start (or restart, after a daemon restart) the proxy of a sandbox whose egress is not none;
   * returns the directory to bind into the sandbox.
   */
  async open(sb: { id: string; tenant: string; egress: Egress }): Promise<string | undefined> {
    if (sb.egress.mode === 'none') return undefined;
    await this.live.get(sb.id)?.proxy.close();
    const quotaBytes = this.opts.policy.byteQuotaMb * 1024 * 1024;
    const state: { rules: HostRules; bytesUsed: number } = {
      rules: { mode: sb.egress.mode, allow: [...sb.egress.allow], globalDeny: this.opts.policy.globalDeny },
      bytesUsed: this.opts.log.bytesUsed(sb.id),
    };
    const proxy: SandboxProxy = new SandboxProxy({
      sandboxId: sb.id,
      rules: () => state.rules,
      addresses: this.addresses,
      resolve: this.opts.resolve,
      quotaMb: this.opts.policy.byteQuotaMb,
      quotaLeft: () => quotaBytes - state.bytesUsed,
      addBytes: (n) => {
        state.bytesUsed += n;
        if (state.bytesUsed > quotaBytes) proxy.dropConnections();
      },
      record: (a) => this.recorder.record(sb.id, sb.tenant, a),
      ...(this.opts.gateway ? { gateway: (req: IncomingMessage, res: ServerResponse) => this.opts.gateway!(sb.id, req, res) } : {}),
    });
    const entry: Entry = Object.assign(state, { proxy, tenant: sb.tenant });
    const dir = this.dirFor(sb.id);
    await entry.proxy.listen(join(dir, EGRESS_SOCKET));
    this.live.set(sb.id, entry);
    return dir;
  }

  /** Let the running sandbox reach one more host, from its next connection on. */
  allow(id: string, host: string): void {
    const e = this.live.get(id);
    if (e && !e.rules.allow.includes(host)) e.rules = { ...e.rules, allow: [...e.rules.allow, host] };
  }

  /** Stop the proxy and remove its directory. Idempotent. */
  async close(id: string): Promise<void> {
    const e = this.live.get(id);
    this.live.delete(id);
    await e?.proxy.close();
    rmSync(join(this.baseDir, id), { recursive: true, force: true });
  }

  /** Remove socket directories of sandboxes that no longer exist. */
  reapOrphans(keep: ReadonlySet<string>): string[] {
    const gone: string[] = [];
    let names: string[] = [];
    try {
      names = readdirSync(this.baseDir);
    } catch {
      return gone;
    }
    for (const name of names) {
      if (keep.has(name) || this.live.has(name)) continue;
      rmSync(join(this.baseDir, name), { recursive: true, force: true });
      gone.push(name);
    }
    return gone;
  }

  /** Stop every proxy (daemon shutdown); directories stay for sandboxes that outlive the daemon. */
  async closeAll(): Promise<void> {
    const all = [...this.live.values()];
    this.live.clear();
    await Promise.all(all.map((e) => e.proxy.close()));
  }
}

/** Where a decided egress attempt goes: the store's connection log, metrics, a log line and a span. */
export class EgressRecorder {
  constructor(private readonly opts: { log: EgressEvents; logger: Logger; metrics?: Metrics | undefined; tracing?: Tracing | undefined }) {}

  /** Log a decided attempt (store, metrics, log line); the returned function adds its bytes once it ends. */
  record(sandboxId: string, tenant: string, a: ProxyAttempt): (o: { bytesUp: number; bytesDown: number; error: string | null }) => void {
    const t0 = performance.now();
    const metrics = this.opts.metrics;
    const id = this.opts.log.record({ sandboxId, tenant, ...a });
    metrics?.egressConnections.inc({ decision: a.decision, kind: a.kind, tenant });
    this.opts.logger.info({ sandbox_id: sandboxId, tenant, host: a.host, port: a.port, address: a.address, decision: a.decision, rule: a.rule }, 'egress');
    const tracing = this.opts.tracing ?? Tracing.disabled();
    const span = tracing.enabled
      ? tracing.startSpan(
          'egress.connection',
          {
            'agentbox.sandbox.id': sandboxId,
            'agentbox.tenant': tenant,
            'server.address': a.host.slice(0, 255),
            'server.port': a.port,
            ...(a.address ? { 'network.peer.address': a.address } : {}),
            ...(a.method ? { 'http.request.method': a.method } : {}),
            'agentbox.egress.kind': a.kind,
            'agentbox.egress.decision': a.decision,
            'agentbox.egress.rule': a.rule.slice(0, 255),
          },
          { kind: SpanKind.CLIENT, parent: 'root' },
        )
      : undefined;
    let done = false;
    return (o) => {
      if (done) return;
      done = true;
      this.opts.log.finish(id, { ...o, durationMs: Math.round(performance.now() - t0) });
      metrics?.egressBytes.inc({ direction: 'up', tenant }, o.bytesUp);
      metrics?.egressBytes.inc({ direction: 'down', tenant }, o.bytesDown);
      if (span) {
        span.setAttributes({ 'agentbox.egress.bytes_up': o.bytesUp, 'agentbox.egress.bytes_down': o.bytesDown });
        if (o.error !== null) span.setStatus({ code: SpanStatusCode.ERROR, message: o.error.slice(0, 256) });
        span.end();
      }
    };
  }
}
