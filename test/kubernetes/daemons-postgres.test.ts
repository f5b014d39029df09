/**
 * Two daemon replicas (the whole daemon: HTTP API, store, runtimes, as `agentbox serve` composes it)
 * on one PostgreSQL database, each with its own home, both on the kubernetes runtime against the FAKE
 * API server (fake-apiserver.ts, backed by the local runtime): one warm pool between them, a burst of
 * creates over HTTP from both that never hands a member out twice, and each serving the other's sandboxes.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, test } from 'node:test';
import { startDaemon, type Daemon } from '../../src/daemon/compose.js';
import { silentLogger } from '../../src/observability/logger.js';
import { CLAIMED_BY } from '../../src/runtime/kubernetes/claim.js';
import { LABEL_ID, LABEL_POOL } from '../../src/runtime/kubernetes/pod-spec.js';
import { AgentboxClient } from '../../src/sdk/client.js';
import { hostLeftovers } from '../helpers/host-leftovers.js';
import { TEST_IMAGES_DIR } from '../helpers/images.js';
import { postgresBin, startPostgres, type PostgresCluster } from '../helpers/postgres.js';
import { FAKE_NAMESPACE, startFakeCluster } from './fake-cluster.js';

const SIZE = 3;
/** The operator's token, shared by the replicas (as the manifests' Secret gives it to each). */
const TOKEN = 'k8s-daemons-test-operator-token-0123456789';
const found = postgresBin();
const pg: PostgresCluster | undefined = 'skip' in found ? undefined : await startPostgres({ settings: { fsync: 'off', synchronous_commit: 'off' } });
after(() => pg?.stop());

async function until(what: string, fn: () => boolean | Promise<boolean>, ms = 30_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await fn())) {
    if (Date.now() > deadline) throw new Error(`${what}: not in time`);
    await sleep(50);
  }
}

test('kubernetes: two daemon replicas on one PostgreSQL database share one warm pool; a burst of creates over HTTP from both never hands a pod out twice; each serves the other\'s sandboxes', { skip: 'skip' in found ? found.skip : false }, async () => {
  const cluster = await startFakeCluster();
  const dir = mkdtempSync(join(tmpdir(), 'agentbox-k8s-daemons-'));
  const policyFile = join(dir, 'policy.yaml');
  writeFileSync(policyFile, `version: 1\ndefaults:\n  runtime: kubernetes\n  limits: { memoryMb: 64, pids: 64, diskMb: 16 }\nkubernetes:\n  kubeconfig: ${cluster.kubeconfig}\n  namespace: ${FAKE_NAMESPACE}\npools:\n  - { image: busybox, size: ${SIZE} }\n`);
  const url = await pg!.createDatabase();
  const daemons: Daemon[] = [];
  const start = async (id: string): Promise<AgentboxClient> => {
    const home = mkdtempSync(join(dir, `${id}-`));
    const d = await startDaemon({
      env: { AGENTBOX_HOME: home, AGENTBOX_IMAGES: TEST_IMAGES_DIR, AGENTBOX_DATABASE_URL: url, AGENTBOX_REPLICA_ID: id, AGENTBOX_TOKEN: TOKEN },
      policyPath: policyFile,
      logger: silentLogger(),
      socket: null,
      tcp: { host: '127.0.0.1', port: 0 },
    });
    daemons.push(d);
    return new AgentboxClient({ url: `http://127.0.0.1:${d.tcpAddress!.port}`, token: TOKEN });
  };
  const poolPods = (state: string) => cluster.fake.listPods().filter((p) => p.metadata.labels?.[LABEL_POOL] === state);
  try {
    const a = await start('replica-a');
    const b = await start('replica-b');
    await until('the pool filled', () => poolPods('available').length === SIZE);
    await sleep(4500); // two pool ticks of each: neither makes more
    assert.equal(poolPods('available').length + poolPods('starting').length, SIZE, 'two homes, one database: not one pool');
    // Both see that one pool full (the one that does not make members too): both claim from it.
    for (const c of [a, b]) await until('each daemon counts the pool full', async () => (await c.daemonInfo()).pools.some((p) => p.shared === true && p.ready === SIZE), 10_000);

    const members = new Set(poolPods('available').map((p) => p.metadata.labels![LABEL_ID]!));
    const clients = { 'replica-a': a, 'replica-b': b };
    const burst = await Promise.all(
      Array.from({ length: 8 }, async (_, i) => {
        const who = i % 2 === 0 ? 'replica-a' : 'replica-b';
        return { who, sb: await clients[who].create({ labels: { n: String(i) } }) };
      }),
    );
    const ids = burst.map((r) => r.sb.id);
    assert.equal(new Set(ids).size, ids.length, `a sandbox handed out twice: ${ids.join(', ')}`);
    const warm = burst.filter((r) => members.has(r.sb.id));
    assert.equal(warm.length, SIZE, 'every ready member was claimed exactly once');
    for (const { who, sb } of warm) {
      const pod = cluster.fake.listPods().find((p) => p.metadata.labels?.[LABEL_ID] === sb.id);
      assert.equal(pod?.metadata.labels?.[CLAIMED_BY], who);
    }
    // Each daemon enters the other's sandboxes, and lists them all.
    for (const { who, sb } of burst.slice(0, 2)) {
      const other = who === 'replica-a' ? b : a;
      assert.equal((await other.exec(sb.id, { cmd: ['sh', '-c', 'echo served'] })).stdout, 'served\n');
    }
    const listed = new Set((await b.list()).map((s) => s.id));
    for (const id of ids) assert.ok(listed.has(id));
    await until('the pool refilled', () => poolPods('available').length === SIZE);
    await Promise.all(burst.map(({ who, sb }) => (who === 'replica-a' ? b : a).delete(sb.id)));
  } finally {
    for (const d of daemons.reverse()) await d.close();
    const pods = cluster.fake.listPods().map((p) => p.metadata.name);
    const ever = [...cluster.fake.localIdsEver];
    await cluster.close();
    rmSync(dir, { recursive: true, force: true });
    assert.deepEqual(pods, [], 'pods left after both daemons stopped');
    assert.deepEqual(hostLeftovers(ever), []);
  }
});
