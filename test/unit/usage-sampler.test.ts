/**
 * The usage sampler's costs and bounds, with a fake runtime that counts its stats calls: nothing is
 * read while nobody asks, a paused sandbox is never read, a tick reads at most `batch` at once, the
 * ring is bounded, and per-sandbox series stop at the cap.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { UsageSampler } from '../../src/core/manager/usage-sampler.js';
import { Metrics, PER_SANDBOX_SERIES_CAP } from '../../src/observability/metrics.js';
import { silentLogger } from '../../src/observability/logger.js';
import type { RuntimeStats } from '../../src/runtime/types.js';

function fakes(n: number) {
  const rows = new Map<string, { sandbox: { id: string; tenant: string; runtime: string; state: string; limits: { cpus: number } }; runtimeData: unknown }>();
  for (let i = 0; i < n; i++) {
    const id = `sbx_${String(i).padStart(4, '0')}`;
    rows.set(id, { sandbox: { id, tenant: 'alice', runtime: 'local', state: 'running', limits: { cpus: 1 } }, runtimeData: {} });
  }
  const calls = { stats: 0, inFlight: 0, maxInFlight: 0 };
  const cpu = new Map<string, number>();
  const runtime = {
    name: 'local',
    async stats(h: { id: string }): Promise<RuntimeStats> {
      calls.stats++;
      calls.inFlight++;
      calls.maxInFlight = Math.max(calls.maxInFlight, calls.inFlight);
      await new Promise((r) => setTimeout(r, 2));
      calls.inFlight--;
      const c = (cpu.get(h.id) ?? 0) + 10;
      cpu.set(h.id, c);
      return { memoryBytes: 1 << 20, pids: 3, cpuMs: c };
    },
  };
  const paused = new Set<string>();
  const store = {
    getSandbox: (id: string) => rows.get(id),
    listSandboxes: () => [...rows.values()].filter((r) => r.sandbox.state === 'running'),
  };
  const d = {
    store,
    runtimes: { find: () => runtime },
    pauses: { has: (id: string) => paused.has(id), changing: () => false },
    logger: silentLogger(),
  };
  return { rows, calls, paused, d };
}

test('nothing is read while nobody asks; a read samples only what was asked, batch at a time; a paused sandbox is never read', async () => {
  const { calls, paused, d } = fakes(1000);
  const s = new UsageSampler(d as never, { intervalMs: 1000, batch: 4 });
  for (let i = 0; i < 5; i++) await s.tick();
  assert.equal(calls.stats, 0, 'an idle daemon reads no sandbox');
  s.want(['sbx_0001', 'sbx_0002', 'sbx_0003']);
  paused.add('sbx_0003');
  await s.tick();
  await s.tick();
  assert.equal(calls.stats, 4, 'two rounds of the two running sandboxes asked about');
  assert.equal(s.samples('sbx_0001').length, 1, 'the first reading is the baseline');
  assert.equal(s.samples('sbx_0003').length, 0);
  s.want(Array.from({ length: 40 }, (_, i) => `sbx_${String(100 + i).padStart(4, '0')}`));
  await s.tick();
  assert.ok(calls.maxInFlight <= 4, `at most batch reads at once (saw ${calls.maxInFlight})`);
  s.forget('sbx_0001');
  assert.equal(s.samples('sbx_0001').length, 0);
});

test('the ring keeps keepMs of samples; an ended or no longer wanted sandbox leaves nothing', async () => {
  const { rows, d } = fakes(2);
  const s = new UsageSampler(d as never, { intervalMs: 100, keepMs: 500, wantedMs: 60_000 });
  s.want(['sbx_0000', 'sbx_0001']);
  for (let i = 0; i < 12; i++) {
    await new Promise((r) => setTimeout(r, 3));
    await s.tick();
  }
  assert.equal(s.samples('sbx_0000').length, 5);
  assert.ok(s.samples('sbx_0000').every((x) => x.cpuPct >= 0 && x.cpuPct <= 100 && x.memoryBytes === 1 << 20 && x.pids === 3));
  rows.get('sbx_0001')!.sandbox.state = 'stopped';
  await s.tick();
  assert.equal(s.size, 1, 'the stopped sandbox\'s ring went at the next round');
  const expired = new UsageSampler(d as never, { intervalMs: 100, wantedMs: 0 });
  expired.want(['sbx_0000']);
  await expired.tick();
  assert.equal(expired.size, 0, 'nobody wants it: not read, nothing kept');
});

test('per-sandbox series: every running sandbox, at most PER_SANDBOX_SERIES_CAP of them, removed when a sandbox ends', async () => {
  const { rows, d } = fakes(PER_SANDBOX_SERIES_CAP + 20);
  const metrics = new Metrics(() => ({}));
  const s = new UsageSampler({ ...d, metrics } as never, { intervalMs: 50, perSandboxMetrics: true, metricsIntervalMs: 50, batch: 64 });
  await s.tick();
  await new Promise((r) => setTimeout(r, 60));
  await s.tick();
  assert.equal(metrics.sandboxSeriesCount, PER_SANDBOX_SERIES_CAP);
  const cpu = (await metrics.registry.getSingleMetric('agentbox_sandbox_cpu_percent')!.get()).values;
  assert.equal(cpu.length, PER_SANDBOX_SERIES_CAP);
  const dropped = (await metrics.registry.getSingleMetric('agentbox_sandbox_series_dropped_total')!.get()).values[0]?.value ?? 0;
  assert.ok(dropped >= 20);
  assert.equal(s.samples('sbx_0000').length, 0, 'no history is kept for metrics alone');
  s.forget('sbx_0000');
  rows.get('sbx_0000')!.sandbox.state = 'deleted';
  assert.equal(metrics.sandboxSeriesCount, PER_SANDBOX_SERIES_CAP - 1);
});
