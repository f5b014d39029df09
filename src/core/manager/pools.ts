/** The policy's warm pools: one per `pools:` entry whose runtime works here; creates claim from them. */
import type { Logger } from 'pino';
import type { EgressService } from '../../egress/service.js';
import { resolveSpec } from '../../policy/resolve.js';
import type { Policy } from '../../policy/schema.js';
import type { Runtime, SandboxHandle } from '../../runtime/types.js';
import type { SandboxSpec } from '../../contract/model.js';
import { WarmPool } from '../warm-pool.js';
import { requireEgress } from './egress.js';
import { newSandboxId } from './lifecycle.js';
import type { Runtimes } from './runtimes.js';

export interface PoolStatus {
  image: string;
  profile: string | null;
  size: number;
  ready: number;
}

export class WarmPools {
  private readonly pools: WarmPool[] = [];

  /**
   * Start filling a pool per policy entry. A pool whose runtime is unavailable is skipped with a
   * warning; one that needs egress on a daemon without proxies is runtime_unavailable.
   */
  async start(d: { policy: Policy; runtimes: Runtimes; egress?: EgressService | undefined; logger: Logger }): Promise<void> {
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
      const egress = spec.egress.mode === 'none' ? undefined : requireEgress(d.egress);
      const pool = new WarmPool({ image: p.image, profile: p.profile ?? null, size: p.size, spec }, rt, newSandboxId, d.logger, {
        specFor: (id) => (egress ? (rt.ownEgress ? { egress: true } : { egressDir: egress.dirFor(id) }) : {}),
        released: async (id) => egress?.close(id),
      });
      this.pools.push(pool);
      pool.fill();
    }
  }

  /** A ready sandbox made for this spec's image and profile, taken out of its pool; undefined when none is. */
  claim(spec: SandboxSpec): SandboxHandle | undefined {
    return this.pools.find((p) => p.matches(spec))?.claim();
  }

  /** Resolves when every pool is full. */
  async whenFull(): Promise<void> {
    await Promise.all(this.pools.map((p) => p.whenFull()));
  }

  status(): PoolStatus[] {
    return this.pools.map((p) => ({ image: p.template.image, profile: p.template.profile, size: p.template.size, ready: p.ready }));
  }

  async close(): Promise<void> {
    await Promise.all(this.pools.map((p) => p.close()));
  }
}
