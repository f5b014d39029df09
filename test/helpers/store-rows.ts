/** Sandbox rows for store tests: a running sandbox of tenant alice, and the spec stored beside it. */
import type { Sandbox, SandboxSpec } from '../../src/contract/model.js';
import type { Store } from '../../src/store/store.js';

export function sandbox(id: string, over: Partial<Sandbox> = {}): Sandbox {
  return {
    id,
    tenant: 'alice',
    image: 'busybox',
    profile: null,
    runtime: 'local',
    isolation: 'namespaces',
    state: 'running',
    limits: { cpus: 1, memoryMb: 256, pids: 64, diskMb: 100 },
    egress: { mode: 'none', allow: [] },
    labels: {},
    createdAt: '2026-01-01T00:00:00.000Z',
    expiresAt: null,
    lastActiveAt: '2026-01-01T00:00:00.000Z',
    ...over,
  };
}

export function specOf(sb: Sandbox): SandboxSpec {
  return {
    id: sb.id,
    tenant: sb.tenant,
    image: sb.image,
    profile: sb.profile,
    runtime: sb.runtime,
    isolation: sb.isolation,
    limits: sb.limits,
    egress: sb.egress,
    env: { LANG: 'C.UTF-8' },
    labels: sb.labels,
    ttlMs: 3_600_000,
    idleTimeoutMs: 900_000,
    execTimeoutMs: 120_000,
    outputLimitBytes: 2_097_152,
  };
}

/** Insert SB's row (idle timeout 15 min). */
export function put(store: Store, sb: Sandbox): void {
  store.insertSandbox(sb, specOf(sb), 900_000);
}
