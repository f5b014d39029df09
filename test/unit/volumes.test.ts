/** Named volumes without root: the request's rules (names, targets), the CLI flag, the store's rows, local mount points. */
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import type { Sandbox, SandboxSpec } from '../../src/contract/model.js';
import { CreateSandboxRequestSchema } from '../../src/contract/requests.js';
import { checkVolumeName, CreateVolumeRequestSchema, normalizeMounts, volumeTargetProblem } from '../../src/contract/volumes.js';
import { parseVolumeFlag } from '../../src/cli/volume-commands.js';
import { volumeMountPoints } from '../../src/runtime/local/volume-mounts.js';
import { Store } from '../../src/store/store.js';

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

describe('volume rows', () => {
  const sb = (id: string, state: Sandbox['state']): { sandbox: Sandbox; spec: SandboxSpec } => {
    const sandbox: Sandbox = {
      id, tenant: 'alice', image: 'busybox', profile: null, runtime: 'local', isolation: 'namespaces', state,
      limits: { cpus: 1, memoryMb: 64, pids: 32, diskMb: 16 }, egress: { mode: 'none', allow: [] }, labels: {},
      createdAt: '2026-01-01T00:00:00.000Z', expiresAt: null, lastActiveAt: '2026-01-01T00:00:00.000Z',
    };
    const spec: SandboxSpec = {
      id, tenant: 'alice', image: 'busybox', profile: null, runtime: 'local', isolation: 'namespaces', limits: sandbox.limits, egress: sandbox.egress,
      env: {}, labels: {}, ttlMs: null, idleTimeoutMs: null, execTimeoutMs: 1000, outputLimitBytes: 1000,
      volumes: [{ name: 'data', target: '/data', readOnly: false }],
    };
    return { sandbox, spec };
  };

  test('unique per tenant; users are the creating and running sandboxes that mount it; a sandbox shows its volumes', () => {
    const store = Store.open(join(dir, 'rows.db'));
    try {
      const v = { id: 'vol_1', tenant: 'alice', name: 'data', sizeMb: 64, createdAt: '2026-01-01T00:00:00.000Z' };
      store.volumes.insert(v);
      store.volumes.insert({ ...v, id: 'vol_2', tenant: 'bob' });
      assert.throws(() => store.volumes.insert({ ...v, id: 'vol_3' }), /UNIQUE/);
      assert.deepEqual(store.volumes.get('alice', 'data'), v);
      assert.equal(store.volumes.get('carol', 'data'), undefined);
      assert.deepEqual(store.volumes.list('alice').map((x) => x.id), ['vol_1']);
      assert.deepEqual(store.volumes.list().map((x) => x.id), ['vol_1', 'vol_2']);
      for (const [id, state] of [['sbx_run', 'running'], ['sbx_new', 'creating'], ['sbx_old', 'stopped']] as const) {
        const { sandbox, spec } = sb(id, state);
        store.insertSandbox(sandbox, spec, null);
        store.volumes.addMounts([{ sandboxId: id, volumeId: 'vol_1', name: 'data', target: '/data', readOnly: false }]);
      }
      assert.deepEqual(store.volumes.activeUsers('vol_1'), ['sbx_new', 'sbx_run']);
      assert.deepEqual(store.volumes.activeMounts().map((m) => m.sandboxId).sort(), ['sbx_new', 'sbx_run']);
      assert.deepEqual(store.getSandbox('sbx_run')?.sandbox.volumes, [{ name: 'data', target: '/data', readOnly: false }]);
      store.markEnded('sbx_run', { state: 'deleted', reason: 'deleted', endedBy: null, at: '2026-01-01T00:01:00.000Z' });
      assert.deepEqual(store.volumes.activeUsers('vol_1'), ['sbx_new']);
      store.markEnded('sbx_new', { state: 'stopped', reason: 'stopped', endedBy: null, at: '2026-01-01T00:01:00.000Z' });
      assert.equal(store.purgeEnded('2026-01-02T00:00:00.000Z'), 2);
      assert.deepEqual(store.volumes.mountsOf('sbx_run'), [], 'the mounts of purged sandboxes go with them');
      assert.equal(store.volumes.mountsOf('sbx_old').length, 1);
      store.volumes.delete('vol_1');
      assert.equal(store.volumes.getById('vol_1'), undefined);
    } finally {
      store.close();
    }
  });
});
