/** Volume images on the real thing: reflink clones of the disk store's template, one loop mount each, real ENOSPC. */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { DiskStore } from '../../src/storage/disk-store.js';
import { isMountPoint, mountTable } from '../../src/storage/host-tools.js';
import { VOLUME_OWNER, VolumeStore } from '../../src/storage/volume-store.js';

const skip = process.getuid?.() !== 0 ? 'volumes need root (mount, loop devices)' : undefined;

function loopsOf(dir: string): string[] {
  return execFileSync('losetup', ['-nl', '-O', 'NAME,BACK-FILE'], { encoding: 'utf8' })
    .split('\n')
    .filter((l) => l.includes(dir));
}

describe('volume store', { skip }, () => {
  let dir: string;
  let disks: DiskStore;
  let volumes: VolumeStore;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'agentbox-volumes-'));
    disks = new DiskStore({ dir: join(dir, 'storage'), storeBytes: 8 * 1024 ** 3 });
    volumes = new VolumeStore({ disks, mountDir: join(dir, 'storage', 'volmnt') });
  });
  after(async () => {
    assert.equal(await disks.closeIfIdle(), true);
    assert.deepEqual(mountTable().filter((m) => m.point.startsWith(dir)), [], 'mounts left behind');
    for (let i = 0; i < 50 && loopsOf(dir).length > 0; i++) await new Promise((r) => setTimeout(r, 100));
    assert.deepEqual(loopsOf(dir), [], 'loop devices left behind');
    rmSync(dir, { recursive: true, force: true });
  });

  test('a new volume is an empty directory of the sandbox user, its size its quota, kept across mounts', async () => {
    const v = { id: 'vol_a1', tenant: 'alice', name: 'data' };
    await volumes.create(v, 32);
    assert.equal(volumes.isMounted(v.id), false, 'create leaves it unmounted');
    assert.ok(existsSync(join(disks.storeDir, 'volumes', 'alice', 'data.img')));
    const root = await volumes.mount(v);
    assert.equal(await volumes.mount(v), root, 'mount is idempotent');
    assert.equal(mountTable().filter((m) => m.point === root).length, 1, 'mounted once');
    assert.deepEqual(readdirSync(root), [], 'no lost+found');
    const st = statSync(root);
    assert.equal(st.uid, VOLUME_OWNER);
    assert.equal(st.mode & 0o7777, 0o755);
    writeFileSync(join(root, 'keep'), 'kept');
    assert.throws(() => writeFileSync(join(root, 'big'), Buffer.alloc(40 * 1024 * 1024, 1)), /ENOSPC/);
    rmSync(join(root, 'big'));
    assert.deepEqual(volumes.mounted(), [v.id]);
    await volumes.unmount(v.id);
    await volumes.unmount(v.id);
    assert.equal(existsSync(root), false);
    assert.deepEqual(volumes.mounted(), []);
    assert.equal(readFileSync(join(await volumes.mount(v), 'keep'), 'utf8'), 'kept');
    await volumes.remove(v);
    assert.equal(isMountPoint(root), false);
    assert.deepEqual(volumes.images(), []);
  });

  test('a second volume of the same tenant and name is a conflict; other tenants have their own names', async () => {
    const a = { id: 'vol_b1', tenant: 'alice', name: 'same' };
    await volumes.create(a, 16);
    await assert.rejects(volumes.create({ ...a, id: 'vol_b2' }, 16), { code: 'conflict' });
    const b = { id: 'vol_b3', tenant: 'bob', name: 'same' };
    await volumes.create(b, 16);
    assert.deepEqual(volumes.images().sort((x, y) => x.tenant.localeCompare(y.tenant)), [{ tenant: 'alice', name: 'same' }, { tenant: 'bob', name: 'same' }]);
    await volumes.remove(a);
    await volumes.remove(b);
  });

  test('names, tenants and ids that could be paths are refused before anything touches the host', async () => {
    for (const v of [{ id: 'vol_c1', tenant: 'alice', name: '../x' }, { id: 'vol_c1', tenant: '../alice', name: 'x' }, { id: '../vol', tenant: 'alice', name: 'x' }, { id: 'vol_c1', tenant: 'alice', name: 'a/b' }]) {
      await assert.rejects(volumes.create(v, 16), { code: 'bad_request' });
      await assert.rejects(volumes.mount(v), { code: 'bad_request' });
    }
    assert.equal(existsSync(join(disks.storeDir, 'x.img')), false);
  });

  test('the disk store stays mounted while a volume is', async () => {
    const v = { id: 'vol_d1', tenant: 'alice', name: 'held' };
    await volumes.create(v, 16);
    await volumes.mount(v);
    assert.equal(await disks.closeIfIdle(), false);
    await volumes.remove(v);
  });
});
