/** Sandbox disks on the real thing: XFS store on a loop device, ext4 disks cloned by reflink, real ENOSPC. */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { closeSync, existsSync, mkdtempSync, openSync, readFileSync, readSync, rmSync, statSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { DiskStore } from '../../src/storage/disk-store.js';
import { isMountPoint, mountTable } from '../../src/storage/host-tools.js';
import { SnapshotFiles } from '../../src/storage/snapshot-files.js';

const skip = process.getuid?.() !== 0 ? 'sandbox disks need root (mount, loop devices)' : undefined;

function loopsOf(dir: string): string[] {
  return execFileSync('losetup', ['-nl', '-O', 'NAME,BACK-FILE'], { encoding: 'utf8' })
    .split('\n')
    .filter((l) => l.includes(dir));
}

describe('disk store', { skip }, () => {
  let dir: string;
  let store: DiskStore;
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'agentbox-disks-'));
    store = new DiskStore({ dir: join(dir, 'storage'), storeBytes: 8 * 1024 ** 3 });
    await store.open();
  });
  after(async () => {
    for (const id of store.list()) await store.destroy(id);
    assert.equal(await store.closeIfIdle(), true);
    assert.deepEqual(mountTable().filter((m) => m.point.startsWith(dir)), [], 'mounts left behind');
    // autoclear loop devices go once their filesystem is unmounted
    for (let i = 0; i < 50 && loopsOf(dir).length > 0; i++) await new Promise((r) => setTimeout(r, 100));
    assert.deepEqual(loopsOf(dir), [], 'loop devices left behind');
    rmSync(dir, { recursive: true, force: true });
  });

  test('a disk holds up to its size, then ENOSPC; the files already written stay intact', async () => {
    const disk = await store.create('sbx_a', 32);
    assert.ok(isMountPoint(disk.root));
    assert.equal(statSync(join(disk.root, 'tmp')).mode & 0o7777, 0o1777);
    writeFileSync(join(disk.root, 'workspace', 'keep'), 'kept');
    assert.throws(() => writeFileSync(join(disk.root, 'workspace', 'big'), Buffer.alloc(40 * 1024 * 1024, 1)), /ENOSPC/);
    assert.equal(readFileSync(join(disk.root, 'workspace', 'keep'), 'utf8'), 'kept');
    rmSync(join(disk.root, 'workspace', 'big'));
    writeFileSync(join(disk.root, 'workspace', 'small'), 'ok');
    await store.destroy('sbx_a');
    assert.equal(existsSync(disk.root), false);
    assert.deepEqual(store.list(), []);
  });

  test('a clone of a live disk has its bytes, and the two are independent afterwards', async () => {
    const a = await store.create('sbx_src', 64);
    const data = Buffer.alloc(20 * 1024 * 1024);
    for (let i = 0; i < data.length; i += 4096) data.writeUInt32LE(i, i);
    writeFileSync(join(a.root, 'workspace', 'data'), data);
    const clone = join(store.storeDir, 'snapshots', 'test-clone.img');
    await store.cloneTo('sbx_src', clone);
    const b = await store.create('sbx_dst', 64, clone);
    rmSync(clone);
    const sum = (p: string): string => createHash('sha256').update(readFileSync(p)).digest('hex');
    assert.equal(sum(join(b.root, 'workspace', 'data')), sum(join(a.root, 'workspace', 'data')));
    writeFileSync(join(b.root, 'workspace', 'only-b'), 'b');
    assert.equal(existsSync(join(a.root, 'workspace', 'only-b')), false);
    await store.destroy('sbx_src');
    await store.destroy('sbx_dst');
  });

  test('a second create under an id that has a disk is a conflict, and the disk there stays mounted with its files', async () => {
    const a = await store.create('sbx_twice', 32);
    writeFileSync(join(a.root, 'workspace', 'keep'), 'kept');
    await assert.rejects(store.create('sbx_twice', 32), { code: 'conflict' });
    assert.ok(isMountPoint(a.root));
    assert.equal(readFileSync(join(a.root, 'workspace', 'keep'), 'utf8'), 'kept');
    await store.destroy('sbx_twice');
  });

  test('bad ids are refused before anything touches the host', async () => {
    for (const id of ['../x', 'a/b', '', 'X'.repeat(65), 'sbx_a;rm']) await assert.rejects(store.create(id, 32), { code: 'bad_request' });
  });

  test('a closed store opens again with its disks (a daemon restart)', async () => {
    const a = await store.create('sbx_keep', 32);
    writeFileSync(join(a.root, 'workspace', 'f'), 'x');
    assert.equal(await store.closeIfIdle(), false, 'the store stays while a disk is mounted');
    const again = new DiskStore({ dir: join(dir, 'storage') });
    const back = await again.attach('sbx_keep');
    assert.equal(readFileSync(join(back!.root, 'workspace', 'f'), 'utf8'), 'x');
    await again.destroy('sbx_keep');
  });
});

