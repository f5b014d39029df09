/**
 * kill -9 of the daemon in the middle of a snapshot and of a fork, through a real `agentbox serve`:
 * after the restart, the snapshot that was being taken is neither listed nor left on disk (it was
 * not finished, so it is gone, never listed as good); the sandbox it was taken of runs on, and the
 * next snapshot of it is complete and restores byte for byte. Of a fork cut short, each child is
 * either a whole sandbox (running, the parent's files) or ended `create_failed`; the scratch clone
 * it was made from is gone.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, test } from 'node:test';
import { helperPath, resolvePaths } from '../../src/core/config.js';
import { LocalRuntime } from '../../src/runtime/local/local-runtime.js';
import { DiskStore } from '../../src/storage/disk-store.js';
import { Store } from '../../src/store/store.js';
import { TEST_IMAGES_DIR, testImages } from '../helpers/images.js';
import { ServeProcesses } from '../helpers/serve-process.js';

async function until(what: string, fn: () => boolean | Promise<boolean>, ms = 60_000, every = 100): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await fn())) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for: ${what}`);
    await sleep(every);
  }
}

describe('kill -9 in the middle of a snapshot or a fork', async () => {
  const images = await testImages();

  test('the half-taken snapshot is gone after the restart, never listed; a cut fork leaves whole children or create_failed ones', async () => {
    const home = mkdtempSync(join(tmpdir(), 'agentbox-snapcrash-'));
    const policy = join(home, 'policy.yaml');
    writeFileSync(policy, 'version: 1\ndefaults:\n  runtime: local\n  limits: { memoryMb: 128, pids: 64, diskMb: 4096 }\n');
    const env = { ...process.env, AGENTBOX_HOME: home, AGENTBOX_IMAGES: TEST_IMAGES_DIR, AGENTBOX_POLICY: policy, AGENTBOX_LOG_LEVEL: 'warn' };
    const serve = new ServeProcesses({ home, env, runtime: 'local' });
    const client = serve.client;
    const paths = resolvePaths(env);
    const disks = new DiskStore({ dir: paths.storage });
    const rt = new LocalRuntime({ disks, scope: `agentbox/${paths.homeTag}`, resolveRootfs: (i) => images.resolve(i).rootfs, helper: helperPath() });
    /** Rows of the store as the daemon left them (the test reads the same SQLite file, WAL mode). */
    const rows = <T>(fn: (s: Store) => T): T => {
      const s = Store.open(join(home, 'agentbox.db'));
      try {
        return fn(s);
      } finally {
        s.close();
      }
    };
    const snapshotDir = join(paths.storage, 'store', 'snapshots');
    await serve.around(rt, disks, async () => {
      let daemon = await serve.start();
      const sb = await client.create({});
      // Enough data that sealing the snapshot (a digest over its data) takes seconds to cut into,
      // even on a host whose SHA-256 runs at GB/s: 2 GB of written zeros (data, not holes).
      await client.exec(sb.id, {
        cmd: ['sh', '-c', 'head -c 2000000000 /dev/zero > /workspace/pad; head -c 64000000 /dev/urandom > /workspace/big; sha256sum /workspace/big > /workspace/big.sum'],
        timeoutMs: 120_000,
      });
      const sum = (await client.exec(sb.id, { cmd: ['cat', '/workspace/big.sum'] })).stdout;

      const taking = client.snapshot(sb.id, { name: 'cut' }).catch((err: unknown) => err);
      await until('the snapshot is being taken', () => rows((s) => s.snapshots.unfinished().length) > 0, 60_000, 5);
      await serve.kill9(daemon);
      assert.ok((await taking) instanceof Error, 'the snapshot request did not fail with its daemon');
      daemon = await serve.start();
      assert.deepEqual(await client.listSnapshots(), [], 'a half-taken snapshot is listed');
      assert.deepEqual(rows((s) => [...s.snapshots.allIds()]), [], 'its row is left');
      assert.deepEqual(existsSync(snapshotDir) ? readdirSync(snapshotDir) : [], [], 'its files are left');
      // The sandbox runs on; a snapshot now is whole and restores byte for byte.
      assert.equal((await client.exec(sb.id, { cmd: ['sha256sum', '/workspace/big'] })).stdout, sum);
      const snap = await client.snapshot(sb.id, { name: 'cut' });
      const restored = await client.create({ snapshot: snap.id });
      assert.equal((await client.exec(restored.id, { cmd: ['sha256sum', '/workspace/big'] })).stdout, sum);
      await client.delete(restored.id);

      // A fork of 16 cut short once its first child is there (each child takes a disk clone and a start).
      const before = new Set((await client.list({ all: true })).map((s) => s.id));
      const forking = client.fork(sb.id, { count: 16 }).catch((err: unknown) => err);
      await until('the fork has made a child', async () => rows((s) => s.listSandboxes({}).filter((x) => !before.has(x.sandbox.id)).length) > 0, 60_000, 5);
      await serve.kill9(daemon);
      assert.ok((await forking) instanceof Error, 'the fork request did not fail with its daemon');
      daemon = await serve.start();
      const children = (await client.list({ all: true })).filter((s) => !before.has(s.id));
      assert.ok(children.length >= 1 && children.length < 16, `${children.length} children`);
      for (const c of children) {
        if (c.state === 'running') assert.equal((await client.exec(c.id, { cmd: ['sha256sum', '/workspace/big'] })).stdout, sum, `child ${c.id} is not whole`);
        else assert.deepEqual([c.state, c.endReason], ['failed', 'create_failed'], `child ${c.id}`);
      }
      assert.deepEqual(readdirSync(join(paths.storage, 'store', 'scratch')), [], 'the fork\'s scratch clone is left');
      for (const c of children) await client.delete(c.id);

      // A daemon killed inside the clone's freeze window leaves the disk frozen: the next one thaws it
      // (else the sandbox's writes hang for good, and every later snapshot fails with EBUSY).
      execFileSync('fsfreeze', ['-f', join(paths.storage, 'mnt', sb.id)]);
      await serve.kill9(daemon);
      daemon = await serve.start();
      const wrote = await client.exec(sb.id, { cmd: ['sh', '-c', 'echo after > /workspace/after && sync && cat /workspace/after'], timeoutMs: 20_000 });
      assert.deepEqual([wrote.exitCode, wrote.stdout], [0, 'after\n'], 'the disk stayed frozen after the restart');
      await client.deleteSnapshot((await client.snapshot(sb.id)).id);

      await client.deleteSnapshot(snap.id);
      await client.delete(sb.id);
    });
  });
});
