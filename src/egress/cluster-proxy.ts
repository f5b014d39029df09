/**
 * The egress proxy of a cluster (ARCHITECTURE.md, "Egress in a cluster"): one TCP listener shared by
 * every sandbox of the shared runtime, run as its own Deployment (`agentbox egress-proxy`), which
 * the sandboxes' NetworkPolicy makes their only way out.
 *
 * A connection says which sandbox it is with `Proxy-Authorization: Basic <sandbox id>:<credential>`,
 * the credential being HMAC-SHA256(AGENTBOX_EGRESS_SECRET, sandbox id): never the pod's address,
 * which is reused as pods come and go. The connection is then handed, head and all, to that
 * sandbox's `SandboxProxy`, the same code as on one machine: the rules (its row's egress, read from
 * the shared store on each new connection, so an operator's approval counts at once), the global
 * deny list, the address checks, the byte quota and the connection log in the store.
 * A sandbox that is not running, an unknown one or a wrong credential gets 407, nothing else.
 * Its plain-HTTP requests for `http://agentbox.internal` go to a daemon replica's API instead
 * (egress/api-relay.ts), with a proof of the sandbox the credential named.
 */
import { timingSafeEqual } from 'node:crypto';
import { egressCredential, MIN_EGRESS_SECRET_LENGTH } from '../runtime/egress-plumbing.js';
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import type { Logger } from 'pino';
import type { Metrics } from '../observability/metrics.js';
import type { Tracing } from '../observability/tracing.js';
import type { Store } from '../store/store.js';
import { AddressRules } from './addresses.js';
import { EgressRecorder, type EgressPolicy } from './service.js';
import { PROXY_AUTH_REQUIRED, SandboxProxy } from './proxy.js';
import { createApiRelay, type ApiRelay } from './api-relay.js';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Resolver } from './resolver.js';
import type { HostRules } from './rules.js';

const MAX_HEAD_BYTES = 16 * 1024;
const HEAD_TIMEOUT_MS = 30_000;
/** A sandbox's proxy with no connection for this long is dropped (made again on its next one). */
const IDLE_MS = 60_000;

export { egressCredential, MIN_EGRESS_SECRET_LENGTH, sandboxProxyUrl } from '../runtime/egress-plumbing.js';

export interface ClusterProxyOpts {
  /** The replicas' store: sandboxes' rows (state, egress) and the connection log. */
  store: Store;
  secret: string;
  policy: EgressPolicy;
  resolve: Resolver;
  logger: Logger;
  metrics?: Metrics | undefined;
  tracing?: Tracing | undefined;
  /**
   * A daemon replica's API, where requests for agentbox.internal are relayed (parseApiUrl()).
   * Absent: they are answered 503 with how to set it. @default AGENTBOX_API_URL (egress-proxy-main.ts)
   */
  apiUrl?: URL | undefined;
}

interface Entry {
  id: string;
  proxy: SandboxProxy;
  tenant: string;
  rules: HostRules;
  bytesUsed: number;
  open: number;
  idle: NodeJS.Timeout | undefined;
}

export class ClusterEgressProxy {
  private readonly server: Server;
  private readonly addresses: AddressRules;
  private readonly recorder: EgressRecorder;
  private readonly entries = new Map<string, Entry>();
  private readonly pending = new Set<Socket>();
  private readonly relay: ApiRelay;

  constructor(private readonly opts: ClusterProxyOpts) {
    if (opts.secret.length < MIN_EGRESS_SECRET_LENGTH) throw new Error(`the egress secret must have at least ${MIN_EGRESS_SECRET_LENGTH} characters`);
    this.addresses = new AddressRules(opts.policy.allowRanges);
    this.recorder = new EgressRecorder({ log: opts.store.egress, logger: opts.logger, metrics: opts.metrics, tracing: opts.tracing });
    this.relay = createApiRelay({ apiUrl: opts.apiUrl, secret: opts.secret, logger: opts.logger });
    this.server = createServer((socket) => this.onConnection(socket));
  }