describe('snapshot files', { skip }, () => {
  let dir: string;
  let store: DiskStore;
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'agentbox-snapfiles-'));
    // Small on purpose: the last test fills it.
    store = new DiskStore({ dir: join(dir, 'storage'), storeBytes: 1024 ** 3 });
    await store.open();
  });
  after(async () => {
    for (const id of store.list()) await store.destroy(id);
    assert.equal(await store.closeIfIdle(), true);
    assert.deepEqual(mountTable().filter((m) => m.point.startsWith(dir)), [], 'mounts left behind');
    rmSync(dir, { recursive: true, force: true });
  });

  test('a sealed snapshot verifies; a changed byte or a missing manifest is refused', async () => {
    const files = new SnapshotFiles(store);
    const disk = await store.create('sbx_snapsrc', 32);
    writeFileSync(join(disk.root, 'workspace', 'f'), 'v1');
    const { manifest } = await files.take('snap_t1', 'sbx_snapsrc', 32);
    assert.equal((await files.verify('snap_t1')).layers[0]!.sha256, manifest.layers[0]!.sha256);
    // The digest is of the clone: later writes in the sandbox do not change it.
    writeFileSync(join(disk.root, 'workspace', 'f'), 'v2');
    await files.verify('snap_t1');
    const layer = files.layerPath('snap_t1');
    const fd = openSync(layer, 'r+');
    const probe = Buffer.alloc(1);
    // Flip one byte inside a data extent (the superblock at 1024 is always data).
    readSync(fd, probe, 0, 1, 1100);
    writeSync(fd, Buffer.from([probe[0]! ^ 0xff]), 0, 1, 1100);
    closeSync(fd);
    await assert.rejects(files.verify('snap_t1'), { code: 'conflict', message: /damaged/ });
    await files.remove('snap_t1');
    await assert.rejects(files.verify('snap_t1'), { code: 'not_found' });
    await files.take('snap_t2', 'sbx_snapsrc', 32);
    rmSync(join(store.storeDir, 'snapshots', 'snap_t2', 'manifest.json'));
    await assert.rejects(files.verify('snap_t2'), { code: 'conflict', message: /manifest/ });
    await files.remove('snap_t2');
    await store.destroy('sbx_snapsrc');
  });

  test('a snapshot that runs out of space leaves nothing behind, and the sandbox disk is unharmed', async () => {
    const files = new SnapshotFiles(store);
    const disk = await store.create('sbx_full', 32);
    writeFileSync(join(disk.root, 'workspace', 'f'), 'kept');
    // Take every free block of the store.
    const filler = join(store.storeDir, 'scratch', 'filler');
    execFileSync('sh', ['-c', `dd if=/dev/zero of=${filler} bs=1M 2>/dev/null; true`]);
    let failed = false;
    for (let i = 0; i < 20 && !failed; i++) {
      // Reflink clones need only metadata; keep taking until even that runs out.
      await files.take(`snap_full${i}`, 'sbx_full', 32).then(
        () => undefined,
        (err: { message?: string }) => {
          failed = true;
          assert.match(String(err.message), /ENOSPC|No space/);
        },
      );
    }
    assert.ok(failed, 'a full store never refused a snapshot');
    for (const id of files.listIds()) {
      // Whatever exists is complete: it verifies. Nothing half-made is left.
      assert.ok(!id.endsWith('.partial'));
      await files.verify(id);
      await files.remove(id);
    }
    rmSync(filler);
    assert.equal(readFileSync(join(disk.root, 'workspace', 'f'), 'utf8'), 'kept');
    await store.destroy('sbx_full');
  });
});
