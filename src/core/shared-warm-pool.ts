/**
 * A warm pool whose members live in a shared runtime (a cluster: `Runtime.claimPooled`), where every
 * daemon replica on the store sees them. Every replica claims from the same members, and the runtime's
 * claim is atomic across replicas, so a member is handed out once. Only the replica that holds the
 * `pools` lease makes members, so N replicas keep SIZE members, not N×SIZE; a claim on any replica is
 * made up by the leader within a tick.
 *
 * Nothing about the members is kept in memory: each tick counts them in the runtime, so a replica that
 * dies midway leaves nothing this one does not see (a member stuck starting is the leader's sweep's).
 */
import { createHash } from 'node:crypto';
import type { Logger } from 'pino';
import type { PooledCount, Runtime, SandboxHandle } from '../runtime/types.js';
import type { SandboxSpec } from '../contract/model.js';
import { runtimeKey, type PoolHooks, type PoolTemplate } from './warm-pool.js';

/** What the pool needs from the replica it runs on. */
export interface PoolLeadership {
  /** Whether this replica makes members now (takes or renews the lease: one replica at a time). */
  leads(): boolean;
  /** Whether another replica is alive: then the members outlive this one's stop. */
  othersAlive(): boolean;
  /** Who claims (written on what it claims). */
  readonly claimer: string;
}

/** A runtime that keeps pools. */
export type PoolingRuntime = Runtime & Required<Pick<Runtime, 'claimPooled' | 'countPooled'>>;

export function keepsPools(rt: Runtime): rt is PoolingRuntime {
  return rt.shared === true && typeof rt.claimPooled === 'function' && typeof rt.countPooled === 'function';
}

/** The pool's name in the runtime: a label-sized hash of what its members were made for. */
export function poolKeyOf(spec: SandboxSpec): string {
  return createHash('sha256').update(runtimeKey(spec)).digest('hex').slice(0, 24);
}

const TICK_MS = 2000;
/** After a member failed to start, the next try waits this long (a broken image would otherwise be retried every tick). */
const RETRY_MS = 5000;

export class SharedWarmPool {
  readonly key: string;
  /** Ready members at the last count (any replica's view of the shared pool). */
  ready = 0;
  private readonly runtimeKey: string;
  private closed = false;
  private timer: NodeJS.Timeout | undefined;
  /** The tick under way, if any: ticks never overlap. */
  private ticking: Promise<void> | undefined;
  private again = false;
  /** Members this replica is making now. */
  private readonly starting = new Set<Promise<void>>();
  private readonly waiters: (() => void)[] = [];
  /** The failure last warned about, per kind: one warning per spell, not one per tick. */
  private readonly failing = new Map<'count' | 'make', string>();
  private retryAt = 0;

  constructor(
    readonly template: PoolTemplate,
    private readonly runtime: PoolingRuntime,
    private readonly newId: () => string,
    private readonly logger: Logger,
    private readonly hooks: PoolHooks,
    private readonly leadership: PoolLeadership,
    private readonly tickMs = TICK_MS,
  ) {
    this.runtimeKey = runtimeKey(template.spec);
    this.key = poolKeyOf(template.spec);
  }

  matches(spec: SandboxSpec): boolean {
    return runtimeKey(spec) === this.runtimeKey;
  }

  /** Count now, then every tick. */
  fill(): void {
    if (this.closed || this.timer) return;
    this.timer = setInterval(() => this.kick(), this.tickMs);
    this.timer.unref();
    this.kick();
  }

  /** Take a ready member, if any is left in the runtime; the leader makes a replacement. */
  async claim(): Promise<SandboxHandle | undefined> {
    if (this.closed) return undefined;
    const h = await this.runtime.claimPooled(this.key, this.leadership.claimer);
    this.kick();
    return h;
  }

  /** Resolves once the pool has SIZE ready members (for tests and benchmarks). */
  whenFull(): Promise<void> {
    if (this.ready >= this.template.size) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  /**
   * Stop counting and making. The last replica to stop removes the members (claiming each first, so
   * no create elsewhere gets one as it goes); while another replica is alive they are its pool.
   */
  async close(): Promise<void> {
    this.closed = true;
    if (this.timer) clearInterval(this.timer);
    await this.ticking;
    await Promise.allSettled([...this.starting]);
    if (this.leadership.othersAlive()) return;
    for (;;) {
      const h = await this.runtime.claimPooled(this.key, this.leadership.claimer).catch(() => undefined);
      if (!h) break;
      await this.discard(h).catch(() => undefined);
    }
  }

  /** A tick now, or right after the one under way. */
  private kick(): void {
    if (this.ticking) {
      this.again = true;
      return;
    }
    this.ticking = this.tick().finally(() => {
      this.ticking = undefined;
      if (this.again && !this.closed) {
        this.again = false;
        this.kick();
      }
    });
  }

  private async tick(): Promise<void> {
    if (this.closed) return;
    let count: PooledCount;
    try {
      count = await this.runtime.countPooled(this.key);
    } catch (err) {
      this.warnOnce('count', err, 'cannot count a warm pool\'s members');
      return;
    }
    this.failing.delete('count');
    this.ready = count.ready;
    if (this.ready >= this.template.size) for (const w of this.waiters.splice(0)) w();
    // Members this replica is making are not all counted yet: the tick after they are decides.
    if (this.starting.size > 0 || this.closed || Date.now() < this.retryAt || !this.leadership.leads()) return;
    const missing = this.template.size - count.total;
    for (let i = 0; i < missing; i++) this.make();
    // More than asked for (the lease moved while two replicas made members): the surplus goes.
    for (let i = 0; i < count.ready - this.template.size; i++) this.trimOne();
  }

  private make(): void {
    const s = this.template.spec;
    const id = this.newId();
    const made: Promise<void> = this.runtime
      .create({ id, image: s.image, isolation: s.isolation, limits: s.limits, labels: {}, pooled: true, poolKey: this.key, ...(s.rootfs === 'writable' ? { writableRoot: true } : {}), ...this.hooks.specFor(id) })
      .then(
        () => void this.failing.delete('make'),
        (err: unknown) => {
          void this.hooks.released(id).catch(() => undefined);
          this.retryAt = Date.now() + RETRY_MS;
          this.warnOnce('make', err, 'warm pool refill failed');
        },
      )
      .finally(() => {
        this.starting.delete(made);
        // Count again now that it is available (after a failure, the next tick tries again).
        if (this.starting.size === 0 && !this.failing.has('make')) this.kick();
      });
    this.starting.add(made);
  }

  private trimOne(): void {
    const trimmed: Promise<void> = (async () => {
      const h = await this.runtime.claimPooled(this.key, this.leadership.claimer);
      if (h) await this.discard(h);
    })()
      .catch((err: unknown) => this.warnOnce('make', err, 'could not remove a surplus warm-pool member'))
      .finally(() => this.starting.delete(trimmed));
    this.starting.add(trimmed);
  }

  /** A member this replica claimed to remove it: destroyed, and what the hooks hold for it released (whether or not the destroy worked). */
  private async discard(h: SandboxHandle): Promise<void> {
    try {
      await this.runtime.destroy(h);
    } finally {
      await this.hooks.released(h.id).catch(() => undefined);
    }
  }

  private warnOnce(kind: 'count' | 'make', err: unknown, msg: string): void {
    const text = err instanceof Error ? err.message : String(err);
    if (this.failing.get(kind) === text) return;
    this.failing.set(kind, text);
    this.logger.warn({ pool: this.template.image, profile: this.template.profile, err: text }, msg);
  }
}
