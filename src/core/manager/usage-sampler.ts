/**
 * Usage history for the dashboard: per running sandbox, a short ring of samples {at, cpuPct,
 * memoryBytes, pids} taken every `intervalMs` (2 s) over the last `keepMs` (5 min).
 *
 * Sampling costs a `runtime.stats()` per sandbox (cgroup files on local, an Engine call on docker),
 * so it only happens for sandboxes someone asked about within the last `wantedMs` (a minute): an
 * idle daemon with a thousand sandboxes does nothing. With per-sandbox metrics on
 * (AGENTBOX_METRICS_PER_SANDBOX=1) every running sandbox is also read every `metricsIntervalMs`
 * (10 s) for its gauges, without keeping a history nobody asked for. A tick reads at most `batch`
 * sandboxes at once and never overlaps the previous one (a slow tick delays the next). A paused
 * sandbox is never read (nothing wakes it). A sandbox's ring goes when it ends, and when nobody
 * asked about it for `wantedMs`.
 */
import type { Logger } from 'pino';
import type { Metrics } from '../../observability/metrics.js';
import type { Store, StoredSandbox } from '../../store/store.js';
import type { UsageSample } from '../../contract/usage.js';
import type { IdlePauses } from './lifecycle.js';
import { handleOf, type Runtimes } from './runtimes.js';

export interface UsageSamplerOpts {
  /** @default 2000 */
  intervalMs?: number;
  /** How much history a ring holds. @default 5 min */
  keepMs?: number;
  /** A read keeps its sandboxes sampled this long. @default 60 s */
  wantedMs?: number;
  /** Sandboxes read at once. @default 8 */
  batch?: number;
  /** Export per-sandbox CPU and memory gauges for every running sandbox. @default false (AGENTBOX_METRICS_PER_SANDBOX=1) */
  perSandboxMetrics?: boolean;
  /** With per-sandbox metrics, how often a sandbox nobody reads is sampled for its gauges. @default 10 s */
  metricsIntervalMs?: number;
}

interface Ring {
  samples: UsageSample[];
  /** The previous reading, for the CPU delta (monotonic ms). */
  last?: { cpuMs: number; t: number };
}

export class UsageSampler {
  readonly intervalMs: number;
  private readonly capacity: number;
  private readonly wantedMs: number;
  private readonly batch: number;
  private readonly perSandbox: boolean;
  private readonly metricsIntervalMs: number;
  private readonly rings = new Map<string, Ring>();
  /** Sandbox id -> until when someone wants its samples (epoch ms). */
  private readonly wanted = new Map<string, number>();
  /** Ended while a reading of it was in flight: that reading is dropped. */
  private readonly gone = new Set<string>();
  private timer: NodeJS.Timeout | undefined;
  private ticking: Promise<void> | undefined;

  constructor(
    private readonly d: {
      store: Store;
      runtimes: Runtimes;
      pauses: IdlePauses;
      logger: Logger;
      metrics?: Metrics | undefined;
      /** Whether this replica can read the sandbox (replica.ts); another replica's host-local ones are its own to sample. @default all */
      reaches?: ((stored: StoredSandbox) => boolean) | undefined;
    },
    opts: UsageSamplerOpts = {},
  ) {
    this.intervalMs = Math.max(50, opts.intervalMs ?? 2000);
    this.capacity = Math.max(1, Math.ceil((opts.keepMs ?? 5 * 60_000) / this.intervalMs));
    this.wantedMs = opts.wantedMs ?? 60_000;
    this.batch = Math.max(1, opts.batch ?? 8);
    this.perSandbox = (opts.perSandboxMetrics ?? false) && d.metrics !== undefined;
    this.metricsIntervalMs = Math.max(this.intervalMs, opts.metricsIntervalMs ?? 10_000);
  }

