/**
 * Prometheus metrics (prom-client), one registry per daemon so tests can run several side by side.
 *
 * The host's operator reads the whole registry. A tenant reads only its own view: the families
 * labelled by tenant (TENANT_FAMILIES), only its own series (no process, HTTP or pool figures, no
 * other tenant's sandboxes, egress or counts).
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics, type MetricObjectWithValues, type MetricValue } from 'prom-client';

/** Families with a `tenant` label: the ones a tenant sees (its own series only). */
export const TENANT_FAMILIES = [
  'agentbox_sandboxes_created_total',
  'agentbox_sandbox_create_seconds',
  'agentbox_sandboxes_ended_total',
  'agentbox_execs_total',
  'agentbox_exec_seconds',
  'agentbox_sandboxes_active',
  'agentbox_snapshot_bytes_total',
  'agentbox_egress_connections_total',
  'agentbox_egress_bytes_total',
  'agentbox_sandbox_cpu_percent',
  'agentbox_sandbox_memory_bytes',
] as const;

/** How a sandbox was made: started from its image, claimed from a warm pool, restored from a snapshot, forked. */
export type CreateKind = 'cold' | 'warm' | 'restore' | 'fork';

/**
 * How an exec ended, for `agentbox_execs_total` and `agentbox_exec_seconds`: `ok` exit 0, `error` any
 * other exit (or agentbox could not run it: no result), `timeout` its timeout, `oom` the sandbox's
 * memory limit, `killed` a signal (exit 129..192, a caller's abort included).
 */
export type ExecClass = 'ok' | 'error' | 'timeout' | 'oom' | 'killed';

export function execClass(summary: { exitCode: number; timedOut: boolean; oomKilled: boolean } | undefined): ExecClass {
  if (!summary) return 'error';
  if (summary.timedOut) return 'timeout';
  if (summary.oomKilled) return 'oom';
  if (summary.exitCode === 0) return 'ok';
  return summary.exitCode > 128 && summary.exitCode <= 192 ? 'killed' : 'error';
}

/**
 * At most this many sandboxes have per-sandbox series (`agentbox_sandbox_cpu_percent`,
 * `agentbox_sandbox_memory_bytes`) at once; more sandboxes get none until some end
 * (`agentbox_sandbox_series_dropped_total` counts the samples left out).
 */
export const PER_SANDBOX_SERIES_CAP = 500;

/** A warm pool as the pool gauges read it. */
export interface PoolGaugeSource {
  image: string;
  profile: string | null;
  size: number;
  ready: number;
}

export interface MetricsSources {
  /** Sandboxes creating or running, by tenant. */
  countActive: () => Record<string, number>;
  /** The warm pools now (read at scrape time). */
  pools?: () => PoolGaugeSource[];
}

/** Status class of an HTTP status: `2xx`, `4xx`, ... */
export function statusClass(status: number): string {
  return status >= 100 && status < 600 ? `${Math.floor(status / 100)}xx` : 'other';
}

