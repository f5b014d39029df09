/**
 * Usage sampling and the metrics of issue 19 against a real daemon on loopback TCP (local runtime):
 * a CPU burner shows in a sandbox's samples, GET /v1/usage lists what the caller sees (tenants and
 * label-scoped tokens), nothing is kept of an ended sandbox, and /metrics has the per-sandbox
 * gauges (opt-in), the pool gauges and the create kind.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { BadRequestError, ConflictError, NotFoundError } from '../../src/contract/errors.js';
import type { SandboxUsageReport } from '../../src/contract/usage.js';
import { startDaemon, type Daemon } from '../../src/daemon/compose.js';
import { silentLogger } from '../../src/observability/logger.js';
import { AgentboxClient, readAll } from '../../src/sdk/client.js';
import { closeDaemonLeavingNothing } from '../helpers/daemon-teardown.js';
import { TEST_IMAGES_DIR, testImages } from '../helpers/images.js';

const ALICE = 'alice-token-0123456789';
const ALICE_AGENT = 'alice-agent-token-0123456789';
const BOB = 'bob-token-0123456789';
const POLICY = `version: 1
defaults:
  image: busybox
  limits: { cpus: 1, memoryMb: 256, pids: 128, diskMb: 128 }
  ttl: 1h
  idleTimeout: 15m
pools:
  - { image: busybox, size: 1 }
tenants:
  - name: alice
    tokens: [${ALICE}]
    scopedTokens:
      - { token: ${ALICE_AGENT}, scopes: [read, exec, files, manage], labels: { team: agents } }
  - name: bob
    tokens: [${BOB}]
`;
const INTERVAL_MS = 250;

describe('usage sampling and per-sandbox metrics', () => {
  let home: string;
  let daemon: Daemon | undefined;
  let socket: string;
  let alice: AgentboxClient;
  let agent: AgentboxClient;
  let bob: AgentboxClient;

  function operatorMetrics(): Promise<string> {
    return new Promise((resolve, reject) => {
      const req = request({ socketPath: socket, path: '/metrics' }, async (res) => resolve((await readAll(res)).toString()));
      req.on('error', reject);
      req.end();
    });
  }

  before(async () => {
    await testImages();
    home = mkdtempSync(join(tmpdir(), 'agentbox-usage-'));
    const policyPath = join(home, 'policy.yaml');
    writeFileSync(policyPath, POLICY);
    socket = join(home, 'agentbox.sock');
    daemon = await startDaemon({
      env: { AGENTBOX_HOME: home, AGENTBOX_IMAGES: TEST_IMAGES_DIR },
      logger: silentLogger(),
      policyPath,
      socket,
      tcp: { host: '127.0.0.1', port: 0 },
      perSandboxMetrics: true,
      usageIntervalMs: INTERVAL_MS,
    });
    const url = `http://127.0.0.1:${daemon.tcpAddress!.port}`;
    alice = new AgentboxClient({ url, token: ALICE });
    agent = new AgentboxClient({ url, token: ALICE_AGENT });
    bob = new AgentboxClient({ url, token: BOB });
  });

  after(async () => {
    await closeDaemonLeavingNothing(daemon, home, async () => {
      for (const c of [alice, bob]) for (const sb of await c.list()) await c.delete(sb.id);
    });
  });

  test('a CPU burner shows in the samples; tenants and label-scoped tokens see only theirs; an ended sandbox leaves nothing', async () => {
    await daemon!.manager.poolsFull();
    const sb = await agent.create();
    const other = await alice.create({ labels: { team: 'ops' } });
    const bobs = await bob.create();

    const first = await alice.usage(sb.id);
    assert.equal(first.sandboxId, sb.id);
    assert.equal(first.intervalMs, INTERVAL_MS);
    assert.equal(first.current.cpuCount, 1);
    assert.equal(first.current.memoryLimitBytes, 256 * 2 ** 20);

    // A busy loop left running in the background (an exec ends with its leader; what it started stays).
    await alice.exec(sb.id, { cmd: ['sh', '-c', '(while :; do :; done) >/dev/null 2>&1 &'] });
    let report: SandboxUsageReport | undefined;
    const deadline = Date.now() + 20_000;
    while (Date.now() < deadline) {
      report = await alice.usage(sb.id);
      if (report.samples.some((s) => s.cpuPct > 50)) break;
      await sleep(INTERVAL_MS);
    }
    assert.ok(report, 'no usage report');
    assert.ok(report.samples.some((s) => s.cpuPct > 50), `no sample shows the burner: ${JSON.stringify(report.samples.map((s) => s.cpuPct))}`);
    assert.ok(report.current.memoryBytes > 0, 'memory of a running sandbox is > 0');
    assert.ok(report.current.pids >= 2, `pids ${report.current.pids}`);
    assert.ok(report.samples.every((s) => s.memoryBytes > 0 && s.cpuPct >= 0 && s.cpuPct <= 100));
    const ats = report.samples.map((s) => Date.parse(s.at));
    assert.deepEqual(ats, [...ats].sort((a, b) => a - b), 'samples are oldest first');

    // The list for the dashboard: the caller's own running sandboxes, with their sparkline points.
    const all = await alice.usageAll();
    assert.deepEqual(all.sandboxes.map((e) => e.sandboxId).sort(), [sb.id, other.id].sort());
    const mine = all.sandboxes.find((e) => e.sandboxId === sb.id)!;
    assert.ok(mine.latest && mine.cpuPct.length > 0 && mine.cpuPct.length === mine.memoryBytes.length && mine.cpuPct.length <= 30);
    assert.equal((await alice.usageAll({ points: 2 })).sandboxes.find((e) => e.sandboxId === sb.id)!.cpuPct.length, 2);
    // A label-scoped token sees only its labels' sandboxes.
    assert.deepEqual((await agent.usageAll()).sandboxes.map((e) => e.sandboxId), [sb.id]);
    await assert.rejects(agent.usage(other.id), NotFoundError);
    // Another tenant: 404 as for an id that does not exist, and nothing in its list.
    await assert.rejects(bob.usage(sb.id), NotFoundError);
    assert.deepEqual((await bob.usageAll()).sandboxes.map((e) => e.sandboxId), [bobs.id]);
    await assert.rejects(alice.usage('sbx_doesnotexist0000'), NotFoundError);
    await assert.rejects(alice.usageAll({ points: 0 }), BadRequestError);

    // Per-sandbox gauges (opt-in), pool gauges and the create kind, for the operator.
    const m = await operatorMetrics();
    assert.match(m, new RegExp(`agentbox_sandbox_cpu_percent\\{sandbox="${sb.id}",runtime="local",tenant="alice"\\} [\\d.]+`));
    assert.match(m, new RegExp(`agentbox_sandbox_memory_bytes\\{sandbox="${sb.id}",runtime="local",tenant="alice"\\} [1-9]`));
    assert.match(m, /agentbox_pool_size\{image="busybox",profile=""\} 1/);
    assert.match(m, /agentbox_pool_available\{image="busybox",profile=""\} [01]/);
    assert.match(m, /agentbox_sandbox_create_seconds_count\{runtime="local",kind="warm",tenant="alice"\} [1-9]/);
    assert.match(m, /agentbox_http_request_seconds_count\{listener="tcp",method="GET",route="\/v1\/sandboxes\/\{id\}\/usage",status_class="4xx"\} [1-9]/);
    // Bob's view of /metrics has his own sandbox's series and none of alice's.
    const bobView = await new Promise<string>((resolve, reject) => {
      const req = request({ host: '127.0.0.1', port: daemon!.tcpAddress!.port, path: '/metrics', headers: { authorization: `Bearer ${BOB}` } }, async (res) => resolve((await readAll(res)).toString()));
      req.on('error', reject);
      req.end();
    });
    assert.doesNotMatch(bobView, new RegExp(`${sb.id}|${other.id}|tenant="alice"|agentbox_pool_|agentbox_http_`));

    // Ended: its ring and its series go; the route says it is not running.
    await alice.delete(sb.id);
    await assert.rejects(alice.usage(sb.id), ConflictError);
    assert.ok(!(await alice.usageAll()).sandboxes.some((e) => e.sandboxId === sb.id));
    assert.doesNotMatch(await operatorMetrics(), new RegExp(`sandbox="${sb.id}"`));
    await alice.delete(other.id);
    await bob.delete(bobs.id);
    await sleep(3 * INTERVAL_MS);
    assert.equal(daemon!.manager.usageSampled, 0, 'the sampler keeps nothing of ended sandboxes');
    assert.doesNotMatch(await operatorMetrics(), /agentbox_sandbox_cpu_percent\{/);
  });
});
