/** Named volumes without root: the request's rules (names, targets), the CLI flag, local mount points (the store's rows: test/store/store-suite.ts). */
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { CreateSandboxRequestSchema } from '../../src/contract/requests.js';
import { checkVolumeName, CreateVolumeRequestSchema, normalizeMounts, volumeTargetProblem } from '../../src/contract/volumes.js';
import { parseVolumeFlag } from '../../src/cli/volume-commands.js';
import { volumeMountPoints } from '../../src/runtime/local/volume-mounts.js';

const dir = mkdtempSync(join(tmpdir(), 'agentbox-volumes-unit-'));
after(() => rmSync(dir, { recursive: true, force: true }));

describe('volume names and targets', () => {
  test('names: lower-case letters, digits, . _ -; nothing that could be a path', () => {
    for (const ok of ['data', 'my-data', 'cache.v2', 'a_b', '0', 'x'.repeat(63)]) assert.equal(checkVolumeName(ok), ok);
    for (const bad of ['../x', '..', '.', 'a/b', '/abs', '', 'Data', '-x', '.hidden', 'x'.repeat(64), 'a b', 'a\0b']) {
      assert.throws(() => checkVolumeName(bad), { code: 'bad_request' }, bad);
      assert.equal(CreateVolumeRequestSchema.safeParse({ name: bad }).success, false, bad);
    }
    assert.equal(CreateVolumeRequestSchema.safeParse({ name: 'ok', sizeMb: 4 }).success, false, 'below the 8 MB minimum');
    assert.equal(CreateVolumeRequestSchema.safeParse({ name: 'ok', sizeMb: 1.5 }).success, false);
  });

  test('targets: absolute and plain; not /, the system\'s, agentbox\'s, or /workspace and /tmp themselves', () => {
    for (const ok of ['/data', '/mnt/cache', '/workspace/shared', '/tmp/x', '/home/sandbox/.cache', '/opt/a-b_c.d']) assert.equal(volumeTargetProblem(ok), undefined, ok);
    for (const bad of ['data', '/', '/proc', '/proc/x', '/sys/fs', '/dev/shm', '/run', '/run/agentbox', '/.agentbox', '/.agentbox/init', '/workspace', '/tmp',
      '/data/', '/data//x', '/data/./x', '/data/../etc', '/a:b', '/a,b', '/a b']) {
      assert.ok(volumeTargetProblem(bad), bad);
    }
  });

  test('a create request: at most one volume per target, none inside another; readOnly defaults to false', () => {
    const parse = (volumes: unknown): boolean => CreateSandboxRequestSchema.safeParse({ volumes }).success;
    assert.ok(parse([{ name: 'a', target: '/data' }, { name: 'a', target: '/mnt/a', readOnly: true }]));
    assert.equal(parse([{ name: 'a', target: '/data' }, { name: 'b', target: '/data' }]), false);
    assert.equal(parse([{ name: 'a', target: '/data' }, { name: 'b', target: '/data/b' }]), false);
    assert.equal(parse([{ name: '../a', target: '/data' }]), false);
    assert.equal(parse([{ name: 'a', target: '/proc/x' }]), false);
    assert.equal(parse([{ name: 'a', target: '/data', extra: 1 }]), false);
    assert.deepEqual(normalizeMounts([{ name: 'a', target: '/data' }]), [{ name: 'a', target: '/data', readOnly: false }]);
  });

  test('--volume NAME:/PATH[:ro]', () => {
    assert.deepEqual(parseVolumeFlag('cache:/data'), { name: 'cache', target: '/data' });
    assert.deepEqual(parseVolumeFlag('cache:/data:ro'), { name: 'cache', target: '/data', readOnly: true });
    assert.deepEqual(parseVolumeFlag('cache:/data:rw'), { name: 'cache', target: '/data' });
    for (const bad of ['cache', 'cache:data', ':/data', 'cache:/data:rx', '../x:/data', 'a:/b:ro:x']) assert.throws(() => parseVolumeFlag(bad), { code: 'bad_request' }, bad);
  });
});

describe('local mount points on a read-only image root', () => {
  test('under /workspace or /tmp bwrap makes them; elsewhere the helper does, unless the image has a non-directory there', () => {
    const rootfs = join(dir, 'rootfs');
    mkdirSync(join(rootfs, 'mnt'), { recursive: true });
    mkdirSync(join(rootfs, 'opt', 'app'), { recursive: true });
    writeFileSync(join(rootfs, 'opt', 'file'), 'x');
    symlinkSync('/workspace', join(rootfs, 'link'));
    const vol = (target: string): { source: string; target: string; readOnly: boolean } => ({ source: '/nowhere', target, readOnly: false });
    assert.deepEqual(volumeMountPoints(rootfs, [vol('/workspace/a'), vol('/tmp/b'), vol('/data'), vol('/mnt/x'), vol('/opt/app')]), ['/data', '/mnt/x', '/opt/app']);
    assert.throws(() => volumeMountPoints(rootfs, [vol('/opt/file')]), { code: 'bad_request' });
    assert.throws(() => volumeMountPoints(rootfs, [vol('/opt/file/x')]), { code: 'bad_request' });
    assert.throws(() => volumeMountPoints(rootfs, [vol('/link/x')]), { code: 'bad_request' });
  });
});

// The volume rows in the store: test/store/store-suite.ts (run on SQLite by test/unit/store.test.ts).
