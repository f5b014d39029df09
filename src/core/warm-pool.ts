/**
 * Warm pools (policy `pools:`): sandboxes started before anyone asks, per (image, profile).
 * A create whose resolved spec equals the pool's template takes one in about a millisecond;
 * the pool refills in the background. A member is handed out once (a synchronous shift) and has
 * never run anything, so no trace of an earlier user can be in it.
 */
import type { Logger } from 'pino';
import type { Runtime, RuntimeSpec, SandboxHandle } from '../runtime/types.js';
import type { SandboxSpec } from '../contract/model.js';

export interface PoolTemplate {
  image: string;
  profile: string | null;
  size: number;
  spec: SandboxSpec;
}

const RETRY_MS = 5000;

/** What a pool needs from its owner for members with network: their egress directory, and its removal. */
export interface PoolHooks {
  specFor(id: string): Partial<RuntimeSpec>;
  released(id: string): Promise<void>;
}

const NO_HOOKS: PoolHooks = { specFor: () => ({}), released: async () => undefined };

/** What must be equal for a pooled sandbox to serve a request: everything the runtime fixed at start. */
export function runtimeKey(spec: SandboxSpec): string {
  return JSON.stringify([spec.image, spec.profile, spec.runtime, spec.isolation, spec.limits, spec.egress.mode, [...spec.egress.allow].sort(), spec.rootfs ?? 'readonly']);
}

export class WarmPool {
  private readonly members: SandboxHandle[] = [];
  private filling = 0;
  private closed = false;
  private retryTimer: NodeJS.Timeout | undefined;
  private readonly waiters: (() => void)[] = [];
  private readonly starting = new Set<Promise<void>>();
  readonly key: string;

  constructor(
    readonly template: PoolTemplate,
    private readonly runtime: Runtime,
    private readonly newId: () => string,
    private readonly logger: Logger,
    private readonly hooks: PoolHooks = NO_HOOKS,
  ) {
    this.key = runtimeKey(template.spec);
  }

  get ready(): number {
    return this.members.length;
  }

  matches(spec: SandboxSpec): boolean {
    return runtimeKey(spec) === this.key;
  }

  /** Take a ready member, if any, and start a replacement. */
  claim(): SandboxHandle | undefined {
    const h = this.members.shift();
    // After the claimer's turn: the local runtime's start has synchronous parts (fork, cgroup writes).
    setImmediate(() => this.fill());
    return h;
  }

  fill(): void {
    if (this.closed || this.retryTimer) return;
    while (this.members.length + this.filling < this.template.size) {
      this.filling++;
      const s = this.template.spec;
      const id = this.newId();
      const started: Promise<void> = this.runtime
        .create({ id, image: s.image, isolation: s.isolation, limits: s.limits, labels: {}, pooled: true, ...(s.rootfs === 'writable' ? { writableRoot: true } : {}), ...this.hooks.specFor(id) })
        .then(
          async (h) => {
            if (this.closed) {
              await this.runtime.destroy(h).catch(() => undefined);
              await this.hooks.released(id).catch(() => undefined);
              return;
            }
            this.members.push(h);
            if (this.members.length >= this.template.size) for (const w of this.waiters.splice(0)) w();
          },
          (err: unknown) => {
            void this.hooks.released(id).catch(() => undefined);
            this.logger.warn({ pool: this.template.image, profile: this.template.profile, err: err instanceof Error ? err.message : String(err) }, 'warm pool refill failed');
            this.retryTimer = setTimeout(() => {
              this.retryTimer = undefined;
              this.fill();
            }, RETRY_MS);
            this.retryTimer.unref();
          },
        )
        .finally(() => {
          this.filling--;
          this.starting.delete(started);
        });
      this.starting.add(started);
    }
  }

  /** Resolves once the pool is full (for tests and benchmarks). */
  whenFull(): Promise<void> {
    if (this.members.length >= this.template.size) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  /** Destroy every ready member; members still starting are destroyed when they arrive. */
  async close(): Promise<void> {
    this.closed = true;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    await Promise.allSettled([...this.starting]);
    const all = this.members.splice(0);
    await Promise.all(all.map((h) => this.runtime.destroy(h).catch(() => undefined)));
    await Promise.all(all.map((h) => this.hooks.released(h.id).catch(() => undefined)));
  }
}
