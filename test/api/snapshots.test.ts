/** Snapshots and forks through the API and SDK, against a real daemon: restore byte-identical, fork independence, damage, bad input, tenants. */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { appendFileSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { startDaemon, type Daemon } from '../../src/daemon/compose.js';
import { silentLogger } from '../../src/observability/logger.js';
import { VERSION } from '../../src/core/config.js';
import { DockerRuntime } from '../../src/runtime/docker/docker-runtime.js';
import { QEMU_BINARY } from '../../src/runtime/microvm/vm.js';
import { AgentboxClient } from '../../src/sdk/client.js';
import { scratchDiskStore } from '../../src/storage/scratch-store.js';
import { DiskStore } from '../../src/storage/disk-store.js';
import { mountTable } from '../../src/storage/host-tools.js';
import { Store } from '../../src/store/store.js';
import { TEST_IMAGES_DIR, testImages } from '../helpers/images.js';

const POLICY = `version: 1
defaults:
  image: busybox
  limits: { cpus: 1, memoryMb: 128, pids: 64, diskMb: 64 }
  ttl: 1h
tenants:
  - name: alice
    tokens: [alice-token-0123456789]
    quotas: { snapshotsMb: 60 }
  - name: bob
    tokens: [bob-token-0123456789]
profiles:
  install: { rootfs: writable }
  install-docker: { runtime: docker, rootfs: writable }
  install-vm: { runtime: microvm, rootfs: writable }
`;

const skip = process.getuid?.() !== 0 ? 'sandboxes need root' : undefined;

describe('snapshots and fork over the API', { skip }, () => {
  let home: string;
  let daemon: Daemon;
  let alice: AgentboxClient;
  let bob: AgentboxClient;

  before(async () => {
    await testImages();
    home = mkdtempSync(join(tmpdir(), 'agentbox-snap-'));
    writeFileSync(join(home, 'policy.yaml'), POLICY);
    daemon = await startDaemon({ env: { AGENTBOX_HOME: home, AGENTBOX_IMAGES: TEST_IMAGES_DIR }, logger: silentLogger(), policyPath: join(home, 'policy.yaml'), socket: join(home, 'agentbox.sock'), tcp: { host: '127.0.0.1', port: 0 } });
    const url = `http://127.0.0.1:${daemon.tcpAddress!.port}`;
    alice = new AgentboxClient({ url, token: 'alice-token-0123456789' });
    bob = new AgentboxClient({ url, token: 'bob-token-0123456789' });
  });

  after(async () => {
    for (const c of [alice, bob]) {
      for (const sb of await c.list()) await c.delete(sb.id);
      for (const s of await c.listSnapshots()) await c.deleteSnapshot(s.id);
    }
    await daemon.close();
    const left = mountTable().filter((m) => m.point.startsWith(home));
    rmSync(home, { recursive: true, force: true });
    assert.deepEqual(left, [], 'mounts left behind after the daemon closed with no sandbox');
  });

  const sum = async (id: string, path = '/workspace/data'): Promise<string> => (await alice.exec(id, { cmd: ['sh', '-c', `sha256sum ${path} | cut -d' ' -f1`] })).stdout.trim();

  test('a snapshot restores byte for byte, without what was written after it', async () => {
    const sb = await alice.create();
    await alice.exec(sb.id, { cmd: ['sh', '-c', 'head -c 3000000 /dev/urandom > /workspace/data; mkdir -p /tmp/t; echo t > /tmp/t/f'] });
    const before = await sum(sb.id);
    const snap = await alice.snapshot(sb.id, { name: 'base' });
    assert.match(snap.id, /^snap_/);
    assert.equal(snap.sandboxId, sb.id);
    assert.equal(snap.diskMb, 64);
    assert.match(snap.sha256, /^[0-9a-f]{64}$/);
    await alice.exec(sb.id, { cmd: ['sh', '-c', 'echo later > /workspace/later; echo x >> /workspace/data'] });
    assert.deepEqual((await alice.listSnapshots()).map((s) => s.id), [snap.id]);
    assert.equal((await alice.getSnapshot('base')).id, snap.id);
    for (const ref of [snap.id, 'base']) {
      const r = await alice.create({ snapshot: ref });
      assert.equal(await sum(r.id), before);
      assert.equal((await alice.exec(r.id, { cmd: ['sh', '-c', 'cat /tmp/t/f; test -e /workspace/later && echo LATER || echo none; touch /workspace/mine && echo writable'] })).stdout, 't\nnone\nwritable\n');
      await alice.delete(r.id);
    }
    // The sandbox it was taken of is running as before, and a snapshot outlives its sandbox.
    assert.equal((await alice.get(sb.id)).state, 'running');
    await alice.delete(sb.id);
    const again = await alice.create({ snapshot: snap.id });
    assert.equal(await sum(again.id), before);
    await alice.delete(again.id);
    await alice.deleteSnapshot('base');
    assert.deepEqual(await alice.listSnapshots(), []);
  });

  test('a snapshot taken on one runtime restores on another of the same image: local to docker (runc, gVisor) and back', async (t) => {
    const probe = await new DockerRuntime({ disks: scratchDiskStore(), images: await testImages(), homeTag: 'probe', version: VERSION }).probe();
    if (!probe.ok) return t.skip(`dockerd is not reachable: ${probe.reason}`);
    const gvisor = (probe.details?.runtimes ?? '').split(' ').includes('runsc');
    const sb = await alice.create({ runtime: 'local' });
    await alice.exec(sb.id, { cmd: ['sh', '-c', 'head -c 3000000 /dev/urandom > /workspace/data; mkdir -p /workspace/d; echo deep > /workspace/d/f'] });
    const want = await sum(sb.id);
    const snap = await alice.snapshot(sb.id);
    try {
      for (const isolation of gvisor ? (['container', 'gvisor'] as const) : (['container'] as const)) {
        const r = await alice.create({ snapshot: snap.id, runtime: 'docker', isolation });
        // The same bytes, and the files are the new sandbox user's: it can change them.
        assert.equal(await sum(r.id), want, `on docker ${isolation}`);
        assert.equal((await alice.exec(r.id, { cmd: ['sh', '-c', 'echo more >> /workspace/data && echo x > /workspace/d/f && cat /workspace/d/f'] })).stdout, 'x\n', `on docker ${isolation}`);
        const changed = await sum(r.id);
        const back = await alice.snapshot(r.id);
        const home = await alice.create({ snapshot: back.id, runtime: 'local' });
        assert.equal(await sum(home.id), changed, `back from docker ${isolation} to local`);
        for (const id of [r.id, home.id]) await alice.delete(id);
        await alice.deleteSnapshot(back.id);
      }
    } finally {
      await alice.delete(sb.id);
      await alice.deleteSnapshot(snap.id);
    }
  });

  test('a writable root (profile rootfs: writable) goes with its snapshots and forks, to docker too; restored without the profile, the root is read-only again', async (t) => {
    const sb = await alice.create({ profile: 'install' });
    const install = "mkdir -p /usr/local/bin && printf '#!/bin/sh\\necho installed\\n' > /usr/local/bin/tool && chmod +x /usr/local/bin/tool && echo ok";
    assert.equal((await alice.exec(sb.id, { cmd: ['sh', '-c', install] })).stdout, 'ok\n');
    const snap = await alice.snapshot(sb.id);
    const [child] = await alice.fork(sb.id);
    const restored = await alice.create({ snapshot: snap.id, profile: 'install' });
    const ids = [sb.id, child!.id, restored.id];
    try {
      for (const id of [child!.id, restored.id]) assert.equal((await alice.exec(id, { cmd: ['/usr/local/bin/tool'] })).stdout, 'installed\n', id);
      // Restored without the profile, the root is the image's again, read-only; the workspace is the snapshot's.
      const plain = await alice.create({ snapshot: snap.id });
      ids.push(plain.id);
      const r = await alice.exec(plain.id, { cmd: ['sh', '-c', 'test -e /usr/local/bin/tool && echo there; touch /usr/x 2>/dev/null || echo read-only'] });
      assert.equal(r.stdout, 'read-only\n');
      // On docker: the root's changes go with the snapshot to another runtime (and another host uid).
      const probe = await new DockerRuntime({ disks: scratchDiskStore(), images: await testImages(), homeTag: 'probe', version: VERSION }).probe();
      if (!probe.ok) return t.skip(`dockerd is not reachable: ${probe.reason}`);
      const onDocker = await alice.create({ snapshot: snap.id, profile: 'install-docker' });
      ids.push(onDocker.id);
      const d = await alice.exec(onDocker.id, { cmd: ['sh', '-c', '/usr/local/bin/tool && echo changed >> /etc/hosts && tail -1 /etc/hosts && stat -c %u /usr/local/bin/tool'] });
      assert.equal(d.stdout, 'installed\nchanged\n1000\n', d.stderr);
    } finally {
      for (const id of ids) await alice.delete(id);
      await alice.deleteSnapshot(snap.id);
    }
  });

  test('a snapshot from local restores on microvm: the files, a writable root\'s changes too, become the VM\'s sandbox user\'s; and back', async (t) => {
    if (spawnSync(QEMU_BINARY, ['--version']).error) return t.skip(`${QEMU_BINARY} is not installed`);
    const sb = await alice.create({ profile: 'install' });
    const install = "mkdir -p /workspace/d /usr/local/bin && echo deep > /workspace/d/f && printf '#!/bin/sh\\necho installed\\n' > /usr/local/bin/tool && chmod +x /usr/local/bin/tool && echo ok";
    assert.equal((await alice.exec(sb.id, { cmd: ['sh', '-c', install] })).stdout, 'ok\n');
    const snap = await alice.snapshot(sb.id);
    const ids = [sb.id];
    const snaps = [snap.id];
    try {
      // On local the files are a host uid of that sandbox's; in the VM they must be uid 1000's, writable.
      const vm = await alice.create({ snapshot: snap.id, profile: 'install-vm' });
      ids.push(vm.id);
      const r = await alice.exec(vm.id, { cmd: ['sh', '-c', '/usr/local/bin/tool && echo more >> /workspace/d/f && echo changed >> /etc/hosts && stat -c %u /workspace/d/f /workspace/d /usr/local/bin/tool'] });
      assert.equal(r.stdout, 'installed\n1000\n1000\n1000\n', r.stderr);
      const back = await alice.snapshot(vm.id);
      snaps.push(back.id);
      const home = await alice.create({ snapshot: back.id, profile: 'install' });
      ids.push(home.id);
      const h = await alice.exec(home.id, { cmd: ['sh', '-c', 'cat /workspace/d/f && tail -1 /etc/hosts && echo again >> /workspace/d/f && /usr/local/bin/tool'] });
      assert.equal(h.stdout, 'deep\nmore\nchanged\ninstalled\n', h.stderr);
    } finally {
      for (const id of ids) await alice.delete(id);
      for (const id of snaps) await alice.deleteSnapshot(id);
    }
  });

  test('fork: children have the parent\'s files, and none sees another\'s writes', async () => {
    const parent = await alice.create();
    await alice.exec(parent.id, { cmd: ['sh', '-c', 'head -c 5000000 /dev/urandom > /workspace/data; sleep 1000 >/dev/null 2>&1 &'] });
    const want = await sum(parent.id);
    const kids = await alice.fork(parent.id, { count: 2 });
    assert.equal(kids.length, 2);
    assert.notEqual(kids[0]!.id, kids[1]!.id);
    for (const k of kids) {
      assert.equal(k.state, 'running');
      assert.equal(k.image, parent.image);
      assert.deepEqual(k.limits, parent.limits);
      assert.equal(await sum(k.id), want);
    }
    await alice.exec(kids[0]!.id, { cmd: ['sh', '-c', 'echo mine > /workspace/only-0; echo changed >> /workspace/data'] });
    await alice.exec(parent.id, { cmd: ['sh', '-c', 'echo p > /workspace/only-parent'] });
    for (const other of [kids[1]!.id, parent.id]) {
      assert.equal((await alice.exec(other, { cmd: ['sh', '-c', 'test -e /workspace/only-0 && echo SEEN || echo unseen'] })).stdout, 'unseen\n');
      assert.equal(await sum(other), other === parent.id ? want : want);
    }
    assert.equal((await alice.exec(kids[1]!.id, { cmd: ['sh', '-c', 'test -e /workspace/only-parent && echo SEEN || echo unseen'] })).stdout, 'unseen\n');
    // The parent's processes are not forked (memory is not part of a fork), and it kept running.
    assert.equal((await alice.exec(kids[1]!.id, { cmd: ['sh', '-c', 'pgrep -f "sleep 1000" || echo none'] })).stdout, 'none\n');
    assert.equal((await alice.get(parent.id)).state, 'running');
    for (const id of [parent.id, ...kids.map((k) => k.id)]) await alice.delete(id);
  });

  test('a damaged snapshot is an error with a hint, never an older or partial state', async () => {
    const sb = await alice.create();
    await alice.exec(sb.id, { cmd: ['sh', '-c', 'echo v1 > /workspace/data'] });
    const snap = await alice.snapshot(sb.id);
    await alice.delete(sb.id);
    appendFileSync(join(home, 'storage', 'store', 'snapshots', snap.id, 'disk.img'), 'tampered');
    await assert.rejects(alice.create({ snapshot: snap.id }), (err: { code?: string; message?: string; hint?: string }) => err.code === 'conflict' && /damaged/.test(err.message ?? '') && /snapshot rm/.test(err.hint ?? ''));
    assert.equal((await alice.list()).length, 0, 'a failed restore left a sandbox');
    await alice.deleteSnapshot(snap.id);
  });

  test('a daemon that died while taking a snapshot: the next one removes the half-made one and keeps the good', async () => {
    const sb = await alice.create();
    await alice.exec(sb.id, { cmd: ['sh', '-c', 'echo good > /workspace/g'] });
    const good = await alice.snapshot(sb.id, { name: 'good' });
    await alice.delete(sb.id);
    await daemon.close();
    // What a kill -9 in the middle of a snapshot leaves: a 'creating' row and a .partial directory with a layer but no manifest.
    const db = Store.open(join(home, 'agentbox.db'));
    db.snapshots.begin({ id: 'snap_halfmade1', tenant: 'alice', name: 'half', sandboxId: sb.id, image: 'busybox', diskMb: 64, createdAt: new Date().toISOString(), labels: {}, memory: false });
    db.close();
    const snapDir = join(home, 'storage', 'store', 'snapshots');
    // The store was unmounted with the daemon; mount it to plant the files, as they would be after a crash.
    const disks = new DiskStore({ dir: join(home, 'storage') });
    await disks.open();
    mkdirSync(join(snapDir, 'snap_halfmade1.partial'));
    writeFileSync(join(snapDir, 'snap_halfmade1.partial', 'disk.img'), 'partial');
    mkdirSync(join(snapDir, 'snap_norow1'));
    daemon = await startDaemon({ env: { AGENTBOX_HOME: home, AGENTBOX_IMAGES: TEST_IMAGES_DIR }, logger: silentLogger(), policyPath: join(home, 'policy.yaml'), socket: join(home, 'agentbox.sock'), tcp: { host: '127.0.0.1', port: 0 } });
    const url = `http://127.0.0.1:${daemon.tcpAddress!.port}`;
    alice = new AgentboxClient({ url, token: 'alice-token-0123456789' });
    bob = new AgentboxClient({ url, token: 'bob-token-0123456789' });
    assert.deepEqual((await alice.listSnapshots()).map((s) => s.id), [good.id]);
    await assert.rejects(alice.getSnapshot('half'), { code: 'not_found' });
    assert.deepEqual(readdirSync(snapDir), [good.id]);
    const r = await alice.create({ snapshot: 'good' });
    assert.equal((await alice.exec(r.id, { cmd: ['cat', '/workspace/g'] })).stdout, 'good\n');
    await alice.delete(r.id);
    await alice.deleteSnapshot(good.id);
  });

  test('bad input: unknown and ended sandboxes, other tenants, bad names, duplicate names, the quota', async () => {
    await assert.rejects(alice.snapshot('sbx_nope'), { code: 'not_found' });
    await assert.rejects(alice.fork('sbx_nope'), { code: 'not_found' });
    await assert.rejects(alice.create({ snapshot: 'snap_nope' }), { code: 'not_found' });
    await assert.rejects(alice.snapshot('sbx_nope', { name: '../x' }), { code: 'bad_request' });
    await assert.rejects(alice.fork('sbx_nope', { count: 0 }), { code: 'bad_request' });
    await assert.rejects(alice.fork('sbx_nope', { count: 17 }), { code: 'bad_request' });
    const sb = await alice.create();
    const snap = await alice.snapshot(sb.id, { name: 'mine' });
    await assert.rejects(alice.snapshot(sb.id, { name: 'mine' }), { code: 'conflict' });
    await assert.rejects(alice.create({ snapshot: snap.id, image: 'debian' }), { code: 'conflict' });
    await assert.rejects(alice.create({ snapshot: snap.id, limits: { diskMb: 32 } }), { code: 'conflict' });
    // Another tenant's snapshot and sandbox do not exist for bob.
    await assert.rejects(bob.getSnapshot(snap.id), { code: 'not_found' });
    await assert.rejects(bob.create({ snapshot: snap.id }), { code: 'not_found' });
    await assert.rejects(bob.deleteSnapshot('mine'), { code: 'not_found' });
    await assert.rejects(bob.snapshot(sb.id), { code: 'not_found' });
    await assert.rejects(bob.fork(sb.id), { code: 'not_found' });
    // Past snapshotsMb (60 MB; each snapshot counts at least what its data holds), and nothing of the refused one is left.
    await alice.exec(sb.id, { cmd: ['sh', '-c', 'head -c 40000000 /dev/urandom > /workspace/big'] });
    const big = await alice.snapshot(sb.id);
    assert.ok(big.bytes >= 40_000_000, `a snapshot of 40 MB of data counts ${big.bytes} bytes`);
    await assert.rejects(alice.snapshot(sb.id), { code: 'quota_exceeded' });
    assert.deepEqual((await alice.listSnapshots()).map((s) => s.id).sort(), [big.id, snap.id].sort());
    await alice.deleteSnapshot(big.id);
    const fits = await alice.snapshot(sb.id);
    await alice.deleteSnapshot(fits.id);
    await alice.stop(sb.id);
    await assert.rejects(alice.snapshot(sb.id), { code: 'conflict' });
    await assert.rejects(alice.fork(sb.id), { code: 'conflict' });
    await alice.deleteSnapshot(snap.id);
    await assert.rejects(alice.getSnapshot(snap.id), { code: 'not_found' });
    await alice.delete(sb.id);
  });
});