  start(): void {
    if (this.timer) return;
    this.timer = setInterval(() => void this.tick(), this.intervalMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    await this.ticking;
  }

  /** Someone reads these sandboxes' usage: sample them for the next `wantedMs`. */
  want(ids: Iterable<string>): void {
    const until = Date.now() + this.wantedMs;
    for (const id of ids) this.wanted.set(id, until);
  }

  /** The sandbox's samples, oldest first (empty when it is not sampled). */
  samples(id: string): readonly UsageSample[] {
    return this.rings.get(id)?.samples ?? [];
  }

  /** The sandbox ended: its ring and its per-sandbox series go now. */
  forget(id: string): void {
    this.rings.delete(id);
    this.wanted.delete(id);
    this.gone.add(id);
    this.d.metrics?.dropSandbox(id);
  }

  /** Sandboxes with a ring (tests: nothing is kept of an ended sandbox). */
  get size(): number {
    return this.rings.size;
  }

  /** One round: read every sandbox due, `batch` at a time. Skipped while the previous round runs. */
  tick(): Promise<void> {
    if (this.ticking) return this.ticking;
    const due = this.due();
    if (due.length === 0) return Promise.resolve();
    this.gone.clear();
    this.ticking = (async () => {
      for (let i = 0; i < due.length; i += this.batch) {
        await Promise.all(due.slice(i, i + this.batch).map((s) => this.sampleOne(s)));
      }
    })()
      .catch((err: unknown) => this.d.logger.warn({ err }, 'usage sampling failed'))
      .finally(() => {
        this.ticking = undefined;
      });
    return this.ticking;
  }

  /** The running sandboxes to read now; rings of sandboxes nobody wants any more (or that ended) go. */
  private due(): StoredSandbox[] {
    const now = Date.now();
    for (const [id, until] of this.wanted) if (until <= now) this.wanted.delete(id);
    const out: StoredSandbox[] = [];
    const keep = new Set<string>();
    if (this.perSandbox) {
      for (const stored of this.d.store.listSandboxes({ states: ['running'] })) {
        if (this.d.reaches && !this.d.reaches(stored)) continue;
        const id = stored.sandbox.id;
        keep.add(id);
        const ring = this.rings.get(id);
        // Nobody reads it: often enough for the gauges, no more.
        if (this.wanted.has(id) || !ring?.last || performance.now() - ring.last.t >= this.metricsIntervalMs - this.intervalMs / 2) out.push(stored);
      }
    } else {
      for (const id of this.wanted.keys()) {
        const stored = this.d.store.getSandbox(id);
        if (stored?.sandbox.state !== 'running' || (this.d.reaches && !this.d.reaches(stored))) continue;
        keep.add(id);
        out.push(stored);
      }
    }
    for (const id of this.rings.keys()) {
      if (keep.has(id)) continue;
      this.rings.delete(id);
      this.d.metrics?.dropSandbox(id);
    }
    return out;
  }

  private async sampleOne(stored: StoredSandbox): Promise<void> {
    const id = stored.sandbox.id;
    const rt = this.d.runtimes.find(stored.sandbox.runtime);
    // Never wake a paused sandbox (nor read one being paused, woken or ended); its next reading starts afresh.
    if (!rt || !stored.runtimeData || this.d.pauses.has(id) || this.d.pauses.changing(id)) {
      const ring = this.rings.get(id);
      if (ring) delete ring.last;
      return;
    }
    let st: Awaited<ReturnType<typeof rt.stats>>;
    try {
      st = await rt.stats(handleOf(stored));
    } catch {
      return; // ended or paused meanwhile: the next round sees what it is
    }
    if (this.gone.has(id)) return;
    const t = performance.now();
    let ring = this.rings.get(id);
    if (!ring) {
      ring = { samples: [] };
      this.rings.set(id, ring);
    }
    const last = ring.last;
    ring.last = { cpuMs: st.cpuMs, t };
    if (!last || t <= last.t) return;
    const cpuPct = Math.round(cpuPercent(st.cpuMs - last.cpuMs, t - last.t, stored.sandbox.limits.cpus) * 10) / 10;
    if (this.perSandbox) this.d.metrics?.setSandboxUsage({ sandbox: id, runtime: stored.sandbox.runtime, tenant: stored.sandbox.tenant }, cpuPct, st.memoryBytes);
    if (!this.wanted.has(id)) return;
    ring.samples.push({ at: new Date().toISOString(), cpuPct, memoryBytes: st.memoryBytes, pids: st.pids });
    if (ring.samples.length > this.capacity) ring.samples.splice(0, ring.samples.length - this.capacity);
  }
}

/** CPU time used over a wall-clock window, as a percent (0-100) of a CPU limit of `cpus`. */
export function cpuPercent(cpuMs: number, windowMs: number, cpus: number): number {
  return Math.max(0, Math.min(100, (cpuMs / (windowMs * (cpus > 0 ? cpus : 1))) * 100));
}
