/** Prometheus metrics (prom-client), one registry per daemon so tests can run several side by side. */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

export class Metrics {
  readonly registry = new Registry();
  readonly sandboxesCreated = new Counter({ name: 'agentbox_sandboxes_created_total', help: 'Sandboxes created', labelNames: ['runtime', 'result'] as const, registers: [this.registry] });
  readonly createSeconds = new Histogram({ name: 'agentbox_sandbox_create_seconds', help: 'Time to create a sandbox', labelNames: ['runtime'] as const, buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5], registers: [this.registry] });
  readonly sandboxesEnded = new Counter({ name: 'agentbox_sandboxes_ended_total', help: 'Sandboxes ended, by reason', labelNames: ['reason'] as const, registers: [this.registry] });
  readonly execs = new Counter({ name: 'agentbox_execs_total', help: 'Commands run', labelNames: ['outcome'] as const, registers: [this.registry] });
  readonly execSeconds = new Histogram({ name: 'agentbox_exec_seconds', help: 'Command run time', buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1, 5, 30, 120], registers: [this.registry] });
  readonly httpRequests = new Counter({ name: 'agentbox_http_requests_total', help: 'HTTP requests, by listener (unix | tcp), method and status', labelNames: ['listener', 'method', 'status'] as const, registers: [this.registry] });
  readonly egressConnections = new Counter({ name: 'agentbox_egress_connections_total', help: 'Connection attempts through egress proxies, by decision and kind', labelNames: ['decision', 'kind'] as const, registers: [this.registry] });
  readonly egressBytes = new Counter({ name: 'agentbox_egress_bytes_total', help: 'Bytes through egress proxies, by direction', labelNames: ['direction'] as const, registers: [this.registry] });
  readonly activeSandboxes: Gauge;

  constructor(countActive: () => number) {
    this.activeSandboxes = new Gauge({
      name: 'agentbox_sandboxes_active',
      help: 'Sandboxes creating or running',
      registers: [this.registry],
      collect() {
        this.set(countActive());
      },
    });
    collectDefaultMetrics({ register: this.registry, prefix: 'agentbox_process_' });
  }
}
