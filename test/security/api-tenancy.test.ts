/**
 * Finding 8: tenants see only their own. Every route that names a sandbox or an exec answers
 * another tenant's exactly as it answers an id that does not exist (404, same body); /metrics
 * shows a tenant only its own series; /healthz over TCP says ok or not and nothing else.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { startDaemon, type Daemon } from '../../src/daemon/compose.js';
import { silentLogger } from '../../src/observability/logger.js';
import { NotFoundError } from '../../src/contract/errors.js';
import { AgentboxClient, readAll } from '../../src/sdk/client.js';
import { TEST_IMAGES_DIR, testImages } from '../helpers/images.js';
import { closeDaemonLeavingNothing } from '../helpers/daemon-teardown.js';

const ALICE = 'alice-tenancy-token-0123456789';
const ALICE_AGENT = 'alice-agent-tenancy-token-0123';
const BOB = 'bob-tenancy-token-0123456789';

describe('tenants see only their own', () => {
  let home: string;
  let daemon: Daemon | undefined;
  let port: number;
  let socket: string;
  let alice: AgentboxClient;
  let bob: AgentboxClient;
  let bobSandbox: string;
  let bobExec: string;

  const send = (method: string, path: string, token: string | undefined, body?: string, type = 'application/json'): Promise<{ status: number; body: string }> =>
    new Promise((resolve, reject) => {
      const headers: Record<string, string> = { 'content-type': type };
      if (token) headers.authorization = `Bearer ${token}`;
      const req = request({ host: '127.0.0.1', port, method, path, headers }, async (res) => resolve({ status: res.statusCode ?? 0, body: (await readAll(res)).toString('utf8') }));
      req.on('error', reject);
      req.end(body);
    });

  before(async () => {
    await testImages();
    home = mkdtempSync(join(tmpdir(), 'agentbox-sec-tenancy-'));
    writeFileSync(
      join(home, 'policy.yaml'),
      `version: 1
tenants:
  - name: alice
    tokens: [${ALICE}]
    scopedTokens:
      - { token: ${ALICE_AGENT}, scopes: [read, exec, files, manage], labels: { team: agents } }
  - name: bob
    tokens: [${BOB}]
`,
    );
    socket = join(home, 'agentbox.sock');
    daemon = await startDaemon({ env: { AGENTBOX_HOME: home, AGENTBOX_IMAGES: TEST_IMAGES_DIR }, logger: silentLogger(), policyPath: join(home, 'policy.yaml'), socket, tcp: { host: '127.0.0.1', port: 0 } });
    port = daemon.tcpAddress!.port;
    alice = new AgentboxClient({ url: `http://127.0.0.1:${port}`, token: ALICE });
    bob = new AgentboxClient({ url: `http://127.0.0.1:${port}`, token: BOB });
    bobSandbox = (await bob.create({ labels: { team: 'agents' }, egress: { mode: 'allowlist', allow: ['example.com'] } })).id;
    bobExec = (await bob.exec(bobSandbox, { cmd: ['sh', '-c', 'echo bob-secret > /workspace/secret; echo bob-output'] })).execId;
  });

  after(() =>
    closeDaemonLeavingNothing(daemon, home, async () => {
      for (const c of [alice, bob]) for (const sb of await c.list()) await c.delete(sb.id);
    }),
  );

  test('another tenant\'s sandbox, exec, egress log, files and processes are 404, like an id that does not exist', async () => {
    const own = (await alice.create()).id;
    const ghost = 'sbx_doesnotexist00';
    const routes = (id: string, execId: string): [string, string, string?, string?][] => [
      ['GET', `/v1/sandboxes/${id}`],
      ['DELETE', `/v1/sandboxes/${id}`],
      ['POST', `/v1/sandboxes/${id}/stop`],
      ['POST', `/v1/sandboxes/${id}/exec`, '{"cmd":["sh","-c","echo pwned > /workspace/pwned"]}'],
      ['GET', `/v1/sandboxes/${id}/execs`],
      ['GET', `/v1/sandboxes/${id}/execs/${execId}`],
      ['GET', `/v1/sandboxes/${id}/execs/${execId}?follow=1`],
      ['GET', `/v1/sandboxes/${id}/files?path=/workspace/secret`],
      ['PUT', `/v1/sandboxes/${id}/files?path=/workspace/pwned`, 'x', 'application/octet-stream'],
      ['DELETE', `/v1/sandboxes/${id}/files?path=/workspace/secret`],
      ['GET', `/v1/sandboxes/${id}/files/list?path=/workspace`],
      ['GET', `/v1/sandboxes/${id}/egress`],
      ['GET', `/v1/sandboxes/${id}/egress?denied=1`],
      ['POST', `/v1/sandboxes/${id}/egress/allow`, '{"host":"evil.example"}'],
      ['GET', `/v1/sandboxes/${id}/processes`],
      ['POST', `/v1/sandboxes/${id}/processes/2/kill`, '{"signal":"KILL"}'],
    ];
    const leaks: string[] = [];
    for (const token of [ALICE, ALICE_AGENT]) {
      const theirs = routes(bobSandbox, bobExec);
      const none = routes(ghost, 'exe_0000000000000000');
      for (let i = 0; i < theirs.length; i++) {
        const [method, path, body, type] = theirs[i]!;
        const a = await send(method, path, token, body, type);
        const b = await send(method, none[i]![1], token, body, type);
        const norm = (s: string): string => s.replaceAll(bobSandbox, 'ID').replaceAll(ghost, 'ID').replaceAll(bobExec, 'EXEC').replaceAll('exe_0000000000000000', 'EXEC');
        if (a.status !== 404 || norm(a.body) !== norm(b.body)) leaks.push(`${token === ALICE ? 'alice' : 'alice-agent'} ${method} ${path}: ${a.status} ${a.body.slice(0, 100)} (unknown id: ${b.status})`);
      }
    }
    // Bob's exec id under alice's own sandbox does not exist either.
    const cross = await send('GET', `/v1/sandboxes/${own}/execs/${bobExec}`, ALICE);
    if (cross.status !== 404 || cross.body.includes('bob-output')) leaks.push(`alice's sandbox with bob's exec id: ${cross.status}`);
    assert.deepEqual(leaks, []);
    assert.ok(!(await alice.list({ all: true })).some((s) => s.id === bobSandbox));
    const b = await bob.get(bobSandbox);
    assert.equal(b.state, 'running');
    assert.deepEqual(b.egress.allow, ['example.com']);
    assert.equal((await bob.execs(bobSandbox)).length, 1, 'alice ran a command in bob\'s sandbox');
    await alice.delete(own);
  });

  test('/metrics: a tenant sees only its own series, the operator everything', async () => {
    const a = await send('GET', '/metrics', ALICE);
    assert.equal(a.status, 200, a.body.slice(0, 200));
    const samples = a.body.split('\n').filter((l) => l !== '' && !l.startsWith('#'));
    assert.ok(samples.length > 0, 'alice sees no series at all');
    const foreign = samples.filter((l) => !l.includes('tenant="alice"'));
    assert.deepEqual(foreign, [], 'alice sees series that are not hers');
    // Operator-only families (process, HTTP, pools) are not in a tenant's view; its own egress is, bob's is not.
    assert.doesNotMatch(a.body, /tenant="bob"|agentbox_process_|agentbox_http_|agentbox_pool_/);
    // Bob's sandbox and exec exist; alice's view counts none of them.
    assert.match(a.body, /agentbox_sandboxes_active\{tenant="alice"\} 0|^(?![\s\S]*agentbox_sandboxes_active\{)/m);
    assert.doesNotMatch(a.body, /agentbox_execs_total\{[^}]*tenant="alice"[^}]*\} [1-9]/);
    const b = await send('GET', '/metrics', BOB);
    assert.match(b.body, /agentbox_sandboxes_active\{tenant="bob"\} 1/);
    assert.match(b.body, /agentbox_execs_total\{runtime="local",outcome="ok",tenant="bob"\} 1/);
    assert.doesNotMatch(b.body, /tenant="alice"/);
    const labelled = await send('GET', '/metrics', ALICE_AGENT);
    assert.equal(labelled.status, 403, 'a label-scoped token would count the whole tenant');
    assert.doesNotMatch(labelled.body, /agentbox_/);
    const op = await new Promise<{ status: number; body: string }>((resolve, reject) => {
      const req = request({ socketPath: socket, path: '/metrics' }, async (res) => resolve({ status: res.statusCode ?? 0, body: (await readAll(res)).toString() }));
      req.on('error', reject);
      req.end();
    });
    assert.equal(op.status, 200);
    assert.match(op.body, /agentbox_sandboxes_active\{tenant="bob"\} 1/);
    assert.match(op.body, /agentbox_process_/);
  });

  test('/healthz over TCP says ok and nothing about runtimes, versions or paths; the Unix socket gets the checks', async () => {
    for (const token of [undefined, ALICE]) {
      const r = await send('GET', '/healthz', token);
      assert.equal(r.status, 200);
      assert.deepEqual(JSON.parse(r.body), { ok: true });
    }
    const operator = new AgentboxClient({ url: `unix:${socket}` });
    const h = await operator.health();
    assert.equal(h.checks?.['runtime.local']?.ok, true);
  });

  test('a token limited to labelled sandboxes sees only their snapshots: another\'s are 404 by id and by name (get, restore, rm) and not listed', async () => {
    const agent = new AgentboxClient({ url: `http://127.0.0.1:${port}`, token: ALICE_AGENT });
    // Last in this file: it runs execs as alice, whose metrics the test above expects empty.
    const inScope = await agent.create({});
    const outside = await alice.create({ labels: { team: 'ops' } });
    await alice.exec(outside.id, { cmd: ['sh', '-c', 'echo ops-secret > /workspace/secret'] });
    const theirs = await alice.snapshot(outside.id, { name: 'ops-snap' });
    const mine = await agent.snapshot(inScope.id, { name: 'agent-snap' });
    assert.deepEqual(mine.labels, { team: 'agents' });
    try {
      assert.deepEqual((await agent.listSnapshots()).map((x) => x.id), [mine.id]);
      assert.deepEqual(new Set((await alice.listSnapshots()).map((x) => x.id)), new Set([mine.id, theirs.id]));
      assert.deepEqual(await bob.listSnapshots(), []);
      for (const ref of [theirs.id, 'ops-snap']) {
        await assert.rejects(agent.getSnapshot(ref), NotFoundError, `get ${ref}`);
        await assert.rejects(agent.create({ snapshot: ref }), NotFoundError, `restore ${ref}`);
        await assert.rejects(agent.deleteSnapshot(ref), NotFoundError, `rm ${ref}`);
        await assert.rejects(bob.getSnapshot(ref), NotFoundError, `bob get ${ref}`);
      }
      assert.equal((await agent.getSnapshot('agent-snap')).id, mine.id);
      // Still there for the tenant's unscoped token, files intact.
      const restored = await alice.create({ snapshot: theirs.id, labels: { team: 'ops' } });
      assert.equal((await alice.exec(restored.id, { cmd: ['cat', '/workspace/secret'] })).stdout, 'ops-secret\n');
      await alice.delete(restored.id);
    } finally {
      for (const x of [mine.id, theirs.id]) await alice.deleteSnapshot(x).catch(() => undefined);
      await alice.delete(outside.id);
      await agent.delete(inScope.id);
    }
  });
});
