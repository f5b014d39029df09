/**
 * A daemon with AGENTBOX_DATABASE_URL keeps its store in PostgreSQL: a sandbox created, run and
 * deleted through the API leaves its rows there and no SQLite file in the home; a second daemon on
 * another home, pointed at the same database, sees them. Needs the local runtime (root, bubblewrap)
 * and the PostgreSQL server binaries; skipped with the reason otherwise.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { helperPath } from '../../src/core/config.js';
import { startDaemon } from '../../src/daemon/compose.js';
import { silentLogger } from '../../src/observability/logger.js';
import { LocalRuntime } from '../../src/runtime/local/local-runtime.js';
import { AgentboxClient } from '../../src/sdk/client.js';
import { scratchDiskStore } from '../../src/storage/scratch-store.js';
import { TEST_IMAGES_DIR, testImages } from '../helpers/images.js';
import { postgresBin, startPostgres, type PostgresCluster } from '../helpers/postgres.js';

async function localRuntimeProblem(): Promise<string | undefined> {
  const images = await testImages();
  return new LocalRuntime({ disks: scratchDiskStore(), scope: 'agentbox/probe', resolveRootfs: (i) => images.resolve(i).rootfs, helper: helperPath() })
    .probe()
    .then((r) => (r === undefined ? 'the local runtime does not apply on this host' : undefined), (err: unknown) => `the local runtime is unavailable: ${String(err)}`);
}

const pgFound = postgresBin();
const skip = 'skip' in pgFound ? pgFound.skip : await localRuntimeProblem();
const cluster: PostgresCluster | undefined = skip ? undefined : await startPostgres({ settings: { fsync: 'off', synchronous_commit: 'off' } });
after(() => cluster?.stop());

test('the daemon\'s store is the PostgreSQL database of AGENTBOX_DATABASE_URL', { skip: skip ?? false }, async () => {
  const pgc = cluster!;
  const url = await pgc.createDatabase();
  const homes = [mkdtempSync(join(tmpdir(), 'agentbox-pgd-')), mkdtempSync(join(tmpdir(), 'agentbox-pgd-'))];
  const start = (home: string) => startDaemon({ env: { AGENTBOX_HOME: home, AGENTBOX_IMAGES: TEST_IMAGES_DIR, AGENTBOX_DATABASE_URL: url }, logger: silentLogger(), socket: null, tcp: { host: '127.0.0.1', port: 0 } });
  const daemon = await start(homes[0]!);
  try {
    const client = new AgentboxClient({ url: `http://127.0.0.1:${daemon.tcpAddress!.port}` });
    const sb = await client.create({ labels: { store: 'postgres' } });
    const r = await client.exec(sb.id, { cmd: ['sh', '-c', 'echo hi; exit 3'] });
    assert.deepEqual([r.exitCode, r.stdout], [3, 'hi\n']);
    await client.delete(sb.id);

    const rows = await pgc.query<{ state: string; end_reason: string }>(url, 'SELECT state, end_reason FROM sandboxes WHERE id = $1', [sb.id]);
    assert.deepEqual(rows, [{ state: 'deleted', end_reason: 'deleted' }]);
    const execs = await pgc.query<{ exit_code: number; stdout_tail: Buffer }>(url, 'SELECT exit_code, stdout_tail FROM execs WHERE sandbox_id = $1', [sb.id]);
    assert.deepEqual(execs.map((e) => [e.exit_code, e.stdout_tail.toString()]), [[3, 'hi\n']]);
    assert.equal(existsSync(join(homes[0]!, 'agentbox.db')), false, 'a SQLite file was made in the home');

    const second = await start(homes[1]!);
    try {
      const other = new AgentboxClient({ url: `http://127.0.0.1:${second.tcpAddress!.port}` });
      assert.equal((await other.get(sb.id)).endReason, 'deleted');
      assert.equal((await other.execRecord(sb.id, r.execId)).stdout, 'hi\n');
    } finally {
      await second.close();
    }
  } finally {
    await daemon.close();
    for (const h of homes) rmSync(h, { recursive: true, force: true });
  }
});

test('two daemon replicas on one PostgreSQL database: B lists and inspects A\'s sandbox, refuses to enter it naming A, and neither reaps nor stops it', { skip: skip ?? false }, async () => {
  const pgc = cluster!;
  const url = await pgc.createDatabase();
  const homes = [mkdtempSync(join(tmpdir(), 'agentbox-pgr-')), mkdtempSync(join(tmpdir(), 'agentbox-pgr-'))];
  const start = (home: string, id: string) =>
    startDaemon({
      env: { AGENTBOX_HOME: home, AGENTBOX_IMAGES: TEST_IMAGES_DIR, AGENTBOX_DATABASE_URL: url, AGENTBOX_REPLICA_ID: id, AGENTBOX_ADVERTISE_URL: `http://${id}.example:8080` },
      logger: silentLogger(),
      socket: null,
      tcp: { host: '127.0.0.1', port: 0 },
      reapIntervalMs: 100,
    });
  const a = await start(homes[0]!, 'replica-a');
  try {
    const ca = new AgentboxClient({ url: `http://127.0.0.1:${a.tcpAddress!.port}` });
    const sb = await ca.create({});
    const b = await start(homes[1]!, 'replica-b');
    try {
      const cb = new AgentboxClient({ url: `http://127.0.0.1:${b.tcpAddress!.port}` });
      assert.deepEqual(await cb.get(sb.id), await ca.get(sb.id));
      assert.ok((await cb.list()).some((s) => s.id === sb.id));
      await assert.rejects(cb.exec(sb.id, { cmd: ['true'] }), (err: { code?: string; message?: string; hint?: string }) => err.code === 'conflict' && /replica-a/.test(err.message ?? '') && /http:\/\/replica-a\.example:8080/.test(err.hint ?? ''));
      await new Promise((r) => setTimeout(r, 1000)); // B's reaper has had ten passes
      assert.equal((await ca.get(sb.id)).state, 'running');
      const replicas = await pgc.query<{ id: string }>(url, 'SELECT id FROM replicas ORDER BY id');
      assert.deepEqual(replicas.map((r) => r.id), ['replica-a', 'replica-b']);
    } finally {
      await b.close(); // the default: stop its sandboxes, which A's is not
    }
    assert.equal((await ca.get(sb.id)).state, 'running', 'B\'s stop ended A\'s sandbox');
    assert.equal((await ca.exec(sb.id, { cmd: ['sh', '-c', 'echo still'] })).stdout, 'still\n');
    await ca.delete(sb.id);
  } finally {
    await a.close();
    for (const h of homes) rmSync(h, { recursive: true, force: true });
  }
});
