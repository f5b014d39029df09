/**
 * Two real daemon replicas on one PostgreSQL database, both advertising their URL: a request through
 * replica B about a sandbox of A's local runtime is forwarded to A (src/api/replica-forward.ts) —
 * exec, streamed exec, files, a terminal's WebSocket, delete — while another tenant still gets B's
 * own 404, a request that was forwarded once is not forwarded again (409), and an A that does not
 * answer gives B's 409 with the reason within seconds. Needs the local runtime (root, bubblewrap) and
 * the PostgreSQL server binaries; skipped with the reason otherwise.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { helperPath } from '../../src/core/config.js';
import { startDaemon, type Daemon } from '../../src/daemon/compose.js';
import { silentLogger } from '../../src/observability/logger.js';
import { LocalRuntime } from '../../src/runtime/local/local-runtime.js';
import { AgentboxClient, readAll } from '../../src/sdk/client.js';
import { scratchDiskStore } from '../../src/storage/scratch-store.js';
import { TEST_IMAGES_DIR, testImages } from '../helpers/images.js';
import { postgresBin, startPostgres, type PostgresCluster } from '../helpers/postgres.js';

const ALICE = 'alice-forward-token-0123456789';
const BOB = 'bob-forward-token-0123456789';
const POLICY = `version: 1
defaults:
  image: busybox
tenants:
  - name: alice
    tokens: [${ALICE}]
  - name: bob
    tokens: [${BOB}]
`;

async function localRuntimeProblem(): Promise<string | undefined> {
  const images = await testImages();
  return new LocalRuntime({ disks: scratchDiskStore(), scope: 'agentbox/probe', resolveRootfs: (i) => images.resolve(i).rootfs, helper: helperPath() })
    .probe()
    .then((r) => (r === undefined ? 'the local runtime does not apply on this host' : undefined), (err: unknown) => `the local runtime is unavailable: ${String(err)}`);
}

/** A port free now: the daemon is told its URL before it listens. */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as { port: number }).port;
      srv.close(() => resolve(port));
    });
  });
}

/** One raw request: status, headers and body as text. */
function raw(port: number, method: string, path: string, headers: Record<string, string>, body?: string): Promise<{ status: number; headers: Record<string, unknown>; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, method, path, headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(body);
  });
}

const pgFound = postgresBin();
const skip = 'skip' in pgFound ? pgFound.skip : await localRuntimeProblem();

