/**
 * The policy's warm pools: one per `pools:` entry whose runtime works here; creates claim from them.
 * A host-local runtime's pool keeps its members in this daemon's memory (core/warm-pool.ts); a shared
 * runtime that keeps pools (a cluster) has one pool for every replica (core/shared-warm-pool.ts).
 */
import { hostname } from 'node:os';
import type { Logger } from 'pino';
import type { EgressService } from '../../egress/service.js';
import { resolveSpec } from '../../policy/resolve.js';
import type { Policy } from '../../policy/schema.js';
import type { Runtime, SandboxHandle } from '../../runtime/types.js';
import type { SandboxSpec } from '../../contract/model.js';
import { keepsPools, SharedWarmPool, type PoolLeadership } from '../shared-warm-pool.js';
import { WarmPool, type PoolHooks } from '../warm-pool.js';
import { requireEgress } from './egress.js';
import { newSandboxId } from './lifecycle.js';
import type { ReplicaScope } from './replica.js';
import type { Runtimes } from './runtimes.js';

export interface PoolStatus {
  image: string;
  profile: string | null;
  size: number;
  ready: number;
  /** Kept in the runtime and shared by every replica (ready: as this replica last counted). */
  shared?: boolean;
}

type AnyPool = WarmPool | SharedWarmPool;

export class WarmPools {
  private readonly pools: AnyPool[] = [];

  /**
   * Start filling a pool per policy entry. A pool whose runtime is unavailable is skipped with a
   * warning; one that needs egress on a daemon without proxies is runtime_unavailable.
   */
  async start(d: { policy: Policy; runtimes: Runtimes; egress?: EgressService | undefined; logger: Logger; replica: ReplicaScope }): Promise<void> {
    for (const p of d.policy.pools ?? []) {
      if (p.size <= 0) continue;
      const spec = resolveSpec(d.policy, { image: p.image, ...(p.profile ? { profile: p.profile } : {}) }, { tenant: '__pool__', id: 'sbx_pooltemplate' });
      let rt: Runtime;
      try {
        rt = await d.runtimes.probed(spec.runtime);
        if (spec.rootfs === 'writable' && !rt.writableRoot) throw new Error(`the ${rt.name} runtime cannot give a sandbox a writable root`);
      } catch (err) {
        d.logger.warn({ image: p.image, profile: p.profile, err: err instanceof Error ? err.message : String(err) }, 'warm pool disabled');
        continue;
      }
      const template = { image: p.image, profile: p.profile ?? null, size: p.size, spec };
      const pool = keepsPools(rt)
        ? new SharedWarmPool(template, rt, newSandboxId, d.logger, hooksFor(rt, spec, d.egress), leadershipOf(d.replica))
        : new WarmPool(template, rt, newSandboxId, d.logger, hooksFor(rt, spec, d.egress));
      this.pools.push(pool);
      pool.fill();
    }
  }

  /**
   * A ready sandbox made for this spec's image and profile, taken out of its pool; undefined when
   * none is (or the shared pool could not be asked: the create then starts one cold).
   */
  async claim(spec: SandboxSpec, logger: Logger): Promise<SandboxHandle | undefined> {
    const pool = this.pools.find((p) => p.matches(spec));
    try {
      return await pool?.claim();
    } catch (err) {
      logger.warn({ image: spec.image, err: err instanceof Error ? err.message : String(err) }, 'could not claim from a warm pool: starting a sandbox cold');
      return undefined;
    }
  }

  /** The pools kept in runtime NAME (their `RuntimeSpec.poolKey`s): what the leader's sweep leaves alone. */
  sharedKeys(name: string): Set<string> {
    return new Set(this.pools.filter((p): p is SharedWarmPool => p instanceof SharedWarmPool && p.template.spec.runtime === name).map((p) => p.key));
  }

  /** Resolves when every pool is full. */
  async whenFull(): Promise<void> {
    await Promise.all(this.pools.map((p) => p.whenFull()));
  }

  status(): PoolStatus[] {
    return this.pools.map((p) => ({ image: p.template.image, profile: p.template.profile, size: p.template.size, ready: p.ready, ...(p instanceof SharedWarmPool ? { shared: true } : {}) }));
  }

  async close(): Promise<void> {
    await Promise.all(this.pools.map((p) => p.close()));
  }
}

/** Members with network: a proxy of this daemon's for a host-local runtime; the runtime's own routing for one with `ownEgress`. */
function hooksFor(rt: Runtime, spec: SandboxSpec, egressService: EgressService | undefined): PoolHooks {
  if (spec.egress.mode === 'none') return { specFor: () => ({}), released: async () => undefined };
  if (rt.ownEgress) return { specFor: () => ({ egress: true }), released: async () => undefined };
  const egress = requireEgress(egressService);
  return { specFor: (id) => ({ egressDir: egress.dirFor(id) }), released: async (id) => egress.close(id) };
}

function leadershipOf(replica: ReplicaScope): PoolLeadership {
  return {
    leads: () => replica.leads('pools'),
    othersAlive: () => replica.othersAlive(),
    claimer: replica.id ?? `${hostname()}-${process.pid}`,
  };
}