  async listen(port: number, host: string): Promise<AddressInfo> {
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(port, host, () => {
        this.server.off('error', reject);
        resolve();
      });
    });
    return this.server.address() as AddressInfo;
  }

  async close(): Promise<void> {
    for (const s of this.pending) s.destroy();
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    for (const [id, e] of this.entries) {
      clearTimeout(e.idle);
      this.entries.delete(id);
      await e.proxy.close();
    }
    await closed;
  }

  /** Sandboxes with a proxy in memory now (tests). */
  get liveSandboxes(): string[] {
    return [...this.entries.keys()];
  }

  private onConnection(socket: Socket): void {
    this.pending.add(socket);
    let head = Buffer.alloc(0);
    const timer = setTimeout(() => socket.destroy(), HEAD_TIMEOUT_MS);
    const done = (): void => {
      clearTimeout(timer);
      socket.off('data', onData);
      this.pending.delete(socket);
    };
    const onData = (chunk: Buffer): void => {
      head = Buffer.concat([head, chunk]);
      const end = head.indexOf('\r\n\r\n');
      if (end < 0) {
        if (head.length > MAX_HEAD_BYTES) {
          done();
          socket.end('HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n');
        }
        return;
      }
      done();
      socket.pause();
      const entry = this.admit(head.subarray(0, end).toString('latin1'));
      if (!entry) {
        socket.end(PROXY_AUTH_REQUIRED);
        return;
      }
      // The head goes back, so the sandbox's proxy parses the request as if it had read it first.
      socket.unshift(head);
      this.hold(entry, socket);
      entry.proxy.accept(socket);
      socket.resume();
    };
    socket.on('data', onData);
    socket.on('error', () => socket.destroy());
    socket.once('close', () => {
      clearTimeout(timer);
      this.pending.delete(socket);
    });
  }

  /** The proxy of the sandbox the head's credential names, when it is valid and the sandbox runs with network. */
  private admit(head: string): Entry | undefined {
    const who = proxyCredentials(head);
    if (!who || !this.valid(who)) return undefined;
    const sb = this.opts.store.getSandbox(who.sandboxId)?.sandbox;
    const mode = sb?.egress.mode;
    if (!sb || sb.state !== 'running' || mode === undefined || mode === 'none') return undefined;
    const rules: HostRules = { mode, allow: [...sb.egress.allow], globalDeny: this.opts.policy.globalDeny };
    const entry = this.entries.get(sb.id) ?? this.entryFor(sb.id, sb.tenant, rules);
    entry.rules = rules; // an approval since the last connection counts from this one on
    return entry;
  }

  private entryFor(id: string, tenant: string, rules: HostRules): Entry {
    const quotaBytes = this.opts.policy.byteQuotaMb * 1024 * 1024;
    const proxy = new SandboxProxy({
      sandboxId: id,
      rules: () => entry.rules,
      addresses: this.addresses,
      resolve: this.opts.resolve,
      quotaMb: this.opts.policy.byteQuotaMb,
      quotaLeft: () => quotaBytes - entry.bytesUsed,
      addBytes: (n) => {
        entry.bytesUsed += n;
        if (entry.bytesUsed > quotaBytes) entry.proxy.dropConnections();
      },
      record: (a) => this.recorder.record(id, tenant, a),
      // Every request of a kept-alive connection names this sandbox again, with a valid credential.
      admits: (req: IncomingMessage) => this.credentialOf(req) === id,
      gateway: (req: IncomingMessage, res: ServerResponse) => this.relay(id, req, res),
    });
    // The proxy's callbacks read the entry only once connections come, after it is made.
    const entry: Entry = { id, tenant, rules, bytesUsed: this.opts.store.egress.bytesUsed(id), open: 0, idle: undefined, proxy };
    this.entries.set(id, entry);
    return entry;
  }

  /** The sandbox a parsed request's single Proxy-Authorization names with a valid credential. */
  private credentialOf(req: IncomingMessage): string | undefined {
    const values = req.headersDistinct['proxy-authorization'] ?? [];
    if (values.length !== 1) return undefined;
    const who = proxyCredentials(`${req.method ?? ''} ${req.url ?? ''} HTTP/1.1\r\nProxy-Authorization: ${values[0] ?? ''}`);
    return who && this.valid(who) ? who.sandboxId : undefined;
  }

  private valid(who: { sandboxId: string; credential: string }): boolean {
    const want = Buffer.from(egressCredential(this.opts.secret, who.sandboxId));
    const got = Buffer.from(who.credential);
    return got.length === want.length && timingSafeEqual(got, want);
  }

  private hold(entry: Entry, socket: Socket): void {
    entry.open++;
    clearTimeout(entry.idle);
    socket.once('close', () => {
      if (--entry.open > 0) return;
      entry.idle = setTimeout(() => {
        if (entry.open > 0 || this.entries.get(entry.id) !== entry) return;
        this.entries.delete(entry.id);
        void entry.proxy.close();
      }, IDLE_MS);
      entry.idle.unref();
    });
  }
}

/** `Proxy-Authorization: Basic base64(id:credential)` of a request head; undefined when absent or malformed. */
export function proxyCredentials(head: string): { sandboxId: string; credential: string } | undefined {
  const lines = head.split('\r\n').slice(1);
  const found = lines.filter((l) => /^proxy-authorization\s*:/i.test(l));
  if (found.length !== 1) return undefined; // none, or two that could disagree
  const m = /^proxy-authorization\s*:\s*basic\s+([A-Za-z0-9+/=]+)\s*$/i.exec(found[0] ?? '');
  if (!m?.[1]) return undefined;
  const decoded = Buffer.from(m[1], 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  if (colon <= 0) return undefined;
  const sandboxId = decoded.slice(0, colon);
  const credential = decoded.slice(colon + 1);
  if (!/^sbx_[a-z0-9]{1,40}$/.test(sandboxId) || credential.length === 0) return undefined;
  return { sandboxId, credential };
}