export class Metrics {
  readonly registry = new Registry();
  readonly sandboxesCreated = new Counter({ name: 'agentbox_sandboxes_created_total', help: 'Sandboxes created, by runtime, kind (cold | warm | restore | fork) and result', labelNames: ['runtime', 'kind', 'result', 'tenant'] as const, registers: [this.registry] });
  readonly createSeconds = new Histogram({ name: 'agentbox_sandbox_create_seconds', help: 'Time to create a sandbox, by runtime and kind (cold | warm | restore | fork)', labelNames: ['runtime', 'kind', 'tenant'] as const, buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10], registers: [this.registry] });
  readonly sandboxesEnded = new Counter({ name: 'agentbox_sandboxes_ended_total', help: 'Sandboxes ended, by reason', labelNames: ['reason', 'tenant'] as const, registers: [this.registry] });
  readonly execs = new Counter({ name: 'agentbox_execs_total', help: 'Commands run, by runtime and outcome (ok | error | timeout | oom | killed)', labelNames: ['runtime', 'outcome', 'tenant'] as const, registers: [this.registry] });
  readonly execSeconds = new Histogram({ name: 'agentbox_exec_seconds', help: 'Command run time, by runtime and outcome (ok | error | timeout | oom | killed)', labelNames: ['runtime', 'outcome', 'tenant'] as const, buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1, 5, 30, 120], registers: [this.registry] });
  readonly httpRequests = new Counter({ name: 'agentbox_http_requests_total', help: 'HTTP requests, by listener (unix | tcp), method and status', labelNames: ['listener', 'method', 'status'] as const, registers: [this.registry] });
  readonly httpSeconds = new Histogram({
    name: 'agentbox_http_request_seconds',
    help: 'HTTP request time to the end of the answer, by route template (/v1/sandboxes/{id}/exec; fixed names for /metrics, /healthz, /mcp, /e2b, unmatched), method and status class',
    labelNames: ['listener', 'method', 'route', 'status_class'] as const,
    buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10, 60],
    registers: [this.registry],
  });
  readonly egressConnections = new Counter({ name: 'agentbox_egress_connections_total', help: 'Connection attempts through egress proxies, by decision (allowed | denied) and kind', labelNames: ['decision', 'kind', 'tenant'] as const, registers: [this.registry] });
  readonly egressBytes = new Counter({ name: 'agentbox_egress_bytes_total', help: 'Bytes through egress proxies, by direction', labelNames: ['direction', 'tenant'] as const, registers: [this.registry] });
  readonly snapshotBytes = new Counter({ name: 'agentbox_snapshot_bytes_total', help: 'Host disk held by snapshots when taken (shared blocks included)', labelNames: ['tenant'] as const, registers: [this.registry] });
  readonly snapshotSeconds = new Histogram({ name: 'agentbox_snapshot_seconds', help: 'Time to take a snapshot (freeze, clone, digest)', buckets: [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30], registers: [this.registry] });
  readonly forkSeconds = new Histogram({ name: 'agentbox_fork_seconds', help: 'Time to fork a sandbox, all its children started', buckets: [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10], registers: [this.registry] });
  readonly wakeSeconds = new Histogram({ name: 'agentbox_wake_seconds', help: 'Time to resume a sandbox paused for being idle, by how it was paused (frozen, hibernated)', labelNames: ['mode'] as const, buckets: [0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10], registers: [this.registry] });
  readonly sandboxCpu = new Gauge({ name: 'agentbox_sandbox_cpu_percent', help: `Per sandbox (opt-in: AGENTBOX_METRICS_PER_SANDBOX=1; at most ${PER_SANDBOX_SERIES_CAP} sandboxes): CPU used over the last sample interval, percent of its CPU limit`, labelNames: ['sandbox', 'runtime', 'tenant'] as const, registers: [this.registry] });
  readonly sandboxMemory = new Gauge({ name: 'agentbox_sandbox_memory_bytes', help: `Per sandbox (opt-in: AGENTBOX_METRICS_PER_SANDBOX=1; at most ${PER_SANDBOX_SERIES_CAP} sandboxes): memory in use`, labelNames: ['sandbox', 'runtime', 'tenant'] as const, registers: [this.registry] });
  readonly sandboxSeriesDropped = new Counter({ name: 'agentbox_sandbox_series_dropped_total', help: `Per-sandbox samples not exported because ${PER_SANDBOX_SERIES_CAP} sandboxes already have series`, registers: [this.registry] });
  readonly activeSandboxes: Gauge<'tenant'>;
  readonly poolSize: Gauge<'image' | 'profile'>;
  readonly poolAvailable: Gauge<'image' | 'profile'>;
  /** Sandboxes with per-sandbox series now, and their labels (to remove them). */
  private readonly sandboxSeries = new Map<string, { sandbox: string; runtime: string; tenant: string }>();

  /** `countActive`: sandboxes creating or running, by tenant (or all sources at once). */
  constructor(sources: MetricsSources | (() => Record<string, number>)) {
    const { countActive, pools } = typeof sources === 'function' ? { countActive: sources, pools: undefined } : sources;
    this.activeSandboxes = new Gauge({
      name: 'agentbox_sandboxes_active',
      help: 'Sandboxes creating or running',
      labelNames: ['tenant'] as const,
      registers: [this.registry],
      collect() {
        this.reset();
        for (const [tenant, n] of Object.entries(countActive())) this.set({ tenant }, n);
      },
    });
    const poolLabels = (p: PoolGaugeSource): { image: string; profile: string } => ({ image: p.image, profile: p.profile ?? '' });
    this.poolSize = new Gauge({
      name: 'agentbox_pool_size',
      help: 'Warm pool target size, by image and profile',
      labelNames: ['image', 'profile'] as const,
      registers: [this.registry],
      collect() {
        this.reset();
        for (const p of pools?.() ?? []) this.set(poolLabels(p), p.size);
      },
    });
    this.poolAvailable = new Gauge({
      name: 'agentbox_pool_available',
      help: 'Warm pool members ready to be claimed, by image and profile',
      labelNames: ['image', 'profile'] as const,
      registers: [this.registry],
      collect() {
        this.reset();
        for (const p of pools?.() ?? []) this.set(poolLabels(p), p.ready);
      },
    });
    collectDefaultMetrics({ register: this.registry, prefix: 'agentbox_process_' });
  }

  /**
   * A sandbox's latest usage as per-sandbox series. False (and counted as dropped) when
   * PER_SANDBOX_SERIES_CAP other sandboxes have series already.
   */
  setSandboxUsage(s: { sandbox: string; runtime: string; tenant: string }, cpuPct: number, memoryBytes: number): boolean {
    if (!this.sandboxSeries.has(s.sandbox)) {
      if (this.sandboxSeries.size >= PER_SANDBOX_SERIES_CAP) {
        this.sandboxSeriesDropped.inc();
        return false;
      }
      this.sandboxSeries.set(s.sandbox, { sandbox: s.sandbox, runtime: s.runtime, tenant: s.tenant });
    }
    const labels = this.sandboxSeries.get(s.sandbox)!;
    this.sandboxCpu.set(labels, cpuPct);
    this.sandboxMemory.set(labels, memoryBytes);
    return true;
  }

  /** The sandbox ended (or is no longer sampled): its per-sandbox series go. */
  dropSandbox(id: string): void {
    const labels = this.sandboxSeries.get(id);
    if (!labels) return;
    this.sandboxSeries.delete(id);
    this.sandboxCpu.remove(labels);
    this.sandboxMemory.remove(labels);
  }

  /** Sandboxes with per-sandbox series now. */
  get sandboxSeriesCount(): number {
    return this.sandboxSeries.size;
  }

  /** The tenant's own series of TENANT_FAMILIES, in the Prometheus text format. */
  async tenantView(tenant: string): Promise<string> {
    const families = (await this.registry.getMetricsAsJSON()) as MetricObjectWithValues<MetricValue<string>>[];
    const out: string[] = [];
    for (const f of families) {
      if (!(TENANT_FAMILIES as readonly string[]).includes(f.name)) continue;
      out.push(`# HELP ${f.name} ${f.help}`, `# TYPE ${f.name} ${f.type}`);
      for (const v of f.values) {
        if (v.labels.tenant !== tenant) continue;
        const labels = Object.entries(v.labels)
          .map(([k, val]) => `${k}="${String(val).replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n')}"`)
          .join(',');
        const name = (v as { metricName?: string }).metricName ?? f.name;
        out.push(`${name}{${labels}} ${v.value}`);
      }
    }
    return `${out.join('\n')}\n`;
  }
}
