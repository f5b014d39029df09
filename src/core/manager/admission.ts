/**
 * Whether a create or an exec may start at all: the tenant's quotas (sandboxes, memory, exec
 * minutes per day) and a bound on creates in flight, so a burst queues briefly and then gets a
 * clear 429 instead of collapsing the host.
 */
import type { Policy } from '../../policy/schema.js';
import type { Store } from '../../store/store.js';
import { QuotaExceededError } from '../../contract/errors.js';
import type { SandboxSpec } from '../../contract/model.js';

/** The UTC day exec minutes are counted on (`YYYY-MM-DD`). */
export function utcDay(): string {
  return new Date().toISOString().slice(0, 10);
}

interface Held {
  sandboxes: number;
  memoryMb: number;
}

export class QuotaLedger {
  /** Quota held by creates that passed the check but have not stored their row yet. */
  private readonly reserved = new Map<string, Held>();

  constructor(
    private readonly policy: Policy,
    private readonly store: Store,
  ) {}

  private quotasOf(tenant: string) {
    return this.policy.tenants?.find((t) => t.name === tenant)?.quotas;
  }

  /**
   * Check the tenant's count and memory quotas and hold the new sandbox's share at once, before
   * any await: parallel creates would otherwise all pass a check that counts only stored rows.
   * Returns the release, for when the row is stored (it counts from then on) or the create failed;
   * calling it twice releases once.
   */
  reserve(spec: SandboxSpec): () => void {
    const quotas = this.quotasOf(spec.tenant);
    if (!quotas) return () => undefined;
    const stored = this.store.countActive(spec.tenant);
    const held = this.reserved.get(spec.tenant) ?? { sandboxes: 0, memoryMb: 0 };
    const used = { sandboxes: stored.sandboxes + held.sandboxes, memoryMb: stored.memoryMb + held.memoryMb };
    const over = quotaError(spec.tenant, used, quotas, spec.limits.memoryMb);
    if (over) throw over;
    this.checkExecMinutes(spec.tenant);
    this.reserved.set(spec.tenant, { sandboxes: held.sandboxes + 1, memoryMb: held.memoryMb + spec.limits.memoryMb });
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const h = this.reserved.get(spec.tenant);
      if (!h) return;
      const next = { sandboxes: h.sandboxes - 1, memoryMb: h.memoryMb - spec.limits.memoryMb };
      if (next.sandboxes <= 0) this.reserved.delete(spec.tenant);
      else this.reserved.set(spec.tenant, next);
    };
  }

  /**
   * The tenant's sandbox and memory quotas, for the store's check where the row is inserted
   * (`Store.insertSandboxWithin`: across replicas); undefined when it has neither.
   */
  limitsOf(tenant: string): { sandboxes?: number | undefined; memoryMb?: number | undefined } | undefined {
    const q = this.quotasOf(tenant);
    return q && (q.sandboxes !== undefined || q.memoryMb !== undefined) ? { sandboxes: q.sandboxes, memoryMb: q.memoryMb } : undefined;
  }

  /** quota_exceeded once the tenant's execs ran `execMinutesPerDay` today (UTC). */
  checkExecMinutes(tenant: string): void {
    const perDay = this.quotasOf(tenant)?.execMinutesPerDay;
    if (perDay === undefined) return;
    if (this.store.execMsOn(tenant, utcDay()) >= perDay * 60_000) {
      throw new QuotaExceededError(`tenant ${tenant} used its ${perDay} exec minutes for today`, { hint: 'the quota resets at 00:00 UTC' });
    }
  }
}

/** The quota error for a tenant that uses USED and asks for one more sandbox of MEMORY_MB; undefined when it fits. */
export function quotaError(tenant: string, used: { sandboxes: number; memoryMb: number }, quotas: { sandboxes?: number | undefined; memoryMb?: number | undefined }, memoryMb: number): InstanceType<typeof QuotaExceededError> | undefined {
  if (quotas.sandboxes !== undefined && used.sandboxes + 1 > quotas.sandboxes) {
    return new QuotaExceededError(`tenant ${tenant} already has ${used.sandboxes} of ${quotas.sandboxes} sandboxes`, { hint: 'delete one first: agentbox ls, then agentbox rm ID' });
  }
  if (quotas.memoryMb !== undefined && used.memoryMb + memoryMb > quotas.memoryMb) {
    return new QuotaExceededError(`tenant ${tenant} would use ${used.memoryMb + memoryMb} MiB of ${quotas.memoryMb} MiB memory`, { hint: 'ask for less with --memory, or delete a sandbox' });
  }
  return undefined;
}

/** Bounded concurrency for creates: `max` run at once, `queueLength` wait, the rest get a 429. */
export class CreateGate {
  private running = 0;
  private readonly waiters: (() => void)[] = [];

  constructor(
    private readonly max: number,
    private readonly queueLength: number,
  ) {}

  /** Waits for a slot; returns its release. */
  async acquire(): Promise<() => void> {
    if (this.running >= this.max) {
      if (this.waiters.length >= this.queueLength) {
        throw new QuotaExceededError(`too many sandbox creates in flight (${this.running} running, ${this.waiters.length} queued)`, {
          hint: 'retry in a second',
          retryAfterSec: 1,
        });
      }
      await new Promise<void>((resolve) => this.waiters.push(resolve));
    }
    this.running++;
    return () => {
      this.running--;
      this.waiters.shift()?.();
    };
  }
}