describe('replica B forwards requests about replica A\'s local sandbox to A', { skip: skip ?? false }, () => {
  let cluster: PostgresCluster;
  let dir: string;
  let a: Daemon;
  let b: Daemon;
  let pa: number;
  let pb: number;
  let ca: AgentboxClient;
  let cb: AgentboxClient;
  let sbx: string;

  before(async () => {
    cluster = await startPostgres({ settings: { fsync: 'off', synchronous_commit: 'off' } });
    const url = await cluster.createDatabase();
    dir = mkdtempSync(join(tmpdir(), 'agentbox-fwd-'));
    const policy = join(dir, 'policy.yaml');
    writeFileSync(policy, POLICY);
    pa = await freePort();
    pb = await freePort();
    const start = (name: string, port: number): Promise<Daemon> =>
      startDaemon({
        env: { AGENTBOX_HOME: join(dir, name), AGENTBOX_IMAGES: TEST_IMAGES_DIR, AGENTBOX_DATABASE_URL: url, AGENTBOX_REPLICA_ID: `rep-${name}`, AGENTBOX_ADVERTISE_URL: `http://127.0.0.1:${port}` },
        policyPath: policy,
        logger: silentLogger(),
        socket: null,
        tcp: { host: '127.0.0.1', port },
        reapIntervalMs: 1000,
      });
    a = await start('a', pa);
    b = await start('b', pb);
    ca = new AgentboxClient({ url: `http://127.0.0.1:${pa}`, token: ALICE });
    cb = new AgentboxClient({ url: `http://127.0.0.1:${pb}`, token: ALICE });
    sbx = (await ca.create({})).id;
  });

  after(async () => {
    await b?.close();
    await a?.close();
    await cluster?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  test('an exec through B runs in A\'s sandbox, and A recorded it', async () => {
    const r = await cb.exec(sbx, { cmd: ['sh', '-c', 'echo via-b; echo err >&2; exit 4'] });
    assert.deepEqual([r.exitCode, r.stdout, r.stderr], [4, 'via-b\n', 'err\n']);
    assert.equal((await ca.execRecord(sbx, r.execId)).stdout, 'via-b\n');
  });

  test('a streamed exec through B sends its output as it comes, not at the end', async () => {
    const seen: { type: string; at: number; text?: string }[] = [];
    for await (const ev of cb.execStream(sbx, { cmd: ['sh', '-c', 'echo one; sleep 1.5; echo two'] })) {
      seen.push({ type: ev.type, at: Date.now(), ...(ev.type === 'stdout' ? { text: ev.data.toString() } : {}) });
    }
    const one = seen.find((e) => e.text?.includes('one'));
    const exit = seen.find((e) => e.type === 'exit');
    assert.ok(one && exit, `events: ${JSON.stringify(seen)}`);
    assert.ok(exit.at - one.at >= 1000, `"one" arrived ${exit.at - one.at} ms before the exit: the answer was buffered`);
    assert.equal(seen.filter((e) => e.text).map((e) => e.text).join(''), 'one\ntwo\n');
  });

  test('a file written through B (streamed, several MiB) is in A\'s sandbox, and reads back through B', async () => {
    const data = Buffer.alloc(5 * 1024 * 1024);
    for (let i = 0; i < data.length; i++) data[i] = (i * 31 + 7) % 251;
    assert.equal((await cb.writeFile(sbx, '/workspace/big.bin', data)).bytes, data.length);
    assert.ok((await readAll(await ca.readFile(sbx, '/workspace/big.bin'))).equals(data), 'A reads other bytes');
    assert.ok((await readAll(await cb.readFile(sbx, '/workspace/big.bin'))).equals(data), 'B reads other bytes');
    assert.ok((await cb.listDir(sbx, '/workspace')).some((e) => e.name === 'big.bin'));
  });

  test('a terminal opened and attached through B (WebSocket) runs in A\'s sandbox', async () => {
    const term = await cb.openTerminal(sbx, { cmd: ['sh'] });
    assert.ok((await cb.listTerminals(sbx)).some((t) => t.terminalId === term.terminalId), 'B lists the terminal A holds');
    const conn = await cb.attachTerminal(sbx, term.terminalId);
    let text = '';
    const shown = new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`the terminal showed only ${JSON.stringify(text)}`)), 10_000);
      conn.on('data', (d) => {
        text += d.toString('utf8');
        if (/forty-42/.test(text)) {
          clearTimeout(timer);
          resolve();
        }
      });
    });
    conn.write('echo forty-$((40+2))\n');
    await shown;
    conn.close();
    await cb.closeTerminal(sbx, term.terminalId);
  });

  test('another tenant gets the same 404 through B as through A; no token is a 401 from B', async () => {
    const path = `/v1/sandboxes/${sbx}/exec`;
    const body = JSON.stringify({ cmd: ['true'] });
    const headers = { authorization: `Bearer ${BOB}`, 'content-type': 'application/json' };
    const viaA = await raw(pa, 'POST', path, headers, body);
    const viaB = await raw(pb, 'POST', path, headers, body);
    assert.equal(viaA.status, 404);
    assert.deepEqual([viaB.status, viaB.body], [viaA.status, viaA.body]);
    const unknown = await raw(pb, 'POST', '/v1/sandboxes/sbx_nosuchone/exec', { ...headers, authorization: `Bearer ${ALICE}` }, body);
    assert.deepEqual([unknown.status, JSON.parse(unknown.body).error.code], [404, 'not_found']);
    assert.equal((await raw(pb, 'POST', path, { 'content-type': 'application/json' }, body)).status, 401);
  });

  test('a request that was forwarded once already is not forwarded again: B answers the conflict, saying so', async () => {
    const r = await raw(pb, 'POST', `/v1/sandboxes/${sbx}/exec`, { authorization: `Bearer ${ALICE}`, 'content-type': 'application/json', 'x-agentbox-forwarded-by': 'rep-x' }, JSON.stringify({ cmd: ['echo', 'looped'] }));
    assert.equal(r.status, 409, r.body);
    const err = JSON.parse(r.body).error as { code: string; message: string; hint: string };
    assert.equal(err.code, 'conflict');
    assert.match(err.message, /replica rep-a/);
    assert.match(err.hint, new RegExp(`send this request to http://127\\.0\\.0\\.1:${pa} .*forwarded by "rep-x"`));
  });

  test('a delete through B ends A\'s sandbox', async () => {
    const sb = await ca.create({});
    assert.equal((await cb.delete(sb.id)).state, 'deleted');
    assert.equal((await ca.get(sb.id)).state, 'deleted');
  });

  // Last: it closes A's listener.
  test('with A\'s URL dead (A alive in the table), B answers 409 within seconds with the reason, and still reads the row', async () => {
    // Out of A's list, which its close() would wait on again (a closed server's close() never calls back).
    for (const s of a.servers.splice(0)) {
      const closed = new Promise((resolve) => s.close(resolve));
      s.closeAllConnections();
      await closed;
    }
    const started = Date.now();
    await assert.rejects(cb.exec(sbx, { cmd: ['true'] }), (err: { code?: string; hint?: string }) => {
      assert.equal(err.code, 'conflict');
      assert.match(err.hint ?? '', new RegExp(`send this request to http://127\\.0\\.0\\.1:${pa} when it answers .*connection refused`));
      return true;
    });
    assert.ok(Date.now() - started < 5000, `B took ${Date.now() - started} ms to refuse`);
    assert.equal((await cb.get(sbx)).state, 'running', 'B no longer reads the row itself when A does not answer');
  });
});
