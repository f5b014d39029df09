/**
 * Prometheus metrics (prom-client), one registry per daemon so tests can run several side by side.
 *
 * The host's operator reads the whole registry. A tenant reads only its own view: the families
 * labelled by tenant, only its own series (no process, HTTP or egress figures, no other tenant's
 * sandboxes or counts).
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
] as const;

export class Metrics {
  readonly registry = new Registry();
  readonly sandboxesCreated = new Counter({ name: 'agentbox_sandboxes_created_total', help: 'Sandboxes created', labelNames: ['runtime', 'result', 'tenant'] as const, registers: [this.registry] });
  readonly createSeconds = new Histogram({ name: 'agentbox_sandbox_create_seconds', help: 'Time to create a sandbox', labelNames: ['runtime', 'tenant'] as const, buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5], registers: [this.registry] });
  readonly sandboxesEnded = new Counter({ name: 'agentbox_sandboxes_ended_total', help: 'Sandboxes ended, by reason', labelNames: ['reason', 'tenant'] as const, registers: [this.registry] });
  readonly execs = new Counter({ name: 'agentbox_execs_total', help: 'Commands run', labelNames: ['outcome', 'tenant'] as const, registers: [this.registry] });
  readonly execSeconds = new Histogram({ name: 'agentbox_exec_seconds', help: 'Command run time', labelNames: ['tenant'] as const, buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1, 5, 30, 120], registers: [this.registry] });
  readonly httpRequests = new Counter({ name: 'agentbox_http_requests_total', help: 'HTTP requests, by listener (unix | tcp), method and status', labelNames: ['listener', 'method', 'status'] as const, registers: [this.registry] });
  readonly egressConnections = new Counter({ name: 'agentbox_egress_connections_total', help: 'Connection attempts through egress proxies, by decision and kind', labelNames: ['decision', 'kind'] as const, registers: [this.registry] });
  readonly egressBytes = new Counter({ name: 'agentbox_egress_bytes_total', help: 'Bytes through egress proxies, by direction', labelNames: ['direction'] as const, registers: [this.registry] });
  readonly snapshotBytes = new Counter({ name: 'agentbox_snapshot_bytes_total', help: 'Host disk held by snapshots when taken (shared blocks included)', labelNames: ['tenant'] as const, registers: [this.registry] });
  readonly snapshotSeconds = new Histogram({ name: 'agentbox_snapshot_seconds', help: 'Time to take a snapshot (freeze, clone, digest)', buckets: [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30], registers: [this.registry] });
  readonly forkSeconds = new Histogram({ name: 'agentbox_fork_seconds', help: 'Time to fork a sandbox, all its children started', buckets: [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10], registers: [this.registry] });
  readonly wakeSeconds = new Histogram({ name: 'agentbox_wake_seconds', help: 'Time to resume a sandbox paused for being idle, by how it was paused (frozen, hibernated)', labelNames: ['mode'] as const, buckets: [0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10], registers: [this.registry] });
  readonly activeSandboxes: Gauge<'tenant'>;

  /** `countActive`: sandboxes creating or running, by tenant. */
  constructor(countActive: () => Record<string, number>) {
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
    collectDefaultMetrics({ register: this.registry, prefix: 'agentbox_process_' });
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
