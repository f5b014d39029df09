/**
 * E2B's sandbox traffic on agentbox's port proxy (README, "Use agentbox from the E2B SDK"): what
 * `sandbox.getHost(port)` reaches, and who may.
 *
 * E2B makes every port of a sandbox public unless it was created with `network: {
 * allowPublicTraffic: false }`; then a request needs the sandbox's `trafficAccessToken` in the
 * `e2b-traffic-access-token` header. agentbox's grants are per port (and its own sandboxes private
 * until their owner says otherwise), so an E2B sandbox's rule is recorded here, per sandbox, and the
 * port proxy asks `open()` when its own rules (a port token, the owner's API token, a public grant)
 * let a request to one of its ports through:
 *
 * - public: the first request to a port makes a public grant of that port, in the owner tenant's
 *   name (audited as `port_public` by `e2b-traffic`); from then on the proxy's own rule lets it in.
 *   Lazily, because a grant names one port and nobody knows which ports the sandbox will serve.
 * - token: a request carrying the sandbox's traffic token reaches any of its ports. The token is
 *   derived from the sandbox id under the envd key (`EnvdTokens.trafficToken`), stored nowhere,
 *   checked in constant time; no grant is made (a grant's token opens one port only).
 *
 * Records are files `e2b-traffic/<sandbox id>` in the daemon's home (the rule and the owner tenant,
 * no secret), so the rule survives a daemon restart with its sandbox; they go when the sandbox is
 * killed through E2B, or is found ended. A sandbox without a record (made through agentbox's own
 * API) gets nothing here: its ports stay private.
 */
import { mkdirSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import { z } from 'zod';
import type { PortTarget } from '../api/port-proxy.js';
import { NotFoundError } from '../contract/errors.js';
import type { Caller, SandboxManager } from '../core/manager.js';
import type { EnvdTokens } from './envd-token.js';

const RuleSchema = z.object({
  tenant: z.string().min(1).describe('The tenant that owns the sandbox: the proxy acts in its name'),
  public: z.boolean().describe('allowPublicTraffic: true (E2B\'s default): every port reachable by anyone'),
});
export type TrafficRule = z.infer<typeof RuleSchema>;

const ID = /^[A-Za-z0-9_-]{1,64}$/;
const ACTOR = 'e2b-traffic';
/** How often `record()` also drops the records of sandboxes that ended by themselves (TTL, idle...). */
const PRUNE_EVERY_MS = 60_000;

export interface E2bTrafficOpts {
  manager: SandboxManager;
  tokens: EnvdTokens;
  logger: Logger;
  /** Where the records live; undefined: in memory only (they then end with the daemon). */
  dir?: string;
}

export class E2bTraffic {
  private readonly rules = new Map<string, TrafficRule>();
  private lastPrune = 0;

  constructor(private readonly opts: E2bTrafficOpts) {
    if (opts.dir !== undefined) this.load(opts.dir);
    this.prune();
  }

  /** A new E2B sandbox's rule (at create, before its id is given out). */
  record(sandboxId: string, rule: TrafficRule): void {
    if (Date.now() - this.lastPrune > PRUNE_EVERY_MS) this.prune();
    this.rules.set(sandboxId, rule);
    if (this.opts.dir === undefined) return;
    const file = join(this.opts.dir, sandboxId);
    writeFileSync(`${file}.tmp`, JSON.stringify(rule), { mode: 0o600 });
    renameSync(`${file}.tmp`, file);
  }

  rule(sandboxId: string): TrafficRule | undefined {
    return this.rules.get(sandboxId);
  }

  /** Its traffic access token, for a sandbox created with `allowPublicTraffic: false`; null otherwise (E2B's shape). */
  tokenFor(sandboxId: string): string | null {
    const rule = this.rules.get(sandboxId);
    return rule && !rule.public ? this.opts.tokens.trafficToken(sandboxId) : null;
  }

  /** The sandbox ended: its rule goes (its grants go with the sandbox, in the core). */
  forget(sandboxId: string): void {
    this.rules.delete(sandboxId);
    if (this.opts.dir !== undefined && ID.test(sandboxId)) rmSync(join(this.opts.dir, sandboxId), { force: true });
  }

  /**
   * For the port proxy, when its own rules did not let a request through: a connection to the port
   * if E2B's rule for the sandbox does, else undefined (the proxy then answers 404, as for no sandbox).
   */
  async open(t: PortTarget, trafficToken: string | undefined): Promise<Duplex | undefined> {
    const rule = this.rules.get(t.sandboxId);
    if (!rule) return undefined;
    const owner: Caller = { tenant: rule.tenant, actor: ACTOR, scopes: ['exec'] };
    if (!rule.public) {
      if (trafficToken === undefined || !this.opts.tokens.verifyTraffic(t.sandboxId, trafficToken)) return undefined;
      return this.opts.manager.openPort(t.sandboxId, t.port, owner);
    }
    try {
      // Two first requests at once may both get here: the second grant is a harmless duplicate row.
      this.opts.manager.grantPortAccess(t.sandboxId, t.port, { public: true }, { ...owner, scopes: ['manage'] });
    } catch (err) {
      // Most likely the sandbox ended under us: its record goes, and the proxy says 404.
      this.opts.logger.debug({ sandbox_id: t.sandboxId, port: t.port, err: (err as Error).message }, 'e2b traffic: no public grant');
      this.pruneOne(t.sandboxId);
      return undefined;
    }
    return this.opts.manager.openPortByGrant(t.sandboxId, t.port, undefined);
  }

  private load(dir: string): void {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    for (const name of readdirSync(dir)) {
      if (!ID.test(name)) continue;
      try {
        this.rules.set(name, RuleSchema.parse(JSON.parse(readFileSync(join(dir, name), 'utf8'))));
      } catch (err) {
        // A record that cannot be read makes its sandbox's ports private, never public.
        this.opts.logger.warn({ sandbox_id: name, err: (err as Error).message }, 'e2b traffic: unreadable record ignored (its ports stay private)');
      }
    }
  }

  /** Drop the records of sandboxes that have ended. */
  private prune(): void {
    this.lastPrune = Date.now();
    for (const id of [...this.rules.keys()]) this.pruneOne(id);
  }

  private pruneOne(sandboxId: string): void {
    const rule = this.rules.get(sandboxId);
    if (!rule) return;
    let ended: boolean;
    try {
      const sb = this.opts.manager.get(sandboxId, { tenant: rule.tenant, actor: ACTOR, scopes: ['read'] });
      ended = sb.state !== 'running' && sb.state !== 'creating';
    } catch (err) {
      if (!(err instanceof NotFoundError)) return; // kept: a record is dropped only for a sandbox known to be gone
      ended = true;
    }
    if (ended) this.forget(sandboxId);
  }
}
